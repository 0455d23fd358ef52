//! `sql.export`: streams a query's rows to a CSV or TSV file, locally or on S3.
//!
//! Rows are written as they arrive (the result is never held in memory) to a temporary file that
//! is renamed into place, or uploaded, only when the query has finished: a failed export never
//! leaves half a file where downstream tasks would read it.

use std::io::BufWriter;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use serde::Deserialize;

use super::db::{cancellable, error_my, error_pg, my_text, Db};
use super::delimited::{Format, Writer};
use super::execute::check_connection;
use super::load::FileFormat;

/// The settings of a `sql.export` task.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// The mysql or postgres connection to query.
    pub connection: String,
    /// One SELECT (or any statement that returns rows).
    pub query: String,
    /// Where the file goes: a local path (relative to the directory flowctl runs in; folders are
    /// created) or `s3://bucket/key`.
    pub destination: String,
    /// The AWS connection for an `s3://` destination [default: aws_default].
    pub aws_connection: Option<String>,
    /// `csv` (delimiter `,`) or `tsv` (delimiter tab) [default: csv].
    #[serde(default)]
    pub format: FileFormat,
    /// The field delimiter, one character, over the format's.
    pub delimiter: Option<String>,
    /// Write the column names as the first line [default: true].
    #[serde(default = "yes")]
    pub header: bool,
    /// The character that encloses fields holding the delimiter, the quote, a newline, or the
    /// null text [default: `"`]; `null` to never quote (then such a value fails the export).
    #[serde(default = "default_quote")]
    pub quote: Option<String>,
    /// The text written for NULL [default: empty; an empty string is then written as `""`].
    #[serde(default)]
    pub null_value: String,
}

fn yes() -> bool {
    true
}

fn default_quote() -> Option<String> {
    Some("\"".to_string())
}

impl ExportConfig {
    fn file_format(&self) -> Result<Format, ConfigError> {
        // The same rules as sql.load's, through its config type.
        let as_load = super::load::LoadConfig {
            connection: self.connection.clone(),
            source: String::new(),
            aws_connection: None,
            table: String::new(),
            format: self.format,
            delimiter: self.delimiter.clone(),
            header: self.header,
            quote: self.quote.clone(),
            null_value: self.null_value.clone(),
            columns: None,
            create_table: None,
            mode: Default::default(),
            key: Vec::new(),
            mysql_method: None,
        };
        as_load.file_format()
    }
}

/// The `sql.export` operator.
pub struct SqlExport;

#[async_trait]
impl Operator for SqlExport {
    const NAME: &'static str = "sql.export";
    const DOCS: &'static str = "docs/operators/sql.md";
    type Config = ExportConfig;

    fn check(config: &ExportConfig) -> Result<(), ConfigError> {
        check_connection(&config.connection)?;
        if config.query.trim().is_empty() {
            return Err(ConfigError::new("query", "is empty"));
        }
        if config.destination.trim().is_empty() {
            return Err(ConfigError::new("destination", "is empty; name a file or an s3:// URL"));
        }
        if config.destination.starts_with("s3://") {
            check_s3_destination(&config.destination)?;
        } else if config.aws_connection.is_some() {
            return Err(ConfigError::new("aws_connection", "only applies to an s3:// destination"));
        } else if config.destination.ends_with('/') {
            return Err(ConfigError::new("destination", "names a folder; name the file, e.g. exports/loans.csv"));
        }
        config.file_format()?;
        Ok(())
    }

