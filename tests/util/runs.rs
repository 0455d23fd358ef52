//! What a run did, read back the way a user reads it: the run id `flowctl run` prints, the task
//! instances of `flowctl status DAG RUN --output json`, a DAG's runs, and the attempt log files
//! under the home. Each fails with the output it read when that is not what it expects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{Cmd, Run, TempHome};

impl Run {
    /// The run id from `flowctl run`'s first line: `run <id> of <dag> (...)`.
    #[track_caller]
    pub fn run_id(&self) -> String {
        let first = self.stdout.lines().next().unwrap_or_default();
        let mut words = first.split_whitespace();
        assert_eq!(words.next(), Some("run"), "first line of `flowctl run`: {first}\n{}\n{}", self.stdout, self.stderr);
        words.next().unwrap_or_else(|| panic!("no run id in: {}", self.stdout)).to_string()
    }
}

impl Cmd {
    /// `flowctl run FILE --date DATE`, killed if it runs longer than `limit` (see
    /// [`Cmd::run_within`]).
    pub fn run_file(&self, file: &Path, date: &str, limit: Duration) -> Run {
        self.run_within(limit, ["run".as_ref(), file.as_os_str(), "--date".as_ref(), date.as_ref()])
    }

    /// `flowctl status DAG RUN --output json`.
    #[track_caller]
    pub fn status(&self, dag: &str, run: &str) -> Value {
        self.json(["status", dag, run, "--output", "json"])
    }

    /// The task instance `task` of a run, from [`Cmd::status`].
    #[track_caller]
    pub fn task(&self, dag: &str, run: &str, task: &str) -> Value {
        task_in(&self.status(dag, run), task).clone()
    }

    /// The task instances of a run, by task id, from [`Cmd::status`].
    #[track_caller]
    pub fn tasks(&self, dag: &str, run: &str) -> BTreeMap<String, Value> {
        tasks_in(&self.status(dag, run))
    }

    /// The runs of a DAG, oldest first: `flowctl status DAG --output json`.
    #[track_caller]
    pub fn runs(&self, dag: &str) -> Vec<Value> {
        let runs = self.json(["status", dag, "--all", "--output", "json"]);
        runs.as_array().unwrap_or_else(|| panic!("not a list of runs: {runs:#}")).clone()
    }

    /// Each applied DAG's id and version, as `flowctl status --output json` lists them.
    #[track_caller]
    pub fn versions(&self) -> Vec<(String, u64)> {
        let dags = self.json(["status", "--output", "json"]);
        dags.as_array()
            .unwrap_or_else(|| panic!("not a list of DAGs: {dags:#}"))
            .iter()
            .map(|d| (d["dag_id"].as_str().unwrap_or_default().to_string(), d["version"].as_u64().unwrap_or_default()))
            .collect()
    }

    /// The id of the DAG's latest run (the only one, when a test made one).
    #[track_caller]
    pub fn last_run(&self, dag: &str) -> String {
        let runs = self.runs(dag);
        let last = runs.last().unwrap_or_else(|| panic!("{dag} has no run"));
        last["run_id"].as_str().unwrap_or_else(|| panic!("no run_id in {last:#}")).to_string()
    }
}

/// The task instance `task` in a run's status JSON ([`Cmd::status`]).
#[track_caller]
pub fn task_in<'a>(status: &'a Value, task: &str) -> &'a Value {
    status["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks in {status:#}"))
        .iter()
        .find(|t| t["task_id"] == task)
        .unwrap_or_else(|| panic!("no task {task} in {status:#}"))
}

/// The task instances in a run's status JSON, by task id.
#[track_caller]
pub fn tasks_in(status: &Value) -> BTreeMap<String, Value> {
    status["tasks"]
        .as_array()
        .unwrap_or_else(|| panic!("no tasks in {status:#}"))
        .iter()
        .map(|t| (t["task_id"].as_str().unwrap_or_else(|| panic!("no task_id in {t:#}")).to_string(), t.clone()))
        .collect()
}

impl TempHome {
    /// The folder of a task instance's attempt logs.
    pub fn log_dir(&self, dag: &str, run: &str, task: &str) -> PathBuf {
        self.path().join("logs").join(dag).join(run).join(task)
    }

    /// The log file of attempt `attempt` (1 for the first) of a task instance.
    pub fn log_path(&self, dag: &str, run: &str, task: &str, attempt: u32) -> PathBuf {
        self.log_dir(dag, run, task).join(format!("{attempt}.log"))
    }

    /// The text of an attempt's log file ([`TempHome::log_path`]).
    #[track_caller]
    pub fn log(&self, dag: &str, run: &str, task: &str, attempt: u32) -> String {
        let path = self.log_path(dag, run, task, attempt);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }
}
