//! `flowctl run DAG_ID|FILE`: one run, executed in this process to its end, with live progress
//! and a closing summary. Exit 0 when the run succeeded, 1 when it failed.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::render::{diagnostics_text, tasks_table};
use super::table::duration;
use super::{exit, CommandError};
use crate::alerts::FINISH_BOUND;
use crate::dag::Dag;
use crate::executor::{Finished, Progress, RunControl};
use crate::operator::Registry;
use crate::protocol::ServiceError;
use crate::service::{self, Execution, ExecutionSettings, HomeHost, Target};
use crate::state::{DagRun, Home, RunState, Trigger};

/// The arguments of `flowctl run`.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// A DAG id applied to the home, or a DAG file.
    pub target: String,
    /// `--param key=value`, in order.
    pub params: Vec<String>,
    /// `--date`: the logical date.
    pub date: Option<String>,
    /// The global limit on running attempts.
    pub parallelism: u16,
    /// `--config`: the config file [default: `<home>/config.yaml`].
    pub config: Option<PathBuf>,
}

/// Runs `flowctl run`.
pub fn run(home: Option<&Path>, args: &RunArgs, registry: &Registry) -> Result<u8, CommandError> {
    let root = Home::resolve(home);
    if crate::client::Client::for_home(&root)?.is_some() {
        let through = if service::looks_like_file(&args.target) {
            format!("`flowctl apply {}` then `flowctl trigger DAG_ID --wait`", args.target)
        } else {
            format!("`flowctl trigger {} --wait`", args.target)
        };
        return Err(CommandError::usage(format!(
            "a flowctl server runs for this home, and `flowctl run` executes in its own process; run it through the server with {through}, or stop the server first"
        )));
    }
    let host = HomeHost::open(&root, &format!("flowctl run {}", args.target), registry, args.config.as_deref())?;
    let home = host.home();
    // The config file first: a mistake in it must stop the command before a run exists.
    let settings = ExecutionSettings {
        config: args.config.clone(),
        parallelism: usize::from(args.parallelism),
        die_with_flowctl: false,
        secrets: Vec::new(),
    };
    let execution = Execution::start(home, registry, settings, |notice| eprintln!("warning: {notice}"))?;
    let target = match service::resolve_target(Some(home.store()), &args.target, registry) {
        Err(ServiceError::Invalid { diagnostics }) => {
            eprint!("{}", diagnostics_text(&diagnostics, &|p| p.to_path_buf()));
            eprintln!("error: {} does not compile; fix it (see `flowctl validate`) and run again", args.target);
            return Ok(exit::INVALID);
        }
        other => other?,
    };
    let dag = target.dag().clone();
    // The run's arguments are checked before a file's DAG is stored, so a bad one stores nothing.
    // Their errors repeat what was typed, which may be a secret.
    let masked = |e: crate::runs::RunError| CommandError::Service(service::mask_error(execution.masker(), e.into()));
    let params = crate::runs::run_params(&dag, &args.params).map_err(masked)?;
    let date = crate::runs::logical_date(&dag, args.date.as_deref()).map_err(masked)?;
    let version = match target {
        Target::Applied(_, version) => version,
        Target::File(_) => service::store_version(home.store(), &dag)?.0,
    };
    let run = crate::runs::create_run(home.store(), &dag, version, Trigger::Manual, date, params)?;
    let display = Display::new(&dag, &run);
    outln!("run {} of {} ({} tasks, logs in {})", run.run_id, dag.id, dag.tasks.len(), home.logs_dir().join(&dag.id).join(&run.run_id).display());

    // One thread: the executor's work between tasks is short, and hand-offs between threads
    // would cost more than they save. Task processes run outside it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::usage(format!("cannot start the async runtime: {e}")))?;
    let control = RunControl::default();
    let cancel = control.cancel.clone();
    let finished = runtime.block_on(async {
        // Listen for Ctrl-C (and SIGTERM, SIGHUP) before any task starts: creating the streams
        // installs the handlers at once, where `ctrl_c()` would only when first polled, after a
        // task may already show as running; a signal then would kill flowctl and leave the run
        // and its tasks behind.
        use tokio::signal::unix::{signal, SignalKind};
        let streams = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()));
        let watcher = cancel.clone();
        let (run_dag, run_id) = (run.dag_id.clone(), run.run_id.clone());
        let ctrl_c = tokio::spawn(async move {
            let (Ok(mut interrupt), Ok(mut terminate), Ok(mut hangup)) = streams else { return };
            let mut stops = 0;
            loop {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                    _ = hangup.recv() => {}
                }
                stops += 1;
                if stops == 1 {
                    eprintln!("cancelling: stopping running tasks (press Ctrl-C again to quit at once)");
                    watcher.cancel();
                } else {
                    // Quit at once, and take the run's processes along: commands die with
                    // flowctl (parent-death signal), what they started in the background is killed
                    // here by its tag. The run stays recorded as running; its attempts count as
                    // interrupted when it is resumed.
                    crate::process::kill_run(&run_dag, &run_id);
                    std::process::exit(130);
                }
            }
        });
        let on_progress = display.clone();
        let result = execution.execute(dag.clone(), run, control, Arc::new(move |p: Progress| on_progress.update(&p))).await;
        ctrl_c.abort();
        result
    })?;
    execution.sync_logs();
    display.finish();
    // The run is over and recorded; its alerts get a bounded wait, so the email of a failed run
    // is not lost when the process ends.
    let sent = execution.finish(FINISH_BOUND);

    let Finished { run: finished, instances } = finished;
    out!("{}", tasks_table(&instances));
    if sent.delivered + sent.failed > 0 {
        let failed = if sent.failed > 0 {
            format!(", {} not delivered (see `flowctl status {} {}`)", sent.failed, finished.dag_id, finished.run_id)
        } else {
            String::new()
        };
        outln!("alerts: {} sent{failed}", sent.delivered);
    }
    let elapsed = match (finished.start, finished.end) {
        (Some(s), Some(e)) => duration((e - s).to_std().unwrap_or_default()),
        _ => "-".into(),
    };
    let note = finished.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
    outln!("run {} {} in {elapsed}{note}", finished.run_id, finished.state.name());
    Ok(if finished.state == RunState::Success { exit::OK } else { exit::RUN_FAILED })
}

