//! The one helper every end-to-end test uses: a temporary flowctl home and a way to run the real
//! `flowctl` binary in it, showing expected against actual output when an assertion fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A temporary home folder, removed when dropped.
pub struct TempHome {
    dir: tempfile::TempDir,
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
pub fn setup() -> (TempHome, Cmd) {
    let dir = tempfile::Builder::new().prefix("flowctl-test-").tempdir().expect("temp dir");
    let home = dir.path().join("home");
    let cmd = Cmd { home, cwd: repo_root(), envs: Vec::new() };
    (TempHome { dir }, cmd)
}
