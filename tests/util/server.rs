//! `flowctl server` in the background for the tests that need one ([`Server`]), and plain HTTP
//! requests to its API ([`http`]).
//!
//! A server a test lets go of without stopping it (the test failed) is killed and waited for;
//! what its attempts left running is killed with the test's home ([`super::TempHome`]).

use std::process::Stdio;

use super::{Cmd, Run};

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

    /// Waits (through `GET /api/v1/dags/D/runs/R?wait=30`, which answers when the run ends) until
    /// a run has ended, and returns its state. Fails after two minutes (a broken test must not
    /// hang).
    #[track_caller]
    pub fn wait_for_run(&self, dag: &str, run: &str) -> String {
        let path = format!("/api/v1/dags/{}/runs/{}?wait=30", encode(dag), encode(run));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            assert!(std::time::Instant::now() < deadline, "run {run} of {dag} has not ended after 2 minutes\n--- server stderr ---\n{}", self.stderr());
            let (status, body) = self.http("GET", &path, Some(&self.token.clone()), None);
            assert_eq!(status, 200, "GET {path}: {body}\n--- server stderr ---\n{}", self.stderr());
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
            let state = answer["run"]["state"].as_str().unwrap_or_default().to_string();
            if matches!(state.as_str(), "success" | "failed") && answer["activity"] == "settled" {
                return state;
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
