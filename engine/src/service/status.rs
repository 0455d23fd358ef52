//! What a home holds: its DAGs, a DAG's runs, a run's task instances with their alert deliveries.

use std::collections::BTreeMap;

use super::dags::{dag_record, load_applied, load_version};
use super::Service;
use crate::diagnostic::suggestion;
use crate::protocol::{Activity, DagList, DagSummary, LastRun, RunDetail, RunList, RunSummary, ServiceError, TaskView};
use crate::state::{AlertStore, DagRun};

impl Service<'_> {
    /// Whether anybody executes `run`.
    fn activity(&self, run: &DagRun) -> Activity {
        if run.state.is_terminal() || self.host.is_active(&run.dag_id, &run.run_id) {
            Activity::Settled
        } else if self.host.executes_runs() {
            Activity::WaitingToStart
        } else {
            Activity::NotRunning
        }
    }

    /// Every applied DAG with its schedule and its runs' states.
    pub fn dags(&self) -> Result<DagList, ServiceError> {
        let store = self.store();
        let mut dags = Vec::new();
        for record in store.dags()? {
            let schedule = load_applied(store, &record.dag_id, self.registry())
                .ok()
                .and_then(|(dag, _)| dag.schedule.as_ref().map(|s| s.expression.clone()));
            let runs = store.runs(&record.dag_id)?;
            let mut runs_by_state: BTreeMap<String, usize> = BTreeMap::new();
            for run in &runs {
                *runs_by_state.entry(run.state.name().to_string()).or_default() += 1;
            }
            let last_run = runs.iter().max_by_key(|r| r.created_at).map(|r| LastRun { run_id: r.run_id.clone(), state: r.state });
            dags.push(DagSummary { dag_id: record.dag_id, version: record.latest_version, paused: record.paused, schedule, last_run, runs_by_state });
        }
        Ok(DagList { dags })
    }

    /// A DAG's runs.
    pub fn runs(&self, dag_id: &str) -> Result<RunList, ServiceError> {
        dag_record(self.store(), dag_id)?;
        let runs = self.store().runs(dag_id)?.into_iter().map(|run| RunSummary { activity: self.activity(&run), run }).collect();
        Ok(RunList { dag_id: dag_id.to_string(), runs })
    }

    /// A run with every task instance and the alert deliveries.
    pub fn run(&self, dag_id: &str, run_id: &str) -> Result<RunDetail, ServiceError> {
        let store = self.store();
        dag_record(store, dag_id)?;
        let Some(run) = store.run(dag_id, run_id)? else {
            let known: Vec<String> = store.runs(dag_id)?.into_iter().map(|r| r.run_id).collect();
            return Err(ServiceError::not_found(format!(
                "DAG \"{dag_id}\" has no run \"{run_id}\"{}; `flowctl status {dag_id}` lists its runs",
                suggestion(run_id, known.iter().map(String::as_str))
            )));
        };
        let stored = store.task_instances(dag_id, run_id)?;
        // In the order of the DAG version the run used, with the tasks not started yet; if that
        // version no longer compiles (an operator left this build), the stored records alone.
        let (instances, dag_compiled) = match load_version(store, dag_id, run.dag_version, self.registry()) {
            Ok(dag) => (crate::runs::all_instances(&dag, stored), true),
            Err(_) => (stored, false),
        };
        let mut deliveries = AlertStore::open(store)?.for_run(dag_id, run_id)?;
        let tasks = instances
            .into_iter()
            .map(|instance| {
                let (mine, rest): (Vec<_>, Vec<_>) =
                    deliveries.drain(..).partition(|d| d.task_id.as_deref() == Some(instance.task_id.as_str()));
                deliveries = rest;
                TaskView { instance, alerts: mine }
            })
            .collect();
        let alerts = deliveries.into_iter().filter(|d| d.task_id.is_none()).collect();
        Ok(RunDetail { activity: self.activity(&run), run, tasks, dag_compiled, alerts })
    }
}
