//! The Redshift operators against Data API replies scripted at the client (aws-smithy-mocks):
//! moto's Redshift Data replies carry ISO-8601 timestamps where the SDK expects epoch numbers,
//! so the SDK cannot read them, and moto has no BatchExecuteStatement.
//!
//! Rules run in `Sequential` mode: each request must be the next one scripted, so a test also
//! proves that nothing else was sent (no ExecuteStatement when reattaching, no CancelStatement
//! when flowctl stops). Request matchers capture what was sent; the tests compare it whole.

use std::sync::{Arc, Mutex};

use aws_sdk_redshiftdata::operation::batch_execute_statement::{BatchExecuteStatementInput, BatchExecuteStatementOutput};
use aws_sdk_redshiftdata::operation::cancel_statement::CancelStatementOutput;
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::operation::execute_statement::{ExecuteStatementInput, ExecuteStatementOutput};
use aws_sdk_redshiftdata::operation::get_statement_result::GetStatementResultOutput;
use aws_sdk_redshiftdata::types::{ColumnMetadata, Field, StatementStatusString, StatusString, SubStatementData};
use aws_sdk_redshiftdata::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::retry::RetryConfig;
use flowctl_engine::connections::AwsConnection;
use flowctl_engine::operator::{ErrorKind, ExternalJob, Operator, Outcome, TaskContext, TaskError};
use flowctl_engine::testing::{Journal, TestTask};
use flowctl_engine::Registry;
use serde_json::{json, Value};

use super::copy::CopyConfig;
use super::sql::SqlConfig;
use super::statement::JOB_KIND;
use super::unload::UnloadConfig;
use crate::aws::job::MAX_POLL_FAILURES;

const ID: &str = "d9b6c0c9-0747-4bf4-b142-e8883122f766";
const ROLE: &str = "arn:aws:iam::123456789012:role/redshift-loader";

/// An attempt of task `load` of DAG `warehouse`; a retry when it finds a recorded statement.
fn task(recorded: Option<&str>) -> TestTask {
    let builder = TaskContext::test_builder().dag_id("warehouse").run_id("manual__2024-03-01").task_id("load");
    match recorded {
        Some(id) => builder.try_number(2).recorded(ExternalJob { kind: JOB_KIND.into(), id: id.into(), detail: Default::default() }).build(),
        None => builder.build(),
    }
}

/// The journal's entry for the record of statement [`ID`] on cluster `analytics`.
fn record() -> String {
    format!(r#"record {JOB_KIND} {ID} {{"target": "cluster analytics, database dev"}}"#)
}

fn conn() -> AwsConnection {
    AwsConnection { name: "warehouse".into(), region: Some("eu-west-1".into()), ..AwsConnection::default() }
}

/// A client whose requests go to `rules`, in order, with the SDK's own retries off so the
/// operator's poll loop sees every throttled reply.
fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_redshiftdata, RuleMode::Sequential, rules, |c| c.retry_config(RetryConfig::disabled()))
}

fn config<T: serde::de::DeserializeOwned>(with: Value) -> T {
    serde_json::from_value(with).expect("valid settings")
}

fn described(status: StatusString) -> DescribeStatementOutput {
    DescribeStatementOutput::builder().id(ID).status(status).result_rows(-1).build().unwrap()
}

/// DescribeStatement replies in order; each request goes to the journal.
fn describe_rule(journal: &Journal, replies: Vec<DescribeStatementOutput>) -> Rule {
    let journal = journal.clone();
    let mut sequence = mock!(Client::describe_statement)
        .match_requests(move |req| {
            journal.push(format!("describe {}", req.id().unwrap_or("")));
            true
        })
        .sequence();
    for reply in replies {
        sequence = sequence.output(move || reply.clone());
    }
    sequence.build()
}

/// ExecuteStatement answering with [`ID`], capturing the request.
fn execute_rule(journal: &Journal, sent: &Arc<Mutex<Option<ExecuteStatementInput>>>) -> Rule {
    let (journal, sent) = (journal.clone(), sent.clone());
    mock!(Client::execute_statement)
        .match_requests(move |req| {
            journal.push("execute");
            *sent.lock().unwrap() = Some(req.clone());
            true
        })
        .then_output(|| ExecuteStatementOutput::builder().id(ID).build())
}

/// BatchExecuteStatement answering with [`ID`], capturing the request.
fn batch_rule(journal: &Journal, sent: &Arc<Mutex<Option<BatchExecuteStatementInput>>>) -> Rule {
    let (journal, sent) = (journal.clone(), sent.clone());
    mock!(Client::batch_execute_statement)
        .match_requests(move |req| {
            journal.push("batch");
            *sent.lock().unwrap() = Some(req.clone());
            true
        })
        .then_output(|| BatchExecuteStatementOutput::builder().id(ID).build())
}

/// CancelStatement, accepted.
fn cancel_rule(journal: &Journal) -> Rule {
    let journal = journal.clone();
    mock!(Client::cancel_statement)
        .match_requests(move |req| {
            journal.push(format!("cancel {}", req.id().unwrap_or("")));
            true
        })
        .then_output(|| CancelStatementOutput::builder().status(true).build())
}

