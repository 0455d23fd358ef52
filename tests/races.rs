//! The server under concurrent and hostile clients: triggers and backfills at once create each
//! run exactly once, names in requests cannot reach outside the home, idle connections cannot
//! starve the API, a guessable token is refused, and a server that does not answer is named as
//! such instead of "the home is in use".
//!
//! Concurrency comes from many threads sending requests to one server at the same moment (a
//! barrier releases them together); nothing sleeps to wait for anything.

mod util;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::{Cmd, Server, TempHome};

/// A home with a manual DAG whose runs do nothing, and a daily one to backfill, applied.
fn setup() -> (TempHome, Cmd) {
    let (home, cmd) = util::setup();
    let quick = home.write("quick.yaml", "dag: quick\nmax_active_runs: 64\ntasks:\n  - id: nothing\n    operator: noop\n");
    let daily = home.write(
        "daily.yaml",
        "dag: daily\nschedule: '@daily'\nstart_date: 2024-01-01\ncatchup: false\nmax_active_runs: 64\ntasks:\n  - id: nothing\n    operator: noop\n",
    );
    cmd.run(["apply", quick.to_str().unwrap(), daily.to_str().unwrap()]).expect_code(0);
    (home, cmd)
}

/// Where a server listens and its token, which threads can share.
#[derive(Clone)]
struct Api {
    address: String,
    token: String,
}

impl Api {
    fn of(server: &Server) -> Api {
        Api { address: server.address.clone(), token: server.token.clone() }
    }
}

/// Sends `body` with `method` to `path` of the server's API; returns the status and the answer.
fn call(api: &Api, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let text = body.map(Value::to_string);
    let (status, answer) = util::http(&api.address, method, path, Some(&api.token), text.as_deref());
    (status, serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{method} {path}: {e}: {answer}")))
}

/// Runs `each` on `n` threads released at the same moment, and collects what they return.
fn at_once<T: Send + 'static>(n: usize, each: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(n));
    let each = Arc::new(each);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, each) = (barrier.clone(), each.clone());
            std::thread::spawn(move || {
                barrier.wait();
                each(i)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("thread")).collect()
}

/// The run ids of a DAG, as `status DAG --output json` lists them.
fn run_ids(cmd: &Cmd, dag: &str) -> Vec<String> {
    cmd.json(["status", dag, "--all", "--output", "json"]).as_array().expect("runs").iter().map(|r| r["run_id"].as_str().expect("run_id").to_string()).collect()
}

#[test]
fn two_hundred_concurrent_triggers_give_two_hundred_runs_with_distinct_ids() {
    let (_home, cmd) = setup();
    let server = Server::start(&cmd, &[]);
    let api = Api::of(&server);
    // The same logical date for every trigger: every one of them wants the same first id.
    let request = json!({"logical_date": "2024-03-01"});
    let answers = at_once(200, move |_| call(&api, "POST", "/api/v1/dags/quick/runs", Some(&request)));
    let ids: Vec<String> = answers
        .iter()
        .map(|(status, a)| {
            assert_eq!(*status, 201, "{a}");
            a["run"]["run_id"].as_str().unwrap_or_else(|| panic!("no run in {a}")).to_string()
        })
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 200, "200 triggers were answered with {} distinct run ids", distinct.len());
    assert!(distinct.contains(&"manual__2024-03-01T00:00:00Z".to_string()));
    assert!(distinct.contains(&"manual__2024-03-01T00:00:00Z.200".to_string()), "ids count up to .200: {distinct:?}");
    // And the store holds exactly those runs.
    let stored: BTreeSet<String> = run_ids(&cmd, "quick").into_iter().collect();
    assert_eq!(stored, ids.into_iter().collect::<BTreeSet<_>>());
    // CLI processes at once, too: each gets a run of its own.
    let processes = at_once(20, {
        let cmd = cmd.clone();
        move |_| cmd.run(["trigger", "quick", "--date", "2024-03-02"])
    });
    let mut cli_ids = BTreeSet::new();
    for run in &processes {
        run.expect_code(0);
        cli_ids.insert(run.stdout.split_whitespace().nth(1).expect("run id").to_string());
    }
    assert_eq!(cli_ids.len(), 20, "{cli_ids:?}");
    server.stop().expect_code(0);
}

