//! EMR steps as a DAG file writes them (`hive`, `spark`, `sqoop`, `jar`), and the exact
//! `HadoopJarStep` each one becomes.
//!
//! On release-label clusters (EMR 4 and later) programs run through `command-runner.jar`, whose
//! arguments are the command line, one argument per item, run without a shell. The arguments
//! follow what the AWS CLI's `aws emr add-steps` builds for the same step types, so a step looks
//! the same in the EMR console whichever tool added it:
//!
//! - `hive` with a script: `hive-script --run-hive-script --args -f s3://... -d KEY=VALUE ...`;
//! - `hive` with an inline query: `hive -e QUERY -d KEY=VALUE ...`;
//! - `spark`: `spark-submit --deploy-mode cluster [--class C] [--conf K=V ...] [options] APP ARGS`;
//! - `sqoop`: the command line split into words the way a shell would (quotes, backslashes), with
//!   no variables, globs or other expansion;
//! - `jar`: a custom jar, its main class, arguments and properties, passed as they are.

use std::collections::BTreeMap;
use std::fmt;

use aws_sdk_emr::types::{ActionOnFailure, HadoopJarStepConfig, KeyValue, StepConfig};
use flowctl_engine::operator::ConfigError;
use flowctl_engine::template::is_template;
use serde::{Deserialize, Deserializer};

/// The jar that runs a command line on the cluster.
pub const COMMAND_RUNNER: &str = "command-runner.jar";
/// The most steps one AddJobFlowSteps request (and one cluster at a time) may hold.
pub const MAX_STEPS: usize = 256;
/// The longest step name EMR accepts.
const MAX_NAME: usize = 256;

/// One step: give exactly one of `hive`, `spark`, `sqoop` and `jar`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// The step's name in the EMR console and in errors [default: `<task id> step <n> (<type>)`].
    pub name: Option<String>,
    /// What EMR does when this step fails: CONTINUE (run the next steps), CANCEL_AND_WAIT
    /// (cancel the steps after it, keep the cluster) or TERMINATE_CLUSTER [default: the task's
    /// `action_on_failure`].
    pub action_on_failure: Option<FailureAction>,
    /// A Hive script on S3, or an inline query.
    pub hive: Option<HiveStep>,
    /// A Spark application, run with spark-submit.
    pub spark: Option<SparkStep>,
    /// A Sqoop command line (`sqoop export ...`, `sqoop import ...`).
    pub sqoop: Option<SqoopStep>,
    /// A custom jar.
    pub jar: Option<JarStep>,
}

/// What EMR does when a step fails (the step's ActionOnFailure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub enum FailureAction {
    /// Run the next steps anyway.
    #[serde(rename = "CONTINUE", alias = "continue")]
    Continue,
    /// Cancel the steps after it; the cluster keeps running.
    #[serde(rename = "CANCEL_AND_WAIT", alias = "cancel_and_wait")]
    CancelAndWait,
    /// Terminate the cluster.
    #[serde(rename = "TERMINATE_CLUSTER", alias = "terminate_cluster")]
    TerminateCluster,
}

impl FailureAction {
    /// The SDK's value.
    pub fn sdk(self) -> ActionOnFailure {
        match self {
            FailureAction::Continue => ActionOnFailure::Continue,
            FailureAction::CancelAndWait => ActionOnFailure::CancelAndWait,
            FailureAction::TerminateCluster => ActionOnFailure::TerminateCluster,
        }
    }
}

/// A Hive step: `script` or `query`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HiveStep {
    /// The HiveQL script on S3, e.g. `s3://code/hive/daily_loans.q`. Give this or `query`.
    pub script: Option<String>,
    /// HiveQL to run as it is (`hive -e`). Give this or `script`.
    pub query: Option<String>,
    /// Variables the HiveQL reads as `${NAME}`: each becomes `-d NAME=VALUE`.
    #[serde(default)]
    pub variables: BTreeMap<String, Arg>,
    /// Hive settings for this step only: each becomes `--hiveconf KEY=VALUE`.
    #[serde(default)]
    pub hiveconf: BTreeMap<String, Arg>,
}