/// Live progress: bars on a terminal, timestamped lines otherwise.
#[derive(Clone)]
struct Display {
    inner: Arc<Mutex<DisplayState>>,
}

struct DisplayState {
    bars: Option<(MultiProgress, ProgressBar)>,
    running: std::collections::HashMap<String, ProgressBar>,
    /// Lines for a non-terminal stdout, written out once per executor step.
    lines: String,
}

impl Display {
    fn new(dag: &Dag, run: &DagRun) -> Self {
        let bars = std::io::stdout().is_terminal().then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let total = multi.add(ProgressBar::new(dag.tasks.len() as u64));
            total.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} tasks {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            total.set_prefix(run.dag_id.clone());
            (multi, total)
        });
        Display { inner: Arc::new(Mutex::new(DisplayState { bars, running: Default::default(), lines: String::new() })) }
    }

    fn update(&self, progress: &Progress) {
        let Ok(mut state) = self.inner.lock() else { return };
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        match progress {
            Progress::AttemptStarted { task_id, try_number, max_tries, .. } => {
                let text = format!("{task_id} running (try {try_number}/{max_tries})");
                match &state.bars {
                    Some((multi, _)) => {
                        let bar = multi.add(ProgressBar::new_spinner());
                        bar.set_style(ProgressStyle::with_template("  {spinner} {msg} {elapsed}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
                        bar.set_message(text);
                        bar.enable_steady_tick(std::time::Duration::from_millis(120));
                        state.running.insert(task_id.clone(), bar);
                    }
                    None => state.lines.push_str(&format!("{now} {text}\n")),
                }
            }
            Progress::TaskSettled { task_id, state: task_state, try_number, duration: took, error } => {
                let took = took.map(|d| format!(" in {}", duration(d))).unwrap_or_default();
                let error = error.as_deref().and_then(|e| e.lines().next()).map(|e| format!(": {e}")).unwrap_or_default();
                let tries = if *try_number > 0 { format!(" (try {try_number})") } else { String::new() };
                let text = format!("{task_id} {}{tries}{took}{error}", task_state.name());
                if let Some(bar) = state.running.remove(task_id) {
                    bar.finish_and_clear();
                }
                match &state.bars {
                    Some((multi, total)) => {
                        let _ = multi.println(format!("  {text}"));
                        if task_state.is_terminal() {
                            total.inc(1);
                        }
                    }
                    None => state.lines.push_str(&format!("{now} {text}\n")),
                }
            }
            Progress::StepCommitted | Progress::RunFinished { .. } => {
                if !state.lines.is_empty() {
                    out!("{}", state.lines);
                    state.lines.clear();
                }
            }
            Progress::RunStarted { .. } => {}
        }
    }

    fn finish(&self) {
        if let Ok(state) = self.inner.lock() {
            if let Some((multi, total)) = &state.bars {
                total.finish();
                let _ = multi.clear();
            }
        }
    }
}

