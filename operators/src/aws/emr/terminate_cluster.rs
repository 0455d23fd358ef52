//! `emr.terminate_cluster`: terminates a cluster (TerminateJobFlows) and, unless told not to,
//! waits until it is TERMINATED.
//!
//! Terminating is idempotent at EMR, so a retry or a restart simply asks again; nothing is
//! recorded, and the wait is the AWS kit's poll loop alone (`aws::job::poll`). A cancelled wait
//! stops waiting: the termination, once asked for, goes on.

use std::time::Duration;

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde::Deserialize;
use serde_json::Value;

use super::{check_cluster_id, describe_cluster, poll_interval, terminate, valid_cluster_id, Emr, MAX_POLL_BACKOFF};
use crate::aws::job::{self, Describe, Progress, Stopped, Watch};
use crate::aws::settings::{aws_connection, aws_settings, check_optional_duration};

aws_settings! {
    /// The settings of an `emr.terminate_cluster` task.
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct TerminateClusterConfig {
        /// The cluster to terminate, usually `"{{ tasks.<create task>.outputs.cluster_id }}"`.
        pub cluster_id: String,
        /// Wait until the cluster is TERMINATED (or TERMINATED_WITH_ERRORS) [default: true].
        #[serde(default = "yes")]
        pub wait: bool,
        /// How long to wait between two polls of the cluster, e.g. `30s` [default: 30s].
        pub poll_interval: Option<String>,
        connection,
    }
}

fn yes() -> bool {
    true
}

/// The `emr.terminate_cluster` operator.
pub struct TerminateCluster;

#[async_trait]
impl Operator for TerminateCluster {
    const NAME: &'static str = "emr.terminate_cluster";
    type Config = TerminateClusterConfig;

    fn check(config: &TerminateClusterConfig) -> Result<(), ConfigError> {
        check_cluster_id("cluster_id", &config.cluster_id)?;
        check_optional_duration("poll_interval", config.poll_interval.as_deref())
    }

    async fn execute(&self, config: TerminateClusterConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        let conn = aws_connection(&ctx, &config.connection)?;
        let emr = Emr::connect(&conn).await?;
        run(&emr, config, &ctx).await
    }
}

/// Terminates the cluster and waits for it: the operator's work, with the EMR client given so
/// tests can script its replies.
pub async fn run(emr: &Emr, config: TerminateClusterConfig, ctx: &TaskContext) -> Result<Outcome, TaskError> {
    let interval = poll_interval(config.poll_interval.as_deref())?;
    let cluster = config.cluster_id.trim().to_string();
    valid_cluster_id(&cluster).map_err(|e| TaskError::fatal(format!("cluster_id: {e}")))?;
    terminate(emr, &cluster).await?;
    ctx.log.line(&format!("asked EMR to terminate cluster {cluster} (TerminateJobFlows)"));
    let mut outputs = Outputs::new();
    outputs.insert("cluster_id".into(), Value::String(cluster.clone()));
    if !config.wait {
        return Ok(Outcome::Success { outputs });
    }
    match job::poll(&mut Termination { emr, cluster: &cluster }, ctx, interval).await {
        Ok(ended) => {
            outputs.insert("state".into(), Value::String(ended?));
            Ok(Outcome::Success { outputs })
        }
        Err(Stopped::Interrupted) => {
            if !ctx.shutdown.is_cancelled() {
                ctx.log.line(&format!("stopped waiting; EMR goes on terminating cluster {cluster}"));
            }
            Err(TaskError::cancelled())
        }
        Err(Stopped::Failed(err) | Stopped::Stop(err)) => Err(err),
    }
}

/// A cluster being terminated, polled until it is.
struct Termination<'a> {
    emr: &'a Emr,
    cluster: &'a str,
}

#[async_trait]
impl Describe for Termination<'_> {
    /// The state it ended in.
    type Output = String;
    const MAX_BACKOFF: Duration = MAX_POLL_BACKOFF;

    async fn describe(&mut self, watch: &mut Watch<'_>) -> Result<Progress<String>, TaskError> {
        let cluster = self.cluster;
        let view = describe_cluster(self.emr, cluster).await?;
        watch.state(&format!("cluster {cluster}"), &view.state);
        if view.state != "TERMINATED" && view.state != "TERMINATED_WITH_ERRORS" {
            return Ok(Progress::Running);
        }
        if !view.reason.is_empty() || view.reason_code.is_some() {
            watch.line(&format!("cluster {cluster} ended: {}", view.describe()));
        }
        Ok(Progress::Ended(Ok(view.state)))
    }
}
