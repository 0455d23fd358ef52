//! The timetable's contract with the scheduler: first interval and start_date alignment,
//! end_date, catchup counts, backfill ranges, `flowctl next`'s list, and a simulated scheduler
//! that wakes when `next_wakeup` says and schedules what `due_intervals` returns.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use flowctl_engine::compile::{compile, SourceFile};
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Registry, TaskContext, TaskError};
use flowctl_engine::timetable::{
    due_intervals, first_start, intervals_between, latest_complete, next_interval, next_wakeup, upcoming, Interval,
};
use flowctl_engine::Dag;

/// An operator that does nothing, so DAGs compile without the operators crate.
struct Nothing;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NothingConfig {}

#[async_trait::async_trait]
impl Operator for Nothing {
    const NAME: &'static str = "nothing";
    type Config = NothingConfig;

    fn check(_: &NothingConfig) -> Result<(), ConfigError> {
        Ok(())
    }

    async fn execute(&self, _: NothingConfig, _: TaskContext) -> Result<Outcome, TaskError> {
        Ok(Outcome::success())
    }
}

/// A DAG with these top-level settings (`schedule: ...` lines) and one task.
fn dag(settings: &str) -> Dag {
    let text = format!("dag: t\n{settings}\ntasks:\n  - id: a\n    operator: nothing\n");
    let mut registry = Registry::new();
    registry.register(Nothing);
    let file = SourceFile { path: "t.yaml".into(), bytes: text.into_bytes() };
    match compile(&[file], &registry) {
        Ok(compiled) => compiled.dags.into_iter().next().expect("one DAG"),
        Err(errors) => panic!("{settings}\ndoes not compile: {errors:?}"),
    }
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}")).with_timezone(&Utc)
}

/// An interval written as `start/end` in the DAG's zone, for readable assertions.
fn show(dag: &Dag, i: &Interval) -> String {
    let local = |t: DateTime<Utc>| t.with_timezone(&dag.timezone).to_rfc3339();
    format!("{}/{}", local(i.start), local(i.end))
}

fn shown(dag: &Dag, intervals: &[Interval]) -> Vec<String> {
    intervals.iter().map(|i| show(dag, i)).collect()
}

/// The first `n` intervals, from `next_interval` fed its own ends.
fn first_intervals(dag: &Dag, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut last = None;
    while out.len() < n {
        let Some(i) = next_interval(dag, last) else { break };
        out.push(show(dag, &i));
        last = Some(i.end);
    }
    out
}

const DAILY: &str = "schedule: '@daily'\nstart_date: 2024-01-01";

#[test]
fn first_interval_starts_at_the_first_fire_time_at_or_after_start_date() {
    // On a fire time: it is the first interval's start.
    assert_eq!(first_intervals(&dag(DAILY), 2), [
        "2024-01-01T00:00:00+00:00/2024-01-02T00:00:00+00:00",
        "2024-01-02T00:00:00+00:00/2024-01-03T00:00:00+00:00",
    ]);
    // Between fire times: the next one.
    let d = dag("schedule: '@daily'\nstart_date: 2024-01-01T10:17:00Z");
    assert_eq!(first_intervals(&d, 1), ["2024-01-02T00:00:00+00:00/2024-01-03T00:00:00+00:00"]);
    // A date is midnight in the DAG's zone; quarterly at 06:00 starts on 1 April.
    let d = dag("schedule: 0 6 1 */3 *\nstart_date: 2024-01-15\ntimezone: America/New_York");
    assert_eq!(first_start(&d), Some(at("2024-04-01T10:00:00Z")));
    assert_eq!(first_intervals(&d, 3), [
        "2024-04-01T06:00:00-04:00/2024-07-01T06:00:00-04:00",
        "2024-07-01T06:00:00-04:00/2024-10-01T06:00:00-04:00",
        "2024-10-01T06:00:00-04:00/2025-01-01T06:00:00-05:00",
    ]);
}

