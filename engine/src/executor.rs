//! The executor: runs one DAG run to its end, event-driven.
//!
//! One loop owns the run's state. Attempts run as tokio tasks and report back through a channel;
//! the loop applies each report through the lifecycle table, decides the downstream tasks' fate
//! with their trigger rules, writes every change of that step in one batch, flushes it, and only
//! then starts the attempts the step made ready. So a task starts the moment its upstream tasks
//! settle (no polling, no tick), each hand-off costs one flush, and a crash can never lose the fact
//! that an attempt started.
//!
//! Slots: a task needs a permit from its DAG's `max_active_tasks` semaphore and one from the
//! global `parallelism` semaphore. Permits are tried without waiting; when none is free, one waiter
//! per run waits for both and wakes the loop.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::dag::Dag;
use crate::lifecycle::{transition, TaskEvent, TaskState};
use crate::logs::LogWriter;
use crate::operator::{ErrorKind, ExternalJob, ExternalJobStore, Outcome, Outputs, Registry, TaskContext, TaskError};
use crate::render::{self, RunFacts};
use crate::secrets::Masker;
use crate::state::{attempt_log_path, DagRun, RunState, Store, StoreError, TaskInstance, Write};
use crate::trigger::{decide, Decision, UpstreamCounts};

/// The global limit on running attempts when none is configured (Airflow's default).
pub const DEFAULT_PARALLELISM: u16 = 32;

/// How long an operator gets to stop after its cancellation token fires before the engine stops
/// waiting for it. Longer than any grace period an operator allows (shell caps its own at 5
/// minutes), so a well-behaved operator always finishes its own clean-up.
const OPERATOR_STOP_DEADLINE: Duration = Duration::from_secs(360);

/// What the executor tells whoever watches a run (progress bars, the server's event stream).
#[derive(Debug, Clone)]
pub enum Progress {
    /// The run has started (or resumed).
    RunStarted {
        /// Tasks in the run.
        total: usize,
    },
    /// An attempt started.
    AttemptStarted {
        /// The task.
        task_id: String,
        /// Its try number.
        try_number: u32,
        /// The last allowed try.
        max_tries: u32,
        /// How long the task waited from becoming ready (its upstream tasks settled, or its
        /// retry fell due) to this start: the wait for a slot and for the step's write. `None`
        /// for an attempt that reattaches to the job a stopped process left running.
        waited: Option<Duration>,
    },
    /// A task changed state (after an attempt, or by its trigger rule).
    TaskSettled {
        /// The task.
        task_id: String,
        /// Its new state.
        state: TaskState,
        /// The try number.
        try_number: u32,
        /// How long the attempt ran, if one ran.
        duration: Option<Duration>,
        /// The error, masked, if it failed.
        error: Option<String>,
    },
    /// A step's changes are durable; a good moment to flush buffered output.
    StepCommitted,
    /// The run ended.
    RunFinished {
        /// How.
        state: RunState,
    },
}

/// Why the executor itself could not carry on (not a task failure).
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The store failed; the run's state on disk is what was last flushed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a run is told to stop.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// The user cancelled the run: its attempts stop and it fails, "cancelled by the user".
    pub cancel: CancellationToken,
    /// The process is shutting down: nothing new starts, running attempts may finish; the run
    /// stays running in the store and resumes at the next start.
    pub drain: CancellationToken,
    /// The shutdown grace period is over: running attempts stop now and count as interrupted
    /// (retried by their policy at the next start).
    pub halt: CancellationToken,
}

/// The error of an attempt that was running when flowctl stopped.
pub const INTERRUPTED: &str = "interrupted: flowctl stopped";

/// A run that has ended, with its task instances in the DAG's order.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The run's final record.
    pub run: DagRun,
    /// Every task instance, in the DAG's task order.
    pub instances: Vec<TaskInstance>,
}

/// Shared by every run of one process: the store, operators, logs, masking and limits.
pub struct Executor {
    store: Store,
    registry: Registry,
    logs: LogWriter,
    logs_dir: PathBuf,
    work_dir: PathBuf,
    masker: Masker,
    parallelism: Arc<Semaphore>,
    parallelism_total: usize,
    dag_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    template_env: minijinja::Environment<'static>,
    process_env: Arc<BTreeMap<String, String>>,
    secret_values: Arc<Vec<String>>,
    die_with_flowctl: bool,
    connections: Arc<crate::connections::Connections>,
}