/// A Spark step, run with `spark-submit`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SparkStep {
    /// The application: a `.py` file or a `.jar`, on S3 or on the cluster.
    pub application: String,
    /// The main class of a jar application (`--class`).
    pub main_class: Option<String>,
    /// The application's own arguments, after it.
    #[serde(default)]
    pub args: Vec<Arg>,
    /// Spark properties: each becomes `--conf KEY=VALUE`.
    #[serde(default)]
    pub conf: BTreeMap<String, Arg>,
    /// Where the driver runs: `cluster` (on a core node, managed by YARN) or `client` (on the
    /// primary node, its output in the step's log) [default: cluster].
    #[serde(default)]
    pub deploy_mode: DeployMode,
    /// More spark-submit options, before the application, e.g.
    /// `[--executor-memory, 4g, --py-files, s3://code/deps.zip]`.
    #[serde(default)]
    pub submit_args: Vec<Arg>,
}

/// spark-submit's `--deploy-mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeployMode {
    /// The driver runs in the cluster.
    #[default]
    Cluster,
    /// The driver runs on the primary node.
    Client,
}

/// A Sqoop step.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqoopStep {
    /// The command line, starting with `sqoop` and its tool (`export`, `import`...). It is split
    /// into arguments as a shell would: spaces separate them, single and double quotes keep
    /// spaces, a backslash escapes the next character; nothing is expanded (no `$VAR`, globs or
    /// `~`).
    pub command: String,
}

/// A custom jar step.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JarStep {
    /// The jar: on S3 (`s3://code/jobs/loans.jar`), a path on the cluster, or
    /// `command-runner.jar` to run any command.
    pub path: String,
    /// The class whose main function runs [default: the jar manifest's Main-Class].
    pub main_class: Option<String>,
    /// The arguments of the main function.
    #[serde(default)]
    pub args: Vec<Arg>,
    /// Java properties set for the step.
    #[serde(default)]
    pub properties: BTreeMap<String, Arg>,
}

/// A command-line argument: a string, or a number or boolean written as it reads (`100`,
/// `true`), so YAML's typing of unquoted values does not get in the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg(pub String);

