//! `emr.create_cluster`'s settings: the RunJobFlow request as a DAG file writes it: snake_case keys with the API's names, checked
//! at compile time, mapped onto the SDK's builders (the SDK's types cannot be deserialized).
//!
//! It covers what clusters for batch pipelines use: release label, instance groups or fleets
//! (with EBS volumes, spot prices), applications, log URI, bootstrap actions, configurations,
//! roles, tags, keep-alive and termination protection, security configuration, step concurrency,
//! idle auto-termination, and steps to run at start.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_emr::operation::run_job_flow::builders::RunJobFlowFluentBuilder;
use aws_sdk_emr::types::{
    Application, AutoTerminationPolicy, BootstrapActionConfig, Configuration, EbsBlockDeviceConfig, EbsConfiguration, InstanceFleetConfig,
    InstanceFleetType, InstanceGroupConfig, InstanceRoleType, InstanceTypeConfig, JobFlowInstancesConfig, MarketType, ScriptBootstrapActionConfig, Tag,
    VolumeSpecification,
};
use flowctl_engine::operator::ConfigError;
use flowctl_engine::template::is_template;
use serde::Deserialize;

use super::steps::{build_steps, check_steps, Arg, FailureAction, StepSpec};
use crate::aws::settings::aws_settings;

/// The service role when none is set: the one `aws emr create-default-roles` creates.
pub const DEFAULT_SERVICE_ROLE: &str = "EMR_DefaultRole";
/// The instance profile when none is set: the one `aws emr create-default-roles` creates.
pub const DEFAULT_JOB_FLOW_ROLE: &str = "EMR_EC2_DefaultRole";
/// EMR's bounds on the idle time before auto-termination.
const IDLE_TIMEOUT_RANGE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(7 * 24 * 3600));

aws_settings! {
    /// The settings of an `emr.create_cluster` task: RunJobFlow's request in snake_case, and how to
    /// wait for the cluster.
    #[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct ClusterSpec {
        /// The cluster's name.
        pub name: String,
        /// The EMR release, e.g. `emr-7.2.0`.
        pub release_label: String,
        /// The instances: groups or fleets, network, keep-alive.
        pub instances: Instances,
        /// Applications to install, e.g. `[Hadoop, Hive, Spark, Sqoop]`.
        #[serde(default)]
        pub applications: Vec<String>,
        /// Where EMR writes the cluster's and steps' logs, e.g. `s3://logs/emr/` (step failures name
        /// their log file under it).
        pub log_uri: Option<String>,
        /// Scripts run on every node before applications start.
        #[serde(default)]
        pub bootstrap_actions: Vec<BootstrapAction>,
        /// Application settings, e.g. classification `hive-site` or `spark-defaults`.
        #[serde(default)]
        pub configurations: Vec<ClusterConfiguration>,
        /// The IAM role EMR acts with [default: EMR_DefaultRole].
        pub service_role: Option<String>,
        /// The instance profile of the cluster's EC2 instances [default: EMR_EC2_DefaultRole].
        pub job_flow_role: Option<String>,
        /// Tags on the cluster and its instances.
        #[serde(default)]
        pub tags: BTreeMap<String, Arg>,
        /// Whether every IAM user of the account sees the cluster [default: true].
        #[serde(default = "yes")]
        pub visible_to_all_users: bool,
        /// An EMR security configuration's name (encryption, Kerberos).
        pub security_configuration: Option<String>,
        /// How many steps may run at once, 1 to 256 [default: 1].
        pub step_concurrency_level: Option<i32>,
        /// Terminate the cluster after it has been idle this long, e.g. `1h` (60s to 7 days): a
        /// safety net for a forgotten cluster.
        pub auto_termination_idle_timeout: Option<String>,
        /// The size of each instance's root volume, in GiB.
        pub ebs_root_volume_size: Option<i32>,
        /// A custom AMI for the instances.
        pub custom_ami_id: Option<String>,
        /// Steps to run once the cluster is up (a transient cluster with
        /// `keep_job_flow_alive_when_no_steps: false` terminates after them). The task does not wait
        /// for them: use `emr.add_steps` to wait for steps and get their ids.
        #[serde(default)]
        pub steps: Vec<StepSpec>,
        // The operator's own settings, beside the request (serde's flatten does not work with
        // deny_unknown_fields).
        /// Terminate the cluster when it fails to become ready: the wait gives up on polling errors,
        /// or the cluster ends up in a state other than WAITING or RUNNING [default: false].
        #[serde(default)]
        pub terminate_on_failure: bool,
        /// How long to wait between two polls of the cluster, e.g. `30s` [default: 30s].
        pub poll_interval: Option<String>,
        connection,
    }
}