#[test]
fn daily_intervals_in_new_york_are_23_and_25_hours_long_on_change_days() {
    let d = dag("schedule: '@daily'\nstart_date: 2024-03-09\ntimezone: America/New_York");
    let first = first_intervals(&d, 2);
    assert_eq!(first, [
        "2024-03-09T00:00:00-05:00/2024-03-10T00:00:00-05:00",
        "2024-03-10T00:00:00-05:00/2024-03-11T00:00:00-04:00",
    ]);
    let i = next_interval(&d, Some(at("2024-03-10T05:00:00Z"))).unwrap();
    assert_eq!(i.end - i.start, Duration::hours(23));
    let i = next_interval(&d, Some(at("2024-11-03T04:00:00Z"))).unwrap();
    assert_eq!(i.end - i.start, Duration::hours(25));
}

#[test]
fn a_misaligned_last_end_is_aligned_to_the_fire_time_before_it() {
    // The schedule changed from hourly to daily: the next interval is the day that contains the
    // last scheduled end, and it ends after it.
    let d = dag(DAILY);
    let i = next_interval(&d, Some(at("2024-01-05T13:00:00Z"))).unwrap();
    assert_eq!(show(&d, &i), "2024-01-05T00:00:00+00:00/2024-01-06T00:00:00+00:00");
    // Never before the first interval (a start_date moved later).
    let i = next_interval(&d, Some(at("2023-06-01T00:00:00Z"))).unwrap();
    assert_eq!(show(&d, &i), "2024-01-01T00:00:00+00:00/2024-01-02T00:00:00+00:00");
}

#[test]
fn an_interval_starting_after_end_date_is_never_scheduled() {
    // The interval that starts on end_date is the last; it ends after end_date.
    for end_date in ["2024-01-03", "2024-01-03T12:00:00Z"] {
        let d = dag(&format!("{DAILY}\nend_date: {end_date}"));
        assert_eq!(first_intervals(&d, 10), [
            "2024-01-01T00:00:00+00:00/2024-01-02T00:00:00+00:00",
            "2024-01-02T00:00:00+00:00/2024-01-03T00:00:00+00:00",
            "2024-01-03T00:00:00+00:00/2024-01-04T00:00:00+00:00",
        ]);
        assert_eq!(next_wakeup(&d, Some(at("2024-01-04T00:00:00Z"))), None, "end_date {end_date}");
        let all = intervals_between(&d, at("2023-01-01T00:00:00Z"), at("2025-01-01T00:00:00Z"));
        assert_eq!(all.len(), 3);
        let due = due_intervals(&dag(&format!("{DAILY}\nend_date: {end_date}\ncatchup: true")), None, at("2024-06-01T00:00:00Z"));
        assert_eq!(due.len(), 3);
    }
    // With catchup false, the latest complete interval is the last one end_date allows.
    let d = dag(&format!("{DAILY}\nend_date: 2024-01-03T12:00:00Z"));
    assert_eq!(shown(&d, &due_intervals(&d, None, at("2024-06-01T00:00:00Z"))), [
        "2024-01-03T00:00:00+00:00/2024-01-04T00:00:00+00:00"
    ]);
    assert_eq!(due_intervals(&d, Some(at("2024-01-04T00:00:00Z")), at("2024-06-01T00:00:00Z")), []);
}

