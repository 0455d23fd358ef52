//! One Data API statement (or batch) from submission to its end: submit it, record its id through
//! the external-job hook before waiting, poll DescribeStatement until FINISHED, FAILED or ABORTED,
//! cancel it when the task is cancelled, and read its result rows.
//!
//! A retry, or a restart of flowctl, finds the recorded id in `ctx.external_job` and polls that
//! statement instead of submitting the SQL again: a `COPY` runs once. The window that remains is
//! between the Data API accepting the statement and the record being durable (milliseconds); a
//! crash inside it leaves a statement the next attempt does not know about.

use std::time::Duration;

use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::types::{Field, SqlParameter, StatementStatusString, StatusString};
use aws_sdk_redshiftdata::Client;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use flowctl_engine::connections::AwsConnection;
use flowctl_engine::operator::{ExternalJob, TaskContext, TaskError};
use serde_json::{Map, Value};

use super::target::{Target, SERVICE};
use crate::aws::describe_service_error;

/// The kind of external job a Redshift task records.
pub const JOB_KIND: &str = "redshift_statement";
/// How many DescribeStatement calls in a row may fail (each after the SDK's own retries) before
/// the attempt gives up; the statement keeps running and a retry reattaches to it.
pub const MAX_POLL_ERRORS: u32 = 10;
/// The longest wait between polls after failed ones.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(60);
/// How long a cancelled task waits for CancelStatement's answer.
const CANCEL_DEADLINE: Duration = Duration::from_secs(20);
/// How much of a sub-statement's SQL an error quotes.
const QUOTED_SQL_CHARS: usize = 120;

/// The SQL of a task: one statement, or a batch run in order as one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statements {
    /// ExecuteStatement.
    One(String),
    /// BatchExecuteStatement.
    Batch(Vec<String>),
}

/// What to submit, and where.
#[derive(Debug, Clone)]
pub struct Request {
    /// Where it runs.
    pub target: Target,
    /// The SQL.
    pub statements: Statements,
    /// Named parameters (`:name` in the SQL), as the text values the Data API takes.
    pub parameters: Vec<(String, String)>,
    /// The statement's name in Redshift's query history and console.
    pub statement_name: Option<String>,
}

/// A statement that reached FINISHED.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// Its id.
    pub id: String,
    /// Rows returned or affected (`ResultRows`), when Redshift reports a number.
    pub rows: Option<i64>,
    /// Whether it returned rows.
    pub has_result_set: bool,
    /// The statements of a batch, in order (empty for a single statement).
    pub sub_statements: Vec<SubStatement>,
}

/// One statement of a finished batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SubStatement {
    /// Its id (`<batch id>:<n>`), which GetStatementResult takes.
    pub id: String,
    /// Rows returned or affected, when Redshift reports a number.
    pub rows: Option<i64>,
    /// Whether it returned rows.
    pub has_result_set: bool,
}

impl Finished {
    /// The id whose result rows a fetch reads: the statement's, or for a batch the last
    /// sub-statement that returned rows.
    pub fn result_id(&self) -> Option<&str> {
        if self.sub_statements.is_empty() {
            return self.has_result_set.then_some(self.id.as_str());
        }
        self.sub_statements.iter().rev().find(|s| s.has_result_set).map(|s| s.id.as_str())
    }
}

/// Runs statements for one attempt: the client, the connection (for error messages), the
/// attempt's context and the poll interval.
pub struct Runner<'a> {
    /// The Data API client.
    pub client: &'a Client,
    /// The connection the client was built from.
    pub conn: &'a AwsConnection,
    /// The attempt.
    pub ctx: &'a TaskContext,
    /// Time between polls.
    pub poll_interval: Duration,
}

