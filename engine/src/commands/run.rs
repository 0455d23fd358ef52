//! `flowctl run DAG_ID|FILE`: one run, executed in this process to its end, with live progress
//! and a closing summary. Exit 0 when the run succeeded, 1 when it failed.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::apply::store_version;
use super::inspect::print_diagnostics;
use super::table::{duration, Table};
use super::{exit, open_home, CommandError};
use crate::alerts::{AlertDispatcher, FINISH_BOUND};
use crate::compile::{compile, compile_paths, SourceFile};
use crate::config::Config;
use crate::dag::Dag;
use crate::diagnostic::suggestion;
use crate::executor::{new_run_id, param_value, Executor, ExecutorSettings, Progress};
use crate::operator::Registry;
use crate::secrets::Masker;
use crate::state::{DagRun, Home, RunState, Store, TaskInstance, Trigger, Write};

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

/// Finds the DAG to run: a file is compiled (and applied by the caller once the run's arguments
/// are known to be good, so a bad `--param` stores nothing); an id is read from the store, with its
/// version.
pub fn resolve_dag(home: &Home, target: &str, registry: &Registry) -> Result<(Arc<Dag>, Option<u64>), CommandError> {
    let path = Path::new(target);
    let looks_like_file = path.is_file() || target.ends_with(".yaml") || target.ends_with(".yml");
    if looks_like_file {
        let compiled = compile_paths(&[path.to_path_buf()], registry).map_err(CommandError::Invalid)?;
        let dag = compiled.dags.into_iter().next().ok_or_else(|| CommandError::usage(format!("{target} holds no DAG")))?;
        return Ok((Arc::new(dag), None));
    }
    load_applied(home.store(), target, registry).map(|(dag, version)| (dag, Some(version)))
}

/// The latest applied version of a DAG, compiled.
pub fn load_applied(store: &Store, dag_id: &str, registry: &Registry) -> Result<(Arc<Dag>, u64), CommandError> {
    let Some(record) = store.dag(dag_id)? else {
        let known: Vec<String> = store.dags()?.into_iter().map(|r| r.dag_id).collect();
        return Err(CommandError::usage(format!(
            "no DAG \"{dag_id}\" is applied to this home{}; apply it with `flowctl apply FILE`, or give the file's path",
            suggestion(dag_id, known.iter().map(String::as_str))
        )));
    };
    load_version(store, dag_id, record.latest_version, registry).map(|dag| (dag, record.latest_version))
}

/// One stored version of a DAG, compiled again from its stored source.
pub fn load_version(store: &Store, dag_id: &str, version: u64, registry: &Registry) -> Result<Arc<Dag>, CommandError> {
    let stored = store
        .dag_version(dag_id, version)?
        .ok_or_else(|| CommandError::usage(format!("DAG \"{dag_id}\" has no stored version {version}")))?;
    let file = SourceFile { path: stored.file.clone(), bytes: stored.source.into_bytes() };
    let compiled = compile(&[file], registry).map_err(CommandError::Invalid)?;
    compiled
        .dags
        .into_iter()
        .next()
        .map(Arc::new)
        .ok_or_else(|| CommandError::usage(format!("stored version {version} of \"{dag_id}\" holds no DAG")))
}

/// Parses `--param key=value` against the DAG's declared parameters.
pub fn run_params(dag: &Dag, overrides: &[String]) -> Result<serde_json::Map<String, serde_json::Value>, CommandError> {
    let mut params = dag.params.clone();
    for item in overrides {
        let Some((key, value)) = item.split_once('=') else {
            let example =
                if dag.params.contains_key(item) { item.as_str() } else { dag.params.keys().next().map_or("KEY", String::as_str) };
            return Err(CommandError::usage(format!(
                "--param \"{item}\" for DAG \"{}\": expected KEY=VALUE, e.g. --param {example}=VALUE",
                dag.id
            )));
        };
        if !dag.params.contains_key(key) {
            let declared: Vec<&str> = dag.params.keys().map(String::as_str).collect();
            let listed = if declared.is_empty() { "it declares none".to_string() } else { format!("declared: {}", declared.join(", ")) };
            return Err(CommandError::usage(format!(
                "--param \"{item}\": DAG \"{}\" declares no parameter \"{key}\"{} ({listed}); declare it under `params:` in {}",
                dag.id,
                suggestion(key, declared.iter().copied()),
                dag.file.display()
            )));
        }
        params.insert(key.to_string(), param_value(value));
    }
    Ok(params)
}

