//! The CLI's side of the server's API: finds the server of a home and sends it requests.
//!
//! A running server writes `server.json` (address, bearer token, pid; mode 0600) into its home.
//! A command that finds the file and a server answering at that address goes through the API;
//! otherwise it acts on the store itself. The token is sent with every request and never printed.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::{Activity, Answer, AttemptLog, DagList, DagPage, LogChunk, Reply, Request, RunDetail, RunList, RunPage, ServiceError};

/// The header a stopping server puts on its answers: a client waiting for a run stops waiting.
pub const STOPPING_HEADER: &str = "flowctl-server-stopping";

/// The error body of the API (`{"error": {...}}`), as far as the client reads it.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    code: String,
    message: String,
    #[serde(default)]
    diagnostics: Vec<crate::diagnostic::Diagnostic>,
}

/// The server could not be reached, refused the token, or answered something unreadable.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub String);

/// What `server.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerFile {
    /// `host:port` the API listens on.
    pub address: String,
    /// The bearer token.
    pub token: String,
    /// The server's process id.
    pub pid: u32,
}

/// The name of the file in the home.
pub const SERVER_FILE: &str = "server.json";

/// A connection to a home's server.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: String,
}

/// How long the server may take to answer `/health`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a wait request may be held by the server before the client asks again.
const WAIT_POLL: Duration = Duration::from_secs(25);

