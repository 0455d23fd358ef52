//! `flowctl status [DAG [RUN]] [--output json]`: the DAGs, a DAG's runs, or a run's tasks.

use std::collections::BTreeMap;

use serde_json::json;

use super::inspect::OutputFormat;
use super::run::{load_applied, summary};
use super::table::{duration, Table};
use super::CommandError;
use crate::diagnostic::suggestion;
use crate::operator::Registry;
use crate::state::{AlertDelivery, AlertStore, DagRun, DeliveryState, Store};

fn time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

fn took(run: &DagRun) -> String {
    match (run.start, run.end) {
        (Some(s), Some(e)) => duration((e - s).to_std().unwrap_or_default()),
        (Some(s), None) => format!("{} so far", duration((chrono::Utc::now() - s).to_std().unwrap_or_default())),
        _ => "-".into(),
    }
}

fn known_dag(store: &Store, dag_id: &str) -> Result<(), CommandError> {
    if store.dag(dag_id)?.is_none() {
        let known: Vec<String> = store.dags()?.into_iter().map(|r| r.dag_id).collect();
        return Err(CommandError::usage(format!(
            "no DAG \"{dag_id}\" is applied to this home{}; `flowctl status` lists them",
            suggestion(dag_id, known.iter().map(String::as_str))
        )));
    }
    Ok(())
}

/// What `flowctl status` prints. `idle` gives the note for a run that has not ended and that no
/// process executes now (waiting for a slot, or left by a stopped process).
pub fn status_text(
    store: &Store,
    dag_id: Option<&str>,
    run_id: Option<&str>,
    format: OutputFormat,
    registry: &Registry,
    idle: &dyn Fn(&DagRun) -> Option<&'static str>,
) -> Result<String, CommandError> {
    match (dag_id, run_id) {
        (None, _) => dags(store, format, registry),
        (Some(dag_id), None) => {
            known_dag(store, dag_id)?;
            runs(store, dag_id, format, idle)
        }
        (Some(dag_id), Some(run_id)) => {
            known_dag(store, dag_id)?;
            tasks(store, dag_id, run_id, format, registry, idle)
        }
    }
}


fn dags(store: &Store, format: OutputFormat, registry: &Registry) -> Result<String, CommandError> {
    let mut rows = Vec::new();
    for record in store.dags()? {
        let schedule = load_applied(store, &record.dag_id, registry)
            .ok()
            .and_then(|(dag, _)| dag.schedule.as_ref().map(|s| s.expression.clone()));
        let runs = store.runs(&record.dag_id)?;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for run in &runs {
            *counts.entry(run.state.name()).or_default() += 1;
        }
        let last = runs.iter().max_by_key(|r| r.created_at);
        rows.push((record, schedule, last.cloned(), counts.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<BTreeMap<_, _>>()));
    }
    if format == OutputFormat::Json {
        let list: Vec<_> = rows
            .iter()
            .map(|(record, schedule, last, counts)| {
                json!({
                    "dag_id": record.dag_id, "version": record.latest_version, "paused": record.paused,
                    "schedule": schedule, "last_run": last.as_ref().map(|r| json!({"run_id": r.run_id, "state": r.state.name()})),
                    "runs_by_state": counts,
                })
            })
            .collect();
        return Ok(format!("{}\n", serde_json::to_string_pretty(&list).unwrap_or_default()));
    }
    if rows.is_empty() {
        return Ok("no DAGs applied yet; `flowctl apply dags/` stores them\n".into());
    }
    let mut table = Table::new(&["DAG", "SCHEDULE", "PAUSED", "LAST RUN", "STATE", "RUNS"]);
    for (record, schedule, last, counts) in rows {
        let counts = counts.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ");
        table.row(vec![
            record.dag_id,
            schedule.unwrap_or_else(|| "manual".into()),
            if record.paused { "yes".into() } else { "no".into() },
            last.as_ref().map_or("-".into(), |r| r.run_id.clone()),
            last.as_ref().map_or("-".into(), |r| r.state.name().into()),
            if counts.is_empty() { "-".into() } else { counts },
        ]);
    }
    Ok(table.render())
}

