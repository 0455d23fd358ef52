//! `http.download`: fetches one or more files to a local folder, the way a data provider's site is
//! scraped: an optional login form whose session cookie is kept for the downloads, streaming to a
//! `.part` file with a progress line, resuming with `Range` after a dropped connection, checksum
//! verification, unpacking of zip and tar.gz archives, and `if_changed`, which ends the attempt
//! skipped when the server says (304, same ETag or Last-Modified) or the bytes show (same SHA-256)
//! that nothing changed since the last successful run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, LogSink, Operator, Outcome, Outputs, TaskContext, TaskError};
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, LAST_MODIFIED, RANGE};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use super::extract::{extract, ArchiveFormat, MemberFilter};
use super::{
    cancellable, check_duration, check_headers, check_retries, check_secret_env, check_url, default_http_retries,
    describe, header_map, human_bytes, is_retryable_error, is_retryable_status, parse_url, retry_after, round_duration,
    secret_from_env, status_hint, status_text, wait_to_retry, Auth, OneOrMany, RetryPolicy, Scalar, CONNECT_TIMEOUT,
    USER_AGENT,
};

/// How long a download may receive nothing before its connection counts as dropped, when
/// `stall_timeout` is not set.
const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The least time between two progress lines of one file.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The settings of an `http.download` task.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpDownloadConfig")]
pub struct DownloadConfig {
    /// The URL of the file to download. Give this or `urls`.
    pub url: Option<String>,
    /// The URLs of several files, downloaded one after the other. Give this or `url`.
    pub urls: Option<Vec<String>>,
    /// The local folder the files go to, created if missing. A relative path is relative to the
    /// run's work folder (`<home>/work/<dag>/<run>/`); outputs give absolute paths.
    pub destination: String,
    /// The file's name in `destination` (only with `url`). Default: the name the server gives in
    /// `Content-Disposition`, else the last segment of the URL's path.
    pub filename: Option<String>,
    /// A login form to submit first; its session cookie is kept for the downloads.
    pub login: Option<Login>,
    /// Credentials sent with each download: `basic: {username, password_env}` or
    /// `bearer: {token_env}`.
    pub auth: Option<Auth>,
    /// Extra request headers, by name.
    #[serde(default)]
    pub headers: BTreeMap<String, Scalar>,
    /// The expected checksum of the file (only with `url`): `sha256:<hex>` or `md5:<hex>`. A file
    /// that does not match fails the task.
    pub checksum: Option<String>,
    /// Unpack each downloaded file into `destination`: `zip` or `tar.gz`. The archive is kept.
    pub extract: Option<ArchiveFormat>,
    /// Only unpack the members whose path in the archive matches this glob (or one of these
    /// globs), e.g. `"*.txt"`; `*` also matches `/`. Default: every file. Needs `extract`.
    pub members: Option<OneOrMany>,
    /// End the task skipped (so downstream tasks skip) when no file changed since this task's
    /// last successful or skipped run: the server answers 304 to a conditional request, or sends
    /// the same ETag or Last-Modified, or the downloaded bytes have the same SHA-256.
    #[serde(default)]
    pub if_changed: bool,
    /// How long a download may receive nothing before the connection counts as dropped (and is
    /// resumed); default 60s.
    pub stall_timeout: Option<String>,
    /// How many more times to try within the attempt after a 5xx, 408, 429, a failed connection or
    /// a dropped one (resumed where it stopped); default 3.
    #[serde(default = "default_http_retries")]
    pub http_retries: u32,
    /// The wait before the first retry within the attempt; it doubles after each (default 1s). A
    /// server's `Retry-After` in seconds takes precedence. Both are capped at 1m.
    pub http_retry_delay: Option<String>,
}

/// A login form submitted before the downloads.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "HttpLogin")]
pub struct Login {
    /// The URL the login form posts to (its `action`), http:// or https://.
    pub url: String,
    /// The form's other fields, e.g. `{username: loans-team}`. Never put the password here.
    #[serde(default)]
    pub fields: BTreeMap<String, Scalar>,
    /// The name of the environment variable holding the password. The name must contain
    /// PASSWORD, SECRET, TOKEN or KEY, so that flowctl masks its value in logs.
    pub password_env: String,
    /// The form field the password goes in (default `password`).
    #[serde(default = "default_password_field")]
    pub password_field: String,
}

fn default_password_field() -> String {
    "password".to_string()
}

/// The `http.download` operator.
pub struct HttpDownload;

#[async_trait]
impl Operator for HttpDownload {
    const NAME: &'static str = "http.download";
    const DOCS: &'static str = "docs/operators/http.md";
    type Config = DownloadConfig;