impl Client {
    /// The server of the home at `root`, if one runs and answers; `None` when no server runs.
    /// A server whose process runs but does not answer `/health` is an error that says so: the
    /// caller must not then act on the home as if nobody held it.
    pub fn for_home(root: &Path) -> Result<Option<Client>, ClientError> {
        let Ok(text) = std::fs::read_to_string(root.join(SERVER_FILE)) else { return Ok(None) };
        let Ok(file) = serde_json::from_str::<ServerFile>(&text) else { return Ok(None) };
        let agent = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(2)).build();
        let base = format!("http://{}", file.address);
        match agent.get(&format!("{base}/health")).timeout(HEALTH_TIMEOUT).call() {
            Ok(_) => Ok(Some(Client { agent, base, token: file.token })),
            // A server that stopped without removing its file (kill -9) leaves a stale one.
            Err(_) if !crate::state::is_alive(file.pid) => Ok(None),
            Err(e) => Err(ClientError(format!(
                "the server of this home (process {}, {base}) runs but does not answer /health within {}s: {}; it may be overloaded or stuck: look at its log, or restart it",
                file.pid,
                HEALTH_TIMEOUT.as_secs(),
                match e {
                    ureq::Error::Status(code, _) => format!("it answered HTTP {code}"),
                    ureq::Error::Transport(t) => t.to_string(),
                }
            ))),
        }
    }

    /// The error an API call ended with: a refusal of the service as its [`ServiceError`], the
    /// rest (a refused token, a lost connection) as a [`ClientError`].
    fn error(&self, e: ureq::Error) -> Result<ServiceError, ClientError> {
        match e {
            ureq::Error::Status(401, _) => Err(ClientError(format!(
                "the server at {} refused the token in server.json; restart the server or check that this is its home",
                self.base
            ))),
            ureq::Error::Status(code, response) => {
                let body = response.into_string().unwrap_or_default();
                match serde_json::from_str::<ErrorBody>(&body) {
                    Ok(ErrorBody { error }) => Ok(match error.code.as_str() {
                        "not_found" => ServiceError::NotFound { message: error.message },
                        "conflict" => ServiceError::Conflict { message: error.message },
                        "invalid" => ServiceError::Invalid { diagnostics: error.diagnostics },
                        "unavailable" => ServiceError::Unavailable { message: error.message },
                        _ => ServiceError::BadRequest { message: error.message },
                    }),
                    Err(_) => Err(ClientError(format!("the server at {} answered {code}: {body}", self.base))),
                }
            }
            ureq::Error::Transport(t) => {
                Err(ClientError(format!("cannot reach the server at {}: {t}; is `flowctl server` still running?", self.base)))
            }
        }
    }

    /// `/api/v1` and the path made of `segments`, each percent-encoded.
    fn url(&self, segments: &[&str]) -> String {
        let mut url = format!("{}/api/v1", self.base);
        for segment in segments {
            url.push('/');
            url.push_str(&url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>().replace('+', "%20"));
        }
        url
    }

    fn get(&self, segments: &[&str]) -> ureq::Request {
        self.agent.get(&self.url(segments)).set("Authorization", &format!("Bearer {}", self.token))
    }

    fn send(&self, method: &str, segments: &[&str]) -> ureq::Request {
        self.agent.request(method, &self.url(segments)).set("Authorization", &format!("Bearer {}", self.token))
    }

    /// Runs an API call and reads its JSON answer.
    fn answer<T: serde::de::DeserializeOwned>(&self, call: Result<ureq::Response, ureq::Error>) -> Result<Result<T, ServiceError>, ClientError> {
        match call {
            Ok(response) => response
                .into_json()
                .map(Ok)
                .map_err(|e| ClientError(format!("unreadable answer from the server at {}: {e}", self.base))),
            Err(e) => self.error(e).map(Err),
        }
    }

    /// Answers a request through the server's resource API: the same typed values the service
    /// gives in this process.
    pub fn request(&self, request: &Request) -> Result<Answer, ClientError> {
        let json = |value: serde_json::Value| value;
        Ok(match request {
            Request::Apply { paths } => {
                let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                self.answer(self.send("POST", &["dags"]).send_json(json(serde_json::json!({ "paths": paths }))))?.map(Reply::Applied)
            }
            Request::Dags => {
                let mut dags = Vec::new();
                let mut cursor: Option<String> = None;
                loop {
                    let mut call = self.get(&["dags"]).query("limit", "500");
                    if let Some(c) = &cursor {
                        call = call.query("cursor", c);
                    }
                    match self.answer::<DagPage>(call.call())? {
                        Ok(page) => {
                            dags.extend(page.dags.into_iter().map(|d| d.summary));
                            match page.next_cursor {
                                Some(next) => cursor = Some(next),
                                None => break Ok(Reply::Dags(DagList { dags })),
                            }
                        }
                        Err(e) => break Err(e),
                    }
                }
            }
            Request::Runs { dag, limit } => {
                let mut runs = Vec::new();
                let mut cursor: Option<String> = None;
                loop {
                    let page_size = limit.map_or(500, |n| (n - runs.len().min(n)).clamp(1, 500));
                    let mut call = self.get(&["dags", dag, "runs"]).query("limit", &page_size.to_string());
                    if let Some(c) = &cursor {
                        call = call.query("cursor", c);
                    }
                    match self.answer::<RunPage>(call.call())? {
                        Ok(page) => {
                            runs.extend(page.runs);
                            let full = limit.is_some_and(|n| runs.len() >= n);
                            match page.next_cursor {
                                Some(next) if !full => cursor = Some(next),
                                _ => {
                                    // Newest first over the API; oldest first as the CLI lists them.
                                    runs.reverse();
                                    break Ok(Reply::Runs(RunList { dag_id: dag.clone(), runs, total: page.total }));
                                }
                            }
                        }
                        Err(e) => break Err(e),
                    }
                }
            }
            Request::Run { dag, run } => self.answer(self.get(&["dags", dag, "runs", run]).call())?.map(Reply::Run),
            Request::Logs { dag, run, task, attempt } => {
                let mut text = String::new();
                let mut offset = 0u64;
                loop {
                    let mut call = self.get(&["dags", dag, "runs", run, "tasks", task, "logs"]).query("offset", &offset.to_string());
                    if let Some(n) = attempt {
                        call = call.query("attempt", &n.to_string());
                    }
                    match self.answer::<LogChunk>(call.call())? {
                        Ok(chunk) => {
                            text.push_str(&chunk.text);
                            if chunk.next_offset == offset || chunk.text.is_empty() {
                                let log = AttemptLog {
                                    dag_id: dag.clone(),
                                    run_id: run.clone(),
                                    task_id: task.clone(),
                                    attempt: chunk.attempt,
                                    path: Default::default(),
                                    text,
                                };
                                break Ok(Reply::Log(log));
                            }
                            offset = chunk.next_offset;
                        }
                        Err(e) => break Err(e),
                    }
                }
            }
            Request::Trigger { dag, params, date } => self
                .answer(self.send("POST", &["dags", dag, "runs"]).send_json(serde_json::json!({ "params": params, "logical_date": date })))?
                .map(Reply::Triggered),
            Request::Clear { dag, run, tasks, downstream, failed_only } => self
                .answer(
                    self.send("POST", &["dags", dag, "runs", run, "clear"])
                        .send_json(serde_json::json!({ "tasks": tasks, "downstream": downstream, "failed_only": failed_only })),
                )?
                .map(Reply::Cleared),
            Request::Cancel { dag, run } => self.answer(self.send("POST", &["dags", dag, "runs", run, "cancel"]).call())?.map(Reply::Cancelled),
            Request::Pause { dag, paused } => {
                self.answer(self.send("PATCH", &["dags", dag]).send_json(serde_json::json!({ "paused": paused })))?.map(Reply::Paused)
            }
            Request::Backfill { dag, from, to, rerun_failed } => self
                .answer(self.send("POST", &["dags", dag, "backfills"]).send_json(serde_json::json!({ "from": from, "to": to, "rerun_failed": rerun_failed })))?
                .map(Reply::Backfilled),
            Request::Next { dag, n, after } => {
                let mut call = self.get(&["dags", dag, "next"]).query("n", &n.to_string());
                if let Some(after) = after {
                    call = call.query("after", after);
                }
                self.answer(call.call())?.map(Reply::Next)
            }
        })
    }

    /// Streams an attempt's log to `out` until the attempt ends (`logs --follow`), through the
    /// API's server-sent events.
    pub fn follow_log(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        attempt: Option<u32>,
        out: &mut dyn std::io::Write,
    ) -> Result<Result<(), ServiceError>, ClientError> {
        let mut call = self.get(&["dags", dag_id, "runs", run_id, "tasks", task_id, "logs"]).set("Accept", "text/event-stream");
        if let Some(n) = attempt {
            call = call.query("attempt", &n.to_string());
        }
        let response = match call.call() {
            Ok(response) => response,
            Err(e) => return self.error(e).map(Err),
        };
        let reader = std::io::BufReader::new(response.into_reader());
        let (mut event, mut data): (String, Vec<String>) = (String::new(), Vec::new());
        for line in std::io::BufRead::lines(reader) {
            let line = line.map_err(|e| ClientError(format!("the log stream from {} broke: {e}", self.base)))?;
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_string();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value).to_string());
            } else if line.is_empty() && !data.is_empty() {
                let text = data.join("\n");
                data.clear();
                let written = match event.as_str() {
                    "end" => {
                        let note = match text.as_str() {
                            "not_executed" => "(the run is not being executed; the log ends here)\n",
                            "abandoned" => "(this attempt is no longer running and wrote no last line: flowctl stopped while it ran)\n",
                            _ => "",
                        };
                        let _ = out.write_all(note.as_bytes()).and_then(|_| out.flush());
                        return Ok(Ok(()));
                    }
                    _ => out.write_all(text.as_bytes()).and_then(|_| out.flush()),
                };
                if written.is_err() {
                    // The reader went away (`| head`): stop quietly.
                    return Ok(Ok(()));
                }
            }
        }
        Ok(Ok(()))
    }

    /// Waits until the run has ended (or the server is stopping).
    pub fn wait(&self, dag_id: &str, run_id: &str) -> Result<Result<(), ServiceError>, ClientError> {
        loop {
            let call = self.get(&["dags", dag_id, "runs", run_id]).query("wait", &WAIT_POLL.as_secs().to_string()).timeout(WAIT_POLL + Duration::from_secs(10)).call();
            let stopping = call.as_ref().ok().and_then(|r| r.header(STOPPING_HEADER)).is_some();
            match self.answer::<RunDetail>(call)? {
                Ok(detail) => {
                    if (detail.run.state.is_terminal() && detail.activity == Activity::Settled) || stopping {
                        return Ok(Ok(()));
                    }
                }
                Err(e) => return Ok(Err(e)),
            }
        }
    }
}
