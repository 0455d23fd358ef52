//! flowctl's engine: everything between a DAG file and a finished run, with no knowledge of any
//! particular operator or cloud.
//!
//! Read in this order: [`yaml`] (positions for every node), [`diagnostic`] (how problems are
//! reported), [`dag`] (what a compiled DAG is), [`schedule`], [`template`], [`graph`],
//! [`operator`] (the plugin boundary), then [`compile`], which ties them together, and [`schema`],
//! the JSON Schema editors use. Then the runtime: [`state`], [`executor`], [`runs`]; then the
//! [`service`] layer, which answers every operation on a home with the typed values of
//! [`protocol`]; and its faces: [`commands`] (the CLI) and [`server`] (the HTTP API), with
//! [`client`], the CLI's side of the API.
//!
//! Architecture invariants: this crate never depends on `flowctl-operators` or on any AWS crate,
//! and names no AWS service; operators plug in through [`operator::Registry`]. No module pair
//! imports each other: each layer uses only the ones below it.

pub mod yaml;
pub mod diagnostic;
pub mod dag;
pub mod schedule;
pub mod timetable;
pub mod template;
pub mod graph;
pub mod connections;
pub mod operator;
pub mod compile;
pub mod schema;
pub mod lifecycle;
pub mod trigger;
pub mod state;
pub mod secrets;
pub mod render;
pub mod logs;
pub mod process;
pub mod executor;
pub mod runs;
pub mod config;
pub mod alerts;
pub mod metrics;
pub mod protocol;
pub mod service;
pub mod client;
pub mod server;
pub mod commands;
#[cfg(feature = "test-support")]
pub mod testing;

pub use compile::{compile, compile_paths, Compiled, SourceFile};
pub use dag::{Dag, Task, TriggerRule};
pub use diagnostic::{Diagnostic, Severity};
pub use operator::{Operator, Outcome, Registry, TaskContext, TaskError};
