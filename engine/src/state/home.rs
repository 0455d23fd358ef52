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
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder: LockHolder = serde_json::from_str(&text).unwrap_or(LockHolder {
                    pid: 0,
                    command: "unknown command".into(),
                    since: "unknown time".into(),
                });
                return Err(HomeError::InUse {
                    path: root.to_path_buf(),
                    pid: holder.pid,
                    command: holder.command,
                    since: holder.since,
                });
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
        let alive = holder.pid != 0
            && std::fs::read_to_string(format!("/proc/{}/stat", holder.pid))
                .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'));
        alive.then_some((holder.pid, holder.command))
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
}
