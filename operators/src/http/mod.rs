//! HTTP operators: `http.request` calls an API and hands its answer downstream; `http.download`
//! fetches files (after an optional login form) to a local folder, resuming dropped transfers and
//! noticing when nothing changed since the last run.
//!
//! What both share lives here: the settings types that accept any YAML scalar, status-code sets,
//! credentials read from environment variables (never from the DAG), the retry loop on 5xx and lost
//! connections, and the wording of errors, which always name the URL, the status and what to do.

mod download;
mod extract;
mod request;

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use flowctl_engine::operator::{ConfigError, TaskContext, TaskError};
use flowctl_engine::Registry;
use serde::{Deserialize, Deserializer};

pub use download::{DownloadConfig, HttpDownload, Login};
pub use extract::ArchiveFormat;
pub use request::{HttpRequest, RequestConfig};

/// Adds `http.request` and `http.download`.
pub fn register(registry: &mut Registry) {
    registry.register(HttpRequest).register(HttpDownload);
}

/// The `User-Agent` flowctl sends.
const USER_AGENT: &str = concat!("flowctl/", env!("CARGO_PKG_VERSION"));
/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest wait between two tries within an attempt (also caps a server's `Retry-After`).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);
/// Tries after the first within one attempt, when `http_retries` is not set.
const DEFAULT_HTTP_RETRIES: u32 = 3;
/// The first wait between tries, when `http_retry_delay` is not set; it doubles after each try.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// The most tries `http_retries` may ask for.
const MAX_HTTP_RETRIES: u32 = 20;

pub(crate) fn default_http_retries() -> u32 {
    DEFAULT_HTTP_RETRIES
}

/// A YAML scalar (string, number or boolean) used as text: header, query and form values, so
/// `limit: 10` needs no quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl schemars::JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "HttpScalar".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

/// A value that may be written as one item or a list of them (`members: "*.txt"` or
/// `members: ["*.txt", "*.csv"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(OneOrMany(items))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl schemars::JsonSchema for OneOrMany {
    fn schema_name() -> Cow<'static, str> {
        "HttpOneOrMany".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "anyOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" } }] })
    }
}

/// One item of `expect_status`: a code (`200`), a class (`2xx`) or a range (`200-299`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    /// The lowest code accepted.
    pub low: u16,
    /// The highest code accepted.
    pub high: u16,
}

impl StatusRange {
    /// Any 2xx code, the default.
    pub const SUCCESS: StatusRange = StatusRange { low: 200, high: 299 };

    fn parse(text: &str) -> Result<StatusRange, String> {
        let text = text.trim();
        let code = |t: &str| -> Result<u16, String> {
            match t.trim().parse::<u16>() {
                Ok(c) if (100..=599).contains(&c) => Ok(c),
                _ => Err(format!("\"{text}\" is not a status code: write a code (200), a class (2xx) or a range (200-299) of codes 100 to 599")),
            }
        };
        if let Some(class) = text.strip_suffix("xx").or_else(|| text.strip_suffix("XX")) {
            let digit = code(&format!("{class}00"))?;
            return Ok(StatusRange { low: digit, high: digit + 99 });
        }
        if let Some((low, high)) = text.split_once('-') {
            let (low, high) = (code(low)?, code(high)?);
            if low > high {
                return Err(format!("\"{text}\" is an empty range: write the lower code first"));
            }
            return Ok(StatusRange { low, high });
        }
        let c = code(text)?;
        Ok(StatusRange { low: c, high: c })
    }

    /// Whether `status` is in the range.
    pub fn contains(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else if self.low % 100 == 0 && self.high == self.low + 99 {
            write!(f, "{}xx", self.low / 100)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Scalar(text) = Scalar::deserialize(deserializer)?;
        StatusRange::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for StatusRange {
    fn schema_name() -> Cow<'static, str> {
        "HttpStatus".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                { "type": "integer", "minimum": 100, "maximum": 599 },
                { "type": "string", "pattern": "^([1-5]xx|[1-5][0-9][0-9](-[1-5][0-9][0-9])?)$" }
            ]
        })
    }
}