/// Which process-wide settings the executor runs with.
#[derive(Debug, Clone)]
pub struct ExecutorSettings {
    /// The global limit on running attempts.
    pub parallelism: usize,
    /// Where attempt logs go.
    pub logs_dir: PathBuf,
    /// Where runs keep scratch files.
    pub work_dir: PathBuf,
    /// Whether commands die with this process (see [`TaskContext::die_with_flowctl`]): the server
    /// sets it; the CLI's one-off runs do not, for faster process starts.
    pub die_with_flowctl: bool,
    /// The named connections operators use; their secrets join the masker.
    pub connections: Arc<crate::connections::Connections>,
}

enum Event {
    Finished { index: usize, try_number: u32, result: AttemptResult, started: Instant },
    RetryDue { index: usize, try_number: u32 },
    Permits(OwnedSemaphorePermit, OwnedSemaphorePermit),
    RecordJob { index: usize, try_number: u32, job: Option<ExternalJob>, ack: oneshot::Sender<Result<(), TaskError>> },
}

/// How an attempt's end bears on its external job.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ResultKind {
    /// It failed on its own: the job runs on unless the operator cleared it.
    Failed,
    /// flowctl stopped it while shutting down: the job runs on, to be reattached.
    Halted,
    /// Anything else: the job is over or was cancelled.
    Other,
}

enum AttemptResult {
    Done(Result<Outcome, TaskError>),
    TimedOut(Duration),
    Cancelled,
}

struct Slots {
    dag: Arc<Semaphore>,
    global: Arc<Semaphore>,
}

impl Slots {
    fn try_take(&self) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let dag = self.dag.clone().try_acquire_owned().ok()?;
        let global = self.global.clone().try_acquire_owned().ok()?;
        Some((dag, global))
    }
}

impl Executor {
    /// An executor over `store`, running `registry`'s operators.
    pub fn new(store: Store, registry: Registry, masker: Masker, settings: ExecutorSettings) -> Self {
        for secret in settings.connections.secrets() {
            masker.add(&secret);
        }
        Executor {
            logs: LogWriter::start(masker.clone()),
            secret_values: Arc::new(masker.values()),
            store,
            registry,
            logs_dir: settings.logs_dir,
            work_dir: settings.work_dir,
            die_with_flowctl: settings.die_with_flowctl,
            connections: settings.connections,
            masker,
            parallelism: Arc::new(Semaphore::new(settings.parallelism.max(1))),
            parallelism_total: settings.parallelism.max(1),
            dag_slots: Mutex::new(HashMap::new()),
            template_env: crate::template::environment(),
            process_env: render::process_env(),
        }
    }

    /// The masker every writer uses.
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The global slots: how many are in use by running attempts, and how many there are
    /// (`parallelism`).
    pub fn slots(&self) -> (usize, usize) {
        let total = self.parallelism_total;
        (total.saturating_sub(self.parallelism.available_permits()), total)
    }

    /// Waits until every attempt log line queued so far is on disk.
    pub fn sync_logs(&self) {
        self.logs.sync();
    }

    fn dag_semaphore(&self, dag: &Dag) -> Arc<Semaphore> {
        let mut slots = self.dag_slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(dag.id.clone()).or_insert_with(|| Arc::new(Semaphore::new(dag.max_active_tasks as usize))).clone()
    }

    /// Runs `run` of `dag` until every task has settled, or until `control` stops it. Task
    /// instances already in the store are resumed as they are: a task with no stored record has
    /// not started; an attempt recorded as running belonged to a process that stopped, so it
    /// reattaches to its external job if it recorded one, and otherwise counts as interrupted.
    /// The returned run is still `Running` when a drain stopped it before it ended.
    pub async fn execute(
        self: &Arc<Self>,
        dag: Arc<Dag>,
        run: DagRun,
        control: RunControl,
        progress: Arc<dyn Fn(Progress) + Send + Sync>,
    ) -> Result<Finished, ExecError> {
        let stored: HashMap<String, TaskInstance> = self
            .store
            .task_instances_to_resume(&run.dag_id, &run.run_id)?
            .into_iter()
            .map(|ti| (ti.task_id.clone(), ti))
            .collect();
        let instances: Vec<TaskInstance> = dag
            .tasks
            .iter()
            .map(|t| stored.get(&t.id).cloned().unwrap_or_else(|| TaskInstance::new(&t.id, t.retry.retries + 1)))
            .collect();
        let index: HashMap<String, usize> = dag.tasks.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect();
        let upstream: Vec<Vec<usize>> =
            dag.tasks.iter().map(|t| t.depends_on.iter().filter_map(|d| index.get(d).copied()).collect()).collect();
        let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); dag.tasks.len()];
        for (i, ups) in upstream.iter().enumerate() {
            for &u in ups {
                downstream[u].push(i);
            }
        }
        let outputs: BTreeMap<String, Outputs> = instances
            .iter()
            .filter(|ti| ti.state == TaskState::Success && !ti.outputs.is_empty())
            .map(|ti| (ti.task_id.clone(), ti.outputs.clone()))
            .collect();
        let work_dir = self.work_dir.join(&run.dag_id).join(&run.run_id);
        let _ = std::fs::create_dir_all(&work_dir);
        let (tx, rx) = mpsc::unbounded_channel();
        let facts = Arc::new(RunFacts {
            dag_id: run.dag_id.clone(),
            run_id: run.run_id.clone(),
            logical_date: run.logical_date,
            data_interval_start: run.data_interval_start,
            data_interval_end: run.data_interval_end,
            params: run.params.clone(),
        });
        let task_count = dag.tasks.len();
        let mut state = RunLoop {
            exec: self.clone(),
            slots: Slots { dag: self.dag_semaphore(&dag), global: self.parallelism.clone() },
            dag,
            run,
            instances,
            upstream,
            downstream,
            outputs: Arc::new(outputs),
            facts,
            work_dir,
            ready: VecDeque::new(),
            ready_since: vec![None; task_count],
            reattach: VecDeque::new(),
            running: 0,
            waiting_for_permits: false,
            pending: Vec::new(),
            run_dirty: true,
            to_start: Vec::new(),
            tx,
            attempts: CancellationToken::new(),
            control,
            draining: false,
            halting: false,
            progress,
        };
        state.run_to_end(rx).await
    }
}

