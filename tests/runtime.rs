//! End-to-end tests of the runtime: the real `flowctl` binary runs DAGs from `tests/data/runtime/`
//! (or written by the test) in a temporary home, and the tests check what it prints, what
//! `flowctl status` and `flowctl logs` show, and what happened to the processes it started.
//!
//! Nothing here sleeps to wait for something: tests that need a run to be in a given state read
//! its progress lines from stdout, or a FIFO the task writes to, and wait for processes to exit.

mod util;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdout, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use util::{assert_not_running, read_fifo, setup_with_scratch, task_in, Cmd, Run, TempHome};

const DATA: &str = "tests/data/runtime";

fn dag_file(name: &str) -> String {
    format!("{DATA}/{name}")
}

/// A task instance's state, try number and tries allowed.
fn tries(ti: &Value) -> (&str, u64, u64) {
    let number = |key: &str| ti[key].as_u64().unwrap_or_else(|| panic!("{key} in {ti:#}"));
    (ti["state"].as_str().unwrap_or_default(), number("try_number"), number("max_tries"))
}

/// The attempt log files of a task, sorted: `["1.log", "2.log"]`.
fn attempt_logs(home: &TempHome, dag: &str, run: &str, task: &str) -> Vec<String> {
    let dir = home.log_dir(dag, run, task);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The lines of task output in an attempt log (after ` | `).
fn output_lines(log: &str) -> Vec<&str> {
    log.lines().filter_map(|l| l.split_once(" | ").map(|(_, text)| text)).collect()
}

/// The table row of `task` in a closing summary, split on whitespace.
fn row<'a>(table: &'a str, task: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&task))
        .unwrap_or_else(|| panic!("no row for {task} in:\n{table}"))
}

/// Whether a duration cell reads like `12ms` or `1.0s`.
fn is_duration(cell: &str) -> bool {
    cell.strip_suffix("ms").or_else(|| cell.strip_suffix('s')).is_some_and(|n| n.parse::<f64>().is_ok())
}

/// A stored UTC timestamp (`2024-03-01T00:00:00.5Z`, with 0 to 9 digits of fraction) in a form
/// that sorts in time order: the whole seconds, then the fraction padded to nanoseconds.
fn instant(value: &Value) -> (String, String) {
    let text = value.as_str().unwrap_or_else(|| panic!("not a timestamp: {value}"));
    let text = text.strip_suffix('Z').unwrap_or_else(|| panic!("not UTC: {text}"));
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    (seconds.to_string(), format!("{fraction:0<9}"))
}

fn read_pid(path: &Path) -> i32 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.trim().parse().unwrap_or_else(|e| panic!("pid in {}: {text:?}: {e}", path.display()))
}

/// A `flowctl` process running in the background, its stdout read line by line. If the test
/// fails while it runs, it is interrupted (so it stops its tasks) and waited for.
struct Background {
    child: Option<Child>,
    stdout: Option<BufReader<ChildStdout>>,
    seen: Vec<String>,
}

impl Background {
    fn start(cmd: &Cmd, args: &[&str]) -> Background {
        let mut child =
            cmd.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start flowctl");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Background { child: Some(child), stdout: Some(stdout), seen: Vec::new() }
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// Reads stdout until a line contains `needle`; fails if stdout ends first.
    fn wait_for_line(&mut self, needle: &str) -> String {
        let stdout = self.stdout.as_mut().expect("stdout");
        loop {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).expect("read stdout");
            assert!(n > 0, "flowctl's stdout ended before a line with {needle:?}:\n{}", self.seen.join(""));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    fn interrupt(&self) {
        kill(self.pid(), Signal::SIGINT).expect("send SIGINT");
    }

    /// Waits for the exit and returns everything it printed.
    fn finish(mut self) -> Run {
        let mut child = self.child.take().expect("running");
        let mut stdout = self.seen.concat();
        self.stdout.take().expect("stdout").read_to_string(&mut stdout).expect("read stdout");
        let mut stderr = String::new();
        child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("read stderr");
        let status = child.wait().expect("wait for flowctl");
        Run { code: status.code().unwrap_or(-1), stdout, stderr }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
            }
            let _ = child.wait();
        }
    }
}

