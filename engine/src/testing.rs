//! Test support (cargo feature `test-support`): the one constructor of the [`TaskContext`] an
//! operator's unit tests hand to its work function, with an in-memory external-job store that keeps
//! a journal, a memory log, and no history.
//!
//! An attempt's context has eighteen fields, most of which a unit test does not care about; built
//! by hand in each test they drift apart. [`TaskContext::test_builder`] sets every field the way a
//! first attempt of a one-task run gets it, and the builder changes only what a test names:
//!
//! ```
//! use flowctl_engine::operator::{ExternalJob, TaskContext};
//!
//! let recorded = ExternalJob { kind: "emr_steps".into(), id: "s-1".into(), detail: Default::default() };
//! let task = TaskContext::test_builder().task_id("transform").try_number(2).recorded(recorded).build();
//! assert_eq!(task.ctx.try_number, 2);
//! assert_eq!(task.jobs.current().unwrap().id, "s-1");
//! ```
//!
//! The journal ([`Journal`]) is shared: tests of operators that talk to a scripted service push
//! the requests the service saw into the same journal, so one list proves the order of requests and
//! records ("record before the first poll").

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::connections::Connections;
use crate::operator::{ExternalJob, ExternalJobStore, MemoryLog, NoHistory, Slot, TaskContext, TaskError, TaskHistory};

/// What happened during a test, in order: the job store's records and clears, and whatever the
/// test pushes (requests a scripted service received). Clones share the same list.
#[derive(Clone, Debug, Default)]
pub struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    /// Appends an entry.
    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(entry.into());
    }

    /// Every entry so far.
    pub fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The external-job store of a test: keeps the current record in memory and journals each call as
/// `record <kind> <id>` (with ` <detail>` when the job has details) or `clear`.
#[derive(Debug, Default)]
pub struct MemoryJobs {
    journal: Journal,
    current: Mutex<Option<ExternalJob>>,
    refuse: Mutex<Option<String>>,
}

impl MemoryJobs {
    /// The job recorded now, if any.
    pub fn current(&self) -> Option<ExternalJob> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The journal the store writes to.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Makes every later `record` fail with `message` (a store that cannot write), so a test can
    /// check that an operator does not leave unrecorded work running.
    pub fn refuse_records(&self, message: &str) {
        *self.refuse.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_string());
    }
}

#[async_trait]
impl ExternalJobStore for MemoryJobs {
    async fn record(&self, job: ExternalJob) -> Result<(), TaskError> {
        if let Some(message) = self.refuse.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            self.journal.push(format!("record refused {} {}", job.kind, job.id));
            return Err(TaskError::retryable(message));
        }
        let detail = if job.detail.is_empty() { String::new() } else { format!(" {:?}", job.detail) };
        self.journal.push(format!("record {} {}{detail}", job.kind, job.id));
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(job);
        Ok(())
    }

    async fn clear(&self) -> Result<(), TaskError> {
        self.journal.push("clear");
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }
}

/// A built test context, with handles on what the attempt writes.
pub struct TestTask {
    /// The context to hand to the operator.
    pub ctx: TaskContext,
    /// The attempt's log.
    pub log: Arc<MemoryLog>,
    /// The external-job store.
    pub jobs: Arc<MemoryJobs>,
}

impl TestTask {
    /// The log's lines, joined with newlines.
    pub fn log_text(&self) -> String {
        self.log.lines().join("\n")
    }

    /// The journal's entries.
    pub fn journal(&self) -> Vec<String> {
        self.jobs.journal().entries()
    }

    /// Cancels the attempt as `flowctl cancel` or a `timeout:` does.
    pub fn cancel(&self) {
        self.ctx.cancel.cancel();
    }

    /// Stops the attempt as a flowctl shutting down past its grace period does (`shutdown`, then
    /// `cancel`).
    pub fn shut_down(&self) {
        self.ctx.shutdown.cancel();
        self.ctx.cancel.cancel();
    }
}