struct RunLoop {
    exec: Arc<Executor>,
    dag: Arc<Dag>,
    run: DagRun,
    instances: Vec<TaskInstance>,
    upstream: Vec<Vec<usize>>,
    downstream: Vec<Vec<usize>>,
    outputs: Arc<BTreeMap<String, Outputs>>,
    facts: Arc<RunFacts>,
    work_dir: PathBuf,
    slots: Slots,
    /// Scheduled tasks waiting for a slot, in the order they became ready.
    ready: VecDeque<usize>,
    /// When each task last became ready, until its attempt starts (for the start-delay metric).
    ready_since: Vec<Option<Instant>>,
    /// Attempts of a stopped process that recorded an external job, waiting for a slot to
    /// reattach to it.
    reattach: VecDeque<usize>,
    running: usize,
    waiting_for_permits: bool,
    /// Task indices changed in this step, written in one batch.
    pending: Vec<usize>,
    /// Whether the run record changed in this step.
    run_dirty: bool,
    /// Attempts to start once this step's batch is durable.
    to_start: Vec<(usize, OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    tx: mpsc::UnboundedSender<Event>,
    control: RunControl,
    /// The parent of every attempt's cancellation token: fired on a user cancel or a halt.
    attempts: CancellationToken,
    /// Shutting down: start nothing new.
    draining: bool,
    /// Shutting down now: running attempts were stopped.
    halting: bool,
    progress: Arc<dyn Fn(Progress) + Send + Sync>,
}

impl RunLoop {
    async fn run_to_end(&mut self, mut rx: mpsc::UnboundedReceiver<Event>) -> Result<Finished, ExecError> {
        (self.progress)(Progress::RunStarted { total: self.instances.len() });
        if self.run.state != RunState::Running {
            self.run.state = RunState::Running;
            self.run.start.get_or_insert_with(Utc::now);
        }
        self.resume();
        self.commit()?;
        loop {
            if self.finished() {
                return self.finish();
            }
            let event = tokio::select! {
                event = rx.recv() => event,
                _ = self.control.cancel.cancelled(), if self.run.note.is_none() => {
                    self.on_cancel();
                    self.attempts.cancel();
                    self.commit()?;
                    continue;
                }
                _ = self.control.drain.cancelled(), if !self.draining => {
                    self.draining = true;
                    continue;
                }
                _ = self.control.halt.cancelled(), if !self.halting => {
                    self.draining = true;
                    self.halting = true;
                    self.attempts.cancel();
                    continue;
                }
            };
            let Some(event) = event else { return self.finish() };
            self.handle(event)?;
            // Drain whatever else arrived, so one flush covers the whole step.
            while let Ok(event) = rx.try_recv() {
                self.handle(event)?;
            }
            self.commit()?;
        }
    }

    fn finished(&self) -> bool {
        if self.running > 0 {
            return false;
        }
        if self.run.note.is_some() || self.draining {
            // Cancelled or shutting down: nothing new starts; done once the running attempts have
            // stopped.
            return true;
        }
        self.instances.iter().all(|ti| ti.state.is_terminal())
    }