#[test]
fn a_successful_run_shows_in_run_status_and_logs() {
    let (home, cmd) = setup_with_scratch();
    let file = dag_file("success.yaml");
    let run = cmd.run(["run", &file]);
    run.expect_code(0);
    let id = run.run_id();
    assert!(id.starts_with("manual__"), "{id}");

    // The closing table: every task with its state, tries and duration; then the verdict.
    let header = run.stdout.lines().find(|l| l.starts_with("TASK")).unwrap_or_else(|| panic!("no table:\n{}", run.stdout));
    assert_eq!(header.split_whitespace().collect::<Vec<_>>(), ["TASK", "STATE", "TRIES", "DURATION", "ERROR"]);
    for name in ["extract", "load", "done"] {
        let cells = row(&run.stdout, name);
        assert_eq!(cells[1..3], ["success", "1/1"], "{name}: {cells:?}\n{}", run.stdout);
        assert!(is_duration(cells[3]), "{name} duration {:?}", cells[3]);
        assert_eq!(cells.len(), 4, "{name} has no error: {cells:?}");
    }
    let last = run.stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with(&format!("run {id} success in ")), "last line: {last}");

    // `status`: the DAG with its last run.
    let status = cmd.run(["status"]);
    status.expect_code(0);
    let cells = row(&status.stdout, "rt_success");
    assert_eq!(cells, ["rt_success", "manual", "no", &id, "success", "1", "success"], "{}", status.stdout);
    let dags = cmd.json(["status", "--output", "json"]);
    assert_eq!(dags.as_array().map(Vec::len), Some(1), "{dags:#}");
    assert_eq!(dags[0]["dag_id"], "rt_success");
    assert_eq!(dags[0]["version"], 1);
    assert_eq!(dags[0]["last_run"], serde_json::json!({"run_id": id, "state": "success"}));
    assert_eq!(dags[0]["runs_by_state"], serde_json::json!({"success": 1}));

    // `status DAG`: its runs.
    let runs = cmd.run(["status", "rt_success"]);
    runs.expect_code(0);
    let cells = row(&runs.stdout, &id);
    assert_eq!(cells[2..4], ["manual", "success"], "{}", runs.stdout);
    let runs = cmd.json(["status", "rt_success", "--output", "json"]);
    assert_eq!(runs.as_array().map(Vec::len), Some(1), "{runs:#}");
    assert_eq!(runs[0]["run_id"], id.as_str());
    assert_eq!(runs[0]["state"], "success");
    assert_eq!(runs[0]["note"], Value::Null);

    // `status DAG RUN`: its tasks.
    let tasks = cmd.run(["status", "rt_success", &id]);
    tasks.expect_code(0);
    assert!(tasks.stdout.starts_with(&format!("run {id} of rt_success: success in ")), "{}", tasks.stdout);
    for name in ["extract", "load", "done"] {
        assert_eq!(row(&tasks.stdout, name)[1..3], ["success", "1/1"], "{}", tasks.stdout);
    }
    let json = cmd.status("rt_success", &id);
    assert_eq!(json["run"]["state"], "success");
    for name in ["extract", "load", "done"] {
        let ti = task_in(&json, name);
        assert_eq!(tries(ti), ("success", 1, 1), "{ti:#}");
        assert_eq!(ti["error"], Value::Null);
    }
    assert_eq!(task_in(&json, "extract")["outputs"], serde_json::json!({"exit_code": 0}));
    // `load` depends on `extract`: it started after `extract` ended.
    let (extract_end, load_start) = (instant(&task_in(&json, "extract")["end"]), instant(&task_in(&json, "load")["start"]));
    assert!(extract_end <= load_start, "load started at {load_start:?}, before extract ended at {extract_end:?}");

    // `logs DAG RUN TASK`: the task's stdout, between flowctl's first and last lines.
    let logs = cmd.run(["logs", "rt_success", &id, "extract"]);
    logs.expect_code(0);
    assert_eq!(output_lines(&logs.stdout), ["extract line one", "extract line two"], "{}", logs.stdout);
    let lines: Vec<&str> = logs.stdout.lines().collect();
    assert!(lines[0].ends_with(" flowctl: attempt 1 of 1 of task extract (shell)"), "{}", logs.stdout);
    assert!(lines[lines.len() - 1].ends_with(" flowctl: attempt 1 ended: success"), "{}", logs.stdout);
    let logs = cmd.run(["logs", "rt_success", &id, "load"]);
    logs.expect_code(0);
    assert_eq!(output_lines(&logs.stdout), ["loading for rt_success"], "{}", logs.stdout);
    assert_eq!(attempt_logs(&home, "rt_success", &id, "extract"), ["1.log"]);
}

