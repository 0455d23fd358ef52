//! Schedules: the 5-field cron expressions and presets DAG files use, evaluated in a time zone.
//!
//! DAG authors write classic 5-field cron (`minute hour day-of-month month day-of-week`, Sunday is
//! 0 or 7) or a preset. The `cron` crate evaluates 6/7-field expressions with Sunday as 1 and ANDs
//! day-of-month with day-of-week, where Vixie cron ORs them when both are restricted. So this module
//! parses the 5 fields itself (which also gives precise error messages), expands every field to an
//! explicit list, and hands the `cron` crate expressions it cannot misread: one, or two whose union
//! is the OR rule.
//!
//! Evaluation follows Vixie cron across daylight-saving changes, which the `cron` crate's own time
//! zone handling does not: the expression is matched against naive wall-clock times (the `cron`
//! crate run in UTC, which has no changes), and each matching wall-clock time is then placed in the
//! DAG's time zone:
//!
//! - a time that exists once is that instant;
//! - a time that happens twice (autumn) fires once, at the first occurrence, for a *fixed-time*
//!   job, and at both occurrences for a job that *follows the clock*;
//! - a time that does not exist (spring) fires at the first instant after the gap (the change
//!   itself, e.g. 03:00 local) for a fixed-time job, and not at all for one that follows the clock.
//!
//! As in Vixie cron, a job follows the clock when its minute or hour field starts with `*`
//! (`0 * * * *`, `*/15 * * * *`, `@hourly`); every other job is fixed-time (`30 2 * * *`,
//! `@daily`). The fire times are a set of instants: several wall-clock times that land on the same
//! instant (`0,30 2 * * *` on the spring day) fire once.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// The presets a `schedule:` may name, with the cron expression each stands for.
pub const PRESETS: &[(&str, &str)] = &[
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@quarterly", "0 0 1 */3 *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
];

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// What the DAG file said, e.g. `@daily` or `0 6 1 */3 *`.
    pub expression: String,
    /// One expression, or two whose union is the schedule (day-of-month OR day-of-week).
    parts: Vec<cron::Schedule>,
    /// The minute or hour field starts with `*`: across daylight-saving changes the job follows
    /// the clock (Vixie cron's "wildcard" jobs) instead of running once per wall-clock time.
    follows_clock: bool,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression
    }
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Field = Field { name: "minute", min: 0, max: 59, names: &[] };
const HOUR: Field = Field { name: "hour", min: 0, max: 23, names: &[] };
const DAY_OF_MONTH: Field = Field { name: "day of month", min: 1, max: 31, names: &[] };
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
const DAY_OF_WEEK: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// A field's values, and whether it was `*` (unrestricted), which matters for the day rule.
struct Expanded {
    values: BTreeSet<u32>,
    star: bool,
}

