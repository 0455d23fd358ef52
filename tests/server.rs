//! End-to-end tests of `flowctl server` and of the CLI with and without it: crash recovery after
//! `kill -9`, graceful shutdown, scheduling (catchup, pause), the API's token, `clear`, the same
//! output through the API as directly, the listen address, and the `--dags` folder.
//!
//! Every test runs the real binary in its own temporary home, with servers on port 0. Nothing
//! sleeps to wait for something: tests read the server's stderr, FIFOs that tasks write to, a
//! ledger file watched with inotify, or wait for a run through the API (`?wait=` on a run, answered
//! when the run ends). Only the `--dags` folder test polls the CLI, with a bound.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde_json::Value;
use util::{setup_with_scratch as setup, tasks_in as tasks, Cmd, FileWatch, Rng, Run, Server, TempHome};

const DATA: &str = "tests/data/server";

fn data(name: &str) -> String {
    format!("{DATA}/{name}")
}

/// Now, in nanoseconds since the epoch: the clock `date +%s%N` reads in the tasks.
fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos()
}

/// A task instance's state and try number.
fn state_and_try(ti: &Value) -> (String, u64) {
    (ti["state"].as_str().unwrap_or_default().to_string(), ti["try_number"].as_u64().unwrap_or(u64::MAX))
}

/// The UTC date `days` days from today, as `YYYY-MM-DD`.
fn utc_date(days: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(days)).format("%Y-%m-%d").to_string()
}

// ---------------------------------------------------------------------------------------------
// Crash recovery
// ---------------------------------------------------------------------------------------------

const CRASH_DAG: &str = "sv_crash";
const CRASH_TASKS: [&str; 20] = [
    "start", "a1", "a2", "a3", "a4", "a5", "b1", "b2", "b3", "b4", "b5", "c1", "c2", "c3", "c4", "c5", "join", "fan1", "fan2",
    "end",
];
/// The task that writes its ledger lines from a grandchild process (see crash.yaml).
const GRANDCHILD_WRITER: &str = "c3";
const CRASH_RUNS: u32 = 20;
/// At most this many `kill -9`s (as many as the DAG's retries); after the last, the server is
/// left to finish.
const MAX_KILLS: usize = 12;

/// One ledger line: `start|end RUN TASK TRY NANOSECONDS`.
#[derive(Debug, Clone)]
struct Entry {
    end: bool,
    run: String,
    task: String,
    try_number: u64,
    at: u128,
}

fn parse_ledger(lines: &[String]) -> Vec<Entry> {
    lines
        .iter()
        .map(|line| {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                [kind @ ("start" | "end"), run, task, try_number, at] => Entry {
                    end: *kind == "end",
                    run: run.to_string(),
                    task: task.to_string(),
                    try_number: try_number.parse().unwrap_or_else(|_| panic!("try number in ledger line {line:?}")),
                    at: at.parse().unwrap_or_else(|_| panic!("timestamp in ledger line {line:?}")),
                },
                _ => panic!("malformed ledger line {line:?}"),
            }
        })
        .collect()
}

/// One attempt as the ledger shows it.
#[derive(Debug, Default, Clone)]
struct Attempt {
    starts: Vec<u128>,
    ends: Vec<u128>,
}

/// The ledger by (run, task), then by try.
fn attempts(entries: &[Entry]) -> BTreeMap<(String, String), BTreeMap<u64, Attempt>> {
    let mut by_pair: BTreeMap<(String, String), BTreeMap<u64, Attempt>> = BTreeMap::new();
    for e in entries {
        let attempt = by_pair.entry((e.run.clone(), e.task.clone())).or_default().entry(e.try_number).or_default();
        if e.end {
            attempt.ends.push(e.at);
        } else {
            attempt.starts.push(e.at);
        }
    }
    by_pair
}

/// (run, task) pairs with an `end` line, read as the ledger grows.
#[derive(Default)]
struct Ended {
    read: usize,
    pairs: BTreeSet<(String, String)>,
}

impl Ended {
    fn update(&mut self, lines: &[String]) {
        self.pairs.extend(parse_ledger(&lines[self.read..]).into_iter().filter(|e| e.end).map(|e| (e.run, e.task)));
        self.read = lines.len();
    }

    /// How many (run, task) pairs of the test's runs have no `end` line yet: each of them will
    /// write at least one more line.
    fn pairs_left(&self, runs: &[String]) -> usize {
        runs.iter().map(|r| CRASH_TASKS.iter().filter(|t| !self.pairs.contains(&(r.clone(), t.to_string()))).count()).sum()
    }
}

