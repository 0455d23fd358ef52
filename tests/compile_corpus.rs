//! The compile corpus: broken DAG files with the exact diagnostics each must produce, valid DAGs
//! that together use every part of the format, and every example DAG in the repository.
//!
//! Diagnostics are the interface users see most, so they are pinned as data, not buried in unit
//! tests: `tests/data/invalid/NAME.yaml` holds one mistake and `NAME.expected` the
//! `path:line:col: error: message` lines `flowctl validate` must print for it (a subfolder is
//! validated in one call, against its `expected` file, for mistakes that span files). Every case
//! runs through the real binary, and all mismatches are collected before the test fails, so one run
//! shows every message that changed. To add a case, write the YAML file and its `.expected`.

mod util;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use flowctl_engine::compile::{ALERTS_KEYS, DAG_KEYS, DEFAULTS_KEYS, EMAIL_KEYS, TASK_KEYS, WEBHOOK_KEYS};
use flowctl_engine::dag::{AlertEvent, TriggerRule};
use flowctl_engine::schedule::PRESETS;
use serde_json::Value;
use util::{repo_root, setup, Cmd};

/// The broken DAGs, relative to the repository root (diagnostics print paths as given).
const INVALID: &str = "tests/data/invalid";
/// The valid DAGs.
const VALID: &str = "tests/data/valid";
/// Fewer cases than this means the corpus lost files.
const MIN_CASES: usize = 40;
/// The first line of every valid corpus file, so editors check it against the schema.
const SCHEMA_LINE: &str = "# yaml-language-server: $schema=../../../docs/schema.json";

/// One call to `flowctl validate`: a file or a folder, and the file holding the lines it must print.
struct Case {
    target: PathBuf,
    expected: PathBuf,
}

/// Whether `line` is a diagnostic's first line: `path:line:col: error: message`.
fn is_error_line(line: &str) -> bool {
    let mut parts = line.splitn(4, ':');
    let (Some(path), Some(row), Some(col), Some(rest)) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !path.is_empty() && number(row) && number(col) && rest.starts_with(" error: ")
}

fn error_lines(stdout: &str) -> Vec<String> {
    stdout.lines().filter(|l| is_error_line(l)).map(str::to_string).collect()
}

/// Reads the invalid corpus: each `*.yaml` is a case, each subfolder is one. Problems with the
/// corpus itself (a case without its expected lines, expected lines without a case) come back as
/// messages.
fn invalid_cases() -> (Vec<Case>, Vec<String>) {
    let root = repo_root();
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join(INVALID))
        .expect("read tests/data/invalid")
        .map(|e| e.expect("read a folder entry").path())
        .collect();
    entries.sort();
    let mut cased = BTreeSet::new();
    for path in &entries {
        let name = path.file_name().and_then(|n| n.to_str()).expect("UTF-8 file name");
        let target = Path::new(INVALID).join(name);
        let expected = if path.is_dir() {
            target.join("expected")
        } else if let Some(stem) = name.strip_suffix(".yaml") {
            Path::new(INVALID).join(format!("{stem}.expected"))
        } else {
            continue;
        };
        cased.insert(expected.clone());
        if root.join(&expected).is_file() {
            cases.push(Case { target, expected });
        } else {
            problems.push(format!("{}: no expected diagnostics: write them to {}", target.display(), expected.display()));
        }
    }
    for path in &entries {
        let relative = Path::new(INVALID).join(path.file_name().expect("file name"));
        if path.extension().is_some_and(|e| e == "expected") && !cased.contains(&relative) {
            problems.push(format!("{}: no DAG file beside it", relative.display()));
        }
    }
    (cases, problems)
}