fn yes() -> bool {
    true
}

/// The cluster's instances (RunJobFlow's `Instances`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Instances {
    /// Instance groups: one MASTER, at most one CORE, any TASK groups. Give these or
    /// `instance_fleets`.
    #[serde(default)]
    pub instance_groups: Vec<InstanceGroup>,
    /// Instance fleets: one MASTER, at most one CORE, at most one TASK. Give these or
    /// `instance_groups`.
    #[serde(default)]
    pub instance_fleets: Vec<InstanceFleet>,
    /// The EC2 key pair for SSH to the primary node.
    pub ec2_key_name: Option<String>,
    /// The subnet to launch in (instance groups).
    pub ec2_subnet_id: Option<String>,
    /// Subnets EMR picks from (instance fleets).
    #[serde(default)]
    pub ec2_subnet_ids: Vec<String>,
    /// The security group EMR manages for the primary node.
    pub emr_managed_master_security_group: Option<String>,
    /// The security group EMR manages for core and task nodes.
    pub emr_managed_slave_security_group: Option<String>,
    /// The security group for EMR's access in a private subnet.
    pub service_access_security_group: Option<String>,
    /// More security groups for the primary node.
    #[serde(default)]
    pub additional_master_security_groups: Vec<String>,
    /// More security groups for core and task nodes.
    #[serde(default)]
    pub additional_slave_security_groups: Vec<String>,
    /// Keep the cluster when it has no steps left (WAITING), so later tasks can add steps; when
    /// false it terminates after its last step [default: true, unlike the API's false].
    #[serde(default = "yes", alias = "keep_alive")]
    pub keep_job_flow_alive_when_no_steps: bool,
    /// Refuse TerminateJobFlows until protection is turned off [default: false].
    #[serde(default)]
    pub termination_protected: bool,
}

/// A node type: the primary node, core nodes (HDFS) or task nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub enum Role {
    /// The primary node.
    #[serde(rename = "MASTER", alias = "master")]
    Master,
    /// Core nodes.
    #[serde(rename = "CORE", alias = "core")]
    Core,
    /// Task nodes.
    #[serde(rename = "TASK", alias = "task")]
    Task,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Master => "MASTER",
            Role::Core => "CORE",
            Role::Task => "TASK",
        }
    }
}

/// On-demand or spot instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
pub enum Market {
    /// On-demand.
    #[default]
    #[serde(rename = "ON_DEMAND", alias = "on_demand")]
    OnDemand,
    /// Spot.
    #[serde(rename = "SPOT", alias = "spot")]
    Spot,
}

/// An instance group.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceGroup {
    /// The group's name [default: its role in lower case].
    pub name: Option<String>,
    /// MASTER, CORE or TASK.
    pub instance_role: Role,
    /// The EC2 instance type, e.g. `m5.xlarge`.
    pub instance_type: String,
    /// How many instances (MASTER: 1, or 3 for high availability).
    pub instance_count: i32,
    /// ON_DEMAND or SPOT [default: ON_DEMAND].
    #[serde(default)]
    pub market: Market,
    /// The highest spot price in USD per hour, e.g. `"0.10"` [default: the on-demand price].
    pub bid_price: Option<String>,
    /// EBS volumes attached to each instance.
    #[serde(default)]
    pub ebs_volumes: Vec<EbsVolume>,
}

/// An EBS volume specification.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EbsVolume {
    /// The size in GiB.
    pub size_in_gb: i32,
    /// gp3, gp2, io1, st1, sc1 or standard [default: gp3].
    pub volume_type: Option<String>,
    /// Provisioned IOPS (io1, gp3).
    pub iops: Option<i32>,
    /// Throughput in MiB/s (gp3).
    pub throughput: Option<i32>,
    /// How many such volumes per instance [default: 1].
    pub volumes_per_instance: Option<i32>,
}

