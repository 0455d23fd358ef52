//! What travels between the faces and the service: the [`Request`]s a face can make of a home,
//! the typed [`Reply`] values the service answers with, and the [`ServiceError`]s it refuses with.
//!
//! The CLI builds a request from its arguments; with a server running for the home it sends the
//! request to the server's API as JSON and reads the answer back as the same types, otherwise it
//! asks the service in its own process. Either way one renderer (in `commands/`) turns the answer
//! into text or `--output json`, which is why the CLI prints the same with or without a server.
//!
//! Invariant: these are data, with no text formatting in them. A message inside a
//! [`ServiceError`] is the one exception: it is the sentence that says what is wrong and how to
//! fix it, the same for every face.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, FixedOffset};
use serde::{Deserialize, Serialize};

use crate::diagnostic::Diagnostic;
use crate::state::{AlertDelivery, DagRun, RunState, TaskInstance};

/// An operation on a home.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Compile DAG files and store their new versions (`flowctl apply PATH...`).
    Apply {
        /// Files or folders, absolute.
        paths: Vec<PathBuf>,
    },
    /// Every applied DAG (`flowctl status`).
    Dags,
    /// A DAG's runs (`flowctl status DAG`).
    Runs {
        /// The DAG.
        dag: String,
    },
    /// A run with its task instances (`flowctl status DAG RUN`, and the summary after a wait).
    Run {
        /// The DAG.
        dag: String,
        /// The run.
        run: String,
    },
    /// An attempt's log so far (`flowctl logs DAG RUN TASK`).
    Logs {
        /// The DAG.
        dag: String,
        /// The run.
        run: String,
        /// The task.
        task: String,
        /// The attempt [default: the latest].
        attempt: Option<u32>,
    },
    /// Queue a manual run (`flowctl trigger DAG`).
    Trigger {
        /// The DAG.
        dag: String,
        /// `key=value` overrides of declared parameters.
        params: Vec<String>,
        /// The logical date (a date or RFC 3339) [default: now].
        date: Option<String>,
    },
    /// Reset tasks of a run so they run again (`flowctl clear DAG RUN`).
    Clear {
        /// The DAG.
        dag: String,
        /// The run.
        run: String,
        /// Which tasks (all when empty).
        tasks: Vec<String>,
        /// With the tasks downstream of them.
        downstream: bool,
        /// Only tasks that failed or were upstream_failed.
        failed_only: bool,
    },
    /// Cancel a run (`flowctl cancel DAG RUN`).
    Cancel {
        /// The DAG.
        dag: String,
        /// The run.
        run: String,
    },
    /// Pause or unpause a DAG (`flowctl pause DAG` / `unpause DAG`).
    Pause {
        /// The DAG.
        dag: String,
        /// Pause (true) or unpause (false).
        paused: bool,
    },
    /// Create runs for the past intervals in a range (`flowctl backfill DAG --from D1 --to D2`).
    Backfill {
        /// The DAG.
        dag: String,
        /// The first logical date.
        from: String,
        /// The last logical date, included.
        to: String,
        /// Run the failed runs of the range again.
        rerun_failed: bool,
    },
    /// An applied DAG's next fire times (`flowctl next DAG`).
    Next {
        /// The DAG.
        dag: String,
        /// How many fire times.
        n: usize,
        /// Fire times strictly after this instant (a date or RFC 3339) [default: now].
        after: Option<String>,
    },
}

impl Request {
    /// The command's name (`apply`, `trigger`...), for the home's lock file.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Apply { .. } => "apply",
            Request::Dags | Request::Runs { .. } | Request::Run { .. } => "status",
            Request::Logs { .. } => "logs",
            Request::Trigger { .. } => "trigger",
            Request::Clear { .. } => "clear",
            Request::Cancel { .. } => "cancel",
            Request::Pause { paused: true, .. } => "pause",
            Request::Pause { paused: false, .. } => "unpause",
            Request::Backfill { .. } => "backfill",
            Request::Next { .. } => "next",
        }
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// To [`Request::Apply`].
    Applied(Applied),
    /// To [`Request::Dags`].
    Dags(DagList),
    /// To [`Request::Runs`].
    Runs(RunList),
    /// To [`Request::Run`].
    Run(RunDetail),
    /// To [`Request::Logs`].
    Log(AttemptLog),
    /// To [`Request::Trigger`].
    Triggered(Triggered),
    /// To [`Request::Clear`].
    Cleared(Cleared),
    /// To [`Request::Cancel`].
    Cancelled(Cancelled),
    /// To [`Request::Pause`].
    Paused(PauseChange),
    /// To [`Request::Backfill`].
    Backfilled(Backfilled),
    /// To [`Request::Next`].
    Next(NextFires),
}