    fn check(config: &DownloadConfig) -> Result<(), ConfigError> {
        match (&config.url, &config.urls) {
            (Some(_), Some(_)) => return Err(ConfigError::new("urls", "give either `url` or `urls`, not both")),
            (None, None) => return Err(ConfigError::new("", "give `url` (one file) or `urls` (a list of files)")),
            (Some(url), None) => check_url("url", url)?,
            (None, Some(urls)) => {
                if urls.is_empty() {
                    return Err(ConfigError::new("urls", "list at least one URL"));
                }
                for (index, url) in urls.iter().enumerate() {
                    check_url(&format!("urls[{index}]"), url)?;
                }
                if config.filename.is_some() {
                    return Err(ConfigError::new("filename", "`filename` names the file of a single `url`; with `urls`, each file is named by the server or its URL"));
                }
                if config.checksum.is_some() {
                    return Err(ConfigError::new("checksum", "`checksum` checks the file of a single `url`; download the files in tasks of their own to check each"));
                }
            }
        }
        if config.destination.trim().is_empty() {
            return Err(ConfigError::new("destination", "name a folder"));
        }
        if let Some(name) = &config.filename {
            if !flowctl_engine::template::is_template(name) && safe_file_name(name).is_none() {
                return Err(ConfigError::new("filename", format!("\"{name}\" is not a file name: no folders, not . or ..")));
            }
        }
        if let Some(checksum) = &config.checksum {
            if !flowctl_engine::template::is_template(checksum) {
                Checksum::parse(checksum).map_err(|e| ConfigError::new("checksum", e))?;
            }
        }
        if let Some(members) = &config.members {
            if config.extract.is_none() {
                return Err(ConfigError::new("members", "`members` filters what `extract` unpacks: set `extract: zip` or `extract: tar.gz`"));
            }
            if members.0.is_empty() {
                return Err(ConfigError::new("members", "list at least one glob (or leave `members` out to unpack every file)"));
            }
            MemberFilter::new(&members.0).map_err(|e| ConfigError::new("members", e))?;
        }
        if let Some(login) = &config.login {
            check_url("login.url", &login.url)?;
            check_secret_env("login.password_env", &login.password_env, "PASSWORD")?;
            if login.fields.contains_key(&login.password_field) {
                return Err(ConfigError::new(
                    format!("login.fields.{}", login.password_field),
                    "the password never goes in the DAG: flowctl fills this field from the variable login.password_env names",
                ));
            }
        }
        if let Some(auth) = &config.auth {
            auth.check("auth")?;
        }
        check_headers("headers", config.headers.keys())?;
        check_duration("stall_timeout", config.stall_timeout.as_deref())?;
        check_duration("http_retry_delay", config.http_retry_delay.as_deref())?;
        check_retries(config.http_retries)
    }

    async fn execute(&self, config: DownloadConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        run(config, ctx).await
    }
}

/// A checksum to verify: the algorithm and the hex digest, lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Checksum {
    Sha256(String),
    Md5(String),
}

impl Checksum {
    pub(crate) fn parse(text: &str) -> Result<Checksum, String> {
        let (algorithm, hex) = text.trim().split_once(':').ok_or_else(|| {
            format!("\"{text}\" does not name its algorithm: write sha256:<64 hex digits> or md5:<32 hex digits>")
        })?;
        let hex = hex.trim().to_ascii_lowercase();
        let (checksum, digits) = match algorithm.trim().to_ascii_lowercase().as_str() {
            "sha256" => (Checksum::Sha256(hex.clone()), 64),
            "md5" => (Checksum::Md5(hex.clone()), 32),
            other => return Err(format!("\"{other}\" is not a supported checksum: write sha256:<hex> or md5:<hex>")),
        };
        if hex.len() != digits || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!("\"{text}\" is not {algorithm}:<{digits} hex digits>"));
        }
        Ok(checksum)
    }

    fn describe(&self) -> String {
        match self {
            Checksum::Sha256(hex) => format!("sha256:{hex}"),
            Checksum::Md5(hex) => format!("md5:{hex}"),
        }
    }
}

/// What a file's download left for the next run to compare: one item of `outputs.sources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Source {
    /// The URL as the task gave it.
    pub url: String,
    /// Where the file was written (by this run, or the run that last downloaded it).
    pub file: Option<String>,
    /// Its size.
    pub bytes: u64,
    /// The server's ETag, when it sent one.
    pub etag: Option<String>,
    /// The server's Last-Modified, when it sent one.
    pub last_modified: Option<String>,
    /// The SHA-256 of the bytes, hex.
    pub sha256: Option<String>,
    /// Whether this run downloaded a new version.
    pub changed: bool,
}

/// The sources of an earlier run's outputs, or none when they are missing or not this shape.
fn previous_sources(outputs: Option<&Outputs>) -> Vec<Source> {
    outputs
        .and_then(|o| o.get("sources"))
        .and_then(|s| serde_json::from_value::<Vec<Source>>(s.clone()).ok())
        .unwrap_or_default()
}

/// Why an earlier download still holds, when the server's answer shows it without a body.
fn same_validators(previous: &Source, etag: Option<&str>, last_modified: Option<&str>) -> Option<String> {
    match (previous.etag.as_deref(), etag) {
        (Some(before), Some(now)) => return (before == now).then(|| format!("same ETag {now}")),
        (Some(_), None) | (None, Some(_)) => return None,
        (None, None) => {}
    }
    match (previous.last_modified.as_deref(), last_modified) {
        (Some(before), Some(now)) if before == now => Some(format!("same Last-Modified {now}")),
        _ => None,
    }
}

