//! `flowctl server`: one long-running process that owns a home and runs it unattended: the
//! scheduler, the executor and the HTTP API.
//!
//! At start it resumes every run the store records as queued or running (attempts that were
//! running count as interrupted and are retried by their policy, after whatever they left behind
//! is killed; attempts that recorded an external job reattach to it). It then sleeps until the
//! next fire time of any DAG or until something happens (an apply, a trigger, a run ending): it
//! never polls. SIGTERM or SIGINT drains it: nothing new starts, running attempts get the grace
//! period to finish, then they are stopped and recorded as interrupted; it exits 0.

mod api;
mod rest;
pub mod openapi;
mod scheduler;
mod watch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::client::{ServerFile, SERVER_FILE};
use crate::dag::Dag;
use crate::executor::{Progress, RunControl};
use crate::operator::Registry;
use crate::protocol::ServiceError;
use crate::service::{Execution, ExecutionSettings, Host};
use crate::state::{DagRun, Home, Store};

/// The arguments of `flowctl server`.
#[derive(Debug, Clone)]
pub struct ServerArgs {
    /// Where the API listens.
    pub listen: String,
    /// A folder of DAG files to apply at start and whenever they change.
    pub dags: Option<PathBuf>,
    /// How long running attempts get to finish after SIGTERM before they are stopped.
    pub grace: Duration,
    /// The most attempts running at once.
    pub parallelism: u16,
    /// `--config`: the config file [default: `<home>/config.yaml`].
    pub config: Option<PathBuf>,
}

/// The environment variable that sets the API token explicitly (required to listen beyond this
/// machine).
pub const TOKEN_ENV: &str = "FLOWCTL_API_TOKEN";

/// The shortest token accepted from [`TOKEN_ENV`].
pub const MIN_TOKEN_LEN: usize = 32;

/// The least entropy a token from [`TOKEN_ENV`] must show, in bits, estimated from how often each
/// of its characters occurs (Shannon's measure times its length): 32 random hex digits carry about
/// 118 by this count, `openssl rand -hex 32` about 240, 32 repeated characters 0.
pub const MIN_TOKEN_BITS: f64 = 96.0;

/// The fewest distinct characters a token from [`TOKEN_ENV`] must hold.
pub const MIN_TOKEN_DISTINCT: usize = 10;

/// The entropy of `token` in bits, estimated from its own character frequencies.
fn token_bits(token: &str) -> f64 {
    let mut counts: HashMap<char, usize> = HashMap::new();
    for c in token.chars() {
        *counts.entry(c).or_default() += 1;
    }
    let len = token.chars().count() as f64;
    let per_char: f64 = counts.values().map(|&n| n as f64 / len).map(|p| -p * p.log2()).sum();
    per_char * len
}

/// Checks a token set with [`TOKEN_ENV`]: long enough, and not guessable by its shape.
fn check_token(token: &str) -> Result<(), ServiceError> {
    let how = "generate one with `openssl rand -hex 32` (or `head -c 32 /dev/urandom | base64`)";
    let length = token.chars().count();
    if length < MIN_TOKEN_LEN {
        return Err(ServiceError::bad_request(format!(
            "{TOKEN_ENV} is {length} characters long; use a secret of at least {MIN_TOKEN_LEN} characters: {how}"
        )));
    }
    let distinct = token.chars().collect::<std::collections::HashSet<_>>().len();
    let bits = token_bits(token);
    if distinct < MIN_TOKEN_DISTINCT || bits < MIN_TOKEN_BITS {
        return Err(ServiceError::bad_request(format!(
            "{TOKEN_ENV} looks guessable: {distinct} distinct characters, about {bits:.0} bits of entropy (at least {MIN_TOKEN_DISTINCT} and {MIN_TOKEN_BITS:.0} are needed); use a random secret: {how}"
        )));
    }
    Ok(())
}

/// What the server's parts share.
pub(crate) struct State {
    home: Home,
    registry: Registry,
    /// The executor, with the alerts and retention of its runs.
    execution: Execution,
    /// Runs being executed, by (dag, run).
    active: Mutex<HashMap<(String, String), RunControl>>,
    /// Compiled DAG versions.
    dags: crate::service::DagCache,
    /// Wakes the scheduler.
    wake: Notify,
    /// When the scheduler loop last went round (it does at least every `scheduler::HEARTBEAT`).
    heartbeat: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    /// `/metrics`.
    metrics: crate::metrics::Metrics,
    /// Queued runs, as the scheduler's last pass counted them.
    queued_runs: std::sync::atomic::AtomicU64,
    /// Wakes the API's waiters when a run ends.
    run_ended: Notify,
    /// Fired at shutdown: nothing new starts.
    drain: CancellationToken,
    /// Fired when the grace period is over: running attempts stop.
    halt: CancellationToken,
}

