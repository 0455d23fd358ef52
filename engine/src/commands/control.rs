//! The commands that work the same with or without a server: `apply`, `status`, `logs`,
//! `trigger`, `clear`, `cancel`, `pause`, `unpause`, `backfill`, `next`.
//!
//! The CLI turns its arguments into a [`Request`]. With a server running for the home, the request
//! goes to the server's API; without one, the CLI opens the home itself. Either way the same
//! [`handle`] answers it, through a [`Host`] (the store, plus what only a server can do: run and
//! cancel runs in the background), so the output is the same either way.

use std::path::PathBuf;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::table::{duration, Table};
use super::{exit, CommandError, OutputFormat};
use crate::diagnostic::suggestion;
use crate::operator::Registry;
use crate::runs::{self, Selection};
use crate::state::{DagRecord, RunState, Store, Trigger};

/// What a command printed and its exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The exit code.
    pub code: u8,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Success with this text on stdout.
    pub fn ok(stdout: impl Into<String>) -> Self {
        Output { code: exit::OK, stdout: stdout.into(), stderr: String::new() }
    }

    /// An error, as the CLI prints it.
    pub fn error(error: &CommandError) -> Self {
        Output { code: exit::INVALID, stdout: String::new(), stderr: error.render() }
    }

    /// Appends another output: texts concatenated, the worse exit code kept.
    pub fn then(mut self, other: Output) -> Self {
        self.code = self.code.max(other.code);
        self.stdout.push_str(&other.stdout);
        self.stderr.push_str(&other.stderr);
        self
    }

    /// Prints it and returns the exit code.
    pub fn print(&self) -> u8 {
        out!("{}", self.stdout);
        eprint!("{}", self.stderr);
        self.code
    }
}

/// A command the CLI sends to the server, or handles itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// `flowctl apply PATH...`.
    Apply {
        /// Files or folders, absolute.
        paths: Vec<PathBuf>,
        /// The folder the command was typed in: paths are shown relative to it.
        cwd: PathBuf,
    },
    /// `flowctl status [DAG [RUN]]`.
    Status {
        /// A DAG.
        dag: Option<String>,
        /// A run of it.
        run: Option<String>,
        /// `--output json`.
        json: bool,
    },
    /// `flowctl logs DAG RUN TASK` (without `--follow`).
    Logs {
        /// The DAG.
        dag: String,
        /// The run.
        run: String,
        /// The task.
        task: String,
        /// `--attempt`.
        attempt: Option<u32>,
    },
    /// `flowctl trigger DAG`.
    Trigger {
        /// The DAG.
        dag: String,
        /// `--param key=value`.
        params: Vec<String>,
        /// `--date`.
        date: Option<String>,
    },
    /// `flowctl clear DAG RUN`.
    Clear {
        /// The DAG.
        dag: String,
        /// The run.
        run: String,
        /// Which tasks.
        tasks: Vec<String>,
        /// `--downstream`.
        downstream: bool,
        /// `--failed-only`.
        failed_only: bool,
    },
    /// `flowctl cancel DAG RUN`.
    Cancel {
        /// The DAG.
        dag: String,
        /// The run.
        run: String,
    },
    /// `flowctl pause DAG` / `unpause DAG`.
    Pause {
        /// The DAG.
        dag: String,
        /// Pause (true) or unpause (false).
        paused: bool,
    },
    /// `flowctl backfill DAG --from D1 --to D2`.
    Backfill {
        /// The DAG.
        dag: String,
        /// The first logical date.
        from: String,
        /// The last logical date.
        to: String,
        /// Run failed runs of the range again.
        rerun_failed: bool,
    },
    /// `flowctl next DAG`.
    Next {
        /// The DAG.
        dag: String,
        /// How many fire times.
        n: usize,
        /// `--after`.
        after: Option<String>,
    },
    /// The closing summary of a run (after waiting for it).
    Summary {
        /// The DAG.
        dag: String,
        /// The run.
        run: String,
    },
}

/// The answer to a request: what to print, and runs the CLI should wait for before printing
/// their summaries (`trigger --wait`, `clear`, `backfill`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    /// What to print now.
    pub output: Output,
    /// `(dag, run)` pairs to wait for.
    pub runs: Vec<(String, String)>,
}

impl From<Output> for Reply {
    fn from(output: Output) -> Self {
        Reply { output, runs: Vec::new() }
    }
}

/// Where a request is handled: the server, or the CLI holding the home.
pub trait Host {
    /// The store.
    fn store(&self) -> &Store;
    /// The operators.
    fn registry(&self) -> &Registry;
    /// The home's logs folder.
    fn logs_dir(&self) -> PathBuf;
    /// Whether this host executes runs in the background (the server) or not (the CLI).
    fn executes_runs(&self) -> bool;
    /// Whether a process is executing this run now.
    fn is_active(&self, dag_id: &str, run_id: &str) -> bool;
    /// Cancels a run being executed; false when it is not.
    fn cancel_active(&self, dag_id: &str, run_id: &str) -> bool;
    /// DAG versions or pause states changed.
    fn dags_changed(&self);
    /// Runs were queued.
    fn runs_queued(&self);
}

