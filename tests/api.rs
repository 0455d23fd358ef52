//! The resource API under `/api/v1` against a real server: every endpoint's success and its
//! errors (401, 404, 400, 422 with the diagnostic), pagination over several pages, a log read by
//! offset and followed as server-sent events while its attempt runs, `/metrics` read back with
//! Python's `prometheus_client` parser, and Schemathesis fuzzing every operation from the served
//! OpenAPI document.
//!
//! Nothing sleeps: the followed attempt waits on a FIFO the test writes to, runs are waited for
//! with the API's own `?wait=`.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};
use util::{Cmd, Server, TempHome};

/// A home with a manual DAG (two tasks, a parameter) and a daily one, applied, and a server.
fn setup() -> (TempHome, Cmd, Server) {
    let (home, cmd) = util::setup_with_scratch();
    let manual = home.write(
        "manual.yaml",
        "dag: manual\ndescription: two tasks\nparams:\n  who: world\ntasks:\n  - id: hello\n    operator: shell\n    with:\n      command: 'echo hello {{ params.who }}'\n  - id: after\n    operator: noop\n    depends_on: [hello]\n",
    );
    let daily = home.write(
        "daily.yaml",
        "dag: daily\nschedule: '@daily'\nstart_date: 2024-01-01\ncatchup: false\ntasks:\n  - id: nothing\n    operator: noop\n",
    );
    cmd.run(["apply", manual.to_str().unwrap(), daily.to_str().unwrap()]).expect_code(0);
    let server = Server::start(&cmd, &[]);
    (home, cmd, server)
}

/// One request with the server's token; the status and the JSON answer.
fn call(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let text = body.map(|b| b.to_string());
    let (status, answer) = server.http(method, path, Some(&server.token), text.as_deref());
    let value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{method} {path}: {status}, not JSON ({e}): {answer}"));
    (status, value)
}

#[track_caller]
fn ok(server: &Server, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, answer) = call(server, method, path, body);
    assert!((200..300).contains(&status), "{method} {path}: {status}: {answer:#}");
    answer
}

/// Asserts an error answer: its status and code, and that the message holds `says`.
#[track_caller]
fn refused(server: &Server, method: &str, path: &str, body: Option<Value>, status: u16, code: &str, says: &str) -> Value {
    let (got, answer) = call(server, method, path, body);
    assert_eq!(got, status, "{method} {path}: {answer:#}");
    assert_eq!(answer["error"]["code"], code, "{method} {path}: {answer:#}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{method} {path}: {message:?} does not say {says:?}");
    answer
}

/// Triggers a run of `manual` and waits for its end; returns its id.
fn run_to_end(server: &Server, body: Value) -> String {
    let created = ok(server, "POST", "/api/v1/dags/manual/runs", Some(body));
    let run = created["run"]["run_id"].as_str().expect("run id").to_string();
    assert_eq!(server.wait_for_run("manual", &run), "success");
    run
}

