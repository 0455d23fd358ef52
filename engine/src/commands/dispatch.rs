//! Where a request goes: to the home's server when one runs, else to the service in this process,
//! on the home opened here.
//!
//! Without a server, runs that a command asks to wait for (`trigger --wait`, `clear`, `backfill`)
//! are executed in this process, up to each DAG's `max_active_runs` at once, and Ctrl-C cancels
//! them. Either way the answer and the summaries printed at the end come from the same renderer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::render::{render, summary, Output, Style};
use super::CommandError;
use crate::client::Client;
use crate::executor::{RunControl, DEFAULT_PARALLELISM};
use crate::operator::Registry;
use crate::protocol::{Answer, Reply, Request, RunRef};
use crate::service::{self, Execution, ExecutionSettings, Host, HomeHost};
use crate::state::Home;

/// Sends `request` to the server or answers it here, prints the answer, and with `wait` waits for
/// the runs it queued and prints their summaries. Runs executed here send their alerts through
/// the config file `config` (`--config`). Returns the exit code.
pub fn dispatch(
    home_flag: Option<&Path>,
    config: Option<&Path>,
    request: &Request,
    wait: bool,
    style: &Style,
    registry: &Registry,
) -> Result<u8, CommandError> {
    let root = Home::resolve(home_flag);
    if let Some(client) = Client::for_home(&root)? {
        let answer = client.request(request)?;
        let mut code = render(request, &answer, style).print();
        if wait {
            for run in waits(&answer) {
                client.wait(&run.dag_id, &run.run_id)?;
                code = code.max(summary_of(&client.request(&run_request(&run))?).print());
            }
        }
        return Ok(code);
    }
    let host = HomeHost::open(&root, &format!("flowctl {}", request.name()), registry, config)?;
    let answer = service::handle(&host, request);
    let mut code = render(request, &answer, style).print();
    let runs = waits(&answer);
    if runs.is_empty() {
        return Ok(code);
    }
    if !wait {
        let how = if matches!(request, Request::Trigger { .. }) { "add --wait" } else { "leave out --no-wait" };
        eprintln!(
            "note: no server runs for this home, so the run waits in the queue until `flowctl server` starts; {how} to run it in this process now"
        );
        return Ok(code);
    }
    execute_here(&host, &runs, config)?;
    for run in &runs {
        code = code.max(summary_of(&service::handle(&host, &run_request(run))).print());
    }
    Ok(code)
}

fn waits(answer: &Answer) -> Vec<RunRef> {
    answer.as_ref().map(Reply::runs_to_wait_for).unwrap_or_default()
}

fn run_request(run: &RunRef) -> Request {
    Request::Run { dag: run.dag_id.clone(), run: run.run_id.clone() }
}

/// The closing summary of a run that was waited for.
fn summary_of(answer: &Answer) -> Output {
    match answer {
        Ok(Reply::Run(detail)) => summary(detail),
        Ok(_) => Output::error(&crate::protocol::ServiceError::unavailable("the answer about the run is not a run")),
        Err(e) => Output::error(e),
    }
}

/// Executes queued runs in this process, each DAG's runs at most `max_active_runs` at once.
fn execute_here(host: &HomeHost<'_>, runs: &[RunRef], config: Option<&Path>) -> Result<(), CommandError> {
    let settings = ExecutionSettings {
        config: config.map(Path::to_path_buf),
        parallelism: usize::from(DEFAULT_PARALLELISM),
        die_with_flowctl: false,
        secrets: Vec::new(),
    };
    let execution = Arc::new(Execution::start(host.home(), host.registry(), settings, |notice| eprintln!("warning: {notice}"))?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::usage(format!("cannot start the async runtime: {e}")))?;
    let mut jobs = Vec::new();
    for run in runs {
        let stored = host
            .store()
            .run(&run.dag_id, &run.run_id)?
            .ok_or_else(|| CommandError::usage(format!("run {} of {} vanished", run.run_id, run.dag_id)))?;
        let dag = service::load_version(host.store(), &run.dag_id, stored.dag_version, host.registry())?;
        jobs.push((dag, stored));
    }
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
            let execution = execution.clone();
            let control = RunControl { cancel: cancel.child_token(), ..RunControl::default() };
            handles.push(tokio::spawn(async move {
                let _slot = limit.acquire_owned().await;
                execution.execute(dag, run, control, Arc::new(|_| {})).await
            }));
        }
        for handle in handles {
            if let Ok(Err(e)) = handle.await {
                eprintln!("error: {e}");
            }
        }
        stopper.abort();
    });
    let sent = execution.finish(crate::alerts::FINISH_BOUND);
    if sent.failed > 0 {
        eprintln!("warning: {} alert(s) not delivered; `flowctl status DAG RUN` shows which", sent.failed);
    }
    Ok(())
}
