//! Where a command goes: to the home's server when one runs, else to the store, opened here.
//!
//! Without a server, runs that a command asks to wait for (`trigger --wait`, `clear`, `backfill`)
//! are executed in this process, up to each DAG's `max_active_runs` at once, and Ctrl-C cancels
//! them. Either way the summaries printed at the end come from the same code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::control::{handle, Host, Output, Request};
use super::{open_home, CommandError};
use crate::client::Client;
use crate::executor::{Executor, ExecutorSettings, RunControl, DEFAULT_PARALLELISM};
use crate::operator::Registry;
use crate::secrets::Masker;
use crate::state::{Home, Store};

/// The CLI holding the home as a [`Host`]: no other process executes its runs.
struct DirectHost<'a> {
    home: Home,
    registry: &'a Registry,
}

impl Host for DirectHost<'_> {
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

/// What a command is called in the lock file, for a second process to read.
fn describe(request: &Request) -> String {
    let name = serde_json::to_value(request)
        .ok()
        .and_then(|v| v.get("command").and_then(|c| c.as_str()).map(str::to_string))
        .unwrap_or_else(|| "command".into());
    format!("flowctl {name}")
}

/// Sends `request` to the server or handles it here; with `wait`, waits for the runs the reply
/// names and prints their summaries. Returns the exit code.
pub fn dispatch(home_flag: Option<&Path>, request: &Request, wait: bool, registry: &Registry) -> Result<u8, CommandError> {
    dispatch_with_config(home_flag, None, request, wait, registry)
}

/// [`dispatch`], with the config file (`--config`) runs executed here send their alerts through.
pub fn dispatch_with_config(
    home_flag: Option<&Path>,
    config: Option<&Path>,
    request: &Request,
    wait: bool,
    registry: &Registry,
) -> Result<u8, CommandError> {
    let root = Home::resolve(home_flag);
    if let Some(client) = Client::for_home(&root) {
        let reply = client.request(request)?;
        let mut code = reply.output.print();
        if wait {
            for (dag, run) in &reply.runs {
                client.wait(dag, run)?;
                let summary = client.request(&Request::Summary { dag: dag.clone(), run: run.clone() })?;
                code = code.max(summary.output.print());
            }
        }
        return Ok(code);
    }
    let host = DirectHost { home: open_home(home_flag, &describe(request))?, registry };
    let reply = handle(&host, request);
    let mut code = reply.output.print();
    if reply.runs.is_empty() || matches!(request, Request::Cancel { .. }) {
        return Ok(code);
    }
    if !wait {
        let how = if matches!(request, Request::Trigger { .. }) { "add --wait" } else { "leave out --no-wait" };
        eprintln!(
            "note: no server runs for this home, so the run waits in the queue until `flowctl server` starts; {how} to run it in this process now"
        );
        return Ok(code);
    }
    execute_here(&host, &reply.runs, config)?;
    for (dag, run) in &reply.runs {
        let summary: Output = handle(&host, &Request::Summary { dag: dag.clone(), run: run.clone() }).output;
        code = code.max(summary.print());
    }
    Ok(code)
}

/// Executes queued runs in this process, each DAG's runs at most `max_active_runs` at once.
fn execute_here(host: &DirectHost<'_>, runs: &[(String, String)], config: Option<&Path>) -> Result<(), CommandError> {
    let store = host.store().clone();
    let config = crate::config::Config::load(host.home.root(), config, &host.registry.aws_services())?;
    let settings = ExecutorSettings {
        parallelism: usize::from(DEFAULT_PARALLELISM),
        logs_dir: host.home.logs_dir(),
        work_dir: host.home.work_dir(),
        die_with_flowctl: false,
        connections: Arc::new(config.connections()),
    };
    let masker = Masker::from_env();
    // Before the executor, which copies the masker's secrets: the SMTP password joins them here.
    let alerts = crate::alerts::AlertDispatcher::new(config, &store, host.home.logs_dir(), masker.clone(), |notice| {
        eprintln!("warning: {notice}")
    })?;
    let executor = Arc::new(Executor::new(store.clone(), host.registry.clone(), masker, settings));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::usage(format!("cannot start the async runtime: {e}")))?;
    let mut jobs = Vec::new();
    for (dag_id, run_id) in runs {
        let run = store.run(dag_id, run_id)?.ok_or_else(|| CommandError::usage(format!("run {run_id} of {dag_id} vanished")))?;
        let dag = super::run::load_version(&store, dag_id, run.dag_version, host.registry)?;
        jobs.push((dag, run));
    }
    let retention: HashMap<String, crate::runs::Retention> =
        jobs.iter().map(|(dag, _)| (dag.id.clone(), dag.retention)).collect();
    let cancel = tokio_util::sync::CancellationToken::new();
    runtime.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let streams = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        let watcher = cancel.clone();
        let stopper = tokio::spawn(async move {
            if let (Ok(mut interrupt), Ok(mut terminate)) = streams {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                eprintln!("cancelling: stopping running tasks");
                watcher.cancel();
            }
        });
        let mut limits: HashMap<String, Arc<Semaphore>> = HashMap::new();
        let mut handles = Vec::new();
        for (dag, run) in jobs {
            let limit = limits.entry(dag.id.clone()).or_insert_with(|| Arc::new(Semaphore::new(dag.max_active_runs as usize))).clone();
            let executor = executor.clone();
            let control = RunControl { cancel: cancel.child_token(), ..RunControl::default() };
            let sync = executor.clone();
            let observer = alerts.observer(dag.clone(), &run, Arc::new(move || sync.sync_logs()));
            handles.push(tokio::spawn(async move {
                let _slot = limit.acquire_owned().await;
                executor.execute(dag, run, control, Arc::new(move |p| observer.observe(&p))).await
            }));
        }
        for handle in handles {
            if let Ok(Err(e)) = handle.await {
                eprintln!("error: {e}");
            }
        }
        stopper.abort();
    });
    executor.sync_logs();
    for (dag_id, keep) in retention {
        crate::runs::prune(&store, &host.home.logs_dir(), &host.home.work_dir(), &dag_id, keep)?;
    }
    let sent = alerts.finish(crate::alerts::FINISH_BOUND);
    if sent.failed > 0 {
        eprintln!("warning: {} alert(s) not delivered; `flowctl status DAG RUN` shows which", sent.failed);
    }
    Ok(())
}