/// A name that stays inside the destination folder: no separators, not `.` or `..`.
fn safe_file_name(name: &str) -> Option<String> {
    let name = name.trim();
    let ok = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    ok.then(|| name.to_string())
}

/// `%20` and friends decoded; invalid sequences are kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The file name in a `Content-Disposition` header (`filename*=UTF-8''...` first, then
/// `filename=`), reduced to a safe name.
fn disposition_name(header: &str) -> Option<String> {
    let mut plain = None;
    for part in header.split(';') {
        let Some((key, value)) = part.trim().split_once('=') else { continue };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let encoded = value.split_once("''").map_or(value, |(_, rest)| rest);
                if let Some(name) = last_segment(&percent_decode(encoded.trim_matches('"'))) {
                    return Some(name);
                }
            }
            "filename" => plain = last_segment(value.trim_matches('"')),
            _ => {}
        }
    }
    plain
}

fn last_segment(path: &str) -> Option<String> {
    safe_file_name(path.rsplit(['/', '\\']).next().unwrap_or_default())
}

/// The name the URL's path ends with.
fn url_name(url: &Url) -> Option<String> {
    url.path_segments().and_then(|mut s| s.next_back().map(percent_decode)).and_then(|s| safe_file_name(&s))
}

/// `bytes 100-999/1000`: the first byte and the total, when known.
fn content_range(header: &str) -> Option<(u64, Option<u64>)> {
    let rest = header.trim().strip_prefix("bytes")?.trim();
    let (range, total) = rest.split_once('/')?;
    let (start, _) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// A short, stable name for a URL's `.part` file.
fn url_key(url: &Url) -> String {
    let digest = sha2::Sha256::digest(url.as_str().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the `.part` file's sidecar remembers, so a later try or attempt can resume it safely.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PartMeta {
    url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    name: Option<String>,
    total: Option<u64>,
}

impl PartMeta {
    /// The validator an `If-Range` carries: a strong ETag, else Last-Modified.
    fn validator(&self) -> Option<&str> {
        self.etag.as_deref().filter(|e| !e.starts_with("W/")).or(self.last_modified.as_deref())
    }
}

/// The running digests of a file being downloaded.
struct Hashes {
    sha256: sha2::Sha256,
    md5: Option<md5::Md5>,
}

impl Hashes {
    fn new(with_md5: bool) -> Hashes {
        Hashes { sha256: sha2::Sha256::new(), md5: with_md5.then(md5::Md5::new) }
    }

    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        if let Some(md5) = &mut self.md5 {
            md5.update(bytes);
        }
    }
}

/// The progress line of one file: at most one every [`PROGRESS_EVERY`], and a last one. It spans
/// the tries of an attempt, so the rate counts what this attempt received.
struct Progress {
    name: String,
    total: Option<u64>,
    started: Instant,
    received: u64,
    last: Instant,
}

impl Progress {
    fn new() -> Progress {
        let now = Instant::now();
        Progress { name: String::new(), total: None, started: now, received: 0, last: now }
    }

    fn rate(&self) -> String {
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        format!("{}/s", human_bytes((self.received as f64 / seconds) as u64))
    }

    fn line(&self, have: u64) -> String {
        match self.total {
            Some(total) if total > 0 => format!(
                "{}: {} of {} ({}%), {}",
                self.name,
                human_bytes(have),
                human_bytes(total),
                have * 100 / total,
                self.rate()
            ),
            _ => format!("{}: {}, {}", self.name, human_bytes(have), self.rate()),
        }
    }

    fn add(&mut self, log: &dyn LogSink, bytes: u64, have: u64) {
        self.received += bytes;
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            log.line(&self.line(have));
        }
    }
}

/// How one URL ended.
enum Fetched {
    /// Nothing new, and why.
    Unchanged(String),
    /// A complete file in its `.part`, verified.
    Done(Done),
}

struct Done {
    part: PathBuf,
    meta: PathBuf,
    name: String,
    bytes: u64,
    etag: Option<String>,
    last_modified: Option<String>,
    sha256: String,
}

/// Everything a download needs beside its URL.
struct Downloader<'a> {
    ctx: &'a TaskContext,
    client: reqwest::Client,
    headers: HeaderMap,
    auth: Option<&'a Auth>,
    /// The login URL and its password variable, for the hint of a 401.
    login: Option<(&'a str, &'a str)>,
    policy: RetryPolicy,
    destination: PathBuf,
}