#[test]
fn catchup_true_gives_every_missed_interval_oldest_first() {
    let d = dag(&format!("{DAILY}\ncatchup: true"));
    let now = at("2024-01-06T05:00:00Z");
    // Never scheduled: the five complete days; the sixth has not ended.
    let due = due_intervals(&d, None, now);
    assert_eq!(due.len(), 5);
    assert_eq!(show(&d, &due[0]), "2024-01-01T00:00:00+00:00/2024-01-02T00:00:00+00:00");
    assert_eq!(show(&d, &due[4]), "2024-01-05T00:00:00+00:00/2024-01-06T00:00:00+00:00");
    assert!(due.windows(2).all(|w| w[0].end == w[1].start), "contiguous: {due:?}");
    // Scheduled up to 3 January: three missed.
    let due = due_intervals(&d, Some(at("2024-01-03T00:00:00Z")), now);
    assert_eq!(shown(&d, &due), [
        "2024-01-03T00:00:00+00:00/2024-01-04T00:00:00+00:00",
        "2024-01-04T00:00:00+00:00/2024-01-05T00:00:00+00:00",
        "2024-01-05T00:00:00+00:00/2024-01-06T00:00:00+00:00",
    ]);
    // All scheduled: none.
    assert_eq!(due_intervals(&d, Some(at("2024-01-06T00:00:00Z")), now), []);
    // An interval is due exactly when it ends.
    assert_eq!(due_intervals(&d, Some(at("2024-01-06T00:00:00Z")), at("2024-01-07T00:00:00Z")).len(), 1);
    assert_eq!(due_intervals(&d, Some(at("2024-01-06T00:00:00Z")), at("2024-01-06T23:59:59Z")).len(), 0);
    // Before the first interval ends: nothing.
    assert_eq!(due_intervals(&d, None, at("2024-01-01T23:00:00Z")), []);
}

#[test]
fn catchup_false_gives_only_the_latest_complete_interval() {
    let d = dag(DAILY);
    let now = at("2024-01-06T05:00:00Z");
    assert_eq!(shown(&d, &due_intervals(&d, None, now)), ["2024-01-05T00:00:00+00:00/2024-01-06T00:00:00+00:00"]);
    assert_eq!(shown(&d, &due_intervals(&d, Some(at("2024-01-02T00:00:00Z")), now)), [
        "2024-01-05T00:00:00+00:00/2024-01-06T00:00:00+00:00"
    ]);
    // Already scheduled: none.
    assert_eq!(due_intervals(&d, Some(at("2024-01-06T00:00:00Z")), now), []);
    // Nothing complete yet, or start_date still in the future.
    assert_eq!(due_intervals(&d, None, at("2024-01-01T12:00:00Z")), []);
    assert_eq!(due_intervals(&d, None, at("2023-12-01T12:00:00Z")), []);
    assert_eq!(latest_complete(&d, at("2024-01-02T00:00:00Z")).map(|i| show(&d, &i)).as_deref(), Some(
        "2024-01-01T00:00:00+00:00/2024-01-02T00:00:00+00:00"
    ));
}

#[test]
fn hourly_catchup_across_both_new_york_changes() {
    // Spring: 02:00 does not exist, so four intervals cover midnight to 05:00 (four real hours).
    let d = dag("schedule: '@hourly'\nstart_date: 2024-03-10\ntimezone: America/New_York\ncatchup: true");
    assert_eq!(shown(&d, &due_intervals(&d, None, at("2024-03-10T05:00:00-04:00"))), [
        "2024-03-10T00:00:00-05:00/2024-03-10T01:00:00-05:00",
        "2024-03-10T01:00:00-05:00/2024-03-10T03:00:00-04:00",
        "2024-03-10T03:00:00-04:00/2024-03-10T04:00:00-04:00",
        "2024-03-10T04:00:00-04:00/2024-03-10T05:00:00-04:00",
    ]);
    // Autumn: 01:00 happens twice, so midnight to 04:00 is five real hours and five intervals.
    let d = dag("schedule: '@hourly'\nstart_date: 2024-11-03\ntimezone: America/New_York\ncatchup: true");
    assert_eq!(shown(&d, &due_intervals(&d, None, at("2024-11-03T04:00:00-05:00"))), [
        "2024-11-03T00:00:00-04:00/2024-11-03T01:00:00-04:00",
        "2024-11-03T01:00:00-04:00/2024-11-03T01:00:00-05:00",
        "2024-11-03T01:00:00-05:00/2024-11-03T02:00:00-05:00",
        "2024-11-03T02:00:00-05:00/2024-11-03T03:00:00-05:00",
        "2024-11-03T03:00:00-05:00/2024-11-03T04:00:00-05:00",
    ]);
    // A fixed-time job in London: once a day, the spring run at the end of the gap.
    let d = dag("schedule: 30 1 * * *\nstart_date: 2024-03-30\ntimezone: Europe/London\ncatchup: true");
    assert_eq!(shown(&d, &due_intervals(&d, None, at("2024-04-02T00:00:00Z"))), [
        "2024-03-30T01:30:00+00:00/2024-03-31T02:00:00+01:00",
        "2024-03-31T02:00:00+01:00/2024-04-01T01:30:00+01:00",
    ]);
}

