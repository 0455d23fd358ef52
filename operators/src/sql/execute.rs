//! `sql.execute`: runs a script of one or more statements, inline or from a file, optionally in
//! one transaction, and returns rows affected per statement and, with `fetch: true`, the rows of
//! the last statement that returned any (for downstream templates).

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde::Deserialize;
use serde_json::Value;

use super::db::{short, Db};
use super::split;

/// The most rows `fetch_limit` may keep: outputs live in the store and in templates.
pub const MAX_FETCH_LIMIT: u64 = 100_000;

/// The settings of a `sql.execute` task.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteConfig {
    /// The mysql or postgres connection to run on (a name from the config file's `connections:`
    /// or a `FLOWCTL_CONN_<NAME>` variable).
    pub connection: String,
    /// The SQL: one statement or several separated by `;`. Give this or `sql_file`.
    pub sql: Option<String>,
    /// A file holding the SQL, relative to the directory flowctl runs in (or absolute). Its text
    /// is used as written: templates inside the file are not rendered. Give this or `sql`.
    pub sql_file: Option<String>,
    /// Run every statement in one transaction: all of them take effect, or none (default false:
    /// each statement commits on its own). MySQL commits implicitly before and after DDL
    /// (CREATE, ALTER, DROP...), so there only DML is rolled back.
    #[serde(default)]
    pub transaction: bool,
    /// Return the rows of the last statement that returns rows, as output `rows` (default false).
    #[serde(default)]
    pub fetch: bool,
    /// The most rows `fetch` keeps (default 1000, at most 100000); output `truncated` says when
    /// more were returned.
    #[serde(default = "default_fetch_limit")]
    pub fetch_limit: u64,
    /// Split the SQL into statements at `;` (default true). Set false to send the whole text as
    /// one statement, e.g. a MySQL `CREATE PROCEDURE` whose body holds `;`.
    #[serde(default = "yes")]
    pub split_statements: bool,
}

fn default_fetch_limit() -> u64 {
    1000
}

fn yes() -> bool {
    true
}

/// The `sql.execute` operator.
pub struct SqlExecute;

#[async_trait]
impl Operator for SqlExecute {
    const NAME: &'static str = "sql.execute";
    const DOCS: &'static str = "docs/operators/sql.md";
    type Config = ExecuteConfig;

    fn check(config: &ExecuteConfig) -> Result<(), ConfigError> {
        check_connection(&config.connection)?;
        match (&config.sql, &config.sql_file) {
            (Some(_), Some(_)) => return Err(ConfigError::new("", "give either `sql` or `sql_file`, not both")),
            (None, None) => return Err(ConfigError::new("", "give `sql` (the statements) or `sql_file` (a file holding them)")),
            (Some(sql), None) if sql.trim().is_empty() => return Err(ConfigError::new("sql", "is empty")),
            (None, Some(file)) if file.trim().is_empty() => return Err(ConfigError::new("sql_file", "is empty")),
            _ => {}
        }
        if config.fetch_limit == 0 || config.fetch_limit > MAX_FETCH_LIMIT {
            return Err(ConfigError::new("fetch_limit", format!("must be between 1 and {MAX_FETCH_LIMIT}")));
        }
        if config.fetch_limit != default_fetch_limit() && !config.fetch {
            return Err(ConfigError::new("fetch_limit", "only applies with fetch: true"));
        }
        Ok(())
    }

    async fn execute(&self, config: ExecuteConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        let text = match (&config.sql, &config.sql_file) {
            (Some(sql), _) => sql.clone(),
            (None, Some(file)) => tokio::fs::read_to_string(file).await.map_err(|e| {
                let cwd = std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default();
                TaskError::fatal(format!("cannot read sql_file {file}: {e} (relative paths start at the directory flowctl runs in, {cwd})"))
            })?,
            (None, None) => return Err(TaskError::fatal("give `sql` or `sql_file`")),
        };
        let connection = ctx.connections.sql(&config.connection).map_err(|e| TaskError::fatal(e.to_string()))?;
        let mut db = Db::connect(&connection, &ctx.cancel).await?;
        let statements = if config.split_statements {
            split::split(&text, db.dialect()).map_err(|e| TaskError::fatal(e.to_string()))?
        } else {
            vec![split::Statement { text: text.trim().to_string(), line: 1 }]
        };
        if statements.is_empty() {
            return Err(TaskError::fatal("the SQL holds no statement (only comments or whitespace)"));
        }
        ctx.log.line(&format!(
            "running {} statement{} on {}{}",
            statements.len(),
            if statements.len() == 1 { "" } else { "s" },
            db.connection().display_url(),
            if config.transaction { " in one transaction" } else { "" }
        ));
        let result = run_statements(&mut db, &statements, &config, &ctx).await;
        if result.is_err() && config.transaction {
            db.rollback().await;
            ctx.log.line("rolled back");
        }
        let outputs = result?;
        db.close().await;
        Ok(Outcome::Success { outputs })
    }
}