    fn finish(&mut self) -> Result<Finished, ExecError> {
        let all_settled = self.instances.iter().all(|ti| ti.state.is_terminal());
        if self.draining && self.run.note.is_none() && !all_settled {
            // Shutting down: the run stays running and resumes at the next start.
            self.exec.store.write(&[Write::Run(self.run.clone())])?;
            return Ok(Finished { run: self.run.clone(), instances: std::mem::take(&mut self.instances) });
        }
        let leaf_failed = self.instances.iter().enumerate().any(|(i, ti)| {
            self.downstream[i].is_empty() && matches!(ti.state, TaskState::Failed | TaskState::UpstreamFailed)
        });
        self.run.state = if leaf_failed || self.run.note.is_some() { RunState::Failed } else { RunState::Success };
        self.run.end = Some(Utc::now());
        self.exec.store.write(&[Write::Run(self.run.clone())])?;
        (self.progress)(Progress::RunFinished { state: self.run.state });
        Ok(Finished { run: self.run.clone(), instances: std::mem::take(&mut self.instances) })
    }

    /// Picks up where the stored state left off: retries that are due, tasks whose upstream
    /// tasks have settled, and roots.
    fn resume(&mut self) {
        for i in 0..self.instances.len() {
            match self.instances[i].state {
                TaskState::Scheduled => self.make_ready(i),
                TaskState::UpForRetry => self.schedule_retry(i),
                TaskState::None => self.evaluate(i),
                TaskState::Running if self.instances[i].external_job.is_some() => self.reattach.push_back(i),
                TaskState::Running => self.interrupted(i),
                _ => {}
            }
        }
        self.fill_slots();
    }

    /// An attempt recorded as running whose process stopped: whatever it left behind is killed
    /// (so it can never run beside its retry), and it fails as interrupted, retried by its policy.
    fn interrupted(&mut self, i: usize) {
        let ti = &self.instances[i];
        let id = crate::process::attempt_id(&self.run.dag_id, &self.run.run_id, &ti.task_id, ti.try_number);
        let killed = crate::process::kill_tagged(&id);
        if killed > 0 {
            tracing::warn!(attempt = %id, killed, "killed processes left by an interrupted attempt");
        }
        // As if the attempt had just reported its failure.
        self.running += 1;
        let started = ti.start.map_or(Duration::ZERO, |s| (Utc::now() - s).to_std().unwrap_or_default());
        let try_number = ti.try_number;
        self.on_finished(i, try_number, AttemptResult::Done(Err(TaskError::retryable(INTERRUPTED))), started);
    }

    fn apply(&mut self, i: usize, event: TaskEvent) -> bool {
        match transition(self.instances[i].state, event) {
            Ok(to) => {
                self.instances[i].state = to;
                self.pending.push(i);
                true
            }
            Err(refused) => {
                tracing::debug!(task_id = %self.instances[i].task_id, %refused, "event ignored");
                false
            }
        }
    }

    /// Decides a waiting task's fate from its upstream tasks, cascading skips and upstream
    /// failures downstream.
    fn evaluate(&mut self, start: usize) {
        let mut queue = vec![start];
        while let Some(i) = queue.pop() {
            if self.instances[i].state != TaskState::None || self.run.note.is_some() {
                continue;
            }
            let counts = UpstreamCounts::of(self.upstream[i].iter().map(|&u| self.instances[u].state));
            let event = match decide(self.dag.tasks[i].trigger_rule, counts) {
                Decision::Wait => continue,
                Decision::Run => TaskEvent::Ready,
                Decision::Skip => TaskEvent::UpstreamSkipped,
                Decision::UpstreamFailed => TaskEvent::UpstreamFailed,
            };
            if !self.apply(i, event) {
                continue;
            }
            if event == TaskEvent::Ready {
                self.make_ready(i);
            } else {
                let state = self.instances[i].state;
                (self.progress)(Progress::TaskSettled {
                    task_id: self.instances[i].task_id.clone(),
                    state,
                    try_number: self.instances[i].try_number,
                    duration: None,
                    error: None,
                });
                queue.extend(self.downstream[i].iter().copied());
            }
        }
    }

    /// Queues a scheduled task for a slot.
    fn make_ready(&mut self, i: usize) {
        self.ready_since[i] = Some(Instant::now());
        self.ready.push_back(i);
    }

    /// Whether nothing new may start: the run was cancelled, or the process is shutting down.
    /// The drain token is read as well as `draining`: a step that handles an attempt's end in
    /// the same wake-up as the drain must not start the tasks that end unblocked.
    fn stopping(&self) -> bool {
        self.run.note.is_some() || self.draining || self.control.drain.is_cancelled()
    }