#[test]
fn kill_9_at_random_points_loses_no_run_and_never_runs_an_attempt_twice() {
    let (home, cmd) = setup();
    let ledger = home.scratch().join("ledger");
    let cmd = cmd.env("LEDGER", ledger.to_str().expect("UTF-8 path"));
    cmd.run(["apply", &data("crash.yaml")]).expect_code(0);
    let runs: Vec<String> = (1..=CRASH_RUNS)
        .map(|day| {
            let run = cmd.run(["trigger", CRASH_DAG, "--date", &format!("2024-01-{day:02}")]);
            run.expect_code(0);
            let id = format!("manual__2024-01-{day:02}T00:00:00Z");
            assert_eq!(run.stdout, format!("run {id} of {CRASH_DAG} queued\n"));
            id
        })
        .collect();

    let mut rng = Rng::seeded("FLOWCTL_CRASH_SEED");
    let mut watch = FileWatch::new(&ledger);
    // When each server was started, and when each killed one was seen dead; a server's attempts
    // run between the two.
    let mut started: Vec<u128> = vec![now_ns()];
    let mut killed: Vec<u128> = Vec::new();
    let mut server = Server::start(&cmd, &[]);
    let mut ended = Ended::default();
    while killed.len() < MAX_KILLS {
        watch.refresh();
        ended.update(&watch.lines);
        let left = ended.pairs_left(&runs);
        if left == 0 {
            break;
        }
        // Kill after a random number of new lines, no more than are sure to come.
        let target = watch.lines.len() + rng.range(1, left.min(60) as u64) as usize;
        let kill_now = watch.wait("the ledger to grow", Duration::from_secs(60), |lines| {
            ended.update(lines);
            if ended.pairs_left(&runs) == 0 {
                return Some(false);
            }
            (lines.len() >= target).then_some(true)
        });
        if !kill_now {
            break;
        }
        server.kill();
        killed.push(now_ns());
        started.push(now_ns());
        server = Server::start(&cmd, &[]);
    }
    for run in &runs {
        let state = server.wait_for_run(CRASH_DAG, run);
        if state != "success" {
            let status = cmd.run(["status", CRASH_DAG, run]);
            panic!(
                "run {run} ended {state} after {} kills:\n{}{}\n--- its ledger lines ---\n{}",
                killed.len(),
                status.stdout,
                status.stderr,
                std::fs::read_to_string(&ledger).unwrap_or_default().lines().filter(|l| l.contains(run.as_str())).collect::<Vec<_>>().join("\n")
            );
        }
    }
    server.stop().expect_code(0);
    assert!(!home.path().join("server.json").exists(), "server.json is left after a clean stop");

    // No run is lost: every run, and every task of it, succeeded; nothing else ran.
    let listed = cmd.json(["status", CRASH_DAG, "--output", "json"]);
    let listed: Vec<(&str, &str)> = listed
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| (r["run_id"].as_str().unwrap_or_default(), r["state"].as_str().unwrap_or_default()))
        .collect();
    let expected: Vec<(&str, &str)> = runs.iter().map(|r| (r.as_str(), "success")).collect();
    assert_eq!(listed, expected);
    let mut final_try: BTreeMap<(String, String), u64> = BTreeMap::new();
    for run in &runs {
        for (task, ti) in cmd.tasks(CRASH_DAG, run) {
            assert_eq!(ti["state"], "success", "{run} {task}: {ti:#}");
            assert_eq!(ti["error"], Value::Null, "{run} {task}: {ti:#}");
            assert_eq!(ti["max_tries"], 13, "{run} {task}: {ti:#}");
            final_try.insert((run.clone(), task), ti["try_number"].as_u64().expect("try_number"));
        }
    }
    assert_eq!(final_try.len(), runs.len() * CRASH_TASKS.len());

    watch.refresh();
    let entries = parse_ledger(&watch.lines);
    let ledger = attempts(&entries);
    // The server that started an attempt at `t`: the last one started before `t`; it ran until
    // it was killed (or, for the last, until the end).
    let server_of = |t: u128| started.iter().rposition(|s| *s < t).expect("no server ran before this line");
    let death_of = |server: usize| killed.get(server).copied().unwrap_or(u128::MAX);
    let kills_between = |from: u128, to: u128| killed.iter().filter(|k| **k > from && **k < to).count() as u64;
    let mut problems = Vec::new();
    let (mut interrupted, mut reran, mut outlived) = (0, Vec::new(), Vec::new());
    for ((run, task), &last) in &final_try {
        let pair = format!("{run} {task}");
        let Some(tries) = ledger.get(&(run.clone(), task.clone())) else {
            problems.push(format!("{pair}: succeeded (try {last}) but never wrote to the ledger"));
            continue;
        };
        interrupted += last - 1;
        // Each (run, task, try) starts at most once and ends at most once, after it started.
        for (try_number, a) in tries {
            if a.starts.len() > 1 || a.ends.len() > 1 {
                problems.push(format!("{pair} try {try_number} ran more than once: {a:?}"));
            }
            if a.starts.is_empty() || a.ends.first().is_some_and(|e| *e < a.starts[0]) {
                problems.push(format!("{pair} try {try_number} ended without starting before: {a:?}"));
            }
        }
        // No task that succeeded ran again: the successful try is the last one, and its end is
        // the pair's last line.
        let Some(success) = tries.get(&last).filter(|a| !a.starts.is_empty() && !a.ends.is_empty()) else {
            problems.push(format!("{pair}: the store says try {last} succeeded; the ledger has {tries:?}"));
            continue;
        };
        if let Some(later) = tries.keys().find(|t| **t > last) {
            problems.push(format!("{pair}: try {later} ran after the successful try {last}: {tries:?}"));
        }
        let last_line = tries.values().flat_map(|a| a.starts.iter().chain(&a.ends)).max().copied().unwrap_or_default();
        if last_line != success.ends[0] {
            problems.push(format!("{pair}: a line was written after the successful try {last} ended: {tries:?}"));
        }
        // No attempt ran twice at once: in try order, each attempt ended (or its server died)
        // before the next one started; and each try before the last needed its own crash.
        let present: Vec<(u64, &Attempt)> = tries.iter().filter(|(_, a)| !a.starts.is_empty()).map(|(t, a)| (*t, a)).collect();
        if let Some((first, a)) = present.first() {
            if kills_between(0, a.starts[0]) < first - 1 {
                problems.push(format!("{pair}: try {first} is the first in the ledger, but fewer than {} crashes came before it", first - 1));
            }
        }
        let direct = task != GRANDCHILD_WRITER;
        for window in present.windows(2) {
            let ((t, a), (u, b)) = (window[0], window[1]);
            let next_start = b.starts[0];
            if a.starts[0] >= next_start {
                problems.push(format!("{pair}: try {u} started before try {t}: {tries:?}"));
            }
            if let Some(&end) = a.ends.first() {
                // The command finished, yet it ran again: only when the server died after the
                // command ended and before its success was durable (at-least-once, by design),
                // or, for `c3`, when its grandchild finished after the server died.
                if end < death_of(server_of(a.starts[0])) {
                    reran.push(format!("{pair} try {t}"));
                } else {
                    outlived.push(format!("{pair} try {t}"));
                }
                if end >= next_start {
                    problems.push(format!("{pair}: try {t} ended at {end}, after try {u} started at {next_start}: {tries:?}"));
                }
                if direct && kills_between(end, next_start) == 0 {
                    problems.push(format!("{pair}: try {t} ended and try {u} ran after it with no crash between: {tries:?}"));
                }
            }
            if direct {
                // Its lines are written while its server lives (checked below), so an attempt
                // without an end line was stopped when that server died.
                let stopped = a.ends.first().copied().unwrap_or_else(|| death_of(server_of(a.starts[0])));
                if stopped >= next_start {
                    problems.push(format!("{pair}: try {t} (until {stopped}) overlaps try {u} (from {next_start}): {tries:?}"));
                }
                if kills_between(a.starts[0], next_start) < u - t {
                    problems.push(format!("{pair}: tries {t} to {} ended without success with fewer crashes between: {tries:?}", u - 1));
                }
            }
        }
        // A command stops with the server that started it (a parent-death SIGKILL): every line
        // of an attempt is written while that server lives. Not so for `c3`'s grandchild, which
        // lives on until the next server kills what the attempt left before retrying it.
        if direct {
            for (t, a) in tries {
                for &at in a.starts.iter().chain(&a.ends) {
                    let Some(&start) = a.starts.first() else { continue };
                    let server = server_of(start);
                    if at > death_of(server) {
                        problems.push(format!("{pair} try {t} wrote a line at {at}, after its server died at {}", death_of(server)));
                    }
                }
            }
        }
    }
    let unknown: Vec<&(String, String)> = ledger.keys().filter(|k| !final_try.contains_key(*k)).collect();
    assert!(unknown.is_empty(), "ledger lines for runs or tasks that do not exist: {unknown:?}");
    assert!(
        problems.is_empty(),
        "{} problems after {} kills:\n  {}\n--- ledger ---\n{}",
        problems.len(),
        killed.len(),
        problems.join("\n  "),
        watch.lines.join("\n")
    );
    assert!(!killed.is_empty() && interrupted > 0, "the test killed {} servers and interrupted {interrupted} attempts", killed.len());
    eprintln!(
        "{} kills; {interrupted} attempts interrupted and retried; {} of them had finished their command before the crash \
         (at-least-once): {reran:?}; {} were c3's grandchild finishing after its server died: {outlived:?}",
        killed.len(),
        reran.len(),
        outlived.len()
    );
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------------