async fn run(config: DownloadConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
    let listed: Vec<String> = match (&config.url, &config.urls) {
        (Some(url), _) => vec![url.clone()],
        (None, Some(urls)) => urls.clone(),
        (None, None) => return Err(TaskError::fatal("give `url` or `urls`")),
    };
    let urls: Vec<Url> = listed.iter().map(|u| parse_url(u)).collect::<Result<_, _>>().map_err(TaskError::fatal)?;
    let checksum = config.checksum.as_deref().map(Checksum::parse).transpose().map_err(|e| TaskError::fatal(format!("checksum: {e}")))?;
    let filter = MemberFilter::new(config.members.as_ref().map_or(&[][..], |m| &m.0)).map_err(|e| TaskError::fatal(format!("members: {e}")))?;
    let stall = super::duration("stall_timeout", config.stall_timeout.as_deref(), DEFAULT_STALL_TIMEOUT)?;
    let policy = RetryPolicy::new(config.http_retries, config.http_retry_delay.as_deref())?;
    let destination = ctx.work_dir.join(&config.destination);
    tokio::fs::create_dir_all(&destination)
        .await
        .map_err(|e| TaskError::fatal(format!("cannot create the destination folder {}: {e}", destination.display())))?;
    let destination = destination.canonicalize().unwrap_or(destination);

    let jar = Arc::new(reqwest::cookie::Jar::default());
    let client = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(stall)
        .cookie_provider(jar.clone())
        .build()
        .map_err(|e| TaskError::fatal(format!("cannot set up the HTTP client: {}", describe(&e))))?;

    let previous = if config.if_changed {
        let outputs = ctx.history.previous_outputs().await?;
        let sources = previous_sources(outputs.as_ref());
        if sources.is_empty() {
            ctx.log.line("if_changed: no earlier successful run to compare with; downloading");
        }
        sources
    } else {
        Vec::new()
    };

    if let Some(login) = &config.login {
        log_in(&ctx, &client, &jar, login, &policy).await?;
    }
    let downloader = Downloader {
        ctx: &ctx,
        client,
        headers: header_map(config.headers.iter())?,
        auth: config.auth.as_ref(),
        login: config.login.as_ref().map(|l| (l.url.as_str(), l.password_env.as_str())),
        policy,
        destination: destination.clone(),
    };

    let mut sources = Vec::new();
    let mut files: Vec<String> = Vec::new();
    let mut extracted: Vec<String> = Vec::new();
    let mut total_bytes = 0u64;
    let mut unchanged = Vec::new();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for (listed, url) in listed.iter().zip(&urls) {
        let before = previous.iter().find(|s| s.url == *listed);
        match downloader.fetch(url, before, checksum.as_ref(), config.filename.as_deref()).await? {
            Fetched::Unchanged(why) => {
                ctx.log.line(&format!("{url}: unchanged ({why})"));
                unchanged.push(format!("{url} ({why})"));
                let mut source = before.cloned().unwrap_or_default();
                source.url = listed.clone();
                source.changed = false;
                sources.push(source);
            }
            Fetched::Done(done) => {
                if let Some(other) = names.insert(done.name.clone(), url.to_string()) {
                    let _ = tokio::fs::remove_file(&done.part).await;
                    return Err(TaskError::fatal(format!(
                        "{other} and {url} both download to {} in {}: download them in tasks with different destinations",
                        done.name,
                        destination.display()
                    )));
                }
                let path = destination.join(&done.name);
                tokio::fs::rename(&done.part, &path)
                    .await
                    .map_err(|e| TaskError::fatal(format!("cannot move the download to {}: {e}", path.display())))?;
                let _ = tokio::fs::remove_file(&done.meta).await;
                total_bytes += done.bytes;
                if let Some(format) = config.extract {
                    let (archive, into, kept) = (path.clone(), destination.clone(), filter.clone());
                    let written = tokio::task::spawn_blocking(move || extract(&archive, format, &kept, &into))
                        .await
                        .map_err(|e| TaskError::fatal(format!("extracting {} stopped: {e}", done.name)))?
                        .map_err(TaskError::fatal)?;
                    ctx.log.line(&format!("extracted {} file(s) from {}", written.len(), done.name));
                    extracted.extend(written.iter().map(|p| p.display().to_string()));
                }
                let file = path.display().to_string();
                files.push(file.clone());
                sources.push(Source {
                    url: listed.clone(),
                    file: Some(file),
                    bytes: done.bytes,
                    etag: done.etag,
                    last_modified: done.last_modified,
                    sha256: Some(done.sha256),
                    changed: true,
                });
            }
        }
    }

    let changed = sources.iter().any(|s| s.changed);
    let mut outputs = Outputs::new();
    outputs.insert("files".into(), files.into());
    if config.extract.is_some() {
        outputs.insert("extracted".into(), extracted.into());
    }
    outputs.insert("bytes".into(), total_bytes.into());
    outputs.insert("changed".into(), changed.into());
    outputs.insert("destination".into(), destination.display().to_string().into());
    outputs.insert("sources".into(), serde_json::to_value(&sources).unwrap_or(Value::Null));
    if config.if_changed && !changed {
        let reason = format!("nothing changed since the last run: {}", unchanged.join("; "));
        return Ok(Outcome::Skipped { reason, outputs });
    }
    Ok(Outcome::Success { outputs })
}