fn finished_batch(rows: &[i64]) -> DescribeStatementOutput {
    let mut out = DescribeStatementOutput::builder().id(ID).status(StatusString::Finished).result_rows(-1);
    for (i, n) in rows.iter().enumerate() {
        out = out.sub_statements(
            SubStatementData::builder()
                .id(format!("{ID}:{}", i + 1))
                .status(StatementStatusString::Finished)
                .result_rows(*n)
                .build()
                .unwrap(),
        );
    }
    out.build().unwrap()
}

fn outputs(outcome: Outcome) -> Value {
    Value::Object(outcome.outputs().clone())
}

fn sql_config() -> SqlConfig {
    config(json!({
        "cluster_identifier": "analytics",
        "database": "dev",
        "db_user": "etl",
        "sql": "SELECT id, name, score, active, note FROM loans WHERE day = :day AND amount > :min",
        "parameters": {"day": "2024-03-01", "min": 100},
        "fetch": true,
        "poll_interval": "5s",
    }))
}

#[tokio::test(start_paused = true)]
async fn a_statement_goes_submitted_started_finished_and_its_rows_are_fetched() {
    let h = task(None);
    let sent = Arc::default();
    let execute = execute_rule(h.jobs.journal(), &sent);
    let describe = describe_rule(
        h.jobs.journal(),
        vec![
            described(StatusString::Submitted),
            described(StatusString::Started),
            described(StatusString::Started),
            DescribeStatementOutput::builder().id(ID).status(StatusString::Finished).result_rows(2).has_result_set(true).build().unwrap(),
        ],
    );
    let column = |name: &str| ColumnMetadata::builder().name(name).build();
    let first_page = GetStatementResultOutput::builder()
        .column_metadata(column("id"))
        .column_metadata(column("name"))
        .column_metadata(column("score"))
        .column_metadata(column("active"))
        .column_metadata(column("note"))
        .records(vec![
            Field::LongValue(1),
            Field::StringValue("O'Brien".into()),
            Field::DoubleValue(0.5),
            Field::BooleanValue(true),
            Field::IsNull(true),
        ])
        .next_token("page-2")
        .build()
        .unwrap();
    let second_page = GetStatementResultOutput::builder()
        .records(vec![
            Field::LongValue(2),
            Field::StringValue("Ng".into()),
            Field::DoubleValue(2.25),
            Field::BooleanValue(false),
            Field::StringValue("late".into()),
        ])
        .build()
        .unwrap();
    let pages = mock!(Client::get_statement_result)
        .match_requests(|req| req.id() == Some(ID))
        .sequence()
        .output(move || first_page.clone())
        .output(move || second_page.clone())
        .build();
    let client = client(&[&execute, &describe, &pages]);

    let outcome = super::sql::run(&client, &conn(), sql_config(), &h.ctx).await.unwrap();

    let sent = sent.lock().unwrap().clone().expect("ExecuteStatement was sent");
    assert_eq!(sent.sql(), Some("SELECT id, name, score, active, note FROM loans WHERE day = :day AND amount > :min"));
    assert_eq!(sent.cluster_identifier(), Some("analytics"));
    assert_eq!(sent.database(), Some("dev"));
    assert_eq!(sent.db_user(), Some("etl"));
    assert_eq!(sent.secret_arn(), None);
    assert_eq!(sent.workgroup_name(), None);
    assert_eq!(sent.statement_name(), Some("flowctl/warehouse/load"));
    let parameters: Vec<(&str, &str)> = sent.parameters().iter().map(|p| (p.name(), p.value())).collect();
    assert_eq!(parameters, [("day", "2024-03-01"), ("min", "100")]);

    assert_eq!(
        outputs(outcome),
        json!({
            "statement_id": ID,
            "rows_affected": 2,
            "row_count": 2,
            "truncated": false,
            "rows": [
                {"id": 1, "name": "O'Brien", "score": 0.5, "active": true, "note": null},
                {"id": 2, "name": "Ng", "score": 2.25, "active": false, "note": "late"},
            ],
        })
    );
    // The id is recorded before the first poll, and forgotten once the statement has ended.
    let describe_call = format!("describe {ID}");
    assert_eq!(
        h.journal(),
        ["execute".to_string(), record(), describe_call.clone(), describe_call.clone(), describe_call.clone(), describe_call, "clear".into()]
    );
    // Each state is logged once, however many polls saw it.
    assert_eq!(
        h.log.lines(),
        [
            format!("submitted statement {ID} to cluster analytics, database dev"),
            format!("statement {ID} is SUBMITTED"),
            format!("statement {ID} is STARTED"),
            format!("statement {ID} FINISHED (2 rows)"),
            "fetched 2 result rows".to_string(),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn fetch_stops_at_the_limit_and_says_rows_were_left() {
    let h = task(None);
    let sent = Arc::default();
    let execute = execute_rule(h.jobs.journal(), &sent);
    let describe = describe_rule(
        h.jobs.journal(),
        vec![DescribeStatementOutput::builder().id(ID).status(StatusString::Finished).result_rows(3).has_result_set(true).build().unwrap()],
    );
    let page = GetStatementResultOutput::builder()
        .column_metadata(ColumnMetadata::builder().name("n").build())
        .records(vec![Field::LongValue(1)])
        .records(vec![Field::LongValue(2)])
        .records(vec![Field::LongValue(3)])
        .build()
        .unwrap();
    let pages = mock!(Client::get_statement_result).then_output(move || page.clone());
    let client = client(&[&execute, &describe, &pages]);
    let mut settings = sql_config();
    settings.fetch_limit = Some(2);

    let outcome = super::sql::run(&client, &conn(), settings, &h.ctx).await.unwrap();

    let out = outputs(outcome);
    assert_eq!(out["rows"], json!([{"n": 1}, {"n": 2}]));
    assert_eq!((out["row_count"].clone(), out["truncated"].clone()), (json!(2), json!(true)));
    assert!(h.log_text().contains("fetched 2 result rows (fetch_limit 2 reached; more rows were left unread)"), "{}", h.log_text());
}

#[tokio::test(start_paused = true)]
async fn a_failed_statement_fails_the_task_with_redshifts_error() {
    let h = task(None);
    let sent = Arc::default();
    let execute = execute_rule(h.jobs.journal(), &sent);
    let describe = describe_rule(
        h.jobs.journal(),
        vec![
            described(StatusString::Started),
            DescribeStatementOutput::builder()
                .id(ID)
                .status(StatusString::Failed)
                .error("ERROR: relation \"public.loans\" does not exist")
                .result_rows(-1)
                .build()
                .unwrap(),
        ],
    );
    let client = client(&[&execute, &describe]);

    let err = super::sql::run(&client, &conn(), sql_config(), &h.ctx).await.unwrap_err();

    assert_eq!(err.kind, ErrorKind::Final);
    assert_eq!(
        err.message,
        format!("statement {ID} on cluster analytics, database dev failed: ERROR: relation \"public.loans\" does not exist")
    );
    // The statement has ended: a retry must submit a fresh one.
    assert_eq!(h.journal().last().map(String::as_str), Some("clear"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_names_the_statement_that_failed() {
    let h = task(None);
    let sent = Arc::default();
    let batch = batch_rule(h.jobs.journal(), &sent);
    let failed = DescribeStatementOutput::builder()
        .id(ID)
        .status(StatusString::Failed)
        .error("ERROR: Load into table 'loans' failed. Check 'sys_load_error_detail' system table for details.")
        .result_rows(-1)
        .sub_statements(SubStatementData::builder().id(format!("{ID}:1")).status(StatementStatusString::Finished).query_string("BEGIN").build().unwrap())
        .sub_statements(
            SubStatementData::builder()
                .id(format!("{ID}:2"))
                .status(StatementStatusString::Failed)
                .query_string("COPY \"loans\" FROM 's3://lake/loans/' IAM_ROLE default FORMAT AS CSV")
                .error("ERROR: Load into table 'loans' failed. Check 'sys_load_error_detail' system table for details.")
                .build()
                .unwrap(),
        )
        .sub_statements(SubStatementData::builder().id(format!("{ID}:3")).status(StatementStatusString::Aborted).query_string("COMMIT").build().unwrap())
        .build()
        .unwrap();
    let describe = describe_rule(h.jobs.journal(), vec![failed]);
    let client = client(&[&batch, &describe]);
    let settings: SqlConfig = config(json!({
        "workgroup_name": "wg",
        "database": "dev",
        "sql": ["BEGIN", "COPY \"loans\" FROM 's3://lake/loans/' IAM_ROLE default FORMAT AS CSV", "COMMIT"],
    }));

    let err = super::sql::run(&client, &conn(), settings, &h.ctx).await.unwrap_err();

    assert_eq!(
        err.message,
        format!(
            "statement {ID} on workgroup wg, database dev failed at statement 2 of 3 (COPY \"loans\" FROM 's3://lake/loans/' IAM_ROLE default FORMAT AS CSV): ERROR: Load into table 'loans' failed. Check 'sys_load_error_detail' system table for details."
        )
    );
    assert_eq!(err.kind, ErrorKind::Final);
}

#[tokio::test(start_paused = true)]
async fn an_aborted_statement_fails_the_task() {
    let h = task(None);
    let sent = Arc::default();
    let execute = execute_rule(h.jobs.journal(), &sent);
    let describe = describe_rule(h.jobs.journal(), vec![described(StatusString::Aborted)]);
    let client = client(&[&execute, &describe]);

    let err = super::sql::run(&client, &conn(), sql_config(), &h.ctx).await.unwrap_err();

    assert_eq!(
        err.message,
        format!("statement {ID} on cluster analytics, database dev was aborted (cancelled outside flowctl, or stopped by a workload management rule)")
    );
    assert_eq!(h.journal().last().map(String::as_str), Some("clear"));
}

/// A throttled or failing DescribeStatement, as the Data API sends it (awsJson 1.1).
fn throttled() -> (u16, Option<String>) {
    (400, Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_string()))
}

#[tokio::test(start_paused = true)]
async fn throttling_during_the_poll_is_waited_out() {
    let h = task(None);
    let sent = Arc::default();
    let execute = execute_rule(h.jobs.journal(), &sent);
    let (status, body) = throttled();
    let describe = mock!(Client::describe_statement)
        .sequence()
        .output(|| described(StatusString::Started))
        .http_status(status, body.clone())
        .http_status(status, body)
        .http_status(500, Some(r#"{"__type":"InternalServerException","message":"try later"}"#.to_string()))
        .output(|| DescribeStatementOutput::builder().id(ID).status(StatusString::Finished).result_rows(7).build().unwrap())
        .build();
    let client = client(&[&execute, &describe]);
    let mut settings = sql_config();
    settings.fetch = false;
    let started = tokio::time::Instant::now();

    let outcome = super::sql::run(&client, &conn(), settings, &h.ctx).await.unwrap();

    assert_eq!(outputs(outcome), json!({"statement_id": ID, "rows_affected": 7}));
    assert_eq!(describe.num_calls(), 5);
    let log = h.log_text();
    assert!(
        log.contains(&format!(
            "poll 1 of {MAX_POLL_FAILURES} allowed in a row failed, trying again in 5s: DescribeStatement of statement {ID}: AWS in eu-west-1 is throttling requests (ThrottlingException: Rate exceeded), still after 5 tries with backoff"
        )),
        "{log}"
    );
    assert!(log.contains("poll 2 of 10 allowed in a row failed, trying again in 10s: "), "the wait doubles after each failure:\n{log}");
    assert!(log.contains("poll 3 of 10 allowed in a row failed, trying again in 20s: "), "{log}");
    // 5s after STARTED, then 5 + 10 + 20 s of backoff.
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(40));
}

#[tokio::test(start_paused = true)]
async fn polling_gives_up_after_repeated_errors_and_keeps_the_record_for_the_retry() {
    let h = task(None);
    let sent = Arc::default();
    let execute = execute_rule(h.jobs.journal(), &sent);
    let (status, body) = throttled();
    let describe = mock!(Client::describe_statement).sequence().http_status(status, body).times(MAX_POLL_FAILURES as usize).build();
    let client = client(&[&execute, &describe]);

    let err = super::sql::run(&client, &conn(), sql_config(), &h.ctx).await.unwrap_err();

    assert_eq!(err.kind, ErrorKind::Retryable);
    assert_eq!(
        err.message,
        format!(
            "DescribeStatement of statement {ID}: AWS in eu-west-1 is throttling requests (ThrottlingException: Rate exceeded), still after 5 tries with backoff ({MAX_POLL_FAILURES} polls in a row failed; a retry reattaches)"
        )
    );
    assert_eq!(h.journal(), ["execute".to_string(), record()], "the record stays for the retry");
}

#[tokio::test(start_paused = true)]
async fn a_retry_reattaches_to_the_recorded_statement_without_submitting_it() {
    let h = task(Some(ID));
    // Only DescribeStatement is scripted: an ExecuteStatement would not match and fail the test.
    let describe = describe_rule(
        h.jobs.journal(),
        vec![described(StatusString::Started), DescribeStatementOutput::builder().id(ID).status(StatusString::Finished).result_rows(12).build().unwrap()],
    );
    let client = client(&[&describe]);
    let mut settings = sql_config();
    settings.fetch = false;

    let outcome = super::sql::run(&client, &conn(), settings, &h.ctx).await.unwrap();

    assert_eq!(outputs(outcome), json!({"statement_id": ID, "rows_affected": 12}));
    assert_eq!(h.journal(), [format!("describe {ID}"), format!("describe {ID}"), "clear".into()]);
    assert_eq!(
        h.log.lines()[0],
        format!("reattaching to statement {ID}, submitted by an earlier attempt (the SQL is not submitted again)")
    );
}

#[tokio::test(start_paused = true)]
async fn a_recorded_statement_the_data_api_no_longer_knows_is_forgotten() {
    let h = task(Some(ID));
    let describe = mock!(Client::describe_statement).sequence().http_status(
        400,
        Some(r#"{"__type":"ResourceNotFoundException","message":"Query does not exist.","ResourceId":"x"}"#.to_string()),
    );
    let describe = describe.build();
    let client = client(&[&describe]);

    let err = super::sql::run(&client, &conn(), sql_config(), &h.ctx).await.unwrap_err();

    assert_eq!(
        err.message,
        format!("statement {ID} is unknown to the Data API on cluster analytics, database dev (Query does not exist); it keeps statements for 24 hours: check whether its work was done, then run the task again")
    );
    assert_eq!(h.journal(), ["clear"]);
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_task_cancels_the_statement() {
    let h = task(None);
    let sent = Arc::default();
    let execute = execute_rule(h.jobs.journal(), &sent);
    let cancel = h.ctx.cancel.clone();
    // The task is cancelled while the statement runs.
    let describe = mock!(Client::describe_statement).then_compute_output(move |_| {
        cancel.cancel();
        described(StatusString::Started)
    });
    let cancel_statement = cancel_rule(h.jobs.journal());
    let client = client(&[&execute, &describe, &cancel_statement]);

    let err = super::sql::run(&client, &conn(), sql_config(), &h.ctx).await.unwrap_err();

    assert_eq!(err, TaskError::cancelled());
    assert_eq!(h.journal(), ["execute".to_string(), record(), format!("cancel {ID}"), "clear".into()]);
    assert!(h.log_text().contains(&format!("cancelled statement {ID} at Redshift (CancelStatement)")), "{}", h.log_text());
}

#[tokio::test(start_paused = true)]
async fn a_stopping_flowctl_leaves_the_statement_running_for_the_next_start() {
    let h = task(None);
    let sent = Arc::default();
    let execute = execute_rule(h.jobs.journal(), &sent);
    let (cancel, shutdown) = (h.ctx.cancel.clone(), h.ctx.shutdown.clone());
    let describe = mock!(Client::describe_statement).then_compute_output(move |_| {
        shutdown.cancel();
        cancel.cancel();
        described(StatusString::Started)
    });
    // No CancelStatement is scripted: sending one would fail the test.
    let client = client(&[&execute, &describe]);

    let err = super::sql::run(&client, &conn(), sql_config(), &h.ctx).await.unwrap_err();

    assert_eq!(err.message, format!("flowctl stopped while statement {ID} ran; the next start reattaches to it"));
    assert_eq!(h.journal(), ["execute".to_string(), record()], "the record is kept");
    assert_eq!(h.log.lines().last().unwrap(), &format!("flowctl is stopping: leaving statement {ID} running; the next start reattaches"));
}

#[tokio::test(start_paused = true)]
async fn a_statement_whose_id_cannot_be_recorded_is_cancelled() {
    let h = task(None);
    h.jobs.refuse_records("cannot write the store: disk full");
    let sent = Arc::default();
    let execute = execute_rule(h.jobs.journal(), &sent);
    let cancel_statement = cancel_rule(h.jobs.journal());
    // No DescribeStatement is scripted: an unrecorded statement is not waited for.
    let client = client(&[&execute, &cancel_statement]);

    let err = super::sql::run(&client, &conn(), sql_config(), &h.ctx).await.unwrap_err();

    assert_eq!(err, TaskError::retryable("cannot write the store: disk full"));
    assert_eq!(h.journal(), ["execute".to_string(), format!("record refused {JOB_KIND} {ID}"), format!("cancel {ID}")]);
}

#[tokio::test(start_paused = true)]
async fn a_batch_goes_to_a_serverless_workgroup_with_batch_execute_statement() {
    let h = task(None);
    let sent = Arc::default();
    let batch = batch_rule(h.jobs.journal(), &sent);
    let describe = describe_rule(h.jobs.journal(), vec![described(StatusString::Picked), finished_batch(&[0, 42, -1])]);
    let client = client(&[&batch, &describe]);
    let settings: SqlConfig = config(json!({
        "workgroup_name": "analytics-wg",
        "database": "dev",
        "secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:etl-AbCdEf",
        "sql": ["DELETE FROM daily WHERE day = :day", "INSERT INTO daily SELECT * FROM staging WHERE day = :day", "ANALYZE daily"],
        "parameters": {"day": "2024-03-01"},
        "statement_name": "daily refresh",
    }));

    let outcome = super::sql::run(&client, &conn(), settings, &h.ctx).await.unwrap();

    let sent = sent.lock().unwrap().clone().expect("BatchExecuteStatement was sent");
    assert_eq!(
        sent.sqls(),
        ["DELETE FROM daily WHERE day = :day", "INSERT INTO daily SELECT * FROM staging WHERE day = :day", "ANALYZE daily"]
    );
    assert_eq!(sent.workgroup_name(), Some("analytics-wg"));
    assert_eq!(sent.cluster_identifier(), None);
    assert_eq!(sent.database(), Some("dev"));
    assert_eq!(sent.db_user(), None);
    assert_eq!(sent.secret_arn(), Some("arn:aws:secretsmanager:eu-west-1:123456789012:secret:etl-AbCdEf"));
    assert_eq!(sent.statement_name(), Some("daily refresh"));
    let parameters: Vec<(&str, &str)> = sent.parameters().iter().map(|p| (p.name(), p.value())).collect();
    assert_eq!(parameters, [("day", "2024-03-01")]);
    assert_eq!(outputs(outcome), json!({"statement_id": ID, "rows_affected": [0, 42, null]}));
    assert!(h.log_text().contains(&format!("submitted statement {ID} (3 statements in one transaction) to workgroup analytics-wg, database dev")));
}

fn copy_settings(extra: Value) -> CopyConfig {
    let with = json!({
        "cluster_identifier": "analytics",
        "database": "dev",
        "db_user": "etl",
        "table": "stage.loans",
        "from": "s3://lake/loans/2024-03-01/",
        "iam_role": ROLE,
    });
    config(merged(&with, extra))
}

/// `base` with the keys of `extra` added or replaced.
fn merged(base: &Value, extra: Value) -> Value {
    let mut with = base.clone();
    with.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    with
}

#[tokio::test(start_paused = true)]
async fn copy_append_runs_one_copy_with_every_option_quoted() {
    let h = task(None);
    let sent = Arc::default();
    let execute = execute_rule(h.jobs.journal(), &sent);
    let describe = describe_rule(
        h.jobs.journal(),
        vec![DescribeStatementOutput::builder().id(ID).status(StatusString::Finished).result_rows(1500).build().unwrap()],
    );
    let client = client(&[&execute, &describe]);
    let settings = copy_settings(json!({
        "columns": ["id", "amount", "o'day"],
        "from": "s3://lake/loans/it's/",
        "delimiter": ";",
        "header": true,
        "date_format": "YYYY-MM-DD",
        "time_format": "auto",
        "null_as": "\\N",
        "region": "us-east-1",
        "extra_options": ["GZIP", "MAXERROR 10"],
    }));

    let outcome = super::copy::run(&client, &conn(), settings, &h.ctx).await.unwrap();

    let expected = "COPY \"stage\".\"loans\" (\"id\", \"amount\", \"o'day\") FROM 's3://lake/loans/it''s/' IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-loader' FORMAT AS CSV DELIMITER AS ';' IGNOREHEADER 1 DATEFORMAT AS 'YYYY-MM-DD' TIMEFORMAT AS 'auto' NULL AS '\\\\N' REGION AS 'us-east-1' GZIP MAXERROR 10";
    assert_eq!(sent.lock().unwrap().as_ref().and_then(|s| s.sql()), Some(expected));
    assert_eq!(outputs(outcome), json!({"statement_id": ID, "table": "stage.loans", "rows_loaded": 1500}));
    // The SQL that ran is in the attempt log.
    assert_eq!(
        h.log.lines()[..2],
        [
            "loading s3://lake/loans/it's/ into stage.loans (append, cluster analytics, database dev) with:".to_string(),
            format!("  {expected}"),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn copy_replace_deletes_and_copies_in_one_transaction() {
    let h = task(None);
    let sent = Arc::default();
    let batch = batch_rule(h.jobs.journal(), &sent);
    let describe = describe_rule(h.jobs.journal(), vec![finished_batch(&[0, 900, 1000, 0])]);
    let client = client(&[&batch, &describe]);
    let settings = copy_settings(json!({"mode": "replace", "format": "parquet"}));

    let outcome = super::copy::run(&client, &conn(), settings, &h.ctx).await.unwrap();

    assert_eq!(
        sent.lock().unwrap().as_ref().unwrap().sqls(),
        [
            "BEGIN",
            "DELETE FROM \"stage\".\"loans\"",
            "COPY \"stage\".\"loans\" FROM 's3://lake/loans/2024-03-01/' IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-loader' FORMAT AS PARQUET",
            "COMMIT",
        ]
    );
    assert_eq!(outputs(outcome), json!({"statement_id": ID, "table": "stage.loans", "rows_deleted": 900, "rows_loaded": 1000}));
}

#[tokio::test(start_paused = true)]
async fn copy_upsert_stages_then_deletes_matching_keys_and_inserts() {
    let h = task(None);
    let sent = Arc::default();
    let batch = batch_rule(h.jobs.journal(), &sent);
    let describe = describe_rule(h.jobs.journal(), vec![finished_batch(&[0, 0, 250, 40, 250, 0])]);
    let client = client(&[&batch, &describe]);
    let settings = copy_settings(json!({
        "mode": "upsert",
        "key": ["id", "day"],
        "format": "json",
        "jsonpaths": "s3://lake/paths/loans.json",
        "time_format": "epochsecs",
    }));

    let outcome = super::copy::run(&client, &conn(), settings, &h.ctx).await.unwrap();

    assert_eq!(
        sent.lock().unwrap().as_ref().unwrap().sqls(),
        [
            "BEGIN",
            "CREATE TEMP TABLE \"flowctl_stage_loans\" (LIKE \"stage\".\"loans\")",
            "COPY \"flowctl_stage_loans\" FROM 's3://lake/loans/2024-03-01/' IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-loader' FORMAT AS JSON 's3://lake/paths/loans.json' TIMEFORMAT AS 'epochsecs'",
            "DELETE FROM \"stage\".\"loans\" USING \"flowctl_stage_loans\" WHERE \"stage\".\"loans\".\"id\" = \"flowctl_stage_loans\".\"id\" AND \"stage\".\"loans\".\"day\" = \"flowctl_stage_loans\".\"day\"",
            "INSERT INTO \"stage\".\"loans\" SELECT * FROM \"flowctl_stage_loans\"",
            "COMMIT",
        ]
    );
    assert_eq!(outputs(outcome), json!({"statement_id": ID, "table": "stage.loans", "rows_loaded": 250, "rows_replaced": 40}));
}

#[tokio::test(start_paused = true)]
async fn copy_upsert_with_columns_inserts_only_those_columns() {
    let h = task(None);
    let sent = Arc::default();
    let batch = batch_rule(h.jobs.journal(), &sent);
    let describe = describe_rule(h.jobs.journal(), vec![finished_batch(&[0, 0, 2, 1, 2, 0])]);
    let client = client(&[&batch, &describe]);
    let settings = copy_settings(json!({"mode": "upsert", "key": ["id"], "columns": ["id", "amount"], "table": "loans"}));

    super::copy::run(&client, &conn(), settings, &h.ctx).await.unwrap();

    let sqls = sent.lock().unwrap().as_ref().unwrap().sqls().to_vec();
    assert_eq!(
        sqls[2],
        "COPY \"flowctl_stage_loans\" (\"id\", \"amount\") FROM 's3://lake/loans/2024-03-01/' IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-loader' FORMAT AS CSV"
    );
    assert_eq!(sqls[4], "INSERT INTO \"loans\" (\"id\", \"amount\") SELECT \"id\", \"amount\" FROM \"flowctl_stage_loans\"");
}

#[tokio::test(start_paused = true)]
async fn unload_quotes_the_query_and_writes_every_option() {
    let h = task(None);
    let sent = Arc::default();
    let execute = execute_rule(h.jobs.journal(), &sent);
    let describe = describe_rule(
        h.jobs.journal(),
        vec![described(StatusString::Started), DescribeStatementOutput::builder().id(ID).status(StatusString::Finished).result_rows(321).build().unwrap()],
    );
    let client = client(&[&execute, &describe]);
    let settings: UnloadConfig = config(json!({
        "workgroup_name": "wg",
        "database": "dev",
        "query": "SELECT * FROM loans WHERE state = 'NV' AND note LIKE '%\\\\%';",
        "to": "s3://exports/loans/2024-03-01/",
        "iam_role": "default",
        "header": true,
        "partition_by": ["state"],
        "partition_include": true,
        "manifest": true,
        "allow_overwrite": true,
        "parallel": false,
        "max_file_size_mb": 256,
        "extra_options": ["EXTENSION 'csv.gz'", "GZIP"],
    }));

    let outcome = super::unload::run(&client, &conn(), settings, &h.ctx).await.unwrap();

    let expected = "UNLOAD ('SELECT * FROM loans WHERE state = ''NV'' AND note LIKE ''%\\\\\\\\%''') TO 's3://exports/loans/2024-03-01/' IAM_ROLE default FORMAT AS CSV HEADER PARTITION BY (\"state\") INCLUDE MANIFEST ALLOWOVERWRITE PARALLEL OFF MAXFILESIZE AS 256 MB EXTENSION 'csv.gz' GZIP";
    assert_eq!(sent.lock().unwrap().as_ref().and_then(|s| s.sql()), Some(expected));
    assert_eq!(
        outputs(outcome),
        json!({
            "statement_id": ID,
            "rows_unloaded": 321,
            "to": "s3://exports/loans/2024-03-01/",
            "manifest": "s3://exports/loans/2024-03-01/manifest",
        })
    );
    assert_eq!(h.log.lines()[1], format!("  {expected}"));
}

#[tokio::test(start_paused = true)]
async fn unload_to_parquet_has_only_the_options_parquet_takes() {
    let h = task(None);
    let sent = Arc::default();
    let execute = execute_rule(h.jobs.journal(), &sent);
    let describe = describe_rule(h.jobs.journal(), vec![DescribeStatementOutput::builder().id(ID).status(StatusString::Finished).result_rows(5).build().unwrap()]);
    let client = client(&[&execute, &describe]);
    let settings: UnloadConfig = config(json!({
        "cluster_identifier": "analytics",
        "database": "dev",
        "db_user": "etl",
        "query": "SELECT id FROM loans",
        "to": "s3://exports/ids/",
        "iam_role": ROLE,
        "format": "parquet",
    }));

    super::unload::run(&client, &conn(), settings, &h.ctx).await.unwrap();

    assert_eq!(
        sent.lock().unwrap().as_ref().and_then(|s| s.sql()),
        Some("UNLOAD ('SELECT id FROM loans') TO 's3://exports/ids/' IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-loader' FORMAT AS PARQUET")
    );
}

/// What `flowctl validate` reports for a task's settings: the field's path and the message.
fn invalid(operator: &str, with: Value) -> (String, String) {
    let mut registry = Registry::new();
    super::register(&mut registry);
    let err = registry.get(operator).expect("registered").validate(&with).expect_err("settings must be rejected");
    (err.path, err.message)
}

#[test]
fn mistakes_are_found_at_compile_time_with_the_field() {
    let base = json!({"cluster_identifier": "c", "database": "dev", "db_user": "etl", "sql": "SELECT 1"});
    let with = |extra: Value| merged(&base, extra);
    assert_eq!(
        invalid("redshift.sql", with(json!({"db_user": null}))),
        ("".into(), "a provisioned cluster needs `db_user` (temporary credentials for that user) or `secret_arn` (a Secrets Manager secret with the login)".into())
    );
    assert_eq!(invalid("redshift.sql", with(json!({"fetch_limit": 5}))), ("fetch_limit".into(), "applies only with `fetch: true`".into()));
    assert_eq!(
        invalid("redshift.sql", with(json!({"sql": vec!["SELECT 1"; 41]}))),
        ("sql".into(), "41 statements; the Data API runs at most 40 in one batch: split the task".into())
    );
    assert_eq!(invalid("redshift.sql", with(json!({"sql": ["SELECT 1", " "]}))), ("sql[1]".into(), "the SQL is empty".into()));
    assert_eq!(
        invalid("redshift.sql", with(json!({"parameters": {"day-1": "x"}}))).0,
        "parameters.day-1"
    );
    assert_eq!(invalid("redshift.sql", with(json!({"poll_interval": "0s"}))), ("poll_interval".into(), "must be longer than zero".into()));
    assert!(invalid("redshift.sql", with(json!({"fecth": true}))).1.starts_with("unknown field `fecth`"));

    let copy = json!({"cluster_identifier": "c", "database": "dev", "db_user": "etl", "table": "loans", "from": "s3://lake/x/", "iam_role": ROLE});
    let copy_with = |extra: Value| merged(&copy, extra);
    assert_eq!(invalid("redshift.copy", copy_with(json!({"mode": "upsert"}))), ("key".into(), "mode upsert needs `key`: the columns that identify a row".into()));
    assert_eq!(invalid("redshift.copy", copy_with(json!({"key": ["id"]}))), ("key".into(), "applies only to mode upsert".into()));
    assert_eq!(
        invalid("redshift.copy", copy_with(json!({"mode": "upsert", "key": ["id"], "columns": ["amount"]}))),
        ("key".into(), "key column \"id\" is not among `columns`, so the files do not fill it".into())
    );
    assert_eq!(
        invalid("redshift.copy", copy_with(json!({"format": "parquet", "header": true}))),
        ("header".into(), "applies only to csv files (format: parquet)".into())
    );
    assert_eq!(
        invalid("redshift.copy", copy_with(json!({"delimiter": "\\t"}))),
        ("delimiter".into(), "\"\\t\" is not one character; for a tab write \"\\t\" in double quotes".into())
    );
    assert_eq!(
        invalid("redshift.copy", copy_with(json!({"from": "lake/x/"}))),
        ("from".into(), "\"lake/x/\" is not an S3 URL; write s3://bucket/prefix".into())
    );
    assert_eq!(
        invalid("redshift.copy", copy_with(json!({"iam_role": "loader"}))),
        ("iam_role".into(), "\"loader\" is not an IAM role ARN; write arn:aws:iam::<account>:role/<name>, or `default` for the cluster's default role".into())
    );
    assert_eq!(
        invalid("redshift.copy", copy_with(json!({"extra_options": ["GZIP; DROP TABLE loans"]}))),
        ("extra_options[0]".into(), "contains `;`: options are appended to the statement as written and must not end it".into())
    );
    assert_eq!(
        invalid("redshift.copy", copy_with(json!({"table": "a..b"}))),
        ("table".into(), "\"a..b\" has an empty part; write table, schema.table or database.schema.table".into())
    );
    assert!(invalid("redshift.copy", copy_with(json!({"mode": "merge"}))).1.starts_with("unknown variant `merge`"));

    let unload = json!({"workgroup_name": "wg", "database": "dev", "query": "SELECT 1", "to": "s3://b/p/", "iam_role": "default"});
    let unload_with = |extra: Value| merged(&unload, extra);
    assert_eq!(invalid("redshift.unload", unload_with(json!({"format": "parquet", "header": true}))), ("header".into(), "applies only to format csv".into()));
    assert_eq!(
        invalid("redshift.unload", unload_with(json!({"max_file_size_mb": 2}))),
        ("max_file_size_mb".into(), "2 MB is outside UNLOAD's 5 to 6200 MB".into())
    );
    assert_eq!(invalid("redshift.unload", unload_with(json!({"partition_include": true}))), ("partition_include".into(), "applies only with `partition_by`".into()));
    assert_eq!(
        invalid("redshift.unload", unload_with(json!({"db_user": "etl"}))),
        ("db_user".into(), "Redshift Serverless takes no `db_user`: it logs in as the connection's IAM identity, or with `secret_arn`".into())
    );
}

#[test]
fn templated_settings_are_left_for_run_time() {
    let mut registry = Registry::new();
    super::register(&mut registry);
    let copy = registry.get("redshift.copy").unwrap();
    let with = json!({
        "cluster_identifier": "c", "database": "dev", "db_user": "etl",
        "table": "{{ params.table }}", "from": "s3://lake/{{ ds }}/", "iam_role": "{{ params.role }}",
    });
    assert_eq!(copy.validate(&with), Ok(()));
}

#[test]
fn the_operators_are_registered_under_their_names() {
    let mut registry = Registry::new();
    super::register(&mut registry);
    assert_eq!(registry.names().collect::<Vec<_>>(), ["redshift.copy", "redshift.sql", "redshift.unload"]);
    assert_eq!(super::sql::Sql::NAME, "redshift.sql");
}
