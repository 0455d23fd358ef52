//! The operator plugin boundary: one trait every operator implements, and the registry compile and
//! the executor look operators up in.
//!
//! An operator owns its settings (the task's `with:`) through a `Config` type that serde validates
//! at compile time, so a typo in a field is reported with its file and line before anything runs.
//! At run time it receives the rendered settings and a [`TaskContext`]: the run's facts, a log sink,
//! a cancellation token, and the external-job hook that lets a retry or a restarted server reattach
//! to a job (an EMR step, a Redshift statement, a SageMaker training job) instead of submitting it
//! twice. It answers with an [`Outcome`] (success or skipped, with a JSON object of outputs) or a
//! [`TaskError`] marked retryable or final.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The JSON object of outputs a task returns; downstream templates read it as
/// `tasks.<id>.outputs.<key>`.
pub type Outputs = serde_json::Map<String, Value>;

/// How an attempt ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The work was done.
    Success {
        /// What the task produced.
        outputs: Outputs,
    },
    /// There was nothing to do (e.g. no new data); downstream tasks skip under the default trigger
    /// rule.
    Skipped {
        /// Why, for the log and `flowctl status`.
        reason: String,
        /// What the task produced anyway.
        outputs: Outputs,
    },
}

impl Outcome {
    /// Success with no outputs.
    pub fn success() -> Self {
        Outcome::Success { outputs: Outputs::new() }
    }

    /// The outputs, whichever way the attempt ended.
    pub fn outputs(&self) -> &Outputs {
        match self {
            Outcome::Success { outputs } | Outcome::Skipped { outputs, .. } => outputs,
        }
    }
}

/// Whether trying again could help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Throttling, a 5xx, a lost connection, a non-zero exit: the retry policy applies.
    Retryable,
    /// Bad SQL, access denied, a missing file: retrying only spends time, so the task fails now.
    Final,
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    /// Retryable or final.
    pub kind: ErrorKind,
    /// What went wrong and what to do about it. The engine adds the task's name; operators don't.
    pub message: String,
}

impl TaskError {
    /// An error the retry policy may retry.
    pub fn retryable(message: impl Into<String>) -> Self {
        TaskError { kind: ErrorKind::Retryable, message: message.into() }
    }

    /// An error no retry can fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        TaskError { kind: ErrorKind::Final, message: message.into() }
    }

    /// The attempt was cancelled (timeout, Ctrl-C, `flowctl cancel`).
    pub fn cancelled() -> Self {
        TaskError::fatal("cancelled")
    }
}

/// A job started outside flowctl that an attempt waits on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExternalJob {
    /// What kind of job, e.g. `emr_step`, `redshift_statement`, `sagemaker_training_job`.
    pub kind: String,
    /// The service's id for it.
    pub id: String,
    /// Anything else needed to find it again (cluster id, region...).
    #[serde(default)]
    pub detail: BTreeMap<String, String>,
}

/// Durable storage for a task instance's external job: the engine implements it over its store.
#[async_trait]
pub trait ExternalJobStore: Send + Sync {
    /// Records the job durably. Operators call this after submitting and *before* waiting, so a
    /// crash while waiting leaves the id behind for the next attempt to reattach to.
    async fn record(&self, job: ExternalJob) -> Result<(), TaskError>;
    /// Forgets the job once it has reached an end, so a later retry submits a fresh one.
    async fn clear(&self) -> Result<(), TaskError>;
}

/// What earlier runs of a task left behind, read on demand (a scan of the DAG's runs, so the
/// executor does not pay for it on every hand-off).
#[async_trait]
pub trait TaskHistory: Send + Sync {
    /// The outputs of this task's most recently ended successful or skipped instance in another run
    /// of the same DAG: what `http.download`'s `if_changed` compares against.
    async fn previous_outputs(&self) -> Result<Option<Outputs>, TaskError>;
}

/// A history with nothing in it, for tests and one-off executions.
#[derive(Debug, Default)]
pub struct NoHistory;

#[async_trait]
impl TaskHistory for NoHistory {
    async fn previous_outputs(&self) -> Result<Option<Outputs>, TaskError> {
        Ok(None)
    }
}

/// Checks that a connection works: registered by the operators for each connection type, run by
/// `flowctl connections test NAME`.
#[async_trait]
pub trait ConnectionTester: Send + Sync {
    /// Connects and makes the cheapest authenticated call (AWS: STS GetCallerIdentity; SQL:
    /// `SELECT 1`). Returns what was learnt (the account and identity, the server version) or
    /// what is wrong and how to fix it.
    async fn test(&self, connection: &crate::connections::Connection) -> Result<String, String>;
}

/// Where an attempt's log lines go: the engine writes them to the attempt log file, masking
/// secrets on the way.
pub trait LogSink: Send + Sync {
    /// Writes one line (without its newline).
    fn line(&self, text: &str);
}

