//! `emr.add_steps`: adds steps to a running cluster (AddJobFlowSteps), records their ids before
//! waiting, and waits until every one of them has ended.
//!
//! A retry or a restarted server that finds the recorded ids polls them and never calls
//! AddJobFlowSteps again. A step that ends FAILED, CANCELLED or INTERRUPTED fails the task with
//! EMR's own reason (FailureDetails: reason, message, log file). Cancelling the task (or its
//! `timeout:`) sends CancelSteps for the steps that have not ended; a flowctl that stops leaves
//! them running for its next start.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_emr::types::{StepCancellationOption, StepState};
use flowctl_engine::operator::{ConfigError, ExternalJob, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde::Deserialize;
use serde_json::Value;

use super::poll::{guard, sleep, Interrupted, States, Stop, Tolerance};
use super::steps::{build_steps, check_steps, BuiltStep, FailureAction, StepSpec};
use super::{aws_connection, check_cluster_id, check_interval, default_connection, poll_interval, trim_message, valid_cluster_id, Emr, CANCEL_DEADLINE, STEPS_JOB};

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
    /// The AWS connection [default: aws_default].
    #[serde(default = "default_connection")]
    pub connection: String,
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
        if let Some(interval) = &config.poll_interval {
            check_interval("poll_interval", interval)?;
        }
        Ok(())
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
    let recorded = ctx.external_job.as_ref().filter(|job| job.kind == STEPS_JOB).and_then(|job| {
        let cluster = job.detail.get("cluster_id")?.clone();
        let ids: Vec<String> = job.detail.get("step_ids")?.split(',').filter(|s| !s.is_empty()).map(String::from).collect();
        (!ids.is_empty()).then_some((cluster, ids))
    });
    let (cluster, mut steps) = match recorded {
        Some((cluster, ids)) => {
            ctx.log.line(&format!(
                "reattached to EMR step{} {} on cluster {cluster}, added by an earlier attempt: polling {}, not adding the steps again",
                if ids.len() == 1 { "" } else { "s" },
                ids.join(", "),
                if ids.len() == 1 { "it" } else { "them" }
            ));
            if cluster != config.cluster_id {
                ctx.log.line(&format!("(the settings now name cluster {}; the recorded steps run on {cluster})", config.cluster_id));
            }
            (cluster, ids.into_iter().map(|id| Tracked { id, name: None, end: None }).collect::<Vec<_>>())
        }
        None => {
            if let Some(job) = &ctx.external_job {
                ctx.log.line(&format!("the recorded external job is a {} ({}), not EMR steps: adding the steps anew", job.kind, job.id));
            }
            submit(emr, &config, ctx).await?
        }
    };
    match wait(emr, &cluster, &mut steps, interval, ctx).await {
        Ok(()) => {}
        Err(Stop::Error(e)) => return Err(e),
        Err(Stop::Interrupted(Interrupted::Shutdown)) => {
            let running: Vec<&str> = steps.iter().filter(|s| s.end.is_none()).map(|s| s.id.as_str()).collect();
            ctx.log.line(&format!(
                "flowctl is stopping: leaving {} running on cluster {cluster}; the next start reattaches",
                running.join(", ")
            ));
            return Err(TaskError::cancelled());
        }
        Err(Stop::Interrupted(Interrupted::Cancelled)) => {
            let running: Vec<String> = steps.iter().filter(|s| s.end.is_none()).map(|s| s.id.clone()).collect();
            cancel_steps(emr, &cluster, &running, ctx).await;
            ctx.external_jobs.clear().await?;
            return Err(TaskError::cancelled());
        }
    }
    // Every step has ended: a retry must add them anew rather than reattach.
    ctx.external_jobs.clear().await?;
    if let Some(message) = failure_message(&cluster, &steps) {
        return Err(TaskError::retryable(message));
    }
    let mut outputs = Outputs::new();
    outputs.insert("cluster_id".into(), Value::String(cluster));
    outputs.insert("step_ids".into(), Value::Array(steps.iter().map(|s| Value::String(s.id.clone())).collect()));
    Ok(Outcome::Success { outputs })
}