/// The statuses an answer may have: `expect_status`, or any 2xx.
pub(crate) fn status_accepted(expect: Option<&[StatusRange]>, status: u16) -> bool {
    match expect {
        Some(ranges) => ranges.iter().any(|r| r.contains(status)),
        None => StatusRange::SUCCESS.contains(status),
    }
}

/// Credentials sent with every request; the secret comes from an environment variable whose name
/// is given, never from the DAG file.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "HttpAuth")]
pub enum Auth {
    /// HTTP Basic authentication: `basic: {username: me, password_env: API_PASSWORD}`.
    Basic(BasicAuth),
    /// A bearer token in the `Authorization` header: `bearer: {token_env: API_TOKEN}`.
    Bearer(BearerAuth),
}

/// HTTP Basic credentials.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpBasicAuth")]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The name of the environment variable holding the password. The name must contain PASSWORD,
    /// SECRET, TOKEN or KEY, so that flowctl masks its value in logs.
    pub password_env: String,
}

/// A bearer token.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpBearerAuth")]
pub struct BearerAuth {
    /// The name of the environment variable holding the token. The name must contain PASSWORD,
    /// SECRET, TOKEN or KEY, so that flowctl masks its value in logs.
    pub token_env: String,
}

impl Auth {
    /// Checks the variable name at compile time.
    pub(crate) fn check(&self, path: &str) -> Result<(), ConfigError> {
        match self {
            Auth::Basic(basic) => check_secret_env(&format!("{path}.basic.password_env"), &basic.password_env, "PASSWORD"),
            Auth::Bearer(bearer) => check_secret_env(&format!("{path}.bearer.token_env"), &bearer.token_env, "TOKEN"),
        }
    }

    /// The environment variable and the setting that names it, for hints.
    pub(crate) fn variable(&self) -> (&str, &'static str) {
        match self {
            Auth::Basic(b) => (&b.password_env, "auth.basic.password_env"),
            Auth::Bearer(b) => (&b.token_env, "auth.bearer.token_env"),
        }
    }

    /// Adds the credentials to a request.
    pub(crate) fn apply(&self, request: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, TaskError> {
        Ok(match self {
            Auth::Basic(b) => {
                let password = secret_from_env(&b.password_env, "auth.basic.password_env")?;
                request.basic_auth(&b.username, Some(password))
            }
            Auth::Bearer(b) => request.bearer_auth(secret_from_env(&b.token_env, "auth.bearer.token_env")?),
        })
    }
}

/// Compile-time check of a variable that holds a secret: a valid name, and one the engine masks.
pub(crate) fn check_secret_env(path: &str, name: &str, example_part: &str) -> Result<(), ConfigError> {
    if flowctl_engine::template::is_template(name) {
        return Ok(());
    }
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(ConfigError::new(
            path,
            format!("\"{name}\" is not an environment variable name: give the variable's name (letters, digits and _), not its value"),
        ));
    }
    if !flowctl_engine::secrets::is_sensitive_name(name) {
        return Err(ConfigError::new(
            path,
            format!(
                "flowctl masks the values of environment variables whose names contain PASSWORD, SECRET, TOKEN or KEY, and \"{name}\" does not, so its value could appear in logs: rename the variable, e.g. {}_{example_part}",
                name.to_ascii_uppercase()
            ),
        ));
    }
    Ok(())
}

/// Reads a secret from the environment variable `name`, which the setting `field` names. A name
/// that was a template is checked here, rendered: only a variable the masker covers may be read.
pub(crate) fn secret_from_env(name: &str, field: &str) -> Result<String, TaskError> {
    if !flowctl_engine::secrets::is_sensitive_name(name) {
        return Err(TaskError::fatal(format!(
            "{field} names the environment variable {name}, whose value flowctl would not mask: it masks the variables whose names contain PASSWORD, SECRET, TOKEN or KEY; rename the variable so its name says it holds a secret"
        )));
    }
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => Ok(value),
        Ok(_) => Err(TaskError::fatal(format!(
            "environment variable {name} (named by {field}) is empty: set it in the environment flowctl runs in"
        ))),
        Err(_) => Err(TaskError::fatal(format!(
            "environment variable {name} (named by {field}) is not set: set it in the environment flowctl runs in (for `flowctl server`, the server's environment)"
        ))),
    }
}

