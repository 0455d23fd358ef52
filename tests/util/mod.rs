//! The test-support layer every end-to-end test uses: a temporary flowctl home, the real
//! `flowctl` binary run in it ([`Cmd`], showing expected against actual output when an assertion
//! fails), and what the tests share beyond that, each in a module of its own, in reading order:
//!
//! - [`runs`]: what a run did, read back as users read it: the run id `flowctl run` prints
//!   ([`Run::run_id`]), task instances from `flowctl status --output json` ([`Cmd::task`],
//!   [`Cmd::tasks`], [`Cmd::last_run`]), attempt logs ([`TempHome::log_path`]);
//! - [`watch`]: waiting on events, never on sleeps: lines in a file ([`FileWatch`],
//!   [`wait_for_line`], inotify) and FIFOs ([`read_fifo`]);
//! - [`server`]: `flowctl server` in the background ([`Server`]) and its HTTP API;
//! - [`services`]: the guard every background program runs under (a dropped guard stops its
//!   program and waits for it; a binary's shared servers stop when it exits) and free ports;
//! - [`moto`]: moto_server (S3, EMR, SageMaker), the virtualenv's programs, AWS test
//!   connections ([`moto::setup_aws`]);
//! - [`databases`]: PostgreSQL and MariaDB, one each per test binary;
//! - [`smtp`]: an SMTP server that keeps what it accepts;
//! - [`standins`]: the loan pipeline's stand-ins (the patched moto, the loan site);
//! - [`http_site`]: an in-process HTTP site for the HTTP operators.
//!
//! A service the tests need and cannot find fails the test, saying to run scripts/test.sh,
//! which installs everything (scripts/install-deps.sh).

#![allow(dead_code)]

pub mod runs;
pub mod watch;
pub mod server;
pub mod moto;
pub mod databases;
pub mod smtp;
pub mod standins;
pub mod http_site;

// Each test binary uses a part of what this layer offers.
#[allow(unused_imports)]
pub use databases::services;
#[allow(unused_imports)]
pub use runs::{task_in, tasks_in};
#[allow(unused_imports)]
pub use server::{encode, http, Server, SERVER_LISTENING};
#[allow(unused_imports)]
pub use services::free_port;
#[allow(unused_imports)]
pub use watch::{read_fifo, wait_for_line, FileWatch};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A temporary home folder, removed when dropped. If the test failed, the processes still
/// running for this home (a killed server's attempts, say) are killed first, so a failing test
/// leaves nothing behind; after a passing test, anything left is the suite's leak check's to see.
pub struct TempHome {
    dir: tempfile::TempDir,
}

impl Drop for TempHome {
    fn drop(&mut self) {
        if std::thread::panicking() {
            kill_processes_of(&self.path());
        }
    }
}

/// SIGKILLs every process whose environment says `FLOWCTL_HOME=<home>`: flowctl run for that
/// home, and everything its tasks started (they inherit the variable).
fn kill_processes_of(home: &Path) {
    let tag = format!("FLOWCTL_HOME={}", home.display());
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        if pid as u32 != std::process::id() && environ.split(|b| *b == 0).any(|var| var == tag.as_bytes()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl TempHome {
    /// The home folder (`FLOWCTL_HOME`); flowctl creates it on first use.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// A scratch folder beside the home, for DAG files and anything a test writes.
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    /// Writes a file in the scratch folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join("files").join(name);
        std::fs::create_dir_all(path.parent().expect("file has a parent")).expect("create folder");
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// Writes the home's config file, `<home>/config.yaml` (making the home), and returns its path.
    pub fn write_config(&self, text: &str) -> PathBuf {
        std::fs::create_dir_all(self.path()).expect("create the home folder");
        let path = self.path().join("config.yaml");
        std::fs::write(&path, text).expect("write config.yaml");
        path
    }

    /// Makes a FIFO in the scratch folder and returns its path.
    pub fn fifo(&self, name: &str) -> PathBuf {
        std::fs::create_dir_all(self.scratch()).expect("create scratch folder");
        let path = self.scratch().join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        path
    }
}

/// The repository root, where `dags/` and `tests/data/` live.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `flowctl` with a home set.
#[derive(Clone)]
pub struct Cmd {
    home: PathBuf,
    cwd: PathBuf,
    envs: Vec<(String, String)>,
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`-1` when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code, printing both streams when it differs.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit code {code}, got {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Cmd {
    /// Adds an environment variable for every run.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs in `dir` instead of the repository root.
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.cwd = dir.to_path_buf();
        self
    }

    /// The command, ready to spawn, for tests that need the child (signals, streaming).
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flowctl"));
        command
            .args(args)
            .current_dir(&self.cwd)
            .env("FLOWCTL_HOME", &self.home)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        for (k, v) in &self.envs {
            command.env(k, v);
        }
        command
    }

    /// Runs to the end and captures the output.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command(args).output().expect("flowctl runs").into()
    }

    /// Runs to the end and captures the output, killing the process if it runs longer than
    /// `limit` (for commands that would run on when the behaviour under test is broken).
    pub fn run_within<I, S>(&self, limit: std::time::Duration, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        run_command_within(self.command(args), limit)
    }

    /// Runs a command that prints JSON (`--output json`), expects exit code 0, and parses stdout.
    #[track_caller]
    pub fn json<I, S>(&self, args: I) -> serde_json::Value
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let run = self.run(args);
        run.expect_code(0);
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", run.stdout))
    }
}

