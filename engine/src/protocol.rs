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
    /// A DAG's newest runs (`flowctl status DAG`).
    Runs {
        /// The DAG.
        dag: String,
        /// How many of the newest runs [default: all].
        limit: Option<usize>,
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRef {
    /// The DAG.
    pub dag_id: String,
    /// The run.
    pub run_id: String,
}

/// What applying a DAG did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Applied {
    /// Each DAG of the files, in the files' order.
    pub dags: Vec<AppliedDag>,
    /// Warnings compile found.
    pub warnings: Vec<Diagnostic>,
}

/// One applied DAG.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppliedDag {
    /// Its id.
    pub dag_id: String,
    /// The version its runs now use.
    pub version: u64,
    /// What happened.
    pub change: Change,
    /// The file, absolute.
    #[schema(value_type = String)]
    pub file: PathBuf,
}

/// Every applied DAG.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DagList {
    /// By id.
    pub dags: Vec<DagSummary>,
}

/// A DAG as `flowctl status` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LastRun {
    /// The run.
    pub run_id: String,
    /// Its state.
    pub state: RunState,
}

/// Whether anybody executes a run that has not ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunList {
    /// The DAG.
    pub dag_id: String,
    /// Its newest runs, oldest logical date first.
    pub runs: Vec<RunSummary>,
    /// How many runs it has in all.
    pub total: usize,
}

/// A run with whether anybody executes it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunSummary {
    /// The run's record.
    #[serde(flatten)]
    pub run: DagRun,
    /// Whether it waits for somebody.
    pub activity: Activity,
}

/// A run with every task instance.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskView {
    /// The record (outputs and errors masked).
    #[serde(flatten)]
    pub instance: TaskInstance,
    /// Its alert deliveries.
    pub alerts: Vec<AlertDelivery>,
}

/// An attempt's log so far.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// Its text (invalid UTF-8 replaced).
    pub text: String,
}

/// A run queued by `trigger`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Triggered {
    /// The new run.
    pub run: DagRun,
    /// Whether its DAG is paused (the run starts when it is unpaused).
    pub dag_paused: bool,
    /// Whether this request created it (false: an earlier request with the same idempotency key
    /// did).
    #[serde(default = "yes")]
    pub created: bool,
}

fn yes() -> bool {
    true
}

/// What `clear` reset.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PauseChange {
    /// The DAG.
    pub dag_id: String,
    /// Whether it is paused now.
    pub paused: bool,
    /// Whether it was the other way before.
    pub changed: bool,
}

/// What `backfill` did for each interval of the range.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackfillInterval {
    /// Its run.
    pub run_id: String,
    /// The logical date (the interval's start), in the DAG's time zone.
    pub logical_date: DateTime<FixedOffset>,
    /// The interval's end, in the DAG's time zone.
    pub interval_end: DateTime<FixedOffset>,
    /// What was done.
    pub action: BackfillAction,
    /// For a run that was kept: its state (`None` when it vanished meanwhile).
    pub kept_state: Option<RunState>,
}

/// What a backfill did for an interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackfillAction {
    /// A run was created.
    Created,
    /// A failed run's failed tasks were cleared (`--rerun-failed`).
    Rerun,
    /// A run existed and was kept.
    Kept,
}

/// A scheduled DAG's next fire times.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// With `end: end_date`, the DAG's `end_date`.
    pub end_date: Option<DateTime<FixedOffset>>,
}

/// One fire time.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Fire {
    /// When the run is created.
    pub at: DateTime<FixedOffset>,
    /// Its data interval's start (the run's logical date).
    pub interval_start: DateTime<FixedOffset>,
    /// Its data interval's end.
    pub interval_end: DateTime<FixedOffset>,
}

/// Why a schedule has no more fire times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FiresEnd {
    /// The DAG's `end_date` ([`NextFires::end_date`]).
    EndDate,
    /// The schedule never fires after `start_date`.
    NeverAfterStart,
    /// Fire times stop in the year 2100.
    Exhausted,
}

/// A connection as `flowctl connections list` shows it, secrets masked.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
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

/// A page of DAGs for the API: `GET /api/v1/dags`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DagPage {
    /// The DAGs of this page, by id.
    pub dags: Vec<DagOverview>,
    /// Where the next page starts (`cursor=`), when there is one.
    pub next_cursor: Option<String>,
}

/// A DAG with what a dashboard shows of it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DagOverview {
    /// Its id, version, pause state, schedule, latest run and run counts.
    #[serde(flatten)]
    pub summary: DagSummary,
    /// `description:` of the latest version.
    pub description: Option<String>,
    /// When the scheduler creates its next run, in the DAG's time zone (none for a DAG that runs
    /// only when triggered, or whose schedule has ended).
    pub next_run: Option<DateTime<FixedOffset>>,
    /// The newest runs, newest first (at most [`RECENT_RUNS`]).
    pub recent_runs: Vec<LastRun>,
}

/// How many runs [`DagOverview::recent_runs`] holds.
pub const RECENT_RUNS: usize = 5;

