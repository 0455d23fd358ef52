//! Changing a home's runs: trigger, clear, cancel, backfill. The rules of each (ids, intervals,
//! what clearing resets) live in [`crate::runs`]; this adds what a request needs around them:
//! finding the DAG version, refusing to touch a run a process is executing, waking the host.

use chrono::Utc;

use super::dags::dag_record;
use super::Service;
use crate::protocol::{BackfillAction, BackfillInterval, Backfilled, CancelOutcome, Cancelled, Cleared, ServiceError, Triggered};
use crate::runs::{self, RunError, Selection};
use crate::state::{DagRun, RunState, Trigger};
use crate::timetable;

/// A new run's parameters as a face got them.
#[derive(Debug, Clone, Copy)]
pub enum RunParams<'a> {
    /// Values by name (the API's object).
    Values(&'a serde_json::Map<String, serde_json::Value>),
    /// `key=value` strings (`--param`).
    Args(&'a [String]),
}

impl Service<'_> {
    /// A stored run, or the error that names it.
    fn stored_run(&self, dag_id: &str, run_id: &str) -> Result<DagRun, ServiceError> {
        super::check_name(super::NameKind::Run, run_id)?;
        self.store()
            .run(dag_id, run_id)?
            .ok_or_else(|| RunError::NoRun { dag_id: dag_id.to_string(), run_id: run_id.to_string() }.into())
    }

    /// `trigger`: a manual run of the DAG's latest version, queued.
    pub fn trigger(&self, dag_id: &str, params: &[String], date: Option<&str>) -> Result<Triggered, ServiceError> {
        self.trigger_run(dag_id, RunParams::Args(params), date, None)
    }

    /// A manual run with parameters as JSON (the API's trigger). With an idempotency `key`, the
    /// first request creates the run and every later one with the same key answers with that run
    /// (`created: false`), however many arrive at once.
    pub fn trigger_run(&self, dag_id: &str, params: RunParams<'_>, date: Option<&str>, key: Option<&str>) -> Result<Triggered, ServiceError> {
        let (dag, version) = self.applied(dag_id)?;
        let params = match params {
            RunParams::Values(values) => runs::params_from(&dag, values)?,
            RunParams::Args(args) => runs::run_params(&dag, args)?,
        };
        let logical_date = runs::logical_date(&dag, date)?;
        let Some(key) = key else {
            let run = runs::create_run(self.store(), &dag, version, Trigger::Manual, logical_date, params)?;
            self.host.runs_queued();
            return Ok(Triggered { run, dag_paused: self.is_paused(dag_id), created: true });
        };
        if key.is_empty() || key.len() > 200 || key.chars().any(|c| c.is_control()) {
            return Err(ServiceError::bad_request("idempotency_key: 1 to 200 printable characters, e.g. the CI job's id"));
        }
        let store = self.store();
        let _edits = store.run_edits();
        if let Some(run_id) = store.idempotent_run(dag_id, key)? {
            if let Some(run) = store.run(dag_id, &run_id)? {
                return Ok(Triggered { run, dag_paused: self.is_paused(dag_id), created: false });
            }
        }
        let run = runs::create_run(store, &dag, version, Trigger::Manual, logical_date, params)?;
        store.record_idempotent_run(dag_id, key, &run.run_id)?;
        self.host.runs_queued();
        Ok(Triggered { run, dag_paused: self.is_paused(dag_id), created: true })
    }

    /// `clear`: resets the selected tasks of a run and queues it again.
    pub fn clear(&self, dag_id: &str, run_id: &str, selection: &Selection) -> Result<Cleared, ServiceError> {
        let active = || ServiceError::from(RunError::Active { dag_id: dag_id.to_string(), run_id: run_id.to_string() });
        if self.host.is_active(dag_id, run_id) {
            return Err(active());
        }
        let stored = self.stored_run(dag_id, run_id)?;
        let dag = self.host.dag(dag_id, stored.dag_version)?;
        let mut cleared = None;
        if !self.host.while_idle(dag_id, run_id, &mut || cleared = Some(runs::clear(self.store(), &dag, run_id, selection))) {
            return Err(active());
        }
        let tasks = cleared.ok_or_else(active)??;
        if !tasks.is_empty() {
            self.host.runs_queued();
        }
        Ok(Cleared { dag_id: dag_id.to_string(), run_id: run_id.to_string(), tasks, dag_paused: self.is_paused(dag_id) })
    }

    /// `cancel`: stops a run being executed, or fails one nobody executes.
    pub fn cancel(&self, dag_id: &str, run_id: &str) -> Result<Cancelled, ServiceError> {
        dag_record(self.store(), dag_id)?;
        let stored = self.stored_run(dag_id, run_id)?;
        let answer = |outcome, state| Cancelled { dag_id: dag_id.to_string(), run_id: run_id.to_string(), outcome, state };
        if stored.state.is_terminal() {
            return Ok(answer(CancelOutcome::AlreadyEnded, stored.state));
        }
        if self.host.cancel_active(dag_id, run_id) {
            return Ok(answer(CancelOutcome::Cancelling, stored.state));
        }
        let dag = self.host.dag(dag_id, stored.dag_version)?;
        let mut cancelled = None;
        if !self.host.while_idle(dag_id, run_id, &mut || cancelled = Some(runs::cancel_idle(self.store(), &dag, run_id))) {
            // It started meanwhile: cancel it where it runs.
            let outcome = if self.host.cancel_active(dag_id, run_id) { CancelOutcome::Cancelling } else { CancelOutcome::AlreadyEnded };
            let state = self.stored_run(dag_id, run_id)?.state;
            return Ok(answer(outcome, state));
        }
        let run = cancelled.ok_or_else(|| ServiceError::unavailable("the run could not be cancelled"))??;
        Ok(answer(CancelOutcome::Cancelled, run.state))
    }

    /// `backfill`: runs for the intervals that have ended and whose logical dates lie in
    /// `from..=to`, created once each; with `rerun_failed`, failed ones cleared to run again.
    pub fn backfill(&self, dag_id: &str, from: &str, to: &str, rerun_failed: bool) -> Result<Backfilled, ServiceError> {
        let store = self.store();
        let (dag, version) = self.applied(dag_id)?;
        if dag.schedule.is_none() {
            return Err(ServiceError::bad_request(format!(
                "DAG \"{dag_id}\" has no schedule, so it has no intervals to backfill; trigger runs with `flowctl trigger {dag_id} --date D`"
            )));
        }
        let start = runs::parse_instant(&dag, from)
            .ok_or_else(|| ServiceError::bad_request(format!("--from \"{from}\": expected a date like 2024-01-31 or an RFC 3339 timestamp")))?;
        let end = runs::parse_instant(&dag, to)
            .ok_or_else(|| ServiceError::bad_request(format!("--to \"{to}\": expected a date like 2024-01-31 or an RFC 3339 timestamp")))?;
        if end < start {
            return Err(ServiceError::bad_request(format!("--to {to} is before --from {from}")));
        }
        let all = timetable::intervals_between(&dag, start, end);
        if all.len() >= timetable::MAX_INTERVALS {
            return Err(ServiceError::bad_request(format!(
                "--from {from} --to {to} holds more than {} intervals of {dag_id}; backfill a narrower range at a time",
                timetable::MAX_INTERVALS
            )));
        }
        // Only past intervals: an interval that has not ended yet is the scheduler's to run.
        let now = Utc::now();
        let local = |t: chrono::DateTime<Utc>| t.with_timezone(&dag.timezone).fixed_offset();
        let mut intervals = Vec::new();
        for interval in all.into_iter().filter(|i| i.end <= now) {
            let (run_id, action, kept_state) = match runs::create_interval_run(store, &dag, version, Trigger::Backfill, interval.start, interval.end)? {
                Some(run) => (run.run_id, BackfillAction::Created, None),
                None => {
                    let run_id = runs::run_id_for(Trigger::Backfill, interval.start);
                    let existing = store.run(dag_id, &run_id)?;
                    let failed = existing.as_ref().is_some_and(|r| r.state == RunState::Failed);
                    let mut cleared = None;
                    let selection = Selection { failed_only: true, ..Selection::default() };
                    if rerun_failed && failed && self.host.while_idle(dag_id, &run_id, &mut || cleared = Some(runs::clear(store, &dag, &run_id, &selection))) {
                        cleared.transpose()?;
                        (run_id, BackfillAction::Rerun, None)
                    } else {
                        (run_id, BackfillAction::Kept, existing.map(|r| r.state))
                    }
                }
            };
            intervals.push(BackfillInterval { run_id, logical_date: local(interval.start), interval_end: local(interval.end), action, kept_state });
        }
        let report = Backfilled { dag_id: dag_id.to_string(), intervals, dag_paused: self.is_paused(dag_id) };
        if !report.queued().is_empty() {
            self.host.runs_queued();
        }
        Ok(report)
    }
}