#[test]
fn next_wakeup_is_the_end_of_the_next_interval() {
    let d = dag(DAILY);
    assert_eq!(next_wakeup(&d, None), Some(at("2024-01-02T00:00:00Z")));
    assert_eq!(next_wakeup(&d, Some(at("2024-03-01T00:00:00Z"))), Some(at("2024-03-02T00:00:00Z")));
}

#[test]
fn a_dag_without_a_schedule_has_no_intervals() {
    let d = dag("start_date: 2024-01-01");
    let now = at("2024-06-01T00:00:00Z");
    assert_eq!(next_interval(&d, None), None);
    assert_eq!(next_wakeup(&d, None), None);
    assert_eq!(due_intervals(&d, None, now), []);
    assert_eq!(intervals_between(&d, at("2024-01-01T00:00:00Z"), now), []);
    assert_eq!(upcoming(&d, now, 3), []);
    assert_eq!(dag("schedule: null").schedule, None);
    assert_eq!(next_wakeup(&dag("schedule: null"), None), None);
}

#[test]
fn intervals_between_takes_logical_dates_in_an_inclusive_range() {
    let d = dag(DAILY);
    let got = intervals_between(&d, at("2024-01-02T00:00:00Z"), at("2024-01-04T00:00:00Z"));
    assert_eq!(shown(&d, &got), [
        "2024-01-02T00:00:00+00:00/2024-01-03T00:00:00+00:00",
        "2024-01-03T00:00:00+00:00/2024-01-04T00:00:00+00:00",
        "2024-01-04T00:00:00+00:00/2024-01-05T00:00:00+00:00",
    ]);
    // Bounds between fire times take the fire times inside them.
    let got = intervals_between(&d, at("2024-01-02T01:00:00Z"), at("2024-01-04T23:00:00Z"));
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].start, at("2024-01-03T00:00:00Z"));
    // Not before the first interval; nothing in an empty or reversed range.
    let got = intervals_between(&d, at("2023-12-25T00:00:00Z"), at("2024-01-01T00:00:00Z"));
    assert_eq!(shown(&d, &got), ["2024-01-01T00:00:00+00:00/2024-01-02T00:00:00+00:00"]);
    assert_eq!(intervals_between(&d, at("2024-01-02T01:00:00Z"), at("2024-01-02T23:00:00Z")), []);
    assert_eq!(intervals_between(&d, at("2024-01-05T00:00:00Z"), at("2024-01-02T00:00:00Z")), []);
}

#[test]
fn upcoming_lists_the_runs_the_scheduler_would_create() {
    let d = dag("schedule: 30 2 * * *\nstart_date: 2024-01-01\ntimezone: America/New_York\nend_date: 2024-03-12");
    let show_runs = |after: &str, n: usize| -> Vec<String> {
        upcoming(&d, at(after), n)
            .iter()
            .map(|(fire, i)| {
                assert_eq!(*fire, i.end);
                format!("{} {}", fire.with_timezone(&d.timezone).to_rfc3339(), show(&d, i))
            })
            .collect()
    };
    assert_eq!(show_runs("2024-03-09T12:00:00Z", 10), [
        "2024-03-10T03:00:00-04:00 2024-03-09T02:30:00-05:00/2024-03-10T03:00:00-04:00",
        "2024-03-11T02:30:00-04:00 2024-03-10T03:00:00-04:00/2024-03-11T02:30:00-04:00",
        "2024-03-12T02:30:00-04:00 2024-03-11T02:30:00-04:00/2024-03-12T02:30:00-04:00",
    ]);
    // Strictly after a fire time.
    assert_eq!(show_runs("2024-03-11T06:30:00Z", 1), [
        "2024-03-12T02:30:00-04:00 2024-03-11T02:30:00-04:00/2024-03-12T02:30:00-04:00"
    ]);
    // Before start_date: the first run fires at the end of the first interval.
    assert_eq!(show_runs("2020-01-01T00:00:00Z", 1), [
        "2024-01-02T02:30:00-05:00 2024-01-01T02:30:00-05:00/2024-01-02T02:30:00-05:00"
    ]);
    assert_eq!(show_runs("2024-03-12T06:30:00Z", 5), Vec::<String>::new());
    assert_eq!(show_runs("2024-03-09T12:00:00Z", 0), Vec::<String>::new());
}

