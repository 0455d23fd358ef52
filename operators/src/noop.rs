//! `noop`: succeeds at once. For joins, tests and benchmarks.

use async_trait::async_trait;
use flowctl_engine::operator::{Operator, Outcome, TaskContext, TaskError};
use serde::Deserialize;

/// `noop` takes no settings.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoopConfig {}

/// The `noop` operator.
pub struct Noop;

#[async_trait]
impl Operator for Noop {
    const NAME: &'static str = "noop";
    type Config = NoopConfig;

    async fn execute(&self, _config: NoopConfig, _ctx: TaskContext) -> Result<Outcome, TaskError> {
        Ok(Outcome::success())
    }
}