impl State {
    fn store(&self) -> &Store {
        self.home.store()
    }

    /// A DAG version, compiled once.
    fn dag(&self, dag_id: &str, version: u64) -> Result<Arc<Dag>, ServiceError> {
        self.dags.get(self.store(), &self.registry, dag_id, version)
    }

    fn active_count(&self, dag_id: &str) -> usize {
        self.active.lock().unwrap_or_else(|e| e.into_inner()).keys().filter(|(d, _)| d == dag_id).count()
    }

    /// The values `/metrics` reads at each scrape.
    fn snapshot(&self) -> crate::metrics::Snapshot {
        let active: Vec<(String, String)> = self.active.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        let waiting_tasks = active
            .iter()
            .filter_map(|(dag, run)| self.store().task_instances(dag, run).ok())
            .map(|tasks| tasks.iter().filter(|ti| ti.state == crate::lifecycle::TaskState::Scheduled).count() as u64)
            .sum();
        let (in_use, slots) = self.execution.slots();
        let alerts = self.execution.alert_summary();
        let beat = *self.heartbeat.lock().unwrap_or_else(|e| e.into_inner());
        crate::metrics::Snapshot {
            queued_runs: self.queued_runs.load(std::sync::atomic::Ordering::Relaxed),
            waiting_tasks,
            slots_in_use: in_use as u64,
            slots: slots as u64,
            alerts_delivered: alerts.delivered as u64,
            alerts_failed: alerts.failed as u64,
            store_bytes: self.store().size_on_disk(),
            scheduler_heartbeat: beat.map_or(0.0, |b| b.timestamp_millis() as f64 / 1000.0),
        }
    }

    /// Starts executing a run in the background.
    fn start_run(self: &Arc<Self>, dag: Arc<Dag>, run: DagRun) {
        let key = (run.dag_id.clone(), run.run_id.clone());
        let control = RunControl { cancel: CancellationToken::new(), drain: self.drain.child_token(), halt: self.halt.child_token() };
        {
            let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
            if active.contains_key(&key) {
                return;
            }
            // The run may have ended between the caller's read of the store and this check.
            if self.store().run(&run.dag_id, &run.run_id).ok().flatten().is_none_or(|r| r.state.is_terminal()) {
                return;
            }
            active.insert(key.clone(), control.clone());
        }
        tracing::info!(dag_id = %key.0, run_id = %key.1, "run started");
        if run.trigger == crate::state::Trigger::Scheduled && run.start.is_none() {
            let delay = (chrono::Utc::now() - run.data_interval_end).to_std().unwrap_or_default();
            self.metrics.schedule_delay.observe(delay.as_secs_f64());
        }
        let state = self.clone();
        let progress = watch_progress(self.clone(), dag.clone(), key.1.clone());
        tokio::spawn(async move {
            match state.execution.execute(dag, run, control, progress).await {
                Ok(finished) => {
                    tracing::info!(dag_id = %key.0, run_id = %key.1, state = finished.run.state.name(), "run stopped");
                }
                Err(e) => tracing::error!(dag_id = %key.0, run_id = %key.1, error = %e, "run stopped by a store error"),
            }
            state.active.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            state.run_ended.notify_waiters();
            state.wake.notify_one();
        });
    }
}

/// Raises the soft limit on open files to the hard one: every API connection, attempt log and
/// task pipe is a file, and a default soft limit of 1,024 (or 256) is soon reached.
fn raise_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "cannot raise the limit on open files");
            }
        }
    }
}

