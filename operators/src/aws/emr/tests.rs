//! The EMR operators against sequences moto cannot produce (moto keeps steps RUNNING forever and
//! has no FailureDetails), scripted at the SDK client with aws-smithy-mocks: every request the
//! operators send goes through the real SDK (serialization, error parsing), and the rules' request
//! matchers check what was sent. Time is paused, so 30-second poll intervals cost nothing.

use aws_sdk_emr::operation::add_job_flow_steps::AddJobFlowStepsOutput;
use aws_sdk_emr::operation::cancel_steps::CancelStepsOutput;
use aws_sdk_emr::operation::describe_cluster::DescribeClusterOutput;
use aws_sdk_emr::operation::describe_step::DescribeStepOutput;
use aws_sdk_emr::operation::run_job_flow::RunJobFlowOutput;
use aws_sdk_emr::operation::terminate_job_flows::TerminateJobFlowsOutput;
use aws_sdk_emr::types::{
    ActionOnFailure, CancelStepsInfo, CancelStepsRequestStatus, Cluster, ClusterState, ClusterStateChangeReason, ClusterStateChangeReasonCode,
    ClusterStatus, FailureDetails, InstanceRoleType, Step, StepState, StepStatus,
};
use aws_sdk_emr::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::retry::RetryConfig;
use flowctl_engine::connections::AwsConnection;
use flowctl_engine::operator::{ErrorKind, ExternalJob, Outcome, TaskContext, TaskError};
use flowctl_engine::testing::TestTask;
use serde_json::json;

use super::add_steps::{self, AddStepsConfig};
use super::create_cluster::{self, CreateClusterConfig};
use super::terminate_cluster::{self, TerminateClusterConfig};
use super::{Emr, CLUSTER_JOB, STEPS_JOB};

/// The first attempt of task `transform` of DAG `loans`, or a later one that finds `recorded`.
fn task(recorded: Option<ExternalJob>) -> TestTask {
    let builder = TaskContext::test_builder().dag_id("loans").task_id("transform");
    match recorded {
        Some(job) => builder.try_number(2).recorded(job).build(),
        None => builder.build(),
    }
}

/// A client answering from `rules`, with the SDK's own retries off so every scripted reply
/// reaches the operator's polling loop.
fn emr(rules: &[&Rule]) -> Emr {
    let client = mock_client!(aws_sdk_emr, RuleMode::MatchAny, rules.iter().copied(), |c| c.retry_config(RetryConfig::disabled()));
    Emr::with_client(client, AwsConnection { name: "aws_default".into(), region: Some("us-east-1".into()), ..Default::default() })
}

fn step(id: &str, name: &str, state: StepState) -> DescribeStepOutput {
    DescribeStepOutput::builder().step(Step::builder().id(id).name(name).status(StepStatus::builder().state(state).build()).build()).build()
}

fn add_steps_config(value: serde_json::Value) -> AddStepsConfig {
    serde_json::from_value(value).unwrap()
}

fn throttled() -> Option<String> {
    Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_string())
}

fn outputs(outcome: Outcome) -> serde_json::Value {
    serde_json::Value::Object(outcome.outputs().clone())
}