    fn fill_slots(&mut self) {
        if self.stopping() {
            return;
        }
        while let Some(&i) = self.reattach.front() {
            match self.slots.try_take() {
                Some((dag, global)) => {
                    self.reattach.pop_front();
                    // Same try, same state: the attempt picks up the job it recorded.
                    self.running += 1;
                    self.to_start.push((i, dag, global));
                }
                None => {
                    self.wait_for_permits();
                    return;
                }
            }
        }
        while !self.ready.is_empty() {
            match self.slots.try_take() {
                Some((dag, global)) => {
                    let Some(i) = self.ready.pop_front() else { break };
                    self.begin(i, dag, global);
                }
                None => {
                    self.wait_for_permits();
                    break;
                }
            }
        }
    }

    fn wait_for_permits(&mut self) {
        if self.waiting_for_permits {
            return;
        }
        self.waiting_for_permits = true;
        let dag = self.slots.dag.clone();
        let global = self.slots.global.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let Ok(dag) = dag.acquire_owned().await else { return };
            let Ok(global) = global.acquire_owned().await else { return };
            let _ = tx.send(Event::Permits(dag, global));
        });
    }

    /// Marks an attempt as started; it is spawned after the step's batch is durable.
    fn begin(&mut self, i: usize, dag: OwnedSemaphorePermit, global: OwnedSemaphorePermit) {
        if !self.apply(i, TaskEvent::Start) {
            return;
        }
        let ti = &mut self.instances[i];
        ti.try_number += 1;
        ti.start = Some(Utc::now());
        ti.end = None;
        ti.retry_at = None;
        ti.error = None;
        self.running += 1;
        self.to_start.push((i, dag, global));
    }

    fn handle(&mut self, event: Event) -> Result<(), ExecError> {
        match event {
            Event::Permits(dag, global) => {
                self.waiting_for_permits = false;
                let stopped = self.stopping();
                if let (false, Some(i)) = (stopped, self.reattach.pop_front()) {
                    self.running += 1;
                    self.to_start.push((i, dag, global));
                } else {
                    match self.ready.pop_front() {
                        Some(i) if !stopped => self.begin(i, dag, global),
                        Some(i) => self.ready.push_front(i),
                        None => {}
                    }
                }
                self.fill_slots();
            }
            Event::RetryDue { index, try_number } => {
                if self.instances[index].try_number == try_number && self.apply(index, TaskEvent::RetryDue) {
                    self.make_ready(index);
                    self.fill_slots();
                }
            }
            Event::RecordJob { index, try_number, job, ack } => {
                let ti = &mut self.instances[index];
                if ti.try_number != try_number || ti.state != TaskState::Running {
                    let _ = ack.send(Err(TaskError::fatal("the attempt is no longer current")));
                    return Ok(());
                }
                ti.external_job = job;
                let write = Write::Task { dag_id: self.run.dag_id.clone(), run_id: self.run.run_id.clone(), instance: ti.clone() };
                let result = self.exec.store.write(&[write]);
                let _ = ack.send(result.map_err(|e| TaskError::retryable(format!("cannot record the external job: {e}"))));
            }
            Event::Finished { index, try_number, result, started } => {
                self.on_finished(index, try_number, result, started.elapsed());
                self.fill_slots();
            }
        }
        Ok(())
    }

    fn on_finished(&mut self, i: usize, try_number: u32, result: AttemptResult, duration: Duration) {
        if self.instances[i].try_number != try_number || self.instances[i].state != TaskState::Running {
            return;
        }
        self.running -= 1;
        let result = bounded_outputs(result);
        let masker = self.exec.masker.clone();
        let task = &self.dag.tasks[i];
        let result_kind = match &result {
            AttemptResult::Done(Err(_)) | AttemptResult::Cancelled if self.halting && self.run.note.is_none() => ResultKind::Halted,
            AttemptResult::Done(Err(_)) if self.run.note.is_none() => ResultKind::Failed,
            _ => ResultKind::Other,
        };
        let (event, error) = match result {
            AttemptResult::Done(Ok(Outcome::Success { outputs })) => {
                // The store and everything that reads it never hold a secret, outputs included.
                let outputs = mask_outputs(&masker, outputs);
                if !outputs.is_empty() {
                    Arc::make_mut(&mut self.outputs).insert(task.id.clone(), outputs.clone());
                }
                self.instances[i].outputs = outputs;
                (TaskEvent::Succeeded, None)
            }
            AttemptResult::Done(Ok(Outcome::Skipped { reason, outputs })) => {
                self.instances[i].outputs = mask_outputs(&masker, outputs);
                (TaskEvent::Skipped, Some(reason))
            }
            AttemptResult::Cancelled | AttemptResult::Done(Err(_)) if self.run.note.is_some() => {
                (TaskEvent::Cancelled, self.run.note.clone())
            }
            AttemptResult::Cancelled | AttemptResult::Done(Err(_)) if self.halting => {
                // Stopped by a graceful shutdown, not by its own doing: it runs again at the next
                // start without spending one of its retries (Airflow's "restarting").
                self.instances[i].max_tries += 1;
                self.instances[i].retry_at = Some(Utc::now());
                (TaskEvent::FailedWillRetry, Some(INTERRUPTED.to_string()))
            }
            AttemptResult::Cancelled => (TaskEvent::Cancelled, Some("cancelled".into())),
            AttemptResult::TimedOut(limit) => {
                self.failure_event(i, ErrorKind::Retryable, format!("timed out after {}", humantime::format_duration(limit)))
            }
            AttemptResult::Done(Err(e)) => self.failure_event(i, e.kind, e.message),
        };
        let error = error.map(|e| masker.mask(&e).into_owned());
        // The external job outlives a failed attempt unless the operator cleared it (it ended):
        // the retry, or the next start after a shutdown, polls it instead of submitting it again.
        // After a success, a skip, a cancel or a timeout (the operator was told to cancel it)
        // there is nothing to go back to.
        let job_may_run_on = matches!(result_kind, ResultKind::Failed | ResultKind::Halted);
        self.apply(i, event);
        let ti = &mut self.instances[i];
        ti.end = Some(Utc::now());
        if !job_may_run_on {
            ti.external_job = None;
        }
        ti.error = if matches!(event, TaskEvent::Succeeded | TaskEvent::Skipped) { None } else { error.clone() };
        let state = ti.state;
        (self.progress)(Progress::TaskSettled {
            task_id: ti.task_id.clone(),
            state,
            try_number,
            duration: Some(duration),
            error: if event == TaskEvent::Skipped { None } else { error },
        });
        match state {
            TaskState::UpForRetry => self.schedule_retry(i),
            s if s.is_terminal() => {
                for d in self.downstream[i].clone() {
                    self.evaluate(d);
                }
            }
            _ => {}
        }
    }

    fn failure_event(&mut self, i: usize, kind: ErrorKind, message: String) -> (TaskEvent, Option<String>) {
        let ti = &self.instances[i];
        let can_retry = kind == ErrorKind::Retryable && ti.try_number < ti.max_tries && self.run.note.is_none();
        if can_retry {
            let delay = self.dag.tasks[i].retry.delay_before(ti.try_number + 1);
            self.instances[i].retry_at = Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
            (TaskEvent::FailedWillRetry, Some(message))
        } else {
            (TaskEvent::Failed, Some(message))
        }
    }

    fn schedule_retry(&mut self, i: usize) {
        let ti = &self.instances[i];
        let wait = ti.retry_at.map_or(Duration::ZERO, |at| (at - Utc::now()).to_std().unwrap_or_default());
        let (tx, try_number) = (self.tx.clone(), ti.try_number);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = tx.send(Event::RetryDue { index: i, try_number });
        });
    }

    fn on_cancel(&mut self) {
        self.run.note = Some("cancelled by the user".into());
        self.run_dirty = true;
        self.ready.clear();
        for i in 0..self.instances.len() {
            match self.instances[i].state {
                TaskState::Scheduled => {
                    self.apply(i, TaskEvent::Cancelled);
                }
                TaskState::UpForRetry => {
                    self.apply(i, TaskEvent::Cancelled);
                    self.instances[i].error = Some("cancelled by the user before its retry".into());
                }
                _ => {}
            }
        }
    }

    /// Writes this step's changes in one flushed batch, then starts the attempts it made ready.
    fn commit(&mut self) -> Result<(), ExecError> {
        if self.pending.is_empty() && self.to_start.is_empty() && !self.run_dirty {
            return Ok(());
        }
        // In the order the changes were decided: a task's end before the starts it unblocked.
        let mut written = std::collections::HashSet::with_capacity(self.pending.len());
        for i in std::mem::take(&mut self.pending).into_iter().rev() {
            if written.insert(i) {
                self.pending.push(i);
            }
        }
        self.pending.reverse();
        let store = &self.exec.store;
        for &i in &self.pending {
            store.put_task(&self.run.dag_id, &self.run.run_id, &self.instances[i])?;
        }
        self.pending.clear();
        if std::mem::take(&mut self.run_dirty) {
            store.put_run(&self.run)?;
        }
        store.flush()?;
        for (i, dag_permit, global_permit) in std::mem::take(&mut self.to_start) {
            self.spawn_attempt(i, dag_permit, global_permit);
        }
        (self.progress)(Progress::StepCommitted);
        Ok(())
    }

    fn spawn_attempt(&mut self, i: usize, dag_permit: OwnedSemaphorePermit, global_permit: OwnedSemaphorePermit) {
        let dag = self.dag.clone();
        let task = &dag.tasks[i];
        let ti = &self.instances[i];
        let try_number = ti.try_number;
        let max_tries = ti.max_tries;
        let waited = self.ready_since[i].take().map(|since| since.elapsed());
        (self.progress)(Progress::AttemptStarted { task_id: task.id.clone(), try_number, max_tries, waited });
        let exec = self.exec.clone();
        let log = Arc::new(exec.logs.open(attempt_log_path(&exec.logs_dir, &self.run.dag_id, &self.run.run_id, &task.id, try_number)));
        let cancel = self.attempts.child_token();
        let jobs = Arc::new(LoopJobs { tx: self.tx.clone(), index: i, try_number });
        let ctx = TaskContext {
            dag_id: self.run.dag_id.clone(),
            run_id: self.run.run_id.clone(),
            task_id: task.id.clone(),
            try_number,
            max_tries,
            logical_date: self.run.logical_date,
            log: log.clone(),
            cancel: cancel.clone(),
            external_job: ti.external_job.clone(),
            external_jobs: jobs,
            secrets: exec.secret_values.clone(),
            work_dir: self.work_dir.clone(),
            attempt_id: crate::process::attempt_id(&self.run.dag_id, &self.run.run_id, &task.id, try_number),
            die_with_flowctl: exec.die_with_flowctl,
            connections: exec.connections.clone(),
            history: Arc::new(StoreHistory {
                store: exec.store.clone(),
                dag_id: self.run.dag_id.clone(),
                run_id: self.run.run_id.clone(),
                task_id: task.id.clone(),
            }),
            shutdown: self.control.halt.clone(),
            slot: crate::operator::Slot::new((dag_permit, global_permit), self.slots.dag.clone(), self.slots.global.clone()),
        };
        let slot = ctx.slot.clone();
        let facts = self.facts.clone();
        let outputs = self.outputs.clone();
        let tx = self.tx.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            let task = &dag.tasks[i];
            log.engine_line(&format!("attempt {try_number} of {max_tries} of task {} ({})", task.id, task.operator), false);
            let result = run_attempt(&exec, task, &facts, &outputs, ctx, &log, cancel).await;
            let state = match &result {
                AttemptResult::Done(Ok(Outcome::Success { .. })) => "success".to_string(),
                AttemptResult::Done(Ok(Outcome::Skipped { reason, .. })) => format!("skipped ({reason})"),
                AttemptResult::Done(Err(e)) => format!("failed: {}", e.message),
                AttemptResult::TimedOut(limit) => format!("failed: timed out after {}", humantime::format_duration(*limit)),
                AttemptResult::Cancelled => "failed: cancelled".to_string(),
            };
            let failed = !matches!(result, AttemptResult::Done(Ok(_)));
            // Before the loop hears of the end, so the slot is free for what the end unblocks.
            slot.release().await;
            log.close(try_number, &state, failed);
            let _ = tx.send(Event::Finished { index: i, try_number, result, started });
        });
    }
}

