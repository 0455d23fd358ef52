//! `flowctl next DAG|FILE [-n 10] [--after TIMESTAMP]`: when a scheduled DAG runs next, and the
//! data interval each of those runs covers, so a schedule (and its daylight-saving behaviour) can
//! be checked before it fires.
//!
//! The text comes from [`next_text`], a pure function of the DAG, which the server's API reuses;
//! the command only finds the DAG: an applied one from the store, or a file compiled on the spot
//! (and not stored).

use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use super::table::Table;
use super::{exit, CommandError};
use crate::compile::compile_paths;
use crate::dag::Dag;
use crate::operator::Registry;
use crate::timetable::{first_start, upcoming};

/// An instant as `flowctl next` prints it: RFC 3339 with the DAG's UTC offset at that instant.
fn local(dag: &Dag, t: DateTime<Utc>) -> String {
    t.with_timezone(&dag.timezone).to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// The next `n` fire times of `dag` strictly after `after`, each with its data interval, as
/// `flowctl next` prints them. A DAG without a schedule gets a one-line explanation.
pub fn next_text(dag: &Dag, n: usize, after: DateTime<Utc>) -> String {
    let Some(schedule) = &dag.schedule else {
        return format!("DAG {} has no schedule: it runs only when triggered\n", dag.id);
    };
    let mut text = format!(
        "DAG {}: \"{}\" in {}; a run's logical date is the start of its data interval\n",
        dag.id, schedule.expression, dag.timezone
    );
    let runs = upcoming(dag, after, n);
    if !runs.is_empty() {
        let mut table = Table::new(&["FIRES AT", "DATA INTERVAL"]);
        for (fire, interval) in &runs {
            table.row(vec![local(dag, *fire), format!("[{}, {})", local(dag, interval.start), local(dag, interval.end))]);
        }
        text.push_str(&table.render());
    }
    if runs.len() < n {
        let why = match dag.end_date {
            Some(end_date) => format!("end_date is {}", local(dag, end_date)),
            None if first_start(dag).is_none() => "its schedule never fires after start_date".to_string(),
            None => "its schedule fires no more (fire times stop in the year 2100)".to_string(),
        };
        let tail = if runs.is_empty() { format!("no runs after {}", local(dag, after)) } else { "no more runs".to_string() };
        text.push_str(&format!("{tail}: {why}\n"));
    }
    text
}

/// `--after`: an RFC 3339 instant, or a date (midnight in the DAG's time zone).
pub fn parse_after(dag: &Dag, text: &str) -> Result<DateTime<Utc>, CommandError> {
    super::run::parse_instant(dag, text).ok_or_else(|| {
        CommandError::usage(format!(
            "--after \"{text}\": expected an RFC 3339 timestamp like 2024-03-10T06:00:00Z or a date like 2024-03-10 (midnight in {})",
            dag.timezone
        ))
    })
}

/// What `flowctl next` prints for `dag`, after checking that it has a schedule and reading
/// `--after` (default: `now`). Shared by the command and the server.
pub fn next_report(dag: &Dag, n: usize, after: Option<&str>, now: DateTime<Utc>) -> Result<String, CommandError> {
    if dag.schedule.is_none() {
        return Err(CommandError::usage(format!(
            "DAG \"{}\" has no schedule, so it has no fire times; add `schedule:` (e.g. '@daily') to {}, or start runs with `flowctl trigger {} --wait`",
            dag.id,
            dag.file.display(),
            dag.id
        )));
    }
    let after = match after {
        Some(text) => parse_after(dag, text)?,
        None => now,
    };
    Ok(next_text(dag, n, after))
}

/// Runs `flowctl next`: `target` is an applied DAG's id or a DAG file (compiled, not stored).
pub fn next(home: Option<&Path>, target: &str, n: usize, after: Option<&str>, registry: &Registry) -> Result<u8, CommandError> {
    let path = Path::new(target);
    let dag = if path.is_file() || target.ends_with(".yaml") || target.ends_with(".yml") {
        let compiled = compile_paths(&[path.to_path_buf()], registry).map_err(CommandError::Invalid)?;
        compiled.dags.into_iter().next().ok_or_else(|| CommandError::usage(format!("{target} holds no DAG")))?
    } else {
        // An applied DAG: through the server when one holds the home.
        let request = super::Request::Next { dag: target.to_string(), n, after: after.map(str::to_string) };
        return super::dispatch(home, &request, false, registry);
    };
    let text = next_report(&dag, n, after, Utc::now())?;
    out!("{text}");
    Ok(exit::OK)
}