impl Reply {
    /// The runs a face that waits (`trigger --wait`, `clear`, `backfill`, `cancel`) should wait
    /// for: those this request queued, or the one it is cancelling. A paused DAG's runs are not
    /// among them: they start only when it is unpaused.
    pub fn runs_to_wait_for(&self) -> Vec<RunRef> {
        match self {
            Reply::Triggered(t) if !t.dag_paused => vec![RunRef { dag_id: t.run.dag_id.clone(), run_id: t.run.run_id.clone() }],
            Reply::Cleared(c) if !c.dag_paused && !c.tasks.is_empty() => vec![RunRef { dag_id: c.dag_id.clone(), run_id: c.run_id.clone() }],
            Reply::Backfilled(b) if !b.dag_paused => b.queued(),
            Reply::Cancelled(c) if c.outcome == CancelOutcome::Cancelling => {
                vec![RunRef { dag_id: c.dag_id.clone(), run_id: c.run_id.clone() }]
            }
            _ => Vec::new(),
        }
    }
}

/// A [`Reply`], or why the request was refused.
pub type Answer = Result<Reply, ServiceError>;

/// Why the service refused a request. Each kind tells a face how to report it (an exit code, an
/// HTTP status); the message names the thing and the fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServiceError {
    /// The request names a DAG, run, task, attempt or connection that does not exist.
    #[error("{message}")]
    NotFound {
        /// What is missing, and where to look.
        message: String,
    },
    /// The request itself is wrong: a bad date, parameter or range.
    #[error("{message}")]
    BadRequest {
        /// What is wrong, and how to write it.
        message: String,
    },
    /// The request conflicts with what is happening: a run still being executed.
    #[error("{message}")]
    Conflict {
        /// What is in the way, and what to do.
        message: String,
    },
    /// DAG files that do not compile.
    #[error("{} error(s) in DAG files", diagnostics.iter().map(Diagnostic::count).sum::<usize>())]
    Invalid {
        /// Every problem, with its place.
        diagnostics: Vec<Diagnostic>,
    },
    /// The home, its store, its config file or the machine failed.
    #[error("{message}")]
    Unavailable {
        /// What failed, and how to fix it.
        message: String,
    },
}

impl ServiceError {
    /// A [`ServiceError::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        ServiceError::NotFound { message: message.into() }
    }

    /// A [`ServiceError::BadRequest`].
    pub fn bad_request(message: impl Into<String>) -> Self {
        ServiceError::BadRequest { message: message.into() }
    }

    /// A [`ServiceError::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        ServiceError::Unavailable { message: message.into() }
    }
}

impl From<crate::state::StoreError> for ServiceError {
    fn from(e: crate::state::StoreError) -> Self {
        ServiceError::unavailable(e.to_string())
    }
}

impl From<crate::state::HomeError> for ServiceError {
    fn from(e: crate::state::HomeError) -> Self {
        ServiceError::unavailable(e.to_string())
    }
}

impl From<crate::config::ConfigError> for ServiceError {
    fn from(e: crate::config::ConfigError) -> Self {
        ServiceError::unavailable(e.to_string())
    }
}

impl From<crate::executor::ExecError> for ServiceError {
    fn from(e: crate::executor::ExecError) -> Self {
        ServiceError::unavailable(e.to_string())
    }
}

impl From<crate::runs::RunError> for ServiceError {
    fn from(e: crate::runs::RunError) -> Self {
        use crate::runs::RunError;
        let message = e.to_string();
        match e {
            RunError::NoRun { .. } | RunError::NoTask { .. } => ServiceError::NotFound { message },
            RunError::Active { .. } => ServiceError::Conflict { message },
            RunError::Input(_) => ServiceError::BadRequest { message },
            RunError::Store(_) => ServiceError::Unavailable { message },
        }
    }
}

