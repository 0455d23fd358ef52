//! One open connection to either server, and the errors of both drivers turned into `TaskError`s
//! that say what failed, whether a retry can help, and what to fix.

use std::time::Duration;

use flowctl_engine::connections::{SqlConnection, SqlEngine};
use flowctl_engine::operator::TaskError;
use futures_util::StreamExt;
use mysql_async::prelude::Queryable;
use serde_json::{Map, Value};
use sqlx::{ConnectOptions, Connection, Row};
use tokio_util::sync::CancellationToken;

use super::split::Dialect;

/// How long connecting may take before the attempt fails (retryably).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a rollback after a failure may take before the connection is just closed.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(10);

/// An open connection.
pub(crate) enum Db {
    /// PostgreSQL through sqlx.
    Pg(sqlx::PgConnection, SqlConnection),
    /// MySQL or MariaDB through mysql_async.
    My(mysql_async::Conn, SqlConnection),
}

/// What one statement did.
#[derive(Debug, Default)]
pub(crate) struct StatementResult {
    /// Rows inserted, updated or deleted.
    pub rows_affected: u64,
    /// Whether the statement returned a result set.
    pub returned_rows: bool,
    /// The rows kept (at most the fetch limit), as JSON objects.
    pub rows: Vec<Map<String, Value>>,
    /// Rows returned beyond the fetch limit (not kept).
    pub rows_dropped: u64,
}

/// Waits for `future` unless the attempt is cancelled first.
pub(crate) async fn cancellable<T>(cancel: &CancellationToken, future: impl std::future::Future<Output = T>) -> Result<T, TaskError> {
    tokio::select! {
        value = future => Ok(value),
        _ = cancel.cancelled() => Err(TaskError::cancelled()),
    }
}

impl Db {
    /// Connects, failing with the reason and the fix (host and port, user and password, database).
    pub async fn connect(sql: &SqlConnection, cancel: &CancellationToken) -> Result<Db, TaskError> {
        let connecting = async {
            match sql.engine {
                SqlEngine::Postgres => {
                    let options: sqlx::postgres::PgConnectOptions = sql.url().parse().map_err(|e: sqlx::Error| {
                        TaskError::fatal(format!("connection \"{}\" ({}) is not a PostgreSQL URL: {}", sql.name, sql.display_url(), config_message(&e)))
                    })?;
                    let options = options
                        .application_name("flowctl")
                        .log_statements(log::LevelFilter::Off)
                        .log_slow_statements(log::LevelFilter::Off, Duration::from_secs(3600));
                    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
                        Ok(Ok(conn)) => Ok(Db::Pg(conn, sql.clone())),
                        Ok(Err(e)) => Err(connect_error_pg(sql, e)),
                        Err(_) => Err(unreachable(sql, &format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))),
                    }
                }
                SqlEngine::Mysql => {
                    let opts = mysql_opts(sql)?;
                    match tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(opts)).await {
                        Ok(Ok(conn)) => Ok(Db::My(conn, sql.clone())),
                        Ok(Err(e)) => Err(connect_error_my(sql, e)),
                        Err(_) => Err(unreachable(sql, &format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))),
                    }
                }
            }
        };
        cancellable(cancel, connecting).await?
    }

    /// The server kind.
    pub fn engine(&self) -> SqlEngine {
        match self {
            Db::Pg(..) => SqlEngine::Postgres,
            Db::My(..) => SqlEngine::Mysql,
        }
    }

    /// The splitter's rules for this server.
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Pg(..) => Dialect::Postgres,
            Db::My(..) => Dialect::Mysql,
        }
    }

    /// The resolved connection.
    pub fn connection(&self) -> &SqlConnection {
        match self {
            Db::Pg(_, c) | Db::My(_, c) => c,
        }
    }

    /// `SELECT version()`.
    pub async fn version(&mut self, cancel: &CancellationToken) -> Result<String, TaskError> {
        let rows = self.run("SELECT version()", 1, cancel).await?;
        Ok(rows.rows.first().and_then(|r| r.values().next()).and_then(Value::as_str).unwrap_or("unknown").to_string())
    }

    /// Runs one statement (simple/text protocol, so any statement works), keeping at most
    /// `keep` rows of its result.
    pub async fn run(&mut self, statement: &str, keep: usize, cancel: &CancellationToken) -> Result<StatementResult, TaskError> {
        match self {
            Db::Pg(conn, _) => cancellable(cancel, run_pg(conn, statement, keep)).await?.map_err(|e| error_pg(&e)),
            Db::My(conn, _) => cancellable(cancel, run_my(conn, statement, keep)).await?.map_err(|e| error_my(&e)),
        }
    }

    /// Runs statements whose results do not matter (BEGIN, DDL of the loader...).
    pub async fn run_all(&mut self, statements: &[String], cancel: &CancellationToken) -> Result<u64, TaskError> {
        let mut affected = 0;
        for statement in statements {
            affected += self.run(statement, 0, cancel).await.map_err(|e| TaskError { kind: e.kind, message: format!("{}: {}", short(statement), e.message) })?.rows_affected;
        }
        Ok(affected)
    }

    /// Rolls back, ignoring errors (the connection may already be gone) and giving up after
    /// [`ROLLBACK_TIMEOUT`]: the server rolls back anyway when the connection closes.
    pub async fn rollback(&mut self) {
        let rollback = async {
            let _ = match self {
                Db::Pg(conn, _) => sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.map(drop).map_err(drop),
                Db::My(conn, _) => conn.query_drop("ROLLBACK").await.map_err(drop),
            };
        };
        let _ = tokio::time::timeout(ROLLBACK_TIMEOUT, rollback).await;
    }

    /// Closes the connection politely.
    pub async fn close(self) {
        match self {
            Db::Pg(conn, _) => {
                let _ = conn.close().await;
            }
            Db::My(conn, _) => {
                let _ = conn.disconnect().await;
            }
        }
    }
}