/// An instant a user typed for a DAG: an RFC 3339 timestamp, or a date meaning midnight in the
/// DAG's time zone (`--date`, `--after`, `--from`, `--to`).
pub fn parse_instant(dag: &Dag, text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|local| dag.timezone.from_local_datetime(&local).earliest())
        .map(|t| t.with_timezone(&Utc))
}

/// The logical date of a manual run: `--date` (see [`parse_instant`]), else now.
pub fn logical_date(dag: &Dag, date: Option<&str>) -> Result<DateTime<Utc>, CommandError> {
    let Some(text) = date else { return Ok(Utc::now().with_nanosecond_zero()) };
    parse_instant(dag, text)
        .ok_or_else(|| CommandError::usage(format!("--date \"{text}\": expected a date like 2024-01-31 or an RFC 3339 timestamp")))
}

trait ZeroNanos {
    fn with_nanosecond_zero(self) -> Self;
}

impl ZeroNanos for DateTime<Utc> {
    fn with_nanosecond_zero(self) -> Self {
        chrono::Timelike::with_nanosecond(&self, 0).unwrap_or(self)
    }
}

/// The data interval of a run triggered by hand, as Airflow infers it: the last complete
/// interval of the schedule at the logical date (a daily DAG triggered at 01:00 on the 25th
/// processes the 24th). A DAG without a schedule has an empty interval at the logical date.
pub fn manual_interval(dag: &Dag, logical_date: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let Some(schedule) = &dag.schedule else { return (logical_date, logical_date) };
    let Some(end) = schedule.prev_at_or_before(logical_date, dag.timezone) else { return (logical_date, logical_date) };
    let start = schedule.prev_at_or_before(end - chrono::Duration::seconds(1), dag.timezone).unwrap_or(end);
    (start, end)
}

/// Creates a run of `dag` (queued) and stores it durably. Task instances get a record when they
/// first change; until then they have not started.
pub fn create_run(
    store: &Store,
    dag: &Dag,
    version: u64,
    trigger: Trigger,
    logical_date: DateTime<Utc>,
    params: serde_json::Map<String, serde_json::Value>,
) -> Result<DagRun, CommandError> {
    let interval = manual_interval(dag, logical_date);
    let run_id = new_run_id(store, &dag.id, trigger.prefix(), logical_date)?;
    let run = DagRun::queued(&dag.id, run_id, logical_date, interval, trigger, params, version);
    store.write(&[Write::Run(run.clone())])?;
    Ok(run)
}