#[test]
fn sigterm_stops_running_attempts_after_the_grace_period_and_a_restart_resumes_the_run() {
    let (home, cmd) = setup();
    let pid_fifo = home.fifo("pid.fifo");
    cmd.run(["apply", &data("graceful.yaml")]).expect_code(0);
    let mut server = Server::start(&cmd, &["--grace", "200ms"]);
    let trigger = cmd.run(["trigger", "sv_graceful", "--date", "2024-01-01"]);
    trigger.expect_code(0);
    let run = "manual__2024-01-01T00:00:00Z";
    // Through the server: queued, and no note about a missing server.
    assert_eq!((trigger.stdout.as_str(), trigger.stderr.as_str()), (format!("run {run} of sv_graceful queued\n").as_str(), ""));
    let sleep_pid: i32 = util::read_fifo(&pid_fifo).trim().parse().expect("pid");

    server.signal(Signal::SIGTERM);
    server.wait_for_stderr("flowctl server: stopping: no new runs or tasks start; running tasks get 200ms to finish");
    server.wait_for_stderr("flowctl server: grace period over: stopping running tasks");
    let stopped = server.finish();
    stopped.expect_code(0);
    assert!(stopped.stderr.ends_with("flowctl server: stopped\n"), "{}", stopped.stderr);
    assert!(!home.path().join("server.json").exists(), "server.json is left after SIGTERM");
    assert!(util::is_stopped(sleep_pid), "the attempt's sleep {sleep_pid} outlived the server");

    // Everything is recorded: the attempt as interrupted, to be retried; the run still running.
    let json = cmd.status("sv_graceful", run);
    assert_eq!(json["run"]["state"], "running", "{json:#}");
    let ti = tasks(&json);
    assert_eq!(state_and_try(&ti["block"]), ("up_for_retry".into(), 1), "{json:#}");
    assert_eq!(ti["block"]["max_tries"], 2, "the stop did not spend the task's only try: {json:#}");
    assert_eq!(ti["block"]["error"], "interrupted: flowctl stopped");
    assert_eq!(state_and_try(&ti["after"]), ("none".into(), 0), "{json:#}");
    let status = cmd.run(["status", "sv_graceful", run]);
    status.expect_code(0);
    assert!(status.stdout.starts_with(&format!("run {run} of sv_graceful: running in ")), "{}", status.stdout);
    assert!(status.stdout.lines().next().unwrap_or_default().ends_with("(not running now: `flowctl server` resumes it)"), "{}", status.stdout);

    // A restart retries it, and the run completes.
    let server = Server::start(&cmd, &["--grace", "200ms"]);
    assert_eq!(server.wait_for_run("sv_graceful", run), "success");
    let stopped = server.stop();
    stopped.expect_code(0);
    assert!(!stopped.stderr.contains("grace period over"), "nothing was running: {}", stopped.stderr);
    let ti = cmd.tasks("sv_graceful", run);
    assert_eq!(state_and_try(&ti["block"]), ("success".into(), 2));
    assert_eq!(state_and_try(&ti["after"]), ("success".into(), 1));
    let log = cmd.run(["logs", "sv_graceful", run, "block"]);
    log.expect_code(0);
    assert!(log.stdout.contains(" | try 2 done\n"), "{}", log.stdout);
}

#[test]
fn sigterm_lets_running_attempts_finish_within_the_grace_period_and_starts_nothing_new() {
    let (home, cmd) = setup();
    let started = home.fifo("started.fifo");
    let go = home.fifo("go.fifo");
    cmd.run(["apply", &data("drain.yaml")]).expect_code(0);
    let mut server = Server::start(&cmd, &["--grace", "30s"]);
    cmd.run(["trigger", "sv_drain", "--date", "2024-01-01"]).expect_code(0);
    let run = "manual__2024-01-01T00:00:00Z";
    assert_eq!(util::read_fifo(&started), "started\n");

    server.signal(Signal::SIGTERM);
    server.wait_for_stderr("flowctl server: stopping: no new runs or tasks start; running tasks get 30s to finish");
    // Draining: let `block` finish. `after` must not start.
    std::fs::write(&go, "go\n").expect("write to the FIFO");
    let stopped = server.finish();
    stopped.expect_code(0);
    assert!(!stopped.stderr.contains("grace period over"), "{}", stopped.stderr);
    assert!(!home.path().join("server.json").exists());
    let json = cmd.status("sv_drain", run);
    assert_eq!(json["run"]["state"], "running", "{json:#}");
    let ti = tasks(&json);
    assert_eq!(state_and_try(&ti["block"]), ("success".into(), 1), "{json:#}");
    // Its upstream task succeeded, so it is ready (scheduled), but it never started.
    assert_eq!(state_and_try(&ti["after"]), ("scheduled".into(), 0), "a task started during the drain: {json:#}");
    assert!(!home.path().join("logs/sv_drain").join(run).join("after").exists(), "`after` has an attempt log");

    let server = Server::start(&cmd, &[]);
    assert_eq!(server.wait_for_run("sv_drain", run), "success");
    server.stop().expect_code(0);
    let ti = cmd.tasks("sv_drain", run);
    assert_eq!(state_and_try(&ti["block"]), ("success".into(), 1), "block ran again after the restart");
    assert_eq!(state_and_try(&ti["after"]), ("success".into(), 1));
}

