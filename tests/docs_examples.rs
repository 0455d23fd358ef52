//! The documentation's examples must stay true: every whole DAG shown in `docs/**/*.md` compiles,
//! every DAG in `dags/examples/` runs and succeeds, and `docs/schema.json` is what `flowctl schema`
//! prints today.

mod util;

use std::path::{Path, PathBuf};

/// A ```yaml block from a Markdown file.
struct Block {
    /// The Markdown file, relative to the repository root.
    doc: PathBuf,
    /// 1-based index among the file's ```yaml blocks.
    number: usize,
    /// The line of the opening fence.
    line: usize,
    /// The block's text, without the fences.
    text: String,
}

/// Whether a fence line opens a YAML block: "```yaml", optionally followed by attributes.
fn opens_yaml(fence: &str) -> bool {
    fence.strip_prefix("```yaml").is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_whitespace))
}

/// Every ```yaml block of a Markdown text. Fences may be indented (inside a list item); the
/// fence's indentation is removed from the block's lines.
fn yaml_blocks(doc: &Path, markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let fence = line.trim_start();
        if !fence.starts_with("```") {
            continue;
        }
        let indent = line.len() - fence.len();
        let mut body = Vec::new();
        for (_, inner) in lines.by_ref() {
            if inner.trim_start().starts_with("```") && inner.trim().chars().all(|c| c == '`') {
                break;
            }
            let stripped = match (inner.get(..indent), inner.get(indent..)) {
                (Some(margin), Some(rest)) if margin.trim().is_empty() => rest,
                _ => inner.trim_start(),
            };
            body.push(stripped);
        }
        if opens_yaml(fence) {
            blocks.push(Block {
                doc: doc.to_path_buf(),
                number: blocks.len() + 1,
                line: index + 1,
                text: body.join("\n") + "\n",
            });
        }
    }
    blocks
}

/// Whether a block is a whole DAG file: it begins with `dag:`, or with a `# yaml-language-server`
/// line and then `dag:`.
fn is_whole_dag(text: &str) -> bool {
    let mut lines = text.lines();
    match lines.next() {
        Some(first) if first.starts_with("# yaml-language-server") => lines.next().is_some_and(|l| l.starts_with("dag:")),
        Some(first) => first.starts_with("dag:"),
        None => false,
    }
}

fn doc_blocks() -> Vec<Block> {
    let root = util::repo_root();
    let files = util::files_ending(&root.join("docs"), &["md"]);
    assert!(!files.is_empty(), "no Markdown files found under {}", root.join("docs").display());
    files
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            let relative = file.strip_prefix(&root).unwrap_or(file).to_path_buf();
            yaml_blocks(&relative, &text)
        })
        .collect()
}

#[test]
fn every_dag_in_the_docs_compiles() {
    let (home, cmd) = util::setup();
    let dags: Vec<Block> = doc_blocks().into_iter().filter(|b| is_whole_dag(&b.text)).collect();
    assert!(
        dags.len() >= 10,
        "found only {} whole-DAG yaml blocks in docs/; has the extraction stopped matching the fences?",
        dags.len()
    );
    let mut failures = Vec::new();
    for block in &dags {
        // docs/operators/shell.md block 2 -> docs_operators_shell-block2.yaml: unique per block.
        let stem = block.doc.with_extension("").to_string_lossy().replace(['/', '\\'], "_");
        let file = home.write(&format!("{stem}-block{}.yaml", block.number), &block.text);
        let run = cmd.run(["validate".as_ref(), file.as_os_str()]);
        if run.code != 0 {
            failures.push(format!(
                "{}: yaml block {} (fence at line {}) does not validate (exit {}):\n{}{}",
                block.doc.display(),
                block.number,
                block.line,
                run.code,
                run.stdout,
                run.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} DAG examples in docs/ fail `flowctl validate`:\n\n{}",
        failures.len(),
        dags.len(),
        failures.join("\n")
    );
}

#[test]
fn schema_json_matches_flowctl_schema() {
    let (_home, cmd) = util::setup();
    let run = cmd.run(["schema"]);
    run.expect_code(0);
    let path = util::repo_root().join("docs/schema.json");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; run `flowctl schema > docs/schema.json`", path.display()));
    let normalize = |s: &str| s.replace("\r\n", "\n").trim_end().to_string();
    assert!(
        normalize(&committed) == normalize(&run.stdout),
        "docs/schema.json is out of date with the DAG format: run `flowctl schema > docs/schema.json` and commit it"
    );
}

/// The example DAGs are meant to be run as they are: each must succeed with nothing but the binary.
#[test]
fn every_example_dag_runs_and_succeeds() {
    let (_home, cmd) = util::setup();
    let dir = util::repo_root().join("dags/examples");
    let files = util::files_ending(&dir, &["yaml", "yml"]);
    assert!(files.len() >= 3, "expected the example DAGs in {}", dir.display());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        assert!(
            text.starts_with("# yaml-language-server: $schema=../../docs/schema.json\n"),
            "{} must start with the yaml-language-server schema line",
            file.display()
        );
        let run = cmd.run(["run".as_ref(), file.as_os_str(), "--date".as_ref(), "2024-03-01".as_ref()]);
        assert_eq!(
            run.code,
            0,
            "{} does not run successfully:\n--- stdout ---\n{}\n--- stderr ---\n{}",
            file.display(),
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn block_extraction_finds_indented_and_schema_headed_dags() {
    let markdown = "text\n\n```yaml\ndag: a\n```\n\n- item\n\n  ```yaml\n  # yaml-language-server: $schema=x.json\n  dag: b\n  tasks: []\n  ```\n\n```yaml\ntasks: []\n```\n\n```yamlx\ndag: c\n```\n";
    let blocks = yaml_blocks(Path::new("x.md"), markdown);
    let texts: Vec<&str> = blocks.iter().map(|b| b.text.as_str()).collect();
    assert_eq!(texts, ["dag: a\n", "# yaml-language-server: $schema=x.json\ndag: b\ntasks: []\n", "tasks: []\n"]);
    assert_eq!(blocks.iter().map(|b| (b.number, b.line)).collect::<Vec<_>>(), [(1, 3), (2, 9), (3, 15)]);
    let whole: Vec<bool> = blocks.iter().map(|b| is_whole_dag(&b.text)).collect();
    assert_eq!(whole, [true, true, false]);
}
