//! EMR operators (`emr.create_cluster`, `emr.add_steps`, `emr.terminate_cluster`): clusters and
//! steps that a task submits, waits for, reports on and reattaches to.
//!
//! EMR work runs for minutes to hours outside flowctl, so the steps of `emr.add_steps` and the
//! cluster of `emr.create_cluster` are jobs of the AWS kit (`aws::job`): the kit records their ids
//! before waiting, reattaches to them after a retry or a restart, polls them, cancels them at EMR
//! when the task is cancelled (CancelSteps, TerminateJobFlows) and leaves them running when
//! flowctl stops. `emr.terminate_cluster` records nothing (a termination is idempotent) and waits
//! with the kit's poll loop.
//!
//! - `steps.rs`: the step types (`hive`, `spark`, `sqoop`, `jar`) and the `command-runner.jar`
//!   arguments each one builds, checked at compile time;
//! - `cluster.rs`: the RunJobFlow request as YAML, mapped onto the SDK's builders;
//! - one file per operator.

pub mod steps;
pub mod cluster;
pub mod create_cluster;
pub mod add_steps;
pub mod terminate_cluster;
#[cfg(test)]
mod tests;

use std::time::Duration;

use aws_sdk_emr::error::SdkError;
use aws_sdk_emr::config::http::HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use flowctl_engine::connections::AwsConnection;
use flowctl_engine::operator::{ConfigError, TaskError};
use flowctl_engine::template::is_template;
use flowctl_engine::Registry;

/// Adds the EMR operators.
pub fn register(registry: &mut Registry) {
    registry
        .register_aws_service("emr")
        .register(create_cluster::CreateCluster)
        .register(add_steps::AddSteps)
        .register(terminate_cluster::TerminateCluster);
}

/// The external-job kind `emr.add_steps` records: the step ids, with the cluster in the detail.
pub const STEPS_JOB: &str = "emr_steps";
/// The external-job kind `emr.create_cluster` records: the cluster id.
pub const CLUSTER_JOB: &str = "emr_cluster";

/// The time between two polls when `poll_interval` is not set: EMR clusters take minutes to
/// start and steps minutes to hours, and DescribeStep/DescribeCluster are throttled per account.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// The longest wait between two polls after failed ones: DescribeStep and DescribeCluster are
/// throttled per account, and a cluster takes minutes anyway.
pub const MAX_POLL_BACKOFF: Duration = Duration::from_secs(300);

/// An EMR client and the connection it came from (for error messages).
#[derive(Clone, Debug)]
pub struct Emr {
    /// The SDK client.
    pub client: aws_sdk_emr::Client,
    /// The connection, named in errors.
    pub conn: AwsConnection,
}

impl Emr {
    /// A client for the connection's EMR endpoint.
    pub async fn connect(conn: &AwsConnection) -> Result<Emr, TaskError> {
        let config = super::sdk_config(conn, "emr").await?;
        Ok(Emr { client: aws_sdk_emr::Client::new(&config), conn: conn.clone() })
    }

    /// A client the caller built (tests inject a scripted one).
    pub fn with_client(client: aws_sdk_emr::Client, conn: AwsConnection) -> Emr {
        Emr { client, conn }
    }

    /// Turns an SDK error about `what` into a task error naming the EMR endpoint.
    pub fn error<E>(&self, err: &SdkError<E, HttpResponse>, what: &str) -> TaskError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        super::describe_service_error(err, what, &self.conn, Some("emr"))
    }
}

/// The poll interval of a task: its setting, or [`DEFAULT_POLL_INTERVAL`].
pub fn poll_interval(setting: Option<&str>) -> Result<Duration, TaskError> {
    crate::aws::settings::poll_interval(setting, DEFAULT_POLL_INTERVAL)
}

/// Checks a cluster id setting: `j-` and letters and digits, unless it is a template.
pub fn check_cluster_id(path: &str, text: &str) -> Result<(), ConfigError> {
    if is_template(text) {
        return Ok(());
    }
    valid_cluster_id(text).map_err(|e| ConfigError::new(path, e))
}