#[test]
fn dags_answer_with_their_details_source_versions_and_next_runs() {
    let (_home, _cmd, server) = setup();
    let page = ok(&server, "GET", "/api/v1/dags", None);
    let ids: Vec<&str> = page["dags"].as_array().unwrap().iter().map(|d| d["dag_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["daily", "manual"]);
    assert_eq!(page["next_cursor"], Value::Null);
    let daily = &page["dags"][0];
    assert_eq!(daily["schedule"], "@daily");
    let next_run = daily["next_run"].as_str().unwrap_or_else(|| panic!("no next run: {daily:#}"));
    let at = chrono::DateTime::parse_from_rfc3339(next_run).expect("RFC 3339");
    let ahead = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(next_run.ends_with("T00:00:00Z") && ahead > chrono::Duration::zero() && ahead <= chrono::Duration::days(1), "the next fire time after now: {daily:#}");

    let manual = ok(&server, "GET", "/api/v1/dags/manual", None);
    assert_eq!(manual["description"], "two tasks");
    assert_eq!(manual["params"], json!({"who": "world"}));
    assert_eq!(manual["tasks"][1], json!({"task_id": "after", "operator": "noop", "depends_on": ["hello"], "trigger_rule": "all_success", "max_tries": 1}));
    let source = ok(&server, "GET", "/api/v1/dags/manual/source?version=1", None);
    assert!(source["source"].as_str().unwrap().starts_with("dag: manual\n"), "{source:#}");
    refused(&server, "GET", "/api/v1/dags/manual/source?version=7", None, 404, "not_found", "has no version 7");
    let versions = ok(&server, "GET", "/api/v1/dags/manual/versions", None);
    assert_eq!(versions["versions"].as_array().unwrap().len(), 1);
    let next = ok(&server, "GET", "/api/v1/dags/daily/next?n=3&after=2024-03-10", None);
    assert_eq!(next["fires"][0]["at"], "2024-03-11T00:00:00Z");
    assert_eq!(next["fires"].as_array().unwrap().len(), 3);
    refused(&server, "GET", "/api/v1/dags/manual/next", None, 400, "bad_request", "has no schedule");

    refused(&server, "GET", "/api/v1/dags/manul", None, 404, "not_found", "(did you mean \"manual\"?)");
    let paused = ok(&server, "PATCH", "/api/v1/dags/daily", Some(json!({"paused": true})));
    assert_eq!(paused, json!({"dag_id": "daily", "paused": true, "changed": true}));
    let only_paused = ok(&server, "GET", "/api/v1/dags?paused=true", None);
    assert_eq!(only_paused["dags"].as_array().unwrap().len(), 1);
    refused(&server, "PATCH", "/api/v1/dags/daily", Some(json!({"pause": true})), 400, "bad_request", "unknown field `pause`");
}

#[test]
fn applying_a_source_stores_it_or_answers_422_with_every_diagnostic() {
    let (_home, _cmd, server) = setup();
    let applied = ok(
        &server,
        "POST",
        "/api/v1/dags",
        Some(json!({"file": "fresh.yaml", "source": "dag: fresh\ntasks:\n  - id: a\n    operator: noop\n"})),
    );
    assert_eq!(applied["dags"][0]["dag_id"], "fresh");
    assert_eq!(applied["dags"][0]["change"], "added");
    let broken = refused(
        &server,
        "POST",
        "/api/v1/dags",
        Some(json!({"file": "broken.yaml", "source": "dag: broken\ntasks:\n  - id: a\n    operator: nope\n    depends_on: [b]\n"})),
        422,
        "invalid",
        "error(s) in DAG files",
    );
    let diagnostics = broken["error"]["diagnostics"].as_array().expect("diagnostics");
    assert!(diagnostics.len() >= 2, "{broken:#}");
    assert_eq!(diagnostics[0]["file"], "broken.yaml");
    assert!(diagnostics.iter().all(|d| d["line"].as_u64().is_some_and(|l| l >= 4)), "{broken:#}");
    refused(&server, "POST", "/api/v1/dags", Some(json!({"file": "../x.yaml", "source": "dag: x\n"})), 400, "bad_request", "without folders");
    // Past the body limit: 413, in the same error shape.
    let huge = "x".repeat(5 << 20);
    let (status, body) = server.http("POST", "/api/v1/dags", Some(&server.token), Some(&format!("{{\"file\":\"a.yaml\",\"source\":\"{huge}\"}}")));
    assert_eq!(status, 413, "{}", &body[..body.len().min(300)]);
    assert!(body.contains("\"code\":\"too_large\""), "{body}");
}

#[test]
fn runs_are_triggered_listed_in_pages_cleared_cancelled_and_backfilled() {
    let (_home, _cmd, server) = setup();
    // Seven runs: pages of three, newest logical date first.
    for day in 1..=7 {
        let created = ok(&server, "POST", "/api/v1/dags/manual/runs", Some(json!({"logical_date": format!("2024-01-0{day}"), "params": {"who": day}})));
        assert_eq!(created["created"], true);
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/dags/manual/runs?limit=3".to_string();
    loop {
        let page = ok(&server, "GET", &path, None);
        assert_eq!(page["total"], 7);
        seen.extend(page["runs"].as_array().unwrap().iter().map(|r| r["run_id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/dags/manual/runs?limit=3&cursor={}", util::encode(cursor)),
            None => break,
        }
    }
    let expected: Vec<String> = (1..=7).rev().map(|d| format!("manual__2024-01-0{d}T00:00:00Z")).collect();
    assert_eq!(seen, expected, "three pages, newest first, each run once");
    let range = ok(&server, "GET", "/api/v1/dags/manual/runs?from=2024-01-02T00:00:00Z&to=2024-01-03T00:00:00Z", None);
    assert_eq!(range["total"], 2);
    refused(&server, "GET", "/api/v1/dags/manual/runs?cursor=nonsense", None, 400, "bad_request", "cursor");
    refused(&server, "GET", "/api/v1/dags/manual/runs?limit=9999", None, 400, "bad_request", "limit");
    refused(&server, "POST", "/api/v1/dags/manual/runs", Some(json!({"params": {"whom": 1}})), 400, "bad_request", "declares no parameter \"whom\"");
    refused(&server, "POST", "/api/v1/dags/manual/runs", Some(json!({"logical_date": "someday"})), 400, "bad_request", "--date");

    let run = "manual__2024-01-01T00:00:00Z";
    assert_eq!(server.wait_for_run("manual", run), "success");
    let detail = ok(&server, "GET", &format!("/api/v1/dags/manual/runs/{run}"), None);
    assert_eq!(detail["run"]["params"]["who"], 1);
    let tasks = ok(&server, "GET", &format!("/api/v1/dags/manual/runs/{run}/tasks"), None);
    assert_eq!(tasks["tasks"].as_array().unwrap().iter().map(|t| t["state"].as_str().unwrap()).collect::<Vec<_>>(), ["success", "success"]);
    let task = ok(&server, "GET", &format!("/api/v1/dags/manual/runs/{run}/tasks/hello"), None);
    assert_eq!(task["operator"], "shell");
    assert_eq!(task["attempts"][0]["attempt"], 1);
    assert_eq!(task["attempts"][0]["outcome"], "success");
    refused(&server, "GET", &format!("/api/v1/dags/manual/runs/{run}/tasks/helo"), None, 404, "not_found", "(did you mean \"hello\"?)");
    refused(&server, "GET", "/api/v1/dags/manual/runs/nope", None, 404, "not_found", "has no run \"nope\"");

    let cleared = ok(&server, "POST", &format!("/api/v1/dags/manual/runs/{run}/clear"), Some(json!({"tasks": ["after"]})));
    assert_eq!(cleared["tasks"], json!(["after"]));
    assert_eq!(server.wait_for_run("manual", run), "success");
    refused(&server, "POST", &format!("/api/v1/dags/manual/runs/{run}/clear"), Some(json!({"tasks": ["aftr"]})), 404, "not_found", "no task \"aftr\"");
    let cancelled = ok(&server, "POST", &format!("/api/v1/dags/manual/runs/{run}/cancel"), None);
    assert_eq!(cancelled["outcome"], "already_ended");

    let backfilled = ok(&server, "POST", "/api/v1/dags/daily/backfills", Some(json!({"from": "2024-02-01", "to": "2024-02-03"})));
    assert_eq!(backfilled["intervals"].as_array().unwrap().iter().map(|i| i["action"].as_str().unwrap()).collect::<Vec<_>>(), ["created"; 3]);
    refused(&server, "POST", "/api/v1/dags/daily/backfills", Some(json!({"from": "2024-02-05", "to": "2024-02-01"})), 400, "bad_request", "is before");
    refused(&server, "POST", "/api/v1/dags/daily/backfills", Some(json!({"from": "2024-02-05"})), 400, "bad_request", "missing field `to`");
}

#[test]
fn every_resource_needs_the_token_and_unknown_paths_share_the_error_shape() {
    let (_home, _cmd, server) = setup();
    for (method, path) in [
        ("GET", "/api/v1/dags"),
        ("POST", "/api/v1/dags"),
        ("GET", "/api/v1/dags/manual"),
        ("PATCH", "/api/v1/dags/manual"),
        ("GET", "/api/v1/dags/manual/source"),
        ("GET", "/api/v1/dags/manual/versions"),
        ("GET", "/api/v1/dags/manual/next"),
        ("GET", "/api/v1/dags/manual/runs"),
        ("POST", "/api/v1/dags/manual/runs"),
        ("GET", "/api/v1/dags/manual/runs/r"),
        ("POST", "/api/v1/dags/manual/runs/r/clear"),
        ("POST", "/api/v1/dags/manual/runs/r/cancel"),
        ("POST", "/api/v1/dags/manual/backfills"),
        ("GET", "/api/v1/dags/manual/runs/r/tasks"),
        ("GET", "/api/v1/dags/manual/runs/r/tasks/t"),
        ("GET", "/api/v1/dags/manual/runs/r/tasks/t/logs"),
        ("GET", "/api/v1/connections"),
        ("POST", "/api/v1/connections/aws_default/test"),
        ("GET", "/metrics"),
    ] {
        let (status, body) = server.http(method, path, None, if method == "GET" { None } else { Some("{}") });
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert!(body.contains("\"code\":\"unauthorized\""), "{method} {path}: {body}");
    }
    for path in ["/api/v1/health", "/api/v1/version", "/api/v1/openapi.json", "/health"] {
        assert_eq!(server.http("GET", path, None, None).0, 200, "{path} is open");
    }
    let health: Value = serde_json::from_str(&server.http("GET", "/api/v1/health", None, None).1).unwrap();
    assert_eq!(health["scheduler"]["alive"], true, "{health:#}");
    refused(&server, "GET", "/api/v1/nothing", None, 404, "not_found", "openapi.json");
    refused(&server, "DELETE", "/api/v1/dags", None, 405, "method_not_allowed", "does not take that method");
    refused(&server, "POST", "/api/v1/dags", None, 400, "bad_request", "not the JSON");
    let connections = ok(&server, "GET", "/api/v1/connections", None);
    assert!(connections.as_array().unwrap().iter().any(|c| c["name"] == "aws_default"), "{connections:#}");
    refused(&server, "POST", "/api/v1/connections/nope/test", None, 404, "not_found", "connection \"nope\" is not defined");
}

#[test]
fn a_log_is_read_by_offset_and_followed_to_its_end() {
    let (home, cmd, server) = setup();
    let gate = home.fifo("gate");
    let dag = home.write(
        "slow.yaml",
        &format!("dag: slow\ntasks:\n  - id: talk\n    operator: shell\n    with:\n      command: 'echo first; cat {}; echo second'\n", gate.display()),
    );
    cmd.run(["apply", dag.to_str().unwrap()]).expect_code(0);
    let run = ok(&server, "POST", "/api/v1/dags/slow/runs", None)["run"]["run_id"].as_str().unwrap().to_string();
    let logs = format!("/api/v1/dags/slow/runs/{run}/tasks/talk/logs");
    // The attempt has started and written its first line; it waits on the gate.
    util::wait_for_line(&home.log_path("slow", &run, "talk", 1), "| first");
    // Follow: the log so far, each new line as it comes, then the end.
    let mut stream = TcpStream::connect(&server.address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    write!(stream, "GET {logs} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n", server.token).expect("send");
    let mut reader = BufReader::new(stream);
    let mut events: Vec<(String, String)> = Vec::new();
    let (mut event, mut data) = (String::new(), Vec::new());
    let mut released = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).expect("read the stream") == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(name) = line.strip_prefix("event:") {
            event = name.trim().to_string();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push(value.trim_start().to_string());
        } else if line.is_empty() && !data.is_empty() {
            events.push((event.clone(), data.join("\n")));
            data.clear();
            if !released && events.iter().any(|(_, d)| d.contains("| first")) {
                // The first line arrived while the attempt waits: let it go on.
                std::fs::write(&gate, "go\n").expect("open the gate");
                released = true;
            }
            if event == "end" {
                break;
            }
        }
    }
    let text: String = events.iter().filter(|(e, _)| e == "log").map(|(_, d)| format!("{d}\n")).collect();
    let first_at = text.find("| first").expect("first line streamed");
    let second_at = text.find("| second").unwrap_or_else(|| panic!("second line streamed: {events:?}"));
    assert!(first_at < second_at, "in order: {text}");
    assert_eq!(events.last(), Some(&("end".to_string(), "complete".to_string())), "{events:?}");
    assert_eq!(server.wait_for_run("slow", &run), "success");
    // By offset: the whole log in one chunk, then nothing past its end.
    let whole = ok(&server, "GET", &logs, None);
    assert_eq!(whole["complete"], true);
    let end = whole["next_offset"].as_u64().unwrap();
    let rest = ok(&server, "GET", &format!("{logs}?offset={end}"), None);
    assert_eq!((rest["text"].as_str(), rest["next_offset"].as_u64()), (Some(""), Some(end)));
    let tail = ok(&server, "GET", &format!("{logs}?offset={}", end - 10), None);
    assert_eq!(tail["text"].as_str().map(str::len), Some(10));
    refused(&server, "GET", &format!("{logs}?offset={}", end + 1), None, 400, "bad_request", "past the end");
    refused(&server, "GET", &format!("{logs}?attempt=3"), None, 404, "not_found", "no attempt 3");
}

#[test]
fn metrics_move_with_runs_and_parse_as_prometheus_text() {
    let (_home, _cmd, server) = setup();
    run_to_end(&server, json!({}));
    run_to_end(&server, json!({"params": {"who": "again"}}));
    let (status, text) = server.http("GET", "/metrics", Some(&server.token), None);
    assert_eq!(status, 200, "{text}");
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.setdefault(s.name, []).append({"labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(util::moto::python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "prometheus_client could not parse /metrics:\n{text}");
    let samples: Value = serde_json::from_slice(&output.stdout).unwrap();
    let value = |name: &str, labels: Value| -> f64 {
        samples[name]
            .as_array()
            .and_then(|all| all.iter().find(|s| labels.as_object().unwrap().iter().all(|(k, v)| &s["labels"][k] == v)))
            .and_then(|s| s["value"].as_f64())
            .unwrap_or_else(|| panic!("no sample {name} {labels} in:\n{text}"))
    };
    assert_eq!(value("flowctl_dagrun_ended_total", json!({"dag_id": "manual", "state": "success"})), 2.0);
    assert_eq!(value("flowctl_ti_finish_total", json!({"dag_id": "manual", "task_id": "hello", "operator": "shell", "state": "success"})), 2.0);
    assert_eq!(value("flowctl_task_duration_seconds_count", json!({"operator": "shell"})), 2.0);
    let buckets = samples["flowctl_task_duration_seconds_bucket"].as_array().expect("histogram buckets");
    assert!(buckets.len() > 10, "{buckets:?}");
    assert_eq!(value("flowctl_dagrun_duration_seconds_count", json!({"dag_id": "manual", "state": "success"})), 2.0);
    // Every attempt that ended started from ready (none reattached): one wait each.
    let attempts: f64 = samples["flowctl_ti_finish_total"].as_array().expect("attempts").iter().filter_map(|s| s["value"].as_f64()).sum();
    assert!(attempts >= 2.0, "{attempts}");
    let started = value("flowctl_task_start_delay_seconds_count", json!({}));
    assert_eq!(started, attempts, "one start delay per attempt");
    let start_buckets = samples["flowctl_task_start_delay_seconds_bucket"].as_array().expect("histogram buckets");
    let near_a_second = start_buckets
        .iter()
        .find(|b| b["labels"]["le"].as_str().and_then(|le| le.parse::<f64>().ok()).is_some_and(|le| (1.0..1.1).contains(&le)))
        .unwrap_or_else(|| panic!("no bucket near 1 s in {start_buckets:?}"));
    assert_eq!(near_a_second["value"], started, "a ready task waited about a second or more for its start: {start_buckets:?}");
    assert!(value("flowctl_scheduler_heartbeat_timestamp_seconds", json!({})) > 1.7e9);
    assert!(value("flowctl_store_size_bytes", json!({})) > 0.0);
    assert_eq!(value("flowctl_executor_slots", json!({})), 32.0);
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let (home, _cmd, server) = setup();
    let run = run_to_end(&server, json!({}));
    let config = home.write(
        "schemathesis.toml",
        &format!("[parameters]\ndag = \"manual\"\nrun = \"{run}\"\ntask = \"hello\"\nname = \"aws_default\"\n"),
    );
    let schemathesis = util::moto::python().with_file_name("schemathesis");
    assert!(schemathesis.is_file(), "schemathesis is not in the test virtualenv ({}): run scripts/test.sh", schemathesis.display());
    let seed = std::env::var("FLOWCTL_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261206".to_string());
    let output = std::process::Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("http://{}/api/v1/openapi.json", server.address)])
        .args(["-H", &format!("Authorization: Bearer {}", server.token)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "40", "--workers", "2", "--seed", &seed, "--no-color"])
        .current_dir(home.scratch())
        .output()
        .expect("run schemathesis");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "schemathesis found failures (seed {seed}; FLOWCTL_SCHEMATHESIS_SEED reruns it):\n{report}");
    assert!(report.contains("20 selected"), "{report}");
}
