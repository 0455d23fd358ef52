//! `flowctl apply PATH...`: compile everything, then store the new versions. On any error,
//! nothing is stored.

use std::path::{Path, PathBuf};

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::table::Table;
use super::control::Output;
use super::inspect::render_diagnostics_shown;
use super::{exit, CommandError};
use crate::compile::compile_paths;
use crate::dag::Dag;
use crate::operator::Registry;
use crate::state::{DagVersion, Store, StoreError};

/// What applying a DAG did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A DAG id the store had not seen.
    Added,
    /// A new version of a known DAG.
    Changed,
    /// The same source as the latest version.
    Unchanged,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
        }
    }
}

/// The SHA-256 of a DAG's source, hex.
pub fn source_hash(source: &str) -> String {
    Sha256::digest(source.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores `dag` as a new version unless its source is unchanged. Returns the version runs of it
/// should record, and what happened.
pub fn store_version(store: &Store, dag: &Dag) -> Result<(u64, Change), StoreError> {
    let hash = source_hash(&dag.source);
    let record = store.dag(&dag.id)?;
    if let Some(record) = &record {
        if let Some(latest) = store.dag_version(&dag.id, record.latest_version)? {
            if latest.hash == hash {
                return Ok((latest.version, Change::Unchanged));
            }
        }
    }
    let version = record.as_ref().map_or(1, |r| r.latest_version + 1);
    store.put_dag_version(
        &DagVersion {
            dag_id: dag.id.clone(),
            version,
            hash,
            source: dag.source.clone(),
            file: absolute(&dag.file),
            applied_at: Utc::now(),
        },
    )?;
    Ok((version, if record.is_some() { Change::Changed } else { Change::Added }))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `flowctl apply`: compiles `paths` (absolute) and stores the new versions; paths are shown
/// relative to `cwd`, the folder the command was typed in.
pub fn apply_output(store: &Store, paths: &[PathBuf], cwd: &Path, registry: &Registry) -> Result<Output, CommandError> {
    let shown = |p: &Path| p.strip_prefix(cwd).unwrap_or(p).to_path_buf();
    let compiled = match compile_paths(paths, registry) {
        Ok(c) => c,
        Err(errors) => {
            let stderr = format!(
                "{}error: nothing applied: {} error(s); fix them (see `flowctl validate`) and apply again\n",
                render_diagnostics_shown(&errors, &shown),
                errors.len()
            );
            return Ok(Output { code: exit::INVALID, stdout: String::new(), stderr });
        }
    };
    let mut table = Table::new(&["DAG", "VERSION", "CHANGE", "FILE"]);
    let mut counts = [0usize; 3];
    for dag in &compiled.dags {
        let (version, change) = store_version(store, dag)?;
        counts[change as usize] += 1;
        table.row(vec![dag.id.clone(), version.to_string(), change.name().into(), shown(&dag.file).display().to_string()]);
    }
    let stdout = format!(
        "{}applied: {} added, {} changed, {} unchanged\n",
        table.render(),
        counts[0],
        counts[1],
        counts[2]
    );
    Ok(Output { code: exit::OK, stdout, stderr: render_diagnostics_shown(&compiled.warnings, &shown) })
}
