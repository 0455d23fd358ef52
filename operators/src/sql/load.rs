//! `sql.load`: bulk-loads delimited files into a table, the job Sqoop's export did.
//!
//! The files are read on a blocking thread ([`super::delimited::read`]) and streamed, re-encoded,
//! into the server's bulk path: `COPY ... FROM STDIN` on PostgreSQL, `LOAD DATA LOCAL INFILE` on
//! MySQL/MariaDB where the server allows it, batched multi-row INSERTs where it does not. Every
//! mode runs so that a failure leaves the table as it was: `append` and `truncate` in one
//! transaction; `replace` loads a staging table and swaps it in (one transaction on PostgreSQL,
//! one atomic `RENAME TABLE` on MySQL, whose DDL is not transactional); `upsert` loads a temporary
//! table and merges it in one transaction. A bad record fails the load with its file, line and
//! column, whether the reader or the server found it.

use std::path::PathBuf;

use async_trait::async_trait;
use flowctl_engine::connections::SqlEngine;
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use serde::Deserialize;
use serde_json::Value;

use super::db::{cancellable, error_my, error_pg, Db};
use super::delimited::{self, Format, LineMap, Mapping, ReadSummary, Source};
use super::execute::check_connection;
use super::{quote_ident, quote_part};

/// The settings of a `sql.load` task.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadConfig {
    /// The mysql or postgres connection to load through.
    pub connection: String,
    /// What to load: a file, a glob (`data/loans_*.txt`, files loaded in name order), or
    /// `s3://bucket/key` (a key, or a prefix ending in `/`: every object under it). Relative
    /// paths start at the directory flowctl runs in.
    pub source: String,
    /// The AWS connection for an `s3://` source [default: aws_default].
    pub aws_connection: Option<String>,
    /// The table to load into, `name` or `schema.name` (`database.name` on MySQL).
    pub table: String,
    /// `csv` (delimiter `,`) or `tsv` (delimiter tab) [default: csv]. Both may quote fields with
    /// `quote`.
    #[serde(default)]
    pub format: FileFormat,
    /// The field delimiter, one character, over the format's: `|` for the loan files, `;`, `\t`.
    pub delimiter: Option<String>,
    /// Whether each file's first line names its columns [default: true]. With a header and no
    /// `columns`, the header's names are the table's column names.
    #[serde(default = "yes")]
    pub header: bool,
    /// The character that encloses fields holding delimiters, quotes or newlines (doubled inside
    /// them) [default: `"`]; `null` when the files never quote.
    #[serde(default = "default_quote")]
    pub quote: Option<String>,
    /// The unquoted field text that means NULL [default: empty, so an empty field is NULL and a
    /// quoted empty field `""` is an empty string]; e.g. `\N`.
    #[serde(default)]
    pub null_value: String,
    /// Which file columns go to which table columns: a list with one entry per file column, in
    /// file order (the table column, or null to skip that file column), or, for files with a
    /// header, a mapping of header name to table column (unlisted file columns are skipped).
    pub columns: Option<ColumnMapping>,
    /// Create the table when it does not exist, with these columns (and for `replace`, build the
    /// new table with them).
    pub create_table: Option<CreateTable>,
    /// append (add the rows), truncate (empty the table, then load), replace (load a new table
    /// and swap it in), upsert (insert new keys, update existing ones) [default: append]. Every
    /// mode is atomic: a failure leaves the table as it was.
    #[serde(default)]
    pub mode: LoadMode,
    /// For `upsert`: the columns that identify a row; the table needs a primary key or unique
    /// index on exactly these.
    #[serde(default)]
    pub key: Vec<String>,
    /// MySQL only: auto (LOAD DATA LOCAL INFILE when the server allows it, batched INSERTs
    /// otherwise), local_infile (fail when the server does not allow it) or insert [default: auto].
    pub mysql_method: Option<MysqlMethod>,
}

/// `format:`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Comma-separated.
    #[default]
    Csv,
    /// Tab-separated.
    Tsv,
}

impl FileFormat {
    /// The format's delimiter.
    pub fn delimiter(self) -> u8 {
        match self {
            FileFormat::Csv => b',',
            FileFormat::Tsv => b'\t',
        }
    }
}

/// `mode:`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadMode {
    /// Add the rows to the table.
    #[default]
    Append,
    /// Delete the table's rows and load, in one transaction.
    Truncate,
    /// Load a new table and swap it in place of the old one.
    Replace,
    /// Insert rows with new keys, update rows with existing keys.
    Upsert,
}

impl LoadMode {
    fn name(self) -> &'static str {
        match self {
            LoadMode::Append => "append",
            LoadMode::Truncate => "truncate",
            LoadMode::Replace => "replace",
            LoadMode::Upsert => "upsert",
        }
    }
}

/// `mysql_method:`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MysqlMethod {
    /// LOAD DATA LOCAL INFILE when the server allows it, else batched INSERTs.
    #[default]
    Auto,
    /// LOAD DATA LOCAL INFILE, or fail.
    LocalInfile,
    /// Batched multi-row INSERTs.
    Insert,
}

/// `columns:`: a list (file order) or a mapping (header name -> table column).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ColumnMapping {
    /// One table column per file column, in file order; null skips a file column.
    List(Vec<Option<String>>),
    /// Header name -> table column.
    Map(OrderedMap),
}

/// `create_table:`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTable {
    /// Column name -> SQL type, in table order, e.g. `loan_sequence_number: varchar(12) not null`.
    pub columns: OrderedMap,
    /// The primary key's columns [default: `key` in upsert mode, else none].
    #[serde(default)]
    pub primary_key: Vec<String>,
}

/// A mapping of strings to strings that keeps the order it was written in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderedMap(pub Vec<(String, String)>);

impl<'de> Deserialize<'de> for OrderedMap {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OrderedMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of names to strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<OrderedMap, A::Error> {
                let mut entries: Vec<(String, String)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom(format!("\"{key}\" is listed twice")));
                    }
                    entries.push((key, value));
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl schemars::JsonSchema for OrderedMap {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OrderedStringMap".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "object", "additionalProperties": {"type": "string"}})
    }
}

