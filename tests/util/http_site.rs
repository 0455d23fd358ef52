//! A real HTTP server on 127.0.0.1 for the HTTP operators' end-to-end tests, shaped like the data
//! provider our loan pipeline scrapes: a login form that sets a session cookie, files that need
//! that cookie, ETag/If-None-Match and Range/If-Range support, and switches to answer the next
//! requests with 503, to drop a connection in the middle of a body, or to send no validators.
//! It runs on a tokio runtime of its own (axum), so the tests stay synchronous and run the real
//! `flowctl` binary against it. Every request is recorded for the tests to inspect.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use sha2::Digest;

/// The `Last-Modified` every file is served with.
pub const LAST_MODIFIED: &str = "Fri, 01 Mar 2024 00:00:00 GMT";

/// One request the site received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `POST`...
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The status the site answered with.
    pub status: u16,
    /// The `Range` header.
    pub range: Option<String>,
    /// The `If-Range` header.
    pub if_range: Option<String>,
    /// The `If-None-Match` header.
    pub if_none_match: Option<String>,
    /// The `If-Modified-Since` header.
    pub if_modified_since: Option<String>,
    /// Whether a valid session cookie came with it.
    pub session: bool,
    /// The `Authorization` header.
    pub authorization: Option<String>,
}

struct SiteFile {
    body: Vec<u8>,
    etag: String,
    protected: bool,
}

struct SiteState {
    username: String,
    password: String,
    api_token: String,
    files: Mutex<BTreeMap<String, SiteFile>>,
    sessions: Mutex<HashSet<String>>,
    requests: Mutex<Vec<Seen>>,
    fail_next: AtomicUsize,
    drop_next: AtomicBool,
    validators: AtomicBool,
    session_counter: AtomicUsize,
}

impl SiteState {
    fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, status: StatusCode) {
        let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let seen = Seen {
            method: method.to_string(),
            path: uri.path_and_query().map_or_else(|| uri.path().to_string(), |p| p.to_string()),
            status: status.as_u16(),
            range: text(header::RANGE),
            if_range: text(header::IF_RANGE),
            if_none_match: text(header::IF_NONE_MATCH),
            if_modified_since: text(header::IF_MODIFIED_SINCE),
            session: self.has_session(headers),
            authorization: text(header::AUTHORIZATION),
        };
        self.requests.lock().unwrap_or_else(|e| e.into_inner()).push(seen);
    }

    fn has_session(&self, headers: &HeaderMap) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix("session="))
            .any(|token| sessions.contains(token))
    }

    /// Takes one of the 503s asked for, if any are left.
    fn take_failure(&self) -> bool {
        self.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }
}

/// The running site; stopped when dropped.
pub struct HttpSite {
    /// Where it listens.
    pub address: SocketAddr,
    state: Arc<SiteState>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl HttpSite {
    /// Starts the site on a free port of 127.0.0.1. `username` and `password` open the login form;
    /// `api_token` is the bearer token `/api/loans` wants.
    pub fn start(username: &str, password: &str, api_token: &str) -> HttpSite {
        let state = Arc::new(SiteState {
            username: username.to_string(),
            password: password.to_string(),
            api_token: api_token.to_string(),
            files: Mutex::new(BTreeMap::new()),
            sessions: Mutex::new(HashSet::new()),
            requests: Mutex::new(Vec::new()),
            fail_next: AtomicUsize::new(0),
            drop_next: AtomicBool::new(false),
            validators: AtomicBool::new(true),
            session_counter: AtomicUsize::new(0),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("test site runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the test site");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let address = listener.local_addr().expect("test site address");
        let app = Router::new()
            .route("/login", post(login))
            .route("/welcome", get(welcome))
            .route("/files/{*name}", get(protected_file))
            .route("/public/{*name}", get(public_file))
            .route("/api/loans", get(api_loans))
            .route("/api/echo", post(api_echo).put(api_echo))
            .fallback(not_found)
            .with_state(state.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let _ = axum::serve(listener, app).await;
        });
        HttpSite { address, state, runtime: Some(runtime) }
    }

    /// The URL of a path on the site: `url("/files/loans.zip")`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Serves `body` at `/files/<name>` (behind the login) or, when `protected` is false, at
    /// `/public/<name>`. Its ETag is derived from the bytes, so new bytes get a new ETag.
    pub fn put_file(&self, name: &str, body: Vec<u8>, protected: bool) {
        let etag = format!("\"{}\"", hex(&sha2::Sha256::digest(&body)[..8]));
        self.state.files.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), SiteFile { body, etag, protected });
    }

    /// Answers the next `n` requests for files or the API with 503.
    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Drops the connection halfway through the next file body it sends.
    pub fn drop_next_body(&self) {
        self.state.drop_next.store(true, Ordering::SeqCst);
    }

    /// Sends no ETag or Last-Modified (and ignores conditional and range headers) from now on.
    pub fn without_validators(&self) {
        self.state.validators.store(false, Ordering::SeqCst);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.requests.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The requests for one path.
    pub fn requests_for(&self, path: &str) -> Vec<Seen> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }
}