#[test]
fn failed_attempts_are_retried_until_the_tries_run_out() {
    let (home, cmd) = setup_with_scratch();
    let run = cmd.run(["run", &dag_file("retries.yaml")]);
    // `broken` fails for good, and it is a leaf: the run fails.
    run.expect_code(1);
    let id = run.run_id();
    assert!(run.stdout.lines().last().unwrap_or_default().starts_with(&format!("run {id} failed in ")), "{}", run.stdout);
    assert_eq!(row(&run.stdout, "flaky")[1..3], ["success", "3/4"], "{}", run.stdout);
    assert_eq!(row(&run.stdout, "broken")[1..3], ["failed", "3/3"], "{}", run.stdout);
    for try_number in 1..=3 {
        assert!(run.stdout.contains(&format!("broken running (try {try_number}/3)")), "{}", run.stdout);
    }

    // `flaky` ran exactly three times: the counter, the attempt logs and the try number agree.
    assert_eq!(std::fs::read_to_string(home.scratch().join("count")).expect("counter").trim(), "3");
    assert_eq!(attempt_logs(&home, "rt_retries", &id, "flaky"), ["1.log", "2.log", "3.log"]);
    let json = cmd.status("rt_retries", &id);
    assert_eq!(json["run"]["state"], "failed");
    let flaky = task_in(&json, "flaky");
    assert_eq!(tries(flaky), ("success", 3, 4), "{flaky:#}");
    assert_eq!(flaky["error"], Value::Null, "a success clears the last failure's error");
    for n in 1..=3 {
        let log = cmd.run(["logs", "rt_retries", &id, "flaky", "--attempt", &n.to_string()]);
        log.expect_code(0);
        let mut expected = vec![format!("counted attempt {n}, try {n}")];
        if n < 3 {
            expected.push(format!("not yet: attempt {n}"));
        }
        assert_eq!(output_lines(&log.stdout), expected, "{}", log.stdout);
        // Whatever the outcome, the last line of the log is flowctl's end line, alone on its line.
        let last = log.stdout.lines().last().unwrap_or_default();
        let state = if n < 3 { format!("failed: command exited with code 3: not yet: attempt {n}") } else { "success".to_string() };
        let end = format!(" flowctl: attempt {n} ended: {state}");
        assert!(last.ends_with(&end), "attempt {n} ends with {last:?}:\n{}", log.stdout);
    }

    // `broken` used its two retries and failed with the exit code and the stderr tail.
    assert_eq!(attempt_logs(&home, "rt_retries", &id, "broken"), ["1.log", "2.log", "3.log"]);
    let broken = task_in(&json, "broken");
    assert_eq!(tries(broken), ("failed", 3, 3), "{broken:#}");
    assert_eq!(
        broken["error"],
        "command exited with code 7: last stderr line of try 3\nlast lines of stderr:\nfirst stderr line\nlast stderr line of try 3",
        "{broken:#}"
    );
    let latest = cmd.run(["logs", "rt_retries", &id, "broken"]);
    latest.expect_code(0);
    assert_eq!(output_lines(&latest.stdout), ["broken try 3", "first stderr line", "last stderr line of try 3"]);
}

#[test]
fn a_timed_out_task_fails_and_its_children_are_stopped() {
    let (home, cmd) = setup_with_scratch();
    let run = cmd.run(["run", &dag_file("timeout.yaml")]);
    run.expect_code(1);
    let id = run.run_id();
    // The background sleep the shell started is not left running.
    assert_not_running(read_pid(&home.scratch().join("pid")));

    assert_eq!(row(&run.stdout, "hang")[1..3], ["failed", "1/1"], "{}", run.stdout);
    let json = cmd.status("rt_timeout", &id);
    assert_eq!(json["run"]["state"], "failed");
    let hang = task_in(&json, "hang");
    assert_eq!(hang["state"], "failed");
    assert_eq!(hang["error"], "timed out after 1s");
    let log = cmd.run(["logs", "rt_timeout", &id, "hang"]);
    log.expect_code(0);
    assert!(log.stdout.contains(" flowctl: timed out after 1s; stopping\n"), "{}", log.stdout);
    assert!(log.stdout.trim_end().ends_with(" flowctl: attempt 1 ended: failed: timed out after 1s"), "{}", log.stdout);
}

