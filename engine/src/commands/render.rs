//! Every answer of the service as the CLI prints it: text for people, or `--output json`.
//!
//! One function, [`render`], for an answer that came from the service in this process or from
//! the home's server: that is what makes the output the same either way.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde_json::json;

use super::exit;
use super::table::{duration, Table};
use crate::diagnostic::Diagnostic;
use crate::protocol::{
    Activity, Answer, Applied, BackfillAction, Backfilled, CancelOutcome, Cancelled, Change, Cleared, DagList, FiresEnd, NextFires,
    PauseChange, Reply, Request, RunDetail, RunList, ServiceError, TaskView, Triggered,
};
use crate::state::{AlertDelivery, DagRun, DeliveryState, RunState, TaskInstance};

/// What a command prints, and its exit code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

    /// A refusal, as the CLI prints it.
    pub fn error(error: &ServiceError) -> Self {
        Output { code: exit::INVALID, stdout: String::new(), stderr: error_text(error) }
    }

    /// Prints it and returns the exit code.
    pub fn print(&self) -> u8 {
        out!("{}", self.stdout);
        eprint!("{}", self.stderr);
        self.code
    }
}

/// Text for people, or JSON for scripts, editors and CI (`--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// For people: tables, diagnostics with source lines and carets.
    #[default]
    Text,
    /// For scripts, editors and CI.
    Json,
}

/// How to render: the format, and the folder the command was typed in (files are shown relative
/// to it).
#[derive(Debug, Clone)]
pub struct Style {
    /// Text or JSON.
    pub format: OutputFormat,
    /// The command's working folder.
    pub cwd: PathBuf,
}

impl Style {
    /// Text, with files shown relative to this process's working folder.
    pub fn text() -> Style {
        Style { format: OutputFormat::Text, cwd: std::env::current_dir().unwrap_or_default() }
    }

    fn shown(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.cwd).unwrap_or(path).to_path_buf()
    }
}

/// The answer to `request`, as the CLI prints it.
pub fn render(request: &Request, answer: &Answer, style: &Style) -> Output {
    let reply = match answer {
        Ok(reply) => reply,
        Err(ServiceError::Invalid { diagnostics }) if matches!(request, Request::Apply { .. }) => {
            let stderr = format!(
                "{}error: nothing applied: {} error(s); fix them (see `flowctl validate`) and apply again\n",
                diagnostics_text(diagnostics, &|p| style.shown(p)),
                diagnostics.iter().map(Diagnostic::count).sum::<usize>()
            );
            return Output { code: exit::INVALID, stdout: String::new(), stderr };
        }
        Err(e) => return Output::error(e),
    };
    let json = style.format == OutputFormat::Json;
    match reply {
        Reply::Applied(applied) => applied_text(applied, style),
        Reply::Dags(list) if json => Output::ok(pretty(&list.dags)),
        Reply::Dags(list) => Output::ok(dags_text(list)),
        Reply::Runs(list) if json => Output::ok(pretty(&list.runs.iter().map(|r| &r.run).collect::<Vec<_>>())),
        Reply::Runs(list) => Output::ok(runs_text(list)),
        Reply::Run(detail) if json => Output::ok(pretty(&json!({"run": detail.run, "tasks": detail.tasks, "alerts": detail.alerts}))),
        Reply::Run(detail) => Output::ok(run_text(detail)),
        Reply::Log(log) => Output::ok(log.text.clone()),
        Reply::Triggered(triggered) => triggered_text(triggered),
        Reply::Cleared(cleared) => cleared_text(cleared),
        Reply::Cancelled(cancelled) => Output::ok(cancelled_text(cancelled)),
        Reply::Paused(change) => Output::ok(paused_text(change)),
        Reply::Backfilled(backfilled) => backfilled_text(backfilled, request),
        Reply::Next(next) => Output::ok(next_text(next)),
    }
}

/// A service error as the CLI prints it on stderr.
pub fn error_text(error: &ServiceError) -> String {
    match error {
        ServiceError::Invalid { diagnostics } => format!(
            "{}error: {} error(s); fix them (see `flowctl validate`) and try again\n",
            diagnostics_text(diagnostics, &|p| p.to_path_buf()),
            diagnostics.iter().map(Diagnostic::count).sum::<usize>()
        ),
        other => format!("error: {other}\n"),
    }
}