#[test]
fn an_idempotency_key_gives_one_run_under_twenty_concurrent_requests() {
    let (_home, cmd) = setup();
    let server = Server::start(&cmd, &[]);
    let api = Api::of(&server);
    let request = json!({"params": {}, "idempotency_key": "ci-job-4711"});
    let answers = at_once(20, move |_| call(&api, "POST", "/api/v1/dags/quick/runs", Some(&request)));
    let created: Vec<&Value> = answers.iter().filter(|(status, _)| *status == 201).map(|(_, a)| a).collect();
    let replayed: Vec<&Value> = answers.iter().filter(|(status, _)| *status == 200).map(|(_, a)| a).collect();
    assert_eq!(created.len(), 1, "one request creates the run: {answers:?}");
    assert_eq!(replayed.len(), 19, "every other is answered with it: {answers:?}");
    let id = created[0]["run"]["run_id"].as_str().expect("run id");
    assert!(replayed.iter().all(|a| a["run"]["run_id"] == id && a["created"] == false), "{replayed:?}");
    assert_eq!(run_ids(&cmd, "quick"), [id.to_string()]);
    // Another key, another run.
    let (status, other) = call(&Api::of(&server), "POST", "/api/v1/dags/quick/runs", Some(&json!({"idempotency_key": "ci-job-4712"})));
    assert_eq!(status, 201, "{other}");
    assert_ne!(other["run"]["run_id"], id);
    server.stop().expect_code(0);
}

#[test]
fn concurrent_backfills_of_overlapping_ranges_create_each_interval_once() {
    let (_home, cmd) = setup();
    let server = Server::start(&cmd, &[]);
    let api = Api::of(&server);
    let ranges = [("2024-01-01", "2024-01-20"), ("2024-01-10", "2024-01-31"), ("2024-01-05", "2024-01-25"), ("2024-01-01", "2024-01-31")];
    let answers = at_once(8, move |i| {
        let (from, to) = ranges[i % ranges.len()];
        call(&api, "POST", "/api/v1/dags/daily/backfills", Some(&json!({"from": from, "to": to})))
    });
    let mut created: Vec<String> = Vec::new();
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        for interval in answer["intervals"].as_array().unwrap_or_else(|| panic!("no intervals in {answer}")) {
            if interval["action"] == "created" {
                created.push(interval["run_id"].as_str().expect("run id").to_string());
            }
        }
    }
    let distinct: BTreeSet<&String> = created.iter().collect();
    assert_eq!(created.len(), 31, "each of January's 31 intervals is created once, by one of the backfills: {created:?}");
    assert_eq!(distinct.len(), 31);
    let backfills: Vec<String> = run_ids(&cmd, "daily").into_iter().filter(|id| id.starts_with("backfill__")).collect();
    assert_eq!(backfills.len(), 31, "{backfills:?}");
    server.stop().expect_code(0);
}

#[test]
fn names_in_requests_cannot_reach_outside_the_home() {
    let (home, cmd) = setup();
    // A log-shaped file beside the home, which a traversal would read.
    let outside = home.write("secret/run/task/1.log", "outside the home\n");
    assert!(outside.is_file());
    for (dag, run, task) in [("../files", "secret", "run"), ("quick", "../../files/secret/run", "task"), ("quick", "run", "../task"), ("/etc", "x", "y")] {
        let shown = cmd.run(["logs", dag, run, task]);
        shown.expect_code(2);
        assert!(shown.stderr.starts_with("error: invalid "), "{dag} {run} {task}: {}", shown.stderr);
        assert!(!shown.stdout.contains("outside the home"), "{}", shown.stdout);
    }
    let shown = cmd.run(["status", "..", "x"]);
    shown.expect_code(2);
    assert!(shown.stderr.contains("invalid DAG id \"..\""), "{}", shown.stderr);

    let server = Server::start(&cmd, &[]);
    for path in [
        "/api/v1/dags/..%2Ffiles/runs/secret/tasks/run/logs",
        "/api/v1/dags/quick/runs/..%2F..%2Ffiles%2Fsecret%2Frun/tasks/task/logs",
        "/api/v1/dags/quick/runs/x/tasks/..%2Ftask/logs",
    ] {
        let (status, body) = server.http("GET", path, Some(&server.token), None);
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("\"code\":\"not_found\"") && body.contains("invalid") && !body.contains("outside the home"), "{path}: {body}");
    }
    let (status, answer) = call(&Api::of(&server), "GET", "/api/v1/dags/quick/runs/..%2Fx", None);
    assert_eq!(status, 404, "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap_or_default().starts_with("invalid run id \"../x\""), "{answer}");
    server.stop().expect_code(0);
}

