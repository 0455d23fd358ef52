//! `redshift.sql`: runs one statement (ExecuteStatement) or a batch run as one transaction
//! (BatchExecuteStatement) through the Data API, waits for it, and outputs its id, the rows it
//! affected and, with `fetch: true`, its result rows.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_redshiftdata::Client;
use flowctl_engine::connections::AwsConnection;
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde::Deserialize;
use serde_json::Value;

use super::statement::{Request, Runner, Statements};
use super::target::{self, redshift_settings, MAX_BATCH};
use crate::aws::settings::{aws_connection, check_optional_duration};

/// Rows a fetch returns when `fetch_limit` is not set.
pub const DEFAULT_FETCH_LIMIT: usize = 1000;
/// The most rows a task may fetch: outputs live in the run's store and in templates.
pub const MAX_FETCH_LIMIT: usize = 100_000;
/// The longest statement name the Data API accepts.
const MAX_STATEMENT_NAME: usize = 500;

/// The SQL of a `redshift.sql` task.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "RedshiftSql")]
pub enum SqlText {
    /// One statement (ExecuteStatement).
    One(String),
    /// Statements run in order as one transaction (BatchExecuteStatement, at most 40).
    Batch(Vec<String>),
}

/// A parameter's value; the Data API passes every value as text and Redshift casts it.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "RedshiftParameterValue")]
pub enum Scalar {
    /// Text.
    Text(String),
    /// A whole number.
    Integer(i64),
    /// A number with a fraction.
    Number(f64),
    /// true or false.
    Bool(bool),
}

