//! AWS operators: the parts every AWS operator shares, and one folder per service behind its
//! cargo feature.
//!
//! Credentials, endpoints, retries, error messages, connection settings and the wait for work
//! running at a service behave the same for S3, EMR, Redshift and SageMaker because there is one
//! of each, read in this order:
//!
//! - `sdk.rs`: a resolved `aws` connection as an SDK configuration for one service, and the `aws`
//!   connection tester;
//! - `errors.rs`: an SDK error as a task error that says what is wrong and what to do, retryable
//!   or final;
//! - `settings.rs`: the settings AWS operators share (the connection and its default, durations,
//!   `s3://` checks) and the macro that writes them into each operator's `Config`;
//! - `job.rs`: the one external-work driver: a job-like operator implements `Job` (submit,
//!   describe, cancel) and `job::drive` records, reattaches, polls, cancels and clears;
//! - one folder per service.

pub mod sdk;
pub mod errors;
pub mod settings;
pub mod job;
#[cfg(feature = "aws-s3")]
pub mod s3;
// Further services join here, each behind its cargo feature:
#[cfg(feature = "aws-emr")]
pub mod emr;
#[cfg(feature = "aws-redshift")]
pub mod redshift;
#[cfg(feature = "aws-sagemaker")]
pub mod sagemaker;

pub use errors::{describe_sdk_error, describe_service_error};
pub use sdk::{caller_identity, endpoint_label, retry_config, sdk_config, SDK_INITIAL_BACKOFF, SDK_MAX_ATTEMPTS, SDK_MAX_BACKOFF};
pub use settings::{aws_connection, default_connection};

use std::sync::Arc;

use flowctl_engine::Registry;

/// Adds the AWS operators of this build, and the `aws` connection tester.
pub fn register(registry: &mut Registry) {
    registry.register_tester("aws", Arc::new(sdk::AwsTester)).register_aws_service("sts");
    #[cfg(feature = "aws-s3")]
    s3::register(registry);
    // Further services register here, each behind its cargo feature:
    #[cfg(feature = "aws-emr")]
    emr::register(registry);
    #[cfg(feature = "aws-redshift")]
    redshift::register(registry);
    #[cfg(feature = "aws-sagemaker")]
    sagemaker::register(registry);
}