/// A fresh home and a command bound to it, run from the repository root.
/// Runs `command` to its end with its output captured, killing it after `limit` so a hung
/// process fails its test instead of stalling the suite.
pub fn run_command_within(mut command: Command, limit: std::time::Duration) -> Run {
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(limit).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let output = child.wait_with_output().expect("wait for the process");
    let _ = done.send(());
    let _ = watchdog.join();
    output.into()
}

pub fn setup() -> (TempHome, Cmd) {
    let dir = tempfile::Builder::new().prefix("flowctl-test-").tempdir().expect("temp dir");
    let home = dir.path().join("home");
    let cmd = Cmd { home, cwd: repo_root(), envs: Vec::new() };
    (TempHome { dir }, cmd)
}

/// A fresh home whose shell tasks find the test's scratch folder in `$SCRATCH`.
pub fn setup_with_scratch() -> (TempHome, Cmd) {
    let (home, cmd) = setup();
    std::fs::create_dir_all(home.scratch()).expect("create scratch folder");
    let cmd = cmd.env("SCRATCH", home.scratch().to_str().expect("UTF-8 path"));
    (home, cmd)
}

/// [`setup_with_scratch`], with `vars` set for every run.
pub fn setup_with_env(vars: &[(&str, &str)]) -> (TempHome, Cmd) {
    let (home, cmd) = setup_with_scratch();
    (home, vars.iter().fold(cmd, |cmd, (k, v)| cmd.env(k, v)))
}

/// [`setup_with_scratch`], run in the scratch folder, with a config.yaml whose connections `pg`
/// and `my` reach a new, empty `database` on this binary's PostgreSQL and MariaDB
/// ([`databases`]) as the `flowctl` user, its password read from `$TEST_DB_PASSWORD`.
pub fn setup_sql(database: &str) -> (TempHome, Cmd) {
    let (pg, my) = (databases::postgres(), databases::mariadb());
    pg.create_database(database);
    my.create_database(database);
    let (home, cmd) = setup_with_scratch();
    home.write_config(&format!(
        "connections:\n  pg:\n    type: postgres\n    host: 127.0.0.1\n    port: {}\n    user: flowctl\n    database: {database}\n    password_env: TEST_DB_PASSWORD\n  my:\n    type: mysql\n    uri: mysql://flowctl@127.0.0.1:{}/{database}\n    password_env: TEST_DB_PASSWORD\n",
        pg.port, my.port
    ));
    let cmd = cmd.env("TEST_DB_PASSWORD", databases::PASSWORD).current_dir(&home.scratch());
    (home, cmd)
}

/// Every file under `dir`, recursively, sorted; none when `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                folders.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The files under `dir` ([`files_under`]) whose name ends in `.<extension>` for one of
/// `extensions`.
pub fn files_ending(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    files_under(dir).into_iter().filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e))).collect()
}

/// Whether a process is gone or can no longer run: gone, a zombie waiting to be reaped, or already
/// dying (exiting, or with SIGKILL queued, which it cannot survive: a process just killed on a busy
/// machine may not have been scheduled yet to exit).
pub fn is_stopped(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return true };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    // `pid (comm) state ppid pgrp session tty_nr tpgid flags ...`; comm may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let zombie = matches!(fields.first(), Some(&"Z") | Some(&"X"));
    const PF_EXITING: u64 = 0x4;
    let exiting = fields.get(6).and_then(|f| f.parse::<u64>().ok()).is_some_and(|flags| flags & PF_EXITING != 0);
    const SIGKILL_BIT: u64 = 1 << (9 - 1);
    let kill_queued = status
        .lines()
        .filter_map(|l| l.strip_prefix("SigPnd:").or_else(|| l.strip_prefix("ShdPnd:")))
        .any(|mask| u64::from_str_radix(mask.trim(), 16).is_ok_and(|m| m & SIGKILL_BIT != 0));
    zombie || exiting || kill_queued
}

/// Asserts that `pid` is not a live process ([`is_stopped`]).
#[track_caller]
pub fn assert_not_running(pid: i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(is_stopped(pid), "process {pid} is still running: {stat}");
}

/// A small seeded random number generator (SplitMix64), so a randomized test can print its seed
/// and be run again the same way.
pub struct Rng(u64);

impl Rng {
    /// The seed from the environment variable `var` if set, else from the clock; printed (shown
    /// when the test fails) with how to reuse it.
    pub fn seeded(var: &str) -> Rng {
        let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        eprintln!("random seed {seed}: run again with {var}={seed}");
        Rng(seed)
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}