/// Reads a process's soft and hard limits on open files from `/proc/<pid>/limits`.
fn file_limits(pid: i32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("Max open files line").to_string();
    let fields: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (fields[0].to_string(), fields[1].to_string())
}

#[test]
fn idle_connections_cannot_starve_the_api() {
    let (_home, cmd) = setup();
    let server = Server::start(&cmd, &[]);
    let (soft, hard) = file_limits(server.pid());
    assert_eq!(soft, hard, "the server raises its soft limit on open files to the hard one");
    // More idle connections than the server serves at once, none sending a byte.
    let idle: Vec<TcpStream> = (0..600).map(|_| TcpStream::connect(&server.address).expect("connect")).collect();
    // The API still answers, at once: with its health, or with a 503 saying why when every
    // connection slot is taken; never a timeout.
    let started = Instant::now();
    let mut stream = TcpStream::connect(&server.address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    write!(stream, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("an answer within 5 s");
    assert!(reply.starts_with("HTTP/1.1 200") || (reply.starts_with("HTTP/1.1 503") && reply.contains("connections open")), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The server closes connections that send nothing: every idle one ends, within the header
    // timeout and a margin, and then /health answers 200 again.
    for mut connection in idle {
        connection.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let mut buffer = [0u8; 1024];
        let read = connection.read(&mut buffer);
        assert!(matches!(read, Ok(_)), "an idle connection is closed by the server, not left open: {read:?}");
    }
    let (status, body) = server.http("GET", "/health", None, None);
    assert_eq!(status, 200, "{body}");
    server.stop().expect_code(0);
}

#[test]
fn a_guessable_token_is_refused_with_how_to_make_one() {
    let (_home, cmd) = setup();
    for token in ["a".repeat(32), "ab".repeat(20), "0123456789".repeat(2)] {
        let started = cmd.clone().env("FLOWCTL_API_TOKEN", &token).run_within(Duration::from_secs(60), ["server", "--listen", "0.0.0.0:0"]);
        started.expect_code(2);
        assert!(
            started.stderr.contains("FLOWCTL_API_TOKEN") && started.stderr.contains("openssl rand -hex 32"),
            "{token}: {}",
            started.stderr
        );
        assert!(!started.stderr.contains(&token), "the token is not echoed: {}", started.stderr);
    }
}

#[test]
fn a_server_that_does_not_answer_is_named_as_such() {
    let (home, cmd) = setup();
    // A process that runs, and a server file naming it with an address nobody listens on.
    let mut standing = std::process::Command::new("sleep").arg("600").spawn().expect("sleep");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address");
    let file = json!({"address": closed.to_string(), "token": "t".repeat(64), "pid": standing.id()});
    std::fs::write(home.path().join("server.json"), file.to_string()).expect("server.json");
    let status = cmd.run(["status"]);
    let _ = standing.kill();
    let _ = standing.wait();
    status.expect_code(2);
    assert!(
        status.stderr.contains(&format!("the server of this home (process {}", standing.id())) && status.stderr.contains("does not answer /health"),
        "{}",
        status.stderr
    );
    assert!(!status.stderr.contains("in use by flowctl process"), "{}", status.stderr);
    // Once that process is gone, the file is stale and the CLI acts on the home itself.
    cmd.run(["status"]).expect_code(0);
}