// ---------------------------------------------------------------------------------------------
// Scheduling
// ---------------------------------------------------------------------------------------------

/// Writes catchup.yaml.in filled in, and returns its path.
fn catchup_dag(home: &TempHome, start: &str, end: Option<&str>, catchup: bool, max_active_runs: u32) -> String {
    let text = std::fs::read_to_string(data("catchup.yaml.in"))
        .expect("read catchup.yaml.in")
        .replace("@START_DATE@", start)
        .replace("@END_DATE@", &end.map(|e| format!("end_date: {e}")).unwrap_or_default())
        .replace("@CATCHUP@", &catchup.to_string())
        .replace("@MAX_ACTIVE_RUNS@", &max_active_runs.to_string());
    home.write("catchup.yaml", &text).to_str().expect("UTF-8 path").to_string()
}

/// Runs the sentinel DAG through the server and waits for it: once it has run, the scheduler
/// has looked at every other DAG after what the test did before.
fn scheduler_pass(cmd: &Cmd) {
    let run = cmd.run(["trigger", "zz_sentinel", "--wait"]);
    run.expect_code(0);
}

#[test]
fn catchup_creates_every_missed_interval_oldest_first_within_max_active_runs() {
    let (home, cmd) = setup();
    let ledger = home.scratch().join("ledger");
    let cmd = cmd.env("LEDGER", ledger.to_str().expect("UTF-8 path"));
    // Five complete daily intervals: from six days ago to the one starting two days ago.
    let days: Vec<String> = (-6..=-2).map(utc_date).collect();
    let file = catchup_dag(&home, &days[0], Some(&days[4]), true, 2);
    cmd.run(["apply", &file]).expect_code(0);
    let expected: Vec<String> = days.iter().map(|d| format!("scheduled__{d}T00:00:00Z")).collect();

    let mut watch = FileWatch::new(&ledger);
    let server = Server::start(&cmd, &[]);
    // The newest run is created last; wait for its task to end, then for every run.
    let newest = format!("end {} ", expected[4]);
    watch.wait("the newest run's task to end", Duration::from_secs(60), |lines| lines.iter().any(|l| l.starts_with(&newest)).then_some(()));
    for run in &expected {
        assert_eq!(server.wait_for_run("sv_catchup", run), "success", "{run}");
    }
    let runs = cmd.runs("sv_catchup");
    server.stop().expect_code(0);

    // Every missed interval, as a scheduled run for its logical date.
    let ids: Vec<&str> = runs.iter().map(|r| r["run_id"].as_str().unwrap_or_default()).collect();
    assert_eq!(ids, expected);
    for (run, day) in runs.iter().zip(&days) {
        assert_eq!(run["logical_date"], format!("{day}T00:00:00Z"), "{run:#}");
        assert_eq!(run["data_interval_start"], format!("{day}T00:00:00Z"), "{run:#}");
        assert_eq!(run["trigger"], "scheduled", "{run:#}");
        assert_eq!(run["state"], "success", "{run:#}");
    }
    // Oldest first: created in the order of their logical dates.
    let created: Vec<&str> = runs.iter().map(|r| r["created_at"].as_str().unwrap_or_default()).collect();
    let mut sorted = created.clone();
    sorted.sort();
    assert_eq!(created, sorted, "runs not created in logical-date order: {runs:#?}");
    // Never more than two at once, and two did run at once.
    watch.refresh();
    let mut events: Vec<(u128, i32, String)> = watch
        .lines
        .iter()
        .map(|l| {
            let words: Vec<&str> = l.split(' ').collect();
            let at: u128 = words[2].parse().expect("timestamp");
            (at, if words[0] == "start" { 1 } else { -1 }, words[1].to_string())
        })
        .collect();
    events.sort();
    assert_eq!(events.len(), 10, "one start and one end per run:\n{}", watch.lines.join("\n"));
    let (mut running, mut most) = (0, 0);
    for (_, step, _) in &events {
        running += step;
        most = most.max(running);
    }
    assert_eq!(most, 2, "max_active_runs is 2:\n{}", watch.lines.join("\n"));
}

#[test]
fn without_catchup_only_the_latest_interval_runs() {
    let (home, cmd) = setup();
    let ledger = home.scratch().join("ledger");
    let cmd = cmd.env("LEDGER", ledger.to_str().expect("UTF-8 path"));
    let before = utc_date(-1);
    // Six missed intervals; room for three runs at once if catchup were on.
    let file = catchup_dag(&home, &utc_date(-6), None, false, 3);
    cmd.run(["apply", &file, &data("sentinel.yaml")]).expect_code(0);

    let mut watch = FileWatch::new(&ledger);
    let server = Server::start(&cmd, &[]);
    let latest = format!("scheduled__{before}T00:00:00Z");
    let end = format!("end {latest} ");
    watch.wait("the latest interval's run", Duration::from_secs(60), |lines| lines.iter().any(|l| l.starts_with(&end)).then_some(()));
    assert_eq!(server.wait_for_run("sv_catchup", &latest), "success");
    scheduler_pass(&cmd);
    let runs = cmd.runs("sv_catchup");
    server.stop().expect_code(0);
    let ids: Vec<&str> = runs.iter().map(|r| r["run_id"].as_str().unwrap_or_default()).collect();
    if utc_date(-1) == before {
        assert_eq!(ids, [latest.as_str()]);
    } else {
        // Midnight (UTC) passed during the test: the next day's interval is due as well.
        assert_eq!(ids[0], latest, "{ids:?}");
        assert!(ids.len() <= 2, "{ids:?}");
    }
}