/// Submits the login form; the cookie jar keeps the session for the downloads.
async fn log_in(
    ctx: &TaskContext,
    client: &reqwest::Client,
    jar: &reqwest::cookie::Jar,
    login: &Login,
    policy: &RetryPolicy,
) -> Result<(), TaskError> {
    use reqwest::cookie::CookieStore;
    let url = parse_url(&login.url).map_err(|e| TaskError::fatal(format!("login.url: {e}")))?;
    let password = secret_from_env(&login.password_env, "login.password_env")?;
    let mut form: Vec<(&str, &str)> = login.fields.iter().map(|(k, v)| (k.as_str(), v.0.as_str())).collect();
    form.push((login.password_field.as_str(), password.as_str()));
    let what = format!("login at {url}");
    ctx.log.line(&format!("logging in at {url}"));
    let mut tries = 0;
    loop {
        tries += 1;
        match cancellable(ctx, client.post(url.clone()).form(&form).send()).await? {
            Ok(response) => {
                let status = response.status();
                if status.is_success() || status.is_redirection() {
                    break;
                }
                if is_retryable_status(status) && tries <= policy.retries {
                    wait_to_retry(ctx, policy, tries + 1, &format!("{what}: {}", status_text(status)), retry_after(response.headers())).await?;
                    continue;
                }
                let hint = match status.as_u16() {
                    401 | 403 => format!("check the credentials: login.fields and the password in {}", login.password_env),
                    404 | 405 => "check login.url: it must be the URL the login form posts to".to_string(),
                    _ => status_hint(status, None, None),
                };
                let message = format!("{what} answered {}: {hint}", status_text(status));
                return Err(if is_retryable_status(status) { TaskError::retryable(message) } else { TaskError::fatal(message) });
            }
            Err(e) if is_retryable_error(&e) && tries <= policy.retries => {
                wait_to_retry(ctx, policy, tries + 1, &format!("{what}: {}", describe(&e)), None).await?;
            }
            Err(e) => return Err(TaskError::retryable(format!("{what} failed after {tries} tries: {}", describe(&e)))),
        }
    }
    if jar.cookies(&url).is_none() {
        ctx.log.line("the login answer set no cookie: the downloads go on without a session");
    } else {
        ctx.log.line("logged in; the session cookie is kept for the downloads");
    }
    Ok(())
}