/// A log sink that keeps lines in memory, for tests and for callers that want the text.
#[derive(Debug, Default)]
pub struct MemoryLog(std::sync::Mutex<Vec<String>>);

impl MemoryLog {
    /// The lines written so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl LogSink for MemoryLog {
    fn line(&self, text: &str) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(text.to_string());
        }
    }
}

/// The attempt's slot: one permit of its DAG's `max_active_tasks` and one of the global
/// `parallelism`. A sensor gives it back while it waits between pokes (Airflow's "reschedule"
/// mode), so a DAG full of waiting sensors does not stop other tasks from running.
#[derive(Clone, Default)]
pub struct Slot(Option<Arc<SlotInner>>);

struct SlotInner {
    held: tokio::sync::Mutex<Option<(tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit)>>,
    dag: Arc<tokio::sync::Semaphore>,
    global: Arc<tokio::sync::Semaphore>,
}

impl Slot {
    /// A slot holding these permits, taken from these semaphores (the DAG's first).
    pub fn new(
        permits: (tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit),
        dag: Arc<tokio::sync::Semaphore>,
        global: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        Slot(Some(Arc::new(SlotInner { held: tokio::sync::Mutex::new(Some(permits)), dag, global })))
    }

    /// Gives the permits back for good (the attempt has ended).
    pub async fn release(&self) {
        if let Some(inner) = &self.0 {
            inner.held.lock().await.take();
        }
    }

    /// Waits `duration` without holding the slot, then takes it back (behind every task that
    /// queued meanwhile: the semaphores are fair). Returns `Err(cancelled)` as soon as `cancel`
    /// fires, whether sleeping or queueing.
    pub async fn wait_unslotted(&self, duration: std::time::Duration, cancel: &CancellationToken) -> Result<(), TaskError> {
        let Some(inner) = &self.0 else {
            return tokio::select! {
                _ = tokio::time::sleep(duration) => Ok(()),
                _ = cancel.cancelled() => Err(TaskError::cancelled()),
            };
        };
        inner.held.lock().await.take();
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = cancel.cancelled() => return Err(TaskError::cancelled()),
        }
        // The same order as the executor takes them (DAG first, then global), so no two waiters
        // can each hold one half.
        let take = async {
            let dag = inner.dag.clone().acquire_owned().await.ok()?;
            let global = inner.global.clone().acquire_owned().await.ok()?;
            Some((dag, global))
        };
        tokio::select! {
            permits = take => {
                *inner.held.lock().await = permits;
                Ok(())
            }
            _ = cancel.cancelled() => Err(TaskError::cancelled()),
        }
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Slot(held)" } else { "Slot(none)" })
    }
}

/// Everything an attempt knows about where it runs.
#[derive(Clone)]
pub struct TaskContext {
    /// The DAG's id.
    pub dag_id: String,
    /// The run's id.
    pub run_id: String,
    /// The task's id.
    pub task_id: String,
    /// 1 for the first attempt.
    pub try_number: u32,
    /// The last try the retry policy allows.
    pub max_tries: u32,
    /// The run's logical date (the start of its data interval).
    pub logical_date: DateTime<Utc>,
    /// The attempt's log.
    pub log: Arc<dyn LogSink>,
    /// Cancelled on timeout, Ctrl-C, `flowctl cancel` or shutdown; operators stop their work and
    /// cancel external jobs when it fires.
    pub cancel: CancellationToken,
    /// The job an earlier attempt recorded and did not finish, to reattach to.
    pub external_job: Option<ExternalJob>,
    /// Where to record a new external job.
    pub external_jobs: Arc<dyn ExternalJobStore>,
    /// Values that must never be written anywhere (they are replaced by `***`).
    pub secrets: Arc<Vec<String>>,
    /// A scratch folder for this run (`work/<dag>/<run>/`); operators name their files after the
    /// task and try so attempts never collide.
    pub work_dir: std::path::PathBuf,
    /// A unique id of this attempt (`dag/run/task/try`). Operators that start processes put it in
    /// their environment as `FLOWCTL_ATTEMPT_ID`, so processes left behind by a stopped flowctl
    /// can be found and killed before the attempt is retried.
    pub attempt_id: String,
    /// Whether processes the operator starts should die when flowctl dies (a parent-death
    /// signal). The server asks for it, so a crashed server leaves no command running until its
    /// restart; it costs a `fork` per process instead of a `posix_spawn` (about 1 ms more here),
    /// so one-off `flowctl run`s, whose leftovers the attempt id finds anyway, do not.
    pub die_with_flowctl: bool,
    /// The process's named connections (`connection:` in a task's settings).
    pub connections: Arc<crate::connections::Connections>,
    /// Earlier runs of this task.
    pub history: Arc<dyn TaskHistory>,
    /// The attempt's slot, which sensors give back between pokes with
    /// [`Slot::wait_unslotted`].
    pub slot: Slot,
    /// Fired (with `cancel`) when flowctl itself stops after its shutdown grace period, rather
    /// than the task being cancelled or timing out. An operator waiting on an external job then
    /// leaves the job running and returns: the next start reattaches to it. When only `cancel`
    /// fires, the operator cancels the job at the service.
    pub shutdown: CancellationToken,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("dag_id", &self.dag_id)
            .field("run_id", &self.run_id)
            .field("task_id", &self.task_id)
            .field("try_number", &self.try_number)
            .finish_non_exhaustive()
    }
}

