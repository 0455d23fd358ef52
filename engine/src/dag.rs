//! The compiled DAG: what a DAG file means once compile has checked it.
//!
//! Everything here is valid by construction: ids are well-formed and unique, dependencies name real
//! tasks and form no cycle, durations and schedules are parsed, and each task's `with:` passed its
//! operator's validation. The runtime never re-checks what compile already proved.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::graph::TaskGraph;
use crate::schedule::Schedule;

/// How much history to keep for a DAG (`retention:` in the DAG file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many ended runs (the newest).
    pub runs: Option<usize>,
    /// Keep ended runs created within this many days.
    pub days: Option<u32>,
}

impl Retention {
    /// Without `retention:`: the newest 1,000 ended runs, so a home does not grow without bound.
    pub const DEFAULT: Retention = Retention { runs: Some(1000), days: None };
}

/// A compiled DAG.
#[derive(Debug, Clone)]
pub struct Dag {
    /// The `dag:` id, unique across all files.
    pub id: String,
    /// The file it came from.
    pub file: PathBuf,
    /// The file's text, stored with each applied version.
    pub source: String,
    /// `description:`.
    pub description: Option<String>,
    /// `schedule:`; `None` for a DAG that only runs when triggered.
    pub schedule: Option<Schedule>,
    /// `timezone:`, in which the schedule and dates are read.
    pub timezone: Tz,
    /// `start_date:`.
    pub start_date: Option<DateTime<Utc>>,
    /// `end_date:`.
    pub end_date: Option<DateTime<Utc>>,
    /// `catchup:`.
    pub catchup: bool,
    /// `max_active_runs:`.
    pub max_active_runs: u32,
    /// `max_active_tasks:`.
    pub max_active_tasks: u32,
    /// `params:` with their defaults.
    pub params: serde_json::Map<String, Value>,
    /// `alerts:` at the DAG level.
    pub alerts: Option<Alerts>,
    /// `retention:`: how many ended runs, or how many days of them, to keep.
    pub retention: Retention,
    /// The tasks, in a topological order (every task after its upstream tasks).
    pub tasks: Vec<Task>,
    /// The dependency graph.
    pub graph: TaskGraph,
    /// Each task's position in `tasks`, so looking a task up by id costs nothing on large DAGs.
    pub task_index: std::collections::HashMap<String, usize>,
}

impl Dag {
    /// The task called `id`.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.task_index.get(id).map(|&i| &self.tasks[i])
    }
}

/// A compiled task.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// `id:`, unique in the DAG.
    pub id: String,
    /// `operator:`, a registered operator's name.
    pub operator: String,
    /// `description:`.
    pub description: Option<String>,
    /// `with:`, unrendered: every string in it is a template.
    pub with: Value,
    /// `depends_on:`, the direct upstream tasks.
    pub depends_on: Vec<String>,
    /// `trigger_rule:`.
    pub trigger_rule: TriggerRule,
    /// The retry settings, with the DAG's `defaults:` applied.
    pub retry: RetryPolicy,
    /// `timeout:` for one attempt.
    pub timeout: Option<Duration>,
    /// `alerts:` for this task, when it overrides the DAG's.
    pub alerts: Option<Alerts>,
}

/// When a task may run, given how its upstream tasks ended (Airflow's trigger rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every upstream task succeeded (the default).
    #[default]
    AllSuccess,
    /// Every upstream task failed or was upstream_failed.
    AllFailed,
    /// Every upstream task finished, whatever the outcome.
    AllDone,
    /// At least one upstream task succeeded.
    OneSuccess,
    /// At least one upstream task failed.
    OneFailed,
    /// No upstream task failed or was upstream_failed.
    NoneFailed,
    /// No upstream task was skipped.
    NoneSkipped,
    /// No upstream task failed, and at least one succeeded.
    NoneFailedMinOneSuccess,
    /// Always run, whatever happened upstream.
    Always,
}

impl TriggerRule {
    /// Every rule with its name in DAG files.
    pub const ALL: [(TriggerRule, &'static str); 9] = [
        (TriggerRule::AllSuccess, "all_success"),
        (TriggerRule::AllFailed, "all_failed"),
        (TriggerRule::AllDone, "all_done"),
        (TriggerRule::OneSuccess, "one_success"),
        (TriggerRule::OneFailed, "one_failed"),
        (TriggerRule::NoneFailed, "none_failed"),
        (TriggerRule::NoneSkipped, "none_skipped"),
        (TriggerRule::NoneFailedMinOneSuccess, "none_failed_min_one_success"),
        (TriggerRule::Always, "always"),
    ];

    /// The name DAG files use.
    pub fn name(self) -> &'static str {
        TriggerRule::ALL.iter().find(|(r, _)| *r == self).map_or("all_success", |(_, n)| n)
    }
}

/// How the delay between tries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The same delay every time.
    #[default]
    Fixed,
    /// Doubling each time, capped by `max_retry_delay`.
    Exponential,
}

/// A task's retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times a failed attempt is tried again.
    pub retries: u32,
    /// The delay before the first retry.
    pub delay: Duration,
    /// How the delay grows.
    pub backoff: Backoff,
    /// The longest delay exponential backoff may reach.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Airflow's defaults: no retries, 5 minutes apart, capped at a day.
    pub const DEFAULT: RetryPolicy = RetryPolicy {
        retries: 0,
        delay: Duration::from_secs(300),
        backoff: Backoff::Fixed,
        max_delay: Duration::from_secs(24 * 3600),
    };

    /// The delay before try `next_try` (2 for the first retry).
    pub fn delay_before(&self, next_try: u32) -> Duration {
        match self.backoff {
            Backoff::Fixed => self.delay,
            Backoff::Exponential => {
                let factor = 2u32.saturating_pow(next_try.saturating_sub(2));
                self.delay.saturating_mul(factor).min(self.max_delay)
            }
        }
    }
}

/// What an alert reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertEvent {
    /// A task failed for good.
    Failure,
    /// A task failed and will be retried.
    Retry,
    /// A task succeeded.
    Success,
    /// A run failed.
    RunFailure,
    /// A run succeeded.
    RunSuccess,
}

impl AlertEvent {
    /// Every event with its name in DAG files.
    pub const ALL: [(AlertEvent, &'static str); 5] = [
        (AlertEvent::Failure, "failure"),
        (AlertEvent::Retry, "retry"),
        (AlertEvent::Success, "success"),
        (AlertEvent::RunFailure, "run_failure"),
        (AlertEvent::RunSuccess, "run_success"),
    ];
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// flowctl's own JSON object.
    #[default]
    Json,
    /// Slack's incoming-webhook shape.
    Slack,
}

/// An `alerts:` section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Alerts {
    /// `email:`.
    pub email: Option<EmailAlert>,
    /// `webhook:`.
    pub webhook: Option<WebhookAlert>,
}

/// Email alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailAlert {
    /// Recipients; empty means the config file's default recipients.
    pub to: Vec<String>,
    /// Events that send a message (default: failure).
    pub on: Vec<AlertEvent>,
}

/// Webhook alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAlert {
    /// Where to POST.
    pub urls: Vec<String>,
    /// The body's shape.
    pub format: WebhookFormat,
    /// Events that send a POST (default: failure).
    pub on: Vec<AlertEvent>,
}
