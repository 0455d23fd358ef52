//! The server's metrics, served at `/metrics` in the Prometheus text format (prometheus-client):
//! counters and histograms the server moves as runs and attempts go, and values read at scrape
//! time (queued runs, waiting tasks, slots, alert deliveries, store size, the scheduler's
//! heartbeat) through a [`Snapshot`] the server gives.
//!
//! Names follow Airflow's where one fits (`dagrun.duration.success` is
//! `flowctl_dagrun_duration_seconds{state="success"}`, `ti.finish` is `flowctl_ti_finish_total`,
//! `scheduler.heartbeat` is `flowctl_scheduler_heartbeat_timestamp_seconds`), in Prometheus style:
//! a `flowctl_` prefix, base units in the name, labels instead of dotted suffixes.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a DAG's run counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DagLabels {
    /// The DAG.
    pub dag_id: String,
}

/// Labels of ended runs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunEndLabels {
    /// The DAG.
    pub dag_id: String,
    /// `success` or `failed`.
    pub state: String,
}

/// Labels of ended attempts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// The DAG.
    pub dag_id: String,
    /// The task.
    pub task_id: String,
    /// Its operator.
    pub operator: String,
    /// How the attempt ended: `success`, `failed`, `up_for_retry`, `skipped`.
    pub state: String,
}

/// Labels by operator.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperatorLabels {
    /// The operator.
    pub operator: String,
}

/// What the server reads at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Runs queued, waiting to start.
    pub queued_runs: u64,
    /// Task instances ready to start and waiting for a slot, in runs being executed.
    pub waiting_tasks: u64,
    /// Attempts running (global slots in use).
    pub slots_in_use: u64,
    /// `--parallelism`.
    pub slots: u64,
    /// Alert deliveries accepted by the receiver.
    pub alerts_delivered: u64,
    /// Alert deliveries given up on.
    pub alerts_failed: u64,
    /// The store's size on disk, in bytes.
    pub store_bytes: u64,
    /// When the scheduler loop last went round, in seconds since the epoch.
    pub scheduler_heartbeat: f64,
}

/// Reads a [`Snapshot`] at each scrape.
pub type SnapshotFn = Arc<dyn Fn() -> Snapshot + Send + Sync>;

/// Every metric of a server.
pub struct Metrics {
    registry: Registry,
    /// Runs started (or resumed after a restart), by DAG.
    pub runs_started: Family<DagLabels, Counter>,
    /// Runs ended, by DAG and state.
    pub runs_ended: Family<RunEndLabels, Counter>,
    /// How long ended runs took, by DAG and state.
    pub run_duration: Family<RunEndLabels, Histogram>,
    /// Attempts ended, by DAG, task, operator and state.
    pub attempts_ended: Family<AttemptLabels, Counter>,
    /// How long attempts took, by operator.
    pub attempt_duration: Family<OperatorLabels, Histogram>,
    /// From a scheduled run's fire time (its data interval's end) to its start.
    pub schedule_delay: Histogram,
    /// From a task becoming ready (its upstream tasks settled) to its attempt's start.
    pub task_start_delay: Histogram,
}

/// Buckets for durations: 5 ms to about 3 hours, doubling.
fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.005, 2.0, 22)
}

/// Buckets for a ready task's wait for its start: a hand-off takes about a millisecond, so these
/// start at half of one (0.5 ms to about 4.4 minutes).
fn hand_off_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.0005, 2.0, 20)
}

/// The scrape-time values, as a collector.
struct Scraped(SnapshotFn);