impl<'de> Deserialize<'de> for Arg {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Arg;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Arg, E> {
                Ok(Arg(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Arg, E> {
                Ok(Arg(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl schemars::JsonSchema for Arg {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Arg".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A string; a number or boolean is taken as written.",
            "type": ["string", "number", "boolean"]
        })
    }
}

/// A step ready for the SDK: what EMR will run, in the form tests pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltStep {
    /// The step's name.
    pub name: String,
    /// What EMR does when it fails.
    pub action_on_failure: FailureAction,
    /// The jar (`command-runner.jar` for every type but `jar`).
    pub jar: String,
    /// The main class (`jar` steps only).
    pub main_class: Option<String>,
    /// The arguments.
    pub args: Vec<String>,
    /// Java properties (`jar` steps only).
    pub properties: BTreeMap<String, String>,
}

impl BuiltStep {
    /// The SDK's StepConfig.
    pub fn to_sdk(&self) -> StepConfig {
        let mut jar = HadoopJarStepConfig::builder().jar(&self.jar).set_args(Some(self.args.clone())).set_main_class(self.main_class.clone());
        for (key, value) in &self.properties {
            jar = jar.properties(KeyValue::builder().key(key).value(value).build());
        }
        StepConfig::builder()
            .name(&self.name)
            .action_on_failure(self.action_on_failure.sdk())
            .hadoop_jar_step(jar.build())
            .build()
    }
}

impl StepSpec {
    /// The step type's name: `hive`, `spark`, `sqoop` or `jar`.
    pub fn kind(&self) -> &'static str {
        match (&self.hive, &self.spark, &self.sqoop, &self.jar) {
            (Some(_), ..) => "hive",
            (_, Some(_), ..) => "spark",
            (_, _, Some(_), _) => "sqoop",
            _ => "jar",
        }
    }

    /// Checks what types alone cannot, at compile time; `path` is where the step is (`steps[0]`).
    pub fn check(&self, path: &str) -> Result<(), ConfigError> {
        let given: Vec<&str> = [("hive", self.hive.is_some()), ("spark", self.spark.is_some()), ("sqoop", self.sqoop.is_some()), ("jar", self.jar.is_some())]
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect();
        match given.as_slice() {
            [] => return Err(ConfigError::new(path, "give the step's program: one of `hive`, `spark`, `sqoop` or `jar`")),
            [_] => {}
            [a, b, ..] => {
                return Err(ConfigError::new(path, format!("gives both `{a}` and `{b}`; a step runs one program, so make them two steps")));
            }
        }
        if let Some(name) = &self.name {
            if name.trim().is_empty() {
                return Err(ConfigError::new(format!("{path}.name"), "is empty; name the step, or leave `name` out for the default"));
            }
            if name.chars().count() > MAX_NAME {
                return Err(ConfigError::new(format!("{path}.name"), format!("is longer than the {MAX_NAME} characters EMR accepts")));
            }
        }
        if let Some(hive) = &self.hive {
            let at = format!("{path}.hive");
            match (&hive.script, &hive.query) {
                (Some(_), Some(_)) => return Err(ConfigError::new(&at, "give either `script` (a file on S3) or `query` (inline HiveQL), not both")),
                (None, None) => return Err(ConfigError::new(&at, "give `script` (a HiveQL file on S3) or `query` (inline HiveQL)")),
                (Some(script), None) => check_s3_url(&format!("{at}.script"), script)?,
                (None, Some(query)) if query.trim().is_empty() => return Err(ConfigError::new(format!("{at}.query"), "is empty")),
                _ => {}
            }
            check_keys(&format!("{at}.variables"), hive.variables.keys())?;
            check_keys(&format!("{at}.hiveconf"), hive.hiveconf.keys())?;
        }
        if let Some(spark) = &self.spark {
            let at = format!("{path}.spark");
            if spark.application.trim().is_empty() {
                return Err(ConfigError::new(format!("{at}.application"), "is empty; give the .py or .jar file to run"));
            }
            check_keys(&format!("{at}.conf"), spark.conf.keys())?;
        }
        if let Some(sqoop) = &self.sqoop {
            let at = format!("{path}.sqoop.command");
            let text = if is_template(&sqoop.command) { without_templates(&sqoop.command) } else { sqoop.command.clone() };
            sqoop_args(&text).map_err(|e| ConfigError::new(&at, e))?;
        }
        if let Some(jar) = &self.jar {
            if jar.path.trim().is_empty() {
                return Err(ConfigError::new(format!("{path}.jar.path"), "is empty; give the jar to run (s3://..., a path on the cluster, or command-runner.jar)"));
            }
            check_keys(&format!("{path}.jar.properties"), jar.properties.keys())?;
        }
        Ok(())
    }

    /// The step as EMR will run it, with the rendered settings. `number` counts from 1.
    pub fn build(&self, task_id: &str, number: usize, default_action: FailureAction) -> Result<BuiltStep, String> {
        let name = self.name.clone().unwrap_or_else(|| format!("{task_id} step {number} ({})", self.kind()));
        let action_on_failure = self.action_on_failure.unwrap_or(default_action);
        let step = |args: Vec<String>| BuiltStep {
            name: name.clone(),
            action_on_failure,
            jar: COMMAND_RUNNER.to_string(),
            main_class: None,
            args,
            properties: BTreeMap::new(),
        };
        if let Some(hive) = &self.hive {
            return Ok(step(hive_args(hive)?));
        }
        if let Some(spark) = &self.spark {
            return Ok(step(spark_args(spark)));
        }
        if let Some(sqoop) = &self.sqoop {
            return Ok(step(sqoop_args(&sqoop.command)?));
        }
        if let Some(jar) = &self.jar {
            return Ok(BuiltStep {
                name,
                action_on_failure,
                jar: jar.path.clone(),
                main_class: jar.main_class.clone(),
                args: jar.args.iter().map(|a| a.0.clone()).collect(),
                properties: jar.properties.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect(),
            });
        }
        Err("the step names no program (hive, spark, sqoop or jar)".to_string())
    }
}

/// Checks every step of a list and its length.
pub fn check_steps(path: &str, steps: &[StepSpec], required: bool) -> Result<(), ConfigError> {
    if required && steps.is_empty() {
        return Err(ConfigError::new(path, "is empty; give at least one step"));
    }
    if steps.len() > MAX_STEPS {
        return Err(ConfigError::new(path, format!("holds {} steps, more than the {MAX_STEPS} EMR accepts at once", steps.len())));
    }
    for (i, step) in steps.iter().enumerate() {
        step.check(&format!("{path}[{i}]"))?;
    }
    Ok(())
}

/// Builds every step with the rendered settings.
pub fn build_steps(steps: &[StepSpec], task_id: &str, default_action: FailureAction) -> Result<Vec<BuiltStep>, String> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| s.build(task_id, i + 1, default_action).map_err(|e| format!("steps[{i}]: {e}")))
        .collect()
}