async fn run_attempt(
    exec: &Executor,
    task: &crate::dag::Task,
    facts: &RunFacts,
    outputs: &BTreeMap<String, Outputs>,
    ctx: TaskContext,
    log: &crate::logs::AttemptLog,
    cancel: CancellationToken,
) -> AttemptResult {
    let with = if render::has_templates(&task.with) {
        let context = render::context(facts, &task.id, ctx.try_number, outputs, &exec.process_env);
        match render::render(&exec.template_env, &task.with, &context) {
            Ok(v) => v,
            Err(e) => return AttemptResult::Done(Err(TaskError::fatal(exec.masker.mask(&e).into_owned()))),
        }
    } else {
        task.with.clone()
    };
    if with.as_object().is_some_and(|m| !m.is_empty()) {
        let shown = serde_json::to_string_pretty(&exec.masker.mask_json(&with)).unwrap_or_default();
        log.engine_line(&format!("settings:\n{shown}"), true);
    }
    let Some(operator) = exec.registry.get(&task.operator) else {
        return AttemptResult::Done(Err(TaskError::fatal(format!("operator \"{}\" is not in this build", task.operator))));
    };
    let future = operator.execute(with, ctx);
    tokio::pin!(future);
    let deadline = async {
        match task.timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        result = &mut future => AttemptResult::Done(result),
        _ = deadline => {
            // Timed out: let the operator stop its work (the shell operator signals its process
            // group), but do not wait for it forever.
            let limit = task.timeout.unwrap_or_default();
            log.engine_line(&format!("timed out after {}; stopping", humantime::format_duration(limit)), true);
            cancel.cancel();
            let _ = tokio::time::timeout(OPERATOR_STOP_DEADLINE, &mut future).await;
            AttemptResult::TimedOut(limit)
        }
        _ = cancel.cancelled() => {
            log.engine_line("cancelled; stopping", true);
            let _ = tokio::time::timeout(OPERATOR_STOP_DEADLINE, &mut future).await;
            AttemptResult::Cancelled
        }
    }
}