/// Checks a URL at compile time: absolute, http or https. Templated URLs are checked when rendered.
pub(crate) fn check_url(path: &str, url: &str) -> Result<(), ConfigError> {
    if flowctl_engine::template::is_template(url) {
        return Ok(());
    }
    parse_url(url).map(drop).map_err(|message| ConfigError::new(path, message))
}

/// Parses a URL and accepts only http and https.
pub(crate) fn parse_url(url: &str) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| format!("\"{url}\" is not a valid URL: {e}"))?;
    match parsed.scheme() {
        "http" | "https" => {}
        other => return Err(format!("\"{url}\" is a {other}: URL; only http:// and https:// are supported")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("\"{url}\" has no host"));
    }
    Ok(parsed)
}

/// Checks header names at compile time (values may be templates).
pub(crate) fn check_headers<'a>(path: &str, names: impl Iterator<Item = &'a String>) -> Result<(), ConfigError> {
    for name in names {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ConfigError::new(format!("{path}.{name}"), format!("\"{name}\" is not a valid header name")));
        }
    }
    Ok(())
}

/// Checks a duration setting at compile time (unless it is a template).
pub(crate) fn check_duration(path: &str, value: Option<&str>) -> Result<(), ConfigError> {
    match value {
        Some(text) if !flowctl_engine::template::is_template(text) => humantime::parse_duration(text)
            .map(drop)
            .map_err(|e| ConfigError::new(path, format!("invalid duration \"{text}\": {e} (write e.g. 500ms, 30s, 2m)"))),
        _ => Ok(()),
    }
}

/// A duration setting at run time.
pub(crate) fn duration(field: &str, value: Option<&str>, default: Duration) -> Result<Duration, TaskError> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| TaskError::fatal(format!("invalid {field} \"{text}\": {e} (write e.g. 500ms, 30s, 2m)"))),
    }
}

/// Checks `http_retries` at compile time.
pub(crate) fn check_retries(retries: u32) -> Result<(), ConfigError> {
    if retries > MAX_HTTP_RETRIES {
        return Err(ConfigError::new("http_retries", format!("{retries} is more than the {MAX_HTTP_RETRIES} tries an attempt may make; use the task's `retries` for longer outages")));
    }
    Ok(())
}

/// The headers of `headers:` as a header map.
pub(crate) fn header_map<'a>(headers: impl Iterator<Item = (&'a String, &'a Scalar)>) -> Result<reqwest::header::HeaderMap, TaskError> {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, Scalar(value)) in headers {
        let header = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| TaskError::fatal(format!("\"{name}\" is not a valid header name")))?;
        let value = reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| TaskError::fatal(format!("the value of header {name} is not valid in a header (a line break or a control character)")))?;
        map.append(header, value);
    }
    Ok(map)
}

/// When and how often to try again within one attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Tries after the first.
    pub retries: u32,
    /// The wait before the first retry; it doubles after each.
    pub delay: Duration,
}

impl RetryPolicy {
    pub(crate) fn new(retries: u32, delay: Option<&str>) -> Result<RetryPolicy, TaskError> {
        Ok(RetryPolicy { retries, delay: duration("http_retry_delay", delay, DEFAULT_RETRY_DELAY)? })
    }

    /// The wait before try `next` (2 for the first retry), or the server's `Retry-After` when it
    /// sent one; both capped at a minute.
    pub(crate) fn wait(&self, next: u32, retry_after: Option<Duration>) -> Duration {
        let doubled = self.delay.saturating_mul(1u32 << (next.saturating_sub(2)).min(16));
        retry_after.unwrap_or(doubled).min(MAX_RETRY_DELAY)
    }
}

/// Sleeps, unless the attempt is cancelled first.
pub(crate) async fn pause(ctx: &TaskContext, wait: Duration) -> Result<(), TaskError> {
    tokio::select! {
        _ = tokio::time::sleep(wait) => Ok(()),
        _ = ctx.cancel.cancelled() => Err(TaskError::cancelled()),
    }
}