impl Runner<'_> {
    /// Submits the request, or reattaches to the statement an earlier attempt recorded, and waits
    /// for its end.
    pub async fn run(&self, request: &Request) -> Result<Finished, TaskError> {
        let id = match self.recorded() {
            Some(id) => {
                self.ctx.log.line(&format!(
                    "reattaching to statement {id}, submitted by an earlier attempt (the SQL is not submitted again)"
                ));
                id
            }
            None => self.submit(request).await?,
        };
        self.wait(&id, &request.target).await
    }

    /// The statement id an earlier attempt recorded.
    fn recorded(&self) -> Option<String> {
        self.ctx.external_job.as_ref().filter(|job| job.kind == JOB_KIND).map(|job| job.id.clone())
    }

    async fn submit(&self, request: &Request) -> Result<String, TaskError> {
        let target = &request.target;
        let parameters = request
            .parameters
            .iter()
            .map(|(name, value)| SqlParameter::builder().name(name).value(value).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TaskError::fatal(format!("invalid parameter: {e}")))?;
        let parameters = (!parameters.is_empty()).then_some(parameters);
        let (call, sent) = match &request.statements {
            Statements::One(sql) => {
                let send = self
                    .client
                    .execute_statement()
                    .sql(sql)
                    .database(&target.database)
                    .set_cluster_identifier(target.cluster_identifier.clone())
                    .set_workgroup_name(target.workgroup_name.clone())
                    .set_db_user(target.db_user.clone())
                    .set_secret_arn(target.secret_arn.clone())
                    .set_statement_name(request.statement_name.clone())
                    .set_parameters(parameters)
                    .send();
                let reply = tokio::select! {
                    reply = send => reply,
                    _ = self.ctx.cancel.cancelled() => return Err(TaskError::cancelled()),
                };
                let what = format!("ExecuteStatement on {}", target.describe());
                ("ExecuteStatement", reply.map(|out| out.id).map_err(|e| describe_service_error(&e, &what, self.conn, Some(SERVICE)))?)
            }
            Statements::Batch(sqls) => {
                let send = self
                    .client
                    .batch_execute_statement()
                    .set_sqls(Some(sqls.clone()))
                    .database(&target.database)
                    .set_cluster_identifier(target.cluster_identifier.clone())
                    .set_workgroup_name(target.workgroup_name.clone())
                    .set_db_user(target.db_user.clone())
                    .set_secret_arn(target.secret_arn.clone())
                    .set_statement_name(request.statement_name.clone())
                    .set_parameters(parameters)
                    .send();
                let reply = tokio::select! {
                    reply = send => reply,
                    _ = self.ctx.cancel.cancelled() => return Err(TaskError::cancelled()),
                };
                let what = format!("BatchExecuteStatement on {}", target.describe());
                ("BatchExecuteStatement", reply.map(|out| out.id).map_err(|e| describe_service_error(&e, &what, self.conn, Some(SERVICE)))?)
            }
        };
        let id = sent.filter(|id| !id.is_empty()).ok_or_else(|| {
            TaskError::retryable(format!("{call} on {} answered without a statement id", target.describe()))
        })?;
        let count = match &request.statements {
            Statements::One(_) => String::new(),
            Statements::Batch(sqls) => format!(" ({} statements in one transaction)", sqls.len()),
        };
        self.ctx.log.line(&format!("submitted statement {id}{count} to {}", target.describe()));
        let job = ExternalJob {
            kind: JOB_KIND.to_string(),
            id: id.clone(),
            detail: [("target".to_string(), target.describe())].into_iter().collect(),
        };
        if let Err(e) = self.ctx.external_jobs.record(job).await {
            // Nobody could reattach to it: it must not run on unattended.
            self.cancel_at_service(&id).await;
            return Err(e);
        }
        Ok(id)
    }

    /// Polls the statement until it ends, logging each status once.
    async fn wait(&self, id: &str, target: &Target) -> Result<Finished, TaskError> {
        let mut last_status = String::new();
        let mut errors = 0u32;
        loop {
            let reply = tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => return Err(self.stop(id).await),
                reply = self.client.describe_statement().id(id).send() => reply,
            };
            let delay = match reply {
                Ok(out) => {
                    errors = 0;
                    let status = out.status().map(|s| s.as_str().to_string()).unwrap_or_else(|| "UNKNOWN".into());
                    match out.status() {
                        Some(StatusString::Finished) => {
                            let finished = finished(out);
                            self.ctx.log.line(&format!("statement {id} FINISHED{}", rows_note(&finished)));
                            self.clear().await;
                            return Ok(finished);
                        }
                        Some(StatusString::Failed) => {
                            self.ctx.log.line(&format!("statement {id} FAILED"));
                            self.clear().await;
                            return Err(failure(&out, target));
                        }
                        Some(StatusString::Aborted) => {
                            self.ctx.log.line(&format!("statement {id} ABORTED"));
                            self.clear().await;
                            return Err(TaskError::fatal(format!(
                                "statement {id} on {} was aborted (cancelled outside flowctl, or stopped by a workload management rule)",
                                target.describe()
                            )));
                        }
                        _ => {}
                    }
                    if status != last_status {
                        self.ctx.log.line(&format!("statement {id} is {status}"));
                        last_status = status;
                    }
                    self.poll_interval
                }
                Err(e) => {
                    if e.code() == Some("ResourceNotFoundException") {
                        self.clear().await;
                        return Err(TaskError::fatal(format!(
                            "statement {id} is unknown to the Data API on {} ({}); it keeps statements for 24 hours: check whether its work was done, then run the task again",
                            target.describe(),
                            e.message().unwrap_or("ResourceNotFoundException").trim_end_matches('.')
                        )));
                    }
                    let err = describe_service_error(&e, &format!("DescribeStatement of statement {id}"), self.conn, Some(SERVICE));
                    if err.kind == flowctl_engine::operator::ErrorKind::Final {
                        return Err(err);
                    }
                    errors += 1;
                    if errors >= MAX_POLL_ERRORS {
                        return Err(TaskError::retryable(format!(
                            "gave up polling statement {id} after {errors} failed DescribeStatement calls in a row; it may still be running, and a retry reattaches to it: {}",
                            err.message
                        )));
                    }
                    let delay = backoff(self.poll_interval, errors);
                    self.ctx.log.line(&format!(
                        "{}; polling again in {} ({errors} of {MAX_POLL_ERRORS} failures in a row allowed)",
                        err.message,
                        humantime::format_duration(delay)
                    ));
                    delay
                }
            };
            tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => return Err(self.stop(id).await),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// The task was cancelled while its statement ran: leave it running when flowctl itself is
    /// stopping (the next start reattaches), cancel it at Redshift otherwise.
    async fn stop(&self, id: &str) -> TaskError {
        if self.ctx.shutdown.is_cancelled() {
            self.ctx.log.line(&format!("flowctl is stopping: statement {id} keeps running; the next start reattaches to it"));
            return TaskError::retryable(format!("flowctl stopped while statement {id} ran; the next start reattaches to it"));
        }
        self.cancel_at_service(id).await;
        self.clear().await;
        TaskError::cancelled()
    }

    /// CancelStatement, bounded in time; the outcome goes to the log.
    async fn cancel_at_service(&self, id: &str) {
        match tokio::time::timeout(CANCEL_DEADLINE, self.client.cancel_statement().id(id).send()).await {
            Ok(Ok(out)) if out.status() == Some(false) => {
                self.ctx.log.line(&format!("Redshift did not cancel statement {id} (CancelStatement answered false: it may have ended already)"))
            }
            Ok(Ok(_)) => self.ctx.log.line(&format!("cancelled statement {id} at Redshift (CancelStatement)")),
            Ok(Err(e)) => {
                let err = describe_service_error(&e, &format!("CancelStatement of statement {id}"), self.conn, Some(SERVICE));
                self.ctx.log.line(&format!("could not cancel statement {id}: {}", err.message));
            }
            Err(_) => self.ctx.log.line(&format!(
                "CancelStatement of statement {id} got no answer within {}s; it may still be running",
                CANCEL_DEADLINE.as_secs()
            )),
        }
    }

    /// Forgets the recorded statement: it has ended, so a retry submits a fresh one.
    async fn clear(&self) {
        if let Err(e) = self.ctx.external_jobs.clear().await {
            self.ctx.log.line(&format!("could not forget the recorded statement: {}", e.message));
        }
    }

    /// Reads up to `limit` result rows of a finished statement (or sub-statement `id`), as JSON
    /// objects keyed by column name. Returns the rows and whether more were left unread.
    pub async fn fetch_rows(&self, id: &str, limit: usize) -> Result<(Vec<Value>, bool), TaskError> {
        let mut rows = Vec::new();
        let mut columns: Vec<String> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let send = self.client.get_statement_result().id(id).set_next_token(token.take()).send();
            let page = tokio::select! {
                page = send => page,
                _ = self.ctx.cancel.cancelled() => return Err(TaskError::cancelled()),
            }
            .map_err(|e| describe_service_error(&e, &format!("GetStatementResult of statement {id}"), self.conn, Some(SERVICE)))?;
            if columns.is_empty() {
                columns = column_names(page.column_metadata().iter().map(|c| c.name().or(c.label()).unwrap_or("")));
            }
            for record in page.records() {
                if rows.len() == limit {
                    return Ok((rows, true));
                }
                rows.push(row_object(&columns, record));
            }
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_string()),
                _ => return Ok((rows, false)),
            }
            if rows.len() == limit {
                return Ok((rows, true));
            }
        }
    }
}

