//! `shell`: runs a command line through `sh -c`, or a program with its arguments and no shell.
//!
//! The command runs in a process group of its own, so a timeout or cancel (SIGTERM, then SIGKILL
//! after the grace period) reaches every process it started. stdout and stderr stream into the
//! attempt log line by line. Outputs come from the `FLOWCTL_OUTPUT` file, where the command
//! appends `key=value` lines as in GitHub Actions, plus `exit_code`.

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, LogSink, Operator, Outcome, Outputs, TaskContext, TaskError};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// How long a command gets between SIGTERM and SIGKILL when none is set.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// The longest grace period a command gets (the engine waits a little longer than this for the
/// operator to report).
const MAX_GRACE: Duration = Duration::from_secs(300);
/// How many stderr lines a failure's error carries.
const STDERR_TAIL_LINES: usize = 20;
/// The longest single argument or `KEY=value` environment string Linux passes to a program
/// (MAX_ARG_STRLEN, 32 pages, its terminating NUL included). A longer one fails every attempt
/// with "Argument list too long", so compile refuses it.
const MAX_ARG_BYTES: usize = 32 * 4096 - 1;

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
        let literal = |text: &str| !flowctl_engine::template::is_template(text);
        let too_long = |path: String, bytes: usize| {
            ConfigError::new(
                path,
                format!("is {bytes} bytes, more than the {MAX_ARG_BYTES} Linux passes to a program in one argument or variable: put the text in a file the command reads"),
            )
        };
        if let Some(line) = config.command.as_deref().filter(|l| literal(l) && l.len() > MAX_ARG_BYTES) {
            return Err(too_long("command".into(), line.len()));
        }
        for (i, arg) in config.argv.iter().flatten().enumerate() {
            if literal(arg) && arg.len() > MAX_ARG_BYTES {
                return Err(too_long(format!("argv[{i}]"), arg.len()));
            }
        }
        for (key, value) in &config.env {
            if literal(value) && key.len() + 1 + value.len() > MAX_ARG_BYTES {
                return Err(too_long(format!("env.{key}"), key.len() + 1 + value.len()));
            }
        }
        if let Some(grace) = &config.grace_period {
            if !flowctl_engine::template::is_template(grace) {
                let parsed = humantime::parse_duration(grace)
                    .map_err(|e| ConfigError::new("grace_period", format!("invalid duration \"{grace}\": {e}")))?;
                if parsed > MAX_GRACE {
                    return Err(ConfigError::new("grace_period", format!("{grace} is longer than the 5m a command may take to stop")));
                }
            }
        }
        Ok(())
    }

    async fn execute(&self, config: ShellConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        run(config, ctx).await
    }
}

/// The exit code's meaning, after the process has ended.
enum Ended {
    Code(i32),
    Signal(i32),
}