    async fn execute(&self, config: ExportConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        let format = config.file_format().map_err(|e| TaskError::fatal(format!("{}: {}", e.path, e.message)))?;
        let connection = ctx.connections.sql(&config.connection).map_err(|e| TaskError::fatal(e.to_string()))?;
        let to_s3 = config.destination.starts_with("s3://");
        let temp = if to_s3 {
            ctx.work_dir.join(format!("{}.{}.export", ctx.task_id, ctx.try_number))
        } else {
            let path = PathBuf::from(&config.destination);
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| TaskError::fatal(format!("cannot create the folder {}: {e}", parent.display())))?;
            }
            temp_beside(&path)
        };
        if let Some(parent) = temp.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let file = std::fs::File::create(&temp).map_err(|e| TaskError::fatal(format!("cannot create {}: {e}", temp.display())))?;
        let writer = Writer::new(BufWriter::with_capacity(1 << 20, file), format);
        let mut db = Db::connect(&connection, &ctx.cancel).await?;
        ctx.log.line(&format!("exporting from {} to {}", connection.display_url(), config.destination));
        let started = std::time::Instant::now();
        let written = match &mut db {
            Db::Pg(conn, _) => export_pg(conn, &config.query, writer, &ctx).await,
            Db::My(conn, _) => export_my(conn, &config.query, writer, &ctx).await,
        };
        let rows = match written {
            Ok(rows) => rows,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        };
        db.close().await;
        if to_s3 {
            let uploaded = upload(&temp, &config, &ctx).await;
            let _ = std::fs::remove_file(&temp);
            uploaded?;
        } else {
            std::fs::rename(&temp, &config.destination).map_err(|e| TaskError::fatal(format!("cannot move {} to {}: {e}", temp.display(), config.destination)))?;
        }
        ctx.log.line(&format!("wrote {rows} rows to {} in {:.2}s", config.destination, started.elapsed().as_secs_f64()));
        let mut outputs = Outputs::new();
        outputs.insert("rows".into(), rows.into());
        outputs.insert("path".into(), config.destination.clone().into());
        Ok(Outcome::Success { outputs })
    }
}

/// `dir/.name.flowctl-partial`, renamed to `dir/name` when complete.
fn temp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "export".into());
    path.with_file_name(format!(".{name}.flowctl-partial"))
}

async fn export_pg(conn: &mut sqlx::PgConnection, query: &str, mut writer: Writer<BufWriter<std::fs::File>>, ctx: &TaskContext) -> Result<u64, TaskError> {
    use sqlx::{Column, Executor, Row, SqlSafeStr, Statement, ValueRef};
    let failed = |e: sqlx::Error| {
        let error = error_pg(&e);
        TaskError { kind: error.kind, message: format!("the query failed: {}", error.message) }
    };
    // The column names even when no row comes back: prepare (no execution) describes them.
    let prepared = cancellable(&ctx.cancel, conn.prepare(sqlx::AssertSqlSafe(query.to_string()).into_sql_str())).await?.map_err(failed)?;
    let names: Vec<String> = prepared.columns().iter().map(|c| c.name().to_string()).collect();
    drop(prepared);
    writer.header(&names).map_err(write_error)?;
    let work = async {
        let mut rows = sqlx::raw_sql(sqlx::AssertSqlSafe(query.to_string())).fetch(&mut *conn);
        while let Some(row) = rows.next().await {
            let row = row.map_err(failed)?;
            let mut texts: Vec<Option<&str>> = Vec::with_capacity(names.len());
            for i in 0..row.columns().len() {
                let raw = row.try_get_raw(i).map_err(failed)?;
                texts.push(if raw.is_null() { None } else { Some(raw.as_str().map_err(|e| TaskError::fatal(format!("column {}: {e}", i + 1)))?) });
            }
            writer.record(&texts).map_err(write_error)?;
        }
        Ok::<_, TaskError>(())
    };
    cancellable(&ctx.cancel, work).await??;
    let rows = writer.records;
    writer.finish().map_err(write_error)?;
    Ok(rows)
}

