//! `sagemaker.train`: creates a training job (CreateTrainingJob), waits for it (DescribeTrainingJob,
//! logging each secondary status once), and outputs the model artifact's S3 path and the billable
//! seconds.
//!
//! The training job is a job of the AWS kit (`aws::job`) that flowctl names: the name is unique per
//! attempt (`<prefix>-<time>-<try>-<run hash>`) and recorded *before* CreateTrainingJob is sent. So
//! a retry or a restarted flowctl always knows the name: it describes that job and waits for it,
//! and creates it only if SageMaker has never heard of it (flowctl stopped between the record and
//! the request). No attempt can leave a training job behind that nobody waits for.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_sagemaker::operation::describe_training_job::DescribeTrainingJobOutput;
use aws_sdk_sagemaker::types::TrainingJobStatus;
use aws_sdk_sagemaker::Client;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use flowctl_engine::connections::AwsConnection;
use flowctl_engine::operator::{ConfigError, ErrorKind, ExternalJob, LogSink, Operator, Outcome, Outputs, TaskContext, TaskError};
use flowctl_engine::template::is_template;
use serde::Deserialize;
use serde_json::Value;

use super::request::{
    AlgorithmSpecification, Channel, CheckpointConfig, OutputDataConfig, ResourceConfig, Scalar, StoppingCondition, TrainingRequest,
    VpcConfig,
};
use crate::aws::describe_service_error;
use crate::aws::job::{self, CancelReason, Describe, Job, Progress, StateLines, Watch};
use crate::aws::settings::{aws_connection, aws_settings, check_duration, parse_duration};

/// The kind of external job `sagemaker.train` records.
pub const JOB_KIND: &str = "sagemaker_training_job";
/// The service name of SageMaker's endpoint in a connection's `endpoints:`.
pub const SERVICE: &str = "sagemaker";
/// How often a job is polled when `poll_interval` is not set.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// The longest training job name SageMaker accepts.
pub const MAX_JOB_NAME: usize = 63;
/// The longest `job_name_prefix`: the name ends with `-<14-digit time>-<try, up to 3 digits>-<6
/// hex digits>`.
pub const MAX_PREFIX: usize = MAX_JOB_NAME - 26;
/// The longest wait between polls after failed ones: a training job takes minutes to hours.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(300);

aws_settings! {
    /// The settings of a `sagemaker.train` task: the CreateTrainingJob request, and how to wait.
    #[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[schemars(rename = "SageMakerTrainConfig")]
    pub struct TrainConfig {
        /// The AWS connection to call SageMaker with [default: aws_default].
        connection,
        /// The start of the job's name (letters, digits and '-', at most 37 characters) [default:
        /// the DAG's and the task's ids]. flowctl appends the time, the try number and a hash of the
        /// run, so each attempt's job has a name of its own.
        pub job_name_prefix: Option<String>,
        /// The training container (image or algorithm) and its input mode.
        pub algorithm_specification: AlgorithmSpecification,
        /// The IAM role SageMaker assumes to read the data and write the model.
        pub role_arn: String,
        /// The input channels, each on S3.
        #[serde(default)]
        pub input_data_config: Vec<Channel>,
        /// Where the model artifacts go.
        pub output_data_config: OutputDataConfig,
        /// The instances that train.
        pub resource_config: ResourceConfig,
        /// SageMaker's own limit on the training time.
        pub stopping_condition: StoppingCondition,
        /// The algorithm's hyperparameters; values are passed as text.
        #[serde(default)]
        pub hyperparameters: BTreeMap<String, Scalar>,
        /// Environment variables of the training container.
        #[serde(default)]
        pub environment: BTreeMap<String, String>,
        /// Tags of the training job.
        #[serde(default)]
        pub tags: BTreeMap<String, String>,
        /// The VPC the instances run in.
        pub vpc_config: Option<VpcConfig>,
        /// Where checkpoints are kept.
        pub checkpoint_config: Option<CheckpointConfig>,
        /// Train on spot instances (set `stopping_condition.max_wait_time_in_seconds`).
        #[serde(default)]
        pub enable_managed_spot_training: bool,
        /// Give the training container no network access.
        #[serde(default)]
        pub enable_network_isolation: bool,
        /// Fail the task, and stop the job, when the job has run this long since its creation (e.g.
        /// `2h`), whatever its own stopping condition says.
        pub max_runtime: Option<String>,
        /// How often to ask whether the job has ended [default: 30s].
        pub poll_interval: Option<String>,
    }
}