/// [`TaskHistory`] over the store: a scan of the DAG's other runs for this task's latest end.
struct StoreHistory {
    store: Store,
    dag_id: String,
    run_id: String,
    task_id: String,
}

#[async_trait]
impl crate::operator::TaskHistory for StoreHistory {
    async fn previous_outputs(&self) -> Result<Option<Outputs>, TaskError> {
        let failed = |e: StoreError| TaskError::retryable(format!("cannot read earlier runs from the store: {e}"));
        let mut latest: Option<(DateTime<Utc>, Outputs)> = None;
        for run in self.store.runs(&self.dag_id).map_err(failed)? {
            if run.run_id == self.run_id {
                continue;
            }
            for ti in self.store.task_instances(&self.dag_id, &run.run_id).map_err(failed)? {
                let ended_well = matches!(ti.state, TaskState::Success | TaskState::Skipped);
                if ti.task_id != self.task_id || !ended_well || ti.outputs.is_empty() {
                    continue;
                }
                let end = ti.end.unwrap_or(run.logical_date);
                if latest.as_ref().is_none_or(|(at, _)| end > *at) {
                    latest = Some((end, ti.outputs));
                }
            }
        }
        Ok(latest.map(|(_, outputs)| outputs))
    }
}

/// An attempt whose outputs nest deeper than [`crate::yaml::MAX_VALUE_DEPTH`] (a JSON body an
/// HTTP request parsed, say) fails instead of storing a task record that could not be read back.
fn bounded_outputs(result: AttemptResult) -> AttemptResult {
    let outputs = match &result {
        AttemptResult::Done(Ok(Outcome::Success { outputs } | Outcome::Skipped { outputs, .. })) => outputs,
        _ => return result,
    };
    match outputs.iter().map(|(key, value)| (key, crate::yaml::json_depth(value))).find(|(_, d)| *d > crate::yaml::MAX_VALUE_DEPTH) {
        Some((key, depth)) => AttemptResult::Done(Err(TaskError::fatal(format!(
            "output \"{key}\" nests {depth} levels deep; flowctl stores outputs at most {} levels deep: have the task write a flatter value",
            crate::yaml::MAX_VALUE_DEPTH
        )))),
        None => result,
    }
}