fn yes() -> bool {
    true
}

fn default_quote() -> Option<String> {
    Some("\"".to_string())
}

/// One ASCII character that may delimit or quote fields.
fn one_char(field: &str, value: &str) -> Result<u8, ConfigError> {
    let value = if value == "\\t" || value.eq_ignore_ascii_case("tab") { "\t" } else { value };
    match value.as_bytes() {
        [b] if b.is_ascii() && *b != b'\n' && *b != b'\r' => Ok(*b),
        _ => Err(ConfigError::new(field, format!("must be one ASCII character other than a newline, found {value:?}"))),
    }
}

impl LoadConfig {
    /// The file dialect.
    pub fn file_format(&self) -> Result<Format, ConfigError> {
        let delimiter = match &self.delimiter {
            Some(d) => one_char("delimiter", d)?,
            None => self.format.delimiter(),
        };
        let quote = self.quote.as_deref().filter(|q| !q.is_empty()).map(|q| one_char("quote", q)).transpose()?;
        if quote == Some(delimiter) {
            return Err(ConfigError::new("quote", "must differ from the delimiter"));
        }
        Ok(Format { delimiter, quote, header: self.header, null: self.null_value.clone() })
    }

    fn mapping(&self) -> Mapping {
        match &self.columns {
            None => Mapping::All,
            Some(ColumnMapping::List(list)) => Mapping::Positional(list.clone()),
            Some(ColumnMapping::Map(map)) => Mapping::ByHeader(map.0.clone()),
        }
    }
}

/// The `sql.load` operator.
pub struct SqlLoad;

#[async_trait]
impl Operator for SqlLoad {
    const NAME: &'static str = "sql.load";
    const DOCS: &'static str = "docs/operators/sql.md";
    type Config = LoadConfig;

    fn check(config: &LoadConfig) -> Result<(), ConfigError> {
        check_connection(&config.connection)?;
        if config.source.trim().is_empty() {
            return Err(ConfigError::new("source", "is empty; name a file, a glob or an s3:// URL"));
        }
        let is_s3 = config.source.starts_with("s3://");
        if is_s3 {
            check_s3_source(&config.source)?;
        } else if config.aws_connection.is_some() {
            return Err(ConfigError::new("aws_connection", "only applies to an s3:// source"));
        }
        if config.table.trim().is_empty() || (!is_template(&config.table) && config.table.split('.').any(|p| p.trim().is_empty())) {
            return Err(ConfigError::new("table", "must name a table, as name or schema.name"));
        }
        config.file_format()?;
        match &config.columns {
            Some(ColumnMapping::List(list)) => {
                if list.iter().all(Option::is_none) {
                    return Err(ConfigError::new("columns", "must name at least one table column"));
                }
                check_unique("columns", list.iter().flatten())?;
            }
            Some(ColumnMapping::Map(map)) => {
                if !config.header {
                    return Err(ConfigError::new(
                        "columns",
                        "a mapping of header names needs header: true; for a file without a header, list the table columns in file order",
                    ));
                }
                if map.0.is_empty() {
                    return Err(ConfigError::new("columns", "must map at least one column"));
                }
                check_unique("columns", map.0.iter().map(|(_, t)| t))?;
            }
            None => {}
        }
        let targets: Option<Vec<&String>> = match &config.columns {
            Some(ColumnMapping::List(list)) => Some(list.iter().flatten().collect()),
            Some(ColumnMapping::Map(map)) => Some(map.0.iter().map(|(_, t)| t).collect()),
            None => None,
        };
        if let Some(create) = &config.create_table {
            if create.columns.0.is_empty() {
                return Err(ConfigError::new("create_table.columns", "must list at least one column"));
            }
            for (i, pk) in create.primary_key.iter().enumerate() {
                if !create.columns.0.iter().any(|(c, _)| c == pk) {
                    return Err(ConfigError::new(format!("create_table.primary_key[{i}]"), format!("\"{pk}\" is not one of create_table.columns")));
                }
            }
            if let Some(targets) = &targets {
                for target in targets {
                    if !create.columns.0.iter().any(|(c, _)| c == *target) {
                        return Err(ConfigError::new("columns", format!("\"{target}\" is not one of create_table.columns")));
                    }
                }
            }
        }
        match config.mode {
            LoadMode::Upsert => {
                if config.key.is_empty() {
                    return Err(ConfigError::new("key", "mode: upsert needs `key`: the columns that identify a row, e.g. key: [loan_sequence_number]"));
                }
                check_unique("key", config.key.iter())?;
                for (i, key) in config.key.iter().enumerate() {
                    if let Some(targets) = &targets {
                        if !targets.contains(&key) {
                            return Err(ConfigError::new(format!("key[{i}]"), format!("\"{key}\" is not one of the table columns that `columns` loads")));
                        }
                    }
                    if let Some(create) = &config.create_table {
                        if !create.columns.0.iter().any(|(c, _)| c == key) {
                            return Err(ConfigError::new(format!("key[{i}]"), format!("\"{key}\" is not one of create_table.columns")));
                        }
                    }
                }
            }
            _ if !config.key.is_empty() => return Err(ConfigError::new("key", "only applies to mode: upsert")),
            _ => {}
        }
        Ok(())
    }

