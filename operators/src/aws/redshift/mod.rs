//! Redshift operators (`redshift.sql`, `redshift.copy`, `redshift.unload`) over the Redshift Data
//! API, which runs SQL on a provisioned cluster or a Serverless workgroup without a database
//! connection: a statement is submitted, gets an id, and is polled until it ends.
//!
//! That shape is what lets a retry or a restarted flowctl reattach instead of running a `COPY`
//! twice: the statement id is recorded through the engine's external-job hook before the wait.
//!
//! - `target.rs`: where statements run (cluster or workgroup, database, user or secret) and the
//!   settings every Redshift task shares;
//! - `statement.rs`: the statement as a job of the AWS kit (`aws::job`: submit or reattach,
//!   record, poll, cancel), and its result rows;
//! - `sqltext.rs`: quoting of identifiers and literals, and the `COPY` and `UNLOAD` builders;
//! - one file per operator.

pub mod target;
pub mod statement;
pub mod sqltext;
pub mod sql;
pub mod copy;
pub mod unload;

#[cfg(test)]
mod tests;

use flowctl_engine::Registry;

/// Adds the Redshift operators.
pub fn register(registry: &mut Registry) {
    registry.register_aws_service(target::SERVICE).register(sql::Sql).register(copy::Copy).register(unload::Unload);
}
