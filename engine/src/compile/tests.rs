//! Unit tests of compile's behaviour that the data-driven corpus in `tests/data/` does not show
//! well: what a valid DAG compiles to.

use super::*;
use crate::operator::{ConfigError, Operator, Outcome, TaskContext, TaskError};

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CommandConfig {
    command: String,
}

struct Command;

#[async_trait::async_trait]
impl Operator for Command {
    const NAME: &'static str = "command";
    type Config = CommandConfig;

    fn check(config: &CommandConfig) -> Result<(), ConfigError> {
        if config.command.is_empty() {
            return Err(ConfigError::new("command", "must not be empty"));
        }
        Ok(())
    }

    async fn execute(&self, _: CommandConfig, _: TaskContext) -> Result<Outcome, TaskError> {
        Ok(Outcome::success())
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(Command);
    r
}

fn compile_str(text: &str) -> Result<Compiled, Vec<Diagnostic>> {
    compile(&[SourceFile { path: "d.yaml".into(), bytes: text.as_bytes().to_vec() }], &registry())
}

fn errors(text: &str) -> Vec<String> {
    compile_str(text).err().unwrap_or_default().iter().map(Diagnostic::short).collect()
}

#[test]
fn defaults_apply_unless_the_task_sets_them() {
    let compiled = compile_str(
        r#"
dag: d
schedule: '@daily'
start_date: 2024-01-01
timezone: Europe/Paris
defaults: {retries: 2, retry_delay: 30s, retry_backoff: exponential, max_retry_delay: 2m, timeout: 1h}
tasks:
  - id: b
    operator: command
    depends_on: [a]
    retries: 5
    with: {command: x}
  - id: a
    operator: command
    with: {command: '{{ ds }}'}
"#,
    )
    .unwrap();
    let dag = &compiled.dags[0];
    assert_eq!(dag.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), ["a", "b"], "topological order");
    let a = dag.task("a").unwrap();
    assert_eq!(a.retry.retries, 2);
    assert_eq!(a.retry.delay_before(2), Duration::from_secs(30));
    assert_eq!(a.retry.delay_before(3), Duration::from_secs(60));
    assert_eq!(a.retry.delay_before(5), Duration::from_secs(120), "capped by max_retry_delay");
    assert_eq!(a.timeout, Some(Duration::from_secs(3600)));
    assert_eq!(dag.task("b").unwrap().retry.retries, 5);
    // Midnight in Paris is 23:00 UTC the day before (winter time).
    assert_eq!(dag.start_date.unwrap().to_rfc3339(), "2023-12-31T23:00:00+00:00");
    assert_eq!(dag.max_active_tasks, 16);
    assert_eq!(dag.max_active_runs, 1);
}

#[test]
fn every_error_in_a_file_is_reported_at_once() {
    let errs = errors(
        "dag: d\ncatchup: yes\ntasks:\n  - id: a\n    operator: command\n    with: {comand: x}\n  - id: b\n    operator: nope\n    depends_on: [c]\n",
    );
    assert_eq!(
        errs,
        [
            "d.yaml:2:10: error: \"catchup\" must be true or false, found a string",
            "d.yaml:6:12: error: task \"a\": operator \"command\": unknown key \"comand\" in with (did you mean \"command\"?)",
            "d.yaml:8:15: error: task \"b\": unknown operator \"nope\"",
            "d.yaml:9:18: error: task \"b\": depends_on names unknown task \"c\"",
        ]
    );
}

#[test]
fn operator_checks_beyond_types_are_reported_at_the_field() {
    assert_eq!(
        errors("dag: d\ntasks:\n  - id: a\n    operator: command\n    with:\n      command: ''\n"),
        ["d.yaml:6:16: error: task \"a\": operator \"command\": with.command: must not be empty"]
    );
}

#[test]
fn duplicate_dag_ids_across_files_name_the_first() {
    let file = |p: &str| SourceFile { path: p.into(), bytes: b"dag: same\ntasks: [{id: a, operator: command, with: {command: x}}]\n".to_vec() };
    let errs = compile(&[file("one.yaml"), file("two.yaml")], &registry()).unwrap_err();
    assert_eq!(errs[0].short(), "two.yaml:1:6: error: DAG id \"same\" is already used by one.yaml:1:6");
}

/// A DAG of one task, with `extra` lines at the top level and `task` lines in the task.
fn dag_with(extra: &str, task: &str) -> String {
    format!("dag: d\n{extra}tasks:\n  - id: a\n    operator: command\n    with: {{command: x}}\n{task}")
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    bytes.extend_from_slice(dag_with("", "").as_bytes());
    let compiled = compile(&[SourceFile { path: "d.yaml".into(), bytes }], &registry()).unwrap();
    assert_eq!(compiled.dags[0].id, "d");
    assert!(!compiled.dags[0].source.starts_with('\u{feff}'));
    // Columns on the first line count from after the mark.
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    bytes.extend_from_slice(b"dag: Bad\ntasks: [{id: a, operator: command, with: {command: x}}]\n");
    let errs = compile(&[SourceFile { path: "d.yaml".into(), bytes }], &registry()).unwrap_err();
    assert_eq!(errs[0].short(), "d.yaml:1:6: error: invalid DAG id \"Bad\": use only lower-case letters, digits, \"_\" and \"-\"");
}

