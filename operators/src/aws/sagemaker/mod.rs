//! SageMaker operators: `sagemaker.train`, which runs a training job from a CreateTrainingJob
//! request written in the task, waits for it, and reattaches to it after a retry or a restart.
//!
//! - `request.rs`: the request's types (checked at compile time) and their mapping to the SDK;
//! - `train.rs`: the training job as a job of the AWS kit (`aws::job`): its name, chosen and
//!   recorded before CreateTrainingJob, the wait, StopTrainingJob on cancel or `max_runtime`.

pub mod request;
pub mod train;

#[cfg(test)]
mod tests;

use flowctl_engine::Registry;

/// Adds the SageMaker operators.
pub fn register(registry: &mut Registry) {
    registry.register_aws_service(train::SERVICE).register(train::Train);
}