async fn export_my(conn: &mut mysql_async::Conn, query: &str, mut writer: Writer<BufWriter<std::fs::File>>, ctx: &TaskContext) -> Result<u64, TaskError> {
    let failed = |e: mysql_async::Error| {
        let error = error_my(&e);
        TaskError { kind: error.kind, message: format!("the query failed: {}", error.message) }
    };
    let work = async {
        let mut result = conn.query_iter(query.to_string()).await.map_err(failed)?;
        let columns = result.columns().filter(|c| !c.is_empty()).ok_or_else(|| TaskError::fatal("the query returns no rows (it is not a SELECT)"))?;
        let names: Vec<String> = columns.iter().map(|c| c.name_str().into_owned()).collect();
        writer.header(&names).map_err(write_error)?;
        let mut write_failed: Option<String> = None;
        result
            .for_each(|row: mysql_async::Row| {
                if write_failed.is_some() {
                    return;
                }
                let values = row.unwrap();
                let texts: Vec<Option<std::borrow::Cow<'_, str>>> = values.iter().map(my_text).collect();
                let fields: Vec<Option<&str>> = texts.iter().map(|t| t.as_deref()).collect();
                if let Err(e) = writer.record(&fields) {
                    write_failed = Some(e);
                }
            })
            .await
            .map_err(failed)?;
        // Any further result sets (a CALL's) are read and dropped.
        result.drop_result().await.map_err(failed)?;
        if let Some(e) = write_failed {
            return Err(write_error(e));
        }
        Ok::<_, TaskError>(())
    };
    cancellable(&ctx.cancel, work).await??;
    let rows = writer.records;
    writer.finish().map_err(write_error)?;
    Ok(rows)
}

fn write_error(e: String) -> TaskError {
    TaskError::fatal(format!("cannot write the file: {e}"))
}

#[cfg(feature = "aws-s3")]
fn check_s3_destination(destination: &str) -> Result<(), ConfigError> {
    if flowctl_engine::template::is_template(destination) {
        return Ok(());
    }
    let url = crate::aws::s3::S3Url::parse(destination).map_err(|e| ConfigError::new("destination", e.to_string()))?;
    if url.key.is_empty() || url.key.ends_with('/') {
        return Err(ConfigError::new("destination", "names a prefix; name the object, e.g. s3://bucket/exports/loans.csv"));
    }
    Ok(())
}

#[cfg(not(feature = "aws-s3"))]
fn check_s3_destination(_destination: &str) -> Result<(), ConfigError> {
    Err(ConfigError::new("destination", "s3:// destinations need the aws-s3 feature, which this build of flowctl lacks; export to a local file, or use a build with aws-s3"))
}

#[cfg(feature = "aws-s3")]
async fn upload(file: &Path, config: &ExportConfig, ctx: &TaskContext) -> Result<(), TaskError> {
    super::s3::upload_file_to(file, &config.destination, config.aws_connection.as_deref(), ctx).await
}

#[cfg(not(feature = "aws-s3"))]
async fn upload(_file: &Path, config: &ExportConfig, _ctx: &TaskContext) -> Result<(), TaskError> {
    Err(TaskError::fatal(format!("destination {}: s3:// destinations need the aws-s3 feature, which this build of flowctl lacks", config.destination)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_engine::operator::Registry;
    use serde_json::json;

    fn err(with: serde_json::Value) -> (String, String) {
        let mut registry = Registry::new();
        registry.register(SqlExport);
        let e = registry.get("sql.export").unwrap().validate(&with).unwrap_err();
        (e.path, e.message)
    }

    #[test]
    fn compile_time_checks_name_the_field() {
        assert_eq!(err(json!({"connection": "db", "query": " ", "destination": "a.csv"})), ("query".into(), "is empty".into()));
        assert_eq!(err(json!({"connection": "db", "query": "select 1", "destination": "out/"})).0, "destination");
        assert_eq!(err(json!({"connection": "db", "query": "select 1", "destination": "a.csv", "delimiter": ""})).0, "delimiter");
        assert_eq!(err(json!({"connection": "db", "query": "select 1", "destination": "a.csv", "aws_connection": "x"})).0, "aws_connection");
        assert_eq!(err(json!({"connection": "db", "query": "select 1", "destination": "a.csv", "sql": "x"})).0, "sql");
    }

    #[test]
    fn the_partial_file_sits_beside_the_destination() {
        assert_eq!(temp_beside(Path::new("out/loans.csv")), PathBuf::from("out/.loans.csv.flowctl-partial"));
    }
}
