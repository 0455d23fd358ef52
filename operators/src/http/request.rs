//! `http.request`: one HTTP call (an API's trigger, a status check, a lookup) whose status, chosen
//! headers and body (parsed when it is JSON) become outputs for downstream templates.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::{
    cancellable, check_duration, check_headers, check_retries, check_url, default_http_retries, describe, header_map,
    is_retryable_error, is_retryable_status, parse_url, retry_after, status_accepted, status_hint, status_text,
    wait_to_retry, Auth, RetryPolicy, Scalar, StatusRange, CONNECT_TIMEOUT, USER_AGENT,
};

/// How long a request may take when `timeout` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most body kept in outputs when `max_body_bytes` is not set (1 MiB).
const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
/// How much of an error answer's body an error message quotes.
const ERROR_BODY_CHARS: usize = 300;

/// The settings of an `http.request` task.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpRequestConfig")]
pub struct RequestConfig {
    /// The URL to call, http:// or https://.
    pub url: String,
    /// The HTTP method (default GET).
    #[serde(default = "default_method")]
    pub method: String,
    /// Request headers, by name.
    #[serde(default)]
    pub headers: BTreeMap<String, Scalar>,
    /// Query parameters added to the URL (encoded for you).
    #[serde(default)]
    pub query: BTreeMap<String, Scalar>,
    /// A JSON body (any YAML value); sets `Content-Type: application/json`. Give at most one of
    /// `json`, `form` and `body`.
    pub json: Option<Value>,
    /// A form body (`application/x-www-form-urlencoded`). Give at most one of `json`, `form` and
    /// `body`.
    pub form: Option<BTreeMap<String, Scalar>>,
    /// A raw body, sent as it is; set its `Content-Type` in `headers`. Give at most one of `json`,
    /// `form` and `body`.
    pub body: Option<String>,
    /// Credentials: `basic: {username, password_env}` or `bearer: {token_env}`.
    pub auth: Option<Auth>,
    /// The statuses that count as success: codes (`200`), classes (`2xx`) or ranges (`200-299`).
    /// Default: any 2xx.
    pub expect_status: Option<Vec<StatusRange>>,
    /// Response headers to put in the outputs (`outputs.headers.<name>`, lower case; `null` when
    /// the answer has none).
    #[serde(default)]
    pub output_headers: Vec<String>,
    /// How long the whole request may take, answer included (default 30s).
    pub timeout: Option<String>,
    /// How many more times to try within the attempt after a 5xx, 408, 429, a timeout or a lost
    /// connection (default 3). Statuses listed in `expect_status` are not retried.
    #[serde(default = "default_http_retries")]
    pub http_retries: u32,
    /// The wait before the first retry within the attempt; it doubles after each (default 1s). A
    /// server's `Retry-After` in seconds takes precedence. Both are capped at 1m.
    pub http_retry_delay: Option<String>,
    /// The most bytes of the body kept in `outputs.body` (default 1048576); a longer body is cut
    /// there, kept as text and `body_truncated` is true.
    pub max_body_bytes: Option<u64>,
}

fn default_method() -> String {
    "GET".to_string()
}

/// The `http.request` operator.
pub struct HttpRequest;

#[async_trait]
impl Operator for HttpRequest {
    const NAME: &'static str = "http.request";
    const DOCS: &'static str = "docs/operators/http.md";
    type Config = RequestConfig;

    fn check(config: &RequestConfig) -> Result<(), ConfigError> {
        check_url("url", &config.url)?;
        if !flowctl_engine::template::is_template(&config.method)
            && reqwest::Method::from_bytes(config.method.to_ascii_uppercase().as_bytes()).is_err()
        {
            return Err(ConfigError::new("method", format!("\"{}\" is not an HTTP method (GET, POST, PUT, PATCH, DELETE, HEAD...)", config.method)));
        }
        let bodies: Vec<&str> = [("json", config.json.is_some()), ("form", config.form.is_some()), ("body", config.body.is_some())]
            .into_iter()
            .filter_map(|(name, given)| given.then_some(name))
            .collect();
        if bodies.len() > 1 {
            return Err(ConfigError::new(bodies[1], format!("give one body: `{}` and `{}` are both set", bodies[0], bodies[1])));
        }
        check_headers("headers", config.headers.keys())?;
        for (index, name) in config.output_headers.iter().enumerate() {
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::new(format!("output_headers[{index}]"), format!("\"{name}\" is not a valid header name")));
            }
        }
        if let Some(auth) = &config.auth {
            auth.check("auth")?;
            if config.headers.keys().any(|k| k.eq_ignore_ascii_case("authorization")) {
                return Err(ConfigError::new("headers.Authorization", "give `auth` or an Authorization header, not both"));
            }
        }
        if config.expect_status.as_ref().is_some_and(Vec::is_empty) {
            return Err(ConfigError::new("expect_status", "list at least one status (or leave it out for any 2xx)"));
        }
        if config.max_body_bytes == Some(0) {
            return Err(ConfigError::new("max_body_bytes", "must be at least 1"));
        }
        check_duration("timeout", config.timeout.as_deref())?;
        check_duration("http_retry_delay", config.http_retry_delay.as_deref())?;
        check_retries(config.http_retries)
    }

    async fn execute(&self, config: RequestConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        run(config, ctx).await
    }
}