/// A connection name is required and must be a valid name.
pub(crate) fn check_connection(name: &str) -> Result<(), ConfigError> {
    if flowctl_engine::template::is_template(name) {
        return Ok(());
    }
    if !flowctl_engine::connections::valid_name(name) {
        return Err(ConfigError::new(
            "connection",
            format!("\"{name}\" is not a connection name (lower-case letters, digits and _, starting with a letter)"),
        ));
    }
    Ok(())
}

async fn run_statements(db: &mut Db, statements: &[split::Statement], config: &ExecuteConfig, ctx: &TaskContext) -> Result<Outputs, TaskError> {
    if config.transaction {
        db.run("BEGIN", 0, &ctx.cancel).await?;
    }
    let keep = if config.fetch { config.fetch_limit as usize } else { 0 };
    let mut per_statement = Vec::with_capacity(statements.len());
    let mut total = 0u64;
    let mut fetched: Option<(Vec<serde_json::Map<String, Value>>, u64)> = None;
    let count = statements.len();
    for (i, statement) in statements.iter().enumerate() {
        let started = std::time::Instant::now();
        let result = db.run(&statement.text, keep, &ctx.cancel).await.map_err(|e| {
            let which = if count == 1 { "the statement".to_string() } else { format!("statement {} of {count} (line {})", i + 1, statement.line) };
            TaskError { kind: e.kind, message: format!("{which} failed: {}: {}", e.message, short(&statement.text)) }
        })?;
        ctx.log.line(&format!(
            "statement {}/{count} (line {}): {} row{} affected{} in {:.3}s: {}",
            i + 1,
            statement.line,
            result.rows_affected,
            if result.rows_affected == 1 { "" } else { "s" },
            if result.returned_rows { format!(", {} returned", result.rows.len() as u64 + result.rows_dropped) } else { String::new() },
            started.elapsed().as_secs_f64(),
            short(&statement.text)
        ));
        total += result.rows_affected;
        per_statement.push(Value::from(result.rows_affected));
        if result.returned_rows {
            fetched = Some((result.rows, result.rows_dropped));
        }
    }
    if config.transaction {
        db.run("COMMIT", 0, &ctx.cancel).await.map_err(|e| TaskError { kind: e.kind, message: format!("COMMIT failed: {}", e.message) })?;
    }
    let mut outputs = Outputs::new();
    outputs.insert("rows_affected".into(), total.into());
    outputs.insert("statements".into(), (count as u64).into());
    outputs.insert("rows_affected_by_statement".into(), Value::Array(per_statement));
    if config.fetch {
        let (rows, dropped) = fetched.unwrap_or_default();
        if dropped > 0 {
            ctx.log.line(&format!("kept the first {} rows of {} (fetch_limit)", rows.len(), rows.len() as u64 + dropped));
        }
        outputs.insert("row_count".into(), (rows.len() as u64).into());
        outputs.insert("truncated".into(), (dropped > 0).into());
        outputs.insert("rows".into(), Value::Array(rows.into_iter().map(Value::Object).collect()));
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_engine::operator::Registry;
    use serde_json::json;

    fn validate(with: serde_json::Value) -> Result<(), ConfigError> {
        let mut registry = Registry::new();
        registry.register(SqlExecute);
        registry.get("sql.execute").unwrap().validate(&with)
    }

    #[test]
    fn compile_time_checks_name_the_field() {
        assert!(validate(json!({"connection": "rds", "sql": "select 1"})).is_ok());
        let e = validate(json!({"connection": "rds"})).unwrap_err();
        assert_eq!((e.path.as_str(), e.message.as_str()), ("", "give `sql` (the statements) or `sql_file` (a file holding them)"));
        let e = validate(json!({"connection": "rds", "sql": "x", "sql_file": "y"})).unwrap_err();
        assert_eq!(e.message, "give either `sql` or `sql_file`, not both");
        let e = validate(json!({"connection": "rds", "sql": "x", "fetch": true, "fetch_limit": 0})).unwrap_err();
        assert_eq!((e.path.as_str(), e.message.as_str()), ("fetch_limit", "must be between 1 and 100000"));
        let e = validate(json!({"connection": "rds", "sql": "x", "fetch_limit": 5})).unwrap_err();
        assert_eq!((e.path.as_str(), e.message.as_str()), ("fetch_limit", "only applies with fetch: true"));
        let e = validate(json!({"connection": "My DB", "sql": "x"})).unwrap_err();
        assert_eq!(e.path, "connection");
        let e = validate(json!({"sql": "x"})).unwrap_err();
        assert!(e.message.contains("missing field `connection`"), "{}", e.message);
        let e = validate(json!({"connection": "rds", "sql": "x", "fecth": true})).unwrap_err();
        assert_eq!(e.path, "fecth");
    }
}
