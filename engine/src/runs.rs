//! Operations on the runs of a DAG, below every face: creating runs (the one place that chooses
//! run ids, reads `--param` values and logical dates, and infers data intervals), clearing tasks to
//! run them again, cancelling a run no process is executing, and pruning old runs (retention).
//!
//! Invariants: a run is created only through [`create_run`] or [`create_interval_run`], which
//! insert it with a compare-and-swap on its id, so concurrent callers never share an id and an
//! interval's run is never created twice. [`clear`], [`cancel_idle`] and [`prune`] read and write
//! under [`Store::run_edits`], so none of them acts on what another has just changed.

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::Value;

use crate::dag::{Dag, Retention};
use crate::diagnostic::suggestion;
use crate::lifecycle::{transition, TaskEvent, TaskState};
use crate::state::{DagRun, RunState, Store, StoreError, TaskInstance, Trigger, Write};

/// Which tasks of a run `flowctl clear` resets.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these tasks (all when empty).
    pub tasks: Vec<String>,
    /// With the tasks downstream of them.
    pub downstream: bool,
    /// Only tasks that ended failed or upstream_failed.
    pub failed_only: bool,
}

/// Why a run operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No such run.
    #[error("DAG \"{dag_id}\" has no run \"{run_id}\"; `flowctl status {dag_id}` lists its runs")]
    NoRun {
        /// The DAG.
        dag_id: String,
        /// The run asked for.
        run_id: String,
    },
    /// A task named in the selection is not in the DAG.
    #[error("DAG \"{dag_id}\" has no task \"{task_id}\"{suggestion}")]
    NoTask {
        /// The DAG.
        dag_id: String,
        /// The task asked for.
        task_id: String,
        /// ` (did you mean "x"?)` or nothing.
        suggestion: String,
    },
    /// The run is still running and a process executes it.
    #[error("run \"{run_id}\" of \"{dag_id}\" is still running; wait for it or `flowctl cancel {dag_id} {run_id}` first")]
    Active {
        /// The DAG.
        dag_id: String,
        /// The run.
        run_id: String,
    },
    /// A `--param`, a date or another input of a new run is wrong; the message says how to
    /// write it.
    #[error("{0}")]
    Input(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every task of `dag` in its order, with its stored record (from `stored`) or, for a task that has
/// not started, a fresh one.
pub fn all_instances(dag: &Dag, stored: Vec<TaskInstance>) -> Vec<TaskInstance> {
    let mut by_id: std::collections::HashMap<String, TaskInstance> = stored.into_iter().map(|ti| (ti.task_id.clone(), ti)).collect();
    dag.tasks.iter().map(|t| by_id.remove(&t.id).unwrap_or_else(|| TaskInstance::new(&t.id, t.retry.retries + 1))).collect()
}

/// Resets the selected tasks of a run so they run again, and queues the run. The outputs of the
/// tasks that are not cleared are kept, so cleared tasks read them as before. A cleared task keeps
/// counting tries (its logs are not overwritten) and gets its retries afresh. Returns the cleared
/// task ids in the DAG's order.
pub fn clear(store: &Store, dag: &Dag, run_id: &str, selection: &Selection) -> Result<Vec<String>, RunError> {
    let _edits = store.run_edits();
    let mut run = store
        .run(&dag.id, run_id)?
        .ok_or_else(|| RunError::NoRun { dag_id: dag.id.clone(), run_id: run_id.to_string() })?;
    for task_id in &selection.tasks {
        if dag.task(task_id).is_none() {
            return Err(RunError::NoTask {
                dag_id: dag.id.clone(),
                task_id: task_id.clone(),
                suggestion: crate::diagnostic::suggestion(task_id, dag.tasks.iter().map(|t| t.id.as_str())),
            });
        }
    }
    let mut chosen: BTreeSet<String> = if selection.tasks.is_empty() {
        dag.tasks.iter().map(|t| t.id.clone()).collect()
    } else {
        selection.tasks.iter().cloned().collect()
    };
    if selection.downstream {
        for task_id in chosen.clone() {
            chosen.extend(dag.graph.descendants(&task_id));
        }
    }
    let mut writes = Vec::new();
    let mut cleared = Vec::new();
    for mut ti in all_instances(dag, store.task_instances(&dag.id, run_id)?) {
        if !chosen.contains(&ti.task_id) {
            continue;
        }
        let failed = matches!(ti.state, TaskState::Failed | TaskState::UpstreamFailed);
        if selection.failed_only && !failed {
            continue;
        }
        let Ok(state) = transition(ti.state, TaskEvent::Cleared) else { continue };
        let retries = dag.task(&ti.task_id).map_or(0, |t| t.retry.retries);
        ti.state = state;
        ti.max_tries = ti.try_number + retries + 1;
        ti.outputs = Default::default();
        ti.error = None;
        ti.retry_at = None;
        ti.external_job = None;
        cleared.push(ti.task_id.clone());
        writes.push(Write::Task { dag_id: dag.id.clone(), run_id: run_id.to_string(), instance: ti });
    }
    if !cleared.is_empty() {
        run.state = RunState::Queued;
        // The run's time is the time of this pass, as in Airflow.
        run.start = None;
        run.end = None;
        run.note = None;
        writes.push(Write::Run(run));
        store.write(&writes)?;
    }
    Ok(cleared)
}

/// Cancels a run that no process is executing (the CLI without a server): the run fails,
/// "cancelled by the user"; attempts recorded as running lose what they left behind and fail;
/// tasks waiting to start or to retry stop.
pub fn cancel_idle(store: &Store, dag: &Dag, run_id: &str) -> Result<DagRun, RunError> {
    let _edits = store.run_edits();
    let mut run = store
        .run(&dag.id, run_id)?
        .ok_or_else(|| RunError::NoRun { dag_id: dag.id.clone(), run_id: run_id.to_string() })?;
    if run.state.is_terminal() {
        return Ok(run);
    }
    let note = "cancelled by the user".to_string();
    let mut writes = Vec::new();
    for mut ti in store.task_instances(&dag.id, run_id)? {
        if ti.state == TaskState::Running {
            crate::process::kill_tagged(&crate::process::attempt_id(&dag.id, run_id, &ti.task_id, ti.try_number));
        }
        if let Ok(state) = transition(ti.state, TaskEvent::Cancelled) {
            if state == TaskState::Failed {
                ti.error = Some(note.clone());
                ti.end = Some(Utc::now());
            }
            ti.state = state;
            writes.push(Write::Task { dag_id: dag.id.clone(), run_id: run_id.to_string(), instance: ti });
        }
    }
    run.state = RunState::Failed;
    run.note = Some(note);
    run.end = Some(Utc::now());
    writes.push(Write::Run(run.clone()));
    store.write(&writes)?;
    Ok(run)
}

/// Parses `--param key=value` against the DAG's declared parameters: the defaults, overlaid.
pub fn run_params(dag: &Dag, overrides: &[String]) -> Result<serde_json::Map<String, Value>, RunError> {
    let mut params = dag.params.clone();
    for item in overrides {
        let Some((key, value)) = item.split_once('=') else {
            let example =
                if dag.params.contains_key(item) { item.as_str() } else { dag.params.keys().next().map_or("KEY", String::as_str) };
            return Err(RunError::Input(format!(
                "--param \"{item}\" for DAG \"{}\": expected KEY=VALUE, e.g. --param {example}=VALUE",
                dag.id
            )));
        };
        if !dag.params.contains_key(key) {
            let declared: Vec<&str> = dag.params.keys().map(String::as_str).collect();
            let listed = if declared.is_empty() {
                "it declares none".to_string()
            } else {
                format!("declared: {}", crate::diagnostic::list_names(declared.iter().copied()))
            };
            return Err(RunError::Input(format!(
                "--param \"{item}\": DAG \"{}\" declares no parameter \"{key}\"{} ({listed}); declare it under `params:` in {}",
                dag.id,
                suggestion(key, declared.iter().copied()),
                dag.file.display()
            )));
        }
        // As deep as compile lets `params:` go and no deeper, so the run's record can be read back.
        let value = param_value(value);
        let depth = crate::yaml::json_depth(&value);
        if depth > crate::yaml::MAX_VALUE_DEPTH {
            return Err(RunError::Input(format!(
                "--param \"{key}\": the value nests {depth} levels deep; a parameter's value may nest at most {} levels, as under `params:` in a DAG file",
                crate::yaml::MAX_VALUE_DEPTH
            )));
        }
        params.insert(key.to_string(), value);
    }
    Ok(params)
}

/// The DAG's declared parameters overlaid with `given` (values as JSON, as the API takes them):
/// every key must be declared.
pub fn params_from(dag: &Dag, given: &serde_json::Map<String, Value>) -> Result<serde_json::Map<String, Value>, RunError> {
    let mut params = dag.params.clone();
    for (key, value) in given {
        if !dag.params.contains_key(key) {
            let declared: Vec<&str> = dag.params.keys().map(String::as_str).collect();
            let listed = if declared.is_empty() { "it declares none".to_string() } else { format!("declared: {}", declared.join(", ")) };
            return Err(RunError::Input(format!(
                "params.{key}: DAG \"{}\" declares no parameter \"{key}\"{} ({listed}); declare it under `params:` in {}",
                dag.id,
                suggestion(key, declared.iter().copied()),
                dag.file.display()
            )));
        }
        params.insert(key.clone(), value.clone());
    }
    Ok(params)
}

/// The value of a `--param` as typed: JSON when it parses (numbers, booleans, lists), else text.
pub fn param_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// An instant a user typed for a DAG: an RFC 3339 timestamp, or a date meaning midnight in the
/// DAG's time zone (`--date`, `--after`, `--from`, `--to`).
pub fn parse_instant(dag: &Dag, text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|local| dag.timezone.from_local_datetime(&local).earliest())
        .map(|t| t.with_timezone(&Utc))
}