impl Drop for HttpSite {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn login(State(state): State<Arc<SiteState>>, method: Method, uri: Uri, headers: HeaderMap, Form(form): Form<HashMap<String, String>>) -> Response {
    let ok = form.get("username") == Some(&state.username) && form.get("password") == Some(&state.password);
    let response = if ok {
        let token = format!("s{}-{}", state.session_counter.fetch_add(1, Ordering::SeqCst), std::process::id());
        state.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(token.clone());
        // Like most sites: the cookie comes with a redirect to the welcome page.
        (StatusCode::SEE_OTHER, [(header::SET_COOKIE, format!("session={token}; Path=/; HttpOnly")), (header::LOCATION, "/welcome".to_string())])
            .into_response()
    } else {
        (StatusCode::UNAUTHORIZED, "wrong user name or password").into_response()
    };
    state.record(&method, &uri, &headers, response.status());
    response
}

async fn welcome(State(state): State<Arc<SiteState>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    state.record(&method, &uri, &headers, StatusCode::OK);
    "welcome".into_response()
}

async fn protected_file(state: State<Arc<SiteState>>, Path(name): Path<String>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    serve_file(state, name, true, method, uri, headers)
}

async fn public_file(state: State<Arc<SiteState>>, Path(name): Path<String>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    serve_file(state, name, false, method, uri, headers)
}

fn serve_file(State(state): State<Arc<SiteState>>, name: String, protected: bool, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let response = file_response(&state, &name, protected, &headers);
    state.record(&method, &uri, &headers, response.status());
    response
}

fn file_response(state: &SiteState, name: &str, protected: bool, headers: &HeaderMap) -> Response {
    if state.take_failure() {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy, try later").into_response();
    }
    if protected && !state.has_session(headers) {
        return (StatusCode::UNAUTHORIZED, "log in first").into_response();
    }
    let files = state.files.lock().unwrap_or_else(|e| e.into_inner());
    let Some(file) = files.get(name).filter(|f| f.protected == protected) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let validators = state.validators.load(Ordering::SeqCst);
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    if validators && text(header::IF_NONE_MATCH).is_some_and(|tags| tags.split(',').any(|t| t.trim() == file.etag)) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, file.etag.clone())]).into_response();
    }
    let total = file.body.len();
    // A range is honoured when its If-Range (if any) names the current version.
    let start = text(header::RANGE)
        .filter(|_| validators)
        .filter(|_| text(header::IF_RANGE).is_none_or(|v| v == file.etag || v == LAST_MODIFIED))
        .and_then(|r| r.strip_prefix("bytes=").and_then(|r| r.strip_suffix('-')).and_then(|n| n.parse::<usize>().ok()));
    let (status, from) = match start {
        Some(from) if from >= total => {
            return (StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{total}"))]).into_response();
        }
        Some(from) => (StatusCode::PARTIAL_CONTENT, from),
        None => (StatusCode::OK, 0),
    };
    let rest = file.body[from..].to_vec();
    let length = rest.len();
    let body = if state.drop_next.swap(false, Ordering::SeqCst) {
        // Half the body in small chunks, then an error: the server closes the connection with
        // the body unfinished, as a dropped connection does.
        let half = rest[..length / 2].to_vec();
        let mut chunks: Vec<Result<Bytes, std::io::Error>> = half.chunks(16 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        chunks.push(Err(std::io::Error::other("connection dropped by the test site")));
        Body::from_stream(futures_util::stream::iter(chunks))
    } else {
        Body::from(rest)
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/zip")
        .header(header::CONTENT_LENGTH, length.to_string())
        .header(header::ACCEPT_RANGES, "bytes");
    if validators {
        response = response.header(header::ETAG, file.etag.clone()).header(header::LAST_MODIFIED, LAST_MODIFIED);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(header::CONTENT_RANGE, format!("bytes {from}-{}/{total}", total - 1));
    }
    response.body(body).expect("file response")
}

async fn api_loans(State(state): State<Arc<SiteState>>, method: Method, uri: Uri, headers: HeaderMap, Query(query): Query<HashMap<String, String>>) -> Response {
    let response = if state.take_failure() {
        (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response()
    } else if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {}", state.api_token)) {
        (StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({"error": "bad token"}))).into_response()
    } else {
        let quarter = query.get("quarter").cloned().unwrap_or_default();
        let body = serde_json::json!({
            "quarter": quarter,
            "count": 2,
            "items": [{"id": "L-1001", "balance": 125000.5}, {"id": "L-1002", "balance": 98000}],
        });
        (StatusCode::OK, [(header::ETAG, "\"loans-v7\"")], axum::Json(body)).into_response()
    };
    state.record(&method, &uri, &headers, response.status());
    response
}

async fn api_echo(State(state): State<Arc<SiteState>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let response = (
        StatusCode::CREATED,
        axum::Json(serde_json::json!({
            "method": method.to_string(),
            "query": uri.query().unwrap_or_default(),
            "content_type": content_type,
            "body": String::from_utf8_lossy(&body),
        })),
    )
        .into_response();
    state.record(&method, &uri, &headers, response.status());
    response
}

async fn not_found(State(state): State<Arc<SiteState>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    state.record(&method, &uri, &headers, StatusCode::NOT_FOUND);
    (StatusCode::NOT_FOUND, "no such page").into_response()
}

/// Loan-style text: a header and `rows` pipe-delimited lines, seeded by `quarter` so files differ.
pub fn loan_text(quarter: &str, rows: usize) -> String {
    let mut text = String::from("loan_id|quarter|balance|rate|state\n");
    for i in 0..rows {
        let balance = 50_000 + (i * 7919) % 400_000;
        let rate = 3.0 + ((i * 37) % 400) as f64 / 100.0;
        text.push_str(&format!("{quarter}-{i:07}|{quarter}|{balance}.00|{rate:.2}|{}\n", ["CA", "TX", "NY", "FL"][i % 4]));
    }
    text
}

/// A zip archive of `members` (name and bytes), built now; `stored` leaves them uncompressed.
pub fn zip_of(members: &[(&str, &[u8])], stored: bool) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = if stored { zip::CompressionMethod::Stored } else { zip::CompressionMethod::Deflated };
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in members {
        zip.start_file(*name, options).expect("zip member");
        zip.write_all(bytes).expect("zip write");
    }
    zip.finish().expect("zip finish").into_inner()
}

/// The SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&sha2::Sha256::digest(bytes))
}