async fn run(config: ShellConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
    let grace = config
        .grace_period
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| TaskError::fatal(format!("invalid grace_period: {e}")))?
        .unwrap_or(DEFAULT_GRACE);
    // The command may write secrets to its outputs file (they are masked only on their way to
    // the store), so the file goes however the attempt ends, and so do the files of earlier
    // tries that a stopped flowctl left behind.
    for earlier in 1..ctx.try_number {
        let _ = std::fs::remove_file(ctx.work_dir.join(format!("{}.{earlier}.output", ctx.task_id)));
    }
    let output_file = ctx.work_dir.join(format!("{}.{}.output", ctx.task_id, ctx.try_number));
    let _remove_outputs = RemoveOnDrop(output_file.clone());
    std::fs::write(&output_file, b"")
        .map_err(|e| TaskError::retryable(format!("cannot create {}: {e}", output_file.display())))?;

    let mut command = match (&config.command, &config.argv) {
        (Some(line), _) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(line);
            c
        }
        (None, Some(argv)) => {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        (None, None) => return Err(TaskError::fatal("give `command` or `argv`")),
    };
    command
        .envs(&config.env)
        .env("FLOWCTL_OUTPUT", &output_file)
        .env("FLOWCTL_DAG_ID", &ctx.dag_id)
        .env("FLOWCTL_RUN_ID", &ctx.run_id)
        .env("FLOWCTL_TASK_ID", &ctx.task_id)
        .env("FLOWCTL_TRY_NUMBER", ctx.try_number.to_string())
        .env("FLOWCTL_LOGICAL_DATE", ctx.logical_date.to_rfc3339())
        // Every process of the attempt carries its id, so a restarted flowctl can find what a
        // stopped one left behind (see flowctl_engine::process).
        .env(flowctl_engine::process::ATTEMPT_ENV, &ctx.attempt_id)
        // The server's API token is the server's: a task must not be able to drive it.
        .env_remove("FLOWCTL_API_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout or cancel reaches every process the command
        // started, not just the shell.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &config.cwd {
        command.current_dir(cwd);
    }
    if ctx.die_with_flowctl {
        die_with_parent(&mut command);
    }
    let mut child = command.spawn().map_err(|e| {
        let program = config.argv.as_ref().map_or("sh", |a| a[0].as_str());
        let kind = if e.kind() == std::io::ErrorKind::NotFound { "not found" } else { "cannot be started" };
        let hint = match &config.cwd {
            Some(cwd) if !std::path::Path::new(cwd).is_dir() => format!(" (cwd {cwd} is not a folder)"),
            _ => String::new(),
        };
        TaskError::fatal(format!("program \"{program}\" {kind}: {e}{hint}"))
    })?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);

    let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL_LINES)));
    let out_reader = child.stdout.take().map(|out| tokio::spawn(stream_lines(out, ctx.log.clone(), None)));
    let err_reader =
        child.stderr.take().map(|err| tokio::spawn(stream_lines(err, ctx.log.clone(), Some(stderr_tail.clone()))));

    let status = tokio::select! {
        status = child.wait() => status,
        _ = ctx.cancel.cancelled() => {
            stop_group(pgid, &mut child, grace, ctx.log.as_ref()).await;
            for reader in [out_reader, err_reader].into_iter().flatten() {
                reader.abort();
            }
            return Err(TaskError::cancelled());
        }
    }
    .map_err(|e| TaskError::retryable(format!("cannot wait for the command: {e}")))?;
    // The command is done: whatever it left running in its group goes too, so no child outlives
    // its task (and the output pipes close).
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    for reader in [out_reader, err_reader].into_iter().flatten() {
        let _ = reader.await;
    }

    let ended = match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Code(code),
        (None, Some(signal)) => Ended::Signal(signal),
        (None, None) => Ended::Code(-1),
    };
    let mut outputs = read_outputs(&output_file).map_err(TaskError::fatal)?;
    match ended {
        Ended::Code(0) => {
            outputs.insert("exit_code".into(), 0.into());
            Ok(Outcome::Success { outputs })
        }
        Ended::Code(code) if Some(code) == config.skip_on_exit_code => {
            outputs.insert("exit_code".into(), code.into());
            Ok(Outcome::Skipped { reason: format!("command exited with code {code} (skip_on_exit_code)"), outputs })
        }
        ended => {
            let what = match ended {
                Ended::Code(code) => format!("command exited with code {code}"),
                Ended::Signal(signal) => format!("command was killed by signal {signal}"),
            };
            let tail: Vec<String> = stderr_tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default();
            // The first line says what failed in a few words (progress lines and summaries show
            // only it); the stderr tail follows.
            let message = match tail.as_slice() {
                [] => what,
                [only] => format!("{what}: {only}"),
                [.., last] => format!("{what}: {last}\nlast lines of stderr:\n{}", tail.join("\n")),
            };
            Err(TaskError::retryable(message))
        }
    }
}

/// Removes a file when dropped: when the attempt returns, fails, or is dropped on a timeout.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Asks the kernel to SIGKILL the command when flowctl dies, so a crashed flowctl leaves no
/// running command behind to run a second time beside its retry.
fn die_with_parent(command: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed; prctl(PR_SET_PDEATHSIG) and getppid are plain system calls that allocate
    // nothing and take no locks.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // flowctl may have died before the line above ran: then no signal will come.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("flowctl exited while starting the command"));
            }
            Ok(())
        });
    }
}

/// SIGTERM to the whole group, then SIGKILL after the grace period.
async fn stop_group(pgid: Option<Pid>, child: &mut tokio::process::Child, grace: Duration, log: &dyn LogSink) {
    let Some(pgid) = pgid else {
        let _ = child.kill().await;
        return;
    };
    let _ = killpg(pgid, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        log.line(&format!("still running {} after SIGTERM: sending SIGKILL", humantime::format_duration(grace)));
    }
    // Kill the rest of the group even when the leader obeyed: its children may not have.
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait().await;
}

async fn stream_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    log: Arc<dyn LogSink>,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                log.line(&line);
                if let Some(tail) = &tail {
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == STDERR_TAIL_LINES {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            }
            Ok(None) => break,
            // Not UTF-8: keep streaming what can be read rather than lose the rest.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => continue,
            Err(_) => break,
        }
    }
}

