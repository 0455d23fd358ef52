//! `emr.add_steps`: adds steps to a running cluster (AddJobFlowSteps), records their ids before
//! waiting, and waits until every one of them has ended.
//!
//! The steps are one job of the AWS kit (`aws::job`), several ids in one record: a retry or a
//! restarted server that finds the recorded ids polls them and never calls AddJobFlowSteps again.
//! A step that ends FAILED, CANCELLED or INTERRUPTED fails the task with EMR's own reason
//! (FailureDetails: reason, message, log file). Cancelling the task (or its `timeout:`) sends
//! CancelSteps for the steps that have not ended; a flowctl that stops leaves them running for its
//! next start.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_emr::types::{StepCancellationOption, StepState};
use flowctl_engine::operator::{ConfigError, ExternalJob, LogSink, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde::Deserialize;
use serde_json::Value;

use super::steps::{build_steps, check_steps, BuiltStep, FailureAction, StepSpec};
use super::{check_cluster_id, poll_interval, trim_message, valid_cluster_id, Emr, MAX_POLL_BACKOFF, STEPS_JOB};
use crate::aws::job::{self, CancelReason, Describe, Job, Progress, Watch};
use crate::aws::settings::{aws_connection, aws_settings, check_optional_duration};

aws_settings! {
    /// The settings of an `emr.add_steps` task.
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct AddStepsConfig {
        /// The cluster to run the steps on, usually `"{{ tasks.<create task>.outputs.cluster_id }}"`.
        pub cluster_id: String,
        /// The steps, in the order EMR runs them (at most 256).
        pub steps: Vec<StepSpec>,
        /// What EMR does when a step fails, for steps that set none: CANCEL_AND_WAIT (cancel the
        /// steps after it, keep the cluster), CONTINUE or TERMINATE_CLUSTER [default: CANCEL_AND_WAIT].
        pub action_on_failure: Option<FailureAction>,
        /// How long to wait between two polls of the steps, e.g. `30s` or `2m` [default: 30s].
        pub poll_interval: Option<String>,
        connection,
    }
}

/// The action for steps that set none: a step's failure cancels the steps after it, which were
/// written to run after it, and keeps the cluster for other work.
pub const DEFAULT_ACTION: FailureAction = FailureAction::CancelAndWait;

/// The `emr.add_steps` operator.
pub struct AddSteps;

#[async_trait]
impl Operator for AddSteps {
    const NAME: &'static str = "emr.add_steps";
    type Config = AddStepsConfig;

    fn check(config: &AddStepsConfig) -> Result<(), ConfigError> {
        check_cluster_id("cluster_id", &config.cluster_id)?;
        check_steps("steps", &config.steps, true)?;
        check_optional_duration("poll_interval", config.poll_interval.as_deref())
    }

    async fn execute(&self, config: AddStepsConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        let conn = aws_connection(&ctx, &config.connection)?;
        let emr = Emr::connect(&conn).await?;
        run(&emr, config, &ctx).await
    }
}

/// One step being waited for.
#[derive(Debug)]
struct Tracked {
    id: String,
    name: Option<String>,
    /// The state it ended in, and what EMR said about it.
    end: Option<(StepState, String)>,
}

impl Tracked {
    fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("step \"{name}\" ({})", self.id),
            None => format!("step {}", self.id),
        }
    }
}

/// Adds the steps (or reattaches to the recorded ones) and waits for them: the operator's work,
/// with the EMR client given so tests can script its replies.
pub async fn run(emr: &Emr, config: AddStepsConfig, ctx: &TaskContext) -> Result<Outcome, TaskError> {
    let interval = poll_interval(config.poll_interval.as_deref())?;
    let mut steps = Steps { emr, config: &config, cluster: String::new(), steps: Vec::new(), added: 0 };
    let outputs = job::drive(&mut steps, ctx, interval).await?;
    Ok(Outcome::Success { outputs })
}

/// The steps of one task: added together, recorded together, waited for together.
struct Steps<'a> {
    emr: &'a Emr,
    config: &'a AddStepsConfig,
    cluster: String,
    steps: Vec<Tracked>,
    /// How many steps AddJobFlowSteps was asked to add (0 when reattached).
    added: usize,
}

impl Steps<'_> {
    /// The ids of the steps that have not ended.
    fn unfinished(&self) -> Vec<&str> {
        self.steps.iter().filter(|s| s.end.is_none()).map(|s| s.id.as_str()).collect()
    }
}

