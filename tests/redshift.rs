//! End-to-end tests of the Redshift operators through the real `flowctl` binary.
//!
//! moto_server's own Redshift Data replies cannot be read by the Rust SDK (ISO-8601 timestamps
//! where it expects epoch numbers) and it has no BatchExecuteStatement, so these tests run against
//! the patched moto of `scripts/standins/moto_local.py` (`util::standins::MotoLocal`): it answers
//! with epoch times, runs batches, reports a statement STARTED at its first DescribeStatement and
//! FINISHED from the second on, aborts it on CancelStatement, and records every request, which is
//! how the tests check what flowctl sent. No SQL runs there; the statements' failures, throttling
//! and result rows are tested against scripted replies in operators/src/aws/redshift/tests.rs.
//!
//! Nothing sleeps: the tests wait for attempt-log lines through inotify, and for runs through the
//! server's `/api/wait`.

mod util;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use util::standins::MotoLocal;
use util::{Cmd, Server, TempHome};

/// The secret access key of the test connection: it must never appear in a log or status.
const CANARY: &str = "canary-redshift-secret-5c03aa";
const RUN_ID: &str = "manual__2024-03-01T00:00:00Z";

/// A home whose `warehouse` connection points at a closed port of 127.0.0.1.
fn setup() -> (TempHome, Cmd) {
    let (home, cmd) = util::setup_with_scratch();
    // Port 9 (discard) is closed on a test machine: every request is refused at once.
    let connection = serde_json::json!({
        "type": "aws",
        "region": "eu-west-1",
        "endpoints": {"redshift_data": "http://127.0.0.1:9"},
        "access_key_id_env": "RS_TEST_KEY_ID",
        "secret_access_key_env": "RS_TEST_SECRET",
    });
    let cmd = cmd
        .env("RS_TEST_KEY_ID", "AKIAFLOWCTLREDSHIFT1")
        .env("RS_TEST_SECRET", CANARY)
        .env("FLOWCTL_CONN_WAREHOUSE", &connection.to_string())
        .env("AWS_EC2_METADATA_DISABLED", "true");
    (home, cmd)
}

const LOAD_DAG: &str = r#"dag: rs_load
params:
  bucket: lake
tasks:
  - id: load
    operator: redshift.copy
    retries: 0
    with:
      connection: warehouse
      cluster_identifier: analytics
      database: dev
      db_user: etl
      table: stage.loans
      columns: [id, amount, day]
      from: "s3://{{ params.bucket }}/loans/{{ ds }}/"
      iam_role: arn:aws:iam::123456789012:role/redshift-loader
      format: csv
      header: true
      date_format: YYYY-MM-DD
      mode: upsert
      key: [id, day]
"#;

