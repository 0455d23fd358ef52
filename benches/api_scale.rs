//! The API and `flowctl status` against a long history: 1,000 applied DAGs and 100,000 ended runs
//! of 10 tasks each (one million task instances), written in bulk through the store's API. Half the
//! runs belong to one DAG (`heavy`), so "a page deep in the history" is 40,000 runs deep; the
//! other 999 DAGs share the rest.
//!
//! With a release `flowctl server` on that home, it measures p50 and p99 over 200 requests each,
//! server-side (the `Server-Timing` header) and as the client saw them:
//! - `GET /api/v1/dags?limit=50` (the first page);
//! - `GET /api/v1/dags/heavy/runs` (the first page) and a page 40,000 runs deep;
//! - `GET /api/v1/dags/heavy/runs/{run}/tasks`;
//! - `flowctl status` and `flowctl status heavy`, as whole processes (through the server).
//!
//! Goals: p99 at most 50 ms for every request, and for `flowctl status DAG`. The floors, measured
//! in the same run: `GET /api/v1/version` (an answer that does nothing) for requests, and
//! starting `/bin/true` for processes.
//!
//! Run with `cargo bench --bench api_scale`.

use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use flowctl_engine::compile::{compile, SourceFile};
use flowctl_engine::state::{DagRun, Home, RunState, TaskInstance, Trigger, Write};

const FLOWCTL: &str = env!("CARGO_BIN_EXE_flowctl");
const DAGS: usize = 1_000;
const RUNS: usize = 100_000;
const HEAVY_RUNS: usize = RUNS / 2;
const TASKS: usize = 10;
const SAMPLES: usize = 200;

/// A DAG of `TASKS` tasks in a chain.
fn source(id: &str) -> String {
    let mut text = format!("dag: {id}\ndescription: a chain of {TASKS} tasks\ntasks:\n");
    for t in 0..TASKS {
        text.push_str(&format!("  - id: t{t}\n    operator: noop\n"));
        if t > 0 {
            text.push_str(&format!("    depends_on: [t{}]\n", t - 1));
        }
    }
    text
}

/// Fills `home`: the DAGs applied, then the runs with their task instances, a thousand records to
/// a write.
fn fill(home: &Path) -> Duration {
    let started = Instant::now();
    let registry = flowctl_operators::registry();
    let home = Home::open(home, "api_scale bench fill").expect("open the home");
    let store = home.store();
    let ids: Vec<String> = std::iter::once("heavy".to_string()).chain((1..DAGS).map(|i| format!("dag_{i:04}"))).collect();
    for id in &ids {
        let compiled = compile(&[SourceFile { path: format!("{id}.yaml").into(), bytes: source(id).into_bytes() }], &registry).expect("compiles");
        flowctl_engine::service::store_version(store, &compiled.dags[0]).expect("store the version");
    }
    let epoch = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    let mut writes = Vec::new();
    for n in 0..RUNS {
        // The first half is heavy's; the rest goes round the other DAGs.
        let (dag_id, nth) = if n < HEAVY_RUNS { ("heavy", n) } else { (ids[1 + (n - HEAVY_RUNS) % (DAGS - 1)].as_str(), (n - HEAVY_RUNS) / (DAGS - 1)) };
        let date = epoch + chrono::Duration::hours(nth as i64);
        let state = if nth % 10 == 7 { RunState::Failed } else { RunState::Success };
        let run_id = format!("scheduled__{}", date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let mut run = DagRun::queued(dag_id, run_id.clone(), date, (date, date + chrono::Duration::hours(1)), Trigger::Scheduled, Default::default(), 1);
        run.state = state;
        run.start = Some(date + chrono::Duration::hours(1));
        run.end = Some(date + chrono::Duration::hours(1) + chrono::Duration::seconds(90));
        writes.push(Write::Run(run));
        for t in 0..TASKS {
            let mut ti = TaskInstance::new(&format!("t{t}"), 1);
            ti.state = flowctl_engine::lifecycle::TaskState::Success;
            ti.try_number = 1;
            ti.start = Some(date + chrono::Duration::minutes(60 + t as i64));
            ti.end = Some(date + chrono::Duration::minutes(61 + t as i64));
            writes.push(Write::Task { dag_id: dag_id.to_string(), run_id: run_id.clone(), instance: ti });
        }
        if writes.len() >= 1_000 {
            store.write(&writes).expect("write");
            writes.clear();
        }
    }
    store.write(&writes).expect("write");
    started.elapsed()
}

/// One GET with the token on a connection of its own: the server's time (from `Server-Timing`),
/// the client's, and the body.
fn get(address: &str, token: &str, path: &str) -> (f64, f64, String) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).expect("connect");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n").expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let client = started.elapsed().as_secs_f64() * 1000.0;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}\n{}", &body[..body.len().min(500)]);
    let server = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("server-timing: app;dur=").map(str::to_string))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    (server, client, body.to_string())
}

/// p50 and p99 of `samples`, in milliseconds.
fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() as f64 * q).ceil() as usize).saturating_sub(1).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}