fn runs(store: &Store, dag_id: &str, format: OutputFormat, idle: &dyn Fn(&DagRun) -> Option<&'static str>) -> Result<String, CommandError> {
    let runs = store.runs(dag_id)?;
    if format == OutputFormat::Json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&runs).unwrap_or_default()));
    }
    if runs.is_empty() {
        return Ok(format!("DAG {dag_id} has no runs yet; `flowctl run {dag_id}` starts one\n"));
    }
    let mut table = Table::new(&["RUN", "LOGICAL DATE", "TRIGGER", "STATE", "STARTED", "DURATION", "NOTE"]);
    for run in &runs {
        table.row(vec![
            run.run_id.clone(),
            time(Some(run.logical_date)),
            run.trigger.prefix().into(),
            run.state.name().into(),
            time(run.start),
            took(run),
            run.note.clone().or_else(|| idle(run).map(str::to_string)).unwrap_or_default(),
        ]);
    }
    Ok(table.render())
}

fn tasks(
    store: &Store,
    dag_id: &str,
    run_id: &str,
    format: OutputFormat,
    registry: &Registry,
    idle: &dyn Fn(&DagRun) -> Option<&'static str>,
) -> Result<String, CommandError> {
    let Some(run) = store.run(dag_id, run_id)? else {
        let known: Vec<String> = store.runs(dag_id)?.into_iter().map(|r| r.run_id).collect();
        return Err(CommandError::usage(format!(
            "DAG \"{dag_id}\" has no run \"{run_id}\"{}; `flowctl status {dag_id}` lists its runs",
            suggestion(run_id, known.iter().map(String::as_str))
        )));
    };
    let stored = store.task_instances(dag_id, run_id)?;
    // Tasks in the order of the DAG version the run used, with those not started yet; if that
    // version no longer compiles (an operator left this build), the stored records alone.
    let dag = super::run::load_version(store, dag_id, run.dag_version, registry).ok();
    let instances = match &dag {
        Some(dag) => super::run::all_instances(dag, stored),
        None => stored,
    };
    let deliveries = AlertStore::open(store)?.for_run(dag_id, run_id)?;
    if format == OutputFormat::Json {
        let tasks = with_alerts(&instances, &deliveries);
        let run_alerts: Vec<&AlertDelivery> = deliveries.iter().filter(|d| d.task_id.is_none()).collect();
        let shown = json!({"run": run, "tasks": tasks, "alerts": run_alerts});
        return Ok(format!("{}\n", serde_json::to_string_pretty(&shown).unwrap_or_default()));
    }
    let body = match &dag {
        Some(dag) => summary(dag, &instances),
        None => {
            let mut table = Table::new(&["TASK", "STATE", "TRIES", "ERROR"]);
            for ti in &instances {
                table.row(vec![
                    ti.task_id.clone(),
                    ti.state.name().into(),
                    format!("{}/{}", ti.try_number, ti.max_tries),
                    ti.error.clone().unwrap_or_default(),
                ]);
            }
            table.render()
        }
    };
    let note = run.note.as_deref().or_else(|| idle(&run)).map(|n| format!(" ({n})")).unwrap_or_default();
    let undelivered = undelivered(&deliveries);
    let took = match took(&run).as_str() {
        "-" => String::new(),
        took => format!(" in {took}"),
    };
    Ok(format!("run {run_id} of {dag_id}: {}{took}{note}\n{body}{undelivered}", run.state.name()))
}

/// Each task instance as JSON with its alert deliveries under `alerts`.
fn with_alerts(instances: &[crate::state::TaskInstance], deliveries: &[AlertDelivery]) -> Vec<serde_json::Value> {
    instances
        .iter()
        .map(|ti| {
            let mut value = serde_json::to_value(ti).unwrap_or_default();
            let mine: Vec<&AlertDelivery> = deliveries.iter().filter(|d| d.task_id.as_deref() == Some(ti.task_id.as_str())).collect();
            if let Some(object) = value.as_object_mut() {
                object.insert("alerts".into(), json!(mine));
            }
            value
        })
        .collect()
}

/// Lines under the task table for alerts that failed or are still being sent.
fn undelivered(deliveries: &[AlertDelivery]) -> String {
    let mut text = String::new();
    for d in deliveries.iter().filter(|d| d.state != DeliveryState::Delivered) {
        let tries = match d.tries {
            0 => String::new(),
            1 => " after 1 try".to_string(),
            n => format!(" after {n} tries"),
        };
        let error = d.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        let what = match d.state {
            DeliveryState::Pending => "not delivered yet",
            _ => "not delivered",
        };
        text.push_str(&format!("alert {what}: {} for {}{tries}{error}\n", d.channel.describe(), d.describe_event()));
    }
    text
}
