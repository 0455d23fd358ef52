//! When a scheduled DAG runs next, and the data interval each of those runs covers, so a schedule
//! (and its daylight-saving behaviour) can be checked before it fires.

use chrono::{DateTime, Utc};

use super::Service;
use crate::dag::Dag;
use crate::protocol::{Fire, FiresEnd, NextFires, ServiceError};
use crate::timetable::{first_start, upcoming};

/// The next `n` fire times of `dag` strictly after `after` (a date or RFC 3339; default `now`),
/// each with its data interval. A DAG without a schedule has none: that is an error, which says
/// how to add one.
pub fn next_fires(dag: &Dag, n: usize, after: Option<&str>, now: DateTime<Utc>) -> Result<NextFires, ServiceError> {
    let Some(schedule) = &dag.schedule else {
        return Err(ServiceError::bad_request(format!(
            "DAG \"{}\" has no schedule, so it has no fire times; add `schedule:` (e.g. '@daily') to {}, or start runs with `flowctl trigger {} --wait`",
            dag.id,
            dag.file.display(),
            dag.id
        )));
    };
    let after = match after {
        Some(text) => crate::runs::parse_instant(dag, text).ok_or_else(|| {
            ServiceError::bad_request(format!(
                "--after \"{text}\": expected an RFC 3339 timestamp like 2024-03-10T06:00:00Z or a date like 2024-03-10 (midnight in {})",
                dag.timezone
            ))
        })?,
        None => now,
    };
    let local = |t: DateTime<Utc>| t.with_timezone(&dag.timezone).fixed_offset();
    let fires: Vec<Fire> = upcoming(dag, after, n)
        .into_iter()
        .map(|(at, interval)| Fire { at: local(at), interval_start: local(interval.start), interval_end: local(interval.end) })
        .collect();
    let end = (fires.len() < n).then(|| match dag.end_date {
        Some(_) => FiresEnd::EndDate,
        None if first_start(dag).is_none() => FiresEnd::NeverAfterStart,
        None => FiresEnd::Exhausted,
    });
    Ok(NextFires {
        dag_id: dag.id.clone(),
        schedule: schedule.expression.clone(),
        timezone: dag.timezone.to_string(),
        after: local(after),
        asked: n,
        fires,
        end,
        end_date: dag.end_date.map(local),
    })
}

impl Service<'_> {
    /// The next fire times of an applied DAG's latest version.
    pub fn next(&self, dag_id: &str, n: usize, after: Option<&str>) -> Result<NextFires, ServiceError> {
        let (dag, _) = self.applied(dag_id)?;
        next_fires(&dag, n, after, Utc::now())
    }
}