#[test]
fn a_paused_dag_gets_no_runs_until_it_is_unpaused() {
    let (home, cmd) = setup();
    let ledger = home.scratch().join("ledger");
    let cmd = cmd.env("LEDGER", ledger.to_str().expect("UTF-8 path"));
    let days: Vec<String> = (-3..=-2).map(utc_date).collect();
    let file = catchup_dag(&home, &days[0], Some(&days[1]), true, 2);
    cmd.run(["apply", &file, &data("sentinel.yaml")]).expect_code(0);
    let paused = cmd.run(["pause", "sv_catchup"]);
    paused.expect_code(0);
    assert_eq!(paused.stdout, "sv_catchup paused\n");

    let server = Server::start(&cmd, &[]);
    scheduler_pass(&cmd);
    assert_eq!(cmd.runs("sv_catchup"), Vec::<Value>::new(), "a paused DAG got runs");
    let status = cmd.run(["status"]);
    status.expect_code(0);
    let row: Vec<&str> = status.stdout.lines().find(|l| l.starts_with("sv_catchup ")).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row, ["sv_catchup", "@daily", "yes", "-", "-", "-"], "{}", status.stdout);

    // Unpaused through the CLI (and so the API): the missed intervals run.
    let unpaused = cmd.run(["unpause", "sv_catchup"]);
    unpaused.expect_code(0);
    assert_eq!(unpaused.stdout, "sv_catchup unpaused\n");
    let mut watch = FileWatch::new(&ledger);
    let newest = format!("scheduled__{}T00:00:00Z", days[1]);
    let end = format!("end {newest} ");
    watch.wait("the runs after unpause", Duration::from_secs(60), |lines| lines.iter().any(|l| l.starts_with(&end)).then_some(()));
    for day in &days {
        assert_eq!(server.wait_for_run("sv_catchup", &format!("scheduled__{day}T00:00:00Z")), "success");
    }
    assert_eq!(cmd.runs("sv_catchup").len(), 2);
    server.stop().expect_code(0);
}

// ---------------------------------------------------------------------------------------------
// The API's token
// ---------------------------------------------------------------------------------------------

#[test]
fn the_api_needs_the_token_except_for_health_and_never_shows_it() {
    let (home, cmd) = setup();
    cmd.run(["apply", &data("clear.yaml")]).expect_code(0);
    let server = Server::start(&cmd, &[]);
    let token = server.token.clone();
    assert_eq!(token.len(), 64, "a 256-bit token in hex: {token}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.path().join("server.json")).expect("server.json").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "server.json mode {mode:o}");

    let (status, body) = server.http("GET", "/health", None, None);
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["pid"], server.pid());

    let dags = "/api/v1/dags";
    let run = "/api/v1/dags/sv_clear/runs/nope";
    let wrong = "0".repeat(64);
    let prefix = &token[..32];
    for (what, token) in [("no token", None), ("a wrong token", Some(wrong.as_str())), ("half the token", Some(prefix)), ("an empty token", Some(""))] {
        let (status, body) = server.http("GET", dags, token, None);
        assert_eq!(status, 401, "{dags} with {what}: {body}");
        assert!(body.contains("missing or wrong bearer token"), "{body}");
        let (status, body) = server.http("POST", "/api/v1/dags/sv_clear/runs", token, Some("{}"));
        assert_eq!(status, 401, "a trigger with {what}: {body}");
    }
    // With the token: answered.
    let (status, body) = server.http("GET", dags, Some(&token), None);
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(answer["dags"][0]["dag_id"], "sv_clear", "{answer:#}");
    let (status, body) = server.http("GET", run, Some(&token), None);
    assert_eq!(status, 404, "{body}");

    // The CLI, through the server, and a run whose log is written: none of it shows the token.
    let mut shown = Vec::new();
    for args in [vec!["status"], vec!["trigger", "sv_clear", "--wait"], vec!["status", "sv_clear", "--output", "json"]] {
        let run = cmd.run(&args);
        shown.push((args.join(" "), run.stdout + &run.stderr));
    }
    let stopped = server.stop();
    stopped.expect_code(0);
    shown.push(("server stderr".into(), stopped.stderr));
    let mut pending = vec![home.path().join("logs")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read logs folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                shown.push((path.display().to_string(), std::fs::read_to_string(&path).expect("read log")));
            }
        }
    }
    assert!(shown.len() > 5, "{shown:?}");
    let leaks: Vec<&str> = shown.iter().filter(|(_, text)| text.contains(&token)).map(|(what, _)| what.as_str()).collect();
    assert!(leaks.is_empty(), "the token appears in: {leaks:?}");
}

// ---------------------------------------------------------------------------------------------
// clear
// ---------------------------------------------------------------------------------------------

/// Checks a run of clear.yaml after `clear --task mid --downstream`: `mid` and its downstream
/// tasks ran again, `up` and `side` did not and kept their outputs.
fn check_cleared_run(home: &TempHome, cmd: &Cmd, run: &str) {
    let json = cmd.status("sv_clear", run);
    assert_eq!(json["run"]["state"], "success", "{json:#}");
    let ti = tasks(&json);
    for (task, expected) in [("up", 1), ("side", 1), ("mid", 2), ("down", 1), ("last", 1)] {
        assert_eq!(state_and_try(&ti[task]), ("success".into(), expected), "{task}: {json:#}");
    }
    assert_eq!(ti["up"]["outputs"], serde_json::json!({"value": "from-up", "exit_code": 0}));
    assert_eq!(ti["mid"]["max_tries"], 2, "a cleared task gets its retries afresh: {json:#}");
    let ran = std::fs::read_to_string(home.scratch().join("ran")).expect("ran");
    let mut ran: Vec<&str> = ran.lines().collect();
    ran.sort();
    assert_eq!(ran, ["down 1", "last 1", "mid 1", "mid 2", "side 1", "up 1"]);
    // The second try of `mid` read the output `up` wrote in the first run.
    let log = cmd.run(["logs", "sv_clear", run, "mid"]);
    log.expect_code(0);
    assert!(log.stdout.contains(" | got from-up\n") && log.stdout.contains(" flowctl: attempt 2 ended: success"), "{}", log.stdout);
}

