//! The CLI's commands, behind the binary's argument parsing.
//!
//! `src/main.rs` only parses the command line and builds the operator registry; each command here
//! takes parsed arguments and the registry, writes what the user sees, and returns the exit code:
//! 0 success, 1 a run failed, 2 invalid input or usage.

mod inspect;

pub use inspect::{graph, schema, validate, GraphFormat, OutputFormat};

/// The process exit codes flowctl documents.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A run failed.
    pub const RUN_FAILED: u8 = 1;
    /// Invalid input: a DAG that does not compile, a bad flag, a missing file.
    pub const INVALID: u8 = 2;
}
