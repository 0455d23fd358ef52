//! One Data API statement (or batch) from submission to its end, as a job of the AWS kit
//! (`aws::job`): ExecuteStatement or BatchExecuteStatement, DescribeStatement until FINISHED,
//! FAILED or ABORTED, CancelStatement when the task is cancelled; and its result rows read.
//!
//! A retry, or a restart of flowctl, finds the recorded id and polls that statement instead of
//! submitting the SQL again: a `COPY` runs once. The window that remains is between the Data API
//! accepting the statement and the record being durable (milliseconds); a crash inside it leaves a
//! statement the next attempt does not know about.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_redshiftdata::operation::describe_statement::DescribeStatementOutput;
use aws_sdk_redshiftdata::types::{Field, SqlParameter, StatementStatusString, StatusString};
use aws_sdk_redshiftdata::Client;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use flowctl_engine::connections::AwsConnection;
use flowctl_engine::operator::{ExternalJob, LogSink, TaskContext, TaskError};
use serde_json::{Map, Value};

use super::target::{Target, SERVICE};
use crate::aws::describe_service_error;
use crate::aws::job::{self, CancelReason, Describe, Job, Progress, StateLines, Watch};

/// The kind of external job a Redshift task records.
pub const JOB_KIND: &str = "redshift_statement";
/// The longest wait between polls after failed ones: statements take seconds to minutes.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(60);
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
        let mut statement = Statement { client: self.client, conn: self.conn, request, id: String::new() };
        job::drive(&mut statement, self.ctx, self.poll_interval).await
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

/// One statement (or batch) of a task.
struct Statement<'a> {
    client: &'a Client,
    conn: &'a AwsConnection,
    request: &'a Request,
    id: String,
}

impl Statement<'_> {
    /// Sends ExecuteStatement or BatchExecuteStatement; returns the call's name and the id.
    async fn send(&self) -> Result<(&'static str, Option<String>), TaskError> {
        let Request { target, statements, parameters, statement_name } = self.request;
        let parameters = parameters
            .iter()
            .map(|(name, value)| SqlParameter::builder().name(name).value(value).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TaskError::fatal(format!("invalid parameter: {e}")))?;
        let parameters = (!parameters.is_empty()).then_some(parameters);
        match statements {
            Statements::One(sql) => {
                let reply = self
                    .client
                    .execute_statement()
                    .sql(sql)
                    .database(&target.database)
                    .set_cluster_identifier(target.cluster_identifier.clone())
                    .set_workgroup_name(target.workgroup_name.clone())
                    .set_db_user(target.db_user.clone())
                    .set_secret_arn(target.secret_arn.clone())
                    .set_statement_name(statement_name.clone())
                    .set_parameters(parameters)
                    .send()
                    .await
                    .map_err(|e| describe_service_error(&e, &format!("ExecuteStatement on {}", target.describe()), self.conn, Some(SERVICE)))?;
                Ok(("ExecuteStatement", reply.id))
            }
            Statements::Batch(sqls) => {
                let reply = self
                    .client
                    .batch_execute_statement()
                    .set_sqls(Some(sqls.clone()))
                    .database(&target.database)
                    .set_cluster_identifier(target.cluster_identifier.clone())
                    .set_workgroup_name(target.workgroup_name.clone())
                    .set_db_user(target.db_user.clone())
                    .set_secret_arn(target.secret_arn.clone())
                    .set_statement_name(statement_name.clone())
                    .set_parameters(parameters)
                    .send()
                    .await
                    .map_err(|e| describe_service_error(&e, &format!("BatchExecuteStatement on {}", target.describe()), self.conn, Some(SERVICE)))?;
                Ok(("BatchExecuteStatement", reply.id))
            }
        }
    }
}