#[async_trait]
impl Describe for Steps<'_> {
    type Output = Outputs;
    const MAX_BACKOFF: Duration = MAX_POLL_BACKOFF;

    /// DescribeStep for every step that has not ended; a failed one ends the round as one failed
    /// poll. Once all have ended, the task's result: EMR's failure details, or the ids.
    async fn describe(&mut self, watch: &mut Watch<'_>) -> Result<Progress<Outputs>, TaskError> {
        if self.added != 0 && self.added != self.steps.len() {
            // Steps without an id cannot be waited for: take back those EMR added, so the retry
            // adds them all anew.
            return Ok(Progress::Stop(TaskError::retryable(format!(
                "EMR AddJobFlowSteps on cluster {} returned {} step ids for {} steps",
                self.cluster,
                self.steps.len(),
                self.added
            ))));
        }
        let (emr, cluster) = (self.emr, self.cluster.as_str());
        for step in self.steps.iter_mut().filter(|s| s.end.is_none()) {
            let reply = emr
                .client
                .describe_step()
                .cluster_id(cluster)
                .step_id(&step.id)
                .send()
                .await
                .map_err(|e| emr.error(&e, &format!("EMR DescribeStep {} on cluster {cluster}", step.id)))?;
            let Some(described) = reply.step() else { continue };
            if step.name.is_none() {
                step.name = described.name().map(String::from);
            }
            let status = described.status();
            let Some(state) = status.and_then(|s| s.state()).cloned() else { continue };
            watch.state(&step.label(), state.as_str());
            if matches!(state, StepState::Completed | StepState::Failed | StepState::Cancelled | StepState::Interrupted) {
                let mut detail = String::new();
                if let Some(failure) = status.and_then(|s| s.failure_details()) {
                    detail = describe_failure(failure.reason(), failure.message(), failure.log_file());
                } else if let Some(message) = status.and_then(|s| s.state_change_reason()).and_then(|r| r.message()).filter(|m| !m.trim().is_empty()) {
                    detail = trim_message(message).to_string();
                }
                if state != StepState::Completed && !detail.is_empty() {
                    watch.line(&format!("{}: {detail}", step.label()));
                }
                step.end = Some((state, detail));
            }
        }
        if !self.unfinished().is_empty() {
            return Ok(Progress::Running);
        }
        if let Some(message) = failure_message(cluster, &self.steps) {
            return Ok(Progress::Ended(Err(TaskError::retryable(message))));
        }
        let mut outputs = Outputs::new();
        outputs.insert("cluster_id".into(), Value::String(self.cluster.clone()));
        outputs.insert("step_ids".into(), Value::Array(self.steps.iter().map(|s| Value::String(s.id.clone())).collect()));
        Ok(Progress::Ended(Ok(outputs)))
    }
}

