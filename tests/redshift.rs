//! End-to-end tests of the Redshift operators through the real `flowctl` binary, for what needs
//! no Redshift: compile-time checks with their lines, and a run whose templates render into the
//! COPY it logs before the Data API is reached.
//!
//! No local Redshift Data API can be read by the Rust SDK (moto's replies carry ISO-8601
//! timestamps where the SDK expects epoch numbers, and moto has no BatchExecuteStatement), so
//! the statements' lifecycle (submit, record, poll, fail, reattach, cancel) and the exact SQL of
//! every mode are tested against scripted replies in operators/src/aws/redshift/tests.rs.

mod util;

use std::time::Duration;

use serde_json::Value;
use util::{Cmd, TempHome};

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