/// The wait after `failures` failed polls in a row: the poll interval (at least a second),
/// doubled per failure, at most a minute.
fn backoff(poll_interval: Duration, failures: u32) -> Duration {
    let base = poll_interval.max(Duration::from_secs(1));
    base.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(MAX_POLL_BACKOFF.max(poll_interval))
}

fn finished(out: DescribeStatementOutput) -> Finished {
    let count = |n: i64| (n >= 0).then_some(n);
    Finished {
        rows: count(out.result_rows),
        has_result_set: out.has_result_set.unwrap_or(false),
        sub_statements: out
            .sub_statements()
            .iter()
            .map(|s| SubStatement { id: s.id.clone(), rows: count(s.result_rows), has_result_set: s.has_result_set.unwrap_or(false) })
            .collect(),
        id: out.id,
    }
}

fn rows_note(finished: &Finished) -> String {
    if finished.sub_statements.is_empty() {
        return finished.rows.map(|n| format!(" ({n} rows)")).unwrap_or_default();
    }
    let counts: Vec<String> = finished.sub_statements.iter().map(|s| s.rows.map_or("-".to_string(), |n| n.to_string())).collect();
    format!(" (rows per statement: {})", counts.join(", "))
}

/// The error of a FAILED statement: Redshift's own message, and for a batch which statement
/// failed. Retryable only when the error is a conflict another try can get past.
fn failure(out: &DescribeStatementOutput, target: &Target) -> TaskError {
    let id = out.id();
    let top = out.error().map(str::trim).filter(|e| !e.is_empty());
    let subs = out.sub_statements();
    let failed = subs.iter().enumerate().find(|(_, s)| s.status() == Some(&StatementStatusString::Failed));
    let message = match failed {
        Some((index, sub)) => {
            let error = sub.error().map(str::trim).filter(|e| !e.is_empty()).or(top).unwrap_or("no error text");
            format!(
                "statement {id} on {} failed at statement {} of {} ({}): {error}",
                target.describe(),
                index + 1,
                subs.len(),
                quote_sql(sub.query_string().unwrap_or(""))
            )
        }
        None => format!("statement {id} on {} failed: {}", target.describe(), top.unwrap_or("no error text")),
    };
    let lower = message.to_ascii_lowercase();
    if ["serializable isolation violation", "deadlock detected", "could not complete because of a conflict"].iter().any(|t| lower.contains(t)) {
        TaskError::retryable(message)
    } else {
        TaskError::fatal(message)
    }
}