#[async_trait]
impl Describe for Statement<'_> {
    type Output = Finished;
    const MAX_BACKOFF: Duration = MAX_POLL_BACKOFF;

    const STATE_LINES: StateLines = StateLines::Is;

    /// DescribeStatement. A statement the Data API no longer knows has ended for flowctl: the task
    /// fails with a final error and the record goes, so running the task again submits anew.
    async fn describe(&mut self, watch: &mut Watch<'_>) -> Result<Progress<Finished>, TaskError> {
        let (id, target) = (&self.id, &self.request.target);
        let out = match self.client.describe_statement().id(id).send().await {
            Ok(out) => out,
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                return Ok(Progress::Ended(Err(TaskError::fatal(format!(
                    "statement {id} is unknown to the Data API on {} ({}); it keeps statements for 24 hours: check whether its work was done, then run the task again",
                    target.describe(),
                    e.message().unwrap_or("ResourceNotFoundException").trim_end_matches('.')
                )))));
            }
            Err(e) => return Err(describe_service_error(&e, &format!("DescribeStatement of statement {id}"), self.conn, Some(SERVICE))),
        };
        let ended = match out.status() {
            Some(StatusString::Finished) => {
                let finished = finished(out);
                watch.line(&format!("statement {id} FINISHED{}", rows_note(&finished)));
                Ok(finished)
            }
            Some(StatusString::Failed) => {
                watch.line(&format!("statement {id} FAILED"));
                Err(failure(&out, target))
            }
            Some(StatusString::Aborted) => {
                watch.line(&format!("statement {id} ABORTED"));
                Err(TaskError::fatal(format!(
                    "statement {id} on {} was aborted (cancelled outside flowctl, or stopped by a workload management rule)",
                    target.describe()
                )))
            }
            status => {
                watch.state(&format!("statement {id}"), status.map_or("UNKNOWN", |s| s.as_str()));
                return Ok(Progress::Running);
            }
        };
        Ok(Progress::Ended(ended))
    }
}

#[async_trait]
impl Job for Statement<'_> {
    const KIND: &'static str = JOB_KIND;

    async fn submit(&mut self, _ctx: &TaskContext) -> Result<Vec<String>, TaskError> {
        let target = &self.request.target;
        let (call, id) = self.send().await?;
        self.id = id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| TaskError::retryable(format!("{call} on {} answered without a statement id", target.describe())))?;
        let count = match &self.request.statements {
            Statements::One(_) => String::new(),
            Statements::Batch(sqls) => format!(" ({} statements in one transaction)", sqls.len()),
        };
        Ok(vec![format!("submitted statement {}{count} to {}", self.id, target.describe())])
    }

    fn record(&self) -> ExternalJob {
        ExternalJob {
            kind: JOB_KIND.to_string(),
            id: self.id.clone(),
            detail: [("target".to_string(), self.request.target.describe())].into_iter().collect(),
        }
    }

    fn reattach(&mut self, job: &ExternalJob, log: &dyn LogSink) -> bool {
        log.line(&format!("reattaching to statement {}, submitted by an earlier attempt (the SQL is not submitted again)", job.id));
        self.id = job.id.clone();
        true
    }

    async fn cancel(&mut self, _why: CancelReason, log: &dyn LogSink) -> Result<(), TaskError> {
        let id = &self.id;
        let out = self
            .client
            .cancel_statement()
            .id(id)
            .send()
            .await
            .map_err(|e| describe_service_error(&e, &format!("CancelStatement of statement {id}"), self.conn, Some(SERVICE)))?;
        if out.status() == Some(false) {
            log.line(&format!("Redshift did not cancel statement {id} (CancelStatement answered false: it may have ended already)"));
        } else {
            log.line(&format!("cancelled statement {id} at Redshift (CancelStatement)"));
        }
        Ok(())
    }

    fn name(&self) -> String {
        format!("statement {}", self.id)
    }

    fn by_hand(&self) -> String {
        format!("the statement may still run: cancel it with: aws redshift-data cancel-statement --id {}", self.id)
    }
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
    fn long_sql_is_cut_for_errors() {
        assert_eq!(quote_sql("SELECT  1\nFROM t"), "SELECT 1 FROM t");
        assert_eq!(quote_sql(&"x".repeat(200)).len(), QUOTED_SQL_CHARS + 3);
    }
}