/// Runs a future unless the attempt is cancelled first.
pub(crate) async fn cancellable<T>(ctx: &TaskContext, future: impl std::future::Future<Output = T>) -> Result<T, TaskError> {
    tokio::select! {
        value = future => Ok(value),
        _ = ctx.cancel.cancelled() => Err(TaskError::cancelled()),
    }
}

/// A `Retry-After` header given in seconds.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Whether a status is worth another try: the server's trouble, a timeout or throttling.
pub(crate) fn is_retryable_status(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

/// `404 Not Found`.
pub(crate) fn status_text(status: reqwest::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// A reqwest error with its causes, without the URL (the caller names it).
pub(crate) fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() { "timed out".to_string() } else { String::new() };
    let mut source: Option<&dyn std::error::Error> = Some(error);
    let mut seen: Vec<String> = Vec::new();
    while let Some(e) = source {
        let part = e.to_string();
        // reqwest's own line names the URL, which the caller already gives.
        let part = match part.split_once(" for url (") {
            Some((head, _)) => head.to_string(),
            None => part,
        };
        if !part.is_empty() && !seen.iter().any(|s| s.contains(&part)) {
            seen.push(part);
        }
        source = e.source();
    }
    for part in seen {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Whether a failed send is worth another try: the request may not have reached the server, or
/// its answer was lost.
pub(crate) fn is_retryable_error(error: &reqwest::Error) -> bool {
    !(error.is_builder() || error.is_redirect())
}

/// What to do about a status outside the accepted ones: the hint the error ends with.
pub(crate) fn status_hint(status: reqwest::StatusCode, auth: Option<&Auth>, login: Option<(&str, &str)>) -> String {
    match status.as_u16() {
        401 | 403 => match (auth, login) {
            (_, Some((login_url, variable))) => format!(
                "the session from the login at {login_url} was not accepted: check login.fields and the password in {variable}"
            ),
            (Some(auth), None) => {
                let (variable, field) = auth.variable();
                format!("check the credentials in {variable} ({field})")
            }
            (None, None) => "the server wants credentials: add `auth:` (or `login:` for a site with a login form)".to_string(),
        },
        404 | 410 => "check the URL".to_string(),
        405 => "check `method`".to_string(),
        407 => "a proxy wants credentials: check HTTPS_PROXY/HTTP_PROXY".to_string(),
        429 => "the server is limiting requests: raise http_retry_delay or try later".to_string(),
        s if (500..600).contains(&s) => "the server failed: it may be down; the task's retries will try again".to_string(),
        s if (400..500).contains(&s) => "the server refused the request: check the URL, headers and body".to_string(),
        _ => "list the status in `expect_status` if it is expected".to_string(),
    }
}

/// Logs a retry and waits for it.
pub(crate) async fn wait_to_retry(
    ctx: &TaskContext,
    policy: &RetryPolicy,
    next: u32,
    what: &str,
    retry_after: Option<Duration>,
) -> Result<(), TaskError> {
    let wait = policy.wait(next, retry_after);
    ctx.log.line(&format!(
        "{what}; trying again in {} (try {next} of {})",
        humantime::format_duration(round_duration(wait)),
        policy.retries + 1
    ));
    pause(ctx, wait).await
}

/// A duration rounded to milliseconds, for messages.
pub(crate) fn round_duration(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// A byte count for people: `12.3 MiB`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(texts: &[&str]) -> Vec<StatusRange> {
        texts.iter().map(|t| StatusRange::parse(t).unwrap()).collect()
    }

    #[test]
    fn status_ranges_parse_codes_classes_and_ranges() {
        let r = ranges(&["200", "3xx", "404-410"]);
        assert_eq!(r[0], StatusRange { low: 200, high: 200 });
        assert_eq!(r[1], StatusRange { low: 300, high: 399 });
        assert_eq!(r[2], StatusRange { low: 404, high: 410 });
        assert_eq!(r.iter().map(ToString::to_string).collect::<Vec<_>>(), ["200", "3xx", "404-410"]);
        assert!(status_accepted(Some(&r), 302));
        assert!(status_accepted(Some(&r), 405));
        assert!(!status_accepted(Some(&r), 201));
        assert!(status_accepted(None, 204));
        assert!(!status_accepted(None, 304));
        assert_eq!(
            StatusRange::parse("2x").unwrap_err(),
            "\"2x\" is not a status code: write a code (200), a class (2xx) or a range (200-299) of codes 100 to 599"
        );
        assert_eq!(StatusRange::parse("299-200").unwrap_err(), "\"299-200\" is an empty range: write the lower code first");
        assert!(StatusRange::parse("700").is_err());
        assert!(StatusRange::parse("6xx").is_err());
        let from_yaml: Vec<StatusRange> = serde_json::from_value(serde_json::json!([201, "2xx"])).unwrap();
        assert_eq!(from_yaml, ranges(&["201", "2xx"]));
    }

    #[test]
    fn secret_variables_must_have_names_the_engine_masks() {
        assert!(check_secret_env("p", "LOANS_PASSWORD", "PASSWORD").is_ok());
        assert!(check_secret_env("p", "api_token", "TOKEN").is_ok());
        let err = check_secret_env("login.password_env", "LOANS_PW", "PASSWORD").unwrap_err();
        assert_eq!(err.path, "login.password_env");
        assert_eq!(
            err.message,
            "flowctl masks the values of environment variables whose names contain PASSWORD, SECRET, TOKEN or KEY, and \"LOANS_PW\" does not, so its value could appear in logs: rename the variable, e.g. LOANS_PW_PASSWORD"
        );
        let err = check_secret_env("p", "hunter2 is my password", "PASSWORD").unwrap_err();
        assert!(err.message.contains("not an environment variable name"), "{}", err.message);
    }

    #[test]
    fn a_templated_variable_name_is_checked_once_rendered() {
        // `password_env: "{{ params.var }}"` passes compile; what it renders to is checked here.
        assert!(check_secret_env("p", "{{ params.var }}", "PASSWORD").is_ok());
        let err = secret_from_env("HOME", "auth.basic.password_env").unwrap_err();
        assert_eq!(
            err.message,
            "auth.basic.password_env names the environment variable HOME, whose value flowctl would not mask: it masks the variables whose names contain PASSWORD, SECRET, TOKEN or KEY; rename the variable so its name says it holds a secret"
        );
        assert!(secret_from_env("FLOWCTL_TEST_UNSET_PASSWORD", "auth.basic.password_env").unwrap_err().message.contains("is not set"));
    }

    #[test]
    fn urls_must_be_absolute_http() {
        assert!(parse_url("https://example.com/a.zip").is_ok());
        assert_eq!(parse_url("ftp://example.com/a").unwrap_err(), "\"ftp://example.com/a\" is a ftp: URL; only http:// and https:// are supported");
        assert_eq!(parse_url("example.com/a").unwrap_err(), "\"example.com/a\" is not a valid URL: relative URL without a base");
        assert!(check_url("url", "https://{{ params.host }}/x").is_ok());
    }

    #[test]
    fn retry_waits_double_and_honour_retry_after_up_to_a_minute() {
        let policy = RetryPolicy { retries: 5, delay: Duration::from_millis(500) };
        assert_eq!(policy.wait(2, None), Duration::from_millis(500));
        assert_eq!(policy.wait(3, None), Duration::from_secs(1));
        assert_eq!(policy.wait(4, None), Duration::from_secs(2));
        assert_eq!(policy.wait(3, Some(Duration::from_secs(7))), Duration::from_secs(7));
        assert_eq!(policy.wait(30, None), MAX_RETRY_DELAY);
        assert_eq!(policy.wait(2, Some(Duration::from_secs(3600))), MAX_RETRY_DELAY);
    }

    #[test]
    fn scalars_accept_numbers_and_booleans() {
        let v: std::collections::BTreeMap<String, Scalar> =
            serde_json::from_value(serde_json::json!({"a": 10, "b": true, "c": "x", "d": 1.5})).unwrap();
        assert_eq!(v["a"].0, "10");
        assert_eq!(v["b"].0, "true");
        assert_eq!(v["d"].0, "1.5");
        let err = serde_json::from_value::<Scalar>(serde_json::json!({"x": 1})).unwrap_err();
        assert!(err.to_string().contains("expected a string, number or boolean"), "{err}");
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(40 * 1024 * 1024), "40.0 MiB");
    }
}
