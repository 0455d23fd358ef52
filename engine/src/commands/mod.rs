//! The CLI's commands, behind the binary's argument parsing.
//!
//! `src/main.rs` only parses the command line and builds the operator registry; each command here
//! takes parsed arguments and the registry, writes what the user sees, and returns the exit code:
//! 0 success, 1 a run failed, 2 invalid input or usage.

/// `print!` that ignores a closed stdout (`flowctl schema | head`), where `print!` would panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `println!` that ignores a closed stdout.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod alert;
mod apply;
mod connections;
pub mod control;
mod dispatch;
mod inspect;
mod logs;
mod next;
mod run;
mod status;
mod table;

use std::path::Path;

pub use alert::alert_test;
pub use connections::{connections_list, connections_test};
pub use apply::{apply_output, source_hash, store_version, Change};
pub use control::{handle, Host, Output, Reply, Request};
pub use dispatch::{dispatch, dispatch_with_config};
pub use inspect::{graph, schema, validate, GraphFormat, OutputFormat};
pub use logs::{logs, read_log};
pub use next::{next, next_report, next_text, parse_after};
pub use run::{all_instances, create_run, load_applied, load_version, logical_date, run, run_params, summary, RunArgs};
pub use status::status_text;

use crate::diagnostic::Diagnostic;
use crate::state::{Home, HomeError, StoreError};

/// The process exit codes flowctl documents.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A run failed.
    pub const RUN_FAILED: u8 = 1;
    /// Invalid input: a DAG that does not compile, a bad flag, a missing file.
    pub const INVALID: u8 = 2;
}

/// Why a command could not do its work. Each maps to exit code 2 with a message that says what
/// to fix.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad arguments, an unknown DAG or run.
    #[error("{0}")]
    Usage(String),
    /// DAG files that do not compile.
    #[error("{} error(s) in DAG files", .0.len())]
    Invalid(Vec<Diagnostic>),
    /// The home could not be opened.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The executor failed.
    #[error(transparent)]
    Exec(#[from] crate::executor::ExecError),
    /// The config file is missing (when named with `--config`) or wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A run operation was refused.
    #[error(transparent)]
    Run(#[from] crate::runs::RunError),
    /// The server could not be reached or answered wrongly.
    #[error("{0}")]
    Server(String),
}

impl CommandError {
    /// A usage error with its message.
    pub fn usage(message: impl Into<String>) -> Self {
        CommandError::Usage(message.into())
    }

    /// The error as the CLI prints it on stderr.
    pub fn render(&self) -> String {
        match self {
            CommandError::Invalid(errors) => format!(
                "{}error: {} error(s); fix them (see `flowctl validate`) and try again\n",
                inspect::render_diagnostics(errors),
                errors.len()
            ),
            other => format!("error: {other}\n"),
        }
    }

    /// Prints the error for the user and returns the exit code.
    pub fn report(&self) -> u8 {
        eprint!("{}", self.render());
        exit::INVALID
    }
}

/// Opens the home for a command, naming the command for a second process that finds it locked.
pub fn open_home(flag: Option<&Path>, command: &str) -> Result<Home, HomeError> {
    Home::open(&Home::resolve(flag), command)
}
