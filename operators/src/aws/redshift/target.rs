//! Where a Redshift statement runs, and the settings every Redshift task shares.
//!
//! The Data API addresses a provisioned cluster (`cluster_identifier`, with a database user it
//! gets temporary credentials for, or a Secrets Manager secret) or a Serverless workgroup
//! (`workgroup_name`, with the caller's IAM identity or a secret). The operators' `Config`s repeat
//! these fields (serde's `flatten` cannot be combined with `deny_unknown_fields`) and hand them
//! over as a [`Target`].

use std::time::Duration;

use flowctl_engine::connections::{AwsConnection, AWS_DEFAULT};
use flowctl_engine::operator::{ConfigError, TaskContext, TaskError};
use flowctl_engine::template::is_template;

/// The service name of the Data API's endpoint in a connection's `endpoints:`.
pub const SERVICE: &str = "redshift_data";
/// How often a statement is polled when `poll_interval` is not set.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// The most statements the Data API runs in one batch.
pub const MAX_BATCH: usize = 40;
/// The longest SQL text the Data API accepts, in bytes.
pub const MAX_SQL_BYTES: usize = 100_000;

/// The connection AWS operators use when `connection:` is not set.
pub fn default_connection() -> String {
    AWS_DEFAULT.to_string()
}

/// Where the statements of a task run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A provisioned cluster's identifier.
    pub cluster_identifier: Option<String>,
    /// A Serverless workgroup's name.
    pub workgroup_name: Option<String>,
    /// The database.
    pub database: String,
    /// The database user (provisioned clusters, temporary credentials).
    pub db_user: Option<String>,
    /// The ARN or name of a Secrets Manager secret holding the database login.
    pub secret_arn: Option<String>,
}

impl Target {
    /// The cross-field rules: a cluster or a workgroup, and how to log in to it.
    pub fn check(&self) -> Result<(), ConfigError> {
        let blank = |v: &Option<String>| v.as_deref().is_some_and(|s| s.trim().is_empty());
        for (field, value) in [
            ("cluster_identifier", &self.cluster_identifier),
            ("workgroup_name", &self.workgroup_name),
            ("db_user", &self.db_user),
            ("secret_arn", &self.secret_arn),
        ] {
            if blank(value) {
                return Err(ConfigError::new(field, "must not be empty"));
            }
        }
        if self.database.trim().is_empty() {
            return Err(ConfigError::new("database", "must not be empty"));
        }
        match (&self.cluster_identifier, &self.workgroup_name) {
            (Some(_), Some(_)) => Err(ConfigError::new(
                "",
                "give either `cluster_identifier` (a provisioned cluster) or `workgroup_name` (Redshift Serverless), not both",
            )),
            (None, None) => Err(ConfigError::new(
                "",
                "give `cluster_identifier` (a provisioned cluster) or `workgroup_name` (Redshift Serverless)",
            )),
            (Some(_), None) => match (&self.db_user, &self.secret_arn) {
                (Some(_), Some(_)) => Err(ConfigError::new(
                    "",
                    "give either `db_user` (temporary credentials) or `secret_arn` (a Secrets Manager secret), not both",
                )),
                (None, None) => Err(ConfigError::new(
                    "",
                    "a provisioned cluster needs `db_user` (temporary credentials for that user) or `secret_arn` (a Secrets Manager secret with the login)",
                )),
                _ => Ok(()),
            },
            (None, Some(_)) if self.db_user.is_some() => Err(ConfigError::new(
                "db_user",
                "Redshift Serverless takes no `db_user`: it logs in as the connection's IAM identity, or with `secret_arn`",
            )),
            (None, Some(_)) => Ok(()),
        }
    }

    /// The target in words, for logs and errors: `cluster c1, database dev`.
    pub fn describe(&self) -> String {
        match (&self.cluster_identifier, &self.workgroup_name) {
            (Some(cluster), _) => format!("cluster {cluster}, database {}", self.database),
            (None, Some(workgroup)) => format!("workgroup {workgroup}, database {}", self.database),
            (None, None) => format!("database {}", self.database),
        }
    }
}

/// Checks a `poll_interval` at compile time (unless it is a template).
pub fn check_poll_interval(value: Option<&str>) -> Result<(), ConfigError> {
    match value {
        Some(text) if !is_template(text) => parse_duration("poll_interval", text).map(drop).map_err(|e| ConfigError::new("poll_interval", e)),
        _ => Ok(()),
    }
}