/// An invalid `with:` setting, found at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where under `with:` the problem is, e.g. `steps[1].args`; empty for `with:` itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error about the field at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { path: path.into(), message: message.into() }
    }
}

/// An operator: implement this, then register it with [`Registry::register`].
#[async_trait]
pub trait Operator: Send + Sync + 'static {
    /// The name DAG files use in `operator:`, e.g. `shell` or `s3.upload`.
    const NAME: &'static str;
    /// The page that documents the operator's settings, named in compile errors' hints
    /// [default: `docs/operators/<NAME>.md`]. A family documented on one page (`s3.upload` and
    /// its siblings in `docs/operators/s3.md`) names that page.
    const DOCS: &'static str = "";
    /// The operator's settings, deserialized from the task's `with:`. Use
    /// `#[serde(deny_unknown_fields)]` so typos are compile errors.
    type Config: DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static;

    /// Checks that types alone cannot express (one of two fields, a value range...).
    fn check(_config: &Self::Config) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Runs one attempt with the rendered settings.
    async fn execute(&self, config: Self::Config, ctx: TaskContext) -> Result<Outcome, TaskError>;
}

/// The object-safe face of [`Operator`] that the registry stores.
#[async_trait]
pub trait DynOperator: Send + Sync {
    /// The operator's name.
    fn name(&self) -> &'static str;
    /// The page that documents the operator, relative to the repository root.
    fn docs(&self) -> String;
    /// Validates a task's `with:` at compile time.
    fn validate(&self, with: &Value) -> Result<(), ConfigError>;
    /// The JSON Schema of the operator's `with:`, with its definitions added to `generator`.
    fn config_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema;
    /// Runs one attempt with the rendered `with:`.
    async fn execute(&self, with: Value, ctx: TaskContext) -> Result<Outcome, TaskError>;
}

fn parse_config<O: Operator>(with: &Value) -> Result<O::Config, ConfigError> {
    let config: O::Config = serde_path_to_error::deserialize(with).map_err(|e| {
        let path = e.path().to_string();
        ConfigError { path: if path == "." { String::new() } else { path }, message: e.into_inner().to_string() }
    })?;
    O::check(&config)?;
    Ok(config)
}

struct Adapter<O>(O);

#[async_trait]
impl<O: Operator> DynOperator for Adapter<O> {
    fn name(&self) -> &'static str {
        O::NAME
    }

    fn docs(&self) -> String {
        if O::DOCS.is_empty() {
            format!("docs/operators/{}.md", O::NAME)
        } else {
            O::DOCS.to_string()
        }
    }

    fn validate(&self, with: &Value) -> Result<(), ConfigError> {
        parse_config::<O>(with).map(drop)
    }

    fn config_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<O::Config>()
    }

    async fn execute(&self, with: Value, ctx: TaskContext) -> Result<Outcome, TaskError> {
        // Compile validated the unrendered settings; rendering can still produce a bad value.
        let config = parse_config::<O>(&with).map_err(|e| {
            let at = if e.path.is_empty() { String::new() } else { format!(" at {}", e.path) };
            TaskError::fatal(format!("invalid settings after rendering templates{at}: {}", e.message))
        })?;
        self.0.execute(config, ctx).await
    }
}

/// The operators this binary knows, by name.
#[derive(Clone, Default)]
pub struct Registry {
    operators: BTreeMap<&'static str, Arc<dyn DynOperator>>,
    testers: BTreeMap<&'static str, Arc<dyn ConnectionTester>>,
    aws_services: std::collections::BTreeSet<&'static str>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.operators.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Adds an operator under its name; a later registration of the same name replaces it.
    pub fn register<O: Operator>(&mut self, operator: O) -> &mut Self {
        self.operators.insert(O::NAME, Arc::new(Adapter(operator)));
        self
    }

