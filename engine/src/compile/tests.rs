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