fn dag_record(store: &Store, dag_id: &str) -> Result<DagRecord, CommandError> {
    store.dag(dag_id)?.ok_or_else(|| {
        let known: Vec<String> = store.dags().map(|d| d.into_iter().map(|r| r.dag_id).collect()).unwrap_or_default();
        CommandError::usage(format!(
            "no DAG \"{dag_id}\" is applied to this home{}; `flowctl apply FILE` stores it, `flowctl status` lists them",
            suggestion(dag_id, known.iter().map(String::as_str))
        ))
    })
}

/// Answers a request.
pub fn handle(host: &dyn Host, request: &Request) -> Reply {
    match answer(host, request) {
        Ok(reply) => reply,
        Err(e) => Output::error(&e).into(),
    }
}

fn answer(host: &dyn Host, request: &Request) -> Result<Reply, CommandError> {
    let store = host.store();
    let registry = host.registry();
    match request {
        Request::Apply { paths, cwd } => {
            let output = super::apply::apply_output(store, paths, cwd, registry)?;
            if output.code == exit::OK {
                host.dags_changed();
            }
            Ok(output.into())
        }
        Request::Status { dag, run, json } => {
            let format = if *json { OutputFormat::Json } else { OutputFormat::Text };
            let idle = |run: &crate::state::DagRun| -> Option<&'static str> {
                if run.state.is_terminal() || host.is_active(&run.dag_id, &run.run_id) {
                    None
                } else if host.executes_runs() {
                    Some("waiting to start: for a free max_active_runs slot, or for the DAG to be unpaused")
                } else {
                    Some("not running now: `flowctl server` resumes it")
                }
            };
            let text = super::status::status_text(store, dag.as_deref(), run.as_deref(), format, registry, &idle)?;
            Ok(Output::ok(text).into())
        }
        Request::Logs { dag, run, task, attempt } => {
            let (_, text) = super::logs::read_log(&host.logs_dir(), dag, run, task, *attempt)?;
            Ok(Output::ok(text).into())
        }
        Request::Trigger { dag, params, date } => {
            let (compiled, version) = super::run::load_applied(store, dag, registry)?;
            let params = super::run::run_params(&compiled, params)?;
            let logical = super::run::logical_date(&compiled, date.as_deref())?;
            let run = super::run::create_run(store, &compiled, version, Trigger::Manual, logical, params)?;
            host.runs_queued();
            Ok(paused_note(
                store,
                dag,
                Reply { output: Output::ok(format!("run {} of {dag} queued\n", run.run_id)), runs: vec![(dag.clone(), run.run_id)] },
            ))
        }
        Request::Clear { dag, run, tasks, downstream, failed_only } => {
            if host.is_active(dag, run) {
                return Err(runs::RunError::Active { dag_id: dag.clone(), run_id: run.clone() }.into());
            }
            let stored = store
                .run(dag, run)?
                .ok_or_else(|| runs::RunError::NoRun { dag_id: dag.clone(), run_id: run.clone() })?;
            let compiled = super::run::load_version(store, dag, stored.dag_version, registry)?;
            let selection = Selection { tasks: tasks.clone(), downstream: *downstream, failed_only: *failed_only };
            let cleared = runs::clear(store, &compiled, run, &selection)?;
            if cleared.is_empty() {
                return Ok(Output::ok(format!("nothing to clear in run {run} of {dag}\n")).into());
            }
            host.runs_queued();
            Ok(paused_note(
                store,
                dag,
                Reply {
                    output: Output::ok(format!("cleared {} of run {run} of {dag}: {}\n", plural(cleared.len(), "task"), cleared.join(", "))),
                    runs: vec![(dag.clone(), run.clone())],
                },
            ))
        }
        Request::Cancel { dag, run } => {
            let record = dag_record(store, dag)?;
            let stored = store
                .run(dag, run)?
                .ok_or_else(|| runs::RunError::NoRun { dag_id: dag.clone(), run_id: run.clone() })?;
            if stored.state.is_terminal() {
                return Ok(Output::ok(format!("run {run} of {dag} has already ended: {}\n", stored.state.name())).into());
            }
            if host.cancel_active(dag, run) {
                return Ok(Reply {
                    output: Output::ok(format!("cancelling run {run} of {dag}\n")),
                    runs: vec![(dag.clone(), run.clone())],
                });
            }
            let compiled = super::run::load_version(store, dag, stored.dag_version, registry)?;
            let _ = record;
            runs::cancel_idle(store, &compiled, run)?;
            Ok(Output::ok(format!("cancelled run {run} of {dag}\n")).into())
        }
        Request::Pause { dag, paused } => {
            let mut record = dag_record(store, dag)?;
            let word = if *paused { "paused" } else { "unpaused" };
            if record.paused == *paused {
                return Ok(Output::ok(format!("{dag} is already {word}\n")).into());
            }
            record.paused = *paused;
            store.put_dag(&record)?;
            host.dags_changed();
            Ok(Output::ok(format!("{dag} {word}\n")).into())
        }
        Request::Backfill { dag, from, to, rerun_failed } => backfill(host, dag, from, to, *rerun_failed).map(|r| paused_note(store, dag, r)),
        Request::Next { dag, n, after } => {
            let (compiled, _) = super::run::load_applied(store, dag, registry)?;
            Ok(Output::ok(super::next::next_report(&compiled, *n, after.as_deref(), Utc::now())?).into())
        }
        Request::Summary { dag, run } => {
            let stored = store
                .run(dag, run)?
                .ok_or_else(|| runs::RunError::NoRun { dag_id: dag.clone(), run_id: run.clone() })?;
            let compiled = super::run::load_version(store, dag, stored.dag_version, registry)?;
            let instances = super::run::all_instances(&compiled, store.task_instances(dag, run)?);
            let mut text = super::run::summary(&compiled, &instances);
            let took = match (stored.start, stored.end) {
                (Some(s), Some(e)) => duration((e - s).to_std().unwrap_or_default()),
                _ => "-".into(),
            };
            let note = stored.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
            text.push_str(&format!("run {run} {} in {took}{note}\n", stored.state.name()));
            let code = if stored.state == RunState::Success { exit::OK } else { exit::RUN_FAILED };
            Ok(Output { code, stdout: text, stderr: String::new() }.into())
        }
    }
}

