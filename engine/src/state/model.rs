//! The records the store keeps: applied DAG versions, DAG runs and task instances.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lifecycle::TaskState;
use crate::operator::{ExternalJob, Outputs};

/// One applied version of a DAG file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagVersion {
    /// The DAG's id.
    pub dag_id: String,
    /// 1 for the first version applied, then 2, 3...
    pub version: u64,
    /// SHA-256 of the source, hex.
    pub hash: String,
    /// The file's text; runs compile it again, so a run keeps the version it started with.
    pub source: String,
    /// Where the file was when applied.
    pub file: PathBuf,
    /// When it was applied.
    pub applied_at: DateTime<Utc>,
}

/// What the store knows of a DAG across versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagRecord {
    /// The DAG's id.
    pub dag_id: String,
    /// The newest applied version.
    pub latest_version: u64,
    /// Paused DAGs are not scheduled.
    #[serde(default)]
    pub paused: bool,
    /// The end of the last data interval the scheduler created a run for.
    #[serde(default)]
    pub last_scheduled_end: Option<DateTime<Utc>>,
    /// What the latest version says of itself, so listings show it without compiling it
    /// (`None` in a record an earlier build wrote: then the version is compiled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<LatestVersion>,
}

/// The parts of a DAG's latest version that listings show.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatestVersion {
    /// Its schedule expression (`None`: it runs only when triggered).
    pub schedule: Option<String>,
    /// Its `description:`.
    pub description: Option<String>,
}

/// How a run came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// `flowctl run` or `flowctl trigger`.
    Manual,
    /// The scheduler.
    Scheduled,
    /// `flowctl backfill`.
    Backfill,
}

impl Trigger {
    /// The prefix of run ids, as in Airflow.
    pub fn prefix(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Scheduled => "scheduled",
            Trigger::Backfill => "backfill",
        }
    }
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Created, not started.
    Queued,
    /// Tasks are running or waiting.
    Running,
    /// Every leaf ended without failing.
    Success,
    /// A leaf failed or was upstream_failed, or the run was cancelled.
    Failed,
}

impl RunState {
    /// The name `status` shows.
    pub fn name(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Success => "success",
            RunState::Failed => "failed",
        }
    }

    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, RunState::Success | RunState::Failed)
    }
}

/// One run of a DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DagRun {
    /// The DAG's id.
    pub dag_id: String,
    /// Unique within the DAG, e.g. `manual__2024-01-01T00:00:00Z`.
    pub run_id: String,
    /// The start of the data interval, as in Airflow.
    pub logical_date: DateTime<Utc>,
    /// The data interval's start.
    pub data_interval_start: DateTime<Utc>,
    /// The data interval's end.
    pub data_interval_end: DateTime<Utc>,
    /// How it was created.
    pub trigger: Trigger,
    /// The parameters, defaults overlaid with `--param` values.
    #[schema(value_type = Object)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// The DAG version it runs.
    pub dag_version: u64,
    /// Where it is.
    pub state: RunState,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its first task started.
    pub start: Option<DateTime<Utc>>,
    /// When it ended.
    pub end: Option<DateTime<Utc>>,
    /// Why it ended as it did, when that is not obvious ("cancelled by the user").
    pub note: Option<String>,
}

impl DagRun {
    /// A new run, queued: the interval `(start, end)`, created now.
    pub fn queued(
        dag_id: &str,
        run_id: String,
        logical_date: DateTime<Utc>,
        (data_interval_start, data_interval_end): (DateTime<Utc>, DateTime<Utc>),
        trigger: Trigger,
        params: serde_json::Map<String, serde_json::Value>,
        dag_version: u64,
    ) -> Self {
        DagRun {
            dag_id: dag_id.to_string(),
            run_id,
            logical_date,
            data_interval_start,
            data_interval_end,
            trigger,
            params,
            dag_version,
            state: RunState::Queued,
            created_at: Utc::now(),
            start: None,
            end: None,
            note: None,
        }
    }
}

/// One task of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskInstance {
    /// The task's id.
    pub task_id: String,
    /// Where it is.
    pub state: TaskState,
    /// The number of the current or last attempt; 0 before the first.
    pub try_number: u32,
    /// 1 + retries.
    pub max_tries: u32,
    /// When the current or last attempt started.
    pub start: Option<DateTime<Utc>>,
    /// When the last attempt ended.
    pub end: Option<DateTime<Utc>>,
    /// When the next try may start, while up_for_retry.
    pub retry_at: Option<DateTime<Utc>>,
    /// What the last successful attempt produced.
    #[schema(value_type = Object)]
    pub outputs: crate::operator::Outputs,
    /// Why the last attempt failed (secrets masked).
    pub error: Option<String>,
    /// The external job the current attempt waits on, recorded before waiting.
    pub external_job: Option<ExternalJob>,
}

impl TaskInstance {
    /// A task instance that has not started.
    pub fn new(task_id: &str, max_tries: u32) -> Self {
        TaskInstance {
            task_id: task_id.to_string(),
            state: TaskState::None,
            try_number: 0,
            max_tries,
            start: None,
            end: None,
            retry_at: None,
            outputs: Outputs::new(),
            error: None,
            external_job: None,
        }
    }
}