    async fn execute(&self, config: LoadConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        let format = config.file_format().map_err(|e| TaskError::fatal(format!("{}: {}", e.path, e.message)))?;
        let mapping = config.mapping();
        let connection = ctx.connections.sql(&config.connection).map_err(|e| TaskError::fatal(e.to_string()))?;
        if config.mysql_method.is_some() && connection.engine == SqlEngine::Postgres {
            return Err(TaskError::fatal(format!(
                "mysql_method applies to MySQL connections, and \"{}\" is a postgres one (PostgreSQL always loads with COPY FROM STDIN); remove mysql_method",
                connection.name
            )));
        }
        let (sources, _downloads) = resolve_sources(&config, &ctx).await?;
        let first = sources.first().ok_or_else(|| TaskError::fatal(format!("source {} names no file", config.source)))?;
        let header = delimited::first_header(first, &format).map_err(|e| TaskError::fatal(e.to_string()))?;
        let targets = delimited::target_columns(&mapping, header.as_deref(), &first.display).map_err(|e| TaskError::fatal(e.to_string()))?;
        ctx.log.line(&format!(
            "loading {} file{} into {} ({}) on {}",
            sources.len(),
            if sources.len() == 1 { "" } else { "s" },
            config.table,
            config.mode.name(),
            connection.display_url()
        ));
        let db = Db::connect(&connection, &ctx.cancel).await?;
        let job = Job { config: &config, format, mapping, sources, targets, ctx: &ctx };
        let started = std::time::Instant::now();
        let loaded = match db {
            Db::Pg(conn, c) => {
                let mut db = Db::Pg(conn, c);
                let result = job.run_pg(&mut db).await;
                if result.is_err() {
                    db.rollback().await;
                }
                let loaded = result?;
                db.close().await;
                loaded
            }
            Db::My(conn, c) => {
                let mut db = Db::My(conn, c);
                let result = job.run_my(&mut db).await;
                if result.is_err() {
                    db.rollback().await;
                    // The staging table of `replace` is not transactional: drop it.
                    if config.mode == LoadMode::Replace {
                        let (stage, _) = staging_names(&config.table, SqlEngine::Mysql);
                        let _ = db.run(&format!("DROP TABLE IF EXISTS {stage}"), 0, &ctx.cancel).await;
                    }
                }
                let loaded = result?;
                db.close().await;
                loaded
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        ctx.log.line(&format!(
            "loaded {} rows into {} with {} in {:.2}s ({:.0} rows/s)",
            loaded.rows,
            config.table,
            loaded.method,
            seconds,
            loaded.rows as f64 / seconds.max(1e-9)
        ));
        let mut outputs = Outputs::new();
        outputs.insert("rows".into(), loaded.rows.into());
        outputs.insert("table".into(), config.table.clone().into());
        outputs.insert("mode".into(), config.mode.name().into());
        outputs.insert("method".into(), loaded.method.into());
        outputs.insert("files".into(), Value::Array(job.sources.iter().map(|s| Value::from(s.display.clone())).collect()));
        if let Some(affected) = loaded.merged {
            outputs.insert("rows_affected".into(), affected.into());
        }
        Ok(Outcome::Success { outputs })
    }
}

fn is_template(text: &str) -> bool {
    flowctl_engine::template::is_template(text)
}

fn check_unique<'a>(field: &str, names: impl Iterator<Item = &'a String>) -> Result<(), ConfigError> {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if name.trim().is_empty() {
            return Err(ConfigError::new(field, "holds an empty column name"));
        }
        if !seen.insert(name) {
            return Err(ConfigError::new(field, format!("names column \"{name}\" twice")));
        }
    }
    Ok(())
}

#[cfg(feature = "aws-s3")]
fn check_s3_source(source: &str) -> Result<(), ConfigError> {
    if is_template(source) {
        return Ok(());
    }
    crate::aws::s3::S3Url::parse(source).map(drop).map_err(|e| ConfigError::new("source", e.to_string()))
}

#[cfg(not(feature = "aws-s3"))]
fn check_s3_source(_source: &str) -> Result<(), ConfigError> {
    Err(ConfigError::new("source", "s3:// sources need the aws-s3 feature, which this build of flowctl lacks; load a local file, or use a build with aws-s3"))
}

/// What a load did.
struct Loaded {
    rows: u64,
    method: &'static str,
    /// Rows the merge of an upsert affected.
    merged: Option<u64>,
}

/// The resolved sources, and the folder downloads went to (removed when dropped).
async fn resolve_sources(config: &LoadConfig, ctx: &TaskContext) -> Result<(Vec<Source>, Option<TempFolder>), TaskError> {
    if config.source.starts_with("s3://") {
        return s3_sources(config, ctx).await;
    }
    let pattern = &config.source;
    let is_glob = pattern.contains(['*', '?', '[']);
    if !is_glob {
        let path = PathBuf::from(pattern);
        if !path.is_file() {
            let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
            return Err(TaskError::fatal(format!(
                "source {pattern} is not a file (relative paths start at the directory flowctl runs in, {cwd})"
            )));
        }
        return Ok((vec![Source { path, display: pattern.clone() }], None));
    }
    let paths = glob::glob(pattern).map_err(|e| TaskError::fatal(format!("source {pattern} is not a valid glob: {e}")))?;
    let mut files: Vec<PathBuf> = paths.filter_map(Result::ok).filter(|p| p.is_file()).collect();
    files.sort();
    if files.is_empty() {
        let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
        return Err(TaskError::fatal(format!("source {pattern} matches no file (relative paths start at the directory flowctl runs in, {cwd})")));
    }
    Ok((files.into_iter().map(|p| Source { display: p.display().to_string(), path: p }).collect(), None))
}

/// A folder removed when dropped.
struct TempFolder(PathBuf);

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(not(feature = "aws-s3"))]
async fn s3_sources(config: &LoadConfig, _ctx: &TaskContext) -> Result<(Vec<Source>, Option<TempFolder>), TaskError> {
    Err(TaskError::fatal(format!("source {}: s3:// sources need the aws-s3 feature, which this build of flowctl lacks", config.source)))
}

#[cfg(feature = "aws-s3")]
async fn s3_sources(config: &LoadConfig, ctx: &TaskContext) -> Result<(Vec<Source>, Option<TempFolder>), TaskError> {
    super::s3::download_sources(&config.source, config.aws_connection.as_deref(), ctx).await.map(|(sources, folder)| (sources, Some(TempFolder(folder))))
}

/// The staging table of `replace` and the name the old table gets while it is swapped out,
/// beside the table (same schema or database), quoted.
fn staging_names(table: &str, engine: SqlEngine) -> (String, String) {
    let (schema, name) = split_table(table);
    let limit = match engine {
        SqlEngine::Postgres => 63,
        SqlEngine::Mysql => 64,
    };
    let make = |suffix: &str| {
        let base: String = name.chars().take(limit - suffix.len()).collect();
        let name = format!("{base}{suffix}");
        match schema {
            Some(schema) => format!("{}.{}", quote_part(schema, engine), quote_part(&name, engine)),
            None => quote_part(&name, engine),
        }
    };
    (make("__flowctl_new"), make("__flowctl_old"))
}