/// A run, by its DAG and id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRef {
    /// The DAG.
    pub dag_id: String,
    /// The run.
    pub run_id: String,
}

/// What applying a DAG did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A DAG id the store had not seen.
    Added,
    /// A new version of a known DAG.
    Changed,
    /// The same source as the latest version.
    Unchanged,
}

impl Change {
    /// The word `apply` prints.
    pub fn name(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
        }
    }
}

/// What `apply` stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    /// Each DAG of the files, in the files' order.
    pub dags: Vec<AppliedDag>,
    /// Warnings compile found.
    pub warnings: Vec<Diagnostic>,
}

/// One applied DAG.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppliedDag {
    /// Its id.
    pub dag_id: String,
    /// The version its runs now use.
    pub version: u64,
    /// What happened.
    pub change: Change,
    /// The file, absolute.
    pub file: PathBuf,
}

/// Every applied DAG.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DagList {
    /// By id.
    pub dags: Vec<DagSummary>,
}

/// A DAG as `flowctl status` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DagSummary {
    /// Its id.
    pub dag_id: String,
    /// The latest applied version.
    pub version: u64,
    /// Whether scheduling is paused.
    pub paused: bool,
    /// The latest version's schedule expression; `None` for a DAG that runs only when triggered
    /// (or whose latest version no longer compiles).
    pub schedule: Option<String>,
    /// The most recently created run.
    pub last_run: Option<LastRun>,
    /// How many runs are in each state, by state name.
    pub runs_by_state: BTreeMap<String, usize>,
}

/// The latest run of a DAG: its id and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    /// The run.
    pub run_id: String,
    /// Its state.
    pub state: RunState,
}

/// Whether anybody executes a run that has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activity {
    /// It has ended, or a process executes it now.
    Settled,
    /// A server holds the home and will start it: it waits for a free `max_active_runs` slot or
    /// for its DAG to be unpaused.
    WaitingToStart,
    /// Nobody executes it: no server runs for the home (`flowctl server` resumes it).
    NotRunning,
}

/// A DAG's runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunList {
    /// The DAG.
    pub dag_id: String,
    /// Its runs, in the store's order.
    pub runs: Vec<RunSummary>,
}

/// A run with whether anybody executes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run's record.
    #[serde(flatten)]
    pub run: DagRun,
    /// Whether it waits for somebody.
    pub activity: Activity,
}

/// A run with every task instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunDetail {
    /// The run's record.
    pub run: DagRun,
    /// Whether it waits for somebody.
    pub activity: Activity,
    /// Every task in the order of the DAG version the run uses, with those not started yet; when
    /// that version no longer compiles (an operator left this build), the stored records alone.
    pub tasks: Vec<TaskView>,
    /// Whether `tasks` follows the DAG (false: the stored records alone).
    pub dag_compiled: bool,
    /// The run's own alert deliveries (not a task's).
    pub alerts: Vec<AlertDelivery>,
}

impl RunDetail {
    /// Every alert delivery of the run and its tasks.
    pub fn all_alerts(&self) -> impl Iterator<Item = &AlertDelivery> {
        self.tasks.iter().flat_map(|t| t.alerts.iter()).chain(self.alerts.iter())
    }
}

/// A task instance with its alert deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    /// The record (outputs and errors masked).
    #[serde(flatten)]
    pub instance: TaskInstance,
    /// Its alert deliveries.
    pub alerts: Vec<AlertDelivery>,
}

/// An attempt's log so far.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptLog {
    /// The DAG.
    pub dag_id: String,
    /// The run.
    pub run_id: String,
    /// The task.
    pub task_id: String,
    /// The attempt.
    pub attempt: u32,
    /// The log file.
    pub path: PathBuf,
    /// Its text (invalid UTF-8 replaced).
    pub text: String,
}

/// A run queued by `trigger`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Triggered {
    /// The new run.
    pub run: DagRun,
    /// Whether its DAG is paused (the run starts when it is unpaused).
    pub dag_paused: bool,
}