fn run_case(cmd: &Cmd, case: &Case) -> Option<String> {
    let text = std::fs::read_to_string(repo_root().join(&case.expected)).expect("read expected diagnostics");
    let expected: Vec<&str> = text.lines().collect();
    if expected.is_empty() {
        return Some(format!("{}: {} is empty; a broken DAG must name its error", case.target.display(), case.expected.display()));
    }
    let run = cmd.run(["validate".as_ref(), case.target.as_os_str()]);
    let actual = error_lines(&run.stdout);
    if run.code == 2 && actual == expected {
        return None;
    }
    let indent = |lines: &[&str]| lines.iter().map(|l| format!("    {l}\n")).collect::<String>();
    let actual: Vec<&str> = actual.iter().map(String::as_str).collect();
    let code = if run.code == 2 { String::new() } else { format!(" (exit code {}, must be 2)", run.code) };
    Some(format!(
        "{}{code}\n  expected:\n{}  actual:\n{}  full output:\n{}{}",
        case.target.display(),
        indent(&expected),
        indent(&actual),
        indent(&run.stdout.lines().collect::<Vec<_>>()),
        indent(&run.stderr.lines().collect::<Vec<_>>()),
    ))
}

#[test]
fn every_broken_dag_prints_exactly_its_expected_errors() {
    let (_home, cmd) = setup();
    let (cases, mut failures) = invalid_cases();
    failures.extend(cases.iter().filter_map(|case| run_case(&cmd, case)));
    if cases.len() < MIN_CASES {
        failures.push(format!("only {} cases in {INVALID}; the corpus must keep at least {MIN_CASES}", cases.len()));
    }
    assert!(failures.is_empty(), "{} problems in {} cases:\n\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn error_lines_are_recognised() {
    assert!(is_error_line("tests/data/invalid/a.yaml:3:11: error: unknown key \"x\""));
    assert!(!is_error_line("3 | schedule: \"0 25 * * *\""));
    assert!(!is_error_line("  = hint: valid keys: a, b"));
    assert!(!is_error_line("error: 1 error in 1 file (1 file checked)"));
    assert!(!is_error_line("a.yaml:3:11: warning: \"catchup\" has no effect without a schedule"));
}

/// The YAML files under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    util::files_ending(dir, &["yaml", "yml"])
}

#[test]
fn valid_corpus_compiles_and_uses_the_whole_format() {
    let (_home, cmd) = setup();
    let files = yaml_files(&repo_root().join(VALID));
    assert!(files.len() >= 6, "{VALID} holds {} DAGs; keep at least 6", files.len());
    let run = cmd.run(["validate", VALID]);
    run.expect_code(0);
    let n = files.len();
    assert_eq!(run.stdout, format!("ok: {n} DAGs in {n} files\n"), "no warnings either");

    let texts: Vec<(PathBuf, String)> =
        files.into_iter().map(|f| (f.clone(), std::fs::read_to_string(&f).expect("read DAG"))).collect();
    let mut missing = Vec::new();
    for (file, text) in &texts {
        if text.lines().next() != Some(SCHEMA_LINE) {
            missing.push(format!("{} does not start with `{SCHEMA_LINE}`", file.display()));
        }
    }
    let used = |needle: &str| texts.iter().any(|(_, t)| t.contains(needle));
    // A key in block style: `key:` first on its line, or after a list item's `- `.
    let key_used = |key: &str| {
        let key = format!("{key}:");
        texts.iter().any(|(_, t)| t.lines().any(|l| l.trim_start().trim_start_matches("- ").starts_with(&key)))
    };
    let keys = [DAG_KEYS, TASK_KEYS, DEFAULTS_KEYS, ALERTS_KEYS, EMAIL_KEYS, WEBHOOK_KEYS].concat();
    let shell_keys = ["command", "argv", "env", "cwd", "skip_on_exit_code", "grace_period"];
    for key in keys.iter().chain(&shell_keys) {
        if !key_used(key) {
            missing.push(format!("key `{key}:`"));
        }
    }
    for (_, rule) in TriggerRule::ALL {
        if !used(&format!("trigger_rule: {rule}\n")) {
            missing.push(format!("trigger rule {rule}"));
        }
    }
    for (preset, _) in PRESETS {
        if !used(&format!("schedule: \"{preset}\"\n")) {
            missing.push(format!("schedule preset {preset}"));
        }
    }
    for (_, event) in AlertEvent::ALL {
        if !texts.iter().any(|(_, t)| t.lines().any(|l| l.trim_start().starts_with("on: [") && l.contains(event))) {
            missing.push(format!("alert event {event}"));
        }
    }
    for needle in [": &", ": *", "<<: *", "<<: [", "{{ params.", "{{ tasks.", "format: slack", "format: json"] {
        if !used(needle) {
            missing.push(format!("`{needle}`"));
        }
    }
    assert!(missing.is_empty(), "the valid corpus in {VALID} does not use:\n  {}", missing.join("\n  "));
}