/// The poll interval of a task.
pub fn poll_interval(value: Option<&str>) -> Result<Duration, TaskError> {
    match value {
        Some(text) => parse_duration("poll_interval", text).map_err(TaskError::fatal),
        None => Ok(DEFAULT_POLL_INTERVAL),
    }
}

/// Parses a duration (`5s`, `1m`), which must be above zero.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration \"{text}\" for {field}: {e}; write e.g. 5s, 1m or 1h"))?;
    if parsed.is_zero() {
        return Err(format!("{field} must be longer than zero"));
    }
    Ok(parsed)
}

/// Checks one SQL text: not empty, within the Data API's size limit.
pub fn check_sql(path: &str, sql: &str) -> Result<(), ConfigError> {
    if sql.trim().is_empty() {
        return Err(ConfigError::new(path, "the SQL is empty"));
    }
    if sql.len() > MAX_SQL_BYTES {
        return Err(ConfigError::new(
            path,
            format!("the SQL is {} bytes, more than the 100,000 the Data API accepts; load it from a table or split it", sql.len()),
        ));
    }
    Ok(())
}

/// Checks an `s3://bucket/...` URL setting (unless it is a template).
pub fn check_s3_url(path: &str, url: &str) -> Result<(), ConfigError> {
    if is_template(url) {
        return Ok(());
    }
    match url.strip_prefix("s3://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(ConfigError::new(path, format!("\"{url}\" is not an S3 URL; write s3://bucket/prefix"))),
    }
}

/// The AWS connection a task names, or an error saying how to define it.
pub fn aws_connection(ctx: &TaskContext, name: &str) -> Result<AwsConnection, TaskError> {
    ctx.connections.aws(name).map_err(|e| TaskError::fatal(e.0))
}

/// A Data API client for a connection.
pub async fn client(conn: &AwsConnection) -> Result<aws_sdk_redshiftdata::Client, TaskError> {
    let config = crate::aws::sdk_config(conn, SERVICE).await?;
    Ok(aws_sdk_redshiftdata::Client::new(&config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Target {
        Target {
            cluster_identifier: Some("c1".into()),
            workgroup_name: None,
            database: "dev".into(),
            db_user: Some("etl".into()),
            secret_arn: None,
        }
    }

    #[test]
    fn a_target_is_a_cluster_with_a_login_or_a_workgroup() {
        assert_eq!(cluster().check(), Ok(()));
        assert_eq!(cluster().describe(), "cluster c1, database dev");
        let both = Target { workgroup_name: Some("wg".into()), ..cluster() };
        assert!(both.check().unwrap_err().message.starts_with("give either `cluster_identifier`"));
        let neither = Target { cluster_identifier: None, ..cluster() };
        assert!(neither.check().unwrap_err().message.starts_with("give `cluster_identifier`"));
        let no_login = Target { db_user: None, ..cluster() };
        assert!(no_login.check().unwrap_err().message.starts_with("a provisioned cluster needs `db_user`"));
        let two_logins = Target { secret_arn: Some("arn:s".into()), ..cluster() };
        assert!(two_logins.check().unwrap_err().message.starts_with("give either `db_user`"));
        let serverless = Target { cluster_identifier: None, workgroup_name: Some("wg".into()), db_user: None, ..cluster() };
        assert_eq!(serverless.check(), Ok(()));
        assert_eq!(serverless.describe(), "workgroup wg, database dev");
        let serverless_user = Target { db_user: Some("etl".into()), ..serverless };
        assert_eq!(serverless_user.check().unwrap_err().path, "db_user");
    }

    #[test]
    fn durations_and_urls_are_checked() {
        assert_eq!(parse_duration("poll_interval", "2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("poll_interval", "0s").unwrap_err(), "poll_interval must be longer than zero");
        assert!(check_poll_interval(Some("soon")).is_err());
        assert!(check_poll_interval(Some("{{ params.poll }}")).is_ok());
        assert!(check_s3_url("from", "s3://b/k").is_ok());
        assert!(check_s3_url("from", "s3://{{ params.bucket }}/k").is_ok());
        assert_eq!(check_s3_url("from", "b/k").unwrap_err().message, "\"b/k\" is not an S3 URL; write s3://bucket/prefix");
    }
}