impl Field {
    fn value(&self, text: &str, expr: &str) -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        if let Some(index) = self.names.iter().position(|n| *n == lower) {
            // Months are named from 1, days of the week from 0 (Sunday).
            return Ok(index as u32 + if self.min == 1 { 1 } else { 0 });
        }
        let value: u32 = text.parse().map_err(|_| {
            format!("invalid cron expression \"{expr}\": {} \"{text}\" is not a number", self.name)
        })?;
        if value < self.min || value > self.max {
            return Err(format!(
                "invalid cron expression \"{expr}\": {} {value} is out of range {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(value)
    }

    fn expand(&self, text: &str, expr: &str) -> Result<Expanded, String> {
        let mut values = BTreeSet::new();
        for item in text.split(',') {
            let (range, step) = match item.split_once('/') {
                Some((range, step)) => {
                    let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("invalid cron expression \"{expr}\": {} step \"{step}\" must be a positive number", self.name)
                    })?;
                    (range, step)
                }
                None => (item, 1),
            };
            let (start, end) = if range == "*" {
                (self.min, if self.name == "day of week" { 6 } else { self.max })
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a, expr)?, self.value(b, expr)?);
                if a > b {
                    return Err(format!(
                        "invalid cron expression \"{expr}\": {} range {range} runs backwards",
                        self.name
                    ));
                }
                (a, b)
            } else if item.contains('/') {
                // `5/15` means from 5 to the end, every 15.
                (self.value(range, expr)?, self.max)
            } else {
                let v = self.value(range, expr)?;
                (v, v)
            };
            if range.is_empty() {
                return Err(format!("invalid cron expression \"{expr}\": empty {} field item", self.name));
            }
            values.extend((start..=end).step_by(step as usize));
        }
        Ok(Expanded { values, star: text == "*" || text == "*/1" })
    }
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(expression: &str) -> Result<Self, String> {
        let expr = expression.trim();
        let cron_text = if expr.starts_with('@') {
            PRESETS.iter().find(|(name, _)| *name == expr).map(|(_, cron)| *cron).ok_or_else(|| {
                let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown schedule preset \"{expr}\"{}",
                    crate::diagnostic::suggestion(expr, names.iter().copied())
                )
            })?
        } else {
            expr
        };
        let fields: Vec<&str> = cron_text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "invalid cron expression \"{expr}\": expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        }
        let minute = MINUTE.expand(fields[0], expr)?;
        let hour = HOUR.expand(fields[1], expr)?;
        let dom = DAY_OF_MONTH.expand(fields[2], expr)?;
        let month = MONTH.expand(fields[3], expr)?;
        let dow = DAY_OF_WEEK.expand(fields[4], expr)?;

        let list = |e: &Expanded| {
            if e.star { "*".to_string() } else { e.values.iter().map(u32::to_string).collect::<Vec<_>>().join(",") }
        };
        // The cron crate numbers days of the week 1 (Sunday) to 7 (Saturday); 5-field cron uses
        // 0 or 7 for Sunday.
        let dow_list = if dow.star {
            "*".to_string()
        } else {
            let days: BTreeSet<u32> = dow.values.iter().map(|d| d % 7 + 1).collect();
            days.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        };
        let (min_s, hour_s, dom_s, month_s) = (list(&minute), list(&hour), list(&dom), list(&month));
        let texts = if !dom.star && !dow.star {
            vec![
                format!("0 {min_s} {hour_s} {dom_s} {month_s} *"),
                format!("0 {min_s} {hour_s} * {month_s} {dow_list}"),
            ]
        } else {
            vec![format!("0 {min_s} {hour_s} {dom_s} {month_s} {dow_list}")]
        };
        let parts = texts
            .iter()
            .map(|t| cron::Schedule::from_str(t).map_err(|e| format!("invalid cron expression \"{expr}\": {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        // A schedule that can never fire (e.g. 31 February) is a mistake, not a DAG that never runs.
        let probe = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().unwrap_or_default();
        if parts.iter().all(|p| p.after(&probe).next().is_none()) {
            return Err(format!("cron expression \"{expr}\" never matches a date"));
        }
        // Vixie cron: a job whose minute or hour field starts with `*` is a "wildcard" job.
        let follows_clock = fields[0].starts_with('*') || fields[1].starts_with('*');
        Ok(Schedule { expression: expression.to_string(), parts, follows_clock })
    }
}

/// The most wall-clock matches one search looks at. A search needs one or two in the normal case,
/// and at most a few thousand across the longest daylight-saving change with an every-minute
/// schedule; the bound only keeps a pathological time zone from looping for long.
const MAX_STEPS: usize = 20_000;

/// How far any UTC offset is from UTC, and then some: an instant whose local time is `n` lies
/// within this of `n` read as UTC.
const OFFSET_BOUND: i64 = 17 * 3600;

/// The instants a matching wall-clock time stands for: the first (or only) one, and for a job
/// that follows the clock, the second occurrence of a repeated time.
#[derive(Debug, Clone, Copy)]
struct Placed {
    first: Option<DateTime<Utc>>,
    second: Option<DateTime<Utc>>,
}

impl Placed {
    /// The latest instant it stands for.
    fn last(&self) -> Option<DateTime<Utc>> {
        self.second.or(self.first)
    }
}

impl Schedule {
    /// Whether the job follows the clock across daylight-saving changes (its minute or hour field
    /// starts with `*`) rather than running once per wall-clock time.
    pub fn follows_clock(&self) -> bool {
        self.follows_clock
    }

    /// The first fire time strictly after `after`, evaluated in `tz` (see the module's rules for
    /// daylight-saving changes). `None` past the year 2100, where the `cron` crate stops.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&tz).naive_local();
        // A wall-clock time earlier than `after`'s can fire later only inside a repeated hour:
        // when `after` falls in one, start from its beginning.
        let from = match tz.from_local_datetime(&local) {
            LocalResult::Ambiguous(a, b) => local - (b.max(a) - b.min(a)),
            _ => local,
        };
        let mut cursor = whole_seconds(from) - Duration::seconds(1);
        let mut best: Option<DateTime<Utc>> = None;
        for _ in 0..MAX_STEPS {
            let Some(naive) = self.naive_after(cursor) else { break };
            let placed = self.place(naive, tz);
            for t in [placed.first, placed.second].into_iter().flatten() {
                if t > after && best.is_none_or(|b| t < b) {
                    best = Some(t);
                }
            }
            // Later wall-clock times never fire before this one's first instant.
            if placed.first.is_some_and(|t| t > after) {
                break;
            }
            cursor = naive;
        }
        best
    }

    /// The latest fire time at or before `at`, evaluated in `tz`. `None` before 1970, where the
    /// `cron` crate stops.
    pub fn prev_at_or_before(&self, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&tz).naive_local();
        // The mirror image of `next_after`: inside a repeated hour, a later wall-clock time may
        // have fired earlier, at its first occurrence.
        let to = match tz.from_local_datetime(&local) {
            LocalResult::Ambiguous(a, b) => local + (b.max(a) - b.min(a)),
            _ => local,
        };
        let mut cursor = whole_seconds(to) + Duration::seconds(1);
        let mut best: Option<DateTime<Utc>> = None;
        for _ in 0..MAX_STEPS {
            let Some(naive) = self.naive_before(cursor) else { break };
            let placed = self.place(naive, tz);
            for t in [placed.first, placed.second].into_iter().flatten() {
                if t <= at && best.is_none_or(|b| t > b) {
                    best = Some(t);
                }
            }
            // Earlier wall-clock times never fire after this one's last instant.
            if placed.last().is_some_and(|t| t <= at) {
                break;
            }
            cursor = naive;
        }
        best
    }

    /// Whether `at` is one of the fire times.
    pub fn fires_at(&self, at: DateTime<Utc>, tz: Tz) -> bool {
        self.next_after(at - Duration::nanoseconds(1), tz) == Some(at)
    }

    /// The first matching wall-clock time strictly after `naive`.
    fn naive_after(&self, naive: NaiveDateTime) -> Option<NaiveDateTime> {
        let as_utc = naive.and_utc();
        self.parts.iter().filter_map(|p| p.after(&as_utc).next()).min().map(|t| t.naive_utc())
    }

    /// The last matching wall-clock time strictly before `naive`.
    fn naive_before(&self, naive: NaiveDateTime) -> Option<NaiveDateTime> {
        let as_utc = naive.and_utc();
        self.parts.iter().filter_map(|p| p.after(&as_utc).next_back()).max().map(|t| t.naive_utc())
    }

    /// The instants a matching wall-clock time fires at in `tz`.
    fn place(&self, naive: NaiveDateTime, tz: Tz) -> Placed {
        let utc = |t: DateTime<Tz>| t.with_timezone(&Utc);
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => Placed { first: Some(utc(t)), second: None },
            LocalResult::Ambiguous(a, b) => {
                let (first, second) = (utc(a.min(b)), utc(a.max(b)));
                Placed { first: Some(first), second: self.follows_clock.then_some(second) }
            }
            LocalResult::None if self.follows_clock => Placed { first: None, second: None },
            LocalResult::None => Placed { first: gap_end(naive, tz), second: None },
        }
    }
}

