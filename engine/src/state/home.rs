//! The home folder (`--home`, `$FLOWCTL_HOME`, `~/.flowctl`) and the lock that gives one process
//! at a time the right to use it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::store::{Store, StoreError};

/// Why a home could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// Another process holds the home.
    #[error("home {path} is in use by flowctl process {pid} ({command}, since {since}); wait for it to finish or stop it, or use another --home", path = .path.display())]
    InUse {
        /// The home.
        path: PathBuf,
        /// The holder's process id.
        pid: u32,
        /// What the holder runs, e.g. `flowctl run hello`.
        command: String,
        /// When it took the lock.
        since: String,
    },
    /// Another process holds the home and has not yet written who it is (it took the lock a
    /// moment ago).
    #[error("home {path} is in use by another flowctl process that is starting (it has not written its name into {path}/lock yet); wait for it to finish or stop it, or use another --home", path = .path.display())]
    InUseStarting {
        /// The home.
        path: PathBuf,
    },
    /// The folder could not be created or read.
    #[error("cannot use home {path}: {source}; check that the folder is writable, or choose another with --home", path = .path.display())]
    Io {
        /// The home.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How long [`Home::open`] waits for the lock when the process recorded as holding it is gone.
/// The lock is a `flock`, shared by every copy of its file descriptor: a process the holder was
/// starting (between fork and exec) when it was killed holds a copy until it execs, which closes
/// it, or exits, which takes milliseconds. A restart right after a crash must not fail because of
/// that.
const DEAD_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a process runs (a zombie does not: it only waits to be reaped).
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

#[derive(Serialize, Deserialize)]
struct LockHolder {
    pid: u32,
    command: String,
    since: String,
}

/// An open home: the lock is held until this is dropped.
pub struct Home {
    root: PathBuf,
    store: Store,
    _lock: Flock<File>,
}

impl std::fmt::Debug for Home {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Home").field("root", &self.root).finish_non_exhaustive()
    }
}

impl Home {
    /// The home folder to use: the flag, else `$FLOWCTL_HOME`, else `~/.flowctl`.
    pub fn resolve(flag: Option<&Path>) -> PathBuf {
        if let Some(path) = flag {
            return path.to_path_buf();
        }
        if let Some(path) = std::env::var_os("FLOWCTL_HOME").filter(|p| !p.is_empty()) {
            return PathBuf::from(path);
        }
        std::env::var_os("HOME").map_or_else(|| PathBuf::from(".flowctl"), |h| PathBuf::from(h).join(".flowctl"))
    }

    /// Opens (creating with mode 0700 if needed) and locks the home. `command` is what this
    /// process runs, shown to a second process that finds the home locked.
    pub fn open(root: &Path, command: &str) -> Result<Home, HomeError> {
        let io = |source| HomeError::Io { path: root.to_path_buf(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(root.join("lock"))
            .map_err(io)?;
        let deadline = std::time::Instant::now() + DEAD_HOLDER_WAIT;
        let mut file = file;
        let mut lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((mut locked, _)) => {
                    let mut text = String::new();
                    let _ = locked.rewind().and_then(|_| locked.read_to_string(&mut text));
                    let in_time = std::time::Instant::now() < deadline;
                    let Ok(holder) = serde_json::from_str::<LockHolder>(&text) else {
                        // The holder took the lock a moment ago and is writing who it is.
                        if in_time {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                            file = locked;
                            continue;
                        }
                        return Err(HomeError::InUseStarting { path: root.to_path_buf() });
                    };
                    // The holder died (kill -9) while it was starting a process: that child holds
                    // a copy of the lock until it execs or exits, a moment later.
                    if !is_alive(holder.pid) && in_time {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        file = locked;
                        continue;
                    }
                    return Err(HomeError::InUse {
                        path: root.to_path_buf(),
                        pid: holder.pid,
                        command: holder.command,
                        since: holder.since,
                    });
                }
            }
        };
        let holder = LockHolder {
            pid: std::process::id(),
            command: command.to_string(),
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        lock.set_len(0).map_err(io)?;
        lock.rewind().map_err(io)?;
        lock.write_all(serde_json::to_string(&holder).unwrap_or_default().as_bytes()).map_err(io)?;
        let store = Store::open(&root.join("store"))?;
        Ok(Home { root: root.to_path_buf(), store, _lock: lock })
    }

    /// The process holding the home, if any: `(pid, command)`. Reads the lock file and checks
    /// that its process still runs, without taking the lock (taking it, even for a moment, could
    /// turn away a command starting at that instant).
    pub fn holder(root: &Path) -> Option<(u32, String)> {
        let text = std::fs::read_to_string(root.join("lock")).ok()?;
        let holder: LockHolder = serde_json::from_str(&text).ok()?;
        (holder.pid != 0 && is_alive(holder.pid)).then_some((holder.pid, holder.command))
    }

    /// The home folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Where attempt logs go: `logs/<dag>/<run>/<task>/<attempt>.log`.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// Scratch space for runs (operators' temporary files), `work/<dag>/<run>/`.
    pub fn work_dir(&self) -> PathBuf {
        self.root.join("work")
    }
}

/// The attempt log's path; `logs` reads it without opening the store.
pub fn attempt_log_path(logs_dir: &Path, dag_id: &str, run_id: &str, task_id: &str, attempt: u32) -> PathBuf {
    logs_dir.join(dag_id).join(run_id).join(task_id).join(format!("{attempt}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("h");
        let first = Home::open(&home, "flowctl run hello").unwrap();
        let err = Home::open(&home, "flowctl status").unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("in use by flowctl process {} (flowctl run hello", std::process::id())), "{text}");
        drop(first);
        Home::open(&home, "flowctl status").unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&home).unwrap().permissions().mode() & 0o777, 0o700);
    }

    /// A holder killed while starting a process leaves the lock with that process for a moment.
    #[test]
    fn a_lock_whose_holder_is_gone_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("h");
        std::fs::create_dir_all(&home).unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(home.join("lock")).unwrap();
        let mut held = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e).unwrap();
        held.write_all(format!(r#"{{"pid":{pid},"command":"flowctl server","since":"then"}}"#).as_bytes()).unwrap();
        // The copy of the lock goes away a little later, as a child between fork and exec would.
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(held);
        });
        let opened = Home::open(&home, "flowctl server");
        release.join().unwrap();
        opened.expect("the lock of a dead holder is waited for");
    }
}
