//! flowctl's engine: everything between a DAG file and a finished run, with no knowledge of any
//! particular operator or cloud.
//!
//! Read in this order: [`yaml`] (positions for every node), [`diagnostic`] (how problems are
//! reported), [`dag`] (what a compiled DAG is), [`schedule`], [`template`], [`graph`],
//! [`operator`] (the plugin boundary), then [`compile`], which ties them together, and [`schema`],
//! the JSON Schema editors use.
//!
//! Architecture invariant: this crate never depends on `flowctl-operators` or on any AWS crate;
//! operators plug in through [`operator::Registry`].

pub mod yaml;
pub mod diagnostic;
pub mod dag;
pub mod schedule;
pub mod timetable;
pub mod template;
pub mod graph;
pub mod operator;
pub mod lifecycle;
pub mod trigger;
pub mod state;
pub mod secrets;
pub mod render;
pub mod logs;
pub mod process;
pub mod executor;
pub mod runs;
pub mod client;
pub mod server;
pub mod config;
pub mod connections;
pub mod alerts;
pub mod compile;
pub mod schema;
pub mod commands;
#[cfg(feature = "test-support")]
pub mod testing;

pub use compile::{compile, compile_paths, Compiled, SourceFile};
pub use dag::{Dag, Task, TriggerRule};
pub use diagnostic::{Diagnostic, Severity};
pub use operator::{Operator, Outcome, Registry, TaskContext, TaskError};