/// An instance fleet.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceFleet {
    /// The fleet's name [default: its type in lower case].
    pub name: Option<String>,
    /// MASTER, CORE or TASK.
    pub instance_fleet_type: Role,
    /// On-demand capacity units to provision.
    pub target_on_demand_capacity: Option<i32>,
    /// Spot capacity units to provision.
    pub target_spot_capacity: Option<i32>,
    /// The instance types EMR may pick from.
    pub instance_type_configs: Vec<InstanceTypeSpec>,
}

/// One instance type of a fleet.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceTypeSpec {
    /// The EC2 instance type.
    pub instance_type: String,
    /// Capacity units one instance counts for [default: 1].
    pub weighted_capacity: Option<i32>,
    /// The highest spot price in USD per hour.
    pub bid_price: Option<String>,
    /// The highest spot price as a percentage of the on-demand price.
    pub bid_price_as_percentage_of_on_demand_price: Option<f64>,
    /// EBS volumes attached to each instance.
    #[serde(default)]
    pub ebs_volumes: Vec<EbsVolume>,
}

/// A bootstrap action: a script run on every node as it starts.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BootstrapAction {
    /// The action's name.
    pub name: String,
    /// The script, e.g. `s3://code/bootstrap/install-jdbc.sh`.
    pub path: String,
    /// The script's arguments.
    #[serde(default)]
    pub args: Vec<Arg>,
}

/// Settings of one application configuration file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfiguration {
    /// The classification, e.g. `hive-site`, `spark-defaults`, `spark-env`.
    pub classification: String,
    /// The settings.
    #[serde(default)]
    pub properties: BTreeMap<String, Arg>,
    /// Nested classifications (e.g. `export` under `spark-env`).
    #[serde(default)]
    pub configurations: Vec<ClusterConfiguration>,
}

