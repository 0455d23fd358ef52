//! The CLI's commands: presentation only. Each command takes its parsed arguments, asks the
//! service (`crate::service`, directly or through the home's server) and renders the typed answer
//! as text or `--output json`, returning the exit code: 0 success, 1 a run failed, 2 invalid
//! input or usage.
//!
//! Architecture invariant: this is the only module that formats text for people. Every command
//! that a server can answer renders through [`render`], whichever path produced the answer, so
//! the output is the same with or without a server.
//!
//! - `dispatch.rs`: a request to the home's server or to the service in this process, waiting for
//!   the runs it queued (executed here when no server runs);
//! - `render.rs`: each reply as text and JSON, and errors as the CLI prints them;
//! - `run.rs`: `flowctl run`, with its live progress;
//! - `logs.rs`, `next.rs`, `inspect.rs` (validate, graph, schema), `connections.rs`, `alert.rs`;
//! - `table.rs`: plain text tables and durations.

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

mod table;
mod render;
mod dispatch;
mod run;
mod logs;
mod next;
mod inspect;
mod connections;
mod alert;

pub use alert::alert_test;
pub use connections::{connections_list, connections_test};
pub use dispatch::dispatch;
pub use inspect::{graph, schema, validate, GraphFormat};
pub use logs::logs;
pub use next::next;
pub use render::{render, Output, OutputFormat, Style};
pub use run::{run, RunArgs};

use crate::protocol::ServiceError;

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
    /// The service refused or failed.
    #[error(transparent)]
    Service(ServiceError),
    /// The server could not be reached or answered wrongly.
    #[error("{0}")]
    Server(String),
}

impl CommandError {
    /// A usage error with its message.
    pub fn usage(message: impl Into<String>) -> Self {
        CommandError::Service(ServiceError::bad_request(message))
    }

    /// The error as the CLI prints it on stderr.
    pub fn render(&self) -> String {
        match self {
            CommandError::Service(e) => render::error_text(e),
            CommandError::Server(message) => format!("error: {message}\n"),
        }
    }

    /// Prints the error for the user and returns the exit code.
    pub fn report(&self) -> u8 {
        eprint!("{}", self.render());
        exit::INVALID
    }
}

/// Whatever the service turns into a [`ServiceError`] (a store, home, config or run error) is a
/// command error too.
impl<E: Into<ServiceError>> From<E> for CommandError {
    fn from(e: E) -> Self {
        CommandError::Service(e.into())
    }
}

impl From<crate::client::ClientError> for CommandError {
    fn from(e: crate::client::ClientError) -> Self {
        CommandError::Server(e.0)
    }
}
