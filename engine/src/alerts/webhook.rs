//! Webhook alerts: one JSON POST per URL, over rustls.
//!
//! A webhook URL often carries its own secret (Slack's incoming-webhook URLs do), so errors never
//! repeat the URL's path: they name the URL's origin only.

use std::time::Duration;

use serde_json::Value;

use super::email::{cause, SendError};
use crate::state::Channel;

/// How long one POST may take, connection included.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a refusing receiver's answer goes into the error.
const ANSWER_CHARS: usize = 200;

/// Posts webhook bodies; one client (and its connection pool) per dispatcher.
#[derive(Clone)]
pub struct Webhooks {
    client: Result<reqwest::Client, String>,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks::new()
    }
}

impl Webhooks {
    /// A client with flowctl's timeouts; redirects are not followed (a POST would become a GET).
    pub fn new() -> Webhooks {
        let client = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .connect_timeout(POST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("flowctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {}", cause(&e)));
        Webhooks { client }
    }

    /// POSTs `body` as JSON to `url`. A 2xx answer is success; 5xx, 429 and network trouble are
    /// worth another try; any other answer is final.
    pub async fn post(&self, url: &str, body: &Value) -> Result<(), SendError> {
        let client = self.client.as_ref().map_err(|e| SendError::fatal(e.clone()))?;
        let shown = Channel::Webhook { url: url.to_string() }.describe();
        let response = client.post(url).json(body).send().await.map_err(|e| {
            let e = e.without_url();
            let why = if e.is_timeout() { format!("no answer within {}s", POST_TIMEOUT.as_secs()) } else { cause(&e) };
            if e.is_builder() {
                SendError::fatal(format!("{shown}: the URL is not usable: {why}; fix it in the DAG's alerts.webhook.urls"))
            } else {
                SendError::retryable(format!("cannot reach {shown}: {why}"))
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let answer: String = text.trim().chars().take(ANSWER_CHARS).collect();
        let answer = if answer.is_empty() { String::new() } else { format!(": {answer}") };
        let message = format!("{shown} answered {status}{answer}");
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(SendError::retryable(message))
        } else if status.is_redirection() {
            Err(SendError::fatal(format!("{message}; give the final URL in alerts.webhook.urls (redirects are not followed)")))
        } else {
            Err(SendError::fatal(message))
        }
    }
}
