//! `sagemaker.train` against SageMaker replies scripted at the client (aws-smithy-mocks), for the
//! sequences moto cannot produce: moto completes a training job at once and has no
//! StopTrainingJob. tests/sagemaker.rs runs the real binary against moto.
//!
//! Rules run in `Sequential` mode: each request must be the next one scripted, so a test also
//! proves what was *not* sent (no CreateTrainingJob when reattaching, no StopTrainingJob when
//! flowctl stops).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_sagemaker::operation::create_training_job::{CreateTrainingJobInput, CreateTrainingJobOutput};
use aws_sdk_sagemaker::operation::describe_training_job::DescribeTrainingJobOutput;
use aws_sdk_sagemaker::operation::stop_training_job::StopTrainingJobOutput;
use aws_sdk_sagemaker::types::{
    MetricData, ModelArtifacts, S3DataDistribution, S3DataType, SecondaryStatus, SecondaryStatusTransition, TrainingInputMode,
    TrainingInstanceType, TrainingJobStatus,
};
use aws_sdk_sagemaker::Client;
use aws_smithy_mocks::{mock, mock_client, Rule, RuleMode};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::DateTime;
use flowctl_engine::connections::AwsConnection;
use flowctl_engine::operator::{ErrorKind, ExternalJob, Outcome, TaskContext, TaskError};
use flowctl_engine::testing::{Journal, TestTask};
use flowctl_engine::Registry;
use serde_json::{json, Value};

use super::train::{TrainConfig, JOB_KIND};
use crate::aws::job::MAX_POLL_FAILURES;

const NAME: &str = "churn-20240301120000-1-a1b2c3";
const ARN: &str = "arn:aws:sagemaker:eu-west-1:123456789012:training-job/churn-20240301120000-1-a1b2c3";
const ROLE: &str = "arn:aws:iam::123456789012:role/sagemaker-training";
const IMAGE: &str = "685385470294.dkr.ecr.eu-west-1.amazonaws.com/xgboost:1.7-1";

/// An attempt of task `train` of DAG `ml_daily` (of two tries); a retry when it finds the job
/// [`NAME`] recorded.
fn task(recorded: Option<&str>) -> TestTask {
    let builder = TaskContext::test_builder().dag_id("ml_daily").run_id("scheduled__2024-03-01T00:00:00+00:00").task_id("train").max_tries(2);
    match recorded {
        Some(name) => builder.try_number(2).recorded(ExternalJob { kind: JOB_KIND.into(), id: name.into(), detail: Default::default() }).build(),
        None => builder.build(),
    }
}

/// The job name the attempt recorded.
fn recorded_name(task: &TestTask) -> String {
    let prefix = format!("record {JOB_KIND} ");
    task.journal().iter().find_map(|e| e.strip_prefix(&prefix).map(str::to_string)).expect("a job name was recorded")
}

fn conn() -> AwsConnection {
    AwsConnection { name: "ml".into(), region: Some("eu-west-1".into()), ..AwsConnection::default() }
}

/// A client whose requests go to `rules`, in order, with the SDK's own retries off so the
/// operator's poll loop sees every throttled reply.
fn client(rules: &[&Rule]) -> Client {
    mock_client!(aws_sdk_sagemaker, RuleMode::Sequential, rules, |c| c.retry_config(RetryConfig::disabled()))
}

fn settings(extra: Value) -> TrainConfig {
    let mut with = json!({
        "job_name_prefix": "churn",
        "algorithm_specification": {"training_image": IMAGE, "training_input_mode": "File"},
        "role_arn": ROLE,
        "input_data_config": [
            {"channel_name": "train", "s3_uri": "s3://ml/churn/train/", "content_type": "text/csv"},
            {"channel_name": "validation", "s3_uri": "s3://ml/churn/validation/", "content_type": "text/csv", "distribution": "ShardedByS3Key"},
        ],
        "output_data_config": {"s3_output_path": "s3://ml/churn/models"},
        "resource_config": {"instance_type": "ml.m5.xlarge", "instance_count": 2, "volume_size_in_gb": 50},
        "stopping_condition": {"max_runtime_in_seconds": 7200},
        "hyperparameters": {"objective": "binary:logistic", "num_round": 100, "eta": 0.2},
        "tags": {"team": "risk"},
        "poll_interval": "30s",
    });
    with.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    serde_json::from_value(with).expect("valid settings")
}