fn hive_args(hive: &HiveStep) -> Result<Vec<String>, String> {
    let mut args: Vec<String> = match (&hive.script, &hive.query) {
        (Some(script), None) => {
            if !script.trim_start().to_ascii_lowercase().starts_with("s3://") {
                return Err(format!("hive.script: \"{script}\" is not an s3:// URL; put the script on S3 and write s3://bucket/key"));
            }
            ["hive-script", "--run-hive-script", "--args", "-f", script.trim()].map(String::from).to_vec()
        }
        (None, Some(query)) => vec!["hive".into(), "-e".into(), query.clone()],
        _ => return Err("hive: give either `script` or `query`".to_string()),
    };
    for (key, value) in &hive.variables {
        args.push("-d".into());
        args.push(format!("{key}={}", value.0));
    }
    for (key, value) in &hive.hiveconf {
        args.push("--hiveconf".into());
        args.push(format!("{key}={}", value.0));
    }
    Ok(args)
}

fn spark_args(spark: &SparkStep) -> Vec<String> {
    let mode = match spark.deploy_mode {
        DeployMode::Cluster => "cluster",
        DeployMode::Client => "client",
    };
    let mut args: Vec<String> = vec!["spark-submit".into(), "--deploy-mode".into(), mode.into()];
    if let Some(class) = &spark.main_class {
        args.push("--class".into());
        args.push(class.clone());
    }
    for (key, value) in &spark.conf {
        args.push("--conf".into());
        args.push(format!("{key}={}", value.0));
    }
    args.extend(spark.submit_args.iter().map(|a| a.0.clone()));
    args.push(spark.application.trim().to_string());
    args.extend(spark.args.iter().map(|a| a.0.clone()));
    args
}

/// Sqoop's tools, the word after `sqoop`.
const SQOOP_TOOLS: &[&str] = &[
    "codegen",
    "create-hive-table",
    "eval",
    "export",
    "help",
    "import",
    "import-all-tables",
    "import-mainframe",
    "job",
    "list-databases",
    "list-tables",
    "merge",
    "metastore",
    "version",
];

/// The arguments of a Sqoop command line: checked to start with `sqoop` and one of its tools.
pub fn sqoop_args(command: &str) -> Result<Vec<String>, String> {
    let words = split_command_line(command)?;
    match words.as_slice() {
        [] => Err("is empty; write the command line, e.g. sqoop export --connect jdbc:mysql://db/loans --table daily --export-dir s3://bucket/daily/".to_string()),
        [first, ..] if first != "sqoop" => Err(format!("starts with \"{first}\"; the command line must start with sqoop and its tool, e.g. sqoop export ...")),
        [_] => Err("names no Sqoop tool; write e.g. sqoop export ... or sqoop import ...".to_string()),
        [_, tool, ..] if !SQOOP_TOOLS.contains(&tool.as_str()) => {
            Err(format!("\"{tool}\" is not a Sqoop tool; use one of {}", SQOOP_TOOLS.join(", ")))
        }
        _ => Ok(words),
    }
}

