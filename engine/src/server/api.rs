//! The HTTP JSON API (axum). `/health` is open; everything else needs the bearer token, compared
//! in constant time. The token is never logged or echoed.
//!
//! - `POST /api/command`: a [`Request`] in, a [`Reply`] out: the same answer the CLI gives when it
//!   acts on the store itself.
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
use crate::commands::{Reply, Request};

/// How long a wait request is held before the client is told to ask again.
const WAIT_HOLD: Duration = Duration::from_secs(20);

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
    let shutdown = async move { stop.cancelled().await };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "the API stopped");
    }
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

async fn command(Extract(api): Extract<Api>, Json(request): Json<Request>) -> Json<Reply> {
    let state = api.state.clone();
    // Commands read and write the store and may compile DAG files: off the async threads.
    let reply = tokio::task::spawn_blocking(move || crate::commands::handle(&ServerHost(state), &request))
        .await
        .unwrap_or_else(|e| {
            crate::commands::Output::error(&crate::commands::CommandError::Server(format!("the command failed: {e}"))).into()
        });
    Json(reply)
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
    let (path, text) = match crate::commands::read_log(&logs_dir, &query.dag, &query.run, &query.task, query.attempt) {
        Ok(found) => found,
        Err(e) => return (StatusCode::NOT_FOUND, e.render()).into_response(),
    };
    struct Follow {
        state: Arc<State>,
        path: std::path::PathBuf,
        offset: u64,
        key: (String, String),
        task: String,
        attempt: u32,
        /// The attempt looked finished once; the log writer may still be writing its last line.
        finishing: bool,
        done: bool,
    }
    let attempt = path.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse().ok()).unwrap_or(0);
    let ended = text.lines().any(crate::logs::is_end_line);
    let first = futures_util::stream::once(std::future::ready(Ok::<_, std::io::Error>(axum::body::Bytes::from(text.clone()))));
    let follow = Follow {
        state: api.state.clone(),
        path,
        offset: text.len() as u64,
        key: (query.dag, query.run),
        task: query.task,
        attempt,
        finishing: false,
        done: ended,
    };
    let rest = futures_util::stream::unfold(follow, |mut f| async move {
        loop {
            if f.done {
                return None;
            }
            let active = f.state.active.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&f.key);
            let more = match std::fs::read(&f.path) {
                Ok(bytes) if (bytes.len() as u64) > f.offset => bytes[f.offset as usize..].to_vec(),
                _ => Vec::new(),
            };
            if !more.is_empty() {
                f.offset += more.len() as u64;
                f.done = String::from_utf8_lossy(&more).lines().any(crate::logs::is_end_line);
                return Some((Ok(axum::body::Bytes::from(more)), f));
            }
            if !active {
                f.done = true;
                let note = "(the run is not being executed; the log ends here)\n";
                return Some((Ok(axum::body::Bytes::from(note)), f));
            }
            // An attempt interrupted by a stopped flowctl never writes its last line: once the
            // task has moved on to another try, or out of running, nothing more will come.
            let current = f
                .state
                .store()
                .task_instances(&f.key.0, &f.key.1)
                .ok()
                .and_then(|all| all.into_iter().find(|ti| ti.task_id == f.task))
                .is_some_and(|ti| ti.try_number == f.attempt && ti.state == crate::lifecycle::TaskState::Running);
            if !current && !f.finishing {
                f.finishing = true;
            } else if !current {
                f.done = true;
                let note = "(this attempt is no longer running and wrote no last line: flowctl stopped while it ran)\n";
                return Some((Ok(axum::body::Bytes::from(note)), f));
            }
            tokio::time::sleep(FOLLOW_INTERVAL).await;
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