#[async_trait]
impl Job for Steps<'_> {
    const KIND: &'static str = STEPS_JOB;

    /// AddJobFlowSteps with every step.
    async fn submit(&mut self, ctx: &TaskContext) -> Result<Vec<String>, TaskError> {
        let cluster = self.config.cluster_id.trim().to_string();
        valid_cluster_id(&cluster).map_err(|e| TaskError::fatal(format!("cluster_id: {e}")))?;
        let built = build_steps(&self.config.steps, &ctx.task_id, self.config.action_on_failure.unwrap_or(DEFAULT_ACTION)).map_err(TaskError::fatal)?;
        let reply = self
            .emr
            .client
            .add_job_flow_steps()
            .job_flow_id(&cluster)
            .set_steps(Some(built.iter().map(BuiltStep::to_sdk).collect()))
            .send()
            .await
            .map_err(|e| self.emr.error(&e, &format!("EMR AddJobFlowSteps on cluster {cluster}")))?;
        let names = built.iter().map(|b| Some(b.name.clone())).chain(std::iter::repeat(None));
        self.steps = reply.step_ids().iter().zip(names).map(|(id, name)| Tracked { id: id.clone(), name, end: None }).collect();
        self.cluster = cluster;
        self.added = built.len();
        let count = self.steps.len();
        let mut lines = vec![format!("added {count} step{} to EMR cluster {} and recorded their ids:", if count == 1 { "" } else { "s" }, self.cluster)];
        for (step, b) in self.steps.iter().zip(&built) {
            lines.push(format!("  {}: {} {}", step.label(), b.jar, shell_line(&b.args)));
        }
        Ok(lines)
    }

    fn record(&self) -> ExternalJob {
        let ids = self.steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>().join(",");
        ExternalJob {
            kind: STEPS_JOB.to_string(),
            id: ids.clone(),
            detail: BTreeMap::from([("cluster_id".to_string(), self.cluster.clone()), ("step_ids".to_string(), ids)]),
        }
    }

    fn reattach(&mut self, job: &ExternalJob, log: &dyn LogSink) -> bool {
        let (Some(cluster), Some(ids)) = (job.detail.get("cluster_id"), job.detail.get("step_ids")) else {
            return false;
        };
        let ids: Vec<&str> = ids.split(',').filter(|s| !s.is_empty()).collect();
        if ids.is_empty() {
            return false;
        }
        log.line(&format!(
            "reattached to EMR step{} {} on cluster {cluster}, added by an earlier attempt: polling {}, not adding the steps again",
            if ids.len() == 1 { "" } else { "s" },
            ids.join(", "),
            if ids.len() == 1 { "it" } else { "them" }
        ));
        if *cluster != self.config.cluster_id {
            log.line(&format!("(the settings now name cluster {}; the recorded steps run on {cluster})", self.config.cluster_id));
        }
        self.cluster = cluster.clone();
        self.steps = ids.into_iter().map(|id| Tracked { id: id.to_string(), name: None, end: None }).collect();
        true
    }

    /// CancelSteps for the steps that have not ended, logging what EMR answered for each.
    async fn cancel(&mut self, _why: CancelReason, log: &dyn LogSink) -> Result<(), TaskError> {
        let ids: Vec<String> = self.unfinished().into_iter().map(String::from).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let cluster = &self.cluster;
        log.line(&format!("cancelling EMR step{} {} on cluster {cluster} (CancelSteps)", if ids.len() == 1 { "" } else { "s" }, ids.join(", ")));
        let reply = self
            .emr
            .client
            .cancel_steps()
            .cluster_id(cluster)
            .set_step_ids(Some(ids))
            .step_cancellation_option(StepCancellationOption::SendInterrupt)
            .send()
            .await
            .map_err(|e| self.emr.error(&e, &format!("EMR CancelSteps on cluster {cluster}")))?;
        for info in reply.cancel_steps_info_list() {
            let status = info.status().map(|s| s.as_str()).unwrap_or("?");
            let reason = info.reason().filter(|r| !r.trim().is_empty()).map(|r| format!(": {}", trim_message(r))).unwrap_or_default();
            log.line(&format!("CancelSteps: step {} {status}{reason}", info.step_id().unwrap_or("?")));
        }
        Ok(())
    }

    fn name(&self) -> String {
        let unfinished = self.unfinished();
        let ids = if unfinished.is_empty() { self.steps.iter().map(|s| s.id.as_str()).collect() } else { unfinished };
        format!("EMR step{} {} on cluster {}", if ids.len() == 1 { "" } else { "s" }, ids.join(", "), self.cluster)
    }

    fn by_hand(&self) -> String {
        format!(
            "the steps may still run: cancel them in the EMR console or with: aws emr cancel-steps --cluster-id {} --step-ids {}",
            self.cluster,
            self.unfinished().join(" ")
        )
    }
}

/// FailureDetails in one line: `reason: message; log file: s3://...`.
fn describe_failure(reason: Option<&str>, message: Option<&str>, log_file: Option<&str>) -> String {
    let parts: Vec<&str> = [reason, message].into_iter().flatten().map(trim_message).filter(|p| !p.is_empty()).collect();
    let mut text = if parts.is_empty() { "EMR gave no failure details".to_string() } else { parts.join(": ") };
    if let Some(log) = log_file.filter(|l| !l.trim().is_empty()) {
        text.push_str(&format!("; log file: {}", log.trim()));
    }
    text
}

/// The task's error when a step did not complete: the first failed step (or, with none, the
/// first cancelled or interrupted one) on the first line, the others below.
fn failure_message(cluster: &str, steps: &[Tracked]) -> Option<String> {
    let unfinished: Vec<&Tracked> = steps.iter().filter(|s| !matches!(s.end, Some((StepState::Completed, _)))).collect();
    if unfinished.is_empty() {
        return None;
    }
    let first = unfinished.iter().find(|s| matches!(s.end, Some((StepState::Failed, _)))).unwrap_or(&unfinished[0]);
    // `what happened` and `: details`.
    let describe = |s: &Tracked| {
        let (state, detail) = s.end.clone().unwrap_or((StepState::Pending, String::new()));
        let what = match state {
            StepState::Failed => "failed",
            StepState::Cancelled => "was cancelled",
            StepState::Interrupted => "was interrupted",
            _ => "did not complete",
        };
        (what, if detail.is_empty() { detail } else { format!(": {detail}") })
    };
    let (what, detail) = describe(first);
    let mut lines = vec![format!("EMR {} on cluster {cluster} {what}{detail}", first.label())];
    for s in unfinished.iter().filter(|s| s.id != first.id) {
        let (what, detail) = describe(s);
        lines.push(format!("{} {what}{detail}", s.label()));
    }
    Some(lines.join("\n"))
}

/// Arguments as a shell would read them back, for the log: quoted when they hold blanks or
/// quotes.
fn shell_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_=./:,@%+".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