    /// The operator called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn DynOperator>> {
        self.operators.get(name).cloned()
    }

    /// Adds the tester of a connection type (`aws`, `mysql`, `postgres`).
    pub fn register_tester(&mut self, connection_type: &'static str, tester: Arc<dyn ConnectionTester>) -> &mut Self {
        self.testers.insert(connection_type, tester);
        self
    }

    /// The tester of a connection type, when this build has one.
    pub fn tester(&self, connection_type: &str) -> Option<Arc<dyn ConnectionTester>> {
        self.testers.get(connection_type).cloned()
    }

    /// Every registered name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.operators.keys().copied()
    }

    /// Declares a service the operators call through `type: aws` connections, by the name an
    /// `endpoints:` key gives its own endpoint under (e.g. the name the operators pass to their
    /// SDK config). The engine knows no service: config files and `FLOWCTL_CONN_*` variables
    /// are checked against what the operators of this build declared.
    pub fn register_aws_service(&mut self, service: &'static str) -> &mut Self {
        self.aws_services.insert(service);
        self
    }

    /// The declared services, sorted.
    pub fn aws_services(&self) -> Vec<&'static str> {
        self.aws_services.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct EchoConfig {
        message: String,
        #[serde(default)]
        steps: Vec<Step>,
    }

    #[derive(Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Step {
        name: String,
    }

    struct Echo;

    #[async_trait]
    impl Operator for Echo {
        const NAME: &'static str = "echo";
        type Config = EchoConfig;

        async fn execute(&self, config: EchoConfig, _ctx: TaskContext) -> Result<Outcome, TaskError> {
            let mut outputs = Outputs::new();
            outputs.insert("message".into(), config.message.into());
            Ok(Outcome::Success { outputs })
        }
    }

    #[test]
    fn validation_reports_the_path_of_the_bad_field() {
        let mut registry = Registry::new();
        registry.register(Echo);
        let echo = registry.get("echo").unwrap();
        assert!(echo.validate(&json!({"message": "hi"})).is_ok());
        let err = echo.validate(&json!({"message": "hi", "steps": [{"name": "a"}, {"nmae": "b"}]})).unwrap_err();
        assert_eq!(err.path, "steps[1].nmae");
        assert!(err.message.starts_with("unknown field `nmae`"), "{}", err.message);
        let err = echo.validate(&json!({})).unwrap_err();
        assert_eq!(err.path, "");
        assert_eq!(err.message, "missing field `message`");
        let err = echo.validate(&json!({"message": 3})).unwrap_err();
        assert_eq!(err.path, "message");
    }

    #[tokio::test(start_paused = true)]
    async fn a_sensor_gives_its_slot_back_while_it_waits() {
        let dag = Arc::new(tokio::sync::Semaphore::new(1));
        let global = Arc::new(tokio::sync::Semaphore::new(8));
        let permits = (dag.clone().try_acquire_owned().unwrap(), global.clone().try_acquire_owned().unwrap());
        let slot = Slot::new(permits, dag.clone(), global.clone());
        let cancel = CancellationToken::new();
        assert!(dag.clone().try_acquire_owned().is_err(), "the slot holds the DAG's only permit");

        let waiting = tokio::spawn({
            let (slot, cancel) = (slot.clone(), cancel.clone());
            async move { slot.wait_unslotted(std::time::Duration::from_secs(30), &cancel).await }
        });
        // While the sensor waits, another task of the DAG takes the permit...
        let other = dag.clone().acquire_owned().await.unwrap();
        assert_eq!(global.available_permits(), 8, "the global permit was given back too");
        // ...and the sensor queues behind it after its wait, taking the permit when it is free.
        tokio::time::advance(std::time::Duration::from_secs(31)).await;
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the sensor must wait for the permit the other task holds");
        drop(other);
        assert!(waiting.await.unwrap().is_ok());
        assert_eq!(dag.available_permits(), 0, "the sensor holds its slot again");
        slot.release().await;
        assert_eq!((dag.available_permits(), global.available_permits()), (1, 8));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_sensor_stops_waiting_for_its_slot() {
        let dag = Arc::new(tokio::sync::Semaphore::new(1));
        let global = Arc::new(tokio::sync::Semaphore::new(1));
        let permits = (dag.clone().try_acquire_owned().unwrap(), global.clone().try_acquire_owned().unwrap());
        let slot = Slot::new(permits, dag.clone(), global.clone());
        let cancel = CancellationToken::new();
        let _hog = {
            let waiting = tokio::spawn({
                let (slot, cancel) = (slot.clone(), cancel.clone());
                async move { slot.wait_unslotted(std::time::Duration::from_secs(5), &cancel).await }
            });
            let hog = dag.clone().acquire_owned().await.unwrap();
            tokio::time::advance(std::time::Duration::from_secs(6)).await;
            cancel.cancel();
            assert_eq!(waiting.await.unwrap().unwrap_err(), TaskError::cancelled());
            hog
        };
        assert_eq!(global.available_permits(), 1, "a cancelled sensor holds nothing");
    }
}