#[test]
fn every_integer_has_a_maximum() {
    let cases = [
        ("", "    retries: 4294967295\n", "d.yaml:6:14: error: task \"a\": \"retries\" must be at most 100, found 4294967295"),
        ("", "    retries: 101\n", "d.yaml:6:14: error: task \"a\": \"retries\" must be at most 100, found 101"),
        ("", "    retries: 99999999999999999999\n", "d.yaml:6:14: error: task \"a\": \"retries\" must be at most 100, found 100000000000000000000"),
        ("", "    retries: -99999999999999999999\n", "d.yaml:6:14: error: task \"a\": \"retries\" must be at least 0, found -100000000000000000000"),
        ("defaults: {retries: 1000}\n", "", "d.yaml:2:21: error: \"retries\" must be at most 100, found 1000"),
        ("max_active_runs: 1001\n", "", "d.yaml:2:18: error: \"max_active_runs\" must be at most 1000, found 1001"),
        ("max_active_tasks: 4294967296\n", "", "d.yaml:2:19: error: \"max_active_tasks\" must be at most 10000, found 4294967296"),
        ("retention: {runs: 1000001}\n", "", "d.yaml:2:19: error: \"retention.runs\" must be at most 1000000, found 1000001"),
        ("retention: {days: 4294967295}\n", "", "d.yaml:2:19: error: \"retention.days\" must be at most 36500, found 4294967295"),
    ];
    for (extra, task, expected) in cases {
        assert_eq!(errors(&dag_with(extra, task)), [expected], "{extra}{task}");
    }
    // The maximum itself is fine.
    let compiled = compile_str(&dag_with("max_active_runs: 1000\nretention: {runs: 1000000, days: 36500}\n", "    retries: 100\n")).unwrap();
    assert_eq!(compiled.dags[0].task("a").unwrap().retry.retries, 100);
}

#[test]
fn every_duration_has_a_maximum_and_a_timeout_is_never_zero() {
    let cases = [
        ("    timeout: 0s\n", "d.yaml:6:14: error: task \"a\": \"timeout\" must be longer than 0s, found \"0s\""),
        ("    timeout: -1s\n", "d.yaml:6:14: error: task \"a\": \"timeout\" must not be negative, found \"-1s\""),
        ("    timeout: 31d\n", "d.yaml:6:14: error: task \"a\": \"timeout\" must be at most 30d (30 days), found \"31d\""),
        ("    retry_delay: 99999999999h\n", "d.yaml:6:18: error: task \"a\": \"retry_delay\" must be at most 30d (30 days), found \"99999999999h\""),
        (
            "    retry_delay: 99999999999999999999999h\n",
            "d.yaml:6:18: error: task \"a\": \"retry_delay\" must be at most 30d (30 days), found \"99999999999999999999999h\"",
        ),
        ("    max_retry_delay: 1y\n", "d.yaml:6:22: error: task \"a\": \"max_retry_delay\" must be at most 30d (30 days), found \"1y\""),
    ];
    for (task, expected) in cases {
        assert_eq!(errors(&dag_with("", task)), [expected], "{task}");
    }
    assert_eq!(
        errors(&dag_with("defaults: {timeout: 0s}\n", "")),
        ["d.yaml:2:21: error: \"timeout\" must be longer than 0s, found \"0s\""]
    );
    // A retry may follow at once, and 30 days is the longest anything waits.
    let compiled = compile_str(&dag_with("", "    retry_delay: 0s\n    timeout: 30d\n")).unwrap();
    assert_eq!(compiled.dags[0].task("a").unwrap().timeout, Some(MAX_DURATION));
}

#[test]
fn ids_have_a_maximum_length() {
    let long = "a".repeat(MAX_ID_LEN + 1);
    assert_eq!(
        errors(&format!("dag: {long}\ntasks: [{{id: a, operator: command, with: {{command: x}}}}]\n")),
        [format!("d.yaml:1:6: error: DAG id \"{}...\" is 129 characters long; an id may have at most 128", "a".repeat(32))]
    );
    assert_eq!(
        errors(&format!("dag: d\ntasks: [{{id: {long}, operator: command, with: {{command: x}}}}]\n")),
        [format!("d.yaml:2:14: error: task id \"{}...\" is 129 characters long; an id may have at most 128", "a".repeat(32))]
    );
    let longest = "b".repeat(MAX_ID_LEN);
    assert!(compile_str(&format!("dag: {longest}\ntasks: [{{id: {longest}, operator: command, with: {{command: x}}}}]\n")).is_ok());
}

