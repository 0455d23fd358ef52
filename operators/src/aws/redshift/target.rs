//! Where a Redshift statement runs, and the settings every Redshift task shares.
//!
//! The Data API addresses a provisioned cluster (`cluster_identifier`, with a database user it
//! gets temporary credentials for, or a Secrets Manager secret) or a Serverless workgroup
//! (`workgroup_name`, with the caller's IAM identity or a secret). [`redshift_settings!`] writes
//! these fields, and the connection, into each operator's `Config` (serde's `flatten` cannot be
//! combined with `deny_unknown_fields`), with a `target()` that hands them over as a [`Target`].

use std::time::Duration;

use flowctl_engine::connections::AwsConnection;
use flowctl_engine::operator::{ConfigError, TaskError};

/// The service name of the Data API's endpoint in a connection's `endpoints:`.
pub const SERVICE: &str = "redshift_data";
/// How often a statement is polled when `poll_interval` is not set.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// The most statements the Data API runs in one batch.
pub const MAX_BATCH: usize = 40;
/// The longest SQL text the Data API accepts, in bytes.
pub const MAX_SQL_BYTES: usize = 100_000;

/// Declares a Redshift operator's `Config`: the connection and the [`Target`] fields first, then
/// the operator's own fields (written as for `aws_settings!`), and a `target()` method. The doc
/// comments above the bare `database,` document the database field, whose meaning each operator
/// words its own way.
macro_rules! redshift_settings {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(#[$database:meta])+
            database,
            $($fields:tt)*
        }
    ) => {
        $crate::aws::settings::aws_settings! {
            $(#[$meta])*
            $vis struct $name {
                /// The AWS connection to call the Data API with [default: aws_default].
                connection,
                /// A provisioned cluster's identifier. Give this or `workgroup_name`.
                pub cluster_identifier: Option<String>,
                /// A Redshift Serverless workgroup's name. Give this or `cluster_identifier`.
                pub workgroup_name: Option<String>,
                $(#[$database])+
                pub database: String,
                /// Provisioned clusters: the database user to get temporary credentials for. Give this or
                /// `secret_arn`.
                pub db_user: Option<String>,
                /// The ARN (or name) of a Secrets Manager secret holding the database login.
                pub secret_arn: Option<String>,
                $($fields)*
            }
        }

        impl $name {
            /// Where the task's statements run.
            pub fn target(&self) -> $crate::aws::redshift::target::Target {
                $crate::aws::redshift::target::Target {
                    cluster_identifier: self.cluster_identifier.clone(),
                    workgroup_name: self.workgroup_name.clone(),
                    database: self.database.clone(),
                    db_user: self.db_user.clone(),
                    secret_arn: self.secret_arn.clone(),
                }
            }
        }
    };
}
pub(crate) use redshift_settings;

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

/// The poll interval of a task: its setting, or [`DEFAULT_POLL_INTERVAL`].
pub fn poll_interval(setting: Option<&str>) -> Result<Duration, TaskError> {
    crate::aws::settings::poll_interval(setting, DEFAULT_POLL_INTERVAL)
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
    fn the_poll_interval_defaults_to_five_seconds() {
        assert_eq!(poll_interval(None), Ok(DEFAULT_POLL_INTERVAL));
        assert_eq!(poll_interval(Some("2s")), Ok(Duration::from_secs(2)));
        assert_eq!(poll_interval(Some("0s")), Err(TaskError::fatal("poll_interval: must be longer than zero")));
    }
}
