//! `redshift.copy`: loads files from S3 into a table with `COPY`, in one of three modes:
//! `append` (one `COPY`), `replace` (`DELETE` and `COPY` in one transaction) and `upsert` (`COPY`
//! into a temporary staging table, then delete the rows whose key matches and insert the staged
//! ones, in one transaction). The SQL it runs goes to the attempt log.

use async_trait::async_trait;
use aws_sdk_redshiftdata::Client;
use flowctl_engine::connections::AwsConnection;
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use flowctl_engine::template::is_template;
use serde::Deserialize;
use serde_json::Value;

use super::sql::{check_statement_name, default_statement_name};
use super::sqltext::{check_name, copy_statements, CopyFormat, CopyMode, CopyOptions};
use super::statement::{Request, Runner, Statements};
use super::target::{self, redshift_settings};
use crate::aws::settings::{aws_connection, check_optional_duration, check_s3_url};

redshift_settings! {
    /// The settings of a `redshift.copy` task.
    #[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[schemars(rename = "RedshiftCopyConfig")]
    pub struct CopyConfig {
        /// The database to load into.
        database,
        /// The table to load: `table` or `schema.table` (each part is quoted as written).
        pub table: String,
        /// The table's columns the files' fields go to, in order [default: all, in table order].
        #[serde(default)]
        pub columns: Vec<String>,
        /// What to load: an `s3://bucket/prefix` (every object under it), one object, or a manifest
        /// (add `MANIFEST` to `extra_options`).
        pub from: String,
        /// The IAM role Redshift reads S3 with: its ARN, or `default` for the cluster's default role.
        pub iam_role: String,
        /// The files' format: csv, json or parquet [default: csv].
        #[serde(default)]
        pub format: CopyFormat,
        /// JSON only: `auto` (fields by column name), `auto ignorecase`, or the `s3://` URL of a
        /// JSONPaths file [default: auto].
        pub jsonpaths: Option<String>,
        /// CSV only: the field delimiter, one character [default: ,].
        pub delimiter: Option<String>,
        /// CSV only: the files start with a header line to skip (`IGNOREHEADER 1`).
        #[serde(default)]
        pub header: bool,
        /// How dates are written (`DATEFORMAT`), e.g. `YYYY-MM-DD` or `auto`.
        pub date_format: Option<String>,
        /// How timestamps are written (`TIMEFORMAT`), e.g. `YYYY-MM-DD HH:MI:SS`, `epochsecs` or `auto`.
        pub time_format: Option<String>,
        /// The text that stands for NULL (`NULL AS`), e.g. `\N`.
        pub null_as: Option<String>,
        /// The bucket's region, when it is not the cluster's (`REGION`).
        pub region: Option<String>,
        /// More COPY options, appended as written: `GZIP`, `MAXERROR 10`, `ACCEPTINVCHARS`,
        /// `MANIFEST`, `TIMEFORMAT 'auto'`...
        #[serde(default)]
        pub extra_options: Vec<String>,
        /// append (add the rows), replace (replace every row, in one transaction) or upsert (replace
        /// the rows whose `key` matches, add the others, in one transaction) [default: append].
        #[serde(default)]
        pub mode: CopyMode,
        /// upsert only: the columns that identify a row.
        #[serde(default)]
        pub key: Vec<String>,
        /// The statement's name in Redshift's query history [default: flowctl/<dag>/<task>].
        pub statement_name: Option<String>,
        /// How often to ask whether the load has ended [default: 5s].
        pub poll_interval: Option<String>,
    }
}

impl CopyConfig {
    /// The COPY options from the settings.
    pub fn options(&self) -> CopyOptions {
        CopyOptions {
            from: self.from.clone(),
            iam_role: self.iam_role.clone(),
            format: self.format,
            jsonpaths: self.jsonpaths.clone(),
            delimiter: self.delimiter.clone(),
            header: self.header,
            date_format: self.date_format.clone(),
            time_format: self.time_format.clone(),
            null_as: self.null_as.clone(),
            region: self.region.clone(),
            extra_options: self.extra_options.clone(),
        }
    }

    /// The statements the load runs.
    pub fn statements(&self) -> Vec<String> {
        copy_statements(&self.table, &self.columns, &self.key, self.mode, &self.options())
    }
}

/// Checks an `iam_role`: an IAM role ARN or `default`.
pub fn check_iam_role(role: &str) -> Result<(), ConfigError> {
    if is_template(role) || role.eq_ignore_ascii_case("default") || (role.starts_with("arn:") && role.contains(":role/")) {
        return Ok(());
    }
    Err(ConfigError::new(
        "iam_role",
        format!("\"{role}\" is not an IAM role ARN; write arn:aws:iam::<account>:role/<name>, or `default` for the cluster's default role"),
    ))
}

/// Checks a list of column names: not empty, no repeats.
pub fn check_columns(field: &str, columns: &[String]) -> Result<(), ConfigError> {
    for (i, column) in columns.iter().enumerate() {
        if column.trim().is_empty() {
            return Err(ConfigError::new(format!("{field}[{i}]"), "a column name must not be empty"));
        }
        if columns[..i].contains(column) {
            return Err(ConfigError::new(format!("{field}[{i}]"), format!("column \"{column}\" is named twice")));
        }
    }
    Ok(())
}

/// Checks `extra_options`: each goes into the statement as written, so none may end it.
pub fn check_extra_options(options: &[String]) -> Result<(), ConfigError> {
    for (i, option) in options.iter().enumerate() {
        if option.contains(';') {
            return Err(ConfigError::new(
                format!("extra_options[{i}]"),
                "contains `;`: options are appended to the statement as written and must not end it",
            ));
        }
    }
    Ok(())
}

/// The `redshift.copy` operator.
pub struct Copy;