/// Runs of a paused DAG wait until it is unpaused (as in Airflow): say so, and wait for nothing.
fn paused_note(store: &Store, dag_id: &str, mut reply: Reply) -> Reply {
    if reply.runs.is_empty() || !store.dag(dag_id).ok().flatten().is_some_and(|r| r.paused) {
        return reply;
    }
    reply.output.stderr.push_str(&format!(
        "note: DAG {dag_id} is paused, so its queued runs start when it is unpaused: `flowctl unpause {dag_id}`\n"
    ));
    reply.runs.clear();
    reply
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn backfill(host: &dyn Host, dag_id: &str, from: &str, to: &str, rerun_failed: bool) -> Result<Reply, CommandError> {
    let store = host.store();
    let (dag, version) = super::run::load_applied(store, dag_id, host.registry())?;
    if dag.schedule.is_none() {
        return Err(CommandError::usage(format!(
            "DAG \"{dag_id}\" has no schedule, so it has no intervals to backfill; trigger runs with `flowctl trigger {dag_id} --date D`"
        )));
    }
    let start = super::run::parse_instant(&dag, from)
        .ok_or_else(|| CommandError::usage(format!("--from \"{from}\": expected a date like 2024-01-31 or an RFC 3339 timestamp")))?;
    let end = super::run::parse_instant(&dag, to)
        .ok_or_else(|| CommandError::usage(format!("--to \"{to}\": expected a date like 2024-01-31 or an RFC 3339 timestamp")))?;
    if end < start {
        return Err(CommandError::usage(format!("--to {to} is before --from {from}")));
    }
    // Only past intervals: an interval that has not ended yet is the scheduler's to run.
    let now = Utc::now();
    let all = crate::timetable::intervals_between(&dag, start, end);
    let capped = all.len() >= crate::timetable::MAX_INTERVALS;
    let intervals: Vec<_> = all.into_iter().filter(|i| i.end <= now).collect();
    if capped {
        return Err(CommandError::usage(format!(
            "--from {from} --to {to} holds more than {} intervals of {dag_id}; backfill a narrower range at a time",
            crate::timetable::MAX_INTERVALS
        )));
    }
    if intervals.is_empty() {
        return Ok(Output::ok(format!("no interval of {dag_id} that has ended has a logical date between {from} and {to}\n")).into());
    }
    let mut table = Table::new(&["RUN", "LOGICAL DATE", "DATA INTERVAL END", "ACTION"]);
    let mut waits = Vec::new();
    for interval in intervals {
        let when = |t: chrono::DateTime<Utc>| t.with_timezone(&dag.timezone).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match runs::create_interval_run(store, &dag, version, Trigger::Backfill, interval.start, interval.end)? {
            Some(run) => {
                table.row(vec![run.run_id.clone(), when(interval.start), when(interval.end), "created".into()]);
                waits.push((dag_id.to_string(), run.run_id));
            }
            None => {
                let run_id = format!("backfill__{}", interval.start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                let existing = store.run(dag_id, &run_id)?;
                let failed = existing.as_ref().is_some_and(|r| r.state == RunState::Failed);
                if rerun_failed && failed && !host.is_active(dag_id, &run_id) {
                    let selection = Selection { failed_only: true, ..Selection::default() };
                    runs::clear(store, &dag, &run_id, &selection)?;
                    table.row(vec![run_id.clone(), when(interval.start), when(interval.end), "rerun (failed tasks cleared)".into()]);
                    waits.push((dag_id.to_string(), run_id));
                } else {
                    let state = existing.map_or("exists", |r| r.state.name());
                    table.row(vec![run_id, when(interval.start), when(interval.end), format!("kept ({state})")]);
                }
            }
        }
    }
    if !waits.is_empty() {
        host.runs_queued();
    }
    Ok(Reply { output: Output::ok(table.render()), runs: waits })
}