/// The server's log: `tracing` events on stderr, `RUST_LOG` choosing how much (info by default).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// What the server does with a run's events: log them, and move the metrics.
fn watch_progress(server: Arc<State>, dag: Arc<Dag>, run_id: String) -> Arc<dyn Fn(Progress) + Send + Sync> {
    let dag_id = dag.id.clone();
    let started = Mutex::new(None::<std::time::Instant>);
    Arc::new(move |p| match p {
        Progress::RunStarted { .. } => {
            *started.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
            server.metrics.runs_started.get_or_create(&crate::metrics::DagLabels { dag_id: dag_id.clone() }).inc();
        }
        Progress::AttemptStarted { task_id, try_number, max_tries, waited } => {
            tracing::info!(%dag_id, %run_id, %task_id, try_number, max_tries, "attempt started");
            if let Some(waited) = waited {
                server.metrics.task_start_delay.observe(waited.as_secs_f64());
            }
        }
        Progress::TaskSettled { task_id, state, try_number, error, duration } => {
            match &error {
                Some(error) => tracing::warn!(%dag_id, %run_id, %task_id, try_number, state = state.name(), %error, "task settled"),
                None => tracing::info!(%dag_id, %run_id, %task_id, try_number, state = state.name(), "task settled"),
            }
            // An attempt ended (rather than a trigger rule settling a task that never ran).
            if duration.is_some() {
                let operator = dag.task(&task_id).map_or("unknown", |t| t.operator.as_str());
                server.metrics.attempt_ended(&dag_id, &task_id, operator, state.name(), duration);
            }
        }
        Progress::RunFinished { state } => {
            let took = started.lock().unwrap_or_else(|e| e.into_inner()).map(|s| s.elapsed());
            server.metrics.run_ended(&dag_id, state.name(), took);
        }
        Progress::StepCommitted => {}
    })
}

/// The server as the [`Host`] of the service its API answers with.
pub(crate) struct ServerHost(pub(crate) Arc<State>);

impl Host for ServerHost {
    fn store(&self) -> &Store {
        self.0.store()
    }

    fn registry(&self) -> &Registry {
        &self.0.registry
    }

    fn logs_dir(&self) -> PathBuf {
        self.0.home.logs_dir()
    }

    fn executes_runs(&self) -> bool {
        true
    }

    fn is_active(&self, dag_id: &str, run_id: &str) -> bool {
        self.0.active.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&(dag_id.to_string(), run_id.to_string()))
    }

    fn cancel_active(&self, dag_id: &str, run_id: &str) -> bool {
        match self.0.active.lock().unwrap_or_else(|e| e.into_inner()).get(&(dag_id.to_string(), run_id.to_string())) {
            Some(control) => {
                control.cancel.cancel();
                true
            }
            None => false,
        }
    }

    fn dag(&self, dag_id: &str, version: u64) -> Result<Arc<Dag>, ServiceError> {
        self.0.dag(dag_id, version)
    }

    fn config(&self) -> Result<crate::config::Config, ServiceError> {
        Ok(self.0.execution.config().clone())
    }

    fn while_idle(&self, dag_id: &str, run_id: &str, change: &mut dyn FnMut()) -> bool {
        // `start_run` takes the same lock before it reads the run and starts it.
        let active = self.0.active.lock().unwrap_or_else(|e| e.into_inner());
        if active.contains_key(&(dag_id.to_string(), run_id.to_string())) {
            return false;
        }
        change();
        true
    }

    fn dags_changed(&self) {
        self.0.wake.notify_one();
    }

    fn runs_queued(&self) {
        self.0.wake.notify_one();
    }

    fn masker(&self) -> crate::secrets::Masker {
        // The executor's: every secret the runs' writes are masked with, the API token included.
        self.0.execution.masker().clone()
    }
}

fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The token: set explicitly, or the one of the previous start, or a new one.
fn token(root: &Path, addr: &SocketAddr) -> Result<String, ServiceError> {
    if let Some(token) = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()) {
        check_token(&token)?;
        return Ok(token);
    }
    if !addr.ip().is_loopback() {
        return Err(ServiceError::bad_request(format!(
            "refusing to listen on {addr}, beyond this machine, with a generated token; set {TOKEN_ENV} to a secret of your own (at least 32 characters) and start again, or listen on 127.0.0.1"
        )));
    }
    let previous = std::fs::read_to_string(root.join(SERVER_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<ServerFile>(&t).ok())
        .map(|f| f.token);
    match previous {
        Some(token) => Ok(token),
        None => random_token().map_err(|e| ServiceError::bad_request(format!("cannot read /dev/urandom for a token: {e}"))),
    }
}

fn write_server_file(root: &Path, file: &ServerFile) -> Result<(), ServiceError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = root.join(SERVER_FILE);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| ServiceError::bad_request(format!("cannot write {}: {e}", path.display())))?;
    out.write_all(serde_json::to_string_pretty(file).unwrap_or_default().as_bytes())
        .map_err(|e| ServiceError::bad_request(format!("cannot write {}: {e}", path.display())))
}