/// The nine trigger rules, in the order of the columns of [`MATRIX`].
const RULES: [&str; 9] = [
    "all_success",
    "all_failed",
    "all_done",
    "one_success",
    "one_failed",
    "none_failed",
    "none_skipped",
    "none_failed_min_one_success",
    "always",
];

/// Airflow's outcome for a downstream (noop) task under each rule, given how its two upstream
/// tasks ended: S success, F failed, U upstream_failed, K skipped. `success` means the rule let it
/// run (and the noop succeeded).
const MATRIX: &[(&str, [&str; 9])] = {
    const OK: &str = "success";
    const SKIP: &str = "skipped";
    const UPF: &str = "upstream_failed";
    &[
        ("ss", [OK, SKIP, OK, OK, SKIP, OK, OK, OK, OK]),
        ("sf", [UPF, SKIP, OK, OK, OK, UPF, OK, UPF, OK]),
        ("su", [UPF, SKIP, OK, OK, OK, UPF, OK, UPF, OK]),
        ("sk", [SKIP, SKIP, OK, OK, SKIP, OK, SKIP, OK, OK]),
        ("ff", [UPF, OK, OK, UPF, OK, UPF, OK, UPF, OK]),
        ("fu", [UPF, OK, OK, UPF, OK, UPF, OK, UPF, OK]),
        ("fk", [UPF, SKIP, OK, UPF, OK, UPF, SKIP, UPF, OK]),
        ("uu", [UPF, OK, OK, UPF, OK, UPF, OK, UPF, OK]),
        ("uk", [UPF, SKIP, OK, UPF, OK, UPF, SKIP, UPF, OK]),
        ("kk", [SKIP, SKIP, OK, SKIP, SKIP, OK, SKIP, SKIP, OK]),
    ]
};

/// The upstream pair of each mix: two tasks of each outcome, so each pair has distinct tasks.
fn upstream_pair(mix: &str) -> [&'static str; 2] {
    match mix {
        "ss" => ["s1", "s2"],
        "sf" => ["s1", "f1"],
        "su" => ["s1", "u1"],
        "sk" => ["s1", "k1"],
        "ff" => ["f1", "f2"],
        "fu" => ["f2", "u1"],
        "fk" => ["f1", "k1"],
        "uu" => ["u1", "u2"],
        "uk" => ["u1", "k1"],
        "kk" => ["k1", "k2"],
        other => panic!("unknown mix {other}"),
    }
}

fn trigger_matrix_dag() -> String {
    let mut dag = String::from("dag: rt_trigger_rules\ntasks:\n");
    for (id, code) in [("s1", 0), ("s2", 0), ("f1", 1), ("f2", 1), ("k1", 99), ("k2", 99)] {
        dag.push_str(&format!("  - id: {id}\n    operator: shell\n    with: {{ command: \"exit {code}\" }}\n"));
    }
    // u1, u2: upstream_failed, because their upstream task failed.
    dag.push_str("  - id: u1\n    operator: noop\n    depends_on: [f1]\n");
    dag.push_str("  - id: u2\n    operator: noop\n    depends_on: [f2]\n");
    for (mix, _) in MATRIX {
        let [a, b] = upstream_pair(mix);
        for rule in RULES {
            dag.push_str(&format!(
                "  - id: {mix}_{rule}\n    operator: noop\n    depends_on: [{a}, {b}]\n    trigger_rule: {rule}\n"
            ));
        }
    }
    // Propagation over two levels: skips after a skip, upstream_failed after upstream_failed.
    dag.push_str("  - id: after_skip\n    operator: noop\n    depends_on: [k1]\n");
    dag.push_str("  - id: after_after_skip\n    operator: noop\n    depends_on: [after_skip]\n");
    dag.push_str("  - id: after_upstream_failed\n    operator: noop\n    depends_on: [u1]\n");
    dag.push_str("  - id: after_after_upstream_failed\n    operator: noop\n    depends_on: [after_upstream_failed]\n");
    dag
}