/// CreateTrainingJob capturing its request.
fn create_rule(journal: &Journal, sent: &Arc<Mutex<Option<CreateTrainingJobInput>>>) -> Rule {
    let (journal, sent) = (journal.clone(), sent.clone());
    mock!(Client::create_training_job)
        .match_requests(move |req| {
            journal.push(format!("create {}", req.training_job_name().unwrap_or("")));
            *sent.lock().unwrap() = Some(req.clone());
            true
        })
        .then_compute_output(|req| {
            CreateTrainingJobOutput::builder()
                .training_job_arn(format!("arn:aws:sagemaker:eu-west-1:123456789012:training-job/{}", req.training_job_name().unwrap_or("")))
                .build()
        })
}

fn transition(status: SecondaryStatus, message: &str) -> SecondaryStatusTransition {
    SecondaryStatusTransition::builder().status(status).status_message(message).build()
}

fn in_progress(transitions: &[(SecondaryStatus, &str)]) -> DescribeTrainingJobOutput {
    let mut out = DescribeTrainingJobOutput::builder()
        .training_job_name(NAME)
        .training_job_arn(ARN)
        .training_job_status(TrainingJobStatus::InProgress)
        .creation_time(DateTime::from(SystemTime::now()));
    for (status, message) in transitions {
        out = out.secondary_status(status.clone()).secondary_status_transitions(transition(status.clone(), message));
    }
    out.build()
}

fn completed() -> DescribeTrainingJobOutput {
    DescribeTrainingJobOutput::builder()
        .training_job_name(NAME)
        .training_job_arn(ARN)
        .training_job_status(TrainingJobStatus::Completed)
        .secondary_status(SecondaryStatus::Completed)
        .secondary_status_transitions(transition(SecondaryStatus::Starting, "Preparing the instances for training"))
        .secondary_status_transitions(transition(SecondaryStatus::Training, "Training image download completed. Training in progress."))
        .secondary_status_transitions(transition(SecondaryStatus::Uploading, "Uploading generated training model"))
        .secondary_status_transitions(transition(SecondaryStatus::Completed, "Training job completed"))
        .model_artifacts(ModelArtifacts::builder().s3_model_artifacts(format!("s3://ml/churn/models/{NAME}/output/model.tar.gz")).build())
        .billable_time_in_seconds(412)
        .training_time_in_seconds(412)
        .final_metric_data_list(MetricData::builder().metric_name("validation:auc").value(0.5).build())
        .build()
}

/// DescribeTrainingJob replies in order; each request goes to the journal.
fn describe_rule(journal: &Journal, replies: Vec<DescribeTrainingJobOutput>) -> Rule {
    let journal = journal.clone();
    let mut sequence = mock!(Client::describe_training_job)
        .match_requests(move |req| {
            journal.push(format!("describe {}", req.training_job_name().unwrap_or("")));
            true
        })
        .sequence();
    for reply in replies {
        sequence = sequence.output(move || reply.clone());
    }
    sequence.build()
}

fn stop_rule(journal: &Journal) -> Rule {
    let journal = journal.clone();
    mock!(Client::stop_training_job)
        .match_requests(move |req| {
            journal.push(format!("stop {}", req.training_job_name().unwrap_or("")));
            true
        })
        .then_output(|| StopTrainingJobOutput::builder().build())
}

fn outputs(outcome: Outcome) -> Value {
    Value::Object(outcome.outputs().clone())
}

