//! AWS operators: the shared connection-to-SDK plumbing, and one folder per service behind its
//! cargo feature.

use flowctl_engine::Registry;

/// Adds the AWS operators of this build, and the `aws` connection tester.
pub fn register(_registry: &mut Registry) {}