/// `schema.name` into its parts.
fn split_table(table: &str) -> (Option<&str>, &str) {
    match table.rsplit_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, table),
    }
}

/// `CREATE TABLE` from `create_table`, with `key` as the primary key of an upsert's table when none is given.
fn create_statement(config: &LoadConfig, table: &str, engine: SqlEngine, if_not_exists: bool) -> Option<String> {
    let create = config.create_table.as_ref()?;
    let mut parts: Vec<String> = create.columns.0.iter().map(|(name, ty)| format!("{} {ty}", quote_part(name, engine))).collect();
    let pk = if create.primary_key.is_empty() && config.mode == LoadMode::Upsert { &config.key } else { &create.primary_key };
    if !pk.is_empty() {
        parts.push(format!("PRIMARY KEY ({})", pk.iter().map(|c| quote_part(c, engine)).collect::<Vec<_>>().join(", ")));
    }
    Some(format!("CREATE TABLE {}{table} ({})", if if_not_exists { "IF NOT EXISTS " } else { "" }, parts.join(", ")))
}

/// A string literal.
fn literal(text: &str, engine: SqlEngine) -> String {
    let escaped = text.replace('\'', "''");
    match engine {
        SqlEngine::Postgres => format!("'{escaped}'"),
        SqlEngine::Mysql => format!("'{}'", escaped.replace('\\', "\\\\")),
    }
}

/// Everything one load needs.
struct Job<'a> {
    config: &'a LoadConfig,
    format: Format,
    mapping: Mapping,
    sources: Vec<Source>,
    /// The table columns written, `None` for all in table order.
    targets: Option<Vec<String>>,
    ctx: &'a TaskContext,
}

