//! The scheduler loop: creates the runs that schedules call for, starts queued runs within each
//! DAG's `max_active_runs`, resumes runs a stopped process left, and sleeps until the next fire
//! time or until something changes.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::State;
use crate::state::{DagRecord, RunState, Trigger};
use crate::timetable;

/// The longest the loop sleeps: it goes round at least this often, so `/health` can tell a
/// stalled scheduler from one with nothing to do.
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs until the server drains.
pub(super) async fn run(state: Arc<State>) {
    loop {
        if state.drain.is_cancelled() {
            return;
        }
        *state.heartbeat.lock().unwrap_or_else(|e| e.into_inner()) = Some(Utc::now());
        // Register interest before looking, so a wake-up during the pass is not lost.
        let woken = state.wake.notified();
        let next = match pass(&state) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "scheduler pass failed; retrying in a minute");
                Some(Utc::now() + chrono::Duration::minutes(1))
            }
        };
        let sleep = Some(next.map_or(HEARTBEAT, |at| (at - Utc::now()).to_std().unwrap_or_default().min(HEARTBEAT)));
        tokio::select! {
            _ = woken => {}
            _ = state.drain.cancelled() => return,
            _ = async {
                match sleep {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// One look at every DAG: create due runs, start what may start. Returns when to look again.
/// A DAG whose records or versions cannot be read is logged and passed over; the others carry on.
fn pass(state: &Arc<State>) -> Result<Option<DateTime<Utc>>, crate::protocol::ServiceError> {
    let now = Utc::now();
    let mut next_wake: Option<DateTime<Utc>> = None;
    let mut queued_total = 0u64;
    for record in state.store().dags()? {
        let dag_id = record.dag_id.clone();
        match pass_dag(state, record, now, &mut queued_total) {
            Ok(Some(at)) => next_wake = Some(next_wake.map_or(at, |n| n.min(at))),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(%dag_id, error = %e, "scheduler pass failed for this DAG, retrying it in a minute; the others carry on");
                let at = now + chrono::Duration::minutes(1);
                next_wake = Some(next_wake.map_or(at, |n| n.min(at)));
            }
        }
    }
    state.queued_runs.store(queued_total, std::sync::atomic::Ordering::Relaxed);
    Ok(next_wake)
}

/// One DAG's part of a pass. Returns its next fire time, if it has one ahead, and adds the DAG's
/// queued runs to `queued_total`.
fn pass_dag(
    state: &Arc<State>,
    mut record: DagRecord,
    now: DateTime<Utc>,
    queued_total: &mut u64,
) -> Result<Option<DateTime<Utc>>, crate::protocol::ServiceError> {
    let store = state.store();
    let mut next_wake = None;
    let dag = match state.dag(&record.dag_id, record.latest_version) {
        Ok(dag) => dag,
        Err(e) => {
            tracing::error!(dag_id = %record.dag_id, error = %e, "cannot load the DAG's latest version");
            return Ok(None);
        }
    };
    // Only the runs that have not ended, through the store's state index: a DAG's history does
    // not slow the scheduler down.
    let running = store.runs_in_state(&dag.id, RunState::Running)?;
    let queued_now = store.runs_in_state(&dag.id, RunState::Queued)?.len();
    // Runs a stopped process left running resume first, whatever max_active_runs says: they
    // were already counted when they started.
    for run in &running {
        if let Ok(version) = state.dag(&dag.id, run.dag_version) {
            state.start_run(version, run.clone());
        }
    }
    if record.paused {
        return Ok(None);
    }
    let unfinished = running.len() + queued_now;
    let mut slots = (dag.max_active_runs as usize).saturating_sub(unfinished);
    if dag.schedule.is_some() && slots > 0 {
        let mut created = false;
        for interval in timetable::due_intervals(&dag, record.last_scheduled_end, now) {
            if slots == 0 {
                break;
            }
            if crate::runs::create_interval_run(store, &dag, record.latest_version, Trigger::Scheduled, interval.start, interval.end)?
                .is_some()
            {
                slots -= 1;
            }
            record.last_scheduled_end = Some(interval.end);
            created = true;
        }
        if created {
            // The schedule's position alone, atomically: a pause or an apply may be writing the
            // same record.
            let end = record.last_scheduled_end;
            store.update_dag(&dag.id, |stored| stored.map(|r| DagRecord { last_scheduled_end: end.max(r.last_scheduled_end), ..r }))?;
        }
    }
    if dag.schedule.is_some() {
        // A wake-up already due means intervals wait for a free slot: a run ending wakes the
        // scheduler then, so only future fire times set the alarm (no spinning meanwhile).
        next_wake = timetable::next_wakeup(&dag, record.last_scheduled_end).filter(|at| *at > now);
    }
    // Queued runs start oldest first while the DAG has room.
    let mut queued = store.runs_in_state(&dag.id, RunState::Queued)?;
    *queued_total += queued.len() as u64;
    queued.sort_by_key(|r| (r.logical_date, r.created_at));
    for run in queued {
        if state.active_count(&dag.id) >= dag.max_active_runs as usize {
            break;
        }
        match state.dag(&dag.id, run.dag_version) {
            Ok(version) => state.start_run(version, run),
            Err(e) => tracing::error!(dag_id = %dag.id, run_id = %run.run_id, error = %e, "cannot load the run's DAG version"),
        }
    }
    Ok(next_wake)
}