#[test]
fn a_load_logs_the_copy_it_renders_and_names_the_endpoint_it_cannot_reach() {
    let (home, cmd) = setup();
    let file = home.write("rs_load.yaml", LOAD_DAG);

    let run = cmd.run_within(Duration::from_secs(120), ["run".as_ref(), file.as_os_str(), "--date".as_ref(), "2024-03-01".as_ref()]);

    run.expect_code(1);
    let status = cmd.json(["status", "rs_load", RUN_ID, "--output", "json"]);
    let load = status["tasks"].as_array().and_then(|t| t.iter().find(|t| t["task_id"] == "load")).cloned().unwrap_or(Value::Null);
    assert_eq!(load["state"], "failed", "{status:#}");
    let error = load["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("BatchExecuteStatement on cluster analytics, database dev: cannot reach endpoint http://127.0.0.1:9 ("),
        "{error}"
    );
    assert!(error.ends_with("after 5 tries; check the endpoint and the network (connection \"warehouse\")"), "{error}");
    assert!(load["external_job"].is_null(), "nothing was submitted, so nothing is recorded: {load:#}");

    let log_path = home.path().join("logs/rs_load").join(RUN_ID).join("load/1.log");
    let log = std::fs::read_to_string(&log_path).unwrap_or_else(|e| panic!("read {}: {e}", log_path.display()));
    let expected = [
        "loading s3://lake/loans/2024-03-01/ into stage.loans (upsert, cluster analytics, database dev) with:",
        "  BEGIN",
        "  CREATE TEMP TABLE \"flowctl_stage_loans\" (LIKE \"stage\".\"loans\")",
        "  COPY \"flowctl_stage_loans\" (\"id\", \"amount\", \"day\") FROM 's3://lake/loans/2024-03-01/' IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-loader' FORMAT AS CSV IGNOREHEADER 1 DATEFORMAT AS 'YYYY-MM-DD'",
        "  DELETE FROM \"stage\".\"loans\" USING \"flowctl_stage_loans\" WHERE \"stage\".\"loans\".\"id\" = \"flowctl_stage_loans\".\"id\" AND \"stage\".\"loans\".\"day\" = \"flowctl_stage_loans\".\"day\"",
        "  INSERT INTO \"stage\".\"loans\" (\"id\", \"amount\", \"day\") SELECT \"id\", \"amount\", \"day\" FROM \"flowctl_stage_loans\"",
        "  COMMIT",
    ];
    let start = log.lines().position(|l| l.ends_with(expected[0])).unwrap_or_else(|| panic!("no COPY in the log:\n{log}"));
    let logged: Vec<&str> = log.lines().skip(start).take(expected.len()).collect();
    for (line, want) in logged.iter().zip(expected) {
        assert!(line.ends_with(want), "log line\n  {line}\nshould end with\n  {want}\nwhole log:\n{log}");
    }
    for text in [&log, &run.stdout, &run.stderr, &status.to_string()] {
        assert!(!text.contains(CANARY), "the secret key leaked:\n{text}");
    }
}