impl Downloader<'_> {
    /// Downloads one URL to its `.part` file, resuming and retrying within the attempt.
    async fn fetch(&self, url: &Url, previous: Option<&Source>, checksum: Option<&Checksum>, filename: Option<&str>) -> Result<Fetched, TaskError> {
        let ctx = self.ctx;
        let key = url_key(url);
        let part = self.destination.join(format!(".{key}.part"));
        let meta_path = self.destination.join(format!(".{key}.part.json"));
        let with_md5 = matches!(checksum, Some(Checksum::Md5(_)));

        // A `.part` an earlier attempt left is resumed when its sidecar says which version it is.
        let mut meta = PartMeta { url: url.to_string(), ..PartMeta::default() };
        let mut have = 0u64;
        let mut hashes = Hashes::new(with_md5);
        if let Some(earlier) = read_meta(&meta_path).filter(|m| m.url == url.as_str() && m.validator().is_some()) {
            if let Ok(len) = tokio::fs::metadata(&part).await.map(|m| m.len()) {
                if len > 0 {
                    hash_file(&part, &mut hashes).await.map_err(|e| TaskError::retryable(format!("cannot read {}: {e}", part.display())))?;
                    meta = earlier;
                    have = len;
                    ctx.log.line(&format!("{url}: resuming the {} an earlier attempt downloaded", human_bytes(have)));
                }
            }
        }
        if have == 0 {
            let _ = tokio::fs::remove_file(&part).await;
            let _ = tokio::fs::remove_file(&meta_path).await;
        }
        let conditional = previous.filter(|p| p.etag.is_some() || p.last_modified.is_some() || p.sha256.is_some());

        let mut progress = Progress::new();
        let mut tries = 0u32;
        loop {
            tries += 1;
            let resuming = have > 0 && meta.validator().is_some();
            if have > 0 && !resuming {
                ctx.log.line(&format!("{url}: the server gave no ETag or Last-Modified to resume safely: starting over"));
                have = 0;
                hashes = Hashes::new(with_md5);
            }
            let mut request = self.client.get(url.clone()).headers(self.headers.clone());
            if let Some(auth) = self.auth {
                request = auth.apply(request)?;
            }
            if resuming {
                request = request.header(RANGE, format!("bytes={have}-"));
                if let Some(validator) = meta.validator() {
                    request = request.header(IF_RANGE, validator);
                }
            } else if let Some(p) = conditional {
                if let Some(etag) = &p.etag {
                    request = request.header(IF_NONE_MATCH, etag.as_str());
                } else if let Some(modified) = &p.last_modified {
                    request = request.header(IF_MODIFIED_SINCE, modified.as_str());
                }
            }
            if tries == 1 && !resuming {
                ctx.log.line(&format!("GET {url}"));
            }
            let response = match cancellable(ctx, request.send()).await? {
                Ok(response) => response,
                Err(e) if is_retryable_error(&e) && tries <= self.policy.retries => {
                    wait_to_retry(ctx, &self.policy, tries + 1, &format!("GET {url}: {}", describe(&e)), None).await?;
                    continue;
                }
                Err(e) => {
                    let kept = if have > 0 { format!("; the {} downloaded so far are kept for the next attempt to resume", human_bytes(have)) } else { String::new() };
                    let message = format!("GET {url} failed after {tries} tries: {}{kept}", describe(&e));
                    return Err(if is_retryable_error(&e) { TaskError::retryable(message) } else { TaskError::fatal(message) });
                }
            };
            let status = response.status();
            let headers = response.headers().clone();
            let text = |name| headers.get(name).and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok()).map(str::to_string);
            let append = match status {
                StatusCode::NOT_MODIFIED if !resuming && conditional.is_some() => {
                    return Ok(Fetched::Unchanged(status_text(status)));
                }
                StatusCode::PARTIAL_CONTENT if resuming => {
                    match text(CONTENT_RANGE).as_deref().and_then(content_range) {
                        Some((start, total)) if start == have => {
                            meta.total = total.or(meta.total);
                            true
                        }
                        _ => {
                            ctx.log.line(&format!("{url}: the server sent another range than asked (from byte {have}): starting over"));
                            have = 0;
                            hashes = Hashes::new(with_md5);
                            meta.etag = None;
                            meta.last_modified = None;
                            continue;
                        }
                    }
                }
                StatusCode::RANGE_NOT_SATISFIABLE if resuming => {
                    ctx.log.line(&format!("{url}: the server cannot send the rest from byte {have}: starting over"));
                    have = 0;
                    hashes = Hashes::new(with_md5);
                    meta.etag = None;
                    meta.last_modified = None;
                    continue;
                }
                s if s.is_success() && s != StatusCode::PARTIAL_CONTENT => {
                    if resuming {
                        ctx.log.line(&format!(
                            "{url}: the server sent the whole file instead of the rest from byte {have} (it changed, or it ignores Range): starting over"
                        ));
                        have = 0;
                        hashes = Hashes::new(with_md5);
                    }
                    let etag = text(ETAG);
                    let last_modified = text(LAST_MODIFIED);
                    if let Some(why) = conditional.and_then(|p| same_validators(p, etag.as_deref(), last_modified.as_deref())) {
                        return Ok(Fetched::Unchanged(why));
                    }
                    meta = PartMeta {
                        url: url.to_string(),
                        etag,
                        last_modified,
                        name: text(CONTENT_DISPOSITION).as_deref().and_then(disposition_name),
                        total: text(CONTENT_LENGTH).and_then(|l| l.parse().ok()),
                    };
                    write_meta(&meta_path, &meta).await?;
                    false
                }
                s if is_retryable_status(s) && tries <= self.policy.retries => {
                    wait_to_retry(ctx, &self.policy, tries + 1, &format!("GET {url}: {}", status_text(s)), retry_after(&headers)).await?;
                    continue;
                }
                s => {
                    let after = if tries > 1 { format!(" after {tries} tries") } else { String::new() };
                    let message = format!("GET {url} answered {}{after}: {}", status_text(s), status_hint(s, self.auth, self.login));
                    return Err(if is_retryable_status(s) { TaskError::retryable(message) } else { TaskError::fatal(message) });
                }
            };

            let name = filename.map(str::to_string).or_else(|| meta.name.clone()).or_else(|| url_name(url)).ok_or_else(|| {
                TaskError::fatal(format!("cannot name the file of {url}: its path has no file name and the server sent no Content-Disposition; set `filename`"))
            })?;
            let mut file = open_part(&part, append).await?;
            if append {
                ctx.log.line(&format!("{name}: resuming from byte {have}"));
            }
            progress.name.clone_from(&name);
            progress.total = meta.total;
            if progress.received == 0 {
                // The rate counts from the first answer with a body, not from waits for the server.
                progress.started = Instant::now();
                progress.last = progress.started;
            }
            let mut body = response.bytes_stream();
            let broke: Option<String> = loop {
                match cancellable(ctx, body.next()).await? {
                    None => break None,
                    Some(Ok(chunk)) => {
                        file.write_all(&chunk).await.map_err(|e| TaskError::retryable(format!("cannot write {}: {e}", part.display())))?;
                        hashes.update(&chunk);
                        have += chunk.len() as u64;
                        progress.add(ctx.log.as_ref(), chunk.len() as u64, have);
                    }
                    Some(Err(e)) => break Some(describe(&e)),
                }
            };
            file.flush().await.map_err(|e| TaskError::retryable(format!("cannot write {}: {e}", part.display())))?;
            drop(file);
            let broke = broke.or_else(|| match meta.total {
                Some(total) if have < total => Some(format!("the connection closed at byte {have} of {total}")),
                _ => None,
            });
            if let Some(why) = broke {
                let got = match meta.total {
                    Some(total) => format!("{} of {}", human_bytes(have), human_bytes(total)),
                    None => human_bytes(have),
                };
                if tries <= self.policy.retries {
                    wait_to_retry(ctx, &self.policy, tries + 1, &format!("{name}: the connection dropped after {got} ({why}); resuming"), None).await?;
                    continue;
                }
                return Err(TaskError::retryable(format!(
                    "GET {url}: the connection dropped after {got}, {tries} tries: {why}; the part downloaded is kept and the next attempt resumes it"
                )));
            }
            let elapsed = progress.started.elapsed();
            let sha256 = hex(&hashes.sha256.clone().finalize());
            let resumed = if progress.received < have { format!(", {} of it by an earlier attempt", human_bytes(have - progress.received)) } else { String::new() };
            ctx.log.line(&format!(
                "downloaded {name}: {}{resumed} in {} ({}), sha256 {sha256}",
                human_bytes(have),
                humantime::format_duration(round_duration(elapsed)),
                progress.rate()
            ));
            if let Some(expected) = checksum {
                let actual = match expected {
                    Checksum::Sha256(_) => Checksum::Sha256(sha256.clone()),
                    Checksum::Md5(_) => Checksum::Md5(hashes.md5.take().map(|m| hex(&m.finalize())).unwrap_or_default()),
                };
                if &actual != expected {
                    let _ = tokio::fs::remove_file(&part).await;
                    let _ = tokio::fs::remove_file(&meta_path).await;
                    return Err(TaskError::fatal(format!(
                        "checksum mismatch for {url}: expected {}, got {}: check `checksum`, or whether the server now publishes another file",
                        expected.describe(),
                        actual.describe()
                    )));
                }
                ctx.log.line(&format!("checksum {} verified", expected.describe()));
            }
            if conditional.is_some_and(|p| p.sha256.as_deref() == Some(sha256.as_str())) {
                let _ = tokio::fs::remove_file(&part).await;
                let _ = tokio::fs::remove_file(&meta_path).await;
                return Ok(Fetched::Unchanged(format!("same content, sha256 {sha256}")));
            }
            return Ok(Fetched::Done(Done {
                part,
                meta: meta_path,
                name,
                bytes: have,
                etag: meta.etag,
                last_modified: meta.last_modified,
                sha256,
            }));
        }
    }
}