async fn run(config: RequestConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
    let url = parse_url(&config.url).map_err(TaskError::fatal)?;
    let method = reqwest::Method::from_bytes(config.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| TaskError::fatal(format!("\"{}\" is not an HTTP method", config.method)))?;
    let timeout = super::duration("timeout", config.timeout.as_deref(), DEFAULT_TIMEOUT)?;
    let policy = RetryPolicy::new(config.http_retries, config.http_retry_delay.as_deref())?;
    let headers = header_map(config.headers.iter())?;
    let client = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .build()
        .map_err(|e| TaskError::fatal(format!("cannot set up the HTTP client: {}", describe(&e))))?;
    let query: Vec<(&str, &str)> = config.query.iter().map(|(k, v)| (k.as_str(), v.0.as_str())).collect();
    let what = format!("{method} {url}");
    let max_body = config.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);

    let mut tries = 0;
    let response = loop {
        tries += 1;
        let mut request = client.request(method.clone(), url.clone()).headers(headers.clone());
        if !query.is_empty() {
            request = request.query(&query);
        }
        if let Some(json) = &config.json {
            request = request.json(json);
        } else if let Some(form) = &config.form {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.0.as_str())).collect();
            request = request.form(&pairs);
        } else if let Some(body) = &config.body {
            request = request.body(body.clone());
        }
        if let Some(auth) = &config.auth {
            request = auth.apply(request)?;
        }
        if tries == 1 {
            ctx.log.line(&what);
        }
        match cancellable(&ctx, request.send()).await? {
            Ok(response) => {
                let status = response.status();
                if status_accepted(config.expect_status.as_deref(), status.as_u16()) {
                    break response;
                }
                if is_retryable_status(status) && tries <= policy.retries {
                    let wait = retry_after(response.headers());
                    wait_to_retry(&ctx, &policy, tries + 1, &format!("{what}: {}", status_text(status)), wait).await?;
                    continue;
                }
                let body = read_body(&ctx, response, ERROR_BODY_CHARS as u64).await.map(|(text, _)| text).unwrap_or_default();
                return Err(unexpected_status(&what, status, &config, tries, &body));
            }
            Err(e) if is_retryable_error(&e) && tries <= policy.retries => {
                wait_to_retry(&ctx, &policy, tries + 1, &format!("{what}: {}", describe(&e)), None).await?;
            }
            Err(e) => {
                let after = if tries > 1 { format!(" after {tries} tries") } else { String::new() };
                let message = format!("{what} failed{after}: {}", describe(&e));
                return Err(if is_retryable_error(&e) { TaskError::retryable(message) } else { TaskError::fatal(message) });
            }
        }
    };

    let status = response.status();
    let mut outputs = Outputs::new();
    outputs.insert("status".into(), status.as_u16().into());
    if !config.output_headers.is_empty() {
        let mut named = serde_json::Map::new();
        for name in &config.output_headers {
            let values: Vec<&str> = response.headers().get_all(name.as_str()).iter().filter_map(|v| v.to_str().ok()).collect();
            let value = if values.is_empty() { Value::Null } else { Value::String(values.join(", ")) };
            named.insert(name.to_ascii_lowercase(), value);
        }
        outputs.insert("headers".into(), Value::Object(named));
    }
    let is_json = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_type);
    let (bytes, truncated) = read_body(&ctx, response, max_body).await.map_err(|e| {
        TaskError::retryable(format!("{what}: the answer ({}) broke off: {e}", status_text(status)))
    })?;
    let body = if truncated {
        ctx.log.line(&format!(
            "the body is longer than max_body_bytes ({max_body}): kept the first {max_body} bytes as text in outputs.body"
        ));
        Value::String(bytes)
    } else if is_json && !bytes.trim().is_empty() {
        match serde_json::from_str::<Value>(&bytes) {
            Ok(value) => value,
            Err(e) => {
                ctx.log.line(&format!("the answer says it is JSON but does not parse ({e}): kept it as text in outputs.body"));
                Value::String(bytes)
            }
        }
    } else {
        Value::String(bytes)
    };
    ctx.log.line(&format!("{} ({})", status_text(status), if is_json { "JSON" } else { "text" }));
    outputs.insert("body".into(), body);
    outputs.insert("body_truncated".into(), truncated.into());
    Ok(Outcome::Success { outputs })
}