impl Job<'_> {
    fn table(&self, engine: SqlEngine) -> String {
        quote_ident(&self.config.table, engine)
    }

    fn column_list(&self, engine: SqlEngine) -> String {
        match &self.targets {
            Some(columns) => format!(" ({})", columns.iter().map(|c| quote_part(c, engine)).collect::<Vec<_>>().join(", ")),
            None => String::new(),
        }
    }

    fn create_statement(&self, table: &str, engine: SqlEngine, if_not_exists: bool) -> Option<String> {
        create_statement(self.config, table, engine, if_not_exists)
    }

    /// The table's columns in order (for an upsert of a headerless file without a mapping).
    async fn table_columns(&self, db: &mut Db) -> Result<Vec<String>, TaskError> {
        let engine = db.engine();
        let (schema, name) = split_table(&self.config.table);
        let query = match engine {
            SqlEngine::Postgres => format!(
                "SELECT attname FROM pg_attribute WHERE attrelid = {}::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                literal(&quote_ident(&self.config.table, engine), engine)
            ),
            SqlEngine::Mysql => format!(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
                schema.map(|s| literal(s, engine)).unwrap_or_else(|| "DATABASE()".into()),
                literal(name, engine)
            ),
        };
        let result = db.run(&query, 10_000, &self.ctx.cancel).await?;
        let columns: Vec<String> =
            result.rows.iter().filter_map(|r| r.values().next().and_then(Value::as_str).map(str::to_string)).collect();
        if columns.is_empty() {
            return Err(TaskError::fatal(format!("table {} does not exist; create it, or give create_table", self.config.table)));
        }
        Ok(columns)
    }

    fn upsert_columns(&self, all: Option<Vec<String>>) -> Vec<String> {
        self.targets.clone().or(all).unwrap_or_default()
    }

    // ---------------------------------------------------------------- PostgreSQL

    async fn run_pg(&self, db: &mut Db) -> Result<Loaded, TaskError> {
        let engine = SqlEngine::Postgres;
        let table = self.table(engine);
        let cancel = &self.ctx.cancel;
        db.run("BEGIN", 0, cancel).await?;
        let mode = self.config.mode;
        if mode != LoadMode::Replace {
            if let Some(create) = self.create_statement(&table, engine, true) {
                db.run_all(&[create], cancel).await?;
            }
        }
        let loaded = match mode {
            LoadMode::Append => Loaded { rows: self.copy(db, &table).await?, method: "copy", merged: None },
            LoadMode::Truncate => {
                db.run_all(&[format!("TRUNCATE {table}")], cancel).await?;
                Loaded { rows: self.copy(db, &table).await?, method: "copy", merged: None }
            }
            LoadMode::Replace => {
                let (stage, _) = staging_names(&self.config.table, engine);
                let create = self.create_statement(&stage, engine, false).unwrap_or_else(|| format!("CREATE TABLE {stage} (LIKE {table} INCLUDING ALL)"));
                db.run_all(&[format!("DROP TABLE IF EXISTS {stage}"), create], cancel).await?;
                let rows = self.copy(db, &stage).await?;
                let (_, name) = split_table(&self.config.table);
                db.run_all(&[format!("DROP TABLE IF EXISTS {table}"), format!("ALTER TABLE {stage} RENAME TO {}", quote_part(name, engine))], cancel)
                    .await
                    .map_err(|e| TaskError {
                        kind: e.kind,
                        message: format!("{}; the old table is unchanged (when other objects depend on it, use mode: truncate)", e.message),
                    })?;
                Loaded { rows, method: "copy", merged: None }
            }
            LoadMode::Upsert => {
                let stage = quote_part("flowctl_upsert_stage", engine);
                db.run_all(&[format!("CREATE TEMPORARY TABLE {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")], cancel).await?;
                let rows = self.copy(db, &stage).await?;
                let all = if self.targets.is_none() { Some(self.table_columns(db).await?) } else { None };
                let columns = self.upsert_columns(all);
                let list = columns.iter().map(|c| quote_part(c, engine)).collect::<Vec<_>>().join(", ");
                let keys = self.config.key.iter().map(|c| quote_part(c, engine)).collect::<Vec<_>>().join(", ");
                let updates: Vec<String> = columns
                    .iter()
                    .filter(|c| !self.config.key.contains(c))
                    .map(|c| format!("{0} = EXCLUDED.{0}", quote_part(c, engine)))
                    .collect();
                let action = if updates.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", updates.join(", ")) };
                let merge = format!("INSERT INTO {table} ({list}) SELECT {list} FROM {stage} ON CONFLICT ({keys}) {action}");
                let merged = db.run(&merge, 0, cancel).await.map_err(|e| {
                    let hint = if e.message.contains("42P10") {
                        format!("; upsert needs a primary key or unique index on ({}) in table {}", self.config.key.join(", "), self.config.table)
                    } else if e.message.contains("21000") {
                        format!("; the files hold the same key ({}) more than once", self.config.key.join(", "))
                    } else {
                        String::new()
                    };
                    TaskError { kind: e.kind, message: format!("merging into {} failed: {}{hint}", self.config.table, e.message) }
                })?;
                Loaded { rows, method: "copy", merged: Some(merged.rows_affected) }
            }
        };
        db.run("COMMIT", 0, cancel).await?;
        Ok(loaded)
    }

    /// Streams the files into `table` with COPY FROM STDIN (inside the caller's transaction).
    async fn copy(&self, db: &mut Db, table: &str) -> Result<u64, TaskError> {
        let Db::Pg(conn, _) = db else { return Err(TaskError::fatal("COPY needs a PostgreSQL connection")) };
        let statement = format!("COPY {table}{} FROM STDIN", self.column_list(SqlEngine::Postgres));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let reader = self.spawn_reader(tx);
        let streamed = async {
            let mut copy = conn.copy_in_raw(&statement).await.map_err(|e| (e, false))?;
            while let Some(chunk) = rx.recv().await {
                copy.send(chunk).await.map_err(|e| (e, true))?;
            }
            Ok::<_, (sqlx::Error, bool)>(copy)
        };
        let streamed = cancellable(&self.ctx.cancel, streamed).await;
        drop(rx);
        let summary = reader.await.map_err(|e| TaskError::fatal(format!("the file reader stopped: {e}")))?;
        let copy = match streamed? {
            Ok(copy) => copy,
            Err((e, _)) => return Err(self.pg_copy_error(&e, &summary)),
        };
        if let Some(error) = summary.error {
            let _ = copy.abort(error.to_string()).await;
            return Err(TaskError::fatal(error.to_string()));
        }
        let rows = cancellable(&self.ctx.cancel, copy.finish()).await?.map_err(|e| self.pg_copy_error(&e, &summary))?;
        if rows != summary.records {
            return Err(TaskError::fatal(format!("the server took {rows} rows and {} were sent", summary.records)));
        }
        Ok(rows)
    }

    /// A COPY error, with the record's file and line when the server names a line.
    fn pg_copy_error(&self, e: &sqlx::Error, summary: &ReadSummary) -> TaskError {
        let error = error_pg(e);
        let context = match e {
            sqlx::Error::Database(db) => db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().and_then(|pg| pg.r#where().map(str::to_string)),
            _ => None,
        };
        // e.g. `COPY loans, line 5, column credit_score: "abc"`
        let located = context.as_deref().and_then(|w| {
            let after = w.split(", line ").nth(1)?;
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            let record: u64 = digits.parse().ok()?;
            let column = after.split(", column ").nth(1).map(|c| c.split(':').next().unwrap_or(c).to_string());
            summary.lines.error(record, column, error.message.clone())
        });
        match located {
            Some(located) => TaskError { kind: error.kind, message: located.to_string() },
            None => match &summary.error {
                // The reader's own error explains a COPY the reader cut short.
                Some(read) => TaskError::fatal(read.to_string()),
                None => TaskError { kind: error.kind, message: format!("loading into {} failed: {}", self.config.table, error.message) },
            },
        }
    }

    fn spawn_reader(&self, tx: tokio::sync::mpsc::Sender<Vec<u8>>) -> tokio::task::JoinHandle<ReadSummary> {
        let sources = self.sources.clone();
        let format = self.format.clone();
        let mapping = self.mapping.clone();
        tokio::task::spawn_blocking(move || delimited::read(&sources, &format, &mapping, |chunk| tx.blocking_send(chunk).is_ok()))
    }

    // ---------------------------------------------------------------- MySQL

    async fn run_my(&self, db: &mut Db) -> Result<Loaded, TaskError> {
        let engine = SqlEngine::Mysql;
        let table = self.table(engine);
        let cancel = &self.ctx.cancel;
        let mode = self.config.mode;
        let method = self.mysql_method(db).await?;
        // DDL commits implicitly on MySQL: it runs before the transaction.
        if mode != LoadMode::Replace {
            if let Some(create) = self.create_statement(&table, engine, true) {
                db.run_all(&[create], cancel).await?;
            }
        }
        let loaded = match mode {
            LoadMode::Append => {
                db.run("BEGIN", 0, cancel).await?;
                let rows = self.load_my(db, &table, method).await?;
                db.run("COMMIT", 0, cancel).await?;
                Loaded { rows, method: method_name(method), merged: None }
            }
            LoadMode::Truncate => {
                db.run("BEGIN", 0, cancel).await?;
                db.run_all(&[format!("DELETE FROM {table}")], cancel).await?;
                let rows = self.load_my(db, &table, method).await?;
                db.run("COMMIT", 0, cancel).await?;
                Loaded { rows, method: method_name(method), merged: None }
            }
            LoadMode::Replace => {
                let (stage, old) = staging_names(&self.config.table, engine);
                let exists = self.my_table_exists(db).await?;
                let create = match self.create_statement(&stage, engine, false) {
                    Some(create) => create,
                    None if exists => format!("CREATE TABLE {stage} LIKE {table}"),
                    None => return Err(TaskError::fatal(format!("table {} does not exist; create it, or give create_table", self.config.table))),
                };
                db.run_all(&[format!("DROP TABLE IF EXISTS {stage}"), create], cancel).await?;
                db.run("BEGIN", 0, cancel).await?;
                let rows = self.load_my(db, &stage, method).await?;
                db.run("COMMIT", 0, cancel).await?;
                // One RENAME TABLE swaps both names atomically: readers see the old table or the new.
                let swap = if exists { format!("RENAME TABLE {table} TO {old}, {stage} TO {table}") } else { format!("RENAME TABLE {stage} TO {table}") };
                db.run_all(&[format!("DROP TABLE IF EXISTS {old}"), swap], cancel).await?;
                if exists {
                    db.run_all(&[format!("DROP TABLE {old}")], cancel).await?;
                }
                Loaded { rows, method: method_name(method), merged: None }
            }
            LoadMode::Upsert => {
                self.check_my_unique_key(db).await?;
                let stage = quote_part("flowctl_upsert_stage", engine);
                db.run_all(&[format!("DROP TEMPORARY TABLE IF EXISTS {stage}"), format!("CREATE TEMPORARY TABLE {stage} LIKE {table}")], cancel).await?;
                let all = if self.targets.is_none() { Some(self.table_columns(db).await?) } else { None };
                let columns = self.upsert_columns(all);
                db.run("BEGIN", 0, cancel).await?;
                let rows = self.load_my(db, &stage, method).await?;
                let list = columns.iter().map(|c| quote_part(c, engine)).collect::<Vec<_>>().join(", ");
                let mut updates: Vec<String> =
                    columns.iter().filter(|c| !self.config.key.contains(c)).map(|c| format!("{0} = VALUES({0})", quote_part(c, engine))).collect();
                if updates.is_empty() {
                    let key = quote_part(&self.config.key[0], engine);
                    updates.push(format!("{key} = {key}"));
                }
                let merge = format!("INSERT INTO {table} ({list}) SELECT {list} FROM {stage} ON DUPLICATE KEY UPDATE {}", updates.join(", "));
                let merged = db
                    .run(&merge, 0, cancel)
                    .await
                    .map_err(|e| TaskError { kind: e.kind, message: format!("merging into {} failed: {}", self.config.table, e.message) })?;
                db.run("COMMIT", 0, cancel).await?;
                db.run_all(&[format!("DROP TEMPORARY TABLE IF EXISTS {stage}")], cancel).await?;
                Loaded { rows, method: method_name(method), merged: Some(merged.rows_affected) }
            }
        };
        Ok(loaded)
    }

    async fn my_table_exists(&self, db: &mut Db) -> Result<bool, TaskError> {
        let (schema, name) = split_table(&self.config.table);
        let query = format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
            schema.map(|s| literal(s, SqlEngine::Mysql)).unwrap_or_else(|| "DATABASE()".into()),
            literal(name, SqlEngine::Mysql)
        );
        let result = db.run(&query, 1, &self.ctx.cancel).await?;
        Ok(result.rows.first().and_then(|r| r.values().next()).and_then(Value::as_i64).unwrap_or(0) > 0)
    }

    /// MySQL's ON DUPLICATE KEY matches any unique index, and inserts duplicates silently when
    /// there is none: check that one covers exactly `key` first.
    async fn check_my_unique_key(&self, db: &mut Db) -> Result<(), TaskError> {
        let (schema, name) = split_table(&self.config.table);
        let query = format!(
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            schema.map(|s| literal(s, SqlEngine::Mysql)).unwrap_or_else(|| "DATABASE()".into()),
            literal(name, SqlEngine::Mysql)
        );
        let result = db.run(&query, 100_000, &self.ctx.cancel).await?;
        let mut indexes: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
        for row in &result.rows {
            let mut values = row.values();
            let (Some(index), Some(column)) = (values.next().and_then(Value::as_str), values.next().and_then(Value::as_str)) else { continue };
            indexes.entry(index.to_string()).or_default().insert(column.to_string());
        }
        let key: std::collections::BTreeSet<String> = self.config.key.iter().cloned().collect();
        if indexes.values().any(|columns| *columns == key) {
            return Ok(());
        }
        Err(TaskError::fatal(format!(
            "upsert needs a primary key or unique index on ({}) in table {}, and it has none{}; add one (ALTER TABLE ... ADD UNIQUE ...), or create the table with create_table",
            self.config.key.join(", "),
            self.config.table,
            if indexes.is_empty() { String::new() } else { format!(" (its unique keys: {})", indexes.values().map(|c| format!("({})", c.iter().cloned().collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join(", ")) }
        )))
    }

    /// LOAD DATA LOCAL INFILE when wanted and allowed, else batched INSERTs.
    async fn mysql_method(&self, db: &mut Db) -> Result<MysqlMethod, TaskError> {
        let wanted = self.config.mysql_method.unwrap_or_default();
        if wanted == MysqlMethod::Insert {
            return Ok(MysqlMethod::Insert);
        }
        let result = db.run("SELECT @@local_infile", 1, &self.ctx.cancel).await?;
        let allowed = result.rows.first().and_then(|r| r.values().next()).is_some_and(|v| v.as_i64() == Some(1) || v.as_str() == Some("1"));
        match (allowed, wanted) {
            (true, _) => Ok(MysqlMethod::LocalInfile),
            (false, MysqlMethod::LocalInfile) => Err(TaskError::fatal(
                "the server does not allow LOAD DATA LOCAL INFILE (local_infile is OFF); turn it on (SET GLOBAL local_infile = 1, or the RDS parameter group), or set mysql_method: insert",
            )),
            (false, _) => {
                self.ctx.log.line("the server has local_infile OFF: loading with batched INSERTs");
                Ok(MysqlMethod::Insert)
            }
        }
    }

    async fn load_my(&self, db: &mut Db, table: &str, method: MysqlMethod) -> Result<u64, TaskError> {
        match method {
            MysqlMethod::Insert => self.insert_my(db, table).await,
            _ => self.load_data_my(db, table).await,
        }
    }

    async fn load_data_my(&self, db: &mut Db, table: &str) -> Result<u64, TaskError> {
        let Db::My(conn, _) = db else { return Err(TaskError::fatal("LOAD DATA needs a MySQL connection")) };
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let reader = self.spawn_reader(tx);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (Ok(bytes::Bytes::from(chunk)), rx)) }).boxed();
        // The handler must be Sync and the stream is not: a Mutex makes the pair Sync.
        let stream = std::sync::Mutex::new(stream);
        conn.set_infile_handler(async move { Ok(stream.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)) });
        let statement = format!(
            "LOAD DATA LOCAL INFILE 'flowctl-stream' INTO TABLE {table} CHARACTER SET utf8mb4 FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'{}",
            self.column_list(SqlEngine::Mysql)
        );
        let result = cancellable(&self.ctx.cancel, conn.query_drop(statement)).await?;
        let summary = reader.await.map_err(|e| TaskError::fatal(format!("the file reader stopped: {e}")))?;
        if let Some(error) = summary.error {
            return Err(TaskError::fatal(error.to_string()));
        }
        if let Err(e) = result {
            return Err(TaskError { message: format!("loading into {} failed: {}", self.config.table, error_my(&e).message), ..error_my(&e) });
        }
        let rows = conn.affected_rows();
        if conn.get_warnings() > 0 {
            return Err(self.my_warning(db, &summary.lines, 0).await);
        }
        if rows != summary.records {
            return Err(TaskError::fatal(format!("the server took {rows} rows and {} were sent", summary.records)));
        }
        Ok(rows)
    }

    /// The first warning of the last statement as an error, located in the files; `offset` is
    /// the number of records before the statement's first row.
    async fn my_warning(&self, db: &mut Db, lines: &LineMap, offset: u64) -> TaskError {
        let warnings = match db.run("SHOW WARNINGS", 64, &self.ctx.cancel).await {
            Ok(w) => w.rows,
            Err(e) => return e,
        };
        let first = warnings.iter().find(|w| w.get("Level").and_then(Value::as_str) != Some("Note")).or(warnings.first());
        let Some(first) = first else { return TaskError::fatal("the server reported warnings and then none") };
        let message = first.get("Message").and_then(Value::as_str).unwrap_or("").to_string();
        let code = first.get("Code").map(|c| c.to_string()).unwrap_or_default();
        mysql_located(&message, &code, lines, offset).unwrap_or_else(|| TaskError::fatal(format!("loading into {} failed: {message} [MySQL warning {code}]; nothing was loaded", self.config.table)))
    }

    /// Batched multi-row INSERTs (prepared, so values need no escaping).
    async fn insert_my(&self, db: &mut Db, table: &str) -> Result<u64, TaskError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
        let reader = self.spawn_reader(tx);
        let columns = self.column_list(SqlEngine::Mysql);
        // Records inserted before the current batch.
        let mut sent = 0u64;
        let mut batch: Vec<mysql_async::Value> = Vec::new();
        let mut batch_rows = 0usize;
        let mut width = None;
        let mut pending = Vec::new();
        let mut failed: Option<TaskError> = None;
        'chunks: while let Some(chunk) = cancellable(&self.ctx.cancel, rx.recv()).await? {
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|&b| b == b'\n') {
                let fields = delimited::decode_record(&pending[start..start + end]);
                start += end + 1;
                let w = *width.get_or_insert(fields.len());
                batch.extend(fields.into_iter().map(|f| f.map_or(mysql_async::Value::NULL, |s| mysql_async::Value::Bytes(s.into_bytes()))));
                batch_rows += 1;
                // At most 1000 rows, and fewer than 65,535 placeholders.
                if batch_rows >= (60_000 / w.max(1)).clamp(1, 1000) {
                    let values = std::mem::take(&mut batch);
                    if let Err(e) = self.insert_batch(db, table, &columns, batch_rows, values, sent).await {
                        failed = Some(e);
                        break 'chunks;
                    }
                    sent += batch_rows as u64;
                    batch_rows = 0;
                }
            }
            pending.drain(..start);
        }
        drop(rx);
        let summary = reader.await.map_err(|e| TaskError::fatal(format!("the file reader stopped: {e}")))?;
        if let Some(error) = summary.error {
            return Err(TaskError::fatal(error.to_string()));
        }
        if failed.is_none() && batch_rows > 0 {
            if let Err(e) = self.insert_batch(db, table, &columns, batch_rows, batch, sent).await {
                failed = Some(e);
            }
        }
        if let Some(e) = failed {
            return Err(self.locate_insert_error(db, e, &summary.lines).await);
        }
        Ok(summary.records)
    }

    /// One INSERT of `rows` records; an error's message starts with [`BATCH_MARK`] and the
    /// number of records before the batch, for [`Job::locate_insert_error`].
    async fn insert_batch(&self, db: &mut Db, table: &str, columns: &str, rows: usize, values: Vec<mysql_async::Value>, before: u64) -> Result<(), TaskError> {
        let Db::My(conn, _) = db else { return Err(TaskError::fatal("INSERT batches need a MySQL connection")) };
        let width = values.len() / rows.max(1);
        let row = format!("({})", vec!["?"; width].join(", "));
        let statement = format!("INSERT INTO {table}{columns} VALUES {}", vec![row.as_str(); rows].join(", "));
        match cancellable(&self.ctx.cancel, conn.exec_drop(statement, mysql_async::Params::Positional(values))).await? {
            Ok(()) if conn.get_warnings() == 0 => Ok(()),
            Ok(()) => Err(TaskError::fatal(format!("{BATCH_MARK}{before}:warning"))),
            Err(e) => {
                let error = error_my(&e);
                Err(TaskError { kind: error.kind, message: format!("{BATCH_MARK}{before}:{}", error.message) })
            }
        }
    }

    async fn locate_insert_error(&self, db: &mut Db, e: TaskError, lines: &LineMap) -> TaskError {
        let Some(rest) = e.message.strip_prefix(BATCH_MARK) else { return e };
        let (before, message) = rest.split_once(':').unwrap_or(("0", rest));
        let before: u64 = before.parse().unwrap_or(0);
        if message == "warning" {
            return self.my_warning(db, lines, before).await;
        }
        let code = message.rsplit("[MySQL error ").next().and_then(|c| c.strip_suffix(']')).unwrap_or("").to_string();
        let text = message.split(" [MySQL error ").next().unwrap_or(message);
        mysql_located(text, &code, lines, before)
            .map(|located| TaskError { kind: e.kind, ..located })
            .unwrap_or(TaskError { kind: e.kind, message: format!("loading into {} failed: {message}", self.config.table) })
    }
}

