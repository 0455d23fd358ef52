//! Data intervals: which runs a scheduled DAG gets, and when (Airflow's cron timetable).
//!
//! The DAG's schedule gives fire times f0 < f1 < f2 ... in its time zone ([`crate::schedule`]
//! handles daylight-saving changes). Consecutive fire times delimit data intervals: the run for
//! [f_i, f_i+1) fires at f_i+1, and its logical date is f_i, the interval's start.
//!
//! - The first interval starts at the first fire time at or after `start_date` (f0).
//! - An interval whose start is after `end_date` is never scheduled; one that starts at or before
//!   it is, even if it ends after it.
//! - With `catchup: true` every complete interval that was missed is due, oldest first; with
//!   `catchup: false` only the latest complete one.
//!
//! Everything here is a pure function of the DAG, the end of the last interval the scheduler
//! scheduled, and the time it passes in: the scheduler keeps that one instant per DAG, and this
//! module never reads a clock. Every loop is bounded, by [`MAX_INTERVALS`] or by the schedule's
//! own end (the `cron` crate stops at the year 2100).

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::dag::Dag;

/// The most intervals one call returns (catchup over a long gap, a backfill over a wide range):
/// a bound so that no call runs for long or holds millions of intervals. The scheduler asks
/// again once it has scheduled them; a backfill that gets this many should say the range is too
/// wide rather than silently stop there.
pub const MAX_INTERVALS: usize = 100_000;

/// A data interval [start, end): the run for it fires at `end`; its logical date is `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Interval {
    /// The interval's start, which is the run's logical date.
    pub start: DateTime<Utc>,
    /// The interval's end (excluded), when the run fires.
    pub end: DateTime<Utc>,
}

impl Interval {
    /// The run's logical date: the interval's start.
    pub fn logical_date(&self) -> DateTime<Utc> {
        self.start
    }
}

/// The first fire time strictly after `t`.
fn fire_after(dag: &Dag, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    dag.schedule.as_ref()?.next_after(t, dag.timezone)
}

/// The first fire time at or after `t`.
fn fire_at_or_after(dag: &Dag, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    fire_after(dag, t - Duration::nanoseconds(1))
}

/// The last fire time at or before `t`.
fn fire_at_or_before(dag: &Dag, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    dag.schedule.as_ref()?.prev_at_or_before(t, dag.timezone)
}

/// f0: where the first interval starts, the first fire time at or after `start_date`. `None` for
/// a DAG without a schedule or a start date (compile requires one with the other).
pub fn first_start(dag: &Dag) -> Option<DateTime<Utc>> {
    fire_at_or_after(dag, dag.start_date?)
}

/// The interval starting at the fire time `start`, unless it starts after `end_date`.
fn interval_from(dag: &Dag, start: DateTime<Utc>) -> Option<Interval> {
    if dag.end_date.is_some_and(|end_date| start > end_date) {
        return None;
    }
    Some(Interval { start, end: fire_after(dag, start)? })
}

/// The next interval to schedule after the last one scheduled (None: the first), or None when
/// the DAG has no schedule or the next interval starts after end_date.
///
/// As in Airflow, `last_scheduled_end` is aligned to the last fire time at or before it (it is
/// one unless the schedule changed between versions), and the interval never starts before f0 (a
/// later `start_date` in a new version skips ahead). The interval returned always ends after
/// `last_scheduled_end`, so a scheduler that records each end makes progress.
pub fn next_interval(dag: &Dag, last_scheduled_end: Option<DateTime<Utc>>) -> Option<Interval> {
    let earliest = first_start(dag)?;
    let start = match last_scheduled_end {
        None => earliest,
        Some(end) => {
            let aligned = fire_at_or_before(dag, end).or_else(|| fire_at_or_after(dag, end))?;
            aligned.max(earliest)
        }
    };
    interval_from(dag, start)
}

/// The latest complete interval (end <= now) the DAG's dates allow.
pub fn latest_complete(dag: &Dag, now: DateTime<Utc>) -> Option<Interval> {
    let earliest = first_start(dag)?;
    let end = fire_at_or_before(dag, now)?;
    let mut start = fire_at_or_before(dag, end - Duration::nanoseconds(1))?;
    if let Some(end_date) = dag.end_date {
        if start > end_date {
            start = fire_at_or_before(dag, end_date)?;
        }
    }
    if start < earliest {
        return None;
    }
    interval_from(dag, start).filter(|i| i.end <= now)
}

/// Complete intervals (end <= now) not yet scheduled, oldest first; with catchup false only the
/// latest complete one (and none if it was already scheduled).
///
/// With catchup, at most [`MAX_INTERVALS`] (the oldest); the scheduler gets the rest when it asks
/// again with the new `last_scheduled_end`.
pub fn due_intervals(dag: &Dag, last_scheduled_end: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Vec<Interval> {
    if !dag.catchup {
        return latest_complete(dag, now)
            .filter(|i| last_scheduled_end.is_none_or(|last| i.end > last))
            .into_iter()
            .collect();
    }
    let mut due = Vec::new();
    // After the first, each interval starts where the one before ended.
    let mut next = next_interval(dag, last_scheduled_end);
    while let Some(interval) = next.filter(|i| i.end <= now && due.len() < MAX_INTERVALS) {
        due.push(interval);
        next = interval_from(dag, interval.end);
    }
    due
}

/// When the scheduler must wake next for this DAG: the end of the next interval after
/// `last_scheduled_end` (None when nothing is left).
///
/// It may be in the past (the scheduler was down, or never ran for this DAG): then
/// [`due_intervals`] has work at once.
pub fn next_wakeup(dag: &Dag, last_scheduled_end: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    next_interval(dag, last_scheduled_end).map(|i| i.end)
}

/// Intervals whose logical date lies in [from, to] (inclusive), for `flowctl backfill`.
///
/// Only intervals the DAG's own dates allow (starting at or after f0, not after `end_date`),
/// oldest first, at most [`MAX_INTERVALS`]. Intervals that have not ended yet are included: the
/// caller decides whether to refuse them.
pub fn intervals_between(dag: &Dag, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Interval> {
    let mut intervals = Vec::new();
    let Some(earliest) = first_start(dag) else { return intervals };
    let mut start = fire_at_or_after(dag, from.max(earliest));
    while let Some(s) = start.filter(|s| *s <= to && intervals.len() < MAX_INTERVALS) {
        let Some(interval) = interval_from(dag, s) else { break };
        intervals.push(interval);
        start = Some(interval.end);
    }
    intervals
}

/// The next `n` fire times strictly after `after`, each with its interval, for `flowctl next`.
///
/// These are the runs the scheduler would create: the first fires at f1 (so a `start_date` in
/// the future shows its first run), and none starts after `end_date`. At most
/// [`MAX_INTERVALS`].
pub fn upcoming(dag: &Dag, after: DateTime<Utc>, n: usize) -> Vec<(DateTime<Utc>, Interval)> {
    let mut runs = Vec::new();
    let Some(earliest) = first_start(dag) else { return runs };
    let Some(first_end) = fire_after(dag, earliest) else { return runs };
    // The interval that ends at the first fire time after `after` starts at the last one at or
    // before it.
    let mut start = if after < first_end { Some(earliest) } else { fire_at_or_before(dag, after) };
    while let Some(s) = start.filter(|_| runs.len() < n.min(MAX_INTERVALS)) {
        let Some(interval) = interval_from(dag, s) else { break };
        runs.push((interval.end, interval));
        start = Some(interval.end);
    }
    runs
}
