//! SQL operators for MySQL/MariaDB and PostgreSQL: `sql.execute` runs statements, `sql.load`
//! bulk-loads delimited files (the Sqoop replacement), `sql.export` streams a query to a file.
//!
//! Two drivers, one per server, both on tokio with rustls (ring): sqlx for PostgreSQL, whose
//! `COPY FROM STDIN` support (`copy_in_raw`) is what bulk loading needs, and mysql_async for MySQL
//! and MariaDB, because sqlx's MySQL driver cannot answer the server's `LOAD DATA LOCAL INFILE`
//! request and mysql_async can (through its infile handler). Everything above the wire is shared:
//! the statement splitter ([`split`]), the delimited-file reader ([`delimited`]), error
//! classification and the connection testers below.

pub mod delimited;
pub mod split;

mod db;
mod execute;
mod export;
mod load;
#[cfg(feature = "aws-s3")]
mod s3;

use std::sync::Arc;

use async_trait::async_trait;
use flowctl_engine::connections::{Connection, ConnectionKind};
use flowctl_engine::operator::ConnectionTester;
use flowctl_engine::Registry;

pub use execute::{ExecuteConfig, SqlExecute};
pub use export::{ExportConfig, SqlExport};
pub use load::{LoadConfig, SqlLoad};

/// Adds the SQL operators, and the `mysql` and `postgres` connection testers.
pub fn register(registry: &mut Registry) {
    registry.register(SqlExecute).register(SqlLoad).register(SqlExport);
    registry.register_tester("mysql", Arc::new(SqlTester)).register_tester("postgres", Arc::new(SqlTester));
}

/// Connects, runs `SELECT version()` and reports the server's version, or what to fix.
pub struct SqlTester;

#[async_trait]
impl ConnectionTester for SqlTester {
    async fn test(&self, connection: &Connection) -> Result<String, String> {
        let sql = match &connection.kind {
            ConnectionKind::Sql(sql) => sql,
            ConnectionKind::Broken(why) => return Err(why.clone()),
            other => return Err(format!("connection \"{}\" is a {} connection, not a SQL one", connection.name, other.type_name())),
        };
        let never = tokio_util::sync::CancellationToken::new();
        let mut db = db::Db::connect(sql, &never).await.map_err(|e| e.message)?;
        let version = db.version(&never).await.map_err(|e| e.message)?;
        db.close().await;
        Ok(format!("connected to {} as {}: server version {version}", sql.display_url(), sql.user.as_deref().unwrap_or("(no user)")))
    }
}

/// `a.b` as `"a"."b"` (PostgreSQL) or `` `a`.`b` `` (MySQL): each dot-separated part quoted, with
/// the quote character doubled inside.
pub(crate) fn quote_ident(name: &str, engine: flowctl_engine::connections::SqlEngine) -> String {
    name.split('.').map(|part| quote_part(part, engine)).collect::<Vec<_>>().join(".")
}

/// One identifier quoted, dots and all.
pub(crate) fn quote_part(part: &str, engine: flowctl_engine::connections::SqlEngine) -> String {
    let q = match engine {
        flowctl_engine::connections::SqlEngine::Postgres => '"',
        flowctl_engine::connections::SqlEngine::Mysql => '`',
    };
    format!("{q}{}{q}", part.replace(q, &format!("{q}{q}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_engine::connections::SqlEngine;

    #[test]
    fn identifiers_are_quoted_part_by_part() {
        assert_eq!(quote_ident("loans.origination", SqlEngine::Postgres), "\"loans\".\"origination\"");
        assert_eq!(quote_ident("a\"b", SqlEngine::Postgres), "\"a\"\"b\"");
        assert_eq!(quote_ident("db.t`x", SqlEngine::Mysql), "`db`.`t``x`");
    }
}
