//! Commands that read DAG files without running anything: `validate`, `graph`, `schema`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::exit;
use super::render::{diagnostics_text, OutputFormat};
use crate::compile::compile_paths;
use crate::diagnostic::Diagnostic;
use crate::operator::Registry;


/// How `graph` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GraphFormat {
    /// Graphviz DOT.
    #[default]
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
}

fn print_diagnostics(out: &mut dyn Write, diagnostics: &[Diagnostic]) {
    let _ = out.write_all(diagnostics_text(diagnostics, &|p| p.to_path_buf()).as_bytes());
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `flowctl validate PATH...`: compiles and reports; exit 0 when valid, 2 when not.
pub fn validate(paths: &[PathBuf], format: OutputFormat, registry: &Registry) -> u8 {
    let crate::service::Validation { files: file_count, result } = crate::service::validate(paths, registry);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match format {
        OutputFormat::Json => {
            let (valid, dags, diagnostics) = match &result {
                Ok(c) => (true, c.dags.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), c.warnings.clone()),
                Err(errors) => (false, Vec::new(), errors.clone()),
            };
            let report = json!({ "valid": valid, "files": file_count, "dags": dags, "diagnostics": diagnostics });
            let _ = writeln!(out, "{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        }
        OutputFormat::Text => match &result {
            Ok(compiled) => {
                print_diagnostics(&mut out, &compiled.warnings);
                let warnings = if compiled.warnings.is_empty() {
                    String::new()
                } else {
                    format!(", {}", plural(compiled.warnings.iter().map(Diagnostic::count).sum(), "warning"))
                };
                let _ = writeln!(
                    out,
                    "ok: {} in {}{warnings}",
                    plural(compiled.dags.len(), "DAG"),
                    plural(file_count, "file")
                );
            }
            Err(errors) => {
                print_diagnostics(&mut out, errors);
                let bad_files: BTreeSet<&Path> = errors.iter().map(|d| d.file.as_path()).collect();
                let _ = writeln!(
                    out,
                    "error: {} in {} ({} checked)",
                    plural(errors.iter().map(Diagnostic::count).sum(), "error"),
                    plural(bad_files.len(), "file"),
                    plural(file_count, "file")
                );
            }
        },
    }
    if result.is_ok() {
        exit::OK
    } else {
        exit::INVALID
    }
}

/// `flowctl graph DAG_FILE`: prints the task graph.
pub fn graph(file: &Path, format: GraphFormat, registry: &Registry) -> u8 {
    match compile_paths(&[file.to_path_buf()], registry) {
        Ok(compiled) => {
            let Some(dag) = compiled.dags.first() else {
                eprintln!("error: {} holds no DAG", file.display());
                return exit::INVALID;
            };
            let operator_of = |id: &str| dag.task(id).map(|t| t.operator.clone()).unwrap_or_default();
            let text = match format {
                GraphFormat::Dot => dag.graph.to_dot(&dag.id, operator_of),
                GraphFormat::Mermaid => dag.graph.to_mermaid(operator_of),
            };
            out!("{text}");
            exit::OK
        }
        Err(errors) => {
            print_diagnostics(&mut std::io::stderr(), &errors);
            eprintln!("error: {} does not compile; fix it (see `flowctl validate`) and try again", file.display());
            exit::INVALID
        }
    }
}

/// `flowctl schema`: the JSON Schema of DAG files.
pub fn schema(registry: &Registry) -> u8 {
    let schema = crate::schema::dag_schema(registry);
    outln!("{}", serde_json::to_string_pretty(&schema).unwrap_or_default());
    exit::OK
}
