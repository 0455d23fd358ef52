//! `emr.create_cluster`: starts a cluster (RunJobFlow), records its id before waiting, and waits
//! until it is ready for steps (WAITING, or RUNNING when it started with steps).
//!
//! The cluster is a job of the AWS kit (`aws::job`). A cluster that ends instead
//! (TERMINATED_WITH_ERRORS after a bootstrap failure, say) fails the task with EMR's state change
//! reason. A retry or a restarted server that finds the recorded id polls that cluster and never
//! starts a second one. Cancelling the task (or its `timeout:`) terminates the cluster, and so
//! does a failed wait with `terminate_on_failure`; a flowctl that stops leaves it starting for its
//! next start.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, ExternalJob, LogSink, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde_json::Value;

use super::cluster::ClusterSpec;
use super::{describe_cluster, poll_interval, terminate, Emr, CLUSTER_JOB, MAX_POLL_BACKOFF};
use crate::aws::job::{self, CancelReason, Describe, Job, Progress, Watch};
use crate::aws::settings::{aws_connection, check_optional_duration};

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
        check_optional_duration("poll_interval", config.poll_interval.as_deref())
    }

    async fn execute(&self, config: CreateClusterConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        let conn = aws_connection(&ctx, &config.connection)?;
        let emr = Emr::connect(&conn).await?;
        run(&emr, config, &ctx).await
    }
}

/// Starts the cluster (or reattaches to the recorded one) and waits until it is ready: the
/// operator's work, with the EMR client given so tests can script its replies.
pub async fn run(emr: &Emr, config: CreateClusterConfig, ctx: &TaskContext) -> Result<Outcome, TaskError> {
    let interval = poll_interval(config.poll_interval.as_deref())?;
    let mut cluster = Cluster { emr, config: &config, id: String::new(), arn: None };
    let outputs = job::drive(&mut cluster, ctx, interval).await?;
    Ok(Outcome::Success { outputs })
}

/// The cluster a task starts and waits for.
struct Cluster<'a> {
    emr: &'a Emr,
    config: &'a CreateClusterConfig,
    id: String,
    arn: Option<String>,
}

#[async_trait]
impl Describe for Cluster<'_> {
    type Output = Outputs;
    const MAX_BACKOFF: Duration = MAX_POLL_BACKOFF;

    /// DescribeCluster: ready when WAITING or RUNNING (or, for a transient cluster, done with its
    /// steps); failed when it ends before.
    async fn describe(&mut self, watch: &mut Watch<'_>) -> Result<Progress<Outputs>, TaskError> {
        let cluster = &self.id;
        let view = describe_cluster(self.emr, cluster).await?;
        watch.state(&format!("cluster {cluster}"), &view.state);
        let up = match view.state.as_str() {
            "WAITING" | "RUNNING" => true,
            // A transient cluster that ran its steps between two polls did its work.
            _ if view.is_ending() && view.reason_code.as_deref() == Some("ALL_STEPS_COMPLETED") => {
                watch.line(&format!("cluster {cluster} ran all its steps and is ending: {}", view.describe()));
                true
            }
            _ if view.is_ending() => false,
            _ => return Ok(Progress::Running),
        };
        if !up {
            // EMR is terminating it already; a retry starts a new one.
            let message = format!("EMR cluster {cluster} did not start: {}", view.describe());
            // A request EMR rejects (an instance type it does not offer, a missing role) fails
            // the same way every time.
            let err = if view.reason_code.as_deref() == Some("VALIDATION_ERROR") { TaskError::fatal(message) } else { TaskError::retryable(message) };
            return Ok(Progress::Ended(Err(err)));
        }
        let mut outputs = Outputs::new();
        outputs.insert("cluster_id".into(), Value::String(cluster.clone()));
        outputs.insert("state".into(), Value::String(view.state.clone()));
        if let Some(dns) = view.master_public_dns {
            outputs.insert("master_public_dns".into(), Value::String(dns));
        }
        if let Some(arn) = view.arn {
            outputs.insert("cluster_arn".into(), Value::String(arn));
        }
        Ok(Progress::Ended(Ok(outputs)))
    }
}

#[async_trait]
impl Job for Cluster<'_> {
    const KIND: &'static str = CLUSTER_JOB;

    /// RunJobFlow.
    async fn submit(&mut self, ctx: &TaskContext) -> Result<Vec<String>, TaskError> {
        let config = self.config;
        let request = config.apply(self.emr.client.run_job_flow(), &ctx.task_id).map_err(TaskError::fatal)?;
        let reply = request.send().await.map_err(|e| self.emr.error(&e, &format!("EMR RunJobFlow for cluster \"{}\"", config.name)))?;
        let Some(id) = reply.job_flow_id().map(String::from) else {
            return Err(TaskError::retryable(format!("EMR RunJobFlow for cluster \"{}\" answered without the cluster's id", config.name)));
        };
        self.arn = reply.cluster_arn().map(String::from);
        self.id = id;
        Ok(vec![format!(
            "started EMR cluster {} (\"{}\", {}) and recorded its id; waiting until it is WAITING or RUNNING",
            self.id, config.name, config.release_label
        )])
    }

    fn record(&self) -> ExternalJob {
        let mut detail = BTreeMap::from([("name".to_string(), self.config.name.clone())]);
        if let Some(arn) = &self.arn {
            detail.insert("cluster_arn".into(), arn.clone());
        }
        ExternalJob { kind: CLUSTER_JOB.to_string(), id: self.id.clone(), detail }
    }

    fn reattach(&mut self, job: &ExternalJob, log: &dyn LogSink) -> bool {
        log.line(&format!("reattached to EMR cluster {}, started by an earlier attempt: polling it, not starting another", job.id));
        self.id = job.id.clone();
        true
    }

    /// TerminateJobFlows, saying why in the log.
    async fn cancel(&mut self, why: CancelReason, log: &dyn LogSink) -> Result<(), TaskError> {
        let why = match why {
            CancelReason::Cancelled => "the task was cancelled while the cluster started",
            CancelReason::Unrecorded => "its id cannot be recorded, and a retry would start another",
            CancelReason::WaitFailed => "terminate_on_failure, and the wait for it failed",
            CancelReason::Stopped => "flowctl stopped waiting for it",
        };
        let cluster = &self.id;
        log.line(&format!("terminating EMR cluster {cluster} ({why}): TerminateJobFlows"));
        terminate(self.emr, cluster).await?;
        log.line(&format!("EMR accepted the termination of cluster {cluster}"));
        Ok(())
    }

    fn name(&self) -> String {
        format!("EMR cluster {}", self.id)
    }

    fn by_hand(&self) -> String {
        format!("the cluster may still run: terminate it in the EMR console or with: aws emr terminate-clusters --cluster-ids {}", self.id)
    }

    fn cancel_if_wait_fails(&self) -> bool {
        self.config.terminate_on_failure
    }
}