impl TrainConfig {
    /// The CreateTrainingJob request.
    pub fn request(&self) -> TrainingRequest<'_> {
        TrainingRequest {
            algorithm_specification: &self.algorithm_specification,
            role_arn: &self.role_arn,
            input_data_config: &self.input_data_config,
            output_data_config: &self.output_data_config,
            resource_config: &self.resource_config,
            stopping_condition: &self.stopping_condition,
            hyperparameters: &self.hyperparameters,
            environment: &self.environment,
            tags: &self.tags,
            vpc_config: self.vpc_config.as_ref(),
            checkpoint_config: self.checkpoint_config.as_ref(),
            enable_managed_spot_training: self.enable_managed_spot_training,
            enable_network_isolation: self.enable_network_isolation,
        }
    }
}

/// Checks a `job_name_prefix`.
fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || prefix.len() > MAX_PREFIX {
        return Err(format!("\"{prefix}\" must be 1 to {MAX_PREFIX} characters (flowctl adds 26 to make each attempt's name unique)"));
    }
    if !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') || !prefix.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("\"{prefix}\" may hold only letters, digits and '-', and must start with a letter or digit"));
    }
    Ok(())
}

/// The prefix made from the DAG's and the task's ids: other characters become '-', runs of '-'
/// collapse, and it is cut to [`MAX_PREFIX`].
pub fn default_prefix(dag_id: &str, task_id: &str) -> String {
    let mut out = String::new();
    for c in format!("{dag_id}-{task_id}").chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.truncate(MAX_PREFIX);
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "flowctl".to_string()
    } else {
        out
    }
}

/// The job's name for one attempt: `<prefix>-<YYYYMMDDhhmmss>-<try>-<6 hex digits of the run
/// id's hash>`, at most 63 characters of `[a-zA-Z0-9-]`.
pub fn job_name(prefix: &str, run_id: &str, try_number: u32, now: SystemTime) -> String {
    let stamp: String = humantime::format_rfc3339_seconds(now).to_string().chars().filter(char::is_ascii_digit).collect();
    // FNV-1a: stable across builds, so the name of a run is the same on every machine.
    let hash = run_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let mut name = format!("{prefix}-{stamp}-{}-{:06x}", try_number.min(999), hash & 0xff_ffff);
    name.truncate(MAX_JOB_NAME);
    name
}

/// The `sagemaker.train` operator.
pub struct Train;

#[async_trait]
impl Operator for Train {
    const NAME: &'static str = "sagemaker.train";
    type Config = TrainConfig;

    fn check(config: &TrainConfig) -> Result<(), ConfigError> {
        if let Some(prefix) = &config.job_name_prefix {
            if !is_template(prefix) {
                check_prefix(prefix).map_err(|e| ConfigError::new("job_name_prefix", e))?;
            }
        }
        config.request().check()?;
        for (field, value) in [("max_runtime", &config.max_runtime), ("poll_interval", &config.poll_interval)] {
            if let Some(text) = value {
                check_duration(field, text)?;
            }
        }
        Ok(())
    }

    async fn execute(&self, config: TrainConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        let conn = aws_connection(&ctx, &config.connection)?;
        let sdk = crate::aws::sdk_config(&conn, SERVICE).await?;
        let client = Client::new(&sdk);
        run(&client, &conn, config, &ctx).await
    }
}

