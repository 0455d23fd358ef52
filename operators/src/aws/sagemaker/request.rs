//! The CreateTrainingJob request as a task writes it: flowctl's own serde types (snake_case keys,
//! `deny_unknown_fields`, documented for the JSON schema), checked at compile time and mapped to
//! the SDK's builders.
//!
//! Only what a training task needs is here (image or algorithm, role, S3 channels, output path,
//! instances, stopping condition, hyperparameters, environment, tags, VPC, checkpoints, managed
//! spot); every field keeps the name it has in the API, so AWS's documentation applies.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_sagemaker::operation::create_training_job::builders::CreateTrainingJobFluentBuilder;
use aws_sdk_sagemaker::types;
use flowctl_engine::operator::ConfigError;
use flowctl_engine::template::is_template;
use serde::Deserialize;

use crate::aws::settings::check_s3_url;

/// The most channels a training job takes.
const MAX_CHANNELS: usize = 20;
/// The most hyperparameters a training job takes.
const MAX_HYPERPARAMETERS: usize = 100;
/// The most tags a resource takes.
const MAX_TAGS: usize = 50;
/// The longest `max_runtime_in_seconds` SageMaker accepts (28 days).
const MAX_RUNTIME_SECONDS: u32 = 28 * 24 * 3600;

/// How training data reaches the container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SageMakerInputMode")]
pub enum InputMode {
    /// Copied to the instance's volume before training starts.
    #[default]
    File,
    /// Streamed through a named pipe.
    Pipe,
    /// Streamed from S3 on demand, seen as files.
    FastFile,
}

impl InputMode {
    fn sdk(self) -> types::TrainingInputMode {
        match self {
            InputMode::File => types::TrainingInputMode::File,
            InputMode::Pipe => types::TrainingInputMode::Pipe,
            InputMode::FastFile => types::TrainingInputMode::Fastfile,
        }
    }
}

/// The container that trains, and how it reads its data.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SageMakerAlgorithmSpecification")]
pub struct AlgorithmSpecification {
    /// The training image's registry path, e.g. `<account>.dkr.ecr.<region>.amazonaws.com/xgboost:1.7-1`.
    /// Give this or `algorithm_name`.
    pub training_image: Option<String>,
    /// The name or ARN of an algorithm resource (AWS Marketplace). Give this or `training_image`.
    pub algorithm_name: Option<String>,
    /// File, Pipe or FastFile [default: File].
    #[serde(default)]
    pub training_input_mode: InputMode,
    /// Metrics to read from the training log, each a name and a regular expression.
    #[serde(default)]
    pub metric_definitions: Vec<MetricDefinition>,
    /// The container's entrypoint, replacing the image's.
    #[serde(default)]
    pub container_entrypoint: Vec<String>,
    /// Arguments for the entrypoint.
    #[serde(default)]
    pub container_arguments: Vec<String>,
}

/// A metric read from the training log.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SageMakerMetricDefinition")]
pub struct MetricDefinition {
    /// The metric's name, e.g. `validation:auc`.
    pub name: String,
    /// The regular expression whose first group is the value.
    pub regex: String,
}

/// What the S3 URI names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SageMakerS3DataType")]
pub enum S3DataType {
    /// Every object under the prefix.
    #[default]
    S3Prefix,
    /// A manifest file listing the objects.
    ManifestFile,
    /// An augmented manifest (JSON lines with the data's attributes).
    AugmentedManifestFile,
}

/// How a channel's objects are spread over the instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SageMakerDistribution")]
pub enum Distribution {
    /// Every instance gets every object.
    #[default]
    FullyReplicated,
    /// Each instance gets a share of the objects.
    ShardedByS3Key,
}

/// How a channel's objects are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "SageMakerCompression")]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip.
    Gzip,
}

/// One input channel, read from S3.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SageMakerChannel")]
pub struct Channel {
    /// The channel's name, which the algorithm knows it by (`train`, `validation`...).
    pub channel_name: String,
    /// The `s3://` prefix (or manifest) of the data.
    pub s3_uri: String,
    /// S3Prefix, ManifestFile or AugmentedManifestFile [default: S3Prefix].
    #[serde(default)]
    pub s3_data_type: S3DataType,
    /// The data's MIME type, e.g. `text/csv` or `application/x-recordio-protobuf`.
    pub content_type: Option<String>,
    /// FullyReplicated or ShardedByS3Key [default: FullyReplicated].
    #[serde(default)]
    pub distribution: Distribution,
    /// None or Gzip.
    pub compression_type: Option<Compression>,
    /// This channel's input mode, over `algorithm_specification.training_input_mode`.
    pub input_mode: Option<InputMode>,
}

