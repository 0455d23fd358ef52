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
//! server's API (`?wait=` on a run).

mod util;

use std::time::Duration;

use serde_json::{json, Value};
use util::moto::{setup_aws, TestConnection};
use util::standins::MotoLocal;
use util::{wait_for_line, Server};

/// The secret access key of the test connection: it must never appear in a log or status.
const CANARY: &str = "canary-redshift-secret-5c03aa";
const RUN_ID: &str = "manual__2024-03-01T00:00:00Z";

/// The tests' connection, `warehouse`.
const WAREHOUSE: TestConnection = TestConnection { name: "WAREHOUSE", vars: "RS_TEST", key_id: "AKIAFLOWCTLREDSHIFT1", secret: CANARY };

/// Settings of `warehouse` that point at a closed port of 127.0.0.1.
fn unreachable() -> Value {
    // Port 9 (discard) is closed on a test machine: every request is refused at once.
    json!({
        "type": "aws",
        "region": "eu-west-1",
        "endpoints": {"redshift_data": "http://127.0.0.1:9"},
    })
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
    let (home, cmd) = setup_aws(&WAREHOUSE, unreachable());
    let file = home.write("rs_load.yaml", LOAD_DAG);

    let run = cmd.run_file(&file, "2024-03-01", Duration::from_secs(120));

    run.expect_code(1);
    let status = cmd.status("rs_load", RUN_ID);
    let load = util::task_in(&status, "load");
    assert_eq!(load["state"], "failed", "{status:#}");
    let error = load["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("BatchExecuteStatement on cluster analytics, database dev: cannot reach endpoint http://127.0.0.1:9 ("),
        "{error}"
    );
    assert!(error.ends_with("after 5 tries; check the endpoint and the network (connection \"warehouse\")"), "{error}");
    assert!(load["external_job"].is_null(), "nothing was submitted, so nothing is recorded: {load:#}");

    let log = home.log("rs_load", RUN_ID, "load", 1);
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
    let (home, cmd) = setup_aws(&WAREHOUSE, unreachable());
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

/// The patched moto of this test binary ([`MotoLocal::shared`]).
fn moto() -> &'static MotoLocal {
    MotoLocal::shared()
}

/// The recorded requests of `target` whose JSON field `field` is `value`.
fn requests(target: &str, field: &str, value: &str) -> Vec<Value> {
    moto().requests_to(target).into_iter().filter(|r| r["json"][field] == value).collect()
}

/// The statement id at the end of a `submitted statement <id> ...` line.
fn statement_id(line: &str) -> String {
    let start = line.find("submitted statement ").expect("a submitted line") + "submitted statement ".len();
    line[start..].chars().take_while(|c| c.is_ascii_hexdigit() || *c == '-').collect()
}

#[test]
fn a_replace_load_is_one_batch_and_a_restarted_server_reattaches_without_submitting_it_again() {
    let (home, cmd) = setup_aws(&WAREHOUSE, moto().connection());
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
    let log = home.log_path("rs_restart", RUN_ID, "load", 1);

    let server = Server::start(&cmd, &[]);
    cmd.run(["trigger", "rs_restart", "--date", "2024-03-01"]).expect_code(0);
    // The line comes after the record is durable; the first poll finds the statement STARTED, and
    // the next one is an hour away.
    let id = statement_id(&wait_for_line(&log, " | submitted statement "));
    wait_for_line(&log, &format!(" | statement {id} is STARTED"));
    assert_eq!(
        cmd.task("rs_restart", RUN_ID, "load")["external_job"],
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

    let load = cmd.task("rs_restart", RUN_ID, "load");
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
    let (home, cmd) = setup_aws(&WAREHOUSE, moto().connection());
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
    let log = home.log_path("rs_cancel", RUN_ID, "refresh", 1);
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
    let refresh = cmd.task("rs_cancel", RUN_ID, "refresh");
    assert_eq!(refresh["state"], "failed", "{refresh:#}");
    assert!(refresh["external_job"].is_null(), "{refresh:#}");
    server.stop().expect_code(0);
}
