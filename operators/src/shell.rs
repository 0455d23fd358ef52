//! `shell`: runs a command line through `sh -c`, or a program with its arguments and no shell.

use std::collections::BTreeMap;

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, Operator, Outcome, TaskContext, TaskError};
use serde::Deserialize;

/// The settings of a `shell` task.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellConfig {
    /// A command line, run with `sh -c`. Give this or `argv`.
    pub command: Option<String>,
    /// A program and its arguments, run without a shell. Give this or `command`.
    pub argv: Option<Vec<String>>,
    /// Extra environment variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The working directory (default: the directory flowctl runs in).
    pub cwd: Option<String>,
    /// The exit code that ends the attempt as skipped instead of failed (default 99, as in
    /// Airflow's BashOperator); `null` turns it off.
    #[serde(default = "default_skip_code")]
    pub skip_on_exit_code: Option<i32>,
    /// How long the command gets to exit after SIGTERM, on timeout or cancel, before SIGKILL
    /// (default 10s).
    pub grace_period: Option<String>,
}

fn default_skip_code() -> Option<i32> {
    Some(99)
}

/// The `shell` operator.
pub struct Shell;

#[async_trait]
impl Operator for Shell {
    const NAME: &'static str = "shell";
    type Config = ShellConfig;

    fn check(config: &ShellConfig) -> Result<(), ConfigError> {
        match (&config.command, &config.argv) {
            (Some(_), Some(_)) => Err(ConfigError::new("", "give either `command` or `argv`, not both")),
            (None, None) => Err(ConfigError::new("", "give `command` (run with sh -c) or `argv` (run without a shell)")),
            (None, Some(argv)) if argv.is_empty() => Err(ConfigError::new("argv", "must name at least the program to run")),
            _ => Ok(()),
        }?;
        if let Some(grace) = &config.grace_period {
            if !flowctl_engine::template::is_template(grace) {
                humantime::parse_duration(grace)
                    .map_err(|e| ConfigError::new("grace_period", format!("invalid duration \"{grace}\": {e}")))?;
            }
        }
        Ok(())
    }

    async fn execute(&self, _config: ShellConfig, _ctx: TaskContext) -> Result<Outcome, TaskError> {
        Err(TaskError::fatal("the shell operator runs through the executor"))
    }
}