/// Runs `validate --output json` and parses what it prints.
fn validate_json(cmd: &Cmd, path: &str) -> (i32, Value) {
    let run = cmd.run(["validate", "--output", "json", path]);
    let report = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("validate --output json {path} printed invalid JSON ({e}):\n{}", run.stdout));
    (run.code, report)
}

#[test]
fn every_dag_in_the_repository_compiles() {
    let (_home, cmd) = setup();
    let files = yaml_files(&repo_root().join("dags"));
    assert!(!files.is_empty(), "dags/ holds no DAG files");
    cmd.run(["validate", "dags"]).expect_code(0);
    let (code, report) = validate_json(&cmd, "dags");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["valid"], true, "{report:#}");
    assert_eq!(report["files"], files.len(), "every file under dags/ is read: {report:#}");
    assert_eq!(report["dags"].as_array().map(Vec::len), Some(files.len()), "one DAG per file: {report:#}");
    assert_eq!(report["diagnostics"], serde_json::json!([]), "no warnings: {report:#}");
}

#[test]
fn json_output_locates_each_error() {
    let (_home, cmd) = setup();
    let (code, report) = validate_json(&cmd, "tests/data/invalid/unknown_task_key_typo.yaml");
    assert_eq!(code, 2, "{report:#}");
    assert_eq!(report["valid"], false, "{report:#}");
    assert_eq!(report["files"], 1, "{report:#}");
    assert_eq!(report["dags"], serde_json::json!([]), "{report:#}");
    let diagnostics = report["diagnostics"].as_array().expect("diagnostics is a list");
    assert_eq!(diagnostics.len(), 1, "{report:#}");
    let d = &diagnostics[0];
    assert_eq!(d["severity"], "error");
    assert_eq!(d["file"], "tests/data/invalid/unknown_task_key_typo.yaml");
    assert_eq!(d["line"], 6);
    assert_eq!(d["column"], 5);
    assert_eq!(d["task"], "extract");
    assert_eq!(d["message"], "unknown key \"retires\" in a task (did you mean \"retries\"?)");
    assert!(d["hint"].as_str().is_some_and(|h| h.contains("retries")), "{d:#}");
}

/// The lines of `text` that draw an edge, trimmed.
fn edges(text: &str, arrow: &str) -> Vec<String> {
    text.lines().filter(|l| l.contains(arrow)).map(|l| l.trim().to_string()).collect()
}

#[test]
fn graph_prints_the_edges_of_hello() {
    let (_home, cmd) = setup();
    let dot = cmd.run(["graph", "dags/examples/hello.yaml", "--format", "dot"]);
    dot.expect_code(0);
    assert!(dot.stdout.starts_with("digraph \"hello\" {"), "{}", dot.stdout);
    assert!(dot.stdout.contains("\"shout\" [label=\"shout\\nshell\"];"), "{}", dot.stdout);
    assert_eq!(edges(&dot.stdout, "->"), ["\"greet\" -> \"shout\";", "\"shout\" -> \"done\";"], "{}", dot.stdout);

    let mermaid = cmd.run(["graph", "dags/examples/hello.yaml", "--format", "mermaid"]);
    mermaid.expect_code(0);
    assert!(mermaid.stdout.starts_with("flowchart LR\n"), "{}", mermaid.stdout);
    for node in ["t0[\"greet (shell)\"]", "t1[\"shout (shell)\"]", "t2[\"done (noop)\"]"] {
        assert!(mermaid.stdout.contains(node), "no node {node} in:\n{}", mermaid.stdout);
    }
    assert_eq!(edges(&mermaid.stdout, "-->"), ["t0 --> t1", "t1 --> t2"], "{}", mermaid.stdout);
}
