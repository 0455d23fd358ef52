//! `flowctl logs DAG RUN TASK [--attempt N] [--follow]`: prints an attempt's log.
//!
//! Logs are plain files, so this reads them without opening the store: it works while a
//! `flowctl run` holds the home. `--follow` keeps printing until the attempt's last line, or until
//! no flowctl process holds the home any more (nothing is left to write).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{exit, CommandError};
use crate::logs::is_end_line;
use crate::state::{attempt_log_path, Home};

/// How often `--follow` looks for new lines.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

fn attempts(dir: &Path) -> Vec<u32> {
    let mut found: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    found.sort_unstable();
    found
}

/// An attempt's log (the latest when `attempt` is `None`): its path and its text so far.
pub fn read_log(
    logs_dir: &Path,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    attempt: Option<u32>,
) -> Result<(PathBuf, String), CommandError> {
    let task_dir: PathBuf = logs_dir.join(dag_id).join(run_id).join(task_id);
    let available = attempts(&task_dir);
    let attempt = match (attempt, available.last()) {
        (Some(n), _) if available.contains(&n) => n,
        (Some(n), Some(_)) => {
            return Err(CommandError::usage(format!(
                "task \"{task_id}\" of run \"{run_id}\" has no attempt {n}; attempts with logs: {}",
                available.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            )))
        }
        (_, Some(last)) => *last,
        (_, None) => {
            return Err(CommandError::usage(format!(
                "no log for task \"{task_id}\" of run \"{run_id}\" of DAG \"{dag_id}\": the task has not started, or it ran without writing anything (noop tasks write no log); `flowctl status {dag_id} {run_id}` shows its state"
            )))
        }
    };
    let path = attempt_log_path(logs_dir, dag_id, run_id, task_id, attempt);
    let bytes = std::fs::read(&path).map_err(|e| CommandError::usage(format!("cannot read {}: {e}", path.display())))?;
    Ok((path, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Runs `flowctl logs`.
pub fn logs(
    home: Option<&Path>,
    dag_id: &str,
    run_id: &str,
    task_id: &str,
    attempt: Option<u32>,
    follow: bool,
) -> Result<u8, CommandError> {
    let root = Home::resolve(home);
    if follow {
        // With a server, its API streams the log (it knows when the run stops being executed).
        if let Some(client) = crate::client::Client::for_home(&root) {
            let stdout = std::io::stdout();
            client.follow_log(dag_id, run_id, task_id, attempt, &mut stdout.lock())?;
            return Ok(exit::OK);
        }
    }
    let (path, text) = read_log(&root.join("logs"), dag_id, run_id, task_id, attempt)?;
    let mut file = std::fs::File::open(&path).map_err(|e| CommandError::usage(format!("cannot read {}: {e}", path.display())))?;
    let _ = file.seek(SeekFrom::Start(text.len() as u64));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if out.write_all(text.as_bytes()).is_err() {
        return Ok(exit::OK);
    }
    if !follow {
        return Ok(exit::OK);
    }
    let mut seen = text;
    loop {
        if seen.lines().any(is_end_line) {
            return Ok(exit::OK);
        }
        let writer_alive = Home::holder(&root).is_some();
        let mut more = String::new();
        let _ = file.read_to_string(&mut more);
        if !more.is_empty() {
            if out.write_all(more.as_bytes()).and_then(|_| out.flush()).is_err() {
                return Ok(exit::OK);
            }
            seen = more;
            continue;
        }
        if !writer_alive {
            // Nobody holds the home: the attempt's process is gone and nothing more will come.
            let _ = writeln!(out, "(the process running this attempt has stopped; the log ends here)");
            return Ok(exit::OK);
        }
        std::thread::sleep(FOLLOW_INTERVAL);
    }
}
