//! Schedules: the 5-field cron expressions and presets DAG files use, evaluated in a time zone.
//!
//! DAG authors write classic 5-field cron (`minute hour day-of-month month day-of-week`, Sunday is
//! 0 or 7) or a preset. The `cron` crate evaluates 6/7-field expressions with Sunday as 1 and ANDs
//! day-of-month with day-of-week, where Vixie cron ORs them when both are restricted. So this module
//! parses the 5 fields itself (which also gives precise error messages), expands every field to an
//! explicit list, and hands the `cron` crate expressions it cannot misread: one, or two whose union
//! is the OR rule.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
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
        Ok(Schedule { expression: expression.to_string(), parts })
    }
}

impl Schedule {
    /// The first fire time strictly after `after`, evaluated in `tz`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&tz);
        self.parts
            .iter()
            .filter_map(|p| p.after(&local).next())
            .min()
            .map(|t| t.with_timezone(&Utc))
    }
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
}