#[tokio::test(start_paused = true)]
async fn steps_are_recorded_before_the_wait_which_follows_pending_running_completed() {
    let f = task(None);
    let jobs = f.jobs.clone();
    let add = mock!(Client::add_job_flow_steps)
        .match_requests(|r| {
            let steps = r.steps();
            r.job_flow_id() == Some("j-1ABC")
                && steps.len() == 2
                && steps[0].name() == Some("daily loans")
                && steps[0].action_on_failure() == Some(&ActionOnFailure::CancelAndWait)
                && steps[0].hadoop_jar_step().unwrap().jar() == Some("command-runner.jar")
                && steps[0].hadoop_jar_step().unwrap().args() == ["hive-script", "--run-hive-script", "--args", "-f", "s3://code/daily.q", "-d", "DAY=2024-03-01"]
                && steps[1].name() == Some("transform step 2 (spark)")
                && steps[1].action_on_failure() == Some(&ActionOnFailure::Continue)
                && steps[1].hadoop_jar_step().unwrap().args() == ["spark-submit", "--deploy-mode", "cluster", "s3://code/score.py", "2024-03-01"]
        })
        .then_output(|| AddJobFlowStepsOutput::builder().step_ids("s-1").step_ids("s-2").build());
    // Every poll checks that the ids were recorded before it.
    let recorded = move || jobs.current().is_some_and(|j| j.kind == STEPS_JOB && j.detail["step_ids"] == "s-1,s-2" && j.detail["cluster_id"] == "j-1ABC");
    let first = {
        let recorded = recorded.clone();
        mock!(Client::describe_step)
            .match_requests(move |r| r.step_id() == Some("s-1") && r.cluster_id() == Some("j-1ABC") && recorded())
            .sequence()
            .output(|| step("s-1", "daily loans", StepState::Pending))
            .output(|| step("s-1", "daily loans", StepState::Running))
            .times(2)
            .output(|| step("s-1", "daily loans", StepState::Completed))
            .build()
    };
    let second = mock!(Client::describe_step)
        .match_requests(move |r| r.step_id() == Some("s-2") && recorded())
        .sequence()
        .output(|| step("s-2", "transform step 2 (spark)", StepState::Pending))
        .times(4)
        .output(|| step("s-2", "transform step 2 (spark)", StepState::Running))
        .output(|| step("s-2", "transform step 2 (spark)", StepState::Completed))
        .build();
    let emr = emr(&[&add, &first, &second]);
    let config = add_steps_config(json!({
        "cluster_id": "j-1ABC",
        "steps": [
            {"name": "daily loans", "hive": {"script": "s3://code/daily.q", "variables": {"DAY": "2024-03-01"}}},
            {"action_on_failure": "CONTINUE", "spark": {"application": "s3://code/score.py", "args": ["2024-03-01"]}}
        ]
    }));
    let outcome = add_steps::run(&emr, config, &f.ctx).await.unwrap();
    assert_eq!(outputs(outcome), json!({"cluster_id": "j-1ABC", "step_ids": ["s-1", "s-2"]}));
    assert_eq!(add.num_calls(), 1);
    assert_eq!(
        f.journal(),
        [r#"record emr_steps s-1,s-2 {"cluster_id": "j-1ABC", "step_ids": "s-1,s-2"}"#, "clear"],
        "recorded once, cleared once the steps ended"
    );
    assert_eq!(
        f.log.lines(),
        [
            "added 2 steps to EMR cluster j-1ABC and recorded their ids:",
            "  step \"daily loans\" (s-1): command-runner.jar hive-script --run-hive-script --args -f s3://code/daily.q -d DAY=2024-03-01",
            "  step \"transform step 2 (spark)\" (s-2): command-runner.jar spark-submit --deploy-mode cluster s3://code/score.py 2024-03-01",
            "step \"daily loans\" (s-1): PENDING",
            "step \"transform step 2 (spark)\" (s-2): PENDING",
            "step \"daily loans\" (s-1): PENDING -> RUNNING",
            "step \"daily loans\" (s-1): RUNNING -> COMPLETED",
            "step \"transform step 2 (spark)\" (s-2): PENDING -> RUNNING",
            "step \"transform step 2 (spark)\" (s-2): RUNNING -> COMPLETED",
        ],
        "each state change is logged once, not once per poll"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_step_fails_the_task_with_emr_failure_details_and_a_retry_adds_the_steps_anew() {
    let f = task(None);
    let add = mock!(Client::add_job_flow_steps).then_output(|| AddJobFlowStepsOutput::builder().step_ids("s-1").step_ids("s-2").build());
    let failed = || {
        let details = FailureDetails::builder()
            .reason("Unknown Error.")
            .message("Exception in thread \"main\" java.lang.RuntimeException: Local file does not exist.")
            .log_file("s3://logs/emr/j-1ABC/steps/s-1/stderr.gz")
            .build();
        DescribeStepOutput::builder()
            .step(Step::builder().id("s-1").name("load").status(StepStatus::builder().state(StepState::Failed).failure_details(details).build()).build())
            .build()
    };
    let first = mock!(Client::describe_step)
        .match_requests(|r| r.step_id() == Some("s-1"))
        .sequence()
        .output(|| step("s-1", "load", StepState::Running))
        .output(failed)
        .build();
    let second = mock!(Client::describe_step)
        .match_requests(|r| r.step_id() == Some("s-2"))
        .sequence()
        .output(|| step("s-2", "report", StepState::Pending))
        .output(|| step("s-2", "report", StepState::Cancelled))
        .build();
    let emr = emr(&[&add, &first, &second]);
    let config = add_steps_config(json!({"cluster_id": "j-1ABC", "steps": [
        {"name": "load", "hive": {"query": "SELECT 1"}},
        {"name": "report", "jar": {"path": "command-runner.jar", "args": ["true"]}}
    ]}));
    let err = add_steps::run(&emr, config, &f.ctx).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable);
    assert_eq!(
        err.message,
        "EMR step \"load\" (s-1) on cluster j-1ABC failed: Unknown Error: Exception in thread \"main\" java.lang.RuntimeException: Local file does not exist; log file: s3://logs/emr/j-1ABC/steps/s-1/stderr.gz\nstep \"report\" (s-2) was cancelled"
    );
    assert_eq!(f.journal().last().map(String::as_str), Some("clear"), "the steps ended: a retry must add them anew, not reattach");
    assert!(f.log.lines().contains(&"step \"load\" (s-1): RUNNING -> FAILED".to_string()), "{:#?}", f.log.lines());
}

#[tokio::test(start_paused = true)]
async fn throttling_during_the_poll_is_waited_out() {
    let f = task(None);
    let add = mock!(Client::add_job_flow_steps).then_output(|| AddJobFlowStepsOutput::builder().step_ids("s-1").build());
    let describe = mock!(Client::describe_step)
        .sequence()
        .output(|| step("s-1", "load", StepState::Running))
        .http_status(400, throttled())
        .times(3)
        .http_status(503, None)
        .output(|| step("s-1", "load", StepState::Completed))
        .build();
    let emr = emr(&[&add, &describe]);
    let started = tokio::time::Instant::now();
    let config = add_steps_config(json!({"cluster_id": "j-1ABC", "steps": [{"name": "load", "hive": {"query": "SELECT 1"}}]}));
    let outcome = add_steps::run(&emr, config, &f.ctx).await.unwrap();
    assert_eq!(outputs(outcome)["step_ids"], json!(["s-1"]));
    assert_eq!(describe.num_calls(), 6);
    let lines = f.log.lines();
    assert!(
        lines.contains(&"poll 1 of 10 allowed in a row failed, trying again in 30s: EMR DescribeStep s-1 on cluster j-1ABC: AWS in us-east-1 is throttling requests (ThrottlingException: Rate exceeded), still after 5 tries with backoff".to_string()),
        "{lines:#?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("poll 4 of 10 allowed in a row failed, trying again in 4m")), "{lines:#?}");
    // 30s after RUNNING, then 30s + 60s + 120s + 240s of backoff.
    assert_eq!(started.elapsed().as_secs(), 30 + 30 + 60 + 120 + 240);
}

#[tokio::test(start_paused = true)]
async fn a_poll_that_keeps_failing_gives_up_and_keeps_the_record_for_the_retry() {
    let f = task(None);
    let add = mock!(Client::add_job_flow_steps).then_output(|| AddJobFlowStepsOutput::builder().step_ids("s-1").build());
    let describe = mock!(Client::describe_step).sequence().http_status(400, throttled()).repeatedly().build();
    let emr = emr(&[&add, &describe]);
    let config = add_steps_config(json!({"cluster_id": "j-1ABC", "steps": [{"hive": {"query": "SELECT 1"}}]}));
    let err = add_steps::run(&emr, config, &f.ctx).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable);
    assert!(err.message.ends_with("(10 polls in a row failed; a retry reattaches)"), "{}", err.message);
    assert_eq!(describe.num_calls(), 10);
    assert!(f.jobs.current().is_some(), "the steps may still run: the record stays for the retry");
    assert!(!f.journal().contains(&"clear".to_string()));
}

#[tokio::test(start_paused = true)]
async fn a_reattached_attempt_polls_the_recorded_steps_and_never_adds_them_again() {
    let recorded = ExternalJob {
        kind: STEPS_JOB.into(),
        id: "s-1,s-2".into(),
        detail: [("cluster_id".to_string(), "j-1ABC".to_string()), ("step_ids".to_string(), "s-1,s-2".to_string())].into(),
    };
    let f = task(Some(recorded));
    let add = mock!(Client::add_job_flow_steps).then_output(|| AddJobFlowStepsOutput::builder().step_ids("s-9").build());
    let first = mock!(Client::describe_step)
        .match_requests(|r| r.step_id() == Some("s-1") && r.cluster_id() == Some("j-1ABC"))
        .sequence()
        .output(|| step("s-1", "load", StepState::Running))
        .output(|| step("s-1", "load", StepState::Completed))
        .build();
    let second = mock!(Client::describe_step)
        .match_requests(|r| r.step_id() == Some("s-2") && r.cluster_id() == Some("j-1ABC"))
        .sequence()
        .output(|| step("s-2", "report", StepState::Pending))
        .output(|| step("s-2", "report", StepState::Completed))
        .build();
    let emr = emr(&[&add, &first, &second]);
    // The settings may have been rendered anew (another cluster id): the recorded one counts.
    let config = add_steps_config(json!({"cluster_id": "j-2DEF", "steps": [{"hive": {"query": "SELECT 1"}}, {"hive": {"query": "SELECT 2"}}]}));
    let outcome = add_steps::run(&emr, config, &f.ctx).await.unwrap();
    assert_eq!(add.num_calls(), 0, "AddJobFlowSteps must not be called when reattaching");
    assert_eq!(outputs(outcome), json!({"cluster_id": "j-1ABC", "step_ids": ["s-1", "s-2"]}));
    let lines = f.log.lines();
    assert_eq!(lines[0], "reattached to EMR steps s-1, s-2 on cluster j-1ABC, added by an earlier attempt: polling them, not adding the steps again");
    assert_eq!(lines[1], "(the settings now name cluster j-2DEF; the recorded steps run on j-1ABC)");
    assert_eq!(f.journal(), ["clear"]);
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_task_cancels_the_steps_that_have_not_ended() {
    let f = task(None);
    let cancel = f.ctx.cancel.clone();
    let add = mock!(Client::add_job_flow_steps).then_output(|| AddJobFlowStepsOutput::builder().step_ids("s-1").step_ids("s-2").build());
    let first = mock!(Client::describe_step)
        .match_requests(|r| r.step_id() == Some("s-1"))
        .sequence()
        .output(|| step("s-1", "load", StepState::Completed))
        .build();
    // The user cancels while the second step runs.
    let second = mock!(Client::describe_step)
        .match_requests(move |r| {
            cancel.cancel();
            r.step_id() == Some("s-2")
        })
        .sequence()
        .output(|| step("s-2", "report", StepState::Running))
        .build();
    let cancel_steps = mock!(Client::cancel_steps)
        .match_requests(|r| {
            r.cluster_id() == Some("j-1ABC")
                && r.step_ids() == ["s-2"]
                && r.step_cancellation_option() == Some(&aws_sdk_emr::types::StepCancellationOption::SendInterrupt)
        })
        .then_output(|| {
            CancelStepsOutput::builder()
                .cancel_steps_info_list(CancelStepsInfo::builder().step_id("s-2").status(CancelStepsRequestStatus::Submitted).build())
                .build()
        });
    let emr = emr(&[&add, &first, &second, &cancel_steps]);
    let config = add_steps_config(json!({"cluster_id": "j-1ABC", "steps": [{"hive": {"query": "SELECT 1"}}, {"hive": {"query": "SELECT 2"}}]}));
    let err = add_steps::run(&emr, config, &f.ctx).await.unwrap_err();
    assert_eq!(err, TaskError::cancelled());
    assert_eq!(cancel_steps.num_calls(), 1, "CancelSteps reached EMR with the step that had not ended");
    let lines = f.log.lines();
    assert!(lines.contains(&"cancelling EMR step s-2 on cluster j-1ABC (CancelSteps)".to_string()), "{lines:#?}");
    assert!(lines.contains(&"CancelSteps: step s-2 SUBMITTED".to_string()), "{lines:#?}");
    assert_eq!(f.journal().last().map(String::as_str), Some("clear"));
}

#[tokio::test(start_paused = true)]
async fn a_stopping_flowctl_leaves_the_steps_running_and_recorded() {
    let f = task(None);
    let (cancel, shutdown) = (f.ctx.cancel.clone(), f.ctx.shutdown.clone());
    let add = mock!(Client::add_job_flow_steps).then_output(|| AddJobFlowStepsOutput::builder().step_ids("s-1").build());
    let describe = mock!(Client::describe_step)
        .match_requests(move |_| {
            shutdown.cancel();
            cancel.cancel();
            true
        })
        .then_output(|| step("s-1", "load", StepState::Running));
    let cancel_steps = mock!(Client::cancel_steps).then_output(|| CancelStepsOutput::builder().build());
    let emr = emr(&[&add, &describe, &cancel_steps]);
    let config = add_steps_config(json!({"cluster_id": "j-1ABC", "steps": [{"hive": {"query": "SELECT 1"}}]}));
    let err = add_steps::run(&emr, config, &f.ctx).await.unwrap_err();
    assert_eq!(err, TaskError::retryable("flowctl stopped while EMR step s-1 on cluster j-1ABC ran; the next start reattaches to it"));
    assert_eq!(cancel_steps.num_calls(), 0, "a stopping flowctl must not cancel the steps");
    assert!(f.jobs.current().is_some(), "the record stays for the next start");
    assert_eq!(f.journal().len(), 1, "recorded, never cleared: {:?}", f.journal());
    assert_eq!(f.log.lines().last().unwrap(), "flowctl is stopping: leaving EMR step s-1 on cluster j-1ABC running; the next start reattaches");
}

#[tokio::test(start_paused = true)]
async fn steps_whose_ids_cannot_be_recorded_are_cancelled_so_a_retry_does_not_run_them_twice() {
    let f = task(None);
    f.jobs.refuse_records("cannot write the store: disk full");
    let add = mock!(Client::add_job_flow_steps).then_output(|| AddJobFlowStepsOutput::builder().step_ids("s-1").step_ids("s-2").build());
    let describe = mock!(Client::describe_step).then_output(|| step("s-1", "load", StepState::Running));
    let cancel_steps = mock!(Client::cancel_steps)
        .match_requests(|r| r.cluster_id() == Some("j-1ABC") && r.step_ids() == ["s-1", "s-2"])
        .then_output(|| CancelStepsOutput::builder().build());
    let emr = emr(&[&add, &describe, &cancel_steps]);
    let config = add_steps_config(json!({"cluster_id": "j-1ABC", "steps": [{"hive": {"query": "SELECT 1"}}, {"hive": {"query": "SELECT 2"}}]}));
    let err = add_steps::run(&emr, config, &f.ctx).await.unwrap_err();
    assert_eq!(err, TaskError::retryable("cannot write the store: disk full"));
    assert_eq!(cancel_steps.num_calls(), 1, "both steps were taken back");
    assert_eq!(describe.num_calls(), 0, "unrecorded steps are not waited for");
    assert_eq!(f.journal(), ["record refused emr_steps s-1,s-2"]);
    assert_eq!(
        f.log.lines(),
        [
            "cannot record EMR steps s-1, s-2 on cluster j-1ABC (cannot write the store: disk full): cancelling it, or a retry would run it twice",
            "cancelling EMR steps s-1, s-2 on cluster j-1ABC (CancelSteps)",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancel_emr_refuses_is_logged_with_the_command_to_cancel_by_hand() {
    let f = task(None);
    let cancel = f.ctx.cancel.clone();
    let add = mock!(Client::add_job_flow_steps).then_output(|| AddJobFlowStepsOutput::builder().step_ids("s-1").step_ids("s-2").build());
    let describe = mock!(Client::describe_step).then_compute_output(move |r| {
        cancel.cancel();
        step(r.step_id().unwrap_or(""), "load", StepState::Running)
    });
    let cancel_steps = mock!(Client::cancel_steps)
        .sequence()
        .http_status(400, Some(r#"{"__type":"InvalidRequestException","message":"Steps cannot be cancelled in this state."}"#.to_string()))
        .build();
    let emr = emr(&[&add, &describe, &cancel_steps]);
    let config = add_steps_config(json!({"cluster_id": "j-1ABC", "steps": [{"hive": {"query": "SELECT 1"}}, {"hive": {"query": "SELECT 2"}}]}));
    let err = add_steps::run(&emr, config, &f.ctx).await.unwrap_err();
    assert_eq!(err, TaskError::cancelled());
    assert_eq!(cancel_steps.num_calls(), 1);
    assert_eq!(
        f.log.lines().last().unwrap(),
        "EMR CancelSteps on cluster j-1ABC: InvalidRequestException: Steps cannot be cancelled in this state; the steps may still run: cancel them in the EMR console or with: aws emr cancel-steps --cluster-id j-1ABC --step-ids s-1 s-2"
    );
}

fn cluster(state: ClusterState, reason: Option<(ClusterStateChangeReasonCode, &str)>) -> DescribeClusterOutput {
    let mut status = ClusterStatus::builder().state(state.clone());
    if let Some((code, message)) = reason {
        status = status.state_change_reason(ClusterStateChangeReason::builder().code(code).message(message).build());
    }
    let mut c = Cluster::builder().id("j-1ABC").name("loans").status(status.build());
    if state == ClusterState::Waiting {
        c = c.master_public_dns_name("ec2-1-2-3-4.compute-1.amazonaws.com");
    }
    DescribeClusterOutput::builder().cluster(c.build()).build()
}

fn create_config(extra: serde_json::Value) -> CreateClusterConfig {
    let mut value = json!({
        "name": "loans",
        "release_label": "emr-7.2.0",
        "applications": ["Hive", "Spark", "Sqoop"],
        "log_uri": "s3://logs/emr/",
        "instances": {
            "instance_groups": [
                {"instance_role": "MASTER", "instance_type": "m5.xlarge", "instance_count": 1},
                {"instance_role": "CORE", "instance_type": "m5.2xlarge", "instance_count": 2, "market": "SPOT", "bid_price": "0.20",
                 "ebs_volumes": [{"size_in_gb": 100}]}
            ],
            "ec2_subnet_id": "subnet-1"
        },
        "bootstrap_actions": [{"name": "jdbc", "path": "s3://code/bootstrap/jdbc.sh", "args": ["mysql", 8]}],
        "configurations": [{"classification": "hive-site", "properties": {"hive.exec.parallel": true}}],
        "tags": {"team": "loans"},
        "auto_termination_idle_timeout": "1h"
    });
    for (k, v) in extra.as_object().unwrap() {
        value[k] = v.clone();
    }
    let config: CreateClusterConfig = serde_json::from_value(value).unwrap();
    config.check().unwrap();
    config
}

#[tokio::test(start_paused = true)]
async fn a_cluster_is_created_as_asked_recorded_and_waited_for_until_waiting() {
    let f = task(None);
    let jobs = f.jobs.clone();
    let run = mock!(Client::run_job_flow)
        .match_requests(|r| {
            let instances = r.instances().unwrap();
            let groups = instances.instance_groups();
            r.name() == Some("loans")
                && r.release_label() == Some("emr-7.2.0")
                && r.log_uri() == Some("s3://logs/emr/")
                && r.service_role() == Some("EMR_DefaultRole")
                && r.job_flow_role() == Some("EMR_EC2_DefaultRole")
                && r.visible_to_all_users() == Some(true)
                && r.applications().iter().map(|a| a.name().unwrap()).collect::<Vec<_>>() == ["Hive", "Spark", "Sqoop"]
                && instances.keep_job_flow_alive_when_no_steps() == Some(true)
                && instances.ec2_subnet_id() == Some("subnet-1")
                && groups.len() == 2
                && groups[0].instance_role() == Some(&InstanceRoleType::Master)
                && groups[1].instance_count() == Some(2)
                && groups[1].bid_price() == Some("0.20")
                && groups[1].ebs_configuration().unwrap().ebs_block_device_configs()[0].volume_specification().unwrap().size_in_gb() == Some(100)
                && r.bootstrap_actions()[0].script_bootstrap_action().unwrap().args() == ["mysql", "8"]
                && r.configurations()[0].properties().unwrap()["hive.exec.parallel"] == "true"
                && r.tags()[0].key() == Some("team")
                && r.auto_termination_policy().unwrap().idle_timeout() == Some(3600)
        })
        .then_output(|| RunJobFlowOutput::builder().job_flow_id("j-1ABC").cluster_arn("arn:aws:elasticmapreduce:us-east-1:123456789012:cluster/j-1ABC").build());
    let describe = mock!(Client::describe_cluster)
        .match_requests(move |r| r.cluster_id() == Some("j-1ABC") && jobs.current().is_some_and(|j| j.kind == CLUSTER_JOB && j.id == "j-1ABC"))
        .sequence()
        .output(|| cluster(ClusterState::Starting, None))
        .times(2)
        .output(|| cluster(ClusterState::Bootstrapping, None))
        .output(|| cluster(ClusterState::Waiting, Some((ClusterStateChangeReasonCode::UserRequest, "Cluster ready to run steps."))))
        .build();
    let emr = emr(&[&run, &describe]);
    let outcome = create_cluster::run(&emr, create_config(json!({})), &f.ctx).await.unwrap();
    assert_eq!(
        outputs(outcome),
        json!({"cluster_id": "j-1ABC", "state": "WAITING", "master_public_dns": "ec2-1-2-3-4.compute-1.amazonaws.com"})
    );
    assert_eq!(run.num_calls(), 1);
    assert_eq!(
        f.journal(),
        [r#"record emr_cluster j-1ABC {"cluster_arn": "arn:aws:elasticmapreduce:us-east-1:123456789012:cluster/j-1ABC", "name": "loans"}"#, "clear"]
    );
    assert_eq!(
        f.log.lines(),
        [
            "started EMR cluster j-1ABC (\"loans\", emr-7.2.0) and recorded its id; waiting until it is WAITING or RUNNING",
            "cluster j-1ABC: STARTING",
            "cluster j-1ABC: STARTING -> BOOTSTRAPPING",
            "cluster j-1ABC: BOOTSTRAPPING -> WAITING",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_cluster_that_fails_to_start_fails_the_task_with_its_reason() {
    let f = task(None);
    let run = mock!(Client::run_job_flow).then_output(|| RunJobFlowOutput::builder().job_flow_id("j-1ABC").build());
    let describe = mock!(Client::describe_cluster)
        .sequence()
        .output(|| cluster(ClusterState::Bootstrapping, None))
        .output(|| {
            cluster(
                ClusterState::TerminatedWithErrors,
                Some((ClusterStateChangeReasonCode::BootstrapFailure, "On the master instance (i-0abc), bootstrap action 1 returned a non-zero return code")),
            )
        })
        .build();
    let terminate = mock!(Client::terminate_job_flows).then_output(|| TerminateJobFlowsOutput::builder().build());
    let emr = emr(&[&run, &describe, &terminate]);
    let err = create_cluster::run(&emr, create_config(json!({"terminate_on_failure": true})), &f.ctx).await.unwrap_err();
    assert_eq!(
        err,
        TaskError::retryable(
            "EMR cluster j-1ABC did not start: TERMINATED_WITH_ERRORS (BOOTSTRAP_FAILURE: On the master instance (i-0abc), bootstrap action 1 returned a non-zero return code)"
        )
    );
    assert_eq!(terminate.num_calls(), 0, "EMR terminated it already");
    assert_eq!(f.journal().last().map(String::as_str), Some("clear"), "a retry starts a new cluster");
}

#[tokio::test(start_paused = true)]
async fn a_cluster_emr_rejects_fails_the_task_for_good() {
    let f = task(None);
    let run = mock!(Client::run_job_flow).then_output(|| RunJobFlowOutput::builder().job_flow_id("j-1ABC").build());
    let describe = mock!(Client::describe_cluster).then_output(|| {
        cluster(ClusterState::TerminatedWithErrors, Some((ClusterStateChangeReasonCode::ValidationError, "The requested instance type m9.huge is not supported")))
    });
    let emr = emr(&[&run, &describe]);
    let err = create_cluster::run(&emr, create_config(json!({})), &f.ctx).await.unwrap_err();
    assert_eq!(
        err,
        TaskError::fatal("EMR cluster j-1ABC did not start: TERMINATED_WITH_ERRORS (VALIDATION_ERROR: The requested instance type m9.huge is not supported)")
    );
    assert_eq!(f.journal().last().map(String::as_str), Some("clear"));
}

#[tokio::test(start_paused = true)]
async fn a_transient_cluster_that_ran_its_steps_between_two_polls_is_up() {
    let f = task(None);
    let run = mock!(Client::run_job_flow).then_output(|| RunJobFlowOutput::builder().job_flow_id("j-1ABC").build());
    let describe = mock!(Client::describe_cluster)
        .sequence()
        .output(|| cluster(ClusterState::Bootstrapping, None))
        .output(|| cluster(ClusterState::Terminating, Some((ClusterStateChangeReasonCode::AllStepsCompleted, "Steps completed"))))
        .build();
    let emr = emr(&[&run, &describe]);
    let outcome = create_cluster::run(&emr, create_config(json!({})), &f.ctx).await.unwrap();
    assert_eq!(outputs(outcome), json!({"cluster_id": "j-1ABC", "state": "TERMINATING"}));
    assert_eq!(
        f.log.lines().last().unwrap(),
        "cluster j-1ABC ran all its steps and is ending: TERMINATING (ALL_STEPS_COMPLETED: Steps completed)"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cluster_whose_id_cannot_be_recorded_is_terminated() {
    let f = task(None);
    f.jobs.refuse_records("cannot write the store: disk full");
    let run = mock!(Client::run_job_flow).then_output(|| RunJobFlowOutput::builder().job_flow_id("j-1ABC").build());
    let describe = mock!(Client::describe_cluster).then_output(|| cluster(ClusterState::Starting, None));
    let terminate = mock!(Client::terminate_job_flows)
        .match_requests(|r| r.job_flow_ids() == ["j-1ABC"])
        .then_output(|| TerminateJobFlowsOutput::builder().build());
    let emr = emr(&[&run, &describe, &terminate]);
    let err = create_cluster::run(&emr, create_config(json!({})), &f.ctx).await.unwrap_err();
    assert_eq!(err, TaskError::retryable("cannot write the store: disk full"));
    assert_eq!((terminate.num_calls(), describe.num_calls()), (1, 0), "a retry would start a second cluster beside this one");
    assert_eq!(
        f.log.lines()[1..],
        [
            "terminating EMR cluster j-1ABC (its id cannot be recorded, and a retry would start another): TerminateJobFlows",
            "EMR accepted the termination of cluster j-1ABC",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn terminate_on_failure_terminates_a_cluster_whose_wait_failed() {
    let f = task(None);
    let run = mock!(Client::run_job_flow).then_output(|| RunJobFlowOutput::builder().job_flow_id("j-1ABC").build());
    let describe = mock!(Client::describe_cluster).sequence().http_status(500, None).repeatedly().build();
    let terminate = mock!(Client::terminate_job_flows)
        .match_requests(|r| r.job_flow_ids() == ["j-1ABC"])
        .then_output(|| TerminateJobFlowsOutput::builder().build());
    let emr = emr(&[&run, &describe, &terminate]);
    let err = create_cluster::run(&emr, create_config(json!({"terminate_on_failure": true})), &f.ctx).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Retryable);
    assert!(err.message.starts_with("EMR DescribeCluster j-1ABC: "), "{}", err.message);
    assert_eq!(terminate.num_calls(), 1);
    assert!(f.log.lines().contains(&"EMR accepted the termination of cluster j-1ABC".to_string()), "{:#?}", f.log.lines());
    assert_eq!(f.jobs.current(), None, "a terminated cluster is not reattached to");
}

#[tokio::test(start_paused = true)]
async fn cancelling_create_cluster_terminates_the_cluster_and_a_reattached_attempt_starts_none() {
    let recorded = ExternalJob { kind: CLUSTER_JOB.into(), id: "j-1ABC".into(), detail: Default::default() };
    let f = task(Some(recorded));
    let cancel = f.ctx.cancel.clone();
    let run = mock!(Client::run_job_flow).then_output(|| RunJobFlowOutput::builder().job_flow_id("j-2DEF").build());
    let describe = mock!(Client::describe_cluster)
        .match_requests(move |r| {
            cancel.cancel();
            r.cluster_id() == Some("j-1ABC")
        })
        .then_output(|| cluster(ClusterState::Starting, None));
    let terminate = mock!(Client::terminate_job_flows)
        .match_requests(|r| r.job_flow_ids() == ["j-1ABC"])
        .then_output(|| TerminateJobFlowsOutput::builder().build());
    let emr = emr(&[&run, &describe, &terminate]);
    let err = create_cluster::run(&emr, create_config(json!({})), &f.ctx).await.unwrap_err();
    assert_eq!(err, TaskError::cancelled());
    assert_eq!(run.num_calls(), 0, "the recorded cluster is polled, no second one started");
    assert_eq!(terminate.num_calls(), 1);
    assert_eq!(
        f.log.lines()[0],
        "reattached to EMR cluster j-1ABC, started by an earlier attempt: polling it, not starting another"
    );
}

#[tokio::test(start_paused = true)]
async fn terminate_cluster_waits_until_terminated() {
    let f = task(None);
    let terminate = mock!(Client::terminate_job_flows)
        .match_requests(|r| r.job_flow_ids() == ["j-1ABC"])
        .then_output(|| TerminateJobFlowsOutput::builder().build());
    let describe = mock!(Client::describe_cluster)
        .sequence()
        .output(|| cluster(ClusterState::Terminating, Some((ClusterStateChangeReasonCode::UserRequest, "Terminated by user request"))))
        .output(|| cluster(ClusterState::Terminated, Some((ClusterStateChangeReasonCode::UserRequest, "Terminated by user request"))))
        .build();
    let emr = emr(&[&terminate, &describe]);
    let config: TerminateClusterConfig = serde_json::from_value(json!({"cluster_id": "j-1ABC", "poll_interval": "10s"})).unwrap();
    let started = tokio::time::Instant::now();
    let outcome = terminate_cluster::run(&emr, config, &f.ctx).await.unwrap();
    assert_eq!(outputs(outcome), json!({"cluster_id": "j-1ABC", "state": "TERMINATED"}));
    assert_eq!(started.elapsed().as_secs(), 10);
    assert_eq!(
        f.log.lines(),
        [
            "asked EMR to terminate cluster j-1ABC (TerminateJobFlows)",
            "cluster j-1ABC: TERMINATING",
            "cluster j-1ABC: TERMINATING -> TERMINATED",
            "cluster j-1ABC ended: TERMINATED (USER_REQUEST: Terminated by user request)",
        ]
    );
}