/// `naive` without its fraction of a second.
fn whole_seconds(naive: NaiveDateTime) -> NaiveDateTime {
    naive.with_nanosecond(0).unwrap_or(naive)
}

/// The first instant after the gap that `naive` falls in (a spring-forward change): the instant
/// of the change, whose local time is the end of the gap. Found by bisection on whole seconds
/// between two instants whose local times lie either side of `naive`.
fn gap_end(naive: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    let target = whole_seconds(naive);
    let local_at = |secs: i64| DateTime::from_timestamp(secs, 0).map(|t| t.with_timezone(&tz).naive_local());
    let centre = target.and_utc().timestamp();
    let (mut lo, mut hi) = (centre - OFFSET_BOUND, centre + OFFSET_BOUND);
    // Invariant: the local time at `lo` is before `naive`, the one at `hi` is not.
    if local_at(lo)? >= target || local_at(hi)? < target {
        return None;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local_at(mid)? >= target {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn sunday_is_zero_or_seven() {
        for expr in ["0 0 * * 0", "0 0 * * 7", "0 0 * * sun"] {
            let s: Schedule = expr.parse().unwrap();
            // 2024-01-03 is a Wednesday; the next Sunday is the 7th.
            assert_eq!(s.next_after(at("2024-01-03T00:00:00Z"), Tz::UTC), Some(at("2024-01-07T00:00:00Z")), "{expr}");
        }
    }

    #[test]
    fn weekday_range_means_monday_to_friday() {
        let s: Schedule = "30 6 * * 1-5".parse().unwrap();
        // Saturday 2024-01-06 -> Monday 2024-01-08.
        assert_eq!(s.next_after(at("2024-01-06T00:00:00Z"), Tz::UTC), Some(at("2024-01-08T06:30:00Z")));
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // Vixie cron: the 15th OR any Monday.
        let s: Schedule = "0 0 15 * 1".parse().unwrap();
        assert_eq!(s.next_after(at("2024-01-09T00:00:00Z"), Tz::UTC), Some(at("2024-01-15T00:00:00Z")));
        assert_eq!(s.next_after(at("2024-01-15T00:00:00Z"), Tz::UTC), Some(at("2024-01-22T00:00:00Z")));
        assert_eq!(s.next_after(at("2024-02-05T00:00:00Z"), Tz::UTC), Some(at("2024-02-12T00:00:00Z")));
    }

    #[test]
    fn quarterly_preset_and_time_zone() {
        let s: Schedule = "@quarterly".parse().unwrap();
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_eq!(s.next_after(at("2024-01-15T00:00:00Z"), ny), Some(at("2024-04-01T04:00:00Z")));
    }

    #[test]
    fn clear_errors() {
        let err = |e: &str| e.parse::<Schedule>().unwrap_err();
        assert_eq!(err("0 25 * * *"), "invalid cron expression \"0 25 * * *\": hour 25 is out of range 0-23");
        assert_eq!(
            err("* * * *"),
            "invalid cron expression \"* * * *\": expected 5 fields (minute hour day-of-month month day-of-week), found 4"
        );
        assert_eq!(err("@dayly"), "unknown schedule preset \"@dayly\" (did you mean \"@daily\"?)");
        assert_eq!(err("0 0 31 2 *"), "cron expression \"0 0 31 2 *\" never matches a date");
        assert_eq!(err("0 0 * * 5-2"), "invalid cron expression \"0 0 * * 5-2\": day of week range 5-2 runs backwards");
    }

    /// The next `expected.len()` fire times of `expr` in `tz` after `after`, written with the
    /// zone's offset at each instant, so a table shows which side of a change a time is on.
    #[track_caller]
    fn check_table(expr: &str, tz: &str, after: &str, expected: &[&str]) {
        let tz: Tz = tz.parse().unwrap();
        let s: Schedule = expr.parse().unwrap();
        let mut t = at(after);
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            let Some(next) = s.next_after(t, tz) else { break };
            got.push(next.with_timezone(&tz).to_rfc3339());
            t = next;
        }
        assert_eq!(got, expected, "\"{expr}\" in {tz} after {after}");
    }

    // 2024 changes: America/New_York springs forward on 10 March at 02:00 EST (to 03:00 EDT) and
    // falls back on 3 November at 02:00 EDT (to 01:00 EST); Europe/London springs forward on
    // 31 March at 01:00 GMT (to 02:00 BST) and falls back on 27 October at 02:00 BST (to 01:00 GMT).
    const NY: &str = "America/New_York";
    const LONDON: &str = "Europe/London";

    #[test]
    fn fixed_time_job_runs_once_a_day_across_both_changes() {
        // 02:30 does not exist on 10 March: it runs at the first instant after the gap.
        check_table("30 2 * * *", NY, "2024-03-08T12:00:00-05:00", &[
            "2024-03-09T02:30:00-05:00",
            "2024-03-10T03:00:00-04:00",
            "2024-03-11T02:30:00-04:00",
        ]);
        // 02:30 exists once on 3 November (the clock goes back from 02:00 to 01:00).
        check_table("30 2 * * *", NY, "2024-11-01T12:00:00-04:00", &[
            "2024-11-02T02:30:00-04:00",
            "2024-11-03T02:30:00-05:00",
            "2024-11-04T02:30:00-05:00",
        ]);
        // 01:30 happens twice on 3 November: it runs at the first occurrence only.
        check_table("30 1 * * *", NY, "2024-11-01T12:00:00-04:00", &[
            "2024-11-02T01:30:00-04:00",
            "2024-11-03T01:30:00-04:00",
            "2024-11-04T01:30:00-05:00",
        ]);
        check_table("0 2 * * *", NY, "2024-03-09T12:00:00-05:00", &[
            "2024-03-10T03:00:00-04:00",
            "2024-03-11T02:00:00-04:00",
        ]);
        check_table("30 1 * * *", LONDON, "2024-03-30T12:00:00Z", &[
            "2024-03-31T02:00:00+01:00",
            "2024-04-01T01:30:00+01:00",
        ]);
        check_table("30 1 * * *", LONDON, "2024-10-26T12:00:00+01:00", &[
            "2024-10-27T01:30:00+01:00",
            "2024-10-28T01:30:00+00:00",
        ]);
    }

    #[test]
    fn fixed_time_job_after_an_instant_inside_the_repeated_hour() {
        // Its only run that day was at the first 01:30; nothing again in the second 01:xx.
        for after in ["2024-11-03T01:40:00-04:00", "2024-11-03T01:10:00-05:00", "2024-11-03T01:30:00-04:00"] {
            check_table("30 1 * * *", NY, after, &["2024-11-04T01:30:00-05:00"]);
        }
        check_table("30 1 * * *", NY, "2024-11-03T01:20:00-04:00", &["2024-11-03T01:30:00-04:00"]);
    }

    #[test]
    fn hourly_job_follows_the_clock_across_both_changes() {
        // Nothing in the skipped hour; both occurrences of the repeated one.
        check_table("0 * * * *", NY, "2024-03-10T00:30:00-05:00", &[
            "2024-03-10T01:00:00-05:00",
            "2024-03-10T03:00:00-04:00",
            "2024-03-10T04:00:00-04:00",
        ]);
        check_table("0 * * * *", NY, "2024-11-03T00:30:00-04:00", &[
            "2024-11-03T01:00:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T02:00:00-05:00",
            "2024-11-03T03:00:00-05:00",
        ]);
        check_table("@hourly", LONDON, "2024-03-31T00:30:00Z", &[
            "2024-03-31T02:00:00+01:00",
            "2024-03-31T03:00:00+01:00",
        ]);
        check_table("0 * * * *", LONDON, "2024-10-27T00:30:00+01:00", &[
            "2024-10-27T01:00:00+01:00",
            "2024-10-27T01:00:00+00:00",
            "2024-10-27T02:00:00+00:00",
        ]);
    }

    #[test]
    fn every_thirty_minutes_follows_the_clock_across_both_changes() {
        check_table("*/30 * * * *", NY, "2024-03-10T01:00:00-05:00", &[
            "2024-03-10T01:30:00-05:00",
            "2024-03-10T03:00:00-04:00",
            "2024-03-10T03:30:00-04:00",
        ]);
        check_table("*/30 * * * *", NY, "2024-11-03T00:45:00-04:00", &[
            "2024-11-03T01:00:00-04:00",
            "2024-11-03T01:30:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T01:30:00-05:00",
            "2024-11-03T02:00:00-05:00",
        ]);
        check_table("*/30 * * * *", LONDON, "2024-03-31T00:15:00Z", &[
            "2024-03-31T00:30:00+00:00",
            "2024-03-31T02:00:00+01:00",
            "2024-03-31T02:30:00+01:00",
        ]);
        check_table("*/30 * * * *", LONDON, "2024-10-27T00:45:00+01:00", &[
            "2024-10-27T01:00:00+01:00",
            "2024-10-27T01:30:00+01:00",
            "2024-10-27T01:00:00+00:00",
            "2024-10-27T01:30:00+00:00",
            "2024-10-27T02:00:00+00:00",
        ]);
    }

    #[test]
    fn clock_following_job_from_inside_the_repeated_hour() {
        // First occurrence, before and after the half hour; then the second occurrence.
        check_table("*/30 * * * *", NY, "2024-11-03T01:20:00-04:00", &[
            "2024-11-03T01:30:00-04:00",
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T01:30:00-05:00",
        ]);
        check_table("*/30 * * * *", NY, "2024-11-03T01:40:00-04:00", &[
            "2024-11-03T01:00:00-05:00",
            "2024-11-03T01:30:00-05:00",
            "2024-11-03T02:00:00-05:00",
        ]);
        check_table("*/30 * * * *", NY, "2024-11-03T01:10:00-05:00", &[
            "2024-11-03T01:30:00-05:00",
            "2024-11-03T02:00:00-05:00",
        ]);
        check_table("0 * * * *", NY, "2024-11-03T01:00:00-04:00", &["2024-11-03T01:00:00-05:00"]);
    }

    #[test]
    fn a_minute_field_starting_with_a_star_follows_the_clock() {
        // Vixie cron: `*/20 2 * * *` is a wildcard job, so nothing runs on the day 02:xx is skipped.
        check_table("*/20 2 * * *", NY, "2024-03-09T12:00:00-05:00", &[
            "2024-03-11T02:00:00-04:00",
            "2024-03-11T02:20:00-04:00",
        ]);
        // Two fixed times in the gap fire once, at its end.
        check_table("0,30 2 * * *", NY, "2024-03-09T12:00:00-05:00", &[
            "2024-03-10T03:00:00-04:00",
            "2024-03-11T02:00:00-04:00",
        ]);
        assert!("*/20 2 * * *".parse::<Schedule>().unwrap().follows_clock());
        assert!(!"0,30 2 * * *".parse::<Schedule>().unwrap().follows_clock());
        assert!(!"@daily".parse::<Schedule>().unwrap().follows_clock());
        assert!("@hourly".parse::<Schedule>().unwrap().follows_clock());
    }

    #[test]
    fn midnight_skipped_by_a_change() {
        // Cuba moves its clocks at midnight: on 10 March 2024 the day starts at 01:00.
        check_table("@daily", "America/Havana", "2024-03-09T12:00:00-05:00", &[
            "2024-03-10T01:00:00-04:00",
            "2024-03-11T00:00:00-04:00",
        ]);
    }

    #[test]
    fn presets() {
        check_table("@daily", NY, "2024-03-09T12:00:00Z", &["2024-03-10T00:00:00-05:00", "2024-03-11T00:00:00-04:00"]);
        check_table("@weekly", "UTC", "2024-01-03T00:00:00Z", &["2024-01-07T00:00:00+00:00", "2024-01-14T00:00:00+00:00"]);
        check_table("@monthly", LONDON, "2024-03-15T00:00:00Z", &["2024-04-01T00:00:00+01:00", "2024-05-01T00:00:00+01:00"]);
        check_table("@quarterly", NY, "2024-01-15T00:00:00Z", &[
            "2024-04-01T00:00:00-04:00",
            "2024-07-01T00:00:00-04:00",
            "2024-10-01T00:00:00-04:00",
            "2025-01-01T00:00:00-05:00",
        ]);
        check_table("@yearly", "Asia/Tokyo", "2024-06-01T00:00:00Z", &["2025-01-01T00:00:00+09:00", "2026-01-01T00:00:00+09:00"]);
        check_table("@annually", "UTC", "2024-01-01T00:00:00Z", &["2025-01-01T00:00:00+00:00"]);
        check_table("0 6 1 */3 *", NY, "2024-01-01T00:00:00Z", &[
            "2024-01-01T06:00:00-05:00",
            "2024-04-01T06:00:00-04:00",
            "2024-07-01T06:00:00-04:00",
        ]);
    }

    #[test]
    fn strictly_after_and_at_or_before() {
        let s: Schedule = "@daily".parse().unwrap();
        let midnight = at("2024-01-02T00:00:00Z");
        assert_eq!(s.next_after(midnight, Tz::UTC), Some(at("2024-01-03T00:00:00Z")));
        assert_eq!(s.next_after(midnight - Duration::nanoseconds(1), Tz::UTC), Some(midnight));
        assert_eq!(s.prev_at_or_before(midnight, Tz::UTC), Some(midnight));
        assert_eq!(s.prev_at_or_before(midnight - Duration::nanoseconds(1), Tz::UTC), Some(at("2024-01-01T00:00:00Z")));
        assert!(s.fires_at(midnight, Tz::UTC));
        assert!(!s.fires_at(midnight + Duration::seconds(1), Tz::UTC));
    }

    /// Walks forward through a year of fire times (both changes) and checks that the backward
    /// search finds each one again, from the instant itself and from just before the next.
    #[test]
    fn backward_search_agrees_with_forward_search() {
        let zones = [NY, LONDON, "Australia/Lord_Howe", "America/Havana", "Europe/Paris", "UTC"];
        let exprs = ["30 2 * * *", "30 1 * * *", "0 * * * *", "*/30 * * * *", "15 */3 * * *", "0 0 15 * 1", "@daily"];
        for zone in zones {
            let tz: Tz = zone.parse().unwrap();
            for expr in exprs {
                let s: Schedule = expr.parse().unwrap();
                // The weeks around each change (both hemispheres), not the whole year, to stay fast.
                for window in ["2024-03-01T00:00:00Z", "2024-03-28T00:00:00Z", "2024-10-01T00:00:00Z", "2024-10-25T00:00:00Z"] {
                    let mut prev = s.next_after(at(window), tz).unwrap();
                    for _ in 0..200 {
                        let next = s.next_after(prev, tz).unwrap();
                        assert!(next > prev, "{expr} in {zone}: {next} after {prev}");
                        assert_eq!(s.prev_at_or_before(prev, tz), Some(prev), "{expr} in {zone} at {prev}");
                        assert_eq!(s.prev_at_or_before(next - Duration::seconds(1), tz), Some(prev), "{expr} in {zone} before {next}");
                        assert_eq!(s.next_after(prev + (next - prev) / 2, tz), Some(next), "{expr} in {zone} between {prev} and {next}");
                        prev = next;
                    }
                }
            }
        }
    }
}
