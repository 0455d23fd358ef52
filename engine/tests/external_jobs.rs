//! The external-job hook through the real executor and store: an operator that submits a job
//! records it, and what happens to the record decides whether the next attempt submits again.
//!
//! - A failed attempt (a poll that gave up) leaves the job recorded: the retry reattaches.
//! - A job the operator cleared (it reached an end) is not reattached: the retry submits anew.
//! - A shutdown past its grace leaves the job recorded and tells the operator through
//!   `ctx.shutdown`, so it leaves the job running: the next start reattaches.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flowctl_engine::executor::{Executor, ExecutorSettings, RunControl};
use flowctl_engine::operator::{ExternalJob, Outcome, TaskContext, TaskError};
use flowctl_engine::secrets::Masker;
use flowctl_engine::state::{Home, RunState, Trigger};
use flowctl_engine::{Operator, Registry};

/// What the test operator saw and did, in order.
type Journal = Arc<Mutex<Vec<String>>>;

#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct JobConfig {
    /// `fail_polling`: submit, then fail as a poll that gave up; `fail_job`: submit, the job
    /// fails, clear it; `wait`: submit, then wait for the cancel token.
    mode: String,
}

struct Job(Journal);

#[async_trait]
impl Operator for Job {
    const NAME: &'static str = "test.job";
    type Config = JobConfig;