/// Whether `text` looks like an EMR cluster id (`j-` followed by letters and digits).
pub fn valid_cluster_id(text: &str) -> Result<(), String> {
    let rest = text.strip_prefix("j-").unwrap_or("");
    if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "\"{text}\" is not an EMR cluster id (j- followed by letters and digits, e.g. j-2AXXXXXXGAPLF); pass an upstream emr.create_cluster's id with \"{{{{ tasks.<id>.outputs.cluster_id }}}}\""
        ));
    }
    Ok(())
}

/// Trims the trailing period EMR puts on some messages, so they can be joined into one line.
fn trim_message(text: &str) -> &str {
    text.trim().trim_end_matches('.')
}

/// What DescribeCluster says about a cluster, in the terms the operators use.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// STARTING, BOOTSTRAPPING, RUNNING, WAITING, TERMINATING, TERMINATED or
    /// TERMINATED_WITH_ERRORS.
    pub state: String,
    /// The state change reason's code, e.g. BOOTSTRAP_FAILURE or ALL_STEPS_COMPLETED.
    pub reason_code: Option<String>,
    /// The state change reason's message, and the error details EMR adds, in one line.
    pub reason: String,
    /// The primary node's public DNS name, once it has one.
    pub master_public_dns: Option<String>,
    /// The cluster's ARN.
    pub arn: Option<String>,
}

impl ClusterView {
    /// Whether the cluster is terminating or terminated.
    pub fn is_ending(&self) -> bool {
        self.state.starts_with("TERMINAT")
    }

    /// The state with its reason: `TERMINATED_WITH_ERRORS (BOOTSTRAP_FAILURE: ...)`.
    pub fn describe(&self) -> String {
        match (&self.reason_code, self.reason.is_empty()) {
            (Some(code), false) => format!("{} ({code}: {})", self.state, self.reason),
            (Some(code), true) => format!("{} ({code})", self.state),
            (None, false) => format!("{} ({})", self.state, self.reason),
            (None, true) => self.state.clone(),
        }
    }
}

/// DescribeCluster.
pub async fn describe_cluster(emr: &Emr, cluster: &str) -> Result<ClusterView, TaskError> {
    let reply = emr
        .client
        .describe_cluster()
        .cluster_id(cluster)
        .send()
        .await
        .map_err(|e| emr.error(&e, &format!("EMR DescribeCluster {cluster}")))?;
    let Some(c) = reply.cluster() else {
        return Err(TaskError::retryable(format!("EMR DescribeCluster {cluster} answered without the cluster")));
    };
    let status = c.status();
    let reason = status.and_then(|s| s.state_change_reason());
    let mut parts: Vec<String> = reason.and_then(|r| r.message()).map(trim_message).filter(|m| !m.is_empty()).map(String::from).into_iter().collect();
    for detail in status.map(|s| s.error_details()).unwrap_or_default() {
        let text = [detail.error_code(), detail.error_message()].into_iter().flatten().map(trim_message).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(": ");
        if !text.is_empty() && !parts.contains(&text) {
            parts.push(text);
        }
    }
    Ok(ClusterView {
        state: status.and_then(|s| s.state()).map(|s| s.as_str().to_string()).unwrap_or_else(|| "UNKNOWN".into()),
        reason_code: reason.and_then(|r| r.code()).map(|c| c.as_str().to_string()),
        reason: parts.join("; "),
        master_public_dns: c.master_public_dns_name().filter(|d| !d.is_empty()).map(String::from),
        arn: c.cluster_arn().map(String::from),
    })
}

/// TerminateJobFlows for one cluster.
pub async fn terminate(emr: &Emr, cluster: &str) -> Result<(), TaskError> {
    emr.client
        .terminate_job_flows()
        .job_flow_ids(cluster)
        .send()
        .await
        .map(drop)
        .map_err(|e| emr.error(&e, &format!("EMR TerminateJobFlows for cluster {cluster}")))
}
