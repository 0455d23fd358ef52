//! The HTTP server (axum on hyper): the accept loop with its limits, the bearer token (compared in
//! constant time, never logged or echoed), and the open endpoints: `/health`, `/api/v1/health`,
//! `/api/v1/version` and `/api/v1/openapi.json`. The resources under `/api/v1` are `rest.rs`'s.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request as HttpRequest, State as Extract};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::State;

/// How long a connection may take to send a request's headers, and how long it may stay idle
/// between requests, before it is closed: a client that opens connections and sends nothing
/// cannot hold them.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once. Past it, a new connection gets `503` at once and is
/// closed, so a flood of connections cannot use up the process's files or starve `/health`.
pub const MAX_CONNECTIONS: usize = 512;

#[derive(Clone)]
pub(super) struct Api {
    state: Arc<State>,
    token: Arc<String>,
}

pub(super) async fn serve(state: Arc<State>, listener: tokio::net::TcpListener, token: String, stop: CancellationToken) {
    let api = Api { state, token: Arc::new(token) };
    let v1 = super::rest::routes()
        .route_layer(middleware::from_fn_with_state(api.clone(), authorize))
        .with_state(api.state.clone());
    let app = Router::new()
        .route("/health", get(health))
        .route("/api/v1/health", get(health))
        .route("/api/v1/version", get(version))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .with_state(api.clone())
        .nest("/api/v1", v1)
        .layer(axum::extract::DefaultBodyLimit::max(super::rest::MAX_BODY))
        .layer(middleware::from_fn(super::rest::one_error_shape))
        .layer(middleware::from_fn_with_state(api, say_stopping))
        .layer(middleware::from_fn(server_timing));
    accept(listener, app, stop).await;
}

/// The accept loop: each connection served by hyper with [`HEADER_READ_TIMEOUT`], at most
/// [`MAX_CONNECTIONS`] at once; on `stop`, no new connection is taken and open ones finish the
/// request they are in.
async fn accept(listener: tokio::net::TcpListener, app: Router, stop: CancellationToken) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of files or memory for a moment: say so once per failure and go on,
                    // after a pause so a persistent failure does not spin.
                    tracing::error!(error = %e, "cannot accept an API connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            connections.spawn(refuse(stream));
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        connections.spawn(async move {
            let _slot = slot;
            let io = hyper_util::rt::TokioIo::new(stream);
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(io, service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                if !e.is_timeout() && !e.is_incomplete_message() {
                    tracing::debug!(%peer, error = %e, "API connection ended with an error");
                }
            }
        });
        // Reap the connections that ended, so the set does not grow with every one served.
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

/// Answers a connection past [`MAX_CONNECTIONS`] with `503` and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let body = format!(
        "{{\"error\":\"the server has {MAX_CONNECTIONS} connections open, its limit; try again in a moment, and close connections you do not use\"}}"
    );
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = async {
        stream.write_all(reply.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent before closing: closing with unread bytes makes the kernel
        // reset the connection, and the client would lose the answer.
        let mut sink = [0u8; 4096];
        while tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), answer).await;
}

/// `GET /health` and `/api/v1/health` (no token): the process answers, and whether its
/// scheduler loop is alive (it beats at least every [`super::scheduler::HEARTBEAT`]).
#[utoipa::path(get, path = "/api/v1/health", tag = "server", security(()),
    responses((status = 200, body = Health), (status = 503, description = "the scheduler loop has stopped beating", body = Health)))]
pub(super) async fn health(Extract(api): Extract<Api>) -> Response {
    let beat = *api.state.heartbeat.lock().unwrap_or_else(|e| e.into_inner());
    let age = beat.map(|b| (chrono::Utc::now() - b).num_milliseconds().max(0) as f64 / 1000.0);
    let alive = age.is_some_and(|a| a < 3.0 * super::scheduler::HEARTBEAT.as_secs_f64()) || api.state.drain.is_cancelled();
    let health = Health {
        status: if alive { "ok".into() } else { "scheduler_stalled".into() },
        pid: std::process::id(),
        scheduler: SchedulerHealth { alive, last_beat: beat, seconds_since_beat: age },
    };
    (if alive { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(health)).into_response()
}

/// What `/health` says.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `scheduler_stalled`.
    pub status: String,
    /// The server's process id.
    pub pid: u32,
    /// The scheduler loop.
    pub scheduler: SchedulerHealth,
}

/// Whether the scheduler loop is alive.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SchedulerHealth {
    /// It beat within three heartbeats.
    pub alive: bool,
    /// When it last beat.
    pub last_beat: Option<chrono::DateTime<chrono::Utc>>,
    /// How long ago, in seconds.
    pub seconds_since_beat: Option<f64>,
}

/// What `/api/v1/version` says.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Version {
    /// flowctl's version.
    pub version: String,
    /// The API's version.
    pub api: String,
}

/// `GET /api/v1/version` (no token).
#[utoipa::path(get, path = "/api/v1/version", tag = "server", security(()), responses((status = 200, body = Version)))]
pub(super) async fn version() -> Json<Version> {
    Json(Version { version: env!("CARGO_PKG_VERSION").to_string(), api: "v1".to_string() })
}

/// `GET /metrics`: the Prometheus text format, behind the token unless config.yaml says
/// `metrics: public`.
async fn metrics(Extract(api): Extract<Api>, request: HttpRequest) -> Response {
    if api.state.execution.config().metrics != crate::config::MetricsAccess::Public && !token_matches(&api, &request) {
        return unauthorized();
    }
    ([(header::CONTENT_TYPE, crate::metrics::Metrics::CONTENT_TYPE)], api.state.metrics.encode()).into_response()
}

/// `GET /api/v1/openapi.json` (no token): the document describing this API.
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::openapi::document()).into_response()
}

/// Says on every answer how long the server took to make it (`Server-Timing: app;dur=<ms>`), so a
/// client or a benchmark can tell the server's time from the network's. A streamed answer's time
/// is until its first byte.
async fn server_timing(request: HttpRequest, next: Next) -> Response {
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = axum::http::HeaderValue::from_str(&format!("app;dur={ms:.3}")) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}

/// Marks every answer of a stopping server, so a client waiting for a run stops waiting.
async fn say_stopping(Extract(api): Extract<Api>, request: HttpRequest, next: Next) -> Response {
    let mut response = next.run(request).await;
    if api.state.drain.is_cancelled() {
        response.headers_mut().insert(crate::client::STOPPING_HEADER, axum::http::HeaderValue::from_static("true"));
    }
    response
}

/// Whether the request carries the API's token (compared in constant time).
fn token_matches(api: &Api, request: &HttpRequest) -> bool {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    presented.len() == api.token.len() && bool::from(presented.as_bytes().ct_eq(api.token.as_bytes()))
}

fn unauthorized() -> Response {
    super::rest::error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or wrong bearer token: send `Authorization: Bearer <token>`, the token in server.json in the server's home",
        Some("Authorization"),
    )
}

async fn authorize(Extract(api): Extract<Api>, request: HttpRequest, next: Next) -> Response {
    if !token_matches(&api, &request) {
        return unauthorized();
    }
    next.run(request).await
}
