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
//! Every answer [`handle`] gives passes through the host's masker ([`Host::masker`]): the store
//! keeps a run's `--param` values as given, since its tasks need them, so a view must mask them,
//! and what an older process stored is masked again with the secrets this one knows.
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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

pub use alerts::{send_test_alert, TestAlert};
pub use connections::{describe_connection, list_connections, test_connection, ConnectionTest};
pub use dags::{load_applied, load_version, looks_like_file, resolve_target, source_hash, store_version, Target};
pub use execution::{Execution, ExecutionSettings};
pub use inspect::{validate, Validation};
pub use logs::{attempts_with_logs, read_log, LogEnd, LogFollow, LogStep};
pub use next::next_fires;
pub use runs::RunParams;

use crate::config::Config;
use crate::dag::Dag;
use crate::diagnostic::Diagnostic;
use crate::operator::Registry;
use crate::protocol::{Answer, Reply, Request, ServiceError, TaskView};
use crate::secrets::Masker;
use crate::state::{AlertDelivery, DagRun, Home, Store, TaskInstance};

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
    /// Calls `change` while nobody executes the run and nobody can start to (a server holds the
    /// lock under which it starts runs); false, without calling it, when the run is being
    /// executed. Clearing and cancelling an idle run go through here, so a run the scheduler is
    /// starting is never changed underneath its loop.
    fn while_idle(&self, dag_id: &str, run_id: &str, change: &mut dyn FnMut()) -> bool;
    /// A stored DAG version, compiled: a server keeps what it compiled (a version never changes),
    /// a CLI process compiles what it needs once.
    fn dag(&self, dag_id: &str, version: u64) -> Result<Arc<Dag>, ServiceError>;
    /// The config file (SMTP, alerts, connections) this host runs with.
    fn config(&self) -> Result<Config, ServiceError>;
    /// DAG versions or pause states changed.
    fn dags_changed(&self);
    /// Runs were queued.
    fn runs_queued(&self);
    /// The masker of every answer: the executor's on a server, one built from this process's
    /// environment and config file otherwise ([`masker_for`]).
    fn masker(&self) -> Masker;
}

/// A masker holding every secret a process with `config` knows: its environment's sensitive
/// variables, the connections' keys and passwords (and the `FLOWCTL_CONN_*` URIs that hold
/// them), and the SMTP password. The masker adds every form each takes.
pub fn masker_for(config: &Config) -> Masker {
    let masker = Masker::from_env();
    for secret in config.connections().secrets() {
        masker.add(&secret);
    }
    if let Some(password) = crate::alerts::email::Smtp::from_config(config).ok().as_ref().and_then(|s| s.password()) {
        masker.add(password);
    }
    masker
}

/// A home opened by this process, with nobody executing its runs in the background: the CLI
/// without a server.
pub struct HomeHost<'a> {
    home: Home,
    registry: &'a Registry,
    compiled: DagCache,
    /// `--config`: the config file whose connections and SMTP password the answers mask.
    config: Option<PathBuf>,
    masker: OnceLock<Masker>,
}

/// Compiled DAG versions by (DAG, version): a version's source never changes, so neither does
/// what it compiles to.
#[derive(Default)]
pub struct DagCache(Mutex<HashMap<(String, u64), Arc<Dag>>>);

impl DagCache {
    /// The version, compiled now or earlier.
    pub fn get(&self, store: &Store, registry: &Registry, dag_id: &str, version: u64) -> Result<Arc<Dag>, ServiceError> {
        let key = (dag_id.to_string(), version);
        if let Some(dag) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(dag.clone());
        }
        let dag = load_version(store, dag_id, version, registry)?;
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key, dag.clone());
        Ok(dag)
    }
}

