//! Operations on runs that the CLI (acting on the store directly) and the server share: clearing
//! tasks to run them again, cancelling a run no process is executing, creating backfill runs, and
//! pruning old runs (retention).

use std::collections::BTreeSet;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::dag::Dag;
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
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The run's task instances in the DAG's order, with a fresh record for those never started.
fn instances(store: &Store, dag: &Dag, run_id: &str) -> Result<Vec<TaskInstance>, StoreError> {
    let mut stored: std::collections::HashMap<String, TaskInstance> =
        store.task_instances(&dag.id, run_id)?.into_iter().map(|ti| (ti.task_id.clone(), ti)).collect();
    Ok(dag.tasks.iter().map(|t| stored.remove(&t.id).unwrap_or_else(|| TaskInstance::new(&t.id, t.retry.retries + 1))).collect())
}

/// Resets the selected tasks of a run so they run again, and queues the run. The outputs of the
/// tasks that are not cleared are kept, so cleared tasks read them as before. A cleared task keeps
/// counting tries (its logs are not overwritten) and gets its retries afresh. Returns the cleared
/// task ids in the DAG's order.
pub fn clear(store: &Store, dag: &Dag, run_id: &str, selection: &Selection) -> Result<Vec<String>, RunError> {
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
    for mut ti in instances(store, dag, run_id)? {
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

/// Creates a run for an interval, with the id the trigger gives it (`scheduled__<date>`,
/// `backfill__<date>`); `None` when a run with that id exists already, so creating runs for the
/// same interval twice (a restart in the middle) never doubles them.
pub fn create_interval_run(
    store: &Store,
    dag: &Dag,
    version: u64,
    trigger: Trigger,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Option<DagRun>, StoreError> {
    let run_id = format!("{}__{}", trigger.prefix(), start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    if store.run(&dag.id, &run_id)?.is_some() {
        return Ok(None);
    }
    let run = DagRun::queued(&dag.id, run_id, start, (start, end), trigger, dag.params.clone(), version);
    store.write(&[Write::Run(run.clone())])?;
    Ok(Some(run))
}

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

/// Deletes the ended runs of a DAG beyond its retention, with their logs and scratch folders.
/// Runs that have not ended are never pruned. Returns how many runs were deleted.
pub fn prune(store: &Store, logs_dir: &Path, work_dir: &Path, dag_id: &str, retention: Retention) -> Result<usize, StoreError> {
    let mut runs = store.runs(dag_id)?;
    runs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
    let cutoff = retention.days.map(|d| Utc::now() - chrono::Duration::days(i64::from(d)));
    let mut doomed = Vec::new();
    for (index, run) in runs.iter().enumerate() {
        if !run.state.is_terminal() {
            continue;
        }
        let too_many = retention.runs.is_some_and(|keep| index >= keep);
        let too_old = cutoff.is_some_and(|c| run.created_at < c);
        if too_many || too_old {
            doomed.push(run.run_id.clone());
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