/// Adds the steps and records their ids before anything else.
async fn submit(emr: &Emr, config: &AddStepsConfig, ctx: &TaskContext) -> Result<(String, Vec<Tracked>), TaskError> {
    let cluster = config.cluster_id.trim().to_string();
    valid_cluster_id(&cluster).map_err(|e| TaskError::fatal(format!("cluster_id: {e}")))?;
    let built = build_steps(&config.steps, &ctx.task_id, config.action_on_failure.unwrap_or(DEFAULT_ACTION)).map_err(TaskError::fatal)?;
    let reply = emr
        .client
        .add_job_flow_steps()
        .job_flow_id(&cluster)
        .set_steps(Some(built.iter().map(BuiltStep::to_sdk).collect()))
        .send()
        .await
        .map_err(|e| emr.error(&e, &format!("EMR AddJobFlowSteps on cluster {cluster}")))?;
    let ids: Vec<String> = reply.step_ids().to_vec();
    let steps: Vec<Tracked> =
        ids.iter().zip(built.iter().map(|b| Some(b.name.clone())).chain(std::iter::repeat(None))).map(|(id, name)| Tracked { id: id.clone(), name, end: None }).collect();
    let job = ExternalJob {
        kind: STEPS_JOB.to_string(),
        id: ids.join(","),
        detail: BTreeMap::from([("cluster_id".to_string(), cluster.clone()), ("step_ids".to_string(), ids.join(","))]),
    };
    if let Err(e) = ctx.external_jobs.record(job).await {
        // Unrecorded steps would be added a second time by the retry: take them back.
        ctx.log.line(&format!("cannot record the step ids ({}): cancelling the steps so a retry does not run them twice", e.message));
        cancel_steps(emr, &cluster, &ids, ctx).await;
        return Err(e);
    }
    ctx.log.line(&format!("added {} step{} to EMR cluster {cluster} and recorded their ids:", ids.len(), if ids.len() == 1 { "" } else { "s" }));
    for (step, b) in steps.iter().zip(&built) {
        ctx.log.line(&format!("  {}: {} {}", step.label(), b.jar, shell_line(&b.args)));
    }
    if ids.len() != built.len() {
        return Err(TaskError::retryable(format!(
            "EMR AddJobFlowSteps on cluster {cluster} returned {} step ids for {} steps",
            ids.len(),
            built.len()
        )));
    }
    Ok((cluster, steps))
}

/// Polls every step that has not ended (DescribeStep) until all have.
async fn wait(emr: &Emr, cluster: &str, steps: &mut [Tracked], interval: Duration, ctx: &TaskContext) -> Result<(), Stop> {
    let mut states = States::default();
    let mut tolerance = Tolerance::new(interval);
    loop {
        let mut delay = interval;
        for step in steps.iter_mut().filter(|s| s.end.is_none()) {
            let request = emr.client.describe_step().cluster_id(cluster).step_id(&step.id).send();
            let reply = match guard(ctx, request).await? {
                Ok(reply) => reply,
                Err(e) => {
                    let err = emr.error(&e, &format!("EMR DescribeStep {} on cluster {cluster}", step.id));
                    delay = tolerance.failed(err, ctx.log.as_ref()).map_err(Stop::Error)?;
                    break;
                }
            };
            tolerance.succeeded();
            let Some(described) = reply.step() else { continue };
            if step.name.is_none() {
                step.name = described.name().map(String::from);
            }
            let status = described.status();
            let Some(state) = status.and_then(|s| s.state()).cloned() else { continue };
            if let Some(change) = states.note(&step.id, state.as_str()) {
                ctx.log.line(&format!("{}: {change}", step.label()));
            }
            let ended = matches!(state, StepState::Completed | StepState::Failed | StepState::Cancelled | StepState::Interrupted);
            if ended {
                let mut detail = String::new();
                if let Some(failure) = status.and_then(|s| s.failure_details()) {
                    detail = describe_failure(failure.reason(), failure.message(), failure.log_file());
                } else if let Some(message) = status.and_then(|s| s.state_change_reason()).and_then(|r| r.message()).filter(|m| !m.trim().is_empty()) {
                    detail = trim_message(message).to_string();
                }
                if state != StepState::Completed && !detail.is_empty() {
                    ctx.log.line(&format!("{}: {detail}", step.label()));
                }
                step.end = Some((state, detail));
            }
        }
        if steps.iter().all(|s| s.end.is_some()) {
            return Ok(());
        }
        sleep(ctx, delay).await?;
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

/// Cancels steps at EMR (CancelSteps), logging what EMR answered for each; never fails the
/// caller, which is stopping anyway.
pub async fn cancel_steps(emr: &Emr, cluster: &str, ids: &[String], ctx: &TaskContext) {
    if ids.is_empty() {
        return;
    }
    let list = ids.join(", ");
    ctx.log.line(&format!("cancelling EMR step{} {list} on cluster {cluster} (CancelSteps)", if ids.len() == 1 { "" } else { "s" }));
    let request = emr
        .client
        .cancel_steps()
        .cluster_id(cluster)
        .set_step_ids(Some(ids.to_vec()))
        .step_cancellation_option(StepCancellationOption::SendInterrupt)
        .send();
    let by_hand = format!("cancel them in the EMR console or with: aws emr cancel-steps --cluster-id {cluster} --step-ids {}", ids.join(" "));
    match tokio::time::timeout(CANCEL_DEADLINE, request).await {
        Ok(Ok(reply)) => {
            for info in reply.cancel_steps_info_list() {
                let status = info.status().map(|s| s.as_str()).unwrap_or("?");
                let reason = info.reason().filter(|r| !r.trim().is_empty()).map(|r| format!(": {}", trim_message(r))).unwrap_or_default();
                ctx.log.line(&format!("CancelSteps: step {} {status}{reason}", info.step_id().unwrap_or("?")));
            }
        }
        Ok(Err(e)) => {
            let err = emr.error(&e, &format!("EMR CancelSteps on cluster {cluster}"));
            ctx.log.line(&format!("{}; the steps may still run: {by_hand}", err.message));
        }
        Err(_) => ctx.log.line(&format!(
            "EMR CancelSteps on cluster {cluster} did not answer within {}; the steps may still run: {by_hand}",
            humantime::format_duration(CANCEL_DEADLINE)
        )),
    }
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