/// The failed run's summary, and the one after the clear, with durations masked.
fn check_clear_outputs(failed: &Run, cleared: &Run, run: &str) {
    failed.expect_code(1);
    assert_eq!(
        mask(&failed.stdout),
        mask(&format!(
            "TASK  STATE            TRIES  DURATION  ERROR\n\
             up    success          1/1    1ms\n\
             side  success          1/1    1ms\n\
             mid   failed           1/1    1ms       command exited with code 3: mid: not yet\n\
             down  upstream_failed  0/1    -\n\
             last  upstream_failed  0/1    -\n\
             run {run} failed in 1ms\n"
        ))
    );
    cleared.expect_code(0);
    assert_eq!(
        mask(&cleared.stdout),
        mask(&format!(
            "cleared 3 tasks of run {run} of sv_clear: mid, down, last\n\
             TASK  STATE    TRIES  DURATION  ERROR\n\
             up    success  1/1    1ms\n\
             side  success  1/1    1ms\n\
             mid   success  2/2    1ms\n\
             down  success  1/1    1ms\n\
             last  success  1/1    1ms\n\
             run {run} success in 1ms\n"
        ))
    );
}

#[test]
fn clear_of_a_failed_task_reruns_it_and_its_downstream_tasks_only_without_a_server() {
    let (home, cmd) = setup();
    cmd.run(["apply", &data("clear.yaml")]).expect_code(0);
    let run = "manual__2024-01-01T00:00:00Z";
    let failed = cmd.run(["trigger", "sv_clear", "--date", "2024-01-01", "--wait"]);
    assert_eq!(failed.stdout.lines().next(), Some(format!("run {run} of sv_clear queued").as_str()), "{}", failed.stdout);
    let failed = Run { stdout: failed.stdout.split_once('\n').map(|(_, rest)| rest.to_string()).unwrap_or_default(), ..failed };
    let cleared = cmd.run(["clear", "sv_clear", run, "--task", "mid", "--downstream"]);
    check_clear_outputs(&failed, &cleared, run);
    check_cleared_run(&home, &cmd, run);
}

#[test]
fn clear_of_a_failed_task_reruns_it_and_its_downstream_tasks_only_through_a_server() {
    let (home, cmd) = setup();
    cmd.run(["apply", &data("clear.yaml")]).expect_code(0);
    let server = Server::start(&cmd, &[]);
    let run = "manual__2024-01-01T00:00:00Z";
    let failed = cmd.run(["trigger", "sv_clear", "--date", "2024-01-01", "--wait"]);
    assert_eq!(failed.stdout.lines().next(), Some(format!("run {run} of sv_clear queued").as_str()), "{}", failed.stdout);
    let failed = Run { stdout: failed.stdout.split_once('\n').map(|(_, rest)| rest.to_string()).unwrap_or_default(), ..failed };
    let cleared = cmd.run(["clear", "sv_clear", run, "--task", "mid", "--downstream"]);
    check_clear_outputs(&failed, &cleared, run);
    check_cleared_run(&home, &cmd, run);
    server.stop().expect_code(0);
    check_cleared_run(&home, &cmd, run);
}

// ---------------------------------------------------------------------------------------------
// The same output through the API as directly
// ---------------------------------------------------------------------------------------------

/// Whether a word is a duration as the CLI prints them (`12ms`, `1.5s`).
fn is_duration(word: &str) -> bool {
    word.strip_suffix("ms").or_else(|| word.strip_suffix('s')).is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok())
}

/// Whether a word is a timestamp of today or later (when a run started or ended), as opposed
/// to the logical dates of the test's runs, which are in the past.
fn is_wall_clock(word: &str) -> bool {
    let today = utc_date(0);
    word.len() >= 20 && word.ends_with('Z') && word.as_bytes()[10] == b'T' && word[..10] >= *today
}

