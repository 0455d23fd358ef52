//! `emr.terminate_cluster`: terminates a cluster (TerminateJobFlows) and, unless told not to,
//! waits until it is TERMINATED.
//!
//! Terminating is idempotent at EMR, so a retry or a restart simply asks again; nothing is
//! recorded. A cancelled wait stops waiting: the termination, once asked for, goes on.

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde::Deserialize;
use serde_json::Value;

use super::poll::{guard, sleep, Interrupted, States, Tolerance};
use super::{aws_connection, check_cluster_id, check_interval, default_connection, describe_cluster, poll_interval, terminate, valid_cluster_id, Emr};

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
    /// The AWS connection [default: aws_default].
    #[serde(default = "default_connection")]
    pub connection: String,
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
        if let Some(interval) = &config.poll_interval {
            check_interval("poll_interval", interval)?;
        }
        Ok(())
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
    let mut states = States::default();
    let mut tolerance = Tolerance::new(interval);
    let stopped = |i: Interrupted| {
        if i == Interrupted::Cancelled {
            ctx.log.line(&format!("stopped waiting; EMR goes on terminating cluster {cluster}"));
        }
        TaskError::cancelled()
    };
    loop {
        let delay = match guard(ctx, describe_cluster(emr, &cluster)).await.map_err(stopped)? {
            Ok(view) => {
                tolerance.succeeded();
                if let Some(change) = states.note(&cluster, &view.state) {
                    ctx.log.line(&format!("cluster {cluster}: {change}"));
                }
                if view.state == "TERMINATED" || view.state == "TERMINATED_WITH_ERRORS" {
                    if !view.reason.is_empty() || view.reason_code.is_some() {
                        ctx.log.line(&format!("cluster {cluster} ended: {}", view.describe()));
                    }
                    outputs.insert("state".into(), Value::String(view.state));
                    return Ok(Outcome::Success { outputs });
                }
                interval
            }
            Err(e) => tolerance.failed(e, ctx.log.as_ref())?,
        };
        sleep(ctx, delay).await.map_err(stopped)?;
    }
}