/// One attempt of `sagemaker.train` with a given client.
pub async fn run(client: &Client, conn: &AwsConnection, config: TrainConfig, ctx: &TaskContext) -> Result<Outcome, TaskError> {
    let poll_interval = crate::aws::settings::poll_interval(config.poll_interval.as_deref(), DEFAULT_POLL_INTERVAL)?;
    let max_runtime = config.max_runtime.as_deref().map(|t| parse_duration("max_runtime", t)).transpose().map_err(TaskError::fatal)?;
    if let Some(prefix) = &config.job_name_prefix {
        check_prefix(prefix).map_err(|e| TaskError::fatal(format!("job_name_prefix: {e}")))?;
    }
    let mut training = Training { client, conn, config: &config, max_runtime, name: String::new(), created: false, deadline: None, transitions: 0 };
    let outputs = job::drive(&mut training, ctx, poll_interval).await?;
    Ok(Outcome::Success { outputs })
}

/// The training job of an attempt.
struct Training<'a> {
    client: &'a Client,
    conn: &'a AwsConnection,
    config: &'a TrainConfig,
    max_runtime: Option<Duration>,
    name: String,
    /// Whether SageMaker is known to have the job (it accepted it, or described it).
    created: bool,
    /// When `max_runtime` runs out, once the job's creation time is known.
    deadline: Option<tokio::time::Instant>,
    /// How many secondary status transitions have been logged.
    transitions: usize,
}

impl Training<'_> {
    /// CreateTrainingJob under the recorded name. A job of that name that already exists is ours
    /// (the request was sent before, and its answer lost), so it is waited for, not an error.
    /// Returns what to log.
    async fn create(&mut self) -> Result<String, TaskError> {
        let name = &self.name;
        let line = match self.config.request().apply(self.client.create_training_job(), name).send().await {
            Ok(out) => match out.training_job_arn() {
                Some(arn) => format!("created training job {name} ({arn})"),
                None => format!("created training job {name}"),
            },
            Err(e) if e.code() == Some("ResourceInUse") => format!("training job {name} exists already (an earlier request created it); waiting for it"),
            Err(e) => return Err(describe_service_error(&e, &format!("CreateTrainingJob {name}"), self.conn, Some(SERVICE))),
        };
        self.created = true;
        Ok(line)
    }

    /// Logs each secondary status transition not logged yet.
    fn log_transitions(&mut self, out: &DescribeTrainingJobOutput, watch: &Watch<'_>) {
        let transitions = out.secondary_status_transitions();
        for transition in transitions.iter().skip(self.transitions) {
            let secondary = transition.status().map(|s| s.as_str()).unwrap_or("?");
            match transition.status_message().map(str::trim).filter(|m| !m.is_empty()) {
                Some(message) => watch.line(&format!("  {secondary}: {message}")),
                None => watch.line(&format!("  {secondary}")),
            }
        }
        self.transitions = self.transitions.max(transitions.len());
    }
}