impl<'a> HomeHost<'a> {
    /// Opens the home at `root`, naming `command` in its lock for a second process to read;
    /// `config` is the `--config` file [default: `<home>/config.yaml`], read when needed.
    pub fn open(root: &Path, command: &str, registry: &'a Registry, config: Option<&Path>) -> Result<HomeHost<'a>, ServiceError> {
        Ok(HomeHost {
            home: Home::open(root, command)?,
            registry,
            compiled: DagCache::default(),
            config: config.map(Path::to_path_buf),
            masker: OnceLock::new(),
        })
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
    fn while_idle(&self, _: &str, _: &str, change: &mut dyn FnMut()) -> bool {
        // This process holds the home, and it executes no run while it answers.
        change();
        true
    }
    fn dag(&self, dag_id: &str, version: u64) -> Result<Arc<Dag>, ServiceError> {
        self.compiled.get(self.store(), self.registry, dag_id, version)
    }
    fn config(&self) -> Result<Config, ServiceError> {
        Ok(Config::load(self.home.root(), self.config.as_deref(), &self.registry.aws_services())?)
    }
    fn dags_changed(&self) {}
    fn runs_queued(&self) {}
    fn masker(&self) -> Masker {
        self.masker
            .get_or_init(|| {
                let services = self.registry.aws_services();
                // A config file that cannot be read is reported by the commands that use it; a
                // view still masks what the environment holds, `FLOWCTL_CONN_*` included.
                let config = Config::load(self.home.root(), self.config.as_deref(), &services)
                    .unwrap_or_else(|_| Config { services: services.iter().map(|s| s.to_string()).collect(), ..Config::default() });
                masker_for(&config)
            })
            .clone()
    }
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

    /// The latest applied version of a DAG, compiled (through the host's cache).
    fn applied(&self, dag_id: &str) -> Result<(Arc<Dag>, u64), ServiceError> {
        let record = dags::applied_record(self.store(), dag_id)?;
        self.host.dag(dag_id, record.latest_version).map(|dag| (dag, record.latest_version))
    }
}

/// What a name in a request names, for [`check_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// A DAG id.
    Dag,
    /// A run id.
    Run,
    /// A task id.
    Task,
}

/// The longest name a request may carry: a file name's limit, since DAG, run and task ids become
/// folder names under `logs/` and `work/`.
pub const MAX_NAME_BYTES: usize = 255;

/// Checks a name a request carries against the id grammar, before any path is built from it: DAG
/// and task ids are lower-case letters, digits, `_` and `-` (what compile accepts); run ids also
/// hold upper-case letters, `.`, `:` and `+` (`manual__2024-03-01T00:00:00Z.2`), but never start
/// with `.`. So no request can name a file outside the home (`..`, `/`). A name outside the
/// grammar names nothing that can exist: the error is "not found", and says why.
pub fn check_name(kind: NameKind, name: &str) -> Result<(), ServiceError> {
    let (what, allowed, grammar): (&str, fn(char) -> bool, &str) = match kind {
        NameKind::Dag => ("DAG id", |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-', "lower-case letters, digits, \"_\" and \"-\""),
        NameKind::Task => ("task id", |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-', "lower-case letters, digits, \"_\" and \"-\""),
        NameKind::Run => ("run id", |c| c.is_ascii_alphanumeric() || "_-.:+".contains(c), "letters, digits, \"_\", \"-\", \".\", \":\" and \"+\", not starting with \".\""),
    };
    let shown: String = name.chars().take(80).collect::<String>().escape_debug().to_string();
    let ok = !name.is_empty() && name.len() <= MAX_NAME_BYTES && name.chars().all(allowed) && !name.starts_with('.');
    if ok {
        return Ok(());
    }
    Err(ServiceError::not_found(format!(
        "invalid {what} \"{shown}{}\": {what}s hold only {grammar}, at most {MAX_NAME_BYTES} bytes; `flowctl status` lists the DAGs and their runs",
        if name.chars().count() > 80 { "..." } else { "" }
    )))
}

/// Every name `request` carries, checked.
fn check_names(request: &Request) -> Result<(), ServiceError> {
    let (dag, run, tasks): (Option<&str>, Option<&str>, Vec<&str>) = match request {
        Request::Apply { .. } | Request::Dags => (None, None, Vec::new()),
        Request::Runs { dag, .. } | Request::Trigger { dag, .. } | Request::Pause { dag, .. } | Request::Backfill { dag, .. } | Request::Next { dag, .. } => {
            (Some(dag), None, Vec::new())
        }
        Request::Run { dag, run } | Request::Cancel { dag, run } => (Some(dag), Some(run), Vec::new()),
        Request::Logs { dag, run, task, .. } => (Some(dag), Some(run), vec![task.as_str()]),
        Request::Clear { dag, run, tasks, .. } => (Some(dag), Some(run), tasks.iter().map(String::as_str).collect()),
    };
    if let Some(dag) = dag {
        check_name(NameKind::Dag, dag)?;
    }
    if let Some(run) = run {
        check_name(NameKind::Run, run)?;
    }
    for task in tasks {
        check_name(NameKind::Task, task)?;
    }
    Ok(())
}

/// Answers a request with the operation it names, masked with the host's masker.
pub fn handle(host: &dyn Host, request: &Request) -> Answer {
    let masker = host.masker();
    match answer(host, request) {
        Ok(reply) => Ok(mask_reply(&masker, reply)),
        Err(error) => Err(mask_error(&masker, error)),
    }
}

fn answer(host: &dyn Host, request: &Request) -> Answer {
    check_names(request)?;
    let service = Service::new(host);
    match request {
        Request::Apply { paths } => service.apply(paths).map(Reply::Applied),
        Request::Dags => service.dags().map(Reply::Dags),
        Request::Runs { dag, limit } => service.runs(dag, *limit).map(Reply::Runs),
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

/// `reply` with every text that can hold a secret masked: a run's params and note, a task's
/// outputs, error and external job, an alert's error, a log, compile messages.
fn mask_reply(masker: &Masker, reply: Reply) -> Reply {
    match reply {
        Reply::Applied(mut applied) => {
            applied.warnings = applied.warnings.into_iter().map(|d| mask_diagnostic(masker, d)).collect();
            Reply::Applied(applied)
        }
        Reply::Runs(mut list) => {
            for summary in &mut list.runs {
                mask_run(masker, &mut summary.run);
            }
            Reply::Runs(list)
        }
        Reply::Run(mut detail) => {
            mask_run(masker, &mut detail.run);
            for TaskView { instance, alerts } in &mut detail.tasks {
                mask_instance(masker, instance);
                alerts.iter_mut().for_each(|d| mask_delivery(masker, d));
            }
            detail.alerts.iter_mut().for_each(|d| mask_delivery(masker, d));
            Reply::Run(detail)
        }
        Reply::Log(mut log) => {
            log.text = masker.mask(&log.text).into_owned();
            Reply::Log(log)
        }
        Reply::Triggered(mut triggered) => {
            mask_run(masker, &mut triggered.run);
            Reply::Triggered(triggered)
        }
        // Ids, states, dates and schedules: nothing a secret can be.
        other @ (Reply::Dags(_) | Reply::Cleared(_) | Reply::Cancelled(_) | Reply::Paused(_) | Reply::Backfilled(_) | Reply::Next(_)) => other,
    }
}

/// `error` with its messages masked.
pub fn mask_error(masker: &Masker, error: ServiceError) -> ServiceError {
    let mask = |message: String| masker.mask(&message).into_owned();
    match error {
        ServiceError::NotFound { message } => ServiceError::NotFound { message: mask(message) },
        ServiceError::BadRequest { message } => ServiceError::BadRequest { message: mask(message) },
        ServiceError::Conflict { message } => ServiceError::Conflict { message: mask(message) },
        ServiceError::Unavailable { message } => ServiceError::Unavailable { message: mask(message) },
        ServiceError::Invalid { diagnostics } => {
            ServiceError::Invalid { diagnostics: diagnostics.into_iter().map(|d| mask_diagnostic(masker, d)).collect() }
        }
    }
}

fn mask_diagnostic(masker: &Masker, mut diagnostic: Diagnostic) -> Diagnostic {
    diagnostic.message = masker.mask(&diagnostic.message).into_owned();
    diagnostic.hint = diagnostic.hint.map(|h| masker.mask(&h).into_owned());
    diagnostic
}

// Each record is taken apart field by field, so a field added to it must be placed here: masked,
// or named as holding nothing secret.

fn mask_run(masker: &Masker, run: &mut DagRun) {
    let DagRun {
        dag_id: _,
        run_id: _,
        logical_date: _,
        data_interval_start: _,
        data_interval_end: _,
        trigger: _,
        params,
        dag_version: _,
        state: _,
        created_at: _,
        start: _,
        end: _,
        note,
    } = run;
    if let serde_json::Value::Object(masked) = masker.mask_json(&serde_json::Value::Object(std::mem::take(params))) {
        *params = masked;
    }
    if let Some(note) = note {
        *note = masker.mask(note).into_owned();
    }
}

fn mask_instance(masker: &Masker, instance: &mut TaskInstance) {
    let TaskInstance { task_id: _, state: _, try_number: _, max_tries: _, start: _, end: _, retry_at: _, outputs, error, external_job } = instance;
    if let serde_json::Value::Object(masked) = masker.mask_json(&serde_json::Value::Object(std::mem::take(outputs))) {
        *outputs = masked;
    }
    if let Some(error) = error {
        *error = masker.mask(error).into_owned();
    }
    if let Some(job) = external_job {
        job.id = masker.mask(&job.id).into_owned();
        for value in job.detail.values_mut() {
            *value = masker.mask(value).into_owned();
        }
    }
}

fn mask_delivery(masker: &Masker, delivery: &mut AlertDelivery) {
    let AlertDelivery {
        dag_id: _,
        run_id: _,
        task_id: _,
        try_number: _,
        event: _,
        channel: _,
        state: _,
        tries: _,
        last_error,
        created_at: _,
        updated_at: _,
    } = delivery;
    if let Some(error) = last_error {
        *error = masker.mask(error).into_owned();
    }
}
