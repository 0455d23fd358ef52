//! The CLI's side of the server's API: finds the server of a home and sends it requests.
//!
//! A running server writes `server.json` (address, bearer token, pid; mode 0600) into its home.
//! A command that finds the file and a server answering at that address goes through the API;
//! otherwise it acts on the store itself. The token is sent with every request and never printed.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::{Answer, Request};

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

    fn error(&self, e: ureq::Error) -> ClientError {
        match e {
            ureq::Error::Status(401, _) => ClientError(format!(
                "the server at {} refused the token in server.json; restart the server or check that this is its home",
                self.base
            )),
            ureq::Error::Status(code, response) => {
                let body = response.into_string().unwrap_or_default();
                ClientError(format!("the server at {} answered {code}: {body}", self.base))
            }
            ureq::Error::Transport(t) => {
                ClientError(format!("cannot reach the server at {}: {t}; is `flowctl server` still running?", self.base))
            }
        }
    }

    /// Sends a request; the server answers with the service's typed answer.
    pub fn request(&self, request: &Request) -> Result<Answer, ClientError> {
        let response = self
            .agent
            .post(&format!("{}/api/command", self.base))
            .set("Authorization", &format!("Bearer {}", self.token))
            .send_json(request)
            .map_err(|e| self.error(e))?;
        response.into_json().map_err(|e| ClientError(format!("unreadable answer from the server: {e}")))
    }

    /// Streams an attempt's log to `out` until the attempt ends (`logs --follow`).
    pub fn follow_log(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        attempt: Option<u32>,
        out: &mut dyn std::io::Write,
    ) -> Result<(), ClientError> {
        let mut request = self
            .agent
            .get(&format!("{}/api/logs", self.base))
            .query("dag", dag_id)
            .query("run", run_id)
            .query("task", task_id)
            .set("Authorization", &format!("Bearer {}", self.token));
        if let Some(n) = attempt {
            request = request.query("attempt", &n.to_string());
        }
        let response = request.call().map_err(|e| match e {
            ureq::Error::Status(404, response) => ClientError(
                response.into_string().unwrap_or_default().trim().trim_start_matches("error: ").to_string(),
            ),
            other => self.error(other),
        })?;
        let mut reader = response.into_reader();
        let mut buffer = [0u8; 8192];
        loop {
            match std::io::Read::read(&mut reader, &mut buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    if out.write_all(&buffer[..n]).and_then(|_| out.flush()).is_err() {
                        // The reader went away (`| head`): stop quietly.
                        return Ok(());
                    }
                }
                Err(e) => return Err(ClientError(format!("the log stream from {} broke: {e}", self.base))),
            }
        }
    }

    /// Waits until the run has ended.
    pub fn wait(&self, dag_id: &str, run_id: &str) -> Result<(), ClientError> {
        loop {
            let response = self
                .agent
                .get(&format!("{}/api/wait", self.base))
                .query("dag", dag_id)
                .query("run", run_id)
                .set("Authorization", &format!("Bearer {}", self.token))
                .timeout(WAIT_POLL + Duration::from_secs(10))
                .call()
                .map_err(|e| self.error(e))?;
            let answer: serde_json::Value =
                response.into_json().map_err(|e| ClientError(format!("unreadable answer from the server: {e}")))?;
            if answer["ended"].as_bool() == Some(true) {
                return Ok(());
            }
        }
    }
}