impl std::fmt::Debug for Scraped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scraped")
    }
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = (self.0)();
        let gauges: [(&str, &str, f64); 7] = [
            ("flowctl_dagruns_queued", "Runs queued, waiting to start (Airflow: dagrun.queued)", s.queued_runs as f64),
            ("flowctl_tasks_waiting", "Task instances ready to start and waiting for a free slot (Airflow: executor.queued_tasks)", s.waiting_tasks as f64),
            ("flowctl_executor_running_tasks", "Attempts running: slots in use (Airflow: executor.running_tasks)", s.slots_in_use as f64),
            ("flowctl_executor_slots", "Slots in all: --parallelism", s.slots as f64),
            ("flowctl_executor_open_slots", "Slots free (Airflow: executor.open_slots)", s.slots.saturating_sub(s.slots_in_use) as f64),
            ("flowctl_store_size_bytes", "The state store's size on disk, in bytes", s.store_bytes as f64),
            ("flowctl_scheduler_heartbeat_timestamp_seconds", "When the scheduler loop last went round, in seconds since the epoch (Airflow: scheduler_heartbeat)", s.scheduler_heartbeat),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let deliveries = [("delivered", s.alerts_delivered), ("failed", s.alerts_failed)];
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor("flowctl_alert_deliveries", "Alert deliveries, by result", None, counter.metric_type())?;
        for (result, n) in deliveries {
            let labels = [("result", result)];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// The metrics, with the scrape-time values `snapshot` reads.
    pub fn new(snapshot: SnapshotFn) -> Metrics {
        let mut registry = Registry::default();
        let runs_started = Family::<DagLabels, Counter>::default();
        let runs_ended = Family::<RunEndLabels, Counter>::default();
        let run_duration = Family::<RunEndLabels, Histogram>::new_with_constructor(|| Histogram::new(duration_buckets()));
        let attempts_ended = Family::<AttemptLabels, Counter>::default();
        let attempt_duration = Family::<OperatorLabels, Histogram>::new_with_constructor(|| Histogram::new(duration_buckets()));
        let schedule_delay = Histogram::new(duration_buckets());
        let task_start_delay = Histogram::new(hand_off_buckets());
        registry.register("flowctl_dagrun_started", "Runs started or resumed, by DAG", runs_started.clone());
        registry.register("flowctl_dagrun_ended", "Runs ended, by DAG and state", runs_ended.clone());
        registry.register("flowctl_dagrun_duration_seconds", "How long ended runs took, by DAG and state (Airflow: dagrun.duration.<state>)", run_duration.clone());
        registry.register("flowctl_ti_finish", "Attempts ended, by DAG, task, operator and state (Airflow: ti.finish)", attempts_ended.clone());
        registry.register("flowctl_task_duration_seconds", "How long attempts took, by operator (Airflow: task.duration)", attempt_duration.clone());
        registry.register(
            "flowctl_dagrun_schedule_delay_seconds",
            "From a scheduled run's fire time to its start (Airflow: dagrun.schedule_delay)",
            schedule_delay.clone(),
        );
        registry.register(
            "flowctl_task_start_delay_seconds",
            "From a task becoming ready to its attempt's start (Airflow: task.scheduled_duration)",
            task_start_delay.clone(),
        );
        registry.register_collector(Box::new(Scraped(snapshot)));
        Metrics { registry, runs_started, runs_ended, run_duration, attempts_ended, attempt_duration, schedule_delay, task_start_delay }
    }

    /// Every metric, in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// The content type of [`Metrics::encode`]'s text.
    pub const CONTENT_TYPE: &'static str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

    /// Records an attempt's end.
    pub fn attempt_ended(&self, dag_id: &str, task_id: &str, operator: &str, state: &str, took: Option<Duration>) {
        let labels = AttemptLabels { dag_id: dag_id.into(), task_id: task_id.into(), operator: operator.into(), state: state.into() };
        self.attempts_ended.get_or_create(&labels).inc();
        if let Some(took) = took {
            self.attempt_duration.get_or_create(&OperatorLabels { operator: operator.into() }).observe(took.as_secs_f64());
        }
    }

    /// Records a run's end.
    pub fn run_ended(&self, dag_id: &str, state: &str, took: Option<Duration>) {
        let labels = RunEndLabels { dag_id: dag_id.into(), state: state.into() };
        self.runs_ended.get_or_create(&labels).inc();
        if let Some(took) = took {
            self.run_duration.get_or_create(&labels).observe(took.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_scraped_values_are_encoded() {
        let metrics = Metrics::new(Arc::new(|| Snapshot { queued_runs: 3, slots: 32, slots_in_use: 2, alerts_delivered: 4, ..Snapshot::default() }));
        metrics.runs_started.get_or_create(&DagLabels { dag_id: "loans".into() }).inc();
        metrics.attempt_ended("loans", "load", "shell", "success", Some(Duration::from_millis(40)));
        metrics.run_ended("loans", "success", Some(Duration::from_secs(2)));
        let text = metrics.encode();
        for line in [
            "flowctl_dagrun_started_total{dag_id=\"loans\"} 1",
            "flowctl_ti_finish_total{dag_id=\"loans\",task_id=\"load\",operator=\"shell\",state=\"success\"} 1",
            "flowctl_task_duration_seconds_count{operator=\"shell\"} 1",
            "flowctl_dagrun_duration_seconds_count{dag_id=\"loans\",state=\"success\"} 1",
            "flowctl_dagruns_queued 3",
            "flowctl_executor_open_slots 30",
            "flowctl_alert_deliveries_total{result=\"delivered\"} 4",
        ] {
            assert!(text.contains(line), "no line {line:?} in:\n{text}");
        }
    }
}
