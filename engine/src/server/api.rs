//! The HTTP JSON API (axum). `/health` is open; everything else needs the bearer token, compared
//! in constant time. The token is never logged or echoed.
//!
//! - `POST /api/command`: a [`Request`] in, the service's typed [`Answer`] out: the same value the
//!   CLI gets when it asks the service itself.
//! - `GET /api/wait?dag=D&run=R`: returns when the run has ended, or after a while with
//!   `ended: false` so the client asks again.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request as HttpRequest, State as Extract};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::{ServerHost, State};
use crate::protocol::{Answer, Request, ServiceError};
use crate::service::{read_log, LogEnd, LogFollow, LogStep};

/// How long a wait request is held before the client is told to ask again.
const WAIT_HOLD: Duration = Duration::from_secs(20);

/// How long a connection may take to send a request's headers, and how long it may stay idle
/// between requests, before it is closed: a client that opens connections and sends nothing
/// cannot hold them.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once. Past it, a new connection gets `503` at once and is
/// closed, so a flood of connections cannot use up the process's files or starve `/health`.
pub const MAX_CONNECTIONS: usize = 512;

#[derive(Clone)]
struct Api {
    state: Arc<State>,
    token: Arc<String>,
}

pub(super) async fn serve(state: Arc<State>, listener: tokio::net::TcpListener, token: String, stop: CancellationToken) {
    let api = Api { state, token: Arc::new(token) };
    let protected = Router::new()
        .route("/api/command", post(command))
        .route("/api/wait", get(wait))
        .route("/api/logs", get(follow_log))
        .layer(middleware::from_fn_with_state(api.clone(), authorize));
    let app = Router::new().route("/health", get(health)).merge(protected).with_state(api);
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

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "pid": std::process::id() }))
}

async fn authorize(Extract(api): Extract<Api>, request: HttpRequest, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok = presented.len() == api.token.len() && bool::from(presented.as_bytes().ct_eq(api.token.as_bytes()));
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({
                "error": "missing or wrong bearer token: send `Authorization: Bearer <token>`, the token in server.json in the server's home"
            })),
        )
            .into_response();
    }
    next.run(request).await
}

async fn command(Extract(api): Extract<Api>, Json(request): Json<Request>) -> Json<Answer> {
    let state = api.state.clone();
    // Requests read and write the store and may compile DAG files: off the async threads.
    let answer = tokio::task::spawn_blocking(move || crate::service::handle(&ServerHost(state), &request))
        .await
        .unwrap_or_else(|e| Err(ServiceError::unavailable(format!("the server failed while answering: {e}"))));
    Json(answer)
}

#[derive(Deserialize)]
struct LogQuery {
    dag: String,
    run: String,
    task: String,
    attempt: Option<u32>,
}

/// How often a followed log is read for new lines.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);

/// `logs --follow` through the server: the log so far, then its new lines as they come, until the
/// attempt's end line, or until the run is no longer executed and nothing more comes.
async fn follow_log(Extract(api): Extract<Api>, Query(query): Query<LogQuery>) -> Response {
    let logs_dir = api.state.home.logs_dir();
    let log = match read_log(&logs_dir, &query.dag, &query.run, &query.task, query.attempt) {
        Ok(found) => found,
        Err(e) => return (StatusCode::NOT_FOUND, format!("error: {e}\n")).into_response(),
    };
    struct Follow {
        state: Arc<State>,
        follower: LogFollow,
        key: (String, String),
        task: String,
        attempt: u32,
        /// The closing note was sent: the stream ends.
        done: bool,
    }
    let first = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(axum::body::Bytes::from(log.text.clone()))));
    let follow = Follow {
        state: api.state.clone(),
        follower: LogFollow::new(&log),
        key: (query.dag, query.run),
        task: query.task,
        attempt: log.attempt,
        done: false,
    };
    let rest = futures_util::stream::unfold(follow, |mut f| async move {
        loop {
            if f.done {
                return None;
            }
            let active = f.state.active.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&f.key);
            // An attempt interrupted by a stopped flowctl never writes its last line: once the
            // task has moved on to another try, or out of running, nothing more will come.
            let current = f
                .state
                .store()
                .task_instances(&f.key.0, &f.key.1)
                .ok()
                .and_then(|all| all.into_iter().find(|ti| ti.task_id == f.task))
                .is_some_and(|ti| ti.try_number == f.attempt && ti.state == crate::lifecycle::TaskState::Running);
            let note = match f.follower.step(active, current) {
                LogStep::Data(bytes) => return Some((Ok(axum::body::Bytes::from(bytes)), f)),
                LogStep::Wait => {
                    tokio::time::sleep(FOLLOW_INTERVAL).await;
                    continue;
                }
                LogStep::End(LogEnd::Complete) => return None,
                LogStep::End(LogEnd::NoWriter) => "(the run is not being executed; the log ends here)\n",
                LogStep::End(LogEnd::Abandoned) => "(this attempt is no longer running and wrote no last line: flowctl stopped while it ran)\n",
            };
            f.done = true;
            return Some((Ok(axum::body::Bytes::from(note)), f));
        }
    });
    use futures_util::StreamExt;
    axum::body::Body::from_stream(first.chain(rest)).into_response()
}

#[derive(Deserialize)]
struct WaitQuery {
    dag: String,
    run: String,
}

async fn wait(Extract(api): Extract<Api>, Query(query): Query<WaitQuery>) -> Response {
    let deadline = tokio::time::Instant::now() + WAIT_HOLD;
    loop {
        let ended = api.state.run_ended.notified();
        let run = match api.state.store().run(&query.dag, &query.run) {
            Ok(Some(run)) => run,
            Ok(None) => {
                return (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": format!("DAG \"{}\" has no run \"{}\"", query.dag, query.run)})))
                    .into_response()
            }
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"error": e.to_string()}))).into_response(),
        };
        let active = api.state.active.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&(query.dag.clone(), query.run.clone()));
        if run.state.is_terminal() && !active {
            return Json(serde_json::json!({"ended": true, "state": run.state.name()})).into_response();
        }
        if api.state.drain.is_cancelled() && !active {
            return Json(serde_json::json!({"ended": true, "state": run.state.name(), "note": "the server is stopping"})).into_response();
        }
        if tokio::time::timeout_at(deadline, ended).await.is_err() {
            return Json(serde_json::json!({"ended": false, "state": run.state.name()})).into_response();
        }
    }
}