/// The first line of a statement, shortened, for messages.
pub(crate) fn short(statement: &str) -> String {
    let first = statement.lines().next().unwrap_or("").trim();
    if first.chars().count() > 80 || statement.lines().nth(1).is_some() {
        format!("{}...", first.chars().take(80).collect::<String>())
    } else {
        first.to_string()
    }
}

async fn run_pg(conn: &mut sqlx::PgConnection, statement: &str, keep: usize) -> Result<StatementResult, sqlx::Error> {
    use sqlx::Either;
    let mut result = StatementResult::default();
    let mut stream = sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_string())).fetch_many(&mut *conn);
    while let Some(item) = stream.next().await {
        match item? {
            Either::Left(done) => result.rows_affected += done.rows_affected(),
            Either::Right(row) => {
                result.returned_rows = true;
                if result.rows.len() < keep {
                    result.rows.push(pg_row_json(&row));
                } else {
                    result.rows_dropped += 1;
                }
            }
        }
    }
    Ok(result)
}

/// A PostgreSQL row (text format, as the simple query protocol returns it) as a JSON object:
/// integers, floats and booleans as JSON numbers and booleans, json/jsonb parsed, NULL as null,
/// everything else (numeric included, so no precision is lost) as its text.
pub(crate) fn pg_row_json(row: &sqlx::postgres::PgRow) -> Map<String, Value> {
    use sqlx::{Column, TypeInfo, ValueRef};
    let mut object = Map::new();
    for (i, column) in row.columns().iter().enumerate() {
        let value = match row.try_get_raw(i) {
            Ok(raw) if raw.is_null() => Value::Null,
            Ok(raw) => {
                let type_name = raw.type_info().name().to_ascii_uppercase();
                match raw.as_str() {
                    Ok(text) => typed_json(text, pg_kind(&type_name)),
                    Err(_) => Value::Null,
                }
            }
            Err(_) => Value::Null,
        };
        object.insert(column.name().to_string(), value);
    }
    object
}

/// How a column's text becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Integer,
    Float,
    Bool,
    Json,
    Text,
}

fn pg_kind(type_name: &str) -> Kind {
    match type_name {
        "INT2" | "INT4" | "INT8" | "OID" | "SMALLINT" | "INTEGER" | "BIGINT" => Kind::Integer,
        "FLOAT4" | "FLOAT8" | "REAL" | "DOUBLE PRECISION" => Kind::Float,
        "BOOL" | "BOOLEAN" => Kind::Bool,
        "JSON" | "JSONB" => Kind::Json,
        _ => Kind::Text,
    }
}

pub(crate) fn typed_json(text: &str, kind: Kind) -> Value {
    match kind {
        Kind::Integer => text.parse::<i64>().map(Value::from).or_else(|_| text.parse::<u64>().map(Value::from)).unwrap_or_else(|_| text.into()),
        Kind::Float => text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number).unwrap_or_else(|| text.into()),
        Kind::Bool => match text {
            "t" | "true" | "1" => Value::Bool(true),
            "f" | "false" | "0" => Value::Bool(false),
            other => other.into(),
        },
        Kind::Json => serde_json::from_str(text).unwrap_or_else(|_| text.into()),
        Kind::Text => text.into(),
    }
}