/// Whether a `Content-Type` is JSON: `application/json`, `application/problem+json`...
fn is_json_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

/// Reads at most `limit` bytes of the body as text (lossily); true when there was more.
async fn read_body(ctx: &TaskContext, response: reqwest::Response, limit: u64) -> Result<(String, bool), String> {
    let mut stream = response.bytes_stream();
    let mut kept: Vec<u8> = Vec::new();
    let mut truncated = false;
    loop {
        let next = cancellable(ctx, stream.next()).await.map_err(|e| e.message)?;
        match next {
            None => break,
            Some(Err(e)) => return Err(describe(&e)),
            Some(Ok(chunk)) => {
                let room = limit.saturating_sub(kept.len() as u64) as usize;
                if chunk.len() > room {
                    kept.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                kept.extend_from_slice(&chunk);
            }
        }
    }
    Ok((String::from_utf8_lossy(&kept).into_owned(), truncated))
}

fn unexpected_status(what: &str, status: reqwest::StatusCode, config: &RequestConfig, tries: u32, body: &str) -> TaskError {
    let expected = match &config.expect_status {
        Some(list) => list.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        None => "2xx".to_string(),
    };
    let after = if tries > 1 { format!(" after {tries} tries") } else { String::new() };
    let hint = status_hint(status, config.auth.as_ref(), None);
    let body = body.trim();
    let quoted = if body.is_empty() {
        String::new()
    } else {
        let short: String = body.chars().take(ERROR_BODY_CHARS).collect::<String>().replace('\n', " ");
        format!("\nthe server said: {short}")
    };
    let message = format!("{what} answered {}{after}, expected {expected}: {hint}{quoted}", status_text(status));
    if is_retryable_status(status) {
        TaskError::retryable(message)
    } else {
        TaskError::fatal(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_engine::operator::Registry;
    use serde_json::json;

    fn validate(with: Value) -> Result<(), ConfigError> {
        let mut registry = Registry::new();
        registry.register(HttpRequest);
        registry.get("http.request").unwrap().validate(&with)
    }

    #[test]
    fn compile_checks_name_the_field() {
        assert!(validate(json!({"url": "https://api.example.com/v1/loans", "query": {"limit": 10}})).is_ok());
        let err = validate(json!({"url": "https://x/", "json": {"a": 1}, "body": "raw"})).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("body", "give one body: `json` and `body` are both set"));
        let err = validate(json!({"url": "not a url"})).unwrap_err();
        assert_eq!(err.path, "url");
        let err = validate(json!({"url": "https://x/", "method": "FETCH ME"})).unwrap_err();
        assert_eq!(err.path, "method");
        let err = validate(json!({"url": "https://x/", "expect_status": [200, "2x"]})).unwrap_err();
        assert_eq!(err.path, "expect_status[1]");
        let err = validate(json!({"url": "https://x/", "auth": {"bearer": {"token_env": "API_BEARER"}}})).unwrap_err();
        assert_eq!(err.path, "auth.bearer.token_env");
        let err = validate(json!({"url": "https://x/", "auth": {"basic": {"username": "u", "password": "hunter2"}}})).unwrap_err();
        assert_eq!(err.path, "auth.basic.password");
        let err = validate(json!({"url": "https://x/", "timeout": "soon"})).unwrap_err();
        assert_eq!(err.path, "timeout");
        let err = validate(json!({"url": "https://x/", "http_retries": 50})).unwrap_err();
        assert_eq!(err.path, "http_retries");
        assert!(validate(json!({"url": "{{ params.api }}/loans", "method": "post", "json": [1, 2]})).is_ok());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_type("application/json; charset=utf-8"));
        assert!(is_json_type("application/problem+json"));
        assert!(!is_json_type("text/html"));
    }
}
