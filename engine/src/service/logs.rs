//! Attempt logs: reading one, and following one as it grows.
//!
//! Logs are plain files (`logs/<dag>/<run>/<task>/<attempt>.log`), so they are read without the
//! store: `flowctl logs` works while a `flowctl run` holds the home.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{check_name, NameKind, Service};
use crate::logs::is_end_line;
use crate::protocol::{AttemptLog, ServiceError};
use crate::state::attempt_log_path;

/// The attempts of a task that wrote a log, in order.
pub fn attempts_with_logs(logs_dir: &Path, dag_id: &str, run_id: &str, task_id: &str) -> Vec<u32> {
    let dir = logs_dir.join(dag_id).join(run_id).join(task_id);
    let mut found: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    found.sort_unstable();
    found
}

/// An attempt's log (the latest when `attempt` is `None`) in the logs folder `logs_dir`.
pub fn read_log(logs_dir: &Path, dag_id: &str, run_id: &str, task_id: &str, attempt: Option<u32>) -> Result<AttemptLog, ServiceError> {
    check_name(NameKind::Dag, dag_id)?;
    check_name(NameKind::Run, run_id)?;
    check_name(NameKind::Task, task_id)?;
    let available = attempts_with_logs(logs_dir, dag_id, run_id, task_id);
    let attempt = match (attempt, available.last()) {
        (Some(n), _) if available.contains(&n) => n,
        (Some(n), Some(_)) => {
            return Err(ServiceError::not_found(format!(
                "task \"{task_id}\" of run \"{run_id}\" has no attempt {n}; attempts with logs: {}",
                available.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            )))
        }
        (_, Some(last)) => *last,
        (_, None) => {
            return Err(ServiceError::not_found(format!(
                "no log for task \"{task_id}\" of run \"{run_id}\" of DAG \"{dag_id}\": the task has not started, or it ran without writing anything (noop tasks write no log); `flowctl status {dag_id} {run_id}` shows its state"
            )))
        }
    };
    let path = attempt_log_path(logs_dir, dag_id, run_id, task_id, attempt);
    let bytes = std::fs::read(&path).map_err(|e| ServiceError::unavailable(format!("cannot read {}: {e}", path.display())))?;
    Ok(AttemptLog {
        dag_id: dag_id.to_string(),
        run_id: run_id.to_string(),
        task_id: task_id.to_string(),
        attempt,
        path,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

impl Service<'_> {
    /// An attempt's log so far.
    pub fn log(&self, dag_id: &str, run_id: &str, task_id: &str, attempt: Option<u32>) -> Result<AttemptLog, ServiceError> {
        read_log(&self.host.logs_dir(), dag_id, run_id, task_id, attempt)
    }
}

/// What one look at a followed log found.
#[derive(Debug, PartialEq, Eq)]
pub enum LogStep {
    /// New bytes.
    Data(Vec<u8>),
    /// Nothing new yet: look again in a moment.
    Wait,
    /// Nothing more will come.
    End(LogEnd),
}

/// Why a followed log ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEnd {
    /// The attempt wrote its last line.
    Complete,
    /// Nobody executes the run any more, so nobody can write the log.
    NoWriter,
    /// The attempt is no longer the task's running try and wrote no last line: flowctl stopped
    /// while it ran.
    Abandoned,
}

/// Follows an attempt's log from where an [`AttemptLog`] read ended: `logs --follow`, with or
/// without a server. The face decides how often to look and says, at each look, whether anybody
/// can still write the log.
pub struct LogFollow {
    path: PathBuf,
    offset: u64,
    /// The attempt looked finished once; its writer may still be writing its last line.
    finishing: bool,
    ended: Option<LogEnd>,
}

impl LogFollow {
    /// Follows `log` from its end.
    pub fn new(log: &AttemptLog) -> LogFollow {
        let ended = log.text.lines().any(is_end_line).then_some(LogEnd::Complete);
        LogFollow { path: log.path.clone(), offset: log.text.len() as u64, finishing: false, ended }
    }

    /// One look. `writer` says whether a process executes the run (and so may still write);
    /// `current` whether the attempt is still the task's running try (pass `true` when that is
    /// not known). Both must be read before this call, so bytes written just before the writer
    /// stopped are still returned.
    pub fn step(&mut self, writer: bool, current: bool) -> LogStep {
        if let Some(end) = self.ended {
            return LogStep::End(end);
        }
        let mut more = Vec::new();
        if let Ok(mut file) = std::fs::File::open(&self.path) {
            if file.seek(SeekFrom::Start(self.offset)).is_ok() {
                let _ = file.read_to_end(&mut more);
            }
        }
        if !more.is_empty() {
            self.offset += more.len() as u64;
            if String::from_utf8_lossy(&more).lines().any(is_end_line) {
                self.ended = Some(LogEnd::Complete);
            }
            return LogStep::Data(more);
        }
        if !writer {
            self.ended = Some(LogEnd::NoWriter);
            return LogStep::End(LogEnd::NoWriter);
        }
        if !current {
            if self.finishing {
                self.ended = Some(LogEnd::Abandoned);
                return LogStep::End(LogEnd::Abandoned);
            }
            self.finishing = true;
        }
        LogStep::Wait
    }
}