fn pretty<T: serde::Serialize + ?Sized>(value: &T) -> String {
    format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_default())
}

/// Every diagnostic with its source line and caret, naming each file as `shown` says (sources
/// are read from the real path).
pub(crate) fn diagnostics_text(diagnostics: &[Diagnostic], shown: &dyn Fn(&Path) -> PathBuf) -> String {
    let files: BTreeSet<&Path> = diagnostics.iter().map(|d| d.file.as_path()).collect();
    // Only files compile would read: a file refused for its size is not read to show its lines.
    let sources: HashMap<PathBuf, String> = files
        .into_iter()
        .filter_map(|f| {
            let source = crate::compile::read_source(f).ok()?;
            Some((f.to_path_buf(), String::from_utf8_lossy(&source.bytes).into_owned()))
        })
        .collect();
    diagnostics
        .iter()
        .map(|d| {
            let source = sources.get(&d.file).map(String::as_str);
            let mut display = d.clone();
            display.file = shown(&d.file);
            format!("{}\n", display.render(source))
        })
        .collect()
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn applied_text(applied: &Applied, style: &Style) -> Output {
    let mut table = Table::new(&["DAG", "VERSION", "CHANGE", "FILE"]);
    let mut counts = [0usize; 3];
    for dag in &applied.dags {
        counts[match dag.change {
            Change::Added => 0,
            Change::Changed => 1,
            Change::Unchanged => 2,
        }] += 1;
        table.row(vec![dag.dag_id.clone(), dag.version.to_string(), dag.change.name().into(), style.shown(&dag.file).display().to_string()]);
    }
    let stdout = format!("{}applied: {} added, {} changed, {} unchanged\n", table.render(), counts[0], counts[1], counts[2]);
    Output { code: exit::OK, stdout, stderr: diagnostics_text(&applied.warnings, &|p| style.shown(p)) }
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// How long a run took, or has taken so far.
fn took(run: &DagRun) -> String {
    match (run.start, run.end) {
        (Some(s), Some(e)) => duration((e - s).to_std().unwrap_or_default()),
        (Some(s), None) => format!("{} so far", duration((Utc::now() - s).to_std().unwrap_or_default())),
        _ => "-".into(),
    }
}

/// The note of a run: why it ended as it did, or what it waits for.
fn note(run: &DagRun, activity: Activity) -> Option<String> {
    run.note.clone().or_else(|| match activity {
        Activity::Settled => None,
        Activity::WaitingToStart => Some("waiting to start: for a free max_active_runs slot, or for the DAG to be unpaused".into()),
        Activity::NotRunning => Some("not running now: `flowctl server` resumes it".into()),
    })
}

fn dags_text(list: &DagList) -> String {
    if list.dags.is_empty() {
        return "no DAGs applied yet; `flowctl apply dags/` stores them\n".into();
    }
    let mut table = Table::new(&["DAG", "SCHEDULE", "PAUSED", "LAST RUN", "STATE", "RUNS"]);
    for dag in &list.dags {
        let counts = dag.runs_by_state.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ");
        table.row(vec![
            dag.dag_id.clone(),
            dag.schedule.clone().unwrap_or_else(|| "manual".into()),
            if dag.paused { "yes".into() } else { "no".into() },
            dag.last_run.as_ref().map_or("-".into(), |r| r.run_id.clone()),
            dag.last_run.as_ref().map_or("-".into(), |r| r.state.name().into()),
            if counts.is_empty() { "-".into() } else { counts },
        ]);
    }
    table.render()
}

fn runs_text(list: &RunList) -> String {
    if list.runs.is_empty() {
        return format!("DAG {0} has no runs yet; `flowctl run {0}` starts one\n", list.dag_id);
    }
    let hidden = list.total.saturating_sub(list.runs.len());
    let mut table = Table::new(&["RUN", "LOGICAL DATE", "TRIGGER", "STATE", "STARTED", "DURATION", "NOTE"]);
    for summary in &list.runs {
        let run = &summary.run;
        table.row(vec![
            run.run_id.clone(),
            time(Some(run.logical_date)),
            run.trigger.prefix().into(),
            run.state.name().into(),
            time(run.start),
            took(run),
            note(run, summary.activity).unwrap_or_default(),
        ]);
    }
    let mut text = table.render();
    if hidden > 0 {
        text.push_str(&format!(
            "(the newest {} of {} runs; `--limit N` shows more, `--all` every one)\n",
            list.runs.len(),
            list.total
        ));
    }
    text
}

/// The task table: each task's state, tries, duration, and the first line of its error.
pub(super) fn tasks_table<'a>(instances: impl IntoIterator<Item = &'a TaskInstance>) -> String {
    let mut table = Table::new(&["TASK", "STATE", "TRIES", "DURATION", "ERROR"]);
    for ti in instances {
        let took = match (ti.start, ti.end) {
            (Some(s), Some(e)) if ti.try_number > 0 => duration((e - s).to_std().unwrap_or_default()),
            _ => "-".into(),
        };
        let error = ti.error.as_deref().and_then(|e| e.lines().next()).unwrap_or("").to_string();
        table.row(vec![ti.task_id.clone(), ti.state.name().into(), format!("{}/{}", ti.try_number, ti.max_tries), took, error]);
    }
    table.render()
}

fn run_text(detail: &RunDetail) -> String {
    let run = &detail.run;
    let instances = detail.tasks.iter().map(|t: &TaskView| &t.instance);
    let body = if detail.dag_compiled {
        tasks_table(instances)
    } else {
        let mut table = Table::new(&["TASK", "STATE", "TRIES", "ERROR"]);
        for ti in instances {
            table.row(vec![ti.task_id.clone(), ti.state.name().into(), format!("{}/{}", ti.try_number, ti.max_tries), ti.error.clone().unwrap_or_default()]);
        }
        table.render()
    };
    let note = note(run, detail.activity).map(|n| format!(" ({n})")).unwrap_or_default();
    let took = match took(run).as_str() {
        "-" => String::new(),
        took => format!(" in {took}"),
    };
    let deliveries: Vec<&AlertDelivery> = detail.all_alerts().collect();
    format!("run {} of {}: {}{took}{note}\n{body}{}", run.run_id, run.dag_id, run.state.name(), undelivered(&deliveries))
}

/// The closing summary of a run that was waited for: its task table and how it ended; exit 1
/// when it did not succeed.
pub fn summary(detail: &RunDetail) -> Output {
    let run = &detail.run;
    let mut text = tasks_table(detail.tasks.iter().map(|t| &t.instance));
    let took = match (run.start, run.end) {
        (Some(s), Some(e)) => duration((e - s).to_std().unwrap_or_default()),
        _ => "-".into(),
    };
    let note = run.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
    text.push_str(&format!("run {} {} in {took}{note}\n", run.run_id, run.state.name()));
    let code = if run.state == RunState::Success { exit::OK } else { exit::RUN_FAILED };
    Output { code, stdout: text, stderr: String::new() }
}

/// Lines under the task table for alerts that failed or are still being sent.
fn undelivered(deliveries: &[&AlertDelivery]) -> String {
    let mut text = String::new();
    for d in deliveries.iter().filter(|d| d.state != DeliveryState::Delivered) {
        let tries = match d.tries {
            0 => String::new(),
            1 => " after 1 try".to_string(),
            n => format!(" after {n} tries"),
        };
        let error = d.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        let what = match d.state {
            DeliveryState::Pending => "not delivered yet",
            _ => "not delivered",
        };
        text.push_str(&format!("alert {what}: {} for {}{tries}{error}\n", d.channel.describe(), d.describe_event()));
    }
    text
}

/// Runs of a paused DAG wait until it is unpaused (as in Airflow): say so.
fn paused_note(dag_id: &str) -> String {
    format!("note: DAG {dag_id} is paused, so its queued runs start when it is unpaused: `flowctl unpause {dag_id}`\n")
}

fn triggered_text(triggered: &Triggered) -> Output {
    let run = &triggered.run;
    let mut output = Output::ok(format!("run {} of {} queued\n", run.run_id, run.dag_id));
    if triggered.dag_paused {
        output.stderr = paused_note(&run.dag_id);
    }
    output
}

fn cleared_text(cleared: &Cleared) -> Output {
    if cleared.tasks.is_empty() {
        return Output::ok(format!("nothing to clear in run {} of {}\n", cleared.run_id, cleared.dag_id));
    }
    let mut output = Output::ok(format!(
        "cleared {} of run {} of {}: {}\n",
        plural(cleared.tasks.len(), "task"),
        cleared.run_id,
        cleared.dag_id,
        cleared.tasks.join(", ")
    ));
    if cleared.dag_paused {
        output.stderr = paused_note(&cleared.dag_id);
    }
    output
}

fn cancelled_text(cancelled: &Cancelled) -> String {
    let (run, dag) = (&cancelled.run_id, &cancelled.dag_id);
    match cancelled.outcome {
        CancelOutcome::AlreadyEnded => format!("run {run} of {dag} has already ended: {}\n", cancelled.state.name()),
        CancelOutcome::Cancelling => format!("cancelling run {run} of {dag}\n"),
        CancelOutcome::Cancelled => format!("cancelled run {run} of {dag}\n"),
    }
}

fn paused_text(change: &PauseChange) -> String {
    let word = if change.paused { "paused" } else { "unpaused" };
    if change.changed {
        format!("{} {word}\n", change.dag_id)
    } else {
        format!("{} is already {word}\n", change.dag_id)
    }
}

fn backfilled_text(backfilled: &Backfilled, request: &Request) -> Output {
    let dag_id = &backfilled.dag_id;
    if backfilled.intervals.is_empty() {
        let (from, to) = match request {
            Request::Backfill { from, to, .. } => (from.as_str(), to.as_str()),
            _ => ("?", "?"),
        };
        return Output::ok(format!("no interval of {dag_id} that has ended has a logical date between {from} and {to}\n"));
    }
    let when = |t: &DateTime<FixedOffset>| t.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut table = Table::new(&["RUN", "LOGICAL DATE", "DATA INTERVAL END", "ACTION"]);
    for interval in &backfilled.intervals {
        let action = match interval.action {
            BackfillAction::Created => "created".to_string(),
            BackfillAction::Rerun => "rerun (failed tasks cleared)".to_string(),
            BackfillAction::Kept => format!("kept ({})", interval.kept_state.map_or("exists", RunState::name)),
        };
        table.row(vec![interval.run_id.clone(), when(&interval.logical_date), when(&interval.interval_end), action]);
    }
    let mut output = Output::ok(table.render());
    if backfilled.dag_paused && !backfilled.queued().is_empty() {
        output.stderr = paused_note(dag_id);
    }
    output
}

/// `flowctl next`'s text: the schedule, each fire time with its data interval, and why the list
/// is short when it is.
pub(super) fn next_text(next: &NextFires) -> String {
    let local = |t: &DateTime<FixedOffset>| t.to_rfc3339_opts(SecondsFormat::Secs, false);
    let mut text = format!(
        "DAG {}: \"{}\" in {}; a run's logical date is the start of its data interval\n",
        next.dag_id, next.schedule, next.timezone
    );
    if !next.fires.is_empty() {
        let mut table = Table::new(&["FIRES AT", "DATA INTERVAL"]);
        for fire in &next.fires {
            table.row(vec![local(&fire.at), format!("[{}, {})", local(&fire.interval_start), local(&fire.interval_end))]);
        }
        text.push_str(&table.render());
    }
    if let Some(end) = &next.end {
        let why = match end {
            FiresEnd::EndDate => format!("end_date is {}", next.end_date.as_ref().map(local).unwrap_or_default()),
            FiresEnd::NeverAfterStart => "its schedule never fires after start_date".to_string(),
            FiresEnd::Exhausted => "its schedule fires no more (fire times stop in the year 2100)".to_string(),
        };
        let tail = if next.fires.is_empty() { format!("no runs after {}", local(&next.after)) } else { "no more runs".to_string() };
        text.push_str(&format!("{tail}: {why}\n"));
    }
    text
}