/// Output with run timings masked, and each line's words joined by one space (table columns
/// widen with longer durations).
fn mask(text: &str) -> String {
    text.lines()
        .map(|line| {
            line.split_whitespace()
                .map(|w| if is_duration(w) { "<duration>" } else if is_wall_clock(w) { "<time>" } else { w })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the same command in a home without a server and in one with, and asserts the same exit
/// code and output, timings masked.
#[track_caller]
fn same_output(direct: &Cmd, served: &Cmd, args: &[&str]) -> Run {
    let a = direct.run(args);
    let b = served.run(args);
    let show = |r: &Run| format!("exit {}\n--- stdout ---\n{}--- stderr ---\n{}", r.code, r.stdout, r.stderr);
    assert_eq!(
        (a.code, mask(&a.stdout), mask(&a.stderr)),
        (b.code, mask(&b.stdout), mask(&b.stderr)),
        "`flowctl {}` differs\n=== without a server ===\n{}\n=== through the server ===\n{}",
        args.join(" "),
        show(&a),
        show(&b)
    );
    b
}

#[test]
fn the_cli_prints_the_same_through_the_api_as_directly() {
    let (_direct_home, direct) = setup();
    let (served_home, served) = setup();
    let server = Server::start(&served, &[]);
    let file = data("cli.yaml");
    let run = "manual__2024-02-01T00:00:00Z";

    let applied = same_output(&direct, &served, &["apply", &file, &data("sentinel.yaml")]);
    assert!(applied.stdout.ends_with("applied: 2 added, 0 changed, 0 unchanged\n"), "{}", applied.stdout);
    same_output(&direct, &served, &["apply", &file]);
    let triggered = same_output(&direct, &served, &["trigger", "sv_cli", "--date", "2024-02-01", "--wait"]);
    assert!(triggered.stdout.starts_with(&format!("run {run} of sv_cli queued\nTASK ")), "{}", triggered.stdout);
    assert!(mask(&triggered.stdout).ends_with(&format!("run {run} success in <duration>")), "{}", triggered.stdout);
    let backfill = same_output(&direct, &served, &["backfill", "sv_cli", "--from", "2024-01-01", "--to", "2024-01-03"]);
    assert!(backfill.stdout.contains("backfill__2024-01-03T00:00:00Z  2024-01-03T00:00:00Z  2024-01-04T00:00:00Z  created"), "{}", backfill.stdout);
    // Without waiting: the same table; without a server, a note says the new run waits for one.
    let args = ["backfill", "sv_cli", "--from", "2024-01-02", "--to", "2024-01-04", "--no-wait"];
    let (queued_here, queued_there) = (direct.run(args), served.run(args));
    queued_here.expect_code(0);
    queued_there.expect_code(0);
    assert_eq!(queued_here.stdout, queued_there.stdout);
    assert!(queued_there.stdout.contains("kept (success)") && queued_there.stdout.contains("backfill__2024-01-04T00:00:00Z"), "{}", queued_there.stdout);
    assert_eq!(queued_there.stderr, "");
    assert!(queued_here.stderr.starts_with("note: no server runs for this home, so the run waits in the queue"), "{}", queued_here.stderr);
    for args in [
        vec!["pause", "sv_cli"],
        vec!["pause", "sv_cli"],
        vec!["unpause", "sv_cli"],
        vec!["unpause", "sv_cli"],
        vec!["clear", "sv_cli", run, "--task", "load", "--downstream"],
        vec!["clear", "sv_cli", run, "--failed-only"],
        vec!["clear", "sv_cli", run, "--task", "lod"],
        vec!["clear", "sv_cli", "no_such_run"],
        vec!["cancel", "sv_cli", run],
        vec!["trigger", "sv_clli"],
        vec!["trigger", "sv_cli", "--param", "x=1"],
        vec!["backfill", "zz_sentinel", "--from", "2024-01-01", "--to", "2024-01-02"],
        vec!["backfill", "sv_cli", "--from", "2024-01-05", "--to", "2024-01-01"],
        vec!["status", "sv_clii"],
        vec!["status", "sv_cli", "no_such_run"],
        vec!["apply", "no/such/file.yaml"],
        vec!["apply", "tests/data/runtime/broken.yaml"],
    ] {
        same_output(&direct, &served, &args);
    }

    // `status` at its three levels, text and JSON, against the same state: exactly the same.
    // The server schedules the DAG's latest interval itself; let it end first.
    for run in ["scheduled__2024-01-10T00:00:00Z", "backfill__2024-01-04T00:00:00Z"] {
        assert_eq!(server.wait_for_run("sv_cli", run), "success", "{run}");
    }
    scheduler_pass(&served);
    let mut queries: Vec<Vec<String>> = vec![vec!["status".into()], vec!["status".into(), "sv_cli".into()]];
    for r in served.runs("sv_cli") {
        queries.push(vec!["status".into(), "sv_cli".into(), r["run_id"].as_str().expect("run_id").into()]);
    }
    let queries: Vec<Vec<String>> = queries
        .into_iter()
        .flat_map(|q| {
            let json = q.iter().cloned().chain(["--output".into(), "json".into()]).collect();
            [q, json]
        })
        .collect();
    let through_server: Vec<Run> = queries.iter().map(|q| served.run(q)).collect();
    server.stop().expect_code(0);
    assert!(!served_home.path().join("server.json").exists());
    for (query, answer) in queries.iter().zip(&through_server) {
        answer.expect_code(0);
        let direct_answer = served.run(query);
        assert_eq!(
            (answer.stdout.as_str(), answer.stderr.as_str()),
            (direct_answer.stdout.as_str(), direct_answer.stderr.as_str()),
            "`flowctl {}` differs through the server",
            query.join(" ")
        );
    }
    assert_eq!(queries.len(), 2 * (2 + 6), "{queries:?}");
}

// ---------------------------------------------------------------------------------------------
// Where the server listens
// ---------------------------------------------------------------------------------------------

#[test]
fn listening_beyond_this_machine_needs_an_explicit_token() {
    let (home, cmd) = setup();
    let refused = cmd.run_within(Duration::from_secs(30), ["server", "--listen", "0.0.0.0:0"]);
    refused.expect_code(2);
    assert_eq!(
        refused.stderr,
        "error: refusing to listen on 0.0.0.0:0, beyond this machine, with a generated token; set FLOWCTL_API_TOKEN to a secret of your own (at least 32 characters) and start again, or listen on 127.0.0.1\n"
    );
    assert!(!home.path().join("server.json").exists());

    for listen in ["garbage", "127.0.0.1", "127.0.0.1:99999", ""] {
        let refused = cmd.run_within(Duration::from_secs(30), ["server", "--listen", listen]);
        refused.expect_code(2);
        assert_eq!(
            refused.stderr,
            format!("error: --listen \"{listen}\": expected an address and port, e.g. 127.0.0.1:8787 or localhost:8787\n")
        );
    }

    // A token of its own must be a real secret.
    let short = cmd.clone().env("FLOWCTL_API_TOKEN", "hunter2");
    let refused = short.run_within(Duration::from_secs(30), ["server", "--listen", "0.0.0.0:0"]);
    refused.expect_code(2);
    assert_eq!(
        refused.stderr,
        "error: FLOWCTL_API_TOKEN is 7 characters long; use a secret of at least 32 characters: generate one with `openssl rand -hex 32` (or `head -c 32 /dev/urandom | base64`)\n"
    );

    // With a token of its own, it listens anywhere, and the API takes that token.
    let secret = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let cmd = cmd.env("FLOWCTL_API_TOKEN", secret);
    let server = Server::start_on(&cmd, "0.0.0.0:0", &[]);
    assert!(server.address.starts_with("0.0.0.0:"), "{}", server.address);
    assert_eq!(server.token, secret);
    let port = server.address.rsplit(':').next().expect("port").to_string();
    let local = format!("127.0.0.1:{port}");
    assert_eq!(util::http(&local, "GET", "/api/v1/dags", Some(secret), None).0, 200);
    assert_eq!(util::http(&local, "GET", "/api/v1/dags", None, None).0, 401);
    server.stop().expect_code(0);
}

// ---------------------------------------------------------------------------------------------
// --dags DIR
// ---------------------------------------------------------------------------------------------

/// Each DAG's applied version, from `status --output json`.
fn versions(cmd: &Cmd) -> BTreeMap<String, u64> {
    cmd.versions().into_iter().collect()
}

/// Polls `status` (through the server) until `done` holds for the applied versions; at most
/// 30 seconds. Folder changes reach the server through inotify and a settle delay, and nothing
/// tells the CLI when they were applied, so this is the one place the tests poll.
#[track_caller]
fn poll_versions(cmd: &Cmd, what: &str, done: impl Fn(&BTreeMap<String, u64>) -> bool) -> BTreeMap<String, u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = versions(cmd);
        if done(&now) {
            return now;
        }
        assert!(std::time::Instant::now() < deadline, "waited 30s for {what}; versions: {now:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_server_applies_its_dags_folder_and_keeps_the_last_good_version_of_a_broken_file() {
    let (home, cmd) = setup();
    let alpha = "dag: sv_alpha\ntasks:\n  - id: a\n    operator: shell\n    with: { command: echo one }\n";
    let beta = "dag: sv_beta\ntasks:\n  - id: b\n    operator: noop\n";
    home.write("dags/alpha.yaml", alpha);
    home.write("dags/beta.yaml", beta);
    let dir = home.scratch().join("dags");
    let mut server = Server::start(&cmd, &["--dags", dir.to_str().expect("UTF-8 path")]);
    let expected = BTreeMap::from([("sv_alpha".to_string(), 1), ("sv_beta".to_string(), 1)]);
    poll_versions(&cmd, "the folder to be applied", |v| *v == expected);

    // An edit is applied.
    home.write("dags/alpha.yaml", &alpha.replace("echo one", "echo two"));
    poll_versions(&cmd, "the edit to be applied", |v| v.get("sv_alpha") == Some(&2));

    // A file that stops compiling is reported with its diagnostics, and its DAG keeps its last
    // good version.
    let broken = home.write("dags/alpha.yaml", &alpha.replace("operator: shell", "operator: shel"));
    server.wait_for_stderr(&format!("flowctl server: {} does not compile; its DAG keeps its last good version", broken.display()));
    server.wait_for_stderr(&format!("{}:4:15: error: task \"a\": unknown operator \"shel\" (did you mean \"shell\"?)", broken.display()));
    assert_eq!(versions(&cmd), BTreeMap::from([("sv_alpha".to_string(), 2), ("sv_beta".to_string(), 1)]));
    // The other files are still applied.
    home.write("dags/beta.yaml", &format!("{beta}  - id: b2\n    operator: noop\n"));
    let now = poll_versions(&cmd, "the other file's edit to be applied", |v| v.get("sv_beta") == Some(&2));
    assert_eq!(now.get("sv_alpha"), Some(&2), "{now:?}");
    let run = cmd.run(["trigger", "sv_alpha", "--date", "2024-01-01", "--wait"]);
    run.expect_code(0);
    let log = cmd.run(["logs", "sv_alpha", "manual__2024-01-01T00:00:00Z", "a"]);
    assert!(log.stdout.contains(" | two\n"), "the run used the last good version:\n{}", log.stdout);

    // Fixed again: applied again.
    home.write("dags/alpha.yaml", &alpha.replace("echo one", "echo three"));
    poll_versions(&cmd, "the fixed file to be applied", |v| v.get("sv_alpha") == Some(&3));
    server.stop().expect_code(0);
}

// ---------------------------------------------------------------------------------------------
// logs --follow through the server
// ---------------------------------------------------------------------------------------------

/// Waits until an attempt's log holds a line ending with `needle`.
fn wait_for_log_line(home: &TempHome, run: &str, attempt: u32, needle: &str) {
    let log = home.log_path("sv_follow", run, "gated", attempt);
    std::fs::create_dir_all(log.parent().expect("folder")).expect("log folder");
    FileWatch::new(&log).wait(needle, Duration::from_secs(30), |lines| lines.iter().any(|l| l.ends_with(needle)).then_some(()));
}

#[test]
fn logs_follow_streams_through_the_server_and_ends_for_an_interrupted_attempt() {
    let (home, cmd) = setup();
    let gate = home.fifo("gate.fifo");
    let server = Server::start(&cmd, &[]);
    cmd.run(["apply", &data("follow.yaml")]).expect_code(0);
    let run = "manual__2024-01-01T00:00:00Z";
    cmd.run(["trigger", "sv_follow", "--date", "2024-01-01"]).expect_code(0);
    wait_for_log_line(&home, run, 1, " | first of try 1");

    // Killed while the attempt runs: its log never gets a last line. Following it through the
    // restarted server (which holds the home, so a reader of the file alone would wait forever)
    // ends once the task has moved on to its retry.
    server.kill();
    let server = Server::start(&cmd, &[]);
    wait_for_log_line(&home, run, 2, " | first of try 2");
    let followed = cmd.run_within(Duration::from_secs(30), ["logs", "sv_follow", run, "gated", "--attempt", "1", "--follow"]);
    followed.expect_code(0);
    assert!(followed.stdout.contains(" | first of try 1\n"), "{}", followed.stdout);
    assert!(
        followed.stdout.ends_with("(this attempt is no longer running and wrote no last line: flowctl stopped while it ran)\n"),
        "{}",
        followed.stdout
    );

    // Following the running try: the lines so far, then the new ones as the task writes them,
    // until its last line.
    let mut follow = cmd.command(["logs", "sv_follow", run, "gated", "--follow"]).stdout(std::process::Stdio::piped()).spawn().expect("follow");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(follow.stdout.take().expect("stdout")));
    let first = lines.by_ref().map_while(Result::ok).find(|l| l.ends_with(" | first of try 2"));
    assert!(first.is_some(), "the follower printed the lines so far");
    std::fs::write(&gate, "go\n").expect("open the gate");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(follow.wait().expect("wait").success());
    assert!(rest.iter().any(|l| l.ends_with(" | second of try 2")), "{rest:#?}");
    assert!(rest.last().is_some_and(|l| l.ends_with(" flowctl: attempt 2 ended: success")), "{rest:#?}");
    server.stop().expect_code(0);
}