/// What `clear` reset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cleared {
    /// The DAG.
    pub dag_id: String,
    /// The run, queued again when anything was cleared.
    pub run_id: String,
    /// The cleared tasks, in the DAG's order; empty when nothing matched.
    pub tasks: Vec<String>,
    /// Whether the DAG is paused.
    pub dag_paused: bool,
}

/// How `cancel` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// The run had ended already.
    AlreadyEnded,
    /// A process executes the run and is stopping its tasks now.
    Cancelling,
    /// Nobody executed the run: it is failed, "cancelled by the user".
    Cancelled,
}

/// What `cancel` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cancelled {
    /// The DAG.
    pub dag_id: String,
    /// The run.
    pub run_id: String,
    /// How it went.
    pub outcome: CancelOutcome,
    /// The run's state when answered.
    pub state: RunState,
}

/// What `pause` or `unpause` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PauseChange {
    /// The DAG.
    pub dag_id: String,
    /// Whether it is paused now.
    pub paused: bool,
    /// Whether it was the other way before.
    pub changed: bool,
}

/// What `backfill` did for each interval of the range.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backfilled {
    /// The DAG.
    pub dag_id: String,
    /// One row per interval that has ended, oldest first; empty when none lies in the range.
    pub intervals: Vec<BackfillInterval>,
    /// Whether the DAG is paused.
    pub dag_paused: bool,
}

impl Backfilled {
    /// The runs created or queued again.
    pub fn queued(&self) -> Vec<RunRef> {
        self.intervals
            .iter()
            .filter(|i| matches!(i.action, BackfillAction::Created | BackfillAction::Rerun))
            .map(|i| RunRef { dag_id: self.dag_id.clone(), run_id: i.run_id.clone() })
            .collect()
    }
}

/// One interval of a backfill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackfillInterval {
    /// Its run.
    pub run_id: String,
    /// The logical date (the interval's start), in the DAG's time zone.
    pub logical_date: DateTime<FixedOffset>,
    /// The interval's end, in the DAG's time zone.
    pub interval_end: DateTime<FixedOffset>,
    /// What was done.
    pub action: BackfillAction,
}

/// What a backfill did for an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "state", rename_all = "snake_case")]
pub enum BackfillAction {
    /// A run was created.
    Created,
    /// A failed run's failed tasks were cleared (`--rerun-failed`).
    Rerun,
    /// A run existed and was kept, in this state (`None`: it vanished meanwhile).
    Kept(Option<RunState>),
}

/// A scheduled DAG's next fire times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NextFires {
    /// The DAG.
    pub dag_id: String,
    /// The schedule expression.
    pub schedule: String,
    /// The DAG's time zone (IANA name).
    pub timezone: String,
    /// Fire times strictly after this instant.
    pub after: DateTime<FixedOffset>,
    /// How many fire times were asked for.
    pub asked: usize,
    /// Each fire time with its data interval, in the DAG's time zone.
    pub fires: Vec<Fire>,
    /// Why fewer than `asked` came, when they did.
    pub end: Option<FiresEnd>,
}

/// One fire time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fire {
    /// When the run is created.
    pub at: DateTime<FixedOffset>,
    /// Its data interval's start (the run's logical date).
    pub interval_start: DateTime<FixedOffset>,
    /// Its data interval's end.
    pub interval_end: DateTime<FixedOffset>,
}

/// Why a schedule has no more fire times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "why", content = "at", rename_all = "snake_case")]
pub enum FiresEnd {
    /// The DAG's `end_date`.
    EndDate(DateTime<FixedOffset>),
    /// The schedule never fires after `start_date`.
    NeverAfterStart,
    /// Fire times stop in the year 2100.
    Exhausted,
}

/// A connection as `flowctl connections list` shows it, secrets masked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Its name.
    pub name: String,
    /// `aws`, `mysql`, `postgres`, or `broken`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it was defined (the config file, `$FLOWCTL_CONN_<NAME>`, or built-in).
    pub source: String,
    /// Its settings in one line, secrets as `***`.
    pub settings: String,
}