#[test]
fn a_dag_has_at_most_max_tasks_tasks() {
    let tasks: String = (0..=MAX_TASKS).map(|i| format!("  - {{id: t{i}, operator: command, with: {{command: x}}}}\n")).collect();
    assert_eq!(errors(&format!("dag: d\ntasks:\n{tasks}")), ["d.yaml:2:1: error: \"tasks\" holds 10001 tasks; a DAG may have at most 10000"]);
}

#[test]
fn a_file_larger_than_the_limit_is_refused_unparsed() {
    let bytes = vec![b'#'; MAX_FILE_BYTES as usize + 1];
    let errs = compile(&[SourceFile { path: "big.yaml".into(), bytes }], &registry()).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].short(), "big.yaml:1:1: error: file is 1048577 bytes, more than the 1048576 bytes (1 MiB) a DAG file may have");
}

#[test]
fn read_source_refuses_what_it_cannot_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 10]).unwrap();
    let err = read_source(&big).unwrap_err();
    assert!(err.message.starts_with("file is 1048586 bytes, more than the 1048576 bytes (1 MiB)"), "{err:?}");
    let fifo = dir.path().join("fifo.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    assert_eq!(read_source(&fifo).unwrap_err().message, "cannot read: not a regular file");
}

#[test]
fn a_folder_that_links_back_to_itself_is_walked_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "x").unwrap();
    std::os::unix::fs::symlink(dir.path(), dir.path().join("loop")).unwrap();
    let (files, errors) = discover(&[dir.path().to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(files, [dir.path().join("a.yaml")]);
}

#[test]
fn a_file_lists_at_most_a_hundred_errors_then_the_count_of_the_rest() {
    let deps: String = (0..5000).map(|i| format!("missing{i}, ")).collect();
    let text = format!("dag: d\ntasks:\n  - id: a\n    operator: command\n    with: {{command: x}}\n    depends_on: [{deps}]\n");
    let started = std::time::Instant::now();
    let errs = compile_str(&text).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "took {:?}", started.elapsed());
    assert_eq!(errs.len(), MAX_DIAGNOSTICS_PER_FILE + 1);
    let last = errs.last().unwrap();
    assert_eq!(last.omitted, 4900);
    assert_eq!(last.message, "4900 more errors in this file not shown (the first 100 are), the next one here");
    assert_eq!(errs.iter().map(Diagnostic::count).sum::<usize>(), 5000);
    // The hint names some tasks, not all of them.
    let hint = errs[0].hint.as_deref().unwrap();
    assert_eq!(hint, "tasks in this DAG: a");
    let many: String = (0..50).map(|i| format!("  - {{id: t{i}, operator: command, with: {{command: x}}, depends_on: [nope]}}\n")).collect();
    let errs = compile_str(&format!("dag: d\ntasks:\n{many}")).unwrap_err();
    assert!(errs[0].hint.as_deref().unwrap().ends_with(" and 30 more"), "{:?}", errs[0].hint);
}

#[test]
fn duplicate_keys_are_errors_at_every_depth() {
    let text = "dag: d\nparams:\n  p: {x: {y: 1, y: 2}}\n  p: 3\ntasks:\n  - id: a\n    operator: command\n    with:\n      command: x\n      command: y\n";
    assert_eq!(
        errors(text),
        [
            "d.yaml:3:17: error: duplicate key \"y\" in `params.p.x:` (first set at line 3)",
            "d.yaml:4:3: error: duplicate key \"p\" in `params:` (first set at line 3)",
            "d.yaml:10:7: error: task \"a\": duplicate key \"command\" in `with:` (first set at line 9)",
        ]
    );
    assert_eq!(
        errors("dag: d\ndag: e\ntasks: [{id: a, operator: command, with: {command: x}}]\n"),
        ["d.yaml:2:1: error: duplicate key \"dag\" in a DAG file (first set at line 1)"]
    );
}

#[test]
fn nesting_past_the_depth_bound_is_an_error_with_its_place() {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let errs = errors(&dag_with(&format!("params:\n  p: {deep}\n"), ""));
    assert_eq!(
        errs,
        ["d.yaml:3:68: error: invalid YAML: mappings and lists nest deeper than 64 levels here; a DAG file may nest at most 64 levels"]
    );
}

#[test]
fn long_messages_are_clipped() {
    let zone = "k".repeat(100_000);
    let errs = errors(&dag_with(&format!("timezone: \"{zone}\"\n"), ""));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].chars().count() <= crate::diagnostic::MAX_MESSAGE_CHARS + 40, "{}", errs[0].len());
    assert!(errs[0].contains(" characters ...] "), "{}", &errs[0][..100]);
}
