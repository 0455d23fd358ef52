//! `flowctl status [DAG [RUN]] [--output json]`: the DAGs, a DAG's runs, or a run's tasks.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::inspect::OutputFormat;
use super::run::{load_applied, summary};
use super::table::{duration, Table};
use super::{exit, open_home, CommandError};
use crate::diagnostic::suggestion;
use crate::operator::Registry;
use crate::state::{DagRun, Store};

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

/// Runs `flowctl status`.
pub fn status(
    home: Option<&Path>,
    dag_id: Option<&str>,
    run_id: Option<&str>,
    format: OutputFormat,
    registry: &Registry,
) -> Result<u8, CommandError> {
    let home = open_home(home, "flowctl status")?;
    let store = home.store();
    let text = match (dag_id, run_id) {
        (None, _) => dags(store, format, registry)?,
        (Some(dag_id), None) => {
            known_dag(store, dag_id)?;
            runs(store, dag_id, format)?
        }
        (Some(dag_id), Some(run_id)) => {
            known_dag(store, dag_id)?;
            tasks(store, dag_id, run_id, format, registry)?
        }
    };
    out!("{text}");
    Ok(exit::OK)
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

fn runs(store: &Store, dag_id: &str, format: OutputFormat) -> Result<String, CommandError> {
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
            run.note.clone().unwrap_or_default(),
        ]);
    }
    Ok(table.render())
}

fn tasks(store: &Store, dag_id: &str, run_id: &str, format: OutputFormat, registry: &Registry) -> Result<String, CommandError> {
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
    if format == OutputFormat::Json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&json!({"run": run, "tasks": instances})).unwrap_or_default()));
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
    let note = run.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
    Ok(format!("run {run_id} of {dag_id}: {} in {}{note}\n{body}", run.state.name(), took(&run)))
}