#[test]
fn trigger_rules_decide_as_airflow_does() {
    let (home, cmd) = setup_with_scratch();
    let file = home.write("trigger_rules.yaml", &trigger_matrix_dag());
    let run = cmd.run(["run", file.to_str().expect("UTF-8 path")]);
    // Leaves end upstream_failed: the run fails.
    run.expect_code(1);
    let id = run.run_id();
    let json = cmd.status("rt_trigger_rules", &id);
    assert_eq!(json["run"]["state"], "failed");

    let mut wrong = Vec::new();
    let mut check = |name: &str, want: &str| {
        let got = task_in(&json, name)["state"].as_str().unwrap_or_default().to_string();
        if got != want {
            wrong.push(format!("{name}: expected {want}, got {got}"));
        }
    };
    for (ids, want) in [(["s1", "s2"], "success"), (["f1", "f2"], "failed"), (["k1", "k2"], "skipped")] {
        ids.iter().for_each(|id| check(id, want));
    }
    check("u1", "upstream_failed");
    check("u2", "upstream_failed");
    for (mix, outcomes) in MATRIX {
        for (rule, want) in RULES.iter().zip(outcomes) {
            check(&format!("{mix}_{rule}"), want);
        }
    }
    check("after_skip", "skipped");
    check("after_after_skip", "skipped");
    check("after_upstream_failed", "upstream_failed");
    check("after_after_upstream_failed", "upstream_failed");
    assert!(wrong.is_empty(), "{} tasks ended wrong:\n  {}", wrong.len(), wrong.join("\n  "));

    // Tasks decided by their trigger rule never ran: no attempt, no log.
    let skipped = task_in(&json, "kk_all_success");
    assert_eq!(skipped["try_number"], 0, "{skipped:#}");
    assert!(!home.log_dir("rt_trigger_rules", &id, "kk_all_success").exists());
    assert_eq!(row(&run.stdout, "after_after_upstream_failed")[1..3], ["upstream_failed", "0/1"]);
    assert_eq!(row(&run.stdout, "k1")[1..3], ["skipped", "1/1"], "skipping by exit code is an attempt");
}

#[test]
fn the_run_fails_only_when_a_leaf_fails() {
    let (_home, cmd) = setup_with_scratch();
    // A failed task whose leaf runs under all_done, and a skipped leaf: the run succeeds.
    let run = cmd.run(["run", &dag_file("leaves_ok.yaml")]);
    run.expect_code(0);
    let json = cmd.status("rt_leaves_ok", &run.run_id());
    assert_eq!(json["run"]["state"], "success");
    assert_eq!(task_in(&json, "bad")["state"], "failed");
    assert_eq!(task_in(&json, "cleanup")["state"], "success");
    assert_eq!(task_in(&json, "nothing_to_do")["state"], "skipped");

    // The same, plus a leaf that ends upstream_failed: the run fails.
    let run = cmd.run(["run", &dag_file("leaf_upstream_failed.yaml")]);
    run.expect_code(1);
    let json = cmd.status("rt_leaf_upstream_failed", &run.run_id());
    assert_eq!(json["run"]["state"], "failed");
    assert_eq!(task_in(&json, "cleanup")["state"], "success");
    assert_eq!(task_in(&json, "report")["state"], "upstream_failed");
}

#[test]
fn outputs_params_and_dates_reach_downstream_templates() {
    let (home, cmd) = setup_with_scratch();
    let file = dag_file("outputs.yaml");
    let run = cmd.run(["run", &file, "--param", "x=from the command line", "--date", "2024-03-01"]);
    run.expect_code(0);
    let id = run.run_id();
    assert_eq!(id, "manual__2024-03-01T00:00:00Z");

    let log = cmd.run(["logs", "rt_outputs", &id, "b"]);
    log.expect_code(0);
    assert_eq!(
        output_lines(&log.stdout),
        ["path is /x/y", "a exited with 0", "notes: first note", "second note", "x is from the command line, ds is 2024-03-01"],
        "{}",
        log.stdout
    );
    let json = cmd.status("rt_outputs", &id);
    assert_eq!(
        task_in(&json, "a")["outputs"],
        serde_json::json!({"path": "/x/y", "notes": "first note\nsecond note", "exit_code": 0})
    );
    assert_eq!(task_in(&json, "b")["outputs"], serde_json::json!({"exit_code": 0}));
    assert_eq!(json["run"]["params"], serde_json::json!({"x": "from the command line"}));
    assert_eq!(json["run"]["logical_date"], "2024-03-01T00:00:00Z");

    // Without --param the default applies; the same date gives the next free run id.
    let run = cmd.run(["run", &file, "--date", "2024-03-01"]);
    run.expect_code(0);
    let second = run.run_id();
    assert_eq!(second, "manual__2024-03-01T00:00:00Z.2");
    let log = std::fs::read_to_string(home.log_dir("rt_outputs", &second, "b").join("1.log")).expect("log");
    assert!(output_lines(&log).contains(&"x is default-x, ds is 2024-03-01"), "{log}");
}

