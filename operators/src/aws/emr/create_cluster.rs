//! `emr.create_cluster`: starts a cluster (RunJobFlow), records its id before waiting, and waits
//! until it is ready for steps (WAITING, or RUNNING when it started with steps).
//!
//! A cluster that ends instead (TERMINATED_WITH_ERRORS after a bootstrap failure, say) fails the
//! task with EMR's state change reason. A retry or a restarted server that finds the recorded id
//! polls that cluster and never starts a second one. Cancelling the task (or its `timeout:`)
//! terminates the cluster; a flowctl that stops leaves it starting for its next start.

use std::collections::BTreeMap;

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, ExternalJob, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde_json::Value;

use super::cluster::ClusterSpec;
use super::poll::{guard, sleep, Interrupted, States, Stop, Tolerance};
use super::{aws_connection, check_interval, describe_cluster, poll_interval, terminate_on_the_way_out, ClusterView, Emr, CLUSTER_JOB};

/// The settings of an `emr.create_cluster` task.
pub type CreateClusterConfig = ClusterSpec;

/// The `emr.create_cluster` operator.
pub struct CreateCluster;

#[async_trait]
impl Operator for CreateCluster {
    const NAME: &'static str = "emr.create_cluster";
    type Config = CreateClusterConfig;

    fn check(config: &CreateClusterConfig) -> Result<(), ConfigError> {
        config.check()?;
        if let Some(interval) = &config.poll_interval {
            check_interval("poll_interval", interval)?;
        }
        Ok(())
    }

    async fn execute(&self, config: CreateClusterConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        let conn = aws_connection(&ctx, &config.connection)?;
        let emr = Emr::connect(&conn).await?;
        run(&emr, config, &ctx).await
    }
}

/// How the wait for the cluster ended, when it was not interrupted.
enum Ready {
    /// WAITING or RUNNING (or done with its steps, for a transient cluster).
    Up(ClusterView),
    /// Terminating or terminated before it was ready.
    Ended(ClusterView),
}

/// Starts the cluster (or reattaches to the recorded one) and waits until it is ready: the
/// operator's work, with the EMR client given so tests can script its replies.
pub async fn run(emr: &Emr, config: CreateClusterConfig, ctx: &TaskContext) -> Result<Outcome, TaskError> {
    let interval = poll_interval(config.poll_interval.as_deref())?;
    let cluster = match ctx.external_job.as_ref().filter(|job| job.kind == CLUSTER_JOB) {
        Some(job) => {
            ctx.log.line(&format!(
                "reattached to EMR cluster {}, started by an earlier attempt: polling it, not starting another",
                job.id
            ));
            job.id.clone()
        }
        None => start(emr, &config, ctx).await?,
    };
    match wait(emr, &cluster, interval, ctx).await {
        Ok(Ready::Up(view)) => {
            ctx.external_jobs.clear().await?;
            let mut outputs = Outputs::new();
            outputs.insert("cluster_id".into(), Value::String(cluster));
            outputs.insert("state".into(), Value::String(view.state.clone()));
            if let Some(dns) = view.master_public_dns {
                outputs.insert("master_public_dns".into(), Value::String(dns));
            }
            if let Some(arn) = view.arn {
                outputs.insert("cluster_arn".into(), Value::String(arn));
            }
            Ok(Outcome::Success { outputs })
        }
        Ok(Ready::Ended(view)) => {
            // EMR is terminating it already; a retry starts a new one.
            ctx.external_jobs.clear().await?;
            let message = format!("EMR cluster {cluster} did not start: {}", view.describe());
            // A request EMR rejects (an instance type it does not offer, a missing role) fails
            // the same way every time.
            if view.reason_code.as_deref() == Some("VALIDATION_ERROR") {
                Err(TaskError::fatal(message))
            } else {
                Err(TaskError::retryable(message))
            }
        }
        Err(Stop::Interrupted(Interrupted::Shutdown)) => {
            ctx.log.line(&format!("flowctl is stopping: leaving EMR cluster {cluster} starting; the next start reattaches"));
            Err(TaskError::cancelled())
        }
        Err(Stop::Interrupted(Interrupted::Cancelled)) => {
            terminate_on_the_way_out(emr, &cluster, "the task was cancelled while the cluster started", ctx).await;
            ctx.external_jobs.clear().await?;
            Err(TaskError::cancelled())
        }
        Err(Stop::Error(e)) => {
            if config.terminate_on_failure {
                terminate_on_the_way_out(emr, &cluster, "terminate_on_failure, and the wait for it failed", ctx).await;
                ctx.external_jobs.clear().await?;
            }
            Err(e)
        }
    }
}

/// RunJobFlow, then the record of the cluster's id.
async fn start(emr: &Emr, config: &CreateClusterConfig, ctx: &TaskContext) -> Result<String, TaskError> {
    let request = config.apply(emr.client.run_job_flow(), &ctx.task_id).map_err(TaskError::fatal)?;
    let reply = request.send().await.map_err(|e| emr.error(&e, &format!("EMR RunJobFlow for cluster \"{}\"", config.name)))?;
    let Some(cluster) = reply.job_flow_id().map(String::from) else {
        return Err(TaskError::retryable(format!("EMR RunJobFlow for cluster \"{}\" answered without the cluster's id", config.name)));
    };
    let mut detail = BTreeMap::from([("name".to_string(), config.name.clone())]);
    if let Some(arn) = reply.cluster_arn() {
        detail.insert("cluster_arn".into(), arn.to_string());
    }
    if let Err(e) = ctx.external_jobs.record(ExternalJob { kind: CLUSTER_JOB.to_string(), id: cluster.clone(), detail }).await {
        // A retry would start a second cluster beside this unrecorded one.
        terminate_on_the_way_out(emr, &cluster, "its id cannot be recorded, and a retry would start another", ctx).await;
        return Err(e);
    }
    ctx.log.line(&format!(
        "started EMR cluster {cluster} (\"{}\", {}) and recorded its id; waiting until it is WAITING or RUNNING",
        config.name, config.release_label
    ));
    Ok(cluster)
}

/// Polls DescribeCluster until the cluster is ready or ending.
async fn wait(emr: &Emr, cluster: &str, interval: std::time::Duration, ctx: &TaskContext) -> Result<Ready, Stop> {
    let mut states = States::default();
    let mut tolerance = Tolerance::new(interval);
    loop {
        let delay = match guard(ctx, describe_cluster(emr, cluster)).await? {
            Ok(view) => {
                tolerance.succeeded();
                if let Some(change) = states.note(cluster, &view.state) {
                    ctx.log.line(&format!("cluster {cluster}: {change}"));
                }
                match view.state.as_str() {
                    "WAITING" | "RUNNING" => return Ok(Ready::Up(view)),
                    // A transient cluster that ran its steps between two polls did its work.
                    _ if view.is_ending() && view.reason_code.as_deref() == Some("ALL_STEPS_COMPLETED") => {
                        ctx.log.line(&format!("cluster {cluster} ran all its steps and is ending: {}", view.describe()));
                        return Ok(Ready::Up(view));
                    }
                    _ if view.is_ending() => return Ok(Ready::Ended(view)),
                    _ => interval,
                }
            }
            Err(e) => tolerance.failed(e, ctx.log.as_ref()).map_err(Stop::Error)?,
        };
        sleep(ctx, delay).await?;
    }
}
