//! `flowctl logs DAG RUN TASK [--attempt N] [--follow]`: prints an attempt's log.
//!
//! Logs are plain files, so this reads them without opening the store: it works while a
//! `flowctl run` holds the home. `--follow` keeps printing until the attempt's last line, or until
//! no flowctl process holds the home any more (nothing is left to write); with a server, the
//! server streams the log (it knows when the run stops being executed).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::{exit, CommandError};
use crate::service::{read_log, LogEnd, LogFollow, LogStep};
use crate::state::Home;

/// How often `--follow` looks for new lines.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// Runs `flowctl logs`.
pub fn logs(home: Option<&Path>, dag_id: &str, run_id: &str, task_id: &str, attempt: Option<u32>, follow: bool) -> Result<u8, CommandError> {
    let root = Home::resolve(home);
    if follow {
        if let Some(client) = crate::client::Client::for_home(&root)? {
            let stdout = std::io::stdout();
            client.follow_log(dag_id, run_id, task_id, attempt, &mut stdout.lock())??;
            return Ok(exit::OK);
        }
    }
    let log = read_log(&root.join("logs"), dag_id, run_id, task_id, attempt)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if out.write_all(log.text.as_bytes()).is_err() || !follow {
        return Ok(exit::OK);
    }
    let mut follower = LogFollow::new(&log);
    loop {
        let writer = Home::holder(&root).is_some();
        match follower.step(writer, true) {
            LogStep::Data(bytes) => {
                if out.write_all(&bytes).and_then(|_| out.flush()).is_err() {
                    return Ok(exit::OK);
                }
            }
            LogStep::Wait => std::thread::sleep(FOLLOW_INTERVAL),
            LogStep::End(LogEnd::Complete) => return Ok(exit::OK),
            LogStep::End(_) => {
                // Nobody holds the home: the attempt's process is gone and nothing more will come.
                let _ = writeln!(out, "(the process running this attempt has stopped; the log ends here)");
                return Ok(exit::OK);
            }
        }
    }
}