/// Runs `flowctl run`.
pub fn run(home: Option<&Path>, args: &RunArgs, registry: &Registry) -> Result<u8, CommandError> {
    if crate::client::Client::for_home(&Home::resolve(home)).is_some() {
        let through = if args.target.ends_with(".yaml") || args.target.ends_with(".yml") || Path::new(&args.target).is_file() {
            format!("`flowctl apply {}` then `flowctl trigger DAG_ID --wait`", args.target)
        } else {
            format!("`flowctl trigger {} --wait`", args.target)
        };
        return Err(CommandError::usage(format!(
            "a flowctl server runs for this home, and `flowctl run` executes in its own process; run it through the server with {through}, or stop the server first"
        )));
    }
    let home = open_home(home, &format!("flowctl run {}", args.target))?;
    let config = Config::load(home.root(), args.config.as_deref(), &registry.aws_services())?;
    let (dag, version) = match resolve_dag(&home, &args.target, registry) {
        Err(CommandError::Invalid(errors)) => {
            print_diagnostics(&mut std::io::stderr(), &errors);
            eprintln!("error: {} does not compile; fix it (see `flowctl validate`) and run again", args.target);
            return Ok(exit::INVALID);
        }
        other => other?,
    };
    let params = run_params(&dag, &args.params)?;
    let date = logical_date(&dag, args.date.as_deref())?;
    let version = match version {
        Some(v) => v,
        None => store_version(home.store(), &dag)?.0,
    };
    let run = create_run(home.store(), &dag, version, Trigger::Manual, date, params)?;

    let connections = std::sync::Arc::new(config.connections());
    let masker = Masker::from_env();
    // Before the executor: the dispatcher adds the SMTP password to the masker, and the executor
    // hands the masker's secrets to operators when it is created.
    let alerts = AlertDispatcher::new(config, home.store(), home.logs_dir(), masker.clone(), |notice| eprintln!("warning: {notice}"))?;
    let settings = ExecutorSettings {
        parallelism: usize::from(args.parallelism),
        logs_dir: home.logs_dir(),
        work_dir: home.work_dir(),
        die_with_flowctl: false,
        connections,
    };
    let executor = Arc::new(Executor::new(home.store().clone(), registry.clone(), masker, settings));
    let sync = executor.clone();
    let observer = alerts.observer(dag.clone(), &run, Arc::new(move || sync.sync_logs()));
    let display = Display::new(&dag, &run);
    outln!("run {} of {} ({} tasks, logs in {})", run.run_id, dag.id, dag.tasks.len(), home.logs_dir().join(&dag.id).join(&run.run_id).display());

    // One thread: the executor's work between tasks is short, and hand-offs between threads
    // would cost more than they save. Task processes run outside it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CommandError::usage(format!("cannot start the async runtime: {e}")))?;
    let control = crate::executor::RunControl::default();
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
        let on_progress = move |p: crate::executor::Progress| {
            on_progress.update(&p);
            observer.observe(&p);
        };
        let result = executor.execute(dag.clone(), run, control, Arc::new(on_progress)).await;
        ctrl_c.abort();
        result
    })?;
    executor.sync_logs();
    display.finish();
    // The run is over and recorded; its alerts get a bounded wait, so the email of a failed run
    // is not lost when the process ends.
    let sent = alerts.finish(FINISH_BOUND);

    let crate::executor::Finished { run: finished, instances } = finished;
    // History stays within the DAG's `retention:` whichever process ran the run.
    crate::runs::prune(home.store(), &home.logs_dir(), &home.work_dir(), &dag.id, dag.retention)?;
    out!("{}", summary(&dag, &instances));
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

/// Every task of `dag` in its order, with its stored record or, for a task that has not
/// started, a fresh one.
pub fn all_instances(dag: &Dag, stored: Vec<TaskInstance>) -> Vec<TaskInstance> {
    let mut by_id: std::collections::HashMap<String, TaskInstance> =
        stored.into_iter().map(|ti| (ti.task_id.clone(), ti)).collect();
    dag.tasks
        .iter()
        .map(|t| by_id.remove(&t.id).unwrap_or_else(|| TaskInstance::new(&t.id, t.retry.retries + 1)))
        .collect()
}

/// The closing table: each task's state, tries, duration, and the first line of its error.
pub fn summary(dag: &Dag, instances: &[TaskInstance]) -> String {
    let mut table = Table::new(&["TASK", "STATE", "TRIES", "DURATION", "ERROR"]);
    let by_id: std::collections::HashMap<&str, &TaskInstance> = instances.iter().map(|ti| (ti.task_id.as_str(), ti)).collect();
    for task in &dag.tasks {
        let fresh;
        let ti = match by_id.get(task.id.as_str()) {
            Some(ti) => *ti,
            None => {
                fresh = TaskInstance::new(&task.id, task.retry.retries + 1);
                &fresh
            }
        };
        let took = match (ti.start, ti.end) {
            (Some(s), Some(e)) if ti.try_number > 0 => duration((e - s).to_std().unwrap_or_default()),
            _ => "-".into(),
        };
        let error = ti.error.as_deref().and_then(|e| e.lines().next()).unwrap_or("").to_string();
        table.row(vec![ti.task_id.clone(), ti.state.name().into(), format!("{}/{}", ti.try_number, ti.max_tries), took, error]);
    }
    table.render()
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
            Progress::AttemptStarted { task_id, try_number, max_tries } => {
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