/// The logical date of a manual run: `--date` (see [`parse_instant`]), else now (to the second).
pub fn logical_date(dag: &Dag, date: Option<&str>) -> Result<DateTime<Utc>, RunError> {
    let Some(text) = date else {
        let now = Utc::now();
        return Ok(chrono::Timelike::with_nanosecond(&now, 0).unwrap_or(now));
    };
    parse_instant(dag, text)
        .ok_or_else(|| RunError::Input(format!("--date \"{text}\": expected a date like 2024-01-31 or an RFC 3339 timestamp")))
}

/// The data interval of a run triggered by hand, as Airflow infers it: the last complete
/// interval of the schedule at the logical date (a daily DAG triggered at 01:00 on the 25th
/// processes the 24th). A DAG without a schedule has an empty interval at the logical date.
pub fn manual_interval(dag: &Dag, logical_date: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let Some(schedule) = &dag.schedule else { return (logical_date, logical_date) };
    let Some(end) = schedule.prev_at_or_before(logical_date, dag.timezone) else { return (logical_date, logical_date) };
    let start = schedule.prev_at_or_before(end - chrono::Duration::seconds(1), dag.timezone).unwrap_or(end);
    (start, end)
}

/// The id of a run of `trigger` for `logical_date`: `<prefix>__<date>`, as in Airflow.
pub fn run_id_for(trigger: Trigger, logical_date: DateTime<Utc>) -> String {
    format!("{}__{}", trigger.prefix(), logical_date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// Creates a run of `dag` (queued, with the manual data interval of its logical date) and stores it
/// durably. Its id is `<prefix>__<date>`, or `<prefix>__<date>.2`, `.3`... when that is taken:
/// each candidate is claimed with a compare-and-swap, so concurrent triggers get distinct ids.
/// Task instances get a record when they first change; until then they have not started.
pub fn create_run(
    store: &Store,
    dag: &Dag,
    version: u64,
    trigger: Trigger,
    logical_date: DateTime<Utc>,
    params: serde_json::Map<String, Value>,
) -> Result<DagRun, RunError> {
    let interval = manual_interval(dag, logical_date);
    let base = run_id_for(trigger, logical_date);
    let mut run = DagRun::queued(&dag.id, base.clone(), logical_date, interval, trigger, params, version);
    let mut n = 1u64;
    loop {
        if store.create_run(&run)? {
            return Ok(run);
        }
        n += 1;
        run.run_id = format!("{base}.{n}");
    }
}

/// Creates a run for an interval, with the id the trigger gives it (`scheduled__<date>`,
/// `backfill__<date>`); `None` when a run with that id exists already, so creating runs for the
/// same interval twice (a restart in the middle, two backfills at once) never doubles them.
pub fn create_interval_run(
    store: &Store,
    dag: &Dag,
    version: u64,
    trigger: Trigger,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Option<DagRun>, StoreError> {
    let run = DagRun::queued(&dag.id, run_id_for(trigger, start), start, (start, end), trigger, dag.params.clone(), version);
    Ok(store.create_run(&run)?.then_some(run))
}

/// Deletes the ended runs of a DAG beyond its retention, with their logs and scratch folders.
/// Runs that have not ended are never pruned. Returns how many runs were deleted.
pub fn prune(store: &Store, logs_dir: &Path, work_dir: &Path, dag_id: &str, retention: Retention) -> Result<usize, StoreError> {
    // Runs are read and deleted under the lock `clear` holds, so a run cleared (queued again)
    // meanwhile is never deleted.
    let _edits = store.run_edits();
    // Candidates come from the creation index alone (the newest first is index 0); only those
    // beyond the retention are read, to keep runs that have not ended.
    let created = store.runs_by_creation(dag_id)?;
    let total = created.len();
    let cutoff = retention.days.map(|d| Utc::now() - chrono::Duration::days(i64::from(d)));
    let mut doomed = Vec::new();
    for (oldest_first, (created_at, run_id)) in created.into_iter().enumerate() {
        let newest_first = total - 1 - oldest_first;
        let too_many = retention.runs.is_some_and(|keep| newest_first >= keep);
        let too_old = cutoff.is_some_and(|c| created_at < c);
        if !(too_many || too_old) {
            continue;
        }
        if store.run(dag_id, &run_id).ok().flatten().is_some_and(|run| run.state.is_terminal()) {
            doomed.push(run_id);
        }
    }
    if doomed.is_empty() {
        return Ok(0);
    }
    let writes: Vec<Write> =
        doomed.iter().map(|run_id| Write::DeleteRun { dag_id: dag_id.to_string(), run_id: run_id.clone() }).collect();
    store.write(&writes)?;
    for run_id in &doomed {
        let _ = std::fs::remove_dir_all(logs_dir.join(dag_id).join(run_id));
        let _ = std::fs::remove_dir_all(work_dir.join(dag_id).join(run_id));
    }
    Ok(doomed.len())
}