impl ClusterSpec {
    /// Checks what types alone cannot, at compile time.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::new("name", "is empty; name the cluster"));
        }
        if self.name.chars().count() > 256 {
            return Err(ConfigError::new("name", "is longer than the 256 characters EMR accepts"));
        }
        if !is_template(&self.release_label) && !self.release_label.starts_with("emr-") {
            return Err(ConfigError::new(
                "release_label",
                format!("\"{}\" is not an EMR release label; write e.g. emr-7.2.0 (aws emr list-release-labels lists them)", self.release_label),
            ));
        }
        self.instances.check()?;
        if let Some(uri) = &self.log_uri {
            if !is_template(uri) && !uri.trim_start().to_ascii_lowercase().starts_with("s3://") {
                return Err(ConfigError::new("log_uri", format!("\"{uri}\" is not an s3:// URL; write e.g. s3://logs/emr/")));
            }
        }
        for (i, app) in self.applications.iter().enumerate() {
            if app.trim().is_empty() {
                return Err(ConfigError::new(format!("applications[{i}]"), "is empty; name an application, e.g. Hive"));
            }
        }
        for (i, action) in self.bootstrap_actions.iter().enumerate() {
            if action.name.trim().is_empty() {
                return Err(ConfigError::new(format!("bootstrap_actions[{i}].name"), "is empty"));
            }
            if action.path.trim().is_empty() {
                return Err(ConfigError::new(format!("bootstrap_actions[{i}].path"), "is empty; give the script, e.g. s3://code/bootstrap/setup.sh"));
            }
        }
        check_configurations("configurations", &self.configurations)?;
        if let Some(level) = self.step_concurrency_level {
            if !(1..=256).contains(&level) {
                return Err(ConfigError::new("step_concurrency_level", format!("{level} is outside 1 to 256")));
            }
        }
        if let Some(timeout) = &self.auto_termination_idle_timeout {
            if !is_template(timeout) {
                idle_timeout(timeout).map_err(|e| ConfigError::new("auto_termination_idle_timeout", e))?;
            }
        }
        if self.tags.keys().any(|k| k.trim().is_empty()) {
            return Err(ConfigError::new("tags", "a tag's key is empty"));
        }
        check_steps("steps", &self.steps, false)?;
        if !self.instances.keep_job_flow_alive_when_no_steps && self.steps.is_empty() {
            return Err(ConfigError::new(
                "instances.keep_job_flow_alive_when_no_steps",
                "is false and the cluster has no `steps`: it would terminate as soon as it started; give it steps, or keep it alive and add steps with emr.add_steps",
            ));
        }
        Ok(())
    }

    /// Fills a RunJobFlow request with the rendered settings. `task_id` names the steps that set
    /// no name.
    pub fn apply(&self, request: RunJobFlowFluentBuilder, task_id: &str) -> Result<RunJobFlowFluentBuilder, String> {
        let mut request = request
            .name(&self.name)
            .release_label(self.release_label.trim())
            .instances(self.instances.to_sdk())
            .service_role(self.service_role.as_deref().unwrap_or(DEFAULT_SERVICE_ROLE))
            .job_flow_role(self.job_flow_role.as_deref().unwrap_or(DEFAULT_JOB_FLOW_ROLE))
            .visible_to_all_users(self.visible_to_all_users)
            .set_log_uri(self.log_uri.as_ref().map(|u| u.trim().to_string()))
            .set_security_configuration(self.security_configuration.clone())
            .set_step_concurrency_level(self.step_concurrency_level)
            .set_ebs_root_volume_size(self.ebs_root_volume_size)
            .set_custom_ami_id(self.custom_ami_id.clone());
        for app in &self.applications {
            request = request.applications(Application::builder().name(app.trim()).build());
        }
        for action in &self.bootstrap_actions {
            let script = ScriptBootstrapActionConfig::builder().path(action.path.trim()).set_args(Some(action.args.iter().map(|a| a.0.clone()).collect())).build();
            request = request.bootstrap_actions(BootstrapActionConfig::builder().name(&action.name).script_bootstrap_action(script).build());
        }
        for configuration in &self.configurations {
            request = request.configurations(configuration.to_sdk());
        }
        for (key, value) in &self.tags {
            request = request.tags(Tag::builder().key(key).value(&value.0).build());
        }
        if let Some(timeout) = &self.auto_termination_idle_timeout {
            let seconds = idle_timeout(timeout).map_err(|e| format!("auto_termination_idle_timeout: {e}"))?;
            request = request.auto_termination_policy(AutoTerminationPolicy::builder().idle_timeout(seconds).build());
        }
        for step in build_steps(&self.steps, task_id, FailureAction::CancelAndWait)? {
            request = request.steps(step.to_sdk());
        }
        Ok(request)
    }
}