#[test]
fn mistakes_fail_validation_at_their_line() {
    let (home, cmd) = setup();
    let cases = [
        (
            LOAD_DAG.replace("      key: [id, day]\n", ""),
            "9:7",
            "with.key: mode upsert needs `key`: the columns that identify a row",
        ),
        (
            LOAD_DAG.replace("format: csv", "format: parquet"),
            "18:15",
            "with.header: applies only to csv files (format: parquet)",
        ),
        (
            LOAD_DAG.replace("      db_user: etl\n", ""),
            "9:7",
            "with: a provisioned cluster needs `db_user` (temporary credentials for that user) or `secret_arn` (a Secrets Manager secret with the login)",
        ),
        (
            LOAD_DAG.replace("mode: upsert", "mode: merge"),
            "20:13",
            "with.mode: unknown variant `merge`, expected one of `append`, `replace`, `upsert`",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (dag, at, message)) in cases.iter().enumerate() {
        let file = home.write(&format!("rs_bad_{i}.yaml"), dag);
        let run = cmd.run(["validate".as_ref(), file.as_os_str()]);
        let expected = format!("{}:{at}: error: task \"load\": operator \"redshift.copy\": {message}", file.display());
        if run.code != 2 || !run.stdout.lines().chain(run.stderr.lines()).any(|l| l == expected) {
            failures.push(format!("expected exit 2 and the line\n{expected}\ngot exit {}:\n{}{}", run.code, run.stdout, run.stderr));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The patched moto of this test binary, started by the first test that asks for it. It is never
/// dropped: it stops when the test binary exits (its guard's stdin closes). Tests tell their
/// requests apart by statement name and id.
fn moto() -> &'static MotoLocal {
    static MOTO: std::sync::OnceLock<(TempHome, MotoLocal)> = std::sync::OnceLock::new();
    let (_, moto) = MOTO.get_or_init(|| {
        let (home, _) = util::setup_with_scratch();
        let moto = MotoLocal::start(&home.scratch().join("moto"));
        (home, moto)
    });
    moto
}

/// The recorded requests of `target` whose JSON field `field` is `value`.
fn requests(target: &str, field: &str, value: &str) -> Vec<Value> {
    moto().requests_to(target).into_iter().filter(|r| r["json"][field] == value).collect()
}

/// A home whose `warehouse` connection points at the patched moto.
fn setup_on(moto: &MotoLocal) -> (TempHome, Cmd) {
    let (home, cmd) = util::setup_with_scratch();
    let connection = json!({
        "type": "aws",
        "region": "us-east-1",
        "endpoint_url": moto.endpoint,
        "access_key_id_env": "RS_TEST_KEY_ID",
        "secret_access_key_env": "RS_TEST_SECRET",
    });
    let cmd = cmd
        .env("RS_TEST_KEY_ID", "AKIAFLOWCTLREDSHIFT1")
        .env("RS_TEST_SECRET", CANARY)
        .env("FLOWCTL_CONN_WAREHOUSE", &connection.to_string())
        .env("AWS_EC2_METADATA_DISABLED", "true");
    (home, cmd)
}

fn log_path(home: &TempHome, dag: &str, task: &str) -> PathBuf {
    home.path().join("logs").join(dag).join(RUN_ID).join(task).join("1.log")
}

/// Waits until an attempt log has a line containing `needle`, and returns that line (the file is
/// read again after each change to its folder).
#[track_caller]
fn wait_for_line(path: &PathBuf, needle: &str) -> String {
    use notify::Watcher;
    let folder = path.parent().expect("folder");
    std::fs::create_dir_all(folder).expect("log folder");
    let (tx, changes) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .expect("inotify watcher");
    watcher.watch(folder, notify::RecursiveMode::NonRecursive).expect("watch the log folder");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        while changes.try_recv().is_ok() {}
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        if changes.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).is_err() {
            panic!("waited 120s for {needle:?} in {}:\n{text}", path.display());
        }
    }
}

/// The statement id at the end of a `submitted statement <id> ...` line.
fn statement_id(line: &str) -> String {
    let start = line.find("submitted statement ").expect("a submitted line") + "submitted statement ".len();
    line[start..].chars().take_while(|c| c.is_ascii_hexdigit() || *c == '-').collect()
}

fn task_of(cmd: &Cmd, dag: &str, task: &str) -> Value {
    let status = cmd.json(["status", dag, RUN_ID, "--output", "json"]);
    status["tasks"].as_array().and_then(|t| t.iter().find(|t| t["task_id"] == task)).cloned().unwrap_or_else(|| panic!("no {task} in {status:#}"))
}

#[test]
fn a_replace_load_is_one_batch_and_a_restarted_server_reattaches_without_submitting_it_again() {
    let (home, cmd) = setup_on(moto());
    let dag = home.write(
        "rs_restart.yaml",
        r#"dag: rs_restart
tasks:
  - id: load
    operator: redshift.copy
    with:
      connection: warehouse
      cluster_identifier: analytics
      database: dev
      db_user: etl
      table: stage.loans
      from: "s3://loans-lake/exports/{{ ds }}/"
      iam_role: arn:aws:iam::123456789012:role/redshift-loader
      format: parquet
      mode: replace
      poll_interval: 1h
"#,
    );
    cmd.run(["apply".as_ref(), dag.as_os_str()]).expect_code(0);
    let log = log_path(&home, "rs_restart", "load");

    let server = Server::start(&cmd, &[]);
    cmd.run(["trigger", "rs_restart", "--date", "2024-03-01"]).expect_code(0);
    // The line comes after the record is durable; the first poll finds the statement STARTED, and
    // the next one is an hour away.
    let id = statement_id(&wait_for_line(&log, " | submitted statement "));
    wait_for_line(&log, &format!(" | statement {id} is STARTED"));
    assert_eq!(
        task_of(&cmd, "rs_restart", "load")["external_job"],
        json!({"kind": "redshift_statement", "id": id, "detail": {"target": "cluster analytics, database dev"}}),
        "status shows the recorded statement"
    );

    // kill -9 in the middle of the wait, and start again: the attempt polls the same statement.
    server.kill();
    let server = Server::start(&cmd, &[]);
    let reattached = wait_for_line(&log, " | reattaching to statement ");
    assert!(
        reattached.ends_with(&format!(" | reattaching to statement {id}, submitted by an earlier attempt (the SQL is not submitted again)")),
        "{reattached}"
    );
    assert_eq!(server.wait_for_run("rs_restart", RUN_ID), "success");

    let name = "flowctl/rs_restart/load";
    let batches = requests("RedshiftData.BatchExecuteStatement", "StatementName", name);
    assert_eq!(batches.len(), 1, "the load was submitted exactly once: {batches:#?}");
    assert_eq!(
        batches[0]["json"]["Sqls"],
        json!([
            "BEGIN",
            "DELETE FROM \"stage\".\"loans\"",
            "COPY \"stage\".\"loans\" FROM 's3://loans-lake/exports/2024-03-01/' IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-loader' FORMAT AS PARQUET",
            "COMMIT",
        ])
    );
    assert_eq!(batches[0]["json"]["ClusterIdentifier"], "analytics");
    assert_eq!(batches[0]["json"]["Database"], "dev");
    assert_eq!(batches[0]["json"]["DbUser"], "etl");
    assert!(requests("RedshiftData.ExecuteStatement", "StatementName", name).is_empty());
    let describes = requests("RedshiftData.DescribeStatement", "Id", &id);
    assert!(describes.len() >= 2, "polled before and after the restart: {describes:#?}");

    let load = task_of(&cmd, "rs_restart", "load");
    assert_eq!(load["try_number"], 1, "the restart went on with the same attempt: {load:#}");
    assert_eq!(load["outputs"]["statement_id"], id.as_str());
    assert_eq!(load["outputs"]["rows_loaded"], 0, "{load:#}");
    assert!(load["external_job"].is_null(), "{load:#}");
    let text = std::fs::read_to_string(&log).expect("the log");
    assert!(text.contains(&format!(" | statement {id} FINISHED")), "{text}");
    assert!(!text.contains(CANARY));
    server.stop().expect_code(0);
}

#[test]
fn cancelling_the_run_cancels_the_statement_at_redshift() {
    let (home, cmd) = setup_on(moto());
    let dag = home.write(
        "rs_cancel.yaml",
        r#"dag: rs_cancel
tasks:
  - id: refresh
    operator: redshift.sql
    with:
      connection: warehouse
      workgroup_name: analytics-wg
      database: dev
      sql: "DELETE FROM daily WHERE day = :day"
      parameters: {day: "{{ ds }}"}
      poll_interval: 1h
"#,
    );
    cmd.run(["apply".as_ref(), dag.as_os_str()]).expect_code(0);
    let log = log_path(&home, "rs_cancel", "refresh");
    let server = Server::start(&cmd, &[]);
    cmd.run(["trigger", "rs_cancel", "--date", "2024-03-01"]).expect_code(0);
    let id = statement_id(&wait_for_line(&log, " | submitted statement "));
    wait_for_line(&log, &format!(" | statement {id} is STARTED"));

    cmd.run(["cancel", "rs_cancel", RUN_ID]).expect_code(1);
    assert_eq!(server.wait_for_run("rs_cancel", RUN_ID), "failed");

    let cancelled = wait_for_line(&log, " | cancelled statement ");
    assert!(cancelled.ends_with(&format!(" | cancelled statement {id} at Redshift (CancelStatement)")), "{cancelled}");
    let cancels = requests("RedshiftData.CancelStatement", "Id", &id);
    assert_eq!(cancels.len(), 1, "{cancels:#?}");
    let executes = requests("RedshiftData.ExecuteStatement", "StatementName", "flowctl/rs_cancel/refresh");
    assert_eq!(executes.len(), 1);
    assert_eq!(
        executes[0]["json"],
        json!({
            "Sql": "DELETE FROM daily WHERE day = :day",
            "WorkgroupName": "analytics-wg",
            "Database": "dev",
            "Parameters": [{"name": "day", "value": "2024-03-01"}],
            "StatementName": "flowctl/rs_cancel/refresh",
            "ClientToken": executes[0]["json"]["ClientToken"],
        })
    );
    let refresh = task_of(&cmd, "rs_cancel", "refresh");
    assert_eq!(refresh["state"], "failed", "{refresh:#}");
    assert!(refresh["external_job"].is_null(), "{refresh:#}");
    server.stop().expect_code(0);
}