async fn run_my(conn: &mut mysql_async::Conn, statement: &str, keep: usize) -> Result<StatementResult, mysql_async::Error> {
    let mut result = StatementResult::default();
    let mut query = conn.query_iter(statement).await?;
    loop {
        result.rows_affected += query.affected_rows();
        let columns = query.columns();
        if let Some(columns) = columns.filter(|c| !c.is_empty()) {
            result.returned_rows = true;
            let kinds: Vec<Kind> = columns.iter().map(my_kind).collect();
            let names: Vec<String> = columns.iter().map(|c| c.name_str().into_owned()).collect();
            let rows = &mut result.rows;
            let mut dropped = 0;
            query
                .for_each(|row: mysql_async::Row| {
                    if rows.len() < keep {
                        rows.push(my_row_json(row, &names, &kinds));
                    } else {
                        dropped += 1;
                    }
                })
                .await?;
            result.rows_dropped += dropped;
        } else {
            query.for_each(|_: mysql_async::Row| {}).await?;
        }
        if query.is_empty() {
            break;
        }
    }
    drop(query);
    Ok(result)
}

pub(crate) fn my_kind(column: &mysql_async::Column) -> Kind {
    use mysql_async::consts::ColumnType::*;
    match column.column_type() {
        MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_LONG | MYSQL_TYPE_LONGLONG | MYSQL_TYPE_INT24 | MYSQL_TYPE_YEAR => Kind::Integer,
        MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE => Kind::Float,
        MYSQL_TYPE_JSON => Kind::Json,
        _ => Kind::Text,
    }
}

/// The text of a MySQL value from the text protocol (`None` for NULL); binary data that is not
/// UTF-8 is written as `0x` and hex digits.
pub(crate) fn my_text(value: &mysql_async::Value) -> Option<std::borrow::Cow<'_, str>> {
    use mysql_async::Value as V;
    match value {
        V::NULL => None,
        V::Bytes(bytes) => Some(match std::str::from_utf8(bytes) {
            Ok(text) => text.into(),
            Err(_) => format!("0x{}", bytes.iter().map(|b| format!("{b:02X}")).collect::<String>()).into(),
        }),
        other => Some(other.as_sql(true).trim_matches('\'').to_string().into()),
    }
}

fn my_row_json(row: mysql_async::Row, names: &[String], kinds: &[Kind]) -> Map<String, Value> {
    let mut object = Map::new();
    for (i, value) in row.unwrap().iter().enumerate() {
        let json = match my_text(value) {
            None => Value::Null,
            Some(text) => typed_json(&text, kinds.get(i).copied().unwrap_or(Kind::Text)),
        };
        object.insert(names.get(i).cloned().unwrap_or_default(), json);
    }
    object
}

/// mysql_async's options from the connection: TCP, and TLS from `ssl-mode` and `ssl-ca`.
fn mysql_opts(sql: &SqlConnection) -> Result<mysql_async::Opts, TaskError> {
    let mut builder = mysql_async::OptsBuilder::default()
        .ip_or_hostname(sql.host.clone())
        .tcp_port(sql.port)
        .user(sql.user.clone())
        .pass(sql.password.as_ref().map(|p| p.expose().to_string()))
        .db_name(sql.database.clone())
        .prefer_socket(false)
        .stmt_cache_size(Some(16));
    let mut mode = None;
    let mut ca = None;
    for (key, value) in &sql.options {
        match key.to_ascii_lowercase().replace('_', "-").as_str() {
            "ssl-mode" | "sslmode" => mode = Some(value.to_ascii_uppercase().replace('-', "_")),
            "ssl-ca" | "sslca" | "sslrootcert" => ca = Some(value.clone()),
            other => {
                return Err(TaskError::fatal(format!(
                    "connection \"{}\": unknown MySQL option \"{other}\"; the options are ssl-mode (DISABLED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY) and ssl-ca (a CA bundle file)",
                    sql.name
                )))
            }
        }
    }
    let ssl = match mode.as_deref() {
        None if ca.is_some() => Some(mysql_async::SslOpts::default()),
        None | Some("DISABLED") | Some("PREFERRED") => None,
        Some("REQUIRED") => Some(mysql_async::SslOpts::default().with_danger_accept_invalid_certs(true)),
        Some("VERIFY_CA") => Some(mysql_async::SslOpts::default().with_danger_skip_domain_validation(true)),
        Some("VERIFY_IDENTITY") => Some(mysql_async::SslOpts::default()),
        Some(other) => {
            return Err(TaskError::fatal(format!(
                "connection \"{}\": ssl-mode \"{other}\" is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY",
                sql.name
            )))
        }
    };
    if let Some(mut ssl) = ssl {
        if let Some(ca) = ca {
            ssl = ssl.with_root_certs(vec![std::path::PathBuf::from(ca).into()]);
        }
        builder = builder.ssl_opts(ssl);
    }
    Ok(builder.into())
}