impl Instances {
    fn check(&self) -> Result<(), ConfigError> {
        let at = "instances";
        match (self.instance_groups.is_empty(), self.instance_fleets.is_empty()) {
            (true, true) => {
                return Err(ConfigError::new(at, "give `instance_groups` (a MASTER group, and CORE and TASK groups as needed) or `instance_fleets`"));
            }
            (false, false) => return Err(ConfigError::new(at, "give either `instance_groups` or `instance_fleets`, not both")),
            _ => {}
        }
        let roles: Vec<Role> = if self.instance_fleets.is_empty() {
            self.instance_groups.iter().map(|g| g.instance_role).collect()
        } else {
            self.instance_fleets.iter().map(|f| f.instance_fleet_type).collect()
        };
        let field = if self.instance_fleets.is_empty() { "instance_groups" } else { "instance_fleets" };
        let count = |role: Role| roles.iter().filter(|r| **r == role).count();
        if count(Role::Master) != 1 {
            return Err(ConfigError::new(format!("{at}.{field}"), format!("has {} MASTER entries; a cluster has exactly one", count(Role::Master))));
        }
        if count(Role::Core) > 1 {
            return Err(ConfigError::new(format!("{at}.{field}"), "has more than one CORE entry; a cluster has at most one"));
        }
        if !self.instance_fleets.is_empty() && count(Role::Task) > 1 {
            return Err(ConfigError::new(format!("{at}.{field}"), "has more than one TASK fleet; a cluster has at most one"));
        }
        for (i, group) in self.instance_groups.iter().enumerate() {
            let at = format!("{at}.instance_groups[{i}]");
            if group.instance_type.trim().is_empty() {
                return Err(ConfigError::new(format!("{at}.instance_type"), "is empty; give an EC2 instance type, e.g. m5.xlarge"));
            }
            match (group.instance_role, group.instance_count) {
                (Role::Master, n) if n != 1 && n != 3 => {
                    return Err(ConfigError::new(format!("{at}.instance_count"), format!("is {n}; the MASTER group has 1 instance, or 3 for high availability")));
                }
                (_, n) if n < 0 || (n == 0 && group.instance_role == Role::Core) => {
                    return Err(ConfigError::new(format!("{at}.instance_count"), format!("is {n}; give at least 1")));
                }
                _ => {}
            }
            if group.bid_price.is_some() && group.market != Market::Spot {
                return Err(ConfigError::new(format!("{at}.bid_price"), "applies to SPOT instances only; set `market: SPOT` or remove it"));
            }
            check_volumes(&format!("{at}.ebs_volumes"), &group.ebs_volumes)?;
        }
        for (i, fleet) in self.instance_fleets.iter().enumerate() {
            let at = format!("{at}.instance_fleets[{i}]");
            let capacity = fleet.target_on_demand_capacity.unwrap_or(0) + fleet.target_spot_capacity.unwrap_or(0);
            if capacity <= 0 && fleet.instance_fleet_type != Role::Task {
                return Err(ConfigError::new(&at, "asks for no capacity; set target_on_demand_capacity or target_spot_capacity"));
            }
            if fleet.instance_type_configs.is_empty() {
                return Err(ConfigError::new(format!("{at}.instance_type_configs"), "is empty; list at least one instance type"));
            }
            for (j, config) in fleet.instance_type_configs.iter().enumerate() {
                if config.instance_type.trim().is_empty() {
                    return Err(ConfigError::new(format!("{at}.instance_type_configs[{j}].instance_type"), "is empty"));
                }
                check_volumes(&format!("{at}.instance_type_configs[{j}].ebs_volumes"), &config.ebs_volumes)?;
            }
        }
        if !self.ec2_subnet_ids.is_empty() && self.instance_fleets.is_empty() {
            return Err(ConfigError::new(format!("{at}.ec2_subnet_ids"), "applies to instance fleets; with instance groups give one `ec2_subnet_id`"));
        }
        Ok(())
    }

    fn to_sdk(&self) -> JobFlowInstancesConfig {
        let mut config = JobFlowInstancesConfig::builder()
            .keep_job_flow_alive_when_no_steps(self.keep_job_flow_alive_when_no_steps)
            .termination_protected(self.termination_protected)
            .set_ec2_key_name(self.ec2_key_name.clone())
            .set_ec2_subnet_id(self.ec2_subnet_id.clone())
            .set_emr_managed_master_security_group(self.emr_managed_master_security_group.clone())
            .set_emr_managed_slave_security_group(self.emr_managed_slave_security_group.clone())
            .set_service_access_security_group(self.service_access_security_group.clone());
        if !self.ec2_subnet_ids.is_empty() {
            config = config.set_ec2_subnet_ids(Some(self.ec2_subnet_ids.clone()));
        }
        if !self.additional_master_security_groups.is_empty() {
            config = config.set_additional_master_security_groups(Some(self.additional_master_security_groups.clone()));
        }
        if !self.additional_slave_security_groups.is_empty() {
            config = config.set_additional_slave_security_groups(Some(self.additional_slave_security_groups.clone()));
        }
        for group in &self.instance_groups {
            let market = match group.market {
                Market::OnDemand => MarketType::OnDemand,
                Market::Spot => MarketType::Spot,
            };
            let role = match group.instance_role {
                Role::Master => InstanceRoleType::Master,
                Role::Core => InstanceRoleType::Core,
                Role::Task => InstanceRoleType::Task,
            };
            config = config.instance_groups(
                InstanceGroupConfig::builder()
                    .name(group.name.clone().unwrap_or_else(|| group.instance_role.name().to_ascii_lowercase()))
                    .instance_role(role)
                    .instance_type(group.instance_type.trim())
                    .instance_count(group.instance_count)
                    .market(market)
                    .set_bid_price(group.bid_price.clone())
                    .set_ebs_configuration(ebs(&group.ebs_volumes))
                    .build(),
            );
        }
        for fleet in &self.instance_fleets {
            let kind = match fleet.instance_fleet_type {
                Role::Master => InstanceFleetType::Master,
                Role::Core => InstanceFleetType::Core,
                Role::Task => InstanceFleetType::Task,
            };
            let mut builder = InstanceFleetConfig::builder()
                .name(fleet.name.clone().unwrap_or_else(|| fleet.instance_fleet_type.name().to_ascii_lowercase()))
                .instance_fleet_type(kind)
                .set_target_on_demand_capacity(fleet.target_on_demand_capacity)
                .set_target_spot_capacity(fleet.target_spot_capacity);
            for t in &fleet.instance_type_configs {
                builder = builder.instance_type_configs(
                    InstanceTypeConfig::builder()
                        .instance_type(t.instance_type.trim())
                        .set_weighted_capacity(t.weighted_capacity)
                        .set_bid_price(t.bid_price.clone())
                        .set_bid_price_as_percentage_of_on_demand_price(t.bid_price_as_percentage_of_on_demand_price)
                        .set_ebs_configuration(ebs(&t.ebs_volumes))
                        .build(),
                );
            }
            config = config.instance_fleets(builder.build());
        }
        config.build()
    }
}

