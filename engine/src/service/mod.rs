//! The service layer: every operation on a home, answered with typed values
//! ([`crate::protocol`]).
//!
//! Three faces stand on it: the CLI (`commands/`, which renders the values as text or JSON), the
//! server's HTTP API (`server/`), and whatever comes next (a web UI). A face turns its input into
//! a call here and renders what comes back; it holds no domain logic of its own.
//!
//! - [`Host`]: where the service runs: the home a CLI process opened ([`HomeHost`]), or a server
//!   that executes runs in the background and knows which of them are active;
//! - [`Service`]: the operations: `dags.rs` (load, apply, pause), `status.rs` (DAGs, runs, task
//!   instances), `runs.rs` (trigger, clear, cancel, backfill), `logs.rs`, `next.rs`;
//! - [`handle`]: a [`Request`] to its operation, for faces that speak in requests;
//! - `execution.rs`: [`Execution`], the executor with alerts and retention that a server or a
//!   CLI process runs DAG runs with;
//! - `connections.rs`, `alerts.rs`, `inspect.rs`: operations on the config file and on DAG files
//!   that need no home.
//!
//! Architecture invariant: the service never formats text for a terminal and never speaks HTTP;
//! `commands/` is the only place that turns these values into text.

mod dags;
mod status;
mod runs;
mod logs;
mod next;
mod execution;
mod connections;
mod alerts;
mod inspect;

use std::path::PathBuf;

pub use alerts::{send_test_alert, TestAlert};
pub use connections::{describe_connection, list_connections, test_connection, ConnectionTest};
pub use dags::{load_applied, load_version, looks_like_file, resolve_target, source_hash, store_version, Target};
pub use execution::{Execution, ExecutionSettings};
pub use inspect::{validate, Validation};
pub use logs::{attempts_with_logs, read_log, LogEnd, LogFollow, LogStep};
pub use next::next_fires;

use crate::operator::Registry;
use crate::protocol::{Answer, Reply, Request, ServiceError};
use crate::state::{Home, Store};

/// Where the service runs: the home's store and operators, and what only a server can do.
pub trait Host {
    /// The store.
    fn store(&self) -> &Store;
    /// The operators.
    fn registry(&self) -> &Registry;
    /// The home's logs folder.
    fn logs_dir(&self) -> PathBuf;
    /// Whether this host executes runs in the background (a server) or not (a CLI process).
    fn executes_runs(&self) -> bool;
    /// Whether a process is executing this run now.
    fn is_active(&self, dag_id: &str, run_id: &str) -> bool;
    /// Cancels a run being executed; false when it is not.
    fn cancel_active(&self, dag_id: &str, run_id: &str) -> bool;
    /// DAG versions or pause states changed.
    fn dags_changed(&self);
    /// Runs were queued.
    fn runs_queued(&self);
}

/// A home opened by this process, with nobody executing its runs in the background: the CLI
/// without a server.
pub struct HomeHost<'a> {
    home: Home,
    registry: &'a Registry,
}

impl<'a> HomeHost<'a> {
    /// Opens the home at `root`, naming `command` in its lock for a second process to read.
    pub fn open(root: &std::path::Path, command: &str, registry: &'a Registry) -> Result<HomeHost<'a>, ServiceError> {
        Ok(HomeHost { home: Home::open(root, command)?, registry })
    }

    /// The home.
    pub fn home(&self) -> &Home {
        &self.home
    }
}

impl Host for HomeHost<'_> {
    fn store(&self) -> &Store {
        self.home.store()
    }
    fn registry(&self) -> &Registry {
        self.registry
    }
    fn logs_dir(&self) -> PathBuf {
        self.home.logs_dir()
    }
    fn executes_runs(&self) -> bool {
        false
    }
    fn is_active(&self, _: &str, _: &str) -> bool {
        false
    }
    fn cancel_active(&self, _: &str, _: &str) -> bool {
        false
    }
    fn dags_changed(&self) {}
    fn runs_queued(&self) {}
}

/// The operations on one home, through its [`Host`].
#[derive(Clone, Copy)]
pub struct Service<'a> {
    host: &'a dyn Host,
}

impl<'a> Service<'a> {
    /// The service of `host`.
    pub fn new(host: &'a dyn Host) -> Self {
        Service { host }
    }

    fn store(&self) -> &'a Store {
        self.host.store()
    }

    fn registry(&self) -> &'a Registry {
        self.host.registry()
    }
}

/// Answers a request with the operation it names.
pub fn handle(host: &dyn Host, request: &Request) -> Answer {
    let service = Service::new(host);
    match request {
        Request::Apply { paths } => service.apply(paths).map(Reply::Applied),
        Request::Dags => service.dags().map(Reply::Dags),
        Request::Runs { dag } => service.runs(dag).map(Reply::Runs),
        Request::Run { dag, run } => service.run(dag, run).map(Reply::Run),
        Request::Logs { dag, run, task, attempt } => service.log(dag, run, task, *attempt).map(Reply::Log),
        Request::Trigger { dag, params, date } => service.trigger(dag, params, date.as_deref()).map(Reply::Triggered),
        Request::Clear { dag, run, tasks, downstream, failed_only } => {
            let selection = crate::runs::Selection { tasks: tasks.clone(), downstream: *downstream, failed_only: *failed_only };
            service.clear(dag, run, &selection).map(Reply::Cleared)
        }
        Request::Cancel { dag, run } => service.cancel(dag, run).map(Reply::Cancelled),
        Request::Pause { dag, paused } => service.set_paused(dag, *paused).map(Reply::Paused),
        Request::Backfill { dag, from, to, rerun_failed } => service.backfill(dag, from, to, *rerun_failed).map(Reply::Backfilled),
        Request::Next { dag, n, after } => service.next(dag, *n, after.as_deref()).map(Reply::Next),
    }
}