/// The start of a statement's SQL on one line, for errors.
fn quote_sql(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= QUOTED_SQL_CHARS {
        return one_line;
    }
    let cut: String = one_line.chars().take(QUOTED_SQL_CHARS).collect();
    format!("{cut}...")
}

/// Column names for result objects: Redshift's names, with a repeated name numbered (`id`,
/// `id_2`) so no value is lost, and an unnamed column called `column_<n>`.
pub fn column_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (index, name) in names.enumerate() {
        let base = if name.is_empty() { format!("column_{}", index + 1) } else { name.to_string() };
        let mut candidate = base.clone();
        let mut n = 2;
        while out.contains(&candidate) {
            candidate = format!("{base}_{n}");
            n += 1;
        }
        out.push(candidate);
    }
    out
}

/// One result record as a JSON object.
fn row_object(columns: &[String], record: &[Field]) -> Value {
    let mut object = Map::new();
    for (index, field) in record.iter().enumerate() {
        let name = columns.get(index).cloned().unwrap_or_else(|| format!("column_{}", index + 1));
        object.insert(name, field_value(field));
    }
    Value::Object(object)
}

/// A Data API field as JSON: numbers, strings and booleans as themselves, NULL as null, binary as
/// base64 text.
pub fn field_value(field: &Field) -> Value {
    match field {
        Field::IsNull(_) => Value::Null,
        Field::BooleanValue(b) => Value::Bool(*b),
        Field::LongValue(n) => Value::from(*n),
        Field::DoubleValue(x) => serde_json::Number::from_f64(*x).map(Value::Number).unwrap_or_else(|| Value::String(x.to_string())),
        Field::StringValue(s) => Value::String(s.clone()),
        Field::BlobValue(blob) => Value::String(aws_smithy_types::base64::encode(blob.as_ref())),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_missing_column_names_stay_distinct() {
        assert_eq!(column_names(["id", "id", "", "id"].into_iter()), ["id", "id_2", "column_3", "id_3"]);
    }

    #[test]
    fn fields_become_json() {
        assert_eq!(field_value(&Field::LongValue(7)), Value::from(7));
        assert_eq!(field_value(&Field::DoubleValue(1.5)), Value::from(1.5));
        assert_eq!(field_value(&Field::DoubleValue(f64::NAN)), Value::from("NaN"));
        assert_eq!(field_value(&Field::IsNull(true)), Value::Null);
        assert_eq!(field_value(&Field::BlobValue(aws_smithy_types::Blob::new(b"hi".to_vec()))), Value::from("aGk="));
    }

    #[test]
    fn backoff_doubles_from_the_poll_interval_up_to_a_minute() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(5), 1), s(5));
        assert_eq!(backoff(s(5), 2), s(10));
        assert_eq!(backoff(s(5), 5), s(60));
        assert_eq!(backoff(Duration::ZERO, 1), s(1));
        assert_eq!(backoff(s(120), 3), s(120));
    }

    #[test]
    fn long_sql_is_cut_for_errors() {
        assert_eq!(quote_sql("SELECT  1\nFROM t"), "SELECT 1 FROM t");
        assert_eq!(quote_sql(&"x".repeat(200)).len(), QUOTED_SQL_CHARS + 3);
    }
}