    async fn execute(&self, config: JobConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        let note = |s: String| self.0.lock().unwrap().push(s);
        if let Some(job) = &ctx.external_job {
            note(format!("try {}: reattached to {}", ctx.try_number, job.id));
            ctx.external_jobs.clear().await?;
            return Ok(Outcome::success());
        }
        let id = format!("job-{}", ctx.try_number);
        note(format!("try {}: submitted {id}", ctx.try_number));
        ctx.external_jobs.record(ExternalJob { kind: "test".into(), id: id.clone(), detail: Default::default() }).await?;
        match config.mode.as_str() {
            "fail_polling" => Err(TaskError::retryable("the service did not answer the poll")),
            "fail_job" => {
                ctx.external_jobs.clear().await?;
                Err(TaskError::retryable("the job failed"))
            }
            _ => {
                ctx.cancel.cancelled().await;
                if ctx.shutdown.is_cancelled() {
                    note(format!("try {}: flowctl stopping, left {id} running", ctx.try_number));
                } else {
                    note(format!("try {}: cancelled {id} at the service", ctx.try_number));
                }
                Err(TaskError::cancelled())
            }
        }
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    home: Home,
    executor: Arc<Executor>,
    journal: Journal,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::open(&dir.path().join("home"), "external job test").unwrap();
    let journal = Journal::default();
    let mut registry = Registry::new();
    registry.register(Job(journal.clone()));
    let settings = ExecutorSettings {
        parallelism: 4,
        logs_dir: home.logs_dir(),
        work_dir: home.work_dir(),
        die_with_flowctl: false,
        connections: Default::default(),
    };
    let executor = Arc::new(Executor::new(home.store().clone(), registry, Masker::default(), settings));
    Fixture { _dir: dir, home, executor, journal }
}

fn dag(fx: &Fixture, mode: &str) -> Arc<flowctl_engine::Dag> {
    let file = fx._dir.path().join("jobs.yaml");
    std::fs::write(
        &file,
        format!("dag: jobs\ntasks:\n  - id: submit\n    operator: test.job\n    retries: 1\n    retry_delay: 0s\n    with: {{mode: {mode}}}\n"),
    )
    .unwrap();
    let mut registry = Registry::new();
    registry.register(Job(Journal::default()));
    let compiled = flowctl_engine::compile_paths(&[file], &registry).unwrap_or_else(|e| panic!("{e:?}"));
    Arc::new(compiled.dags.into_iter().next().unwrap())
}

fn new_run(fx: &Fixture, dag: &flowctl_engine::Dag) -> flowctl_engine::state::DagRun {
    let (version, _) = flowctl_engine::service::store_version(fx.home.store(), dag).unwrap();
    let date = flowctl_engine::runs::logical_date(dag, Some("2024-01-01")).unwrap();
    flowctl_engine::runs::create_run(fx.home.store(), dag, version, Trigger::Manual, date, dag.params.clone()).unwrap()
}

fn journal(fx: &Fixture) -> Vec<String> {
    fx.journal.lock().unwrap().clone()
}

#[tokio::test]
async fn a_retry_reattaches_to_the_job_a_failed_attempt_left_running() {
    let fx = fixture();
    let dag = dag(&fx, "fail_polling");
    let run = new_run(&fx, &dag);
    let finished = fx.executor.execute(dag, run, RunControl::default(), Arc::new(|_| {})).await.unwrap();
    assert_eq!(finished.run.state, RunState::Success);
    assert_eq!(journal(&fx), ["try 1: submitted job-1", "try 2: reattached to job-1"]);
    assert!(finished.instances[0].external_job.is_none(), "a finished task keeps no job");
}

#[tokio::test]
async fn a_job_that_ended_is_not_reattached() {
    let fx = fixture();
    let dag = dag(&fx, "fail_job");
    let run = new_run(&fx, &dag);
    let finished = fx.executor.execute(dag, run, RunControl::default(), Arc::new(|_| {})).await.unwrap();
    assert_eq!(finished.run.state, RunState::Failed);
    assert_eq!(journal(&fx), ["try 1: submitted job-1", "try 2: submitted job-2"]);
}

#[tokio::test]
async fn a_shutdown_leaves_the_job_for_the_next_start_and_a_cancel_does_not() {
    let fx = fixture();
    let dag = dag(&fx, "wait");
    let run = new_run(&fx, &dag);
    let run_id = run.run_id.clone();

    // A shutdown past its grace, once the job is recorded.
    let control = RunControl::default();
    let halt = control.halt.clone();
    let drain = control.drain.clone();
    let store = fx.home.store().clone();
    let watcher = tokio::spawn(async move {
        loop {
            let recorded = store.task_instances("jobs", &run_id).unwrap().iter().any(|ti| ti.external_job.is_some());
            if recorded {
                drain.cancel();
                halt.cancel();
                return;
            }
            tokio::task::yield_now().await;
        }
    });
    let stopped = fx.executor.execute(dag.clone(), run, control, Arc::new(|_| {})).await.unwrap();
    watcher.await.unwrap();
    assert_eq!(stopped.run.state, RunState::Running, "a shutdown leaves the run to the next start");
    assert_eq!(stopped.instances[0].external_job.as_ref().map(|j| j.id.as_str()), Some("job-1"));

    // The next start reattaches, without spending a retry.
    let resumed = fx.executor.execute(dag.clone(), stopped.run, RunControl::default(), Arc::new(|_| {})).await.unwrap();
    assert_eq!(resumed.run.state, RunState::Success);
    assert_eq!(
        journal(&fx),
        ["try 1: submitted job-1", "try 1: flowctl stopping, left job-1 running", "try 2: reattached to job-1"]
    );

    // A user's cancel: the operator cancels the job, and nothing is left to reattach to.
    fx.journal.lock().unwrap().clear();
    let run = {
        let date = flowctl_engine::runs::logical_date(&dag, Some("2024-01-02")).unwrap();
        let (version, _) = flowctl_engine::service::store_version(fx.home.store(), &dag).unwrap();
        flowctl_engine::runs::create_run(fx.home.store(), &dag, version, Trigger::Manual, date, dag.params.clone()).unwrap()
    };
    let run_id = run.run_id.clone();
    let control = RunControl::default();
    let cancel = control.cancel.clone();
    let store = fx.home.store().clone();
    let watcher = tokio::spawn(async move {
        while !store.task_instances("jobs", &run_id).unwrap().iter().any(|ti| ti.external_job.is_some()) {
            tokio::task::yield_now().await;
        }
        cancel.cancel();
    });
    let cancelled = fx.executor.execute(dag, run, control, Arc::new(|_| {})).await.unwrap();
    watcher.await.unwrap();
    assert_eq!(cancelled.run.state, RunState::Failed);
    assert!(cancelled.instances[0].external_job.is_none());
    assert_eq!(journal(&fx), ["try 1: submitted job-1", "try 1: cancelled job-1 at the service"]);
}
