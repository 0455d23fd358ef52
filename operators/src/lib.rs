//! flowctl's operator plugins, one module per operator.
//!
//! Each module has a `Config` (the task's `with:`, `#[serde(deny_unknown_fields)]`, checked at
//! compile time) and an [`Operator`](flowctl_engine::Operator) implementation. [`registry`] builds
//! the registry the binary hands to the engine; AWS operators join it behind their cargo features.

pub mod noop;
pub mod shell;
#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "sql")]
pub mod sql;

use flowctl_engine::Registry;

/// Every operator this build includes.
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(noop::Noop).register(shell::Shell);
    #[cfg(feature = "aws")]
    aws::register(&mut registry);
    #[cfg(feature = "http")]
    http::register(&mut registry);
    #[cfg(feature = "sql")]
    sql::register(&mut registry);
    registry
}
