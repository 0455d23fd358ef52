//! The one helper every end-to-end test uses: a temporary flowctl home and a way to run the real
//! `flowctl` binary in it, showing expected against actual output when an assertion fails.

#![allow(dead_code)]

pub mod databases;
pub mod http_site;
pub mod moto;
pub mod standins;

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

    /// Runs to the end and captures the output, killing the process if it runs longer than
    /// `limit` (for commands that would run on when the behaviour under test is broken).
    pub fn run_within<I, S>(&self, limit: std::time::Duration, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let child = self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("flowctl runs");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if finished.recv_timeout(limit).is_err() {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        });
        let output = child.wait_with_output().expect("wait for flowctl");
        let _ = done.send(());
        let _ = watchdog.join();
        output.into()
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

/// A fresh home whose shell tasks find the test's scratch folder in `$SCRATCH`.
pub fn setup_with_scratch() -> (TempHome, Cmd) {
    let (home, cmd) = setup();
    std::fs::create_dir_all(home.scratch()).expect("create scratch folder");
    let cmd = cmd.env("SCRATCH", home.scratch().to_str().expect("UTF-8 path"));
    (home, cmd)
}

/// A fresh home and a command bound to it, run from the repository root.
pub fn setup() -> (TempHome, Cmd) {
    let dir = tempfile::Builder::new().prefix("flowctl-test-").tempdir().expect("temp dir");
    let home = dir.path().join("home");
    let cmd = Cmd { home, cwd: repo_root(), envs: Vec::new() };
    (TempHome { dir }, cmd)
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

/// Reads a FIFO that a task writes to. Opening a FIFO blocks until the other end opens it, so this
/// returns once the task has written; the timeout only stops a broken test from hanging.
pub fn read_fifo(path: &Path) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let fifo = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_to_string(&fifo));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(text) => text.expect("read FIFO"),
        Err(_) => panic!("nothing was written to the FIFO {} within 60s", path.display()),
    }
}

/// The line `flowctl server` prints on stderr once it listens (and has written `server.json`).
pub const SERVER_LISTENING: &str = "flowctl server: listening on http://";

/// A `flowctl server` running in the background on a free port of 127.0.0.1, started with
/// [`Server::start`], which returns once the server listens. Its stderr is collected as it comes.
/// If the test fails while it runs, it is killed (SIGKILL) and waited for.
pub struct Server {
    child: Option<std::process::Child>,
    /// `host:port` the API listens on.
    pub address: String,
    /// The bearer token, from `server.json`.
    pub token: String,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    lines: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `flowctl server --listen 127.0.0.1:0 ARGS...` and waits for its listening line.
    #[track_caller]
    pub fn start(cmd: &Cmd, args: &[&str]) -> Server {
        Server::start_on(cmd, "127.0.0.1:0", args)
    }