fn config_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

fn unreachable(sql: &SqlConnection, why: &str) -> TaskError {
    TaskError::retryable(format!(
        "cannot reach the {} server of connection \"{}\" at {}:{}: {why}; check host and port, and that the server runs and accepts connections from here",
        sql.engine.name(),
        sql.name,
        sql.host,
        sql.port
    ))
}

fn auth_failed(sql: &SqlConnection, why: &str) -> TaskError {
    TaskError::fatal(format!(
        "the {} server of connection \"{}\" ({}) refused the login: {why}; check the user and the password in the variable that password_env names",
        sql.engine.name(),
        sql.name,
        sql.display_url()
    ))
}

fn unknown_database(sql: &SqlConnection, why: &str) -> TaskError {
    TaskError::fatal(format!(
        "connection \"{}\" ({}) names a database the server does not have: {why}; check database in the connection",
        sql.name,
        sql.display_url()
    ))
}

fn connect_error_pg(sql: &SqlConnection, e: sqlx::Error) -> TaskError {
    match &e {
        sqlx::Error::Io(io) => unreachable(sql, &io.to_string()),
        sqlx::Error::Tls(tls) => TaskError::fatal(format!(
            "TLS with the server of connection \"{}\" ({}) failed: {tls}; check sslmode and sslrootcert in the connection's options",
            sql.name,
            sql.display_url()
        )),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                "28P01" | "28000" => auth_failed(sql, db.message()),
                "3D000" => unknown_database(sql, db.message()),
                _ => {
                    let error = error_pg(&e);
                    TaskError { kind: error.kind, message: format!("cannot connect with connection \"{}\" ({}): {}", sql.name, sql.display_url(), error.message) }
                }
            }
        }
        _ => TaskError::retryable(format!("cannot connect with connection \"{}\" ({}): {e}", sql.name, sql.display_url())),
    }
}

fn connect_error_my(sql: &SqlConnection, e: mysql_async::Error) -> TaskError {
    match &e {
        mysql_async::Error::Io(io) => unreachable(sql, &io.to_string()),
        mysql_async::Error::Server(server) => match server.code {
            1045 | 1044 | 1698 => auth_failed(sql, &server.message),
            1049 => unknown_database(sql, &server.message),
            _ => {
                let error = error_my(&e);
                TaskError { kind: error.kind, message: format!("cannot connect with connection \"{}\" ({}): {}", sql.name, sql.display_url(), error.message) }
            }
        },
        _ => TaskError::retryable(format!("cannot connect with connection \"{}\" ({}): {e}", sql.name, sql.display_url())),
    }
}

/// A PostgreSQL error: retryable for lost connections, serialization failures, deadlocks,
/// lack of resources and shutdowns; final for everything else (bad SQL, constraints, data,
/// permissions).
pub(crate) fn error_pg(e: &sqlx::Error) -> TaskError {
    match e {
        sqlx::Error::Io(io) => TaskError::retryable(format!("lost the connection to the server: {io}")),
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            let mut message = db.message().to_string();
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                if let Some(detail) = pg.detail() {
                    message.push_str(&format!(" ({detail})"));
                }
                if let Some(hint) = pg.hint() {
                    message.push_str(&format!("; hint: {hint}"));
                }
            }
            let message = format!("{message} [SQLSTATE {code}]");
            let retryable = code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code == "40001" || code == "40P01";
            if retryable {
                TaskError::retryable(message)
            } else {
                TaskError::fatal(message)
            }
        }
        sqlx::Error::Protocol(p) => TaskError::retryable(format!("protocol error talking to the server: {p}")),
        other => TaskError::fatal(other.to_string()),
    }
}

/// A MySQL error: retryable for lost connections, deadlocks, lock wait timeouts and a server
/// going away; final for everything else.
pub(crate) fn error_my(e: &mysql_async::Error) -> TaskError {
    match e {
        mysql_async::Error::Io(io) => TaskError::retryable(format!("lost the connection to the server: {io}")),
        mysql_async::Error::Server(server) => {
            let message = format!("{} [MySQL error {}]", server.message, server.code);
            if matches!(server.code, 1205 | 1213 | 1040 | 1053 | 2006 | 2013 | 1927) {
                TaskError::retryable(message)
            } else {
                TaskError::fatal(message)
            }
        }
        mysql_async::Error::Driver(d) => TaskError::fatal(d.to_string()),
        other => TaskError::retryable(other.to_string()),
    }
}