fn mask_outputs(masker: &Masker, outputs: Outputs) -> Outputs {
    match masker.mask_json(&Value::Object(outputs)) {
        Value::Object(masked) => masked,
        _ => Outputs::new(),
    }
}

/// The external-job hook, served by the run loop so it stays the only writer of the run's state.
struct LoopJobs {
    tx: mpsc::UnboundedSender<Event>,
    index: usize,
    try_number: u32,
}

#[async_trait]
impl ExternalJobStore for LoopJobs {
    async fn record(&self, job: ExternalJob) -> Result<(), TaskError> {
        self.send(Some(job)).await
    }

    async fn clear(&self) -> Result<(), TaskError> {
        self.send(None).await
    }
}

impl LoopJobs {
    async fn send(&self, job: Option<ExternalJob>) -> Result<(), TaskError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Event::RecordJob { index: self.index, try_number: self.try_number, job, ack })
            .map_err(|_| TaskError::fatal("the run has ended"))?;
        done.await.map_err(|_| TaskError::fatal("the run has ended"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn success(value: Value) -> AttemptResult {
        let mut outputs = Outputs::new();
        outputs.insert("body".into(), value);
        AttemptResult::Done(Ok(Outcome::Success { outputs }))
    }

    #[test]
    fn outputs_deeper_than_a_record_can_hold_fail_the_attempt() {
        let nested = |levels: usize| (0..levels).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]));
        match bounded_outputs(success(nested(crate::yaml::MAX_VALUE_DEPTH + 1))) {
            AttemptResult::Done(Err(e)) => {
                assert!(matches!(e.kind, ErrorKind::Final));
                assert_eq!(e.message, "output \"body\" nests 63 levels deep; flowctl stores outputs at most 62 levels deep: have the task write a flatter value");
            }
            _ => panic!("a too-deep output must fail the attempt"),
        }
        assert!(matches!(bounded_outputs(success(nested(crate::yaml::MAX_VALUE_DEPTH))), AttemptResult::Done(Ok(_))));
    }
}