/// Splits a command line into words as a POSIX shell does, without expanding anything: blanks
/// separate words; `'...'` keeps everything as it is; `"..."` keeps blanks, and a backslash in it
/// escapes only `"`, `\`, `$`, `` ` `` and a newline; outside quotes a backslash escapes the next
/// character (a backslash-newline is removed).
pub fn split_command_line(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    // Whether a word has started: `''` is an empty word, not nothing.
    let mut in_word = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("has a single quote (') that is never closed".to_string()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("has a double quote (\") that is never closed".to_string()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("has a double quote (\") that is never closed".to_string()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => {
                    in_word = true;
                    word.push(c);
                }
                None => return Err("ends with a backslash that escapes nothing".to_string()),
            },
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The text with each template (`{{ ... }}`, `{% ... %}`, `{# ... #}`) replaced by one plain
/// word, so a command line's quoting can be checked before it is rendered.
pub fn without_templates(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(['{']) {
        let after = &rest[start..];
        let close = match after.get(..2) {
            Some("{{") => "}}",
            Some("{%") => "%}",
            Some("{#") => "#}",
            _ => {
                out.push_str(&rest[..start + 1]);
                rest = &rest[start + 1..];
                continue;
            }
        };
        out.push_str(&rest[..start]);
        match after[2..].find(close) {
            Some(end) => {
                out.push_str("TEMPLATE");
                rest = &after[2 + end + 2..];
            }
            None => {
                out.push_str(after);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Checks an `s3://` setting at compile time (a template may render to one).
fn check_s3_url(path: &str, text: &str) -> Result<(), ConfigError> {
    let trimmed = text.trim_start();
    if trimmed.to_ascii_lowercase().starts_with("s3://") {
        let rest = &trimmed[5..];
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() || key.is_empty() {
            return Err(ConfigError::new(path, format!("\"{text}\" names no object; write s3://bucket/key")));
        }
        return Ok(());
    }
    if trimmed.starts_with("{{") {
        return Ok(());
    }
    Err(ConfigError::new(path, format!("\"{text}\" is not an s3:// URL; put the script on S3 and write s3://bucket/key")))
}

/// Checks the keys of a `KEY=VALUE` mapping: not empty, no `=` and no blank.
fn check_keys<'a>(path: &str, keys: impl Iterator<Item = &'a String>) -> Result<(), ConfigError> {
    for key in keys {
        if key.is_empty() || key.contains('=') || key.chars().any(char::is_whitespace) {
            return Err(ConfigError::new(path, format!("\"{key}\" cannot be a name: it becomes NAME=VALUE, so it must not be empty or hold `=` or blanks")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: serde_json::Value) -> StepSpec {
        serde_json::from_value(yaml).unwrap()
    }

    fn args(step: serde_json::Value) -> Vec<String> {
        let step = spec(step);
        step.check("steps[0]").unwrap();
        step.build("load", 1, FailureAction::CancelAndWait).unwrap().args
    }

    #[test]
    fn hive_script_runs_through_hive_script_with_d_variables() {
        let built = spec(serde_json::json!({
            "hive": {"script": "s3://code/hive/daily.q", "variables": {"DAY": "2024-03-01", "LIMIT": 100}, "hiveconf": {"hive.exec.parallel": true}}
        }))
        .build("load", 2, FailureAction::Continue)
        .unwrap();
        assert_eq!(built.jar, "command-runner.jar");
        assert_eq!(built.name, "load step 2 (hive)");
        assert_eq!(built.action_on_failure, FailureAction::Continue);
        assert_eq!(
            built.args,
            ["hive-script", "--run-hive-script", "--args", "-f", "s3://code/hive/daily.q", "-d", "DAY=2024-03-01", "-d", "LIMIT=100", "--hiveconf", "hive.exec.parallel=true"]
        );
    }

    #[test]
    fn hive_query_runs_inline_with_hive_e() {
        assert_eq!(
            args(serde_json::json!({"hive": {"query": "SELECT count(*) FROM loans WHERE day = '${DAY}'", "variables": {"DAY": "2024-03-01"}}})),
            ["hive", "-e", "SELECT count(*) FROM loans WHERE day = '${DAY}'", "-d", "DAY=2024-03-01"]
        );
    }

    #[test]
    fn spark_submits_in_cluster_mode_with_class_conf_options_and_args() {
        assert_eq!(
            args(serde_json::json!({"spark": {
                "application": "s3://code/jobs/score.jar",
                "main_class": "com.example.Score",
                "conf": {"spark.executor.memory": "4g", "spark.dynamicAllocation.enabled": false},
                "submit_args": ["--num-executors", 4],
                "args": ["--day", "2024-03-01", 7]
            }})),
            [
                "spark-submit", "--deploy-mode", "cluster", "--class", "com.example.Score",
                "--conf", "spark.dynamicAllocation.enabled=false", "--conf", "spark.executor.memory=4g",
                "--num-executors", "4", "s3://code/jobs/score.jar", "--day", "2024-03-01", "7"
            ]
        );
        assert_eq!(
            args(serde_json::json!({"spark": {"application": "s3://code/jobs/score.py", "deploy_mode": "client"}})),
            ["spark-submit", "--deploy-mode", "client", "s3://code/jobs/score.py"]
        );
    }

    #[test]
    fn sqoop_command_lines_split_like_a_shell_without_expansion() {
        assert_eq!(
            args(serde_json::json!({"sqoop": {"command": "sqoop export --connect jdbc:mysql://db:3306/loans --table daily \\\n  --export-dir s3://lake/daily/2024-03-01/ --input-fields-terminated-by ',' --columns \"id,amount,due date\" --where 'a = \"$X\"'"}})),
            [
                "sqoop", "export", "--connect", "jdbc:mysql://db:3306/loans", "--table", "daily", "--export-dir", "s3://lake/daily/2024-03-01/",
                "--input-fields-terminated-by", ",", "--columns", "id,amount,due date", "--where", "a = \"$X\""
            ]
        );
        assert_eq!(split_command_line(r#"a "b \"c\" \x" '' d\ e"#).unwrap(), ["a", "b \"c\" \\x", "", "d e"]);
        assert_eq!(split_command_line("a 'b").unwrap_err(), "has a single quote (') that is never closed");
        assert_eq!(split_command_line("a \"b").unwrap_err(), "has a double quote (\") that is never closed");
        assert_eq!(split_command_line("a \\").unwrap_err(), "ends with a backslash that escapes nothing");
    }

    #[test]
    fn jar_steps_pass_their_settings_as_they_are() {
        let built = spec(serde_json::json!({"name": "streaming", "action_on_failure": "TERMINATE_CLUSTER", "jar": {
            "path": "s3://code/jobs/loans.jar", "main_class": "com.example.Main", "args": ["a b", 1], "properties": {"mapreduce.job.reduces": 4}
        }}))
        .build("load", 1, FailureAction::CancelAndWait)
        .unwrap();
        assert_eq!(built.jar, "s3://code/jobs/loans.jar");
        assert_eq!(built.main_class.as_deref(), Some("com.example.Main"));
        assert_eq!(built.args, ["a b", "1"]);
        assert_eq!(built.properties["mapreduce.job.reduces"], "4");
        assert_eq!(built.name, "streaming");
        assert_eq!(built.action_on_failure, FailureAction::TerminateCluster);
        let sdk = built.to_sdk();
        assert_eq!(sdk.action_on_failure(), Some(&ActionOnFailure::TerminateCluster));
        let jar = sdk.hadoop_jar_step().unwrap();
        assert_eq!((jar.jar(), jar.main_class(), jar.args()), (Some("s3://code/jobs/loans.jar"), Some("com.example.Main"), &["a b".to_string(), "1".to_string()][..]));
    }

    #[test]
    fn mistakes_are_found_at_compile_time_with_their_path() {
        let err = |v: serde_json::Value| {
            let e = spec(v).check("steps[1]").unwrap_err();
            (e.path, e.message)
        };
        assert_eq!(err(serde_json::json!({"name": "x"})), ("steps[1]".into(), "give the step's program: one of `hive`, `spark`, `sqoop` or `jar`".into()));
        assert_eq!(
            err(serde_json::json!({"hive": {"query": "x"}, "spark": {"application": "a.py"}})),
            ("steps[1]".into(), "gives both `hive` and `spark`; a step runs one program, so make them two steps".into())
        );
        assert_eq!(
            err(serde_json::json!({"hive": {"script": "s3://b/x.q", "query": "x"}})),
            ("steps[1].hive".into(), "give either `script` (a file on S3) or `query` (inline HiveQL), not both".into())
        );
        assert_eq!(
            err(serde_json::json!({"hive": {"script": "/home/me/x.q"}})),
            ("steps[1].hive.script".into(), "\"/home/me/x.q\" is not an s3:// URL; put the script on S3 and write s3://bucket/key".into())
        );
        assert_eq!(
            err(serde_json::json!({"hive": {"script": "s3://b/x.q", "variables": {"A=B": "c"}}})),
            ("steps[1].hive.variables".into(), "\"A=B\" cannot be a name: it becomes NAME=VALUE, so it must not be empty or hold `=` or blanks".into())
        );
        assert_eq!(
            err(serde_json::json!({"sqoop": {"command": "sqoop exprot --table t"}})),
            ("steps[1].sqoop.command".into(), "\"exprot\" is not a Sqoop tool; use one of codegen, create-hive-table, eval, export, help, import, import-all-tables, import-mainframe, job, list-databases, list-tables, merge, metastore, version".into())
        );
        assert_eq!(
            err(serde_json::json!({"sqoop": {"command": "export --table t"}})),
            ("steps[1].sqoop.command".into(), "starts with \"export\"; the command line must start with sqoop and its tool, e.g. sqoop export ...".into())
        );
        assert_eq!(
            err(serde_json::json!({"sqoop": {"command": "sqoop export --where 'day = {{ ds }}"}})),
            ("steps[1].sqoop.command".into(), "has a single quote (') that is never closed".into())
        );
        // A template's own blanks do not split the line at compile time.
        assert!(spec(serde_json::json!({"sqoop": {"command": "sqoop export --export-dir s3://lake/{{ ds }}/ --table '{{ params.table }}'"}})).check("s").is_ok());
        assert!(spec(serde_json::json!({"hive": {"script": "{{ params.script }}"}})).check("s").is_ok());
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_rejected() {
        let e = serde_json::from_value::<StepSpec>(serde_json::json!({"hive": {"scirpt": "s3://b/x"}})).unwrap_err().to_string();
        assert!(e.starts_with("unknown field `scirpt`"), "{e}");
        let e = serde_json::from_value::<StepSpec>(serde_json::json!({"spark": {"application": "a.py", "args": [[1]]}})).unwrap_err().to_string();
        assert!(e.contains("expected a string, number or boolean"), "{e}");
        let e = serde_json::from_value::<StepSpec>(serde_json::json!({"action_on_failure": "STOP", "jar": {"path": "x.jar"}})).unwrap_err().to_string();
        assert!(e.starts_with("unknown variant `STOP`"), "{e}");
    }

    #[test]
    fn templates_are_replaced_by_one_word_for_the_compile_time_check() {
        assert_eq!(without_templates("a {{ x y }} b {% if c %}d{% endif %} {#c#} {x}"), "a TEMPLATE b TEMPLATEdTEMPLATE TEMPLATE {x}");
    }
}