/// Marks an INSERT batch's error with the number of records before the batch.
const BATCH_MARK: &str = "\u{1}batch:";

fn method_name(method: MysqlMethod) -> &'static str {
    match method {
        MysqlMethod::Insert => "insert",
        _ => "load_data_local_infile",
    }
}

/// A MySQL message that ends with `at row N` (a load's record N, after `offset` earlier
/// records), located in the files with the column it names.
fn mysql_located(message: &str, code: &str, lines: &LineMap, offset: u64) -> Option<TaskError> {
    let (text, row) = message.rsplit_once(" at row ")?;
    let row: u64 = row.trim().parse().ok()?;
    let column = column_in(text);
    let located = lines.error(offset + row, column, format!("{text} [MySQL {code}]"))?;
    Some(TaskError::fatal(located.to_string()))
}

/// The column a MySQL message names: `for column `db`.`t`.`c`` or `for column 'c'`.
fn column_in(text: &str) -> Option<String> {
    let after = text.split(" column ").nth(1)?;
    let name = if after.starts_with('`') {
        after.split(' ').next()?.rsplit('.').next()?.trim_matches('`').to_string()
    } else {
        after.trim_start_matches('\'').split('\'').next()?.to_string()
    };
    Some(name).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_engine::operator::Registry;
    use serde_json::json;

    fn validate(with: serde_json::Value) -> Result<(), ConfigError> {
        let mut registry = Registry::new();
        registry.register(SqlLoad);
        registry.get("sql.load").unwrap().validate(&with)
    }

    fn err(with: serde_json::Value) -> (String, String) {
        let e = validate(with).unwrap_err();
        (e.path, e.message)
    }

    #[test]
    fn a_full_setting_validates() {
        validate(json!({
            "connection": "rds", "source": "data/loans_*.txt", "table": "loans.origination",
            "delimiter": "|", "header": false, "null_value": "", "quote": null,
            "columns": ["credit_score", null, "loan_sequence_number"],
            "create_table": {"columns": {"credit_score": "integer", "loan_sequence_number": "varchar(12)"}, "primary_key": ["loan_sequence_number"]},
            "mode": "upsert", "key": ["loan_sequence_number"], "mysql_method": "insert"
        }))
        .unwrap();
    }

    #[test]
    fn compile_time_checks_name_the_field() {
        let base = json!({"connection": "rds", "source": "a.csv", "table": "t"});
        let with = |extra: serde_json::Value| {
            let mut v = base.clone();
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            v
        };
        assert_eq!(err(with(json!({"mode": "upsert"}))).0, "key");
        assert_eq!(err(with(json!({"key": ["id"]}))), ("key".into(), "only applies to mode: upsert".into()));
        assert_eq!(err(with(json!({"delimiter": "||"}))), ("delimiter".into(), "must be one ASCII character other than a newline, found \"||\"".into()));
        assert_eq!(err(with(json!({"quote": "|", "delimiter": "|"}))), ("quote".into(), "must differ from the delimiter".into()));
        assert_eq!(err(with(json!({"header": false, "columns": {"a": "b"}}))).0, "columns");
        assert_eq!(err(with(json!({"columns": ["a", "a"]}))), ("columns".into(), "names column \"a\" twice".into()));
        assert_eq!(err(with(json!({"mode": "upsert", "key": ["id"], "columns": ["a"]}))), ("key[0]".into(), "\"id\" is not one of the table columns that `columns` loads".into()));
        assert_eq!(
            err(with(json!({"create_table": {"columns": {"a": "int"}, "primary_key": ["b"]}}))),
            ("create_table.primary_key[0]".into(), "\"b\" is not one of create_table.columns".into())
        );
        assert_eq!(err(with(json!({"mode": "merge"}))).0, "mode");
        assert_eq!(err(with(json!({"aws_connection": "aws_default"}))), ("aws_connection".into(), "only applies to an s3:// source".into()));
        assert_eq!(err(with(json!({"table": "loans."}))).0, "table");
        assert!(validate(with(json!({"delimiter": "\\t"}))).is_ok());
        assert!(validate(with(json!({"delimiter": "tab"}))).is_ok());
    }

    #[cfg(not(feature = "aws-s3"))]
    #[test]
    fn an_s3_source_needs_the_aws_s3_feature() {
        assert_eq!(
            err(json!({"connection": "rds", "source": "s3://bucket/loans.txt", "table": "t"})),
            ("source".into(), "s3:// sources need the aws-s3 feature, which this build of flowctl lacks; load a local file, or use a build with aws-s3".into())
        );
    }

    #[test]
    fn create_table_keeps_the_order_written() {
        let config: LoadConfig = serde_json::from_value(json!({
            "connection": "rds", "source": "a", "table": "s.t",
            "create_table": {"columns": {"z": "int", "a": "text not null", "m": "date"}}, "mode": "upsert", "key": ["z"]
        }))
        .unwrap();
        assert_eq!(
            create_statement(&config, "\"s\".\"t\"", SqlEngine::Postgres, true).unwrap(),
            "CREATE TABLE IF NOT EXISTS \"s\".\"t\" (\"z\" int, \"a\" text not null, \"m\" date, PRIMARY KEY (\"z\"))"
        );
    }

    #[test]
    fn staging_tables_sit_beside_the_table() {
        assert_eq!(staging_names("loans.orig", SqlEngine::Postgres), ("\"loans\".\"orig__flowctl_new\"".into(), "\"loans\".\"orig__flowctl_old\"".into()));
        let long = "x".repeat(70);
        let (stage, _) = staging_names(&long, SqlEngine::Mysql);
        assert_eq!(stage.len(), 64 + 2);
    }

    #[test]
    fn mysql_messages_name_their_column_and_row() {
        assert_eq!(column_in("Incorrect integer value: 'abc' for column `db`.`loans`.`credit_score`"), Some("credit_score".into()));
        assert_eq!(column_in("Data truncated for column 'state'"), Some("state".into()));
        assert_eq!(column_in("Duplicate entry 'x' for key 'PRIMARY'"), None);
    }
}