#[async_trait]
impl Describe for Training<'_> {
    type Output = Outputs;
    const MAX_BACKOFF: Duration = MAX_POLL_BACKOFF;

    const STATE_LINES: StateLines = StateLines::Is;

    /// DescribeTrainingJob, logging the status and each secondary status once. A recorded name
    /// SageMaker never heard of is created now; a job older than `max_runtime` is stopped.
    async fn describe(&mut self, watch: &mut Watch<'_>) -> Result<Progress<Outputs>, TaskError> {
        let name = self.name.clone();
        let out = match self.client.describe_training_job().training_job_name(&name).send().await {
            Ok(out) => out,
            Err(e) if !self.created && is_not_found(&e) => {
                // The name was recorded, but flowctl stopped before CreateTrainingJob reached
                // SageMaker: create it now, under the recorded name.
                watch.line(&format!("training job {name} was recorded but never created; creating it now"));
                return match self.create().await {
                    Ok(line) => {
                        watch.line(&line);
                        Ok(Progress::PollWithin(Duration::ZERO))
                    }
                    // Refused: no job exists, so the retry must not look for one.
                    Err(err) if err.kind == ErrorKind::Final => Ok(Progress::Ended(Err(err))),
                    Err(err) => Err(err),
                };
            }
            Err(e) => return Err(describe_service_error(&e, &format!("DescribeTrainingJob {name}"), self.conn, Some(SERVICE))),
        };
        self.created = true;
        watch.state(&format!("training job {name}"), out.training_job_status().map_or("Unknown", |s| s.as_str()));
        self.log_transitions(&out, watch);
        match out.training_job_status() {
            Some(TrainingJobStatus::Completed) => return Ok(Progress::Ended(Ok(outputs(&name, &out)))),
            Some(TrainingJobStatus::Failed) => {
                let reason = out.failure_reason().map(str::trim).filter(|r| !r.is_empty()).unwrap_or("no failure reason given");
                let message = format!("training job {name} failed: {reason}");
                // A ClientError is the request's fault (data, role, limits): trying again cannot
                // help. Algorithm and capacity errors may pass.
                let err = if reason.starts_with("ClientError") { TaskError::fatal(message) } else { TaskError::retryable(message) };
                return Ok(Progress::Ended(Err(err)));
            }
            Some(TrainingJobStatus::Stopped) => {
                let secondary = out.secondary_status().map(|s| s.as_str().to_string()).unwrap_or_default();
                return Ok(Progress::Ended(Err(TaskError::fatal(format!(
                    "training job {name} was stopped outside flowctl (secondary status {secondary}); its model, if any, is under {}",
                    self.config.output_data_config.s3_output_path
                )))));
            }
            _ => {}
        }
        let Some(limit) = self.max_runtime else {
            return Ok(Progress::Running);
        };
        let deadline = *self.deadline.get_or_insert_with(|| runtime_deadline(&out, limit));
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Progress::Stop(TaskError::retryable(format!(
                "training job {name} ran longer than max_runtime {}; flowctl stopped it (StopTrainingJob)",
                humantime::format_duration(limit)
            ))));
        }
        Ok(Progress::PollWithin(deadline - now))
    }
}

#[async_trait]
impl Job for Training<'_> {
    const KIND: &'static str = JOB_KIND;

    fn choose_name(&mut self, ctx: &TaskContext) -> bool {
        let prefix = self.config.job_name_prefix.clone().unwrap_or_else(|| default_prefix(&ctx.dag_id, &ctx.task_id));
        self.name = job_name(&prefix, &ctx.run_id, ctx.try_number, SystemTime::now());
        true
    }

    async fn submit(&mut self, _ctx: &TaskContext) -> Result<Vec<String>, TaskError> {
        Ok(vec![self.create().await?])
    }

    fn record(&self) -> ExternalJob {
        ExternalJob { kind: JOB_KIND.to_string(), id: self.name.clone(), detail: BTreeMap::new() }
    }

    fn reattach(&mut self, job: &ExternalJob, log: &dyn LogSink) -> bool {
        log.line(&format!("reattaching to training job {}, recorded by an earlier attempt (no new job is created)", job.id));
        self.name = job.id.clone();
        true
    }

    /// StopTrainingJob: SageMaker keeps the model trained so far.
    async fn cancel(&mut self, _why: CancelReason, log: &dyn LogSink) -> Result<(), TaskError> {
        let name = &self.name;
        self.client
            .stop_training_job()
            .training_job_name(name)
            .send()
            .await
            .map_err(|e| describe_service_error(&e, &format!("StopTrainingJob {name}"), self.conn, Some(SERVICE)))?;
        log.line(&format!("stopped training job {name} at SageMaker (StopTrainingJob)"));
        Ok(())
    }

    fn name(&self) -> String {
        format!("training job {}", self.name)
    }

    fn by_hand(&self) -> String {
        format!("the job may still run: stop it in the SageMaker console or with: aws sagemaker stop-training-job --training-job-name {}", self.name)
    }
}