#[tokio::test(start_paused = true)]
async fn a_job_is_created_recorded_first_and_waited_for_until_it_completes() {
    let h = task(None);
    let sent = Arc::default();
    let create = create_rule(h.jobs.journal(), &sent);
    let describe = describe_rule(
        h.jobs.journal(),
        vec![
            in_progress(&[(SecondaryStatus::Starting, "Preparing the instances for training")]),
            in_progress(&[(SecondaryStatus::Starting, "Preparing the instances for training")]),
            in_progress(&[
                (SecondaryStatus::Starting, "Preparing the instances for training"),
                (SecondaryStatus::Training, "Training image download completed. Training in progress."),
            ]),
            completed(),
        ],
    );
    let client = client(&[&create, &describe]);

    let outcome = super::train::run(&client, &conn(), settings(json!({})), &h.ctx).await.unwrap();

    let name = recorded_name(&h);
    assert!(name.starts_with("churn-") && name.len() == "churn-20240301120000-1-a1b2c3".len(), "{name}");
    assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{name}");
    // The name is recorded before the job is created, and forgotten once it has ended.
    let describe_call = format!("describe {name}");
    assert_eq!(
        h.journal(),
        [
            format!("record {JOB_KIND} {name}"),
            format!("create {name}"),
            describe_call.clone(),
            describe_call.clone(),
            describe_call.clone(),
            describe_call,
            "clear".into()
        ]
    );

    let sent = sent.lock().unwrap().clone().expect("CreateTrainingJob was sent");
    let spec = sent.algorithm_specification().unwrap();
    assert_eq!(spec.training_image(), Some(IMAGE));
    assert_eq!(spec.training_input_mode(), Some(&TrainingInputMode::File));
    assert_eq!(sent.role_arn(), Some(ROLE));
    /// A channel as (name, URI, content type, distribution, data type).
    type ChannelFacts<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a S3DataDistribution>, Option<&'a S3DataType>);
    let channels: Vec<ChannelFacts> = sent
        .input_data_config()
        .iter()
        .map(|c| {
            let s3 = c.data_source().and_then(|d| d.s3_data_source()).unwrap();
            (c.channel_name().unwrap(), s3.s3_uri().unwrap(), c.content_type(), s3.s3_data_distribution_type(), s3.s3_data_type())
        })
        .collect();
    assert_eq!(
        channels,
        [
            ("train", "s3://ml/churn/train/", Some("text/csv"), Some(&S3DataDistribution::FullyReplicated), Some(&S3DataType::S3Prefix)),
            ("validation", "s3://ml/churn/validation/", Some("text/csv"), Some(&S3DataDistribution::ShardedByS3Key), Some(&S3DataType::S3Prefix)),
        ]
    );
    assert_eq!(sent.output_data_config().and_then(|o| o.s3_output_path()), Some("s3://ml/churn/models"));
    let resources = sent.resource_config().unwrap();
    assert_eq!(
        (resources.instance_type(), resources.instance_count(), resources.volume_size_in_gb()),
        (Some(&TrainingInstanceType::MlM5Xlarge), Some(2), Some(50))
    );
    assert_eq!(sent.stopping_condition().and_then(|s| s.max_runtime_in_seconds()), Some(7200));
    let expected: HashMap<String, String> =
        [("objective", "binary:logistic"), ("num_round", "100"), ("eta", "0.2")].into_iter().map(|(k, v)| (k.into(), v.into())).collect();
    assert_eq!(sent.hyper_parameters(), Some(&expected));
    let tags: Vec<(Option<&str>, Option<&str>)> = sent.tags().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(tags, [(Some("team"), Some("risk"))]);

    assert_eq!(
        outputs(outcome),
        json!({
            "job_name": name,
            "job_arn": ARN,
            "model_artifacts": format!("s3://ml/churn/models/{NAME}/output/model.tar.gz"),
            "billable_seconds": 412,
            "training_time_seconds": 412,
            "metrics": {"validation:auc": 0.5},
        })
    );
    // Each status and each secondary transition is logged once, however many polls saw it.
    assert_eq!(
        h.log.lines(),
        [
            format!("created training job {name} (arn:aws:sagemaker:eu-west-1:123456789012:training-job/{name})"),
            format!("training job {name} is InProgress"),
            "  Starting: Preparing the instances for training".to_string(),
            "  Training: Training image download completed. Training in progress.".to_string(),
            format!("training job {name} is Completed"),
            "  Uploading: Uploading generated training model".to_string(),
            "  Completed: Training job completed".to_string(),
        ]
    );
}