/// Where the model goes.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SageMakerOutputDataConfig")]
pub struct OutputDataConfig {
    /// The `s3://` prefix the model artifacts are written under (`<path>/<job>/output/model.tar.gz`).
    pub s3_output_path: String,
    /// A KMS key to encrypt the artifacts with.
    pub kms_key_id: Option<String>,
}

/// The instances that train.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SageMakerResourceConfig")]
pub struct ResourceConfig {
    /// The instance type, e.g. `ml.m5.xlarge`.
    pub instance_type: String,
    /// How many instances [default: 1].
    #[serde(default = "one")]
    pub instance_count: u32,
    /// The storage volume of each instance, in GB [default: 30].
    #[serde(default = "thirty")]
    pub volume_size_in_gb: u32,
    /// A KMS key to encrypt the volumes with.
    pub volume_kms_key_id: Option<String>,
}

fn one() -> u32 {
    1
}

fn thirty() -> u32 {
    30
}

/// When SageMaker itself stops the job.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SageMakerStoppingCondition")]
pub struct StoppingCondition {
    /// The longest the job may train, in seconds (SageMaker stops it then, and keeps the model).
    pub max_runtime_in_seconds: u32,
    /// Managed spot training only: the longest to wait for spot capacity and train, in seconds
    /// (at least `max_runtime_in_seconds`).
    pub max_wait_time_in_seconds: Option<u32>,
}

/// The VPC the instances run in.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SageMakerVpcConfig")]
pub struct VpcConfig {
    /// Security group ids.
    pub security_group_ids: Vec<String>,
    /// Subnet ids.
    pub subnets: Vec<String>,
}

/// Where checkpoints are kept (managed spot training resumes from them).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SageMakerCheckpointConfig")]
pub struct CheckpointConfig {
    /// The `s3://` prefix of the checkpoints.
    pub s3_uri: String,
    /// The folder in the container [default: /opt/ml/checkpoints].
    pub local_path: Option<String>,
}

/// A hyperparameter's value; SageMaker passes every value as text.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "SageMakerHyperparameterValue")]
pub enum Scalar {
    /// Text.
    Text(String),
    /// A whole number.
    Integer(i64),
    /// A number with a fraction.
    Number(f64),
    /// true or false.
    Bool(bool),
}

impl Scalar {
    /// The value as text.
    pub fn to_text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Integer(n) => n.to_string(),
            Scalar::Number(x) => x.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// The CreateTrainingJob request of a task, less the job's name (flowctl makes it).
#[derive(Debug, Clone)]
pub struct TrainingRequest<'a> {
    /// The container.
    pub algorithm_specification: &'a AlgorithmSpecification,
    /// The role SageMaker assumes.
    pub role_arn: &'a str,
    /// The input channels.
    pub input_data_config: &'a [Channel],
    /// The output.
    pub output_data_config: &'a OutputDataConfig,
    /// The instances.
    pub resource_config: &'a ResourceConfig,
    /// SageMaker's own limit.
    pub stopping_condition: &'a StoppingCondition,
    /// Hyperparameters.
    pub hyperparameters: &'a BTreeMap<String, Scalar>,
    /// Environment variables of the container.
    pub environment: &'a BTreeMap<String, String>,
    /// Tags.
    pub tags: &'a BTreeMap<String, String>,
    /// The VPC.
    pub vpc_config: Option<&'a VpcConfig>,
    /// Checkpoints.
    pub checkpoint_config: Option<&'a CheckpointConfig>,
    /// Managed spot training.
    pub enable_managed_spot_training: bool,
    /// No network access for the container.
    pub enable_network_isolation: bool,
}