    /// Starts `flowctl server --listen LISTEN ARGS...` and waits for its listening line.
    #[track_caller]
    pub fn start_on(cmd: &Cmd, listen: &str, args: &[&str]) -> Server {
        let mut all = vec!["server", "--listen", listen];
        all.extend_from_slice(args);
        let mut child = cmd.command(&all).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("start flowctl server");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, lines) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("stderr");
        let collected = stderr.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                collected.lock().unwrap_or_else(|e| e.into_inner()).push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let mut server = Server { child: Some(child), address: String::new(), token: String::new(), stderr, lines, reader: Some(reader) };
        let line = server.wait_for_stderr(SERVER_LISTENING);
        let rest = &line[line.find(SERVER_LISTENING).unwrap_or(0) + SERVER_LISTENING.len()..];
        server.address = rest.split(',').next().unwrap_or_default().to_string();
        let file = cmd.home.join("server.json");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("server.json: {e}: {text}"));
        assert_eq!(json["address"], server.address.as_str(), "server.json names another address: {text}");
        server.token = json["token"].as_str().expect("token in server.json").to_string();
        server
    }

    /// The server's process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Waits for a stderr line containing `needle` (later than the lines already waited for);
    /// fails if the server exits first.
    #[track_caller]
    pub fn wait_for_stderr(&mut self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(e) => {
                    let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    panic!("no stderr line with {needle:?} ({e:?}; exit status {status:?}):\n{}", self.stderr());
                }
            }
        }
    }

    /// Everything the server printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Sends a signal to the server.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("signal the server");
    }

    /// `kill -9`, and waits until the process is gone.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        child.wait().expect("wait for the server");
    }

    /// Waits for the server to exit (after a signal) and returns its exit code and stderr.
    pub fn finish(mut self) -> Run {
        let mut child = self.child.take().expect("running");
        let status = child.wait().expect("wait for the server");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Run { code: status.code().unwrap_or(-1), stdout: String::new(), stderr: self.stderr() }
    }

    /// SIGTERM, then [`Server::finish`].
    pub fn stop(self) -> Run {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.finish()
    }

    /// One HTTP request to the server's API (see [`http`]).
    pub fn http(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
        http(&self.address, method, path, token, body)
    }

    /// Waits (through `/api/wait`, which answers when the run ends) until a run has ended, and
    /// returns its state. Fails after two minutes (a broken test must not hang).
    #[track_caller]
    pub fn wait_for_run(&self, dag: &str, run: &str) -> String {
        let path = format!("/api/wait?dag={}&run={}", encode(dag), encode(run));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            assert!(std::time::Instant::now() < deadline, "run {run} of {dag} has not ended after 2 minutes\n--- server stderr ---\n{}", self.stderr());
            let (status, body) = self.http("GET", &path, Some(&self.token.clone()), None);
            assert_eq!(status, 200, "GET {path}: {body}\n--- server stderr ---\n{}", self.stderr());
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
            if answer["ended"] == true {
                return answer["state"].as_str().unwrap_or_default().to_string();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Percent-encodes a query value.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// One HTTP/1.1 request over a plain TCP connection (`Connection: close`), with a bearer token if
/// given and a JSON body if given. Returns the status code and the body.
pub fn http(address: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap_or_else(|e| panic!("connect to {address}: {e}"));
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).expect("read timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("send the request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read the response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line: {response}"));
    (status, body.to_string())
}

/// Waits for a file that other processes append to, woken by inotify (through `notify`) rather
/// than by polling: [`FileWatch::wait`] reads what was appended since the last look and returns
/// once the caller's condition holds.
pub struct FileWatch {
    path: PathBuf,
    events: std::sync::mpsc::Receiver<()>,
    _watcher: notify::RecommendedWatcher,
    offset: u64,
    partial: String,
    /// The complete lines read so far.
    pub lines: Vec<String>,
}

impl FileWatch {
    /// Watches `path` (which may not exist yet; its folder must).
    pub fn new(path: &Path) -> FileWatch {
        use notify::Watcher;
        let (tx, events) = std::sync::mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            let _ = tx.send(());
        })
        .expect("inotify watcher");
        let folder = path.parent().expect("file has a folder");
        watcher.watch(folder, notify::RecursiveMode::NonRecursive).expect("watch folder");
        FileWatch { path: path.to_path_buf(), events, _watcher: watcher, offset: 0, partial: String::new(), lines: Vec::new() }
    }

    /// Reads the complete lines appended since the last look into [`FileWatch::lines`].
    pub fn refresh(&mut self) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else { return };
        let _ = file.seek(SeekFrom::Start(self.offset));
        let mut more = Vec::new();
        let _ = file.read_to_end(&mut more);
        self.offset += more.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&more));
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.lines.push(line.trim_end_matches('\n').to_string());
        }
    }

    /// Returns once `done` holds for the lines read so far, re-checking after each change to the
    /// file's folder. Fails after `limit` (a broken test must not hang), describing `what`.
    #[track_caller]
    pub fn wait<T>(&mut self, what: &str, limit: std::time::Duration, mut done: impl FnMut(&[String]) -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + limit;
        loop {
            // Drain the events first: a change after this look wakes the next wait.
            while self.events.try_recv().is_ok() {}
            self.refresh();
            if let Some(value) = done(&self.lines) {
                return value;
            }
            if self.events.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())).is_err() {
                panic!("waited {limit:?} for {what}; {} has {} lines:\n{}", self.path.display(), self.lines.len(), self.lines.join("\n"));
            }
        }
    }
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