#[async_trait]
impl Operator for Copy {
    const NAME: &'static str = "redshift.copy";
    type Config = CopyConfig;

    fn check(config: &CopyConfig) -> Result<(), ConfigError> {
        config.target().check()?;
        if !is_template(&config.table) {
            check_name(&config.table).map_err(|e| ConfigError::new("table", e))?;
        }
        check_columns("columns", &config.columns)?;
        check_s3_url("from", &config.from)?;
        check_iam_role(&config.iam_role)?;
        let not_for = |field: &str, set: bool, formats: &str| -> Result<(), ConfigError> {
            if set {
                Err(ConfigError::new(field, format!("applies only to {formats} files (format: {})", format_name(config.format))))
            } else {
                Ok(())
            }
        };
        not_for("jsonpaths", config.jsonpaths.is_some() && config.format != CopyFormat::Json, "json")?;
        not_for("delimiter", config.delimiter.is_some() && config.format != CopyFormat::Csv, "csv")?;
        not_for("header", config.header && config.format != CopyFormat::Csv, "csv")?;
        let parquet = config.format == CopyFormat::Parquet;
        not_for("date_format", config.date_format.is_some() && parquet, "csv and json")?;
        not_for("time_format", config.time_format.is_some() && parquet, "csv and json")?;
        not_for("null_as", config.null_as.is_some() && parquet, "csv and json")?;
        if let Some(paths) = &config.jsonpaths {
            let auto = ["auto", "auto ignorecase"].contains(&paths.to_ascii_lowercase().as_str());
            if !auto {
                check_s3_url("jsonpaths", paths)
                    .map_err(|_| ConfigError::new("jsonpaths", format!("\"{paths}\" is neither `auto`, `auto ignorecase` nor the s3:// URL of a JSONPaths file")))?;
            }
        }
        if let Some(delimiter) = &config.delimiter {
            if !is_template(delimiter) && delimiter.chars().count() != 1 {
                return Err(ConfigError::new(
                    "delimiter",
                    format!("\"{delimiter}\" is not one character; for a tab write \"\\t\" in double quotes"),
                ));
            }
        }
        check_extra_options(&config.extra_options)?;
        check_columns("key", &config.key)?;
        match config.mode {
            CopyMode::Upsert if config.key.is_empty() => {
                return Err(ConfigError::new("key", "mode upsert needs `key`: the columns that identify a row"))
            }
            CopyMode::Upsert => {
                if let Some(k) = config.key.iter().find(|k| !config.columns.is_empty() && !config.columns.contains(k)) {
                    return Err(ConfigError::new("key", format!("key column \"{k}\" is not among `columns`, so the files do not fill it")));
                }
            }
            _ if !config.key.is_empty() => return Err(ConfigError::new("key", "applies only to mode upsert")),
            _ => {}
        }
        check_statement_name(config.statement_name.as_deref())?;
        check_optional_duration("poll_interval", config.poll_interval.as_deref())
    }

    async fn execute(&self, config: CopyConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        let conn = aws_connection(&ctx, &config.connection)?;
        let client = target::client(&conn).await?;
        run(&client, &conn, config, &ctx).await
    }
}

fn format_name(format: CopyFormat) -> &'static str {
    match format {
        CopyFormat::Csv => "csv",
        CopyFormat::Json => "json",
        CopyFormat::Parquet => "parquet",
    }
}

fn mode_name(mode: CopyMode) -> &'static str {
    match mode {
        CopyMode::Append => "append",
        CopyMode::Replace => "replace",
        CopyMode::Upsert => "upsert",
    }
}

/// One attempt of `redshift.copy` with a given client.
pub async fn run(client: &Client, conn: &AwsConnection, config: CopyConfig, ctx: &TaskContext) -> Result<Outcome, TaskError> {
    // Rendering may have produced what compile could not see.
    check_name(&config.table).map_err(|e| TaskError::fatal(format!("table: {e}")))?;
    if !config.from.starts_with("s3://") {
        return Err(TaskError::fatal(format!("from: \"{}\" is not an S3 URL; write s3://bucket/prefix", config.from)));
    }
    let poll_interval = target::poll_interval(config.poll_interval.as_deref())?;
    let target = config.target();
    let sqls = config.statements();
    let mode = config.mode;
    ctx.log.line(&format!("loading {} into {} ({}, {}) with:", config.from, config.table, mode_name(mode), target.describe()));
    for sql in &sqls {
        ctx.log.line(&format!("  {sql}"));
    }
    let statements = if mode == CopyMode::Append { Statements::One(sqls[0].clone()) } else { Statements::Batch(sqls) };
    let runner = Runner { client, conn, ctx, poll_interval };
    let request = Request {
        target,
        statements,
        parameters: Vec::new(),
        statement_name: Some(config.statement_name.clone().unwrap_or_else(|| default_statement_name(ctx))),
    };
    let finished = runner.run(&request).await?;

    let rows = |index: usize| finished.sub_statements.get(index).and_then(|s| s.rows).map_or(Value::Null, Value::from);
    let mut outputs = Outputs::new();
    outputs.insert("statement_id".into(), finished.id.clone().into());
    outputs.insert("table".into(), config.table.clone().into());
    match mode {
        CopyMode::Append => {
            outputs.insert("rows_loaded".into(), finished.rows.map_or(Value::Null, Value::from));
        }
        CopyMode::Replace => {
            outputs.insert("rows_deleted".into(), rows(1));
            outputs.insert("rows_loaded".into(), rows(2));
        }
        CopyMode::Upsert => {
            outputs.insert("rows_loaded".into(), rows(2));
            outputs.insert("rows_replaced".into(), rows(3));
        }
    }
    Ok(Outcome::Success { outputs })
}