fn read_meta(path: &Path) -> Option<PartMeta> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

async fn write_meta(path: &Path, meta: &PartMeta) -> Result<(), TaskError> {
    let text = serde_json::to_string(meta).unwrap_or_default();
    tokio::fs::write(path, text).await.map_err(|e| TaskError::fatal(format!("cannot write {}: {e}", path.display())))
}

async fn open_part(part: &Path, append: bool) -> Result<tokio::fs::File, TaskError> {
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true).write(true);
    if append {
        options.append(true);
    } else {
        options.truncate(true);
    }
    options.open(part).await.map_err(|e| TaskError::fatal(format!("cannot write {}: {e}", part.display())))
}

async fn hash_file(path: &Path, hashes: &mut Hashes) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        hashes.update(&buffer[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_engine::operator::Registry;
    use serde_json::json;

    fn validate(with: Value) -> Result<(), ConfigError> {
        let mut registry = Registry::new();
        registry.register(HttpDownload);
        registry.get("http.download").unwrap().validate(&with)
    }

    #[track_caller]
    fn fails_at(with: Value, path: &str, message: &str) {
        let err = validate(with).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), (path, message));
    }

    #[test]
    fn compile_checks_name_the_field() {
        assert!(validate(json!({
            "url": "https://loans.example.com/files/{{ ds }}.zip", "destination": "loans",
            "login": {"url": "https://loans.example.com/login", "fields": {"user": "team"}, "password_env": "LOANS_PASSWORD"},
            "extract": "zip", "members": "*.txt", "if_changed": true,
        }))
        .is_ok());
        fails_at(json!({"url": "https://x/a", "urls": ["https://x/b"], "destination": "d"}), "urls", "give either `url` or `urls`, not both");
        fails_at(json!({"destination": "d"}), "", "give `url` (one file) or `urls` (a list of files)");
        fails_at(
            json!({"urls": ["https://x/a", "x/b"], "destination": "d"}),
            "urls[1]",
            "\"x/b\" is not a valid URL: relative URL without a base",
        );
        fails_at(json!({"url": "https://x/a", "destination": "d", "members": "*.txt"}), "members", "`members` filters what `extract` unpacks: set `extract: zip` or `extract: tar.gz`");
        fails_at(json!({"url": "https://x/a", "destination": "d", "checksum": "sha1:abc"}), "checksum", "\"sha1\" is not a supported checksum: write sha256:<hex> or md5:<hex>");
        fails_at(json!({"url": "https://x/a", "destination": "d", "checksum": "md5:abc"}), "checksum", "\"md5:abc\" is not md5:<32 hex digits>");
        fails_at(
            json!({"url": "https://x/a", "destination": "d", "login": {"url": "https://x/login", "password_env": "LOANS_PASSWORD", "fields": {"password": "hunter2"}}}),
            "login.fields.password",
            "the password never goes in the DAG: flowctl fills this field from the variable login.password_env names",
        );
        let err = validate(json!({"url": "https://x/a", "destination": "d", "login": {"url": "https://x/login", "password_env": "LOANS_PW"}})).unwrap_err();
        assert_eq!(err.path, "login.password_env");
        let err = validate(json!({"url": "https://x/a", "destination": "d", "extract": "rar"})).unwrap_err();
        assert_eq!(err.path, "extract");
        assert!(err.message.contains("expected `zip` or `tar.gz`"), "{}", err.message);
        fails_at(json!({"urls": ["https://x/a"], "destination": "d", "checksum": format!("sha256:{}", "0".repeat(64))}), "checksum", "`checksum` checks the file of a single `url`; download the files in tasks of their own to check each");
        fails_at(json!({"url": "https://x/a", "destination": "d", "filename": "../a"}), "filename", "\"../a\" is not a file name: no folders, not . or ..");
    }

    #[test]
    fn checksums_parse() {
        let sha = format!("SHA256:{}", "AB".repeat(32));
        assert_eq!(Checksum::parse(&sha).unwrap(), Checksum::Sha256("ab".repeat(32)));
        assert_eq!(
            Checksum::parse("abc").unwrap_err(),
            "\"abc\" does not name its algorithm: write sha256:<64 hex digits> or md5:<32 hex digits>"
        );
    }

    #[test]
    fn file_names_come_from_content_disposition_or_the_url() {
        assert_eq!(disposition_name("attachment; filename=\"loans Q1.zip\"").as_deref(), Some("loans Q1.zip"));
        assert_eq!(disposition_name("attachment; filename=x.zip; filename*=UTF-8''pr%C3%AAts.zip").as_deref(), Some("prêts.zip"));
        assert_eq!(disposition_name("attachment; filename=\"../../etc/passwd\"").as_deref(), Some("passwd"));
        assert_eq!(disposition_name("inline"), None);
        assert_eq!(url_name(&Url::parse("https://x/files/loans%202024.zip?session=1").unwrap()).as_deref(), Some("loans 2024.zip"));
        assert_eq!(url_name(&Url::parse("https://x/files/").unwrap()), None);
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range("bytes 100-999/1000"), Some((100, Some(1000))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("items 1-2/3"), None);
    }

    #[test]
    fn validators_decide_whether_a_file_changed() {
        let before = Source { etag: Some("\"v1\"".into()), last_modified: Some("Mon, 01 Jan 2024 00:00:00 GMT".into()), ..Source::default() };
        assert_eq!(same_validators(&before, Some("\"v1\""), None).as_deref(), Some("same ETag \"v1\""));
        assert_eq!(same_validators(&before, Some("\"v2\""), Some("Mon, 01 Jan 2024 00:00:00 GMT")), None);
        let dated = Source { last_modified: Some("Mon, 01 Jan 2024 00:00:00 GMT".into()), ..Source::default() };
        assert!(same_validators(&dated, None, Some("Mon, 01 Jan 2024 00:00:00 GMT")).is_some());
        assert_eq!(same_validators(&dated, None, Some("Tue, 02 Jan 2024 00:00:00 GMT")), None);
        assert_eq!(same_validators(&Source::default(), None, None), None);
        let outputs: Outputs = json!({"sources": [{"url": "https://x/a", "file": "/d/a", "bytes": 3, "etag": "\"v1\"", "last_modified": null, "sha256": "ab", "changed": true}]})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(previous_sources(Some(&outputs))[0].etag.as_deref(), Some("\"v1\""));
        assert!(previous_sources(None).is_empty());
    }

    #[test]
    fn progress_lines_show_the_share_and_wait_between_lines() {
        let mut progress = Progress::new();
        progress.name = "loans.zip".into();
        progress.total = Some(4 * 1024 * 1024);
        assert!(progress.line(1024 * 1024).starts_with("loans.zip: 1.0 MiB of 4.0 MiB (25%), "), "{}", progress.line(1024 * 1024));
        progress.total = None;
        assert!(progress.line(2048).starts_with("loans.zip: 2.0 KiB, "));
        let log = flowctl_engine::operator::MemoryLog::default();
        progress.add(&log, 10, 10);
        assert!(log.lines().is_empty(), "a line before {PROGRESS_EVERY:?} passed");
        progress.last -= PROGRESS_EVERY;
        progress.add(&log, 10, 20);
        assert_eq!(log.lines().len(), 1);
        assert!(log.lines()[0].starts_with("loans.zip: 20 B, "), "{:?}", log.lines());
    }

    #[test]
    fn weak_etags_do_not_resume() {
        let meta = PartMeta { etag: Some("W/\"v1\"".into()), last_modified: Some("Mon, 01 Jan 2024 00:00:00 GMT".into()), ..PartMeta::default() };
        assert_eq!(meta.validator(), Some("Mon, 01 Jan 2024 00:00:00 GMT"));
        let strong = PartMeta { etag: Some("\"v1\"".into()), ..PartMeta::default() };
        assert_eq!(strong.validator(), Some("\"v1\""));
    }
}