fn failed(reason: &str) -> DescribeTrainingJobOutput {
    DescribeTrainingJobOutput::builder()
        .training_job_name(NAME)
        .training_job_status(TrainingJobStatus::Failed)
        .secondary_status(SecondaryStatus::Failed)
        .failure_reason(reason)
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_fails_the_task_with_sagemakers_reason() {
    let h = task(Some(NAME));
    let describe = describe_rule(
        h.jobs.journal(),
        vec![in_progress(&[]), failed("AlgorithmError: framework error: XGBoostError: value 0 for Parameter num_class should be greater equal to 1")],
    );
    let client = client(&[&describe]);

    let err = super::train::run(&client, &conn(), settings(json!({})), &h.ctx).await.unwrap_err();

    assert_eq!(
        err.message,
        format!("training job {NAME} failed: AlgorithmError: framework error: XGBoostError: value 0 for Parameter num_class should be greater equal to 1")
    );
    assert_eq!(err.kind, ErrorKind::Retryable);
    // The job has ended: a retry creates a fresh one.
    assert_eq!(h.journal().last().map(String::as_str), Some("clear"));
}

#[tokio::test(start_paused = true)]
async fn a_client_error_is_final() {
    let h = task(Some(NAME));
    let describe = describe_rule(h.jobs.journal(), vec![failed("ClientError: Data download failed: NoSuchKey s3://ml/churn/train/part-0.csv")]);
    let client = client(&[&describe]);

    let err = super::train::run(&client, &conn(), settings(json!({})), &h.ctx).await.unwrap_err();

    assert_eq!(err, TaskError::fatal(format!("training job {NAME} failed: ClientError: Data download failed: NoSuchKey s3://ml/churn/train/part-0.csv")));
}

#[tokio::test(start_paused = true)]
async fn a_job_stopped_outside_flowctl_fails_the_task() {
    let h = task(Some(NAME));
    let stopped = DescribeTrainingJobOutput::builder()
        .training_job_name(NAME)
        .training_job_status(TrainingJobStatus::Stopped)
        .secondary_status(SecondaryStatus::Stopped)
        .build();
    let describe = describe_rule(h.jobs.journal(), vec![stopped]);
    let client = client(&[&describe]);

    let err = super::train::run(&client, &conn(), settings(json!({})), &h.ctx).await.unwrap_err();

    assert_eq!(
        err,
        TaskError::fatal(format!("training job {NAME} was stopped outside flowctl (secondary status Stopped); its model, if any, is under s3://ml/churn/models"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_reattaches_to_the_recorded_job_without_creating_one() {
    let h = task(Some(NAME));
    // Only DescribeTrainingJob is scripted: a CreateTrainingJob would not match and fail the test.
    let describe = describe_rule(h.jobs.journal(), vec![in_progress(&[(SecondaryStatus::Training, "Training in progress.")]), completed()]);
    let client = client(&[&describe]);

    let outcome = super::train::run(&client, &conn(), settings(json!({})), &h.ctx).await.unwrap();

    assert_eq!(outputs(outcome)["job_name"], NAME);
    assert_eq!(h.journal(), [format!("describe {NAME}"), format!("describe {NAME}"), "clear".into()]);
    assert_eq!(h.log.lines()[0], format!("reattaching to training job {NAME}, recorded by an earlier attempt (no new job is created)"));
}

fn not_found() -> (u16, Option<String>) {
    (400, Some(r#"{"__type":"ValidationException","message":"Requested resource not found."}"#.to_string()))
}

#[tokio::test(start_paused = true)]
async fn a_recorded_job_that_was_never_created_is_created_under_its_recorded_name() {
    let h = task(Some(NAME));
    let (status, body) = not_found();
    let missing = mock!(Client::describe_training_job).sequence().http_status(status, body).build();
    let sent = Arc::default();
    let create = create_rule(h.jobs.journal(), &sent);
    let describe = describe_rule(h.jobs.journal(), vec![completed()]);
    let client = client(&[&missing, &create, &describe]);

    let outcome = super::train::run(&client, &conn(), settings(json!({})), &h.ctx).await.unwrap();

    assert_eq!(outputs(outcome)["job_name"], NAME);
    assert_eq!(h.journal(), [format!("create {NAME}"), format!("describe {NAME}"), "clear".into()]);
    assert!(h.log_text().contains(&format!("training job {NAME} was recorded but never created; creating it now")));
}

#[tokio::test(start_paused = true)]
async fn a_name_already_in_use_is_our_earlier_request_and_is_waited_for() {
    let h = task(None);
    let create = mock!(Client::create_training_job).sequence().http_status(
        400,
        Some(r#"{"__type":"ResourceInUse","message":"Training job names must be unique within an AWS account and region, and a training job with this name already exists"}"#.to_string()),
    );
    let create = create.build();
    let describe = describe_rule(h.jobs.journal(), vec![completed()]);
    let client = client(&[&create, &describe]);

    let outcome = super::train::run(&client, &conn(), settings(json!({})), &h.ctx).await.unwrap();

    let name = recorded_name(&h);
    assert_eq!(outputs(outcome)["job_name"], name.as_str());
    assert!(h.log_text().contains(&format!("training job {name} exists already (an earlier request created it); waiting for it")));
}

#[tokio::test(start_paused = true)]
async fn a_refused_request_forgets_the_recorded_name() {
    let h = task(None);
    let create = mock!(Client::create_training_job).sequence().http_status(
        400,
        Some(r#"{"__type":"ValidationException","message":"Could not assume role arn:aws:iam::123456789012:role/sagemaker-training."}"#.to_string()),
    );
    let create = create.build();
    let client = client(&[&create]);

    let err = super::train::run(&client, &conn(), settings(json!({})), &h.ctx).await.unwrap_err();

    let name = recorded_name(&h);
    assert_eq!(
        err,
        TaskError::fatal(format!("CreateTrainingJob {name}: ValidationException: Could not assume role arn:aws:iam::123456789012:role/sagemaker-training"))
    );
    assert_eq!(h.journal(), [format!("record {JOB_KIND} {name}"), "clear".into()], "no job exists, so nothing is left to reattach to");
}

#[tokio::test(start_paused = true)]
async fn throttling_during_the_poll_is_waited_out() {
    let h = task(Some(NAME));
    let body = Some(r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#.to_string());
    let describe = mock!(Client::describe_training_job)
        .sequence()
        .http_status(400, body.clone())
        .http_status(400, body)
        .output(completed)
        .build();
    let client = client(&[&describe]);

    let outcome = super::train::run(&client, &conn(), settings(json!({})), &h.ctx).await.unwrap();

    assert_eq!(outputs(outcome)["billable_seconds"], 412);
    assert_eq!(describe.num_calls(), 3);
    assert!(
        h.log_text().contains(&format!(
            "poll 1 of {MAX_POLL_FAILURES} allowed in a row failed, trying again in 30s: DescribeTrainingJob {NAME}: AWS in eu-west-1 is throttling requests (ThrottlingException: Rate exceeded), still after 5 tries with backoff"
        )),
        "{}",
        h.log_text()
    );
    assert!(h.log_text().contains("poll 2 of 10 allowed in a row failed, trying again in 1m: "), "the wait doubles:\n{}", h.log_text());
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_task_stops_the_job() {
    let h = task(None);
    let sent = Arc::default();
    let create = create_rule(h.jobs.journal(), &sent);
    let cancel = h.ctx.cancel.clone();
    let describe = mock!(Client::describe_training_job).then_compute_output(move |_| {
        cancel.cancel();
        in_progress(&[(SecondaryStatus::Training, "Training in progress.")])
    });
    let stop = stop_rule(h.jobs.journal());
    let client = client(&[&create, &describe, &stop]);

    let err = super::train::run(&client, &conn(), settings(json!({})), &h.ctx).await.unwrap_err();

    let name = recorded_name(&h);
    assert_eq!(err, TaskError::cancelled());
    assert_eq!(h.journal(), [format!("record {JOB_KIND} {name}"), format!("create {name}"), format!("stop {name}"), "clear".into()]);
    assert!(h.log_text().contains(&format!("stopped training job {name} at SageMaker (StopTrainingJob)")), "{}", h.log_text());
}

#[tokio::test(start_paused = true)]
async fn a_cancel_during_create_training_job_stops_the_job_under_its_recorded_name() {
    let h = task(None);
    let (journal, cancel) = (h.jobs.journal().clone(), h.ctx.cancel.clone());
    let create = mock!(Client::create_training_job)
        .match_requests(move |req| {
            journal.push(format!("create {}", req.training_job_name().unwrap_or("")));
            cancel.cancel();
            true
        })
        .then_output(|| CreateTrainingJobOutput::builder().training_job_arn(ARN).build());
    let stop = stop_rule(h.jobs.journal());
    // No DescribeTrainingJob is scripted: the cancelled attempt does not wait for the job.
    let client = client(&[&create, &stop]);

    let err = super::train::run(&client, &conn(), settings(json!({})), &h.ctx).await.unwrap_err();

    let name = recorded_name(&h);
    assert_eq!(err, TaskError::cancelled());
    assert_eq!(h.journal(), [format!("record {JOB_KIND} {name}"), format!("create {name}"), format!("stop {name}"), "clear".into()]);
}

#[tokio::test(start_paused = true)]
async fn a_name_that_cannot_be_recorded_creates_no_job() {
    let h = task(None);
    h.jobs.refuse_records("cannot write the store: disk full");
    // Nothing is scripted: any request to SageMaker would fail the test.
    let client = client(&[]);

    let err = super::train::run(&client, &conn(), settings(json!({})), &h.ctx).await.unwrap_err();

    assert_eq!(err, TaskError::retryable("cannot write the store: disk full"));
    let refused = h.journal();
    assert_eq!(refused.len(), 1);
    assert!(refused[0].starts_with(&format!("record refused {JOB_KIND} churn-")), "{refused:?}");
}

#[tokio::test(start_paused = true)]
async fn a_stopping_flowctl_leaves_the_job_running_for_the_next_start() {
    let h = task(Some(NAME));
    let (cancel, shutdown) = (h.ctx.cancel.clone(), h.ctx.shutdown.clone());
    let describe = mock!(Client::describe_training_job).then_compute_output(move |_| {
        shutdown.cancel();
        cancel.cancel();
        in_progress(&[])
    });
    // No StopTrainingJob is scripted: sending one would fail the test.
    let client = client(&[&describe]);

    let err = super::train::run(&client, &conn(), settings(json!({})), &h.ctx).await.unwrap_err();

    assert_eq!(err.message, format!("flowctl stopped while training job {NAME} ran; the next start reattaches to it"));
    assert!(h.journal().is_empty(), "the record is kept: {:?}", h.journal());
    assert_eq!(h.jobs.current().map(|j| j.id).as_deref(), Some(NAME));
    assert_eq!(h.log.lines().last().unwrap(), &format!("flowctl is stopping: leaving training job {NAME} running; the next start reattaches"));
}

#[tokio::test(start_paused = true)]
async fn max_runtime_stops_the_job_and_fails_the_task() {
    let h = task(Some(NAME));
    // The job was created 30 minutes ago; max_runtime counts from then, so 30 minutes are left.
    let half_an_hour_ago = SystemTime::now() - Duration::from_secs(1800);
    let running = DescribeTrainingJobOutput::builder()
        .training_job_name(NAME)
        .training_job_status(TrainingJobStatus::InProgress)
        .secondary_status(SecondaryStatus::Training)
        .creation_time(DateTime::from(half_an_hour_ago))
        .build();
    let describe = mock!(Client::describe_training_job).sequence().output(move || running.clone()).repeatedly().build();
    let stop = stop_rule(h.jobs.journal());
    // The describe rule never runs out, so the rules are matched by operation, not in order.
    let client = mock_client!(aws_sdk_sagemaker, RuleMode::MatchAny, [&describe, &stop], |c| c.retry_config(RetryConfig::disabled()));
    let started = tokio::time::Instant::now();

    let err = super::train::run(&client, &conn(), settings(json!({"max_runtime": "1h", "poll_interval": "10m"})), &h.ctx).await.unwrap_err();

    assert_eq!(
        err,
        TaskError::retryable(format!("training job {NAME} ran longer than max_runtime 1h; flowctl stopped it (StopTrainingJob)"))
    );
    assert_eq!(h.journal(), [format!("stop {NAME}"), "clear".into()]);
    let waited = started.elapsed();
    assert!(waited <= Duration::from_secs(1800) && waited > Duration::from_secs(1790), "stopped after {waited:?}, expected 30m");
    // Polls at 0, 10, 20 minutes and at the deadline.
    assert_eq!(describe.num_calls(), 4);
}

/// What `flowctl validate` reports for a task's settings: the field's path and the message.
fn invalid(with: Value) -> (String, String) {
    let mut registry = Registry::new();
    super::register(&mut registry);
    let err = registry.get("sagemaker.train").expect("registered").validate(&with).expect_err("settings must be rejected");
    (err.path, err.message)
}

#[test]
fn mistakes_are_found_at_compile_time_with_the_field() {
    let base = json!({
        "algorithm_specification": {"training_image": IMAGE},
        "role_arn": ROLE,
        "input_data_config": [{"channel_name": "train", "s3_uri": "s3://ml/train/"}],
        "output_data_config": {"s3_output_path": "s3://ml/models"},
        "resource_config": {"instance_type": "ml.m5.xlarge"},
        "stopping_condition": {"max_runtime_in_seconds": 3600},
    });
    let mut registry = Registry::new();
    super::register(&mut registry);
    assert_eq!(registry.get("sagemaker.train").unwrap().validate(&base), Ok(()));
    let with = |path: &[&str], value: Value| {
        let mut w = base.clone();
        let mut node = &mut w;
        for key in &path[..path.len() - 1] {
            node = &mut node[*key];
        }
        node[path[path.len() - 1]] = value;
        w
    };
    assert_eq!(
        invalid(with(&["algorithm_specification", "algorithm_name"], json!("xgb"))),
        ("algorithm_specification".into(), "give either `training_image` or `algorithm_name`, not both".into())
    );
    assert!(invalid(with(&["algorithm_specification", "trainig_image"], json!("x"))).1.starts_with("unknown field `trainig_image`"));
    assert_eq!(invalid(with(&["algorithm_specification", "trainig_image"], json!("x"))).0, "algorithm_specification.trainig_image");
    assert_eq!(
        invalid(with(&["role_arn"], json!("sagemaker-training"))),
        ("role_arn".into(), "\"sagemaker-training\" is not an IAM role ARN; write arn:aws:iam::<account>:role/<name>".into())
    );
    assert_eq!(
        invalid(with(&["input_data_config"], json!([{"channel_name": "train", "s3_uri": "s3://a/"}, {"channel_name": "train", "s3_uri": "s3://b/"}]))),
        ("input_data_config[1].channel_name".into(), "channel \"train\" is defined twice".into())
    );
    assert_eq!(
        invalid(with(&["input_data_config"], json!([{"channel_name": "train", "s3_uri": "ml/train"}]))),
        ("input_data_config[0].s3_uri".into(), "\"ml/train\" is not an S3 URL; write s3://bucket/prefix".into())
    );
    assert!(invalid(with(&["input_data_config"], json!([{"channel_name": "train", "s3_uri": "s3://a/", "distribution": "Sharded"}])))
        .1
        .starts_with("unknown variant `Sharded`"));
    assert_eq!(
        invalid(with(&["resource_config", "instance_type"], json!("m5.xlarge"))),
        ("resource_config.instance_type".into(), "\"m5.xlarge\" is not a SageMaker instance type; they start with ml., e.g. ml.m5.xlarge".into())
    );
    assert_eq!(
        invalid(with(&["resource_config", "instance_count"], json!(0))),
        ("resource_config.instance_count".into(), "must be at least 1".into())
    );
    assert_eq!(
        invalid(with(&["stopping_condition", "max_wait_time_in_seconds"], json!(7200))),
        ("stopping_condition.max_wait_time_in_seconds".into(), "applies only with `enable_managed_spot_training: true`".into())
    );
    assert_eq!(
        invalid(with(&["job_name_prefix"], json!("churn_model"))),
        ("job_name_prefix".into(), "\"churn_model\" may hold only letters, digits and '-', and must start with a letter or digit".into())
    );
    assert_eq!(
        invalid(with(&["max_runtime"], json!("two hours"))).0,
        "max_runtime"
    );
    assert!(invalid(with(&["hyperparameters"], json!({"depth": [1, 2]}))).1.contains("did not match any variant"));
    let missing = {
        let mut w = base.clone();
        w.as_object_mut().unwrap().remove("stopping_condition");
        w
    };
    assert_eq!(invalid(missing), ("".into(), "missing field `stopping_condition`".into()));
}