/// When `max_runtime` runs out, on the tokio clock: counted from the job's creation (so a
/// reattached job keeps its age), or from now when SageMaker does not say.
fn runtime_deadline(out: &DescribeTrainingJobOutput, limit: Duration) -> tokio::time::Instant {
    let age = out
        .creation_time()
        .and_then(|t| SystemTime::try_from(*t).ok())
        .and_then(|created| SystemTime::now().duration_since(created).ok())
        .unwrap_or_default();
    tokio::time::Instant::now() + limit.saturating_sub(age)
}

/// Whether SageMaker says the job does not exist (ValidationException "Requested resource not
/// found" from AWS, "Could not find training job" from moto).
fn is_not_found<E: ProvideErrorMetadata>(err: &E) -> bool {
    let message = err.message().unwrap_or("").to_ascii_lowercase();
    matches!(err.code(), Some("ValidationException" | "ResourceNotFound"))
        && (message.contains("not found") || message.contains("could not find") || message.contains("does not exist"))
}

/// The outputs of a completed job.
fn outputs(name: &str, out: &DescribeTrainingJobOutput) -> Outputs {
    let mut outputs = Outputs::new();
    outputs.insert("job_name".into(), name.into());
    outputs.insert("job_arn".into(), out.training_job_arn().map_or(Value::Null, Value::from));
    outputs.insert(
        "model_artifacts".into(),
        out.model_artifacts().and_then(|m| m.s3_model_artifacts()).map_or(Value::Null, Value::from),
    );
    outputs.insert("billable_seconds".into(), out.billable_time_in_seconds().map_or(Value::Null, Value::from));
    outputs.insert("training_time_seconds".into(), out.training_time_in_seconds().map_or(Value::Null, Value::from));
    let metrics: serde_json::Map<String, Value> = out
        .final_metric_data_list()
        .iter()
        .filter_map(|m| {
            let value = serde_json::Number::from_f64(f64::from(m.value()?))?;
            Some((m.metric_name()?.to_string(), Value::Number(value)))
        })
        .collect();
    outputs.insert("metrics".into(), Value::Object(metrics));
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_unique_per_attempt_and_within_sagemakers_rules() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_294_400); // 2024-03-01T12:00:00Z
        let name = job_name("churn", "scheduled__2024-03-01T00:00:00+00:00", 2, at);
        assert!(name.starts_with("churn-20240301120000-2-"), "{name}");
        assert_eq!(name.len(), "churn-20240301120000-2-".len() + 6);
        assert_ne!(name, job_name("churn", "scheduled__2024-03-02T00:00:00+00:00", 2, at), "another run, another name");
        assert_ne!(name, job_name("churn", "scheduled__2024-03-01T00:00:00+00:00", 3, at), "another try, another name");
        let longest = job_name(&"p".repeat(MAX_PREFIX), "r", 999, at);
        assert_eq!(longest.len(), MAX_JOB_NAME);
        assert!(longest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn the_default_prefix_comes_from_the_dag_and_task() {
        assert_eq!(default_prefix("ml_daily", "train.model"), "ml-daily-train-model");
        assert_eq!(default_prefix("__x", "__"), "x");
        assert_eq!(default_prefix("_", "_"), "flowctl");
        assert_eq!(default_prefix(&"a".repeat(50), "t").len(), MAX_PREFIX);
        assert!(check_prefix(&default_prefix(&"a_".repeat(30), "t")).is_ok());
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("churn-v2").is_ok());
        assert_eq!(
            check_prefix("churn_v2").unwrap_err(),
            "\"churn_v2\" may hold only letters, digits and '-', and must start with a letter or digit"
        );
        assert!(check_prefix("-x").is_err());
        assert!(check_prefix(&"x".repeat(MAX_PREFIX + 1)).unwrap_err().contains("1 to 37 characters"));
    }
}
