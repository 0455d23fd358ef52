//! Processes that attempts start, and the ones a stopped flowctl left behind.
//!
//! An operator that starts processes tags them with the attempt's id in the environment variable
//! `FLOWCTL_ATTEMPT_ID`, which every descendant inherits. When flowctl starts again after a crash,
//! an attempt recorded as running is interrupted: before it is retried, [`kill_tagged`] finds every
//! process still carrying its id (through `/proc/<pid>/environ`) and kills it, so the old attempt
//! can never run beside its retry. The shell operator also asks the kernel to kill its direct
//! child when flowctl dies (a parent-death signal); the tag catches the grandchildren.

/// The environment variable that tags an attempt's processes.
pub const ATTEMPT_ENV: &str = "FLOWCTL_ATTEMPT_ID";

/// The id of one attempt: `dag/run/task/try`.
pub fn attempt_id(dag_id: &str, run_id: &str, task_id: &str, try_number: u32) -> String {
    format!("{dag_id}/{run_id}/{task_id}/{try_number}")
}

/// Kills (SIGKILL) every process whose environment carries `FLOWCTL_ATTEMPT_ID=<id>`, except this
/// process. Returns how many were signalled.
pub fn kill_tagged(id: &str) -> usize {
    kill_matching(&|tag| tag == id)
}

/// Kills every process of any attempt of a run (`dag/run/...`): what a flowctl quitting at once
/// (a second Ctrl-C) leaves behind.
pub fn kill_run(dag_id: &str, run_id: &str) -> usize {
    let prefix = format!("{dag_id}/{run_id}/");
    kill_matching(&|tag| tag.starts_with(&prefix))
}

fn kill_matching(matches: &dyn Fn(&str) -> bool) -> usize {
    let key = format!("{ATTEMPT_ENV}=");
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if pid as u32 == own {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let tagged = environ
            .split(|b| *b == 0)
            .filter_map(|var| var.strip_prefix(key.as_bytes()))
            .any(|tag| std::str::from_utf8(tag).is_ok_and(matches));
        if tagged
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::BufRead;

    /// Starts `sh` with a background `sleep`, tagged with `id`; returns sh and the sleep's pid.
    fn tagged_pair(id: &str) -> (std::process::Child, i32) {
        let mut sh = std::process::Command::new("sh")
            .args(["-c", "sleep 300 & echo $!; wait"])
            .env(ATTEMPT_ENV, id)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut line = String::new();
        std::io::BufReader::new(sh.stdout.take().expect("stdout")).read_line(&mut line).expect("read pid");
        (sh, line.trim().parse().expect("pid"))
    }

    fn alive(pid: i32) -> bool {
        // A zombie is dead: it only waits for its parent (or init) to reap it.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(false)
    }

    #[test]
    fn kills_only_the_tagged_processes() {
        let (mut tagged, tagged_sleep) = tagged_pair("d/r1/t/1");
        let (mut other, other_sleep) = tagged_pair("d/r2/t/1");
        assert!(alive(tagged_sleep));
        // sh and its sleep: SIGKILL cannot be caught, so signalled means gone.
        assert_eq!(kill_tagged("d/r1/t/1"), 2);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(tagged.wait().expect("wait").signal(), Some(9));
        assert!(alive(other_sleep), "an untagged attempt's process was killed");
        assert!(other.try_wait().expect("try_wait").is_none());
        assert_eq!(kill_run("d", "r2"), 2, "every attempt of the run, not another run's");
        let _ = other.wait();
    }
}