fn report(what: &str, server: Vec<f64>, client: Vec<f64>) {
    let (s50, s99) = percentiles(server);
    let (c50, c99) = percentiles(client);
    let verdict = if s99 <= 50.0 { "meets" } else { "misses" };
    println!("  {what:<44} server p50 {s50:7.2} ms  p99 {s99:7.2} ms   client p50 {c50:7.2} ms  p99 {c99:7.2} ms   ({verdict} p99 <= 50 ms)");
}

fn measure(address: &str, token: &str, what: &str, path: &str) {
    let mut server = Vec::new();
    let mut client = Vec::new();
    for _ in 0..SAMPLES {
        let (s, c, _) = get(address, token, path);
        server.push(s);
        client.push(c);
    }
    report(what, server, client);
}

/// Times a whole process, `SAMPLES` times; p50 and p99 in milliseconds.
fn processes(mut command: impl FnMut() -> Command) -> (f64, f64) {
    let mut times = Vec::new();
    for _ in 0..SAMPLES {
        let started = Instant::now();
        let status = command().stdout(Stdio::null()).stderr(Stdio::null()).status().expect("run");
        assert!(status.success(), "{status}");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    percentiles(times)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path().join("home");
    let filled = fill(&home);
    println!(
        "api_scale: {DAGS} DAGs, {RUNS} ended runs of {TASKS} tasks ({HEAVY_RUNS} of them heavy's), written in {:.1} s",
        filled.as_secs_f64()
    );

    let mut server = Command::new(FLOWCTL).arg("--home").arg(&home).args(["server", "--listen", "127.0.0.1:0"]).stderr(Stdio::piped()).spawn().expect("server");
    let mut lines = BufReader::new(server.stderr.take().expect("stderr")).lines();
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.split("listening on http://").nth(1).map(|rest| rest.split(',').next().unwrap_or_default().to_string()))
        .expect("the server did not start");
    // Keep reading the server's log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    let file: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(home.join("server.json")).expect("server.json")).expect("JSON");
    let token = file["token"].as_str().expect("token").to_string();

    // Every DAG's compiled version is cached after the first answer, as on a running server.
    get(&address, &token, "/api/v1/dags?limit=500");
    get(&address, &token, "/api/v1/dags?limit=500&cursor=dag_0499");
    let first: serde_json::Value = serde_json::from_str(&get(&address, &token, "/api/v1/dags/heavy/runs?limit=25").2).expect("JSON");
    let newest = first["runs"][0]["run_id"].as_str().expect("a run").to_string();
    let big_page: serde_json::Value = serde_json::from_str(&get(&address, &token, "/api/v1/dags/heavy/runs?limit=500").2).expect("JSON");
    assert_eq!(big_page["total"], HEAVY_RUNS);
    // A cursor 40,000 runs into heavy's history, as the page before it would give: the logical
    // date, creation time and id of its 40,000th newest run.
    let epoch = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    let deep_date = epoch + chrono::Duration::hours((HEAVY_RUNS - 40_000) as i64);
    let deep_id = format!("scheduled__{}", deep_date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let deep_run: serde_json::Value = serde_json::from_str(&get(&address, &token, &format!("/api/v1/dags/heavy/runs/{deep_id}")).2).expect("JSON");
    let created = deep_run["run"]["created_at"].as_str().expect("created_at");
    let cursor = format!("{}~{created}~{deep_id}", deep_date.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
    let deep = format!("/api/v1/dags/heavy/runs?limit=25&cursor={}", cursor.replace(':', "%3A").replace('+', "%2B"));

    println!("requests, {SAMPLES} each:");
    measure(&address, &token, "floor: GET /api/v1/version", "/api/v1/version");
    measure(&address, &token, "GET /api/v1/dags?limit=50", "/api/v1/dags?limit=50");
    measure(&address, &token, "GET /dags/heavy/runs (first page)", "/api/v1/dags/heavy/runs");
    measure(&address, &token, "GET /dags/heavy/runs (40,000 runs deep)", &deep);
    measure(&address, &token, "GET /dags/heavy/runs/{run}/tasks", &format!("/api/v1/dags/heavy/runs/{newest}/tasks"));

    println!("processes, {SAMPLES} each (through the server):");
    let (t50, t99) = processes(|| Command::new("/bin/true"));
    println!("  {:<44} p50 {t50:7.2} ms  p99 {t99:7.2} ms", "floor: /bin/true");
    let (a50, a99) = processes(|| {
        let mut c = Command::new(FLOWCTL);
        c.arg("--home").arg(&home).arg("status");
        c
    });
    println!("  {:<44} p50 {a50:7.2} ms  p99 {a99:7.2} ms   (all {DAGS} DAGs)", "flowctl status");
    let (d50, d99) = processes(|| {
        let mut c = Command::new(FLOWCTL);
        c.arg("--home").arg(&home).args(["status", "heavy"]);
        c
    });
    let verdict = if d99 <= 50.0 { "meets" } else { "misses" };
    println!("  {:<44} p50 {d50:7.2} ms  p99 {d99:7.2} ms   ({verdict} p99 <= 50 ms)", "flowctl status heavy");

    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.id() as i32), nix::sys::signal::Signal::SIGTERM);
    let _ = server.wait();
}