#[test]
fn ctrl_c_cancels_the_run_and_stops_its_tasks() {
    let (home, cmd) = setup_with_scratch();
    let fifo = home.fifo("pid.fifo");
    let mut flowctl = Background::start(&cmd, &["run", &dag_file("cancel.yaml")]);
    let line = flowctl.wait_for_line(" block running (try 1/1)");
    assert!(line.ends_with(" block running (try 1/1)\n"), "{line}");
    // The task has started its sleep once it has written the sleep's pid.
    let sleep_pid: i32 = read_fifo(&fifo).trim().parse().expect("pid");
    flowctl.interrupt();
    let run = flowctl.finish();
    run.expect_code(1);
    assert_not_running(sleep_pid);

    let id = run.run_id();
    assert!(run.stderr.contains("cancelling: stopping running tasks"), "{}", run.stderr);
    let last = run.stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with(&format!("run {id} failed in ")) && last.ends_with(" (cancelled by the user)"), "{last}");
    let json = cmd.status("rt_cancel", &id);
    assert_eq!(json["run"]["state"], "failed");
    assert_eq!(json["run"]["note"], "cancelled by the user");
    let block = task_in(&json, "block");
    assert_eq!((&block["state"], &block["error"]), (&"failed".into(), &"cancelled by the user".into()), "{block:#}");
    // The task after it never started.
    let after = task_in(&json, "after");
    assert_eq!((&after["state"], &after["try_number"]), (&"none".into(), &0.into()), "{after:#}");
    let runs = cmd.run(["status", "rt_cancel"]);
    assert!(row(&runs.stdout, &id).ends_with(&["cancelled", "by", "the", "user"]), "{}", runs.stdout);
}

#[test]
fn a_second_ctrl_c_quits_at_once_and_takes_the_runs_processes_along() {
    let (home, cmd) = setup_with_scratch();
    let fifo = home.fifo("pid.fifo");
    let mut flowctl = Background::start(&cmd, &["run", &dag_file("stubborn.yaml")]);
    let first = flowctl.wait_for_line(" of rt_stubborn (");
    let id = first.split_whitespace().nth(1).expect("run id").to_string();
    flowctl.wait_for_line(" block running (try 1/1)");
    let sleep_pid: i32 = read_fifo(&fifo).trim().parse().expect("pid");

    // The first Ctrl-C reaches the attempt (its log says so), which ignores SIGTERM for 5 minutes.
    flowctl.interrupt();
    let log = home.path().join("logs/rt_stubborn").join(&id).join("block/1.log");
    util::FileWatch::new(&log).wait("the attempt to see the cancel", Duration::from_secs(30), |lines| {
        lines.iter().any(|l| l.ends_with(" flowctl: cancelled; stopping")).then_some(())
    });
    assert!(!util::is_stopped(sleep_pid), "the sleep ignores SIGTERM, so it still runs");

    // The second quits at once, and the sleep, which no signal of the group stopped, goes too.
    flowctl.interrupt();
    let run = flowctl.finish();
    run.expect_code(130);
    assert_not_running(sleep_pid);
    let json = cmd.status("rt_stubborn", &id);
    assert_eq!(json["run"]["state"], "running", "the run is left for the next start to resume");
}