/// Reads `key=value` lines, and GitHub's `key<<DELIMITER` ... `DELIMITER` blocks for values that
/// span lines.
fn read_outputs(path: &std::path::Path) -> Result<Outputs, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut outputs = Outputs::new();
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some((key, delimiter)) = line.split_once("<<").filter(|(k, _)| !k.contains('=')) {
            let mut value = Vec::new();
            let mut closed = false;
            for (_, l) in lines.by_ref() {
                if l == delimiter {
                    closed = true;
                    break;
                }
                value.push(l);
            }
            if !closed {
                return Err(format!("FLOWCTL_OUTPUT line {}: \"{key}<<{delimiter}\" is never closed by a line \"{delimiter}\"", number + 1));
            }
            outputs.insert(key.trim().to_string(), Value::String(value.join("\n")));
        } else if let Some((key, value)) = line.split_once('=') {
            outputs.insert(key.trim().to_string(), Value::String(value.to_string()));
        } else {
            return Err(format!(
                "FLOWCTL_OUTPUT line {}: expected key=value, found \"{}\"",
                number + 1,
                line.chars().take(80).collect::<String>()
            ));
        }
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(command: Option<String>, argv: Option<Vec<String>>, env: BTreeMap<String, String>) -> ShellConfig {
        ShellConfig { command, argv, env, cwd: None, skip_on_exit_code: None, grace_period: None }
    }

    #[test]
    fn arguments_longer_than_linux_passes_are_refused_at_compile_time() {
        let long = "x".repeat(MAX_ARG_BYTES + 1);
        let err = Shell::check(&config(Some(long.clone()), None, BTreeMap::new())).unwrap_err();
        assert_eq!(err.path, "command");
        assert_eq!(err.message, "is 131072 bytes, more than the 131071 Linux passes to a program in one argument or variable: put the text in a file the command reads");
        let err = Shell::check(&config(None, Some(vec!["echo".into(), long.clone()]), BTreeMap::new())).unwrap_err();
        assert_eq!(err.path, "argv[1]");
        let err = Shell::check(&config(Some("env".into()), None, BTreeMap::from([("BIG".into(), long)]))).unwrap_err();
        assert_eq!(err.path, "env.BIG");
        // The longest that fits is fine, and a template is checked once rendered.
        assert!(Shell::check(&config(Some("x".repeat(MAX_ARG_BYTES)), None, BTreeMap::new())).is_ok());
        assert!(Shell::check(&config(Some(format!("{{{{ ds }}}}{}", "x".repeat(MAX_ARG_BYTES))), None, BTreeMap::new())).is_ok());
    }

    /// The limit is the kernel's: one byte more and the program does not start.
    #[tokio::test]
    async fn the_kernel_refuses_one_byte_more() {
        let start = |len: usize| tokio::process::Command::new("sh").arg("-c").arg(format!(": {}", "x".repeat(len - 2))).status();
        assert!(start(MAX_ARG_BYTES).await.is_ok());
        let err = start(MAX_ARG_BYTES + 1).await.unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::E2BIG), "{err}");
    }

    #[test]
    fn outputs_follow_the_github_actions_convention() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, "path=/tmp/a=b\nrows=3\nnotes<<EOF\nline 1\nline 2\nEOF\n").unwrap();
        let out = read_outputs(&path).unwrap();
        assert_eq!(out["path"], "/tmp/a=b");
        assert_eq!(out["rows"], "3");
        assert_eq!(out["notes"], "line 1\nline 2");
        std::fs::write(&path, "oops\n").unwrap();
        assert_eq!(read_outputs(&path).unwrap_err(), "FLOWCTL_OUTPUT line 1: expected key=value, found \"oops\"");
    }

    #[tokio::test]
    async fn the_outputs_file_goes_however_the_attempt_ends() {
        let work = tempfile::tempdir().unwrap();
        // What a try before a crash left behind, and a command whose outputs file does not parse.
        std::fs::write(work.path().join("task.1.output"), "password=hunter2-canary\n").unwrap();
        let task = flowctl_engine::operator::TaskContext::test_builder().work_dir(work.path()).try_number(2).build();
        let err = run(config(Some("echo password=hunter2-canary >> \"$FLOWCTL_OUTPUT\"; echo hunter2-canary >> \"$FLOWCTL_OUTPUT\"".into()), None, BTreeMap::new()), task.ctx)
            .await
            .unwrap_err();
        assert!(err.message.starts_with("FLOWCTL_OUTPUT line 2"), "{}", err.message);
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "files left in the work folder");

        // A cancelled attempt.
        let task = flowctl_engine::operator::TaskContext::test_builder().work_dir(work.path()).build();
        task.cancel();
        assert!(run(config(Some("sleep 30".into()), None, BTreeMap::new()), task.ctx).await.is_err());
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0, "files left in the work folder");
    }
}