/// A scheduler that sleeps until `next_wakeup` and schedules `due_intervals` each time gets
/// every interval exactly once, in order, and never wakes to find nothing due.
#[test]
fn a_scheduler_driven_by_next_wakeup_schedules_every_interval_once() {
    let cases = [
        "schedule: '@hourly'\nstart_date: 2024-03-09\ntimezone: America/New_York",
        "schedule: '*/30 * * * *'\nstart_date: 2024-10-26\ntimezone: Europe/London\ncatchup: true",
        "schedule: 30 2 * * *\nstart_date: 2024-03-01\ntimezone: America/New_York\nend_date: 2024-03-20",
        "schedule: 0 6 1 */3 *\nstart_date: 2024-01-15\ntimezone: America/New_York",
        "schedule: 0 0 15 * 1\nstart_date: 2024-01-01T12:00:00Z\ncatchup: true",
    ];
    for settings in cases {
        let d = dag(settings);
        let horizon = at("2025-06-01T00:00:00Z");
        let mut last = None;
        let mut scheduled: Vec<Interval> = Vec::new();
        while let Some(now) = next_wakeup(&d, last).filter(|t| *t <= horizon) {
            let due = due_intervals(&d, last, now);
            assert!(!due.is_empty(), "{settings}: woke at {now} and found nothing due");
            last = due.last().map(|i| i.end);
            scheduled.extend(due);
        }
        let expected = intervals_between(&d, at("2000-01-01T00:00:00Z"), horizon);
        let expected: Vec<Interval> = expected.into_iter().filter(|i| i.end <= horizon).collect();
        assert!(!expected.is_empty(), "{settings}");
        assert_eq!(scheduled, expected, "{settings}");
    }
}

/// After downtime a catchup-false scheduler schedules the latest interval and then carries on
/// normally; a catchup-true one schedules everything it missed.
#[test]
fn downtime_with_and_without_catchup() {
    for (catchup, missed) in [(false, 1), (true, 10)] {
        let d = dag(&format!("{DAILY}\ncatchup: {catchup}"));
        let last = Some(at("2024-01-05T00:00:00Z"));
        let now = at("2024-01-15T08:00:00Z");
        assert!(next_wakeup(&d, last).is_some_and(|t| t <= now));
        let due = due_intervals(&d, last, now);
        assert_eq!(due.len(), missed, "catchup {catchup}");
        assert_eq!(due.last().map(|i| i.end), Some(at("2024-01-15T00:00:00Z")));
        let last = due.last().map(|i| i.end);
        assert_eq!(next_wakeup(&d, last), Some(at("2024-01-16T00:00:00Z")));
        assert_eq!(due_intervals(&d, last, now), []);
    }
}

#[test]
fn a_long_catchup_is_bounded() {
    let d = dag("schedule: '* * * * *'\nstart_date: 2000-01-01\ncatchup: true");
    let due = due_intervals(&d, None, at("2024-01-01T00:00:00Z"));
    assert_eq!(due.len(), flowctl_engine::timetable::MAX_INTERVALS);
    assert_eq!(due[0].start, at("2000-01-01T00:00:00Z"));
    let tz: Tz = "UTC".parse().unwrap();
    assert_eq!(d.timezone, tz);
}