impl TrainingRequest<'_> {
    /// Checks what the API would reject, with the field's path under `with:`.
    pub fn check(&self) -> Result<(), ConfigError> {
        let spec = self.algorithm_specification;
        match (&spec.training_image, &spec.algorithm_name) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new("algorithm_specification", "give either `training_image` or `algorithm_name`, not both"))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    "algorithm_specification",
                    "give `training_image` (a container image) or `algorithm_name` (an algorithm resource)",
                ))
            }
            (Some(image), None) if image.trim().is_empty() => {
                return Err(ConfigError::new("algorithm_specification.training_image", "must not be empty"))
            }
            _ => {}
        }
        for (i, metric) in spec.metric_definitions.iter().enumerate() {
            if metric.name.trim().is_empty() || metric.regex.trim().is_empty() {
                return Err(ConfigError::new(format!("algorithm_specification.metric_definitions[{i}]"), "needs a `name` and a `regex`"));
            }
        }
        check_role("role_arn", self.role_arn)?;
        if self.input_data_config.len() > MAX_CHANNELS {
            return Err(ConfigError::new("input_data_config", format!("{} channels; a training job takes at most {MAX_CHANNELS}", self.input_data_config.len())));
        }
        for (i, channel) in self.input_data_config.iter().enumerate() {
            let name = &channel.channel_name;
            let valid = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c));
            if !valid && !is_template(name) {
                return Err(ConfigError::new(
                    format!("input_data_config[{i}].channel_name"),
                    format!("\"{name}\" is not a channel name: 1 to 64 letters, digits, '.', '-' or '_'"),
                ));
            }
            if self.input_data_config[..i].iter().any(|c| &c.channel_name == name) {
                return Err(ConfigError::new(format!("input_data_config[{i}].channel_name"), format!("channel \"{name}\" is defined twice")));
            }
            check_s3_url(&format!("input_data_config[{i}].s3_uri"), &channel.s3_uri)?;
        }
        check_s3_url("output_data_config.s3_output_path", &self.output_data_config.s3_output_path)?;
        let resources = self.resource_config;
        if !is_template(&resources.instance_type) && !resources.instance_type.starts_with("ml.") {
            return Err(ConfigError::new(
                "resource_config.instance_type",
                format!("\"{}\" is not a SageMaker instance type; they start with ml., e.g. ml.m5.xlarge", resources.instance_type),
            ));
        }
        if resources.instance_count == 0 {
            return Err(ConfigError::new("resource_config.instance_count", "must be at least 1"));
        }
        if !(1..=16384).contains(&resources.volume_size_in_gb) {
            return Err(ConfigError::new("resource_config.volume_size_in_gb", "must be 1 to 16384 GB"));
        }
        let stop = self.stopping_condition;
        if !(1..=MAX_RUNTIME_SECONDS).contains(&stop.max_runtime_in_seconds) {
            return Err(ConfigError::new(
                "stopping_condition.max_runtime_in_seconds",
                format!("must be 1 to {MAX_RUNTIME_SECONDS} seconds (28 days)"),
            ));
        }
        match stop.max_wait_time_in_seconds {
            Some(_) if !self.enable_managed_spot_training => {
                return Err(ConfigError::new(
                    "stopping_condition.max_wait_time_in_seconds",
                    "applies only with `enable_managed_spot_training: true`",
                ))
            }
            Some(wait) if wait < stop.max_runtime_in_seconds => {
                return Err(ConfigError::new(
                    "stopping_condition.max_wait_time_in_seconds",
                    format!("{wait} is less than max_runtime_in_seconds ({}); the wait includes the training time", stop.max_runtime_in_seconds),
                ))
            }
            _ => {}
        }
        if self.hyperparameters.len() > MAX_HYPERPARAMETERS {
            return Err(ConfigError::new("hyperparameters", format!("{} entries; a training job takes at most {MAX_HYPERPARAMETERS}", self.hyperparameters.len())));
        }
        for (key, value) in self.hyperparameters {
            if key.len() > 256 || value.to_text().len() > 2500 {
                return Err(ConfigError::new(format!("hyperparameters.{key}"), "keys are at most 256 characters and values at most 2500"));
            }
        }
        if self.tags.len() > MAX_TAGS {
            return Err(ConfigError::new("tags", format!("{} tags; a training job takes at most {MAX_TAGS}", self.tags.len())));
        }
        if let Some(checkpoints) = self.checkpoint_config {
            check_s3_url("checkpoint_config.s3_uri", &checkpoints.s3_uri)?;
        }
        if let Some(vpc) = self.vpc_config {
            if vpc.security_group_ids.is_empty() || vpc.subnets.is_empty() {
                return Err(ConfigError::new("vpc_config", "needs at least one of `security_group_ids` and one of `subnets`"));
            }
        }
        Ok(())
    }

    /// The CreateTrainingJob call for the job `name`.
    pub fn apply(&self, call: CreateTrainingJobFluentBuilder, name: &str) -> CreateTrainingJobFluentBuilder {
        let spec = self.algorithm_specification;
        let nonempty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let algorithm = types::AlgorithmSpecification::builder()
            .set_training_image(spec.training_image.clone())
            .set_algorithm_name(spec.algorithm_name.clone())
            .training_input_mode(spec.training_input_mode.sdk())
            .set_metric_definitions((!spec.metric_definitions.is_empty()).then(|| {
                spec.metric_definitions.iter().map(|m| types::MetricDefinition::builder().name(&m.name).regex(&m.regex).build()).collect()
            }))
            .set_container_entrypoint(nonempty(&spec.container_entrypoint))
            .set_container_arguments(nonempty(&spec.container_arguments))
            .build();
        let channels: Vec<types::Channel> = self
            .input_data_config
            .iter()
            .map(|c| {
                let source = types::S3DataSource::builder()
                    .s3_uri(&c.s3_uri)
                    .s3_data_type(match c.s3_data_type {
                        S3DataType::S3Prefix => types::S3DataType::S3Prefix,
                        S3DataType::ManifestFile => types::S3DataType::ManifestFile,
                        S3DataType::AugmentedManifestFile => types::S3DataType::AugmentedManifestFile,
                    })
                    .s3_data_distribution_type(match c.distribution {
                        Distribution::FullyReplicated => types::S3DataDistribution::FullyReplicated,
                        Distribution::ShardedByS3Key => types::S3DataDistribution::ShardedByS3Key,
                    })
                    .build();
                types::Channel::builder()
                    .channel_name(&c.channel_name)
                    .data_source(types::DataSource::builder().s3_data_source(source).build())
                    .set_content_type(c.content_type.clone())
                    .set_compression_type(c.compression_type.map(|z| match z {
                        Compression::None => types::CompressionType::None,
                        Compression::Gzip => types::CompressionType::Gzip,
                    }))
                    .set_input_mode(c.input_mode.map(InputMode::sdk))
                    .build()
            })
            .collect();
        let output = types::OutputDataConfig::builder()
            .s3_output_path(&self.output_data_config.s3_output_path)
            .set_kms_key_id(self.output_data_config.kms_key_id.clone())
            .build();
        let resources = self.resource_config;
        let resources = types::ResourceConfig::builder()
            .instance_type(types::TrainingInstanceType::from(resources.instance_type.as_str()))
            .instance_count(resources.instance_count as i32)
            .volume_size_in_gb(resources.volume_size_in_gb as i32)
            .set_volume_kms_key_id(resources.volume_kms_key_id.clone())
            .build();
        let stop = types::StoppingCondition::builder()
            .max_runtime_in_seconds(self.stopping_condition.max_runtime_in_seconds as i32)
            .set_max_wait_time_in_seconds(self.stopping_condition.max_wait_time_in_seconds.map(|s| s as i32))
            .build();
        let hyperparameters: HashMap<String, String> = self.hyperparameters.iter().map(|(k, v)| (k.clone(), v.to_text())).collect();
        let environment: HashMap<String, String> = self.environment.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let tags: Vec<types::Tag> = self.tags.iter().map(|(k, v)| types::Tag::builder().key(k).value(v).build()).collect();
        let mut call = call
            .training_job_name(name)
            .algorithm_specification(algorithm)
            .role_arn(self.role_arn)
            .set_input_data_config((!channels.is_empty()).then_some(channels))
            .output_data_config(output)
            .resource_config(resources)
            .stopping_condition(stop)
            .set_hyper_parameters((!hyperparameters.is_empty()).then_some(hyperparameters))
            .set_environment((!environment.is_empty()).then_some(environment))
            .set_tags((!tags.is_empty()).then_some(tags));
        if let Some(vpc) = self.vpc_config {
            call = call.vpc_config(
                types::VpcConfig::builder()
                    .set_security_group_ids(Some(vpc.security_group_ids.clone()))
                    .set_subnets(Some(vpc.subnets.clone()))
                    .build(),
            );
        }
        if let Some(checkpoints) = self.checkpoint_config {
            call = call.checkpoint_config(
                types::CheckpointConfig::builder().s3_uri(&checkpoints.s3_uri).set_local_path(checkpoints.local_path.clone()).build(),
            );
        }
        if self.enable_managed_spot_training {
            call = call.enable_managed_spot_training(true);
        }
        if self.enable_network_isolation {
            call = call.enable_network_isolation(true);
        }
        call
    }
}

/// Checks an IAM role ARN (unless it is a template).
pub fn check_role(path: &str, role: &str) -> Result<(), ConfigError> {
    if is_template(role) || (role.starts_with("arn:") && role.contains(":role/")) {
        return Ok(());
    }
    Err(ConfigError::new(path, format!("\"{role}\" is not an IAM role ARN; write arn:aws:iam::<account>:role/<name>")))
}