/// Runs `flowctl server` until SIGTERM or SIGINT.
pub fn serve(home_flag: Option<&Path>, args: &ServerArgs, registry: &Registry) -> Result<u8, ServiceError> {
    use std::net::ToSocketAddrs;
    let addr: SocketAddr = args.listen.to_socket_addrs().ok().and_then(|mut a| a.next()).ok_or_else(|| {
        ServiceError::bad_request(format!("--listen \"{}\": expected an address and port, e.g. 127.0.0.1:8787 or localhost:8787", args.listen))
    })?;
    init_logging();
    raise_file_limit();
    let root = Home::resolve(home_flag);
    let home = Home::open(&root, "flowctl server")?;
    let token = token(&root, &addr)?;
    let settings = ExecutionSettings {
        config: args.config.clone(),
        parallelism: usize::from(args.parallelism),
        die_with_flowctl: true,
        secrets: vec![token.clone()],
    };
    let execution = Execution::start(&home, registry, settings, |notice| {
        tracing::warn!(%notice, "alerts");
        eprintln!("flowctl server: warning: {notice}");
    })?;
    let state = Arc::new_cyclic(|me: &std::sync::Weak<State>| State {
        metrics: crate::metrics::Metrics::new({
            let me = me.clone();
            Arc::new(move || me.upgrade().map(|state| state.snapshot()).unwrap_or_default())
        }),
        queued_runs: std::sync::atomic::AtomicU64::new(0),
        home,
        registry: registry.clone(),
        execution,
        active: Mutex::new(HashMap::new()),
        dags: Default::default(),
        wake: Notify::new(),
        heartbeat: Mutex::new(None),
        run_ended: Notify::new(),
        drain: CancellationToken::new(),
        halt: CancellationToken::new(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServiceError::bad_request(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(run_server(state.clone(), addr, token, args.clone(), root.clone()));
    let _ = std::fs::remove_file(root.join(SERVER_FILE));
    let sent = state.execution.finish(crate::alerts::FINISH_BOUND);
    if sent.failed > 0 {
        eprintln!("flowctl server: {} alert(s) not delivered; `flowctl status DAG RUN` shows which", sent.failed);
    }
    result
}

async fn run_server(state: Arc<State>, addr: SocketAddr, token: String, args: ServerArgs, root: PathBuf) -> Result<u8, ServiceError> {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return Err(ServiceError::bad_request("cannot install signal handlers"));
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServiceError::bad_request(format!("cannot listen on {addr}: {e}; is another server using that port? choose one with --listen")))?;
    let bound = listener.local_addr().map_err(|e| ServiceError::bad_request(format!("cannot read the listening address: {e}")))?;
    write_server_file(&root, &ServerFile { address: bound.to_string(), token: token.clone(), pid: std::process::id() })?;
    tracing::info!(address = %bound, home = %root.display(), "flowctl server listening");
    eprintln!("flowctl server: listening on http://{bound}, home {}", root.display());

    if let Some(dir) = &args.dags {
        watch::apply_folder(&state, dir);
    }
    let watcher = args.dags.as_ref().and_then(|dir| watch::start(state.clone(), dir.clone()));

    let scheduler = tokio::spawn(scheduler::run(state.clone()));
    let stop_api = CancellationToken::new();
    let api = tokio::spawn(api::serve(state.clone(), listener, token, stop_api.clone()));

    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    drop(watcher);
    state.drain.cancel();
    state.wake.notify_one();
    // Said once it is true.
    eprintln!(
        "flowctl server: stopping: no new runs or tasks start; running tasks get {} to finish",
        humantime::format_duration(args.grace)
    );
    let drained = tokio::time::timeout(args.grace, wait_idle(&state)).await.is_ok();
    if !drained {
        eprintln!("flowctl server: grace period over: stopping running tasks");
        state.halt.cancel();
        wait_idle(&state).await;
    }
    let _ = scheduler.await;
    stop_api.cancel();
    let _ = api.await;
    state.store().flush()?;
    eprintln!("flowctl server: stopped");
    Ok(0)
}

async fn wait_idle(state: &State) {
    loop {
        let ended = state.run_ended.notified();
        if state.active.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            return;
        }
        ended.await;
    }
}