/// Builds a [`TestTask`]; see [`TaskContext::test_builder`].
#[must_use]
pub struct TaskContextBuilder {
    dag_id: String,
    run_id: String,
    task_id: String,
    try_number: u32,
    max_tries: u32,
    logical_date: DateTime<Utc>,
    recorded: Option<ExternalJob>,
    journal: Journal,
    connections: Connections,
    work_dir: PathBuf,
    secrets: Vec<String>,
    history: Arc<dyn TaskHistory>,
}

impl TaskContext {
    /// A builder of the context of the first of three tries of task `task` in run
    /// `manual__2024-03-01T00:00:00Z` of DAG `test_dag`, with no recorded job, no connections but
    /// the built-in `aws_default`, a fresh journal, the system's temporary folder as work folder,
    /// and no history.
    pub fn test_builder() -> TaskContextBuilder {
        TaskContextBuilder {
            dag_id: "test_dag".into(),
            run_id: "manual__2024-03-01T00:00:00Z".into(),
            task_id: "task".into(),
            try_number: 1,
            max_tries: 3,
            logical_date: DateTime::parse_from_rfc3339("2024-03-01T00:00:00Z").map(|t| t.with_timezone(&Utc)).unwrap_or_default(),
            recorded: None,
            journal: Journal::default(),
            connections: Connections::default(),
            work_dir: std::env::temp_dir(),
            secrets: Vec::new(),
            history: Arc::new(NoHistory),
        }
    }
}

impl TaskContextBuilder {
    /// The DAG's id.
    pub fn dag_id(mut self, id: &str) -> Self {
        self.dag_id = id.into();
        self
    }

    /// The run's id.
    pub fn run_id(mut self, id: &str) -> Self {
        self.run_id = id.into();
        self
    }

    /// The task's id.
    pub fn task_id(mut self, id: &str) -> Self {
        self.task_id = id.into();
        self
    }

    /// The try number (1 for the first attempt).
    pub fn try_number(mut self, n: u32) -> Self {
        self.try_number = n;
        self
    }

    /// The last try the retry policy allows.
    pub fn max_tries(mut self, n: u32) -> Self {
        self.max_tries = n;
        self
    }

    /// The run's logical date.
    pub fn logical_date(mut self, date: DateTime<Utc>) -> Self {
        self.logical_date = date;
        self
    }

    /// A job an earlier attempt recorded: the context offers it to reattach to, and the store
    /// holds it.
    pub fn recorded(mut self, job: ExternalJob) -> Self {
        self.recorded = Some(job);
        self
    }

    /// The journal the job store writes to, shared with the test.
    pub fn journal(mut self, journal: Journal) -> Self {
        self.journal = journal;
        self
    }

    /// The process's connections.
    pub fn connections(mut self, connections: Connections) -> Self {
        self.connections = connections;
        self
    }

    /// The run's scratch folder.
    pub fn work_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.work_dir = dir.into();
        self
    }

    /// Values that must never be written anywhere.
    pub fn secrets(mut self, secrets: Vec<String>) -> Self {
        self.secrets = secrets;
        self
    }

    /// Earlier runs of the task.
    pub fn history(mut self, history: Arc<dyn TaskHistory>) -> Self {
        self.history = history;
        self
    }

    /// The context, with its log and job store.
    pub fn build(self) -> TestTask {
        let log = Arc::new(MemoryLog::default());
        let jobs = Arc::new(MemoryJobs { journal: self.journal, current: Mutex::new(self.recorded.clone()), refuse: Mutex::new(None) });
        let attempt_id = crate::process::attempt_id(&self.dag_id, &self.run_id, &self.task_id, self.try_number);
        let ctx = TaskContext {
            dag_id: self.dag_id,
            run_id: self.run_id,
            task_id: self.task_id,
            try_number: self.try_number,
            max_tries: self.max_tries,
            logical_date: self.logical_date,
            log: log.clone(),
            cancel: CancellationToken::new(),
            external_job: self.recorded,
            external_jobs: jobs.clone(),
            secrets: Arc::new(self.secrets),
            work_dir: self.work_dir,
            attempt_id,
            die_with_flowctl: false,
            connections: Arc::new(self.connections),
            history: self.history,
            slot: Slot::default(),
            shutdown: CancellationToken::new(),
        };
        TestTask { ctx, log, jobs }
    }
}