#[test]
fn bad_input_to_run_exits_2_and_says_what_to_fix() {
    let (_home, cmd) = setup_with_scratch();
    let file = dag_file("params.yaml");

    let run = cmd.run(["run", &file, "--param", "bukcet=x"]);
    run.expect_code(2);
    assert!(run.stderr.contains("--param \"bukcet=x\": DAG \"rt_params\" declares no parameter \"bukcet\""), "{}", run.stderr);
    assert!(run.stderr.contains("(did you mean \"bucket\"?)"), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("declare it under `params:` in {file}")), "{}", run.stderr);

    let run = cmd.run(["run", &file, "--param", "bucket"]);
    run.expect_code(2);
    assert!(run.stderr.contains("--param \"bucket\""), "{}", run.stderr);
    assert!(run.stderr.contains("DAG \"rt_params\""), "names the DAG: {}", run.stderr);
    assert!(run.stderr.contains("expected KEY=VALUE, e.g. --param bucket=VALUE"), "{}", run.stderr);

    // Neither started a run, nor stored the file as a DAG.
    assert_eq!(cmd.json(["status", "--output", "json"]), serde_json::json!([]));
    cmd.run(["apply", &file]).expect_code(0);

    let run = cmd.run(["run", "rt_parms"]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("no DAG \"rt_parms\" is applied to this home (did you mean \"rt_params\"?)"),
        "{}",
        run.stderr
    );
    let run = cmd.run(["run", "no_such_dag"]);
    run.expect_code(2);
    assert!(run.stderr.contains("no DAG \"no_such_dag\" is applied to this home; apply it with `flowctl apply FILE`"), "{}", run.stderr);

    let broken = dag_file("broken.yaml");
    let run = cmd.run(["run", &broken]);
    run.expect_code(2);
    assert!(
        run.stderr.contains(&format!("{broken}:4:15: error: task \"a\": unknown operator \"shel\" (did you mean \"shell\"?)")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&format!("error: {broken} does not compile")), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

#[test]
fn a_second_process_is_told_who_holds_the_home() {
    let (_home, cmd) = setup_with_scratch();
    let file = dag_file("hold.yaml");
    let mut flowctl = Background::start(&cmd, &["run", &file]);
    flowctl.wait_for_line(" hold running (try 1/1)");

    for args in [vec!["status"], vec!["status", "rt_hold", "--output", "json"]] {
        let status = cmd.run(&args);
        status.expect_code(2);
        let holder = format!("in use by flowctl process {} (flowctl run {file}, since ", flowctl.pid());
        assert!(status.stderr.contains(&holder), "`flowctl {}`: {}", args.join(" "), status.stderr);
        assert!(status.stdout.is_empty(), "{}", status.stdout);
    }

    flowctl.interrupt();
    let run = flowctl.finish();
    run.expect_code(1);
    // Released: the home opens again.
    let json = cmd.status("rt_hold", &run.run_id());
    assert_eq!(json["run"]["note"], "cancelled by the user");
}

#[test]
fn apply_reports_each_change_and_stores_nothing_on_error() {
    let (home, cmd) = setup_with_scratch();
    let alpha = "dag: rt_alpha\ntasks:\n  - id: a\n    operator: noop\n";
    let beta = "dag: rt_beta\ntasks:\n  - id: b\n    operator: noop\n";
    home.write("dags/alpha.yaml", alpha);
    home.write("dags/nested/beta.yml", beta);
    let dags = home.scratch().join("dags");
    let dags = dags.to_str().expect("UTF-8 path");
    let change = |run: &Run, dag: &str| -> (String, String) {
        let cells = row(&run.stdout, dag);
        (cells[1].to_string(), cells[2].to_string())
    };

    let run = cmd.run(["apply", dags]);
    run.expect_code(0);
    assert_eq!(change(&run, "rt_alpha"), ("1".into(), "added".into()), "{}", run.stdout);
    assert_eq!(change(&run, "rt_beta"), ("1".into(), "added".into()), "{}", run.stdout);
    assert!(run.stdout.ends_with("applied: 2 added, 0 changed, 0 unchanged\n"), "{}", run.stdout);

    let run = cmd.run(["apply", dags]);
    run.expect_code(0);
    assert_eq!(change(&run, "rt_alpha"), ("1".into(), "unchanged".into()), "{}", run.stdout);
    assert!(run.stdout.ends_with("applied: 0 added, 0 changed, 2 unchanged\n"), "{}", run.stdout);

    home.write("dags/alpha.yaml", &format!("{alpha}  - id: a2\n    operator: noop\n    depends_on: [a]\n"));
    let run = cmd.run(["apply", dags]);
    run.expect_code(0);
    assert_eq!(change(&run, "rt_alpha"), ("2".into(), "changed".into()), "{}", run.stdout);
    assert_eq!(change(&run, "rt_beta"), ("1".into(), "unchanged".into()), "{}", run.stdout);
    assert!(run.stdout.ends_with("applied: 0 added, 1 changed, 1 unchanged\n"), "{}", run.stdout);
    assert_eq!(cmd.versions(), [("rt_alpha".into(), 2), ("rt_beta".into(), 1)]);

    // A broken file among a changed one and a new one: nothing is stored.
    home.write("dags/nested/beta.yml", &beta.replace("id: b", "id: b_renamed"));
    home.write("dags/gamma.yaml", "dag: rt_gamma\ntasks:\n  - id: g\n    operator: noop\n");
    home.write("dags/broken.yaml", "dag: rt_broken\ntasks:\n  - id: x\n    operatr: noop\n");
    let run = cmd.run(["apply", dags]);
    run.expect_code(2);
    assert!(run.stderr.contains("broken.yaml:4:5: error:"), "{}", run.stderr);
    assert!(run.stderr.contains("error: nothing applied: "), "{}", run.stderr);
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert_eq!(cmd.versions(), [("rt_alpha".into(), 2), ("rt_beta".into(), 1)]);
}

#[test]
fn secrets_are_masked_everywhere() {
    const CANARY: &str = "canary-s3cret-value";
    let (home, cmd) = setup_with_scratch();
    let cmd = cmd.env("DB_PASSWORD", CANARY);
    let run = cmd.run(["run", &dag_file("secrets.yaml")]);
    run.expect_code(1);
    let id = run.run_id();
    let mut shown = vec![("flowctl run".to_string(), format!("{}{}", run.stdout, run.stderr))];

    // The task did receive the secret: masked in the rendered settings and in its output.
    let log = cmd.run(["logs", "rt_secrets", &id, "show"]);
    log.expect_code(0);
    let settings = r#"flowctl:   "command": "echo \"templated ***\"\necho \"from the shell $DB_PASSWORD\"\necho \"dsn=postgres://app:$DB_PASSWORD@db/loans\" >> \"$FLOWCTL_OUTPUT\"\n","#;
    assert!(log.stdout.contains(settings), "{}", log.stdout);
    assert!(log.stdout.contains("flowctl:     \"PGPASSWORD\": \"***\""), "{}", log.stdout);
    assert_eq!(output_lines(&log.stdout), ["templated ***", "from the shell ***"], "{}", log.stdout);
    shown.push(("logs show".into(), log.stdout));

    // The failing task's error carries its stderr, masked.
    let json = cmd.status("rt_secrets", &id);
    // An output that holds the secret is stored masked.
    assert_eq!(task_in(&json, "show")["outputs"]["dsn"], "postgres://app:***@db/loans");
    assert_eq!(task_in(&json, "leak")["error"], "command exited with code 4: connecting with ***");
    let log = cmd.run(["logs", "rt_secrets", &id, "leak"]);
    log.expect_code(0);
    assert_eq!(output_lines(&log.stdout), ["connecting with ***"], "{}", log.stdout);
    shown.push(("logs leak".into(), log.stdout));
    // An error whose first line holds the secret: the program to run is the secret.
    let error = task_in(&json, "bad_program")["error"].as_str().unwrap_or_default().to_string();
    assert!(error.starts_with("program \"***\" not found: "), "{error}");

    for args in [
        vec!["status"],
        vec!["status", "--output", "json"],
        vec!["status", "rt_secrets"],
        vec!["status", "rt_secrets", "--output", "json"],
        vec!["status", "rt_secrets", &id],
        vec!["status", "rt_secrets", &id, "--output", "json"],
    ] {
        let status = cmd.run(&args);
        status.expect_code(0);
        shown.push((args.join(" "), status.stdout + &status.stderr));
    }
    // Every file flowctl wrote under the home's logs.
    let mut pending = vec![home.path().join("logs")];
    let mut files = 0;
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read logs folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files += 1;
                shown.push((path.display().to_string(), std::fs::read_to_string(&path).expect("read log")));
            }
        }
    }
    assert_eq!(files, 3, "one attempt log per task");
    let leaks: Vec<&str> = shown.iter().filter(|(_, text)| text.contains(CANARY)).map(|(what, _)| what.as_str()).collect();
    assert!(leaks.is_empty(), "the secret appears in: {leaks:?}");
}
