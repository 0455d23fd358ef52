//! Attempt logs: reading one, and following one as it grows.
//!
//! Logs are plain files (`logs/<dag>/<run>/<task>/<attempt>.log`), so they are read without the
//! store: `flowctl logs` works while a `flowctl run` holds the home.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{check_name, NameKind, Service};
use crate::logs::is_end_line;
use crate::protocol::{AttemptInfo, AttemptLog, LogChunk, ServiceError, MAX_LOG_CHUNK};
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
    let (attempt, path) = find_log(logs_dir, dag_id, run_id, task_id, attempt)?;
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

/// The number and file of an attempt's log (the latest when `attempt` is `None`), or why there is
/// none. Names are checked before any path is built from them.
fn find_log(logs_dir: &Path, dag_id: &str, run_id: &str, task_id: &str, attempt: Option<u32>) -> Result<(u32, PathBuf), ServiceError> {
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
    Ok((attempt, attempt_log_path(logs_dir, dag_id, run_id, task_id, attempt)))
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
        LogFollow::from_offset(log, log.text.len() as u64, log.text.lines().any(is_end_line))
    }

    /// Follows the log of `log`'s attempt from byte `offset` of its file; `complete` says the
    /// attempt's last line was read already.
    pub fn from_offset(log: &AttemptLog, offset: u64, complete: bool) -> LogFollow {
        LogFollow { path: log.path.clone(), offset, finishing: false, ended: complete.then_some(LogEnd::Complete) }
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

/// The attempts of a task that wrote a log, as their logs tell them: when the first and last line
/// were written, and how the attempt ended. Reads each log's first line and its last few
/// kilobytes, not the whole file.
pub fn attempts(logs_dir: &Path, dag_id: &str, run_id: &str, task_id: &str) -> Vec<AttemptInfo> {
    attempts_with_logs(logs_dir, dag_id, run_id, task_id)
        .into_iter()
        .map(|attempt| {
            let path = attempt_log_path(logs_dir, dag_id, run_id, task_id, attempt);
            let log_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            let (first, tail) = edges(&path, log_bytes);
            let stamp = |line: &str| line.split_once(' ').and_then(|(t, _)| chrono::DateTime::parse_from_rfc3339(t).ok());
            let end = tail.lines().rev().find(|l| is_end_line(l));
            AttemptInfo {
                attempt,
                started_at: first.as_deref().and_then(stamp),
                ended_at: end.and_then(stamp),
                outcome: end.and_then(|l| l.split_once(" ended: ")).map(|(_, outcome)| outcome.to_string()),
                log_bytes,
            }
        })
        .collect()
}

/// A log's first line and its last 8 KiB.
fn edges(path: &Path, len: u64) -> (Option<String>, String) {
    let Ok(mut file) = std::fs::File::open(path) else { return (None, String::new()) };
    let mut head = vec![0u8; 1024];
    let n = file.read(&mut head).unwrap_or(0);
    let first = String::from_utf8_lossy(&head[..n]).lines().next().map(str::to_string);
    let mut tail = Vec::new();
    if file.seek(SeekFrom::Start(len.saturating_sub(8 * 1024))).is_ok() {
        let _ = file.read_to_end(&mut tail);
    }
    (first, String::from_utf8_lossy(&tail).into_owned())
}

impl Service<'_> {
    /// Up to [`MAX_LOG_CHUNK`] bytes of an attempt's log (the latest attempt when `attempt` is
    /// `None`) from byte `offset` of its file. A chunk ends on a whole character, so chunks read
    /// one after another give the log's text; only the chunk is read, however long the log.
    pub fn log_chunk(&self, dag_id: &str, run_id: &str, task_id: &str, attempt: Option<u32>, offset: u64) -> Result<LogChunk, ServiceError> {
        let (attempt, path) = find_log(&self.host.logs_dir(), dag_id, run_id, task_id, attempt)?;
        let unreadable = |e: std::io::Error| ServiceError::unavailable(format!("cannot read {}: {e}", path.display()));
        let mut file = std::fs::File::open(&path).map_err(unreadable)?;
        let len = file.metadata().map_err(unreadable)?.len();
        if offset > len {
            return Err(ServiceError::bad_request(format!("offset {offset} is past the end of the log of attempt {attempt} ({len} bytes)")));
        }
        file.seek(SeekFrom::Start(offset)).map_err(unreadable)?;
        let mut bytes = Vec::new();
        (&mut file).take(MAX_LOG_CHUNK as u64).read_to_end(&mut bytes).map_err(unreadable)?;
        // A character the chunk's end cuts in two is left for the next chunk.
        let whole = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => bytes.len(),
        };
        bytes.truncate(whole);
        let next_offset = offset + bytes.len() as u64;
        let complete = next_offset == len && edges(&path, len).1.lines().any(is_end_line);
        Ok(LogChunk {
            dag_id: dag_id.to_string(),
            run_id: run_id.to_string(),
            task_id: task_id.to_string(),
            attempt,
            offset,
            next_offset,
            text: String::from_utf8_lossy(&bytes).into_owned(),
            complete,
        })
    }
}