/// One DAG in detail: `GET /api/v1/dags/{dag}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DagDetail {
    /// What the list shows.
    #[serde(flatten)]
    pub overview: DagOverview,
    /// The DAG's time zone (IANA name).
    pub timezone: String,
    /// The file the latest version came from.
    #[schema(value_type = String)]
    pub file: PathBuf,
    /// The declared parameters with their defaults.
    #[schema(value_type = Object)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The tasks, in a topological order.
    pub tasks: Vec<TaskSummary>,
}

/// A task of a DAG.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskSummary {
    /// Its id.
    pub task_id: String,
    /// Its operator.
    pub operator: String,
    /// Its direct upstream tasks.
    pub depends_on: Vec<String>,
    /// When it runs, given its upstream tasks' outcomes.
    pub trigger_rule: crate::dag::TriggerRule,
    /// Tries in all (1 + retries).
    pub max_tries: u32,
}

/// The stored source of one version: `GET /api/v1/dags/{dag}/source`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DagSource {
    /// The DAG.
    pub dag_id: String,
    /// The version.
    pub version: u64,
    /// The file it was applied from.
    #[schema(value_type = String)]
    pub file: PathBuf,
    /// SHA-256 of the source, hex.
    pub hash: String,
    /// When it was applied.
    pub applied_at: DateTime<chrono::Utc>,
    /// The file's text.
    pub source: String,
}

/// A DAG's versions, newest first: `GET /api/v1/dags/{dag}/versions`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DagVersions {
    /// The DAG.
    pub dag_id: String,
    /// Each version without its source.
    pub versions: Vec<VersionInfo>,
}

/// One version of a DAG.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VersionInfo {
    /// Its number.
    pub version: u64,
    /// SHA-256 of its source, hex.
    pub hash: String,
    /// The file it was applied from.
    #[schema(value_type = String)]
    pub file: PathBuf,
    /// When it was applied.
    pub applied_at: DateTime<chrono::Utc>,
}

/// Which runs a page shows: `GET /api/v1/dags/{dag}/runs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunQuery {
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// Only runs whose logical date is at or after this instant.
    pub from: Option<DateTime<FixedOffset>>,
    /// Only runs whose logical date is at or before this instant.
    pub to: Option<DateTime<FixedOffset>>,
    /// How many runs [default: 25, at most 500].
    pub limit: Option<usize>,
    /// Where to start: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of a DAG's runs, newest logical date first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunPage {
    /// The DAG.
    pub dag_id: String,
    /// The runs of this page.
    pub runs: Vec<RunSummary>,
    /// How many runs match the filter, over every page.
    pub total: usize,
    /// Where the next page starts, when there is one.
    pub next_cursor: Option<String>,
}

/// The task instances of a run: `GET .../runs/{run}/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskList {
    /// The DAG.
    pub dag_id: String,
    /// The run.
    pub run_id: String,
    /// Every task, in the DAG's order.
    pub tasks: Vec<TaskView>,
}

/// What testing a connection found.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConnectionTested {
    /// The connection, as listed.
    pub connection: ConnectionInfo,
    /// Whether it works.
    pub ok: bool,
    /// What was learnt (account, identity, server version), or what is wrong and how to fix it.
    pub detail: String,
}

/// A task instance with its attempts: `GET .../tasks/{task}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskDetail {
    /// The DAG.
    pub dag_id: String,
    /// The run.
    pub run_id: String,
    /// The instance (outputs masked, its error, its external job) with its alert deliveries.
    pub task: TaskView,
    /// The task's operator, when the run's DAG version compiles.
    pub operator: Option<String>,
    /// Every attempt that wrote a log, oldest first.
    pub attempts: Vec<AttemptInfo>,
}

/// One attempt, as its log tells it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptInfo {
    /// Its number (the try).
    pub attempt: u32,
    /// When its log's first line was written.
    pub started_at: Option<DateTime<FixedOffset>>,
    /// When its last line was written, once it ended.
    pub ended_at: Option<DateTime<FixedOffset>>,
    /// How it ended (`success`, `failed: ...`, `skipped: ...`), once it did.
    pub outcome: Option<String>,
    /// The size of its log, in bytes.
    pub log_bytes: u64,
}

/// A part of an attempt's log: `GET .../tasks/{task}/logs?attempt=N&offset=B`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogChunk {
    /// The DAG.
    pub dag_id: String,
    /// The run.
    pub run_id: String,
    /// The task.
    pub task_id: String,
    /// The attempt.
    pub attempt: u32,
    /// The byte offset the text starts at.
    pub offset: u64,
    /// The offset to ask for next (`offset` plus the bytes returned).
    pub next_offset: u64,
    /// The text (invalid UTF-8 replaced), at most [`MAX_LOG_CHUNK`] bytes.
    pub text: String,
    /// Whether the attempt wrote its last line (nothing more will come).
    pub complete: bool,
}

/// The most bytes of a log one [`LogChunk`] holds.
pub const MAX_LOG_CHUNK: usize = 1 << 20;