impl ClusterConfiguration {
    fn to_sdk(&self) -> Configuration {
        let mut builder = Configuration::builder().classification(&self.classification);
        for (key, value) in &self.properties {
            builder = builder.properties(key, &value.0);
        }
        for nested in &self.configurations {
            builder = builder.configurations(nested.to_sdk());
        }
        builder.build()
    }
}

fn check_configurations(path: &str, configurations: &[ClusterConfiguration]) -> Result<(), ConfigError> {
    for (i, c) in configurations.iter().enumerate() {
        if c.classification.trim().is_empty() {
            return Err(ConfigError::new(format!("{path}[{i}].classification"), "is empty; give e.g. hive-site or spark-defaults"));
        }
        check_configurations(&format!("{path}[{i}].configurations"), &c.configurations)?;
    }
    Ok(())
}

fn check_volumes(path: &str, volumes: &[EbsVolume]) -> Result<(), ConfigError> {
    for (i, v) in volumes.iter().enumerate() {
        if v.size_in_gb <= 0 {
            return Err(ConfigError::new(format!("{path}[{i}].size_in_gb"), format!("is {}; give the size in GiB", v.size_in_gb)));
        }
        if let Some(kind) = &v.volume_type {
            if !["gp3", "gp2", "io1", "st1", "sc1", "standard"].contains(&kind.as_str()) {
                return Err(ConfigError::new(format!("{path}[{i}].volume_type"), format!("\"{kind}\" is not an EBS volume type EMR takes: gp3, gp2, io1, st1, sc1 or standard")));
            }
        }
        if matches!(v.volumes_per_instance, Some(n) if n < 1) {
            return Err(ConfigError::new(format!("{path}[{i}].volumes_per_instance"), "must be at least 1"));
        }
    }
    Ok(())
}

fn ebs(volumes: &[EbsVolume]) -> Option<EbsConfiguration> {
    if volumes.is_empty() {
        return None;
    }
    let mut config = EbsConfiguration::builder();
    for v in volumes {
        let spec = VolumeSpecification::builder()
            .volume_type(v.volume_type.as_deref().unwrap_or("gp3"))
            .size_in_gb(v.size_in_gb)
            .set_iops(v.iops)
            .set_throughput(v.throughput)
            .build();
        config = config.ebs_block_device_configs(EbsBlockDeviceConfig::builder().volume_specification(spec).volumes_per_instance(v.volumes_per_instance.unwrap_or(1)).build());
    }
    Some(config.build())
}

/// The idle timeout in seconds, within EMR's bounds.
fn idle_timeout(text: &str) -> Result<i64, String> {
    let parsed = humantime::parse_duration(text.trim()).map_err(|e| format!("invalid duration \"{text}\": {e}; write e.g. 30m or 2h"))?;
    let (low, high) = IDLE_TIMEOUT_RANGE;
    if parsed < low || parsed > high {
        return Err(format!("{text} is outside EMR's 1m to 7days"));
    }
    Ok(parsed.as_secs() as i64)
}
