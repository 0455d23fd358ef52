//! `redshift.unload`: writes a query's rows to S3 with `UNLOAD` (CSV, JSON or Parquet, optionally
//! partitioned and with a manifest). The SQL it runs goes to the attempt log.

use async_trait::async_trait;
use aws_sdk_redshiftdata::Client;
use flowctl_engine::connections::AwsConnection;
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde::Deserialize;
use serde_json::Value;

use super::copy::{check_columns, check_extra_options, check_iam_role};
use super::sql::{check_statement_name, default_statement_name};
use super::sqltext::{unload_query, unload_sql, UnloadFormat, UnloadOptions};
use super::statement::{Request, Runner, Statements};
use super::target::{self, redshift_settings};
use crate::aws::settings::{aws_connection, check_optional_duration, check_s3_url};

redshift_settings! {
    /// The settings of a `redshift.unload` task.
    #[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[schemars(rename = "RedshiftUnloadConfig")]
    pub struct UnloadConfig {
        /// The database the query runs in.
        database,
        /// The SELECT whose rows are written, as you would run it (its quotes are escaped for you).
        pub query: String,
        /// The `s3://bucket/prefix` the files' names start with.
        pub to: String,
        /// The IAM role Redshift writes S3 with: its ARN, or `default` for the cluster's default role.
        pub iam_role: String,
        /// csv, json or parquet [default: csv].
        #[serde(default)]
        pub format: UnloadFormat,
        /// CSV only: write a header line in each file.
        #[serde(default)]
        pub header: bool,
        /// CSV only: the field delimiter, one character [default: ,].
        pub delimiter: Option<String>,
        /// CSV only: the text written for NULL.
        pub null_as: Option<String>,
        /// Columns to partition the files by (`col=value/` folders under `to`).
        #[serde(default)]
        pub partition_by: Vec<String>,
        /// With `partition_by`: keep the partition columns in the files too (`INCLUDE`).
        #[serde(default)]
        pub partition_include: bool,
        /// Write a manifest listing the files, at `<to>manifest`.
        #[serde(default)]
        pub manifest: bool,
        /// Replace files already under `to` (`ALLOWOVERWRITE`); without it, UNLOAD fails if any exist.
        #[serde(default)]
        pub allow_overwrite: bool,
        /// Write files in parallel, one or more per slice [default: true]; false writes them one
        /// after another (`PARALLEL OFF`), in the query's order.
        #[serde(default = "yes")]
        pub parallel: bool,
        /// The largest file to write, in MB (5 to 6200; `MAXFILESIZE`).
        pub max_file_size_mb: Option<u32>,
        /// The bucket's region, when it is not the cluster's (`REGION`).
        pub region: Option<String>,
        /// More UNLOAD options, appended as written: `ENCRYPTED`, `CLEANPATH`, `EXTENSION 'csv.gz'`,
        /// `GZIP`...
        #[serde(default)]
        pub extra_options: Vec<String>,
        /// The statement's name in Redshift's query history [default: flowctl/<dag>/<task>].
        pub statement_name: Option<String>,
        /// How often to ask whether the unload has ended [default: 5s].
        pub poll_interval: Option<String>,
    }
}

fn yes() -> bool {
    true
}

impl UnloadConfig {
    /// The UNLOAD statement.
    pub fn sql(&self) -> String {
        unload_sql(&UnloadOptions {
            query: self.query.clone(),
            to: self.to.clone(),
            iam_role: self.iam_role.clone(),
            format: self.format,
            header: self.header,
            delimiter: self.delimiter.clone(),
            null_as: self.null_as.clone(),
            partition_by: self.partition_by.clone(),
            partition_include: self.partition_include,
            manifest: self.manifest,
            allow_overwrite: self.allow_overwrite,
            serial: !self.parallel,
            max_file_size_mb: self.max_file_size_mb,
            region: self.region.clone(),
            extra_options: self.extra_options.clone(),
        })
    }
}

/// The `redshift.unload` operator.
pub struct Unload;

#[async_trait]
impl Operator for Unload {
    const NAME: &'static str = "redshift.unload";
    type Config = UnloadConfig;

    fn check(config: &UnloadConfig) -> Result<(), ConfigError> {
        config.target().check()?;
        target::check_sql("query", unload_query(&config.query))?;
        check_s3_url("to", &config.to)?;
        check_iam_role(&config.iam_role)?;
        let csv = config.format == UnloadFormat::Csv;
        for (field, set) in [("header", config.header), ("delimiter", config.delimiter.is_some()), ("null_as", config.null_as.is_some())] {
            if set && !csv {
                return Err(ConfigError::new(field, "applies only to format csv"));
            }
        }
        if let Some(delimiter) = &config.delimiter {
            if !flowctl_engine::template::is_template(delimiter) && delimiter.chars().count() != 1 {
                return Err(ConfigError::new(
                    "delimiter",
                    format!("\"{delimiter}\" is not one character; for a tab write \"\\t\" in double quotes"),
                ));
            }
        }
        check_columns("partition_by", &config.partition_by)?;
        if config.partition_include && config.partition_by.is_empty() {
            return Err(ConfigError::new("partition_include", "applies only with `partition_by`"));
        }
        if let Some(mb) = config.max_file_size_mb {
            if !(5..=6200).contains(&mb) {
                return Err(ConfigError::new("max_file_size_mb", format!("{mb} MB is outside UNLOAD's 5 to 6200 MB")));
            }
        }
        check_extra_options(&config.extra_options)?;
        check_statement_name(config.statement_name.as_deref())?;
        check_optional_duration("poll_interval", config.poll_interval.as_deref())
    }

    async fn execute(&self, config: UnloadConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        let conn = aws_connection(&ctx, &config.connection)?;
        let client = target::client(&conn).await?;
        run(&client, &conn, config, &ctx).await
    }
}

/// One attempt of `redshift.unload` with a given client.
pub async fn run(client: &Client, conn: &AwsConnection, config: UnloadConfig, ctx: &TaskContext) -> Result<Outcome, TaskError> {
    if !config.to.starts_with("s3://") {
        return Err(TaskError::fatal(format!("to: \"{}\" is not an S3 URL; write s3://bucket/prefix", config.to)));
    }
    let poll_interval = target::poll_interval(config.poll_interval.as_deref())?;
    let target = config.target();
    let sql = config.sql();
    ctx.log.line(&format!("unloading to {} ({}) with:", config.to, target.describe()));
    ctx.log.line(&format!("  {sql}"));
    let runner = Runner { client, conn, ctx, poll_interval };
    let request = Request {
        target,
        statements: Statements::One(sql),
        parameters: Vec::new(),
        statement_name: Some(config.statement_name.clone().unwrap_or_else(|| default_statement_name(ctx))),
    };
    let finished = runner.run(&request).await?;

    let mut outputs = Outputs::new();
    outputs.insert("statement_id".into(), finished.id.clone().into());
    outputs.insert("rows_unloaded".into(), finished.rows.map_or(Value::Null, Value::from));
    outputs.insert("to".into(), config.to.clone().into());
    if config.manifest {
        outputs.insert("manifest".into(), format!("{}manifest", config.to).into());
    }
    Ok(Outcome::Success { outputs })
}