impl Scalar {
    /// The value as the text the Data API takes.
    pub fn to_text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Integer(n) => n.to_string(),
            Scalar::Number(x) => x.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

redshift_settings! {
    /// The settings of a `redshift.sql` task.
    #[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[schemars(rename = "RedshiftSqlConfig")]
    pub struct SqlConfig {
        /// The database to run in.
        database,
        /// One statement, or a list of statements run in order as one transaction (at most 40).
        pub sql: SqlText,
        /// Named parameters, written `:name` in the SQL; values are passed as text.
        #[serde(default)]
        pub parameters: BTreeMap<String, Scalar>,
        /// The statement's name in Redshift's query history [default: flowctl/<dag>/<task>].
        pub statement_name: Option<String>,
        /// Output the result rows (of the last statement that returns rows) as `rows`.
        #[serde(default)]
        pub fetch: bool,
        /// With `fetch`: the most rows to output [default: 1000]; `truncated` tells whether there
        /// were more.
        pub fetch_limit: Option<usize>,
        /// How often to ask whether the statement has ended [default: 5s].
        pub poll_interval: Option<String>,
    }
}

/// The name Redshift shows for a task's statements when none is set.
pub fn default_statement_name(ctx: &TaskContext) -> String {
    let name = format!("flowctl/{}/{}", ctx.dag_id, ctx.task_id);
    name.chars().take(MAX_STATEMENT_NAME).collect()
}

/// Checks a `statement_name`.
pub fn check_statement_name(name: Option<&str>) -> Result<(), ConfigError> {
    match name {
        Some(n) if n.trim().is_empty() => Err(ConfigError::new("statement_name", "must not be empty")),
        Some(n) if n.chars().count() > MAX_STATEMENT_NAME => {
            Err(ConfigError::new("statement_name", "is longer than the 500 characters the Data API accepts"))
        }
        _ => Ok(()),
    }
}

/// Whether `name` can be a parameter (`:name` in the SQL).
fn valid_parameter(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `redshift.sql` operator.
pub struct Sql;

#[async_trait]
impl Operator for Sql {
    const NAME: &'static str = "redshift.sql";
    type Config = SqlConfig;

    fn check(config: &SqlConfig) -> Result<(), ConfigError> {
        config.target().check()?;
        match &config.sql {
            SqlText::One(sql) => target::check_sql("sql", sql)?,
            SqlText::Batch(sqls) => {
                if sqls.is_empty() {
                    return Err(ConfigError::new("sql", "the list of statements is empty"));
                }
                if sqls.len() > MAX_BATCH {
                    return Err(ConfigError::new(
                        "sql",
                        format!("{} statements; the Data API runs at most {MAX_BATCH} in one batch: split the task", sqls.len()),
                    ));
                }
                for (i, sql) in sqls.iter().enumerate() {
                    target::check_sql(&format!("sql[{i}]"), sql)?;
                }
            }
        }
        for name in config.parameters.keys() {
            if !valid_parameter(name) {
                return Err(ConfigError::new(
                    format!("parameters.{name}"),
                    "a parameter name is letters, digits and _ (not starting with a digit), used as :name in the SQL",
                ));
            }
        }
        match config.fetch_limit {
            Some(_) if !config.fetch => return Err(ConfigError::new("fetch_limit", "applies only with `fetch: true`")),
            Some(0) => return Err(ConfigError::new("fetch_limit", "must be at least 1")),
            Some(n) if n > MAX_FETCH_LIMIT => {
                return Err(ConfigError::new(
                    "fetch_limit",
                    format!("{n} rows are too many for task outputs (at most {MAX_FETCH_LIMIT}); UNLOAD large results to S3 with redshift.unload"),
                ))
            }
            _ => {}
        }
        check_statement_name(config.statement_name.as_deref())?;
        check_optional_duration("poll_interval", config.poll_interval.as_deref())
    }

    async fn execute(&self, config: SqlConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        let conn = aws_connection(&ctx, &config.connection)?;
        let client = target::client(&conn).await?;
        run(&client, &conn, config, &ctx).await
    }
}

/// One attempt of `redshift.sql` with a given client.
pub async fn run(client: &Client, conn: &AwsConnection, config: SqlConfig, ctx: &TaskContext) -> Result<Outcome, TaskError> {
    let poll_interval = target::poll_interval(config.poll_interval.as_deref())?;
    let runner = Runner { client, conn, ctx, poll_interval };
    let batch = matches!(config.sql, SqlText::Batch(_));
    let request = Request {
        target: config.target(),
        statements: match config.sql {
            SqlText::One(sql) => Statements::One(sql),
            SqlText::Batch(sqls) => Statements::Batch(sqls),
        },
        parameters: config.parameters.iter().map(|(k, v)| (k.clone(), v.to_text())).collect(),
        statement_name: Some(config.statement_name.clone().unwrap_or_else(|| default_statement_name(ctx))),
    };
    let finished = runner.run(&request).await?;

    let mut outputs = Outputs::new();
    outputs.insert("statement_id".into(), finished.id.clone().into());
    let rows_affected = if batch {
        Value::Array(finished.sub_statements.iter().map(|s| s.rows.map_or(Value::Null, Value::from)).collect())
    } else {
        finished.rows.map_or(Value::Null, Value::from)
    };
    outputs.insert("rows_affected".into(), rows_affected);
    if config.fetch {
        let limit = config.fetch_limit.unwrap_or(DEFAULT_FETCH_LIMIT);
        let (rows, truncated) = match finished.result_id() {
            Some(id) => runner.fetch_rows(id, limit).await?,
            None => (Vec::new(), false),
        };
        ctx.log.line(&format!(
            "fetched {} result rows{}",
            rows.len(),
            if truncated { format!(" (fetch_limit {limit} reached; more rows were left unread)") } else { String::new() }
        ));
        outputs.insert("row_count".into(), rows.len().into());
        outputs.insert("truncated".into(), truncated.into());
        outputs.insert("rows".into(), Value::Array(rows));
    }
    Ok(Outcome::Success { outputs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_names_are_identifiers() {
        assert!(valid_parameter("day"));
        assert!(valid_parameter("_x1"));
        assert!(!valid_parameter("1x"));
        assert!(!valid_parameter("a-b"));
        assert!(!valid_parameter(""));
    }

    #[test]
    fn scalars_become_text() {
        assert_eq!(Scalar::Integer(3).to_text(), "3");
        assert_eq!(Scalar::Number(0.5).to_text(), "0.5");
        assert_eq!(Scalar::Bool(true).to_text(), "true");
    }
}
