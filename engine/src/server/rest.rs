//! The resource API under `/api/v1`: DAGs, runs, task instances, logs and connections as JSON,
//! each route one call of the service (no logic of its own), described by the OpenAPI document
//! served at `/api/v1/openapi.json` (`openapi.rs`).
//!
//! Every error has one shape, `{"error": {"code", "message", "field", "diagnostics"}}`, with the
//! HTTP status a client expects: 400 bad input, 401 no or wrong token, 404 unknown DAG, run or
//! task, 409 conflict, 413 body too large, 422 a DAG that does not compile, 503 the home or the
//! machine failed. Errors the router itself makes (an unknown path, a body that is not JSON) are
//! rewritten into the same shape by [`one_error_shape`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request as HttpRequest, State as Extract};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::{ServerHost, State};
use crate::protocol::{RunQuery, ServiceError};
use crate::service::{LogEnd, LogFollow, LogStep, Service};

/// The largest request body the API reads (a DAG file's source, in `POST /dags`).
pub const MAX_BODY: usize = 4 << 20;

/// The body of every error.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ApiError,
}

/// An error: a stable code, a message, and where.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    /// `bad_request`, `unauthorized`, `not_found`, `method_not_allowed`, `conflict`,
    /// `too_large`, `invalid` (a DAG that does not compile), `unavailable`.
    pub code: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// The request field or parameter it is about, when there is one.
    pub field: Option<String>,
    /// For `invalid`: every problem, with its file, line and column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<crate::diagnostic::Diagnostic>,
}

/// An error response.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>, field: Option<&str>) -> Response {
    let body = ErrorBody { error: ApiError { code: code.into(), message: message.into(), field: field.map(str::to_string), diagnostics: Vec::new() } };
    (status, Json(body)).into_response()
}

/// A service error as its response.
fn service_error(e: ServiceError) -> Response {
    let (status, code) = match &e {
        ServiceError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
        ServiceError::BadRequest { .. } => (StatusCode::BAD_REQUEST, "bad_request"),
        ServiceError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
        ServiceError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
        ServiceError::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    };
    // The field a message is about, when it starts with one (`--date "x": ...`, `params.x: ...`).
    let message = e.to_string();
    let field = message
        .strip_prefix("--")
        .and_then(|rest| rest.split([' ', ':']).next())
        .map(str::to_string)
        .or_else(|| message.split_once(": ").map(|(head, _)| head).filter(|h| h.starts_with("params.")).map(str::to_string));
    let diagnostics = match e {
        ServiceError::Invalid { diagnostics } => diagnostics,
        _ => Vec::new(),
    };
    (status, Json(ErrorBody { error: ApiError { code: code.into(), message, field, diagnostics } })).into_response()
}

/// A value as the JSON answer, every string in it masked: params, outputs, errors and logs can
/// hold a secret's value, in any encoding the masker knows.
fn masked<T: Serialize>(state: &State, status: StatusCode, value: &T) -> Response {
    match serde_json::to_value(value) {
        Ok(json) => (status, Json(state.execution.masker().mask_json(&json))).into_response(),
        Err(e) => service_error(ServiceError::unavailable(format!("the answer cannot be written as JSON: {e}"))),
    }
}

/// A refusal, its message masked.
fn refusal(state: &State, e: ServiceError) -> Response {
    service_error(crate::service::mask_error(state.execution.masker(), e))
}

/// Runs a service call off the async threads (it reads the store and may compile DAG files) and
/// answers with its value as JSON, masked, with `status` on success.
async fn call<T, F>(state: Arc<State>, status: StatusCode, f: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&Service<'_>) -> Result<T, ServiceError> + Send + 'static,
{
    let host_state = state.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let host = ServerHost(host_state);
        f(&Service::new(&host))
    })
    .await;
    match answer {
        Ok(Ok(value)) => masked(&state, status, &value),
        Ok(Err(e)) => refusal(&state, e),
        Err(e) => service_error(ServiceError::unavailable(format!("the server failed while answering: {e}"))),
    }
}

/// A JSON body, or a 400 that says what is wrong with it.
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| error(StatusCode::BAD_REQUEST, "bad_request", format!("the request body is not the JSON this operation takes: {e}"), Some("body")))
}

/// The routes, with the state they answer from.
pub(super) fn routes() -> Router<Arc<State>> {
    Router::new()
        .route("/dags", get(list_dags).post(apply_dag))
        .route("/dags/{dag}", get(get_dag).patch(patch_dag))
        .route("/dags/{dag}/source", get(get_source))
        .route("/dags/{dag}/versions", get(get_versions))
        .route("/dags/{dag}/next", get(get_next))
        .route("/dags/{dag}/runs", get(list_runs).post(trigger_run))
        .route("/dags/{dag}/runs/{run}", get(get_run))
        .route("/dags/{dag}/runs/{run}/clear", post(clear_run))
        .route("/dags/{dag}/runs/{run}/cancel", post(cancel_run))
        .route("/dags/{dag}/backfills", post(backfill))
        .route("/dags/{dag}/runs/{run}/tasks", get(list_tasks))
        .route("/dags/{dag}/runs/{run}/tasks/{task}", get(get_task))
        .route("/dags/{dag}/runs/{run}/tasks/{task}/logs", get(get_logs))
        .route("/connections", get(list_connections))
        .route("/connections/{name}/test", post(test_connection))
}

/// Query of `GET /dags`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DagsQuery {
    /// Only paused (true) or unpaused (false) DAGs.
    pub paused: Option<bool>,
    /// Only DAGs whose id holds this text.
    pub search: Option<String>,
    /// How many DAGs [default: 25, at most 500].
    pub limit: Option<usize>,
    /// Where to start: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The DAGs, a page at a time.
#[utoipa::path(get, path = "/api/v1/dags", tag = "dags", params(DagsQuery),
    responses((status = 200, body = crate::protocol::DagPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub(super) async fn list_dags(Extract(state): Extract<Arc<State>>, Query(q): Query<DagsQuery>) -> Response {
    call(state, StatusCode::OK, move |s| s.dag_page(q.paused, q.search.as_deref(), q.limit, q.cursor.as_deref())).await
}

/// Body of `POST /dags`: a DAG file's text, or files on the server's machine.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ApplyBody {
    /// A DAG file's text.
    Source {
        /// The file's name, e.g. `loans.yaml` (diagnostics and the stored version name it).
        file: String,
        /// The file's text.
        source: String,
    },
    /// Files or folders on the server's machine, absolute (what `flowctl apply` sends).
    Paths {
        /// The paths.
        paths: Vec<String>,
    },
}

/// Compiles DAG files and stores their new versions; on any error stores nothing.
#[utoipa::path(post, path = "/api/v1/dags", tag = "dags", request_body = ApplyBody,
    responses((status = 200, body = crate::protocol::Applied), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, description = "the file does not compile: every diagnostic", body = ErrorBody)))]
pub(super) async fn apply_dag(Extract(state): Extract<Arc<State>>, bytes: Bytes) -> Response {
    let apply: ApplyBody = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    call(state, StatusCode::OK, move |s| match apply {
        ApplyBody::Source { file, source } => s.apply_source(&file, &source),
        ApplyBody::Paths { paths } => {
            if let Some(relative) = paths.iter().find(|p| !std::path::Path::new(p).is_absolute()) {
                return Err(ServiceError::bad_request(format!("paths: \"{relative}\" is relative; give absolute paths on the server's machine")));
            }
            s.apply(&paths.iter().map(std::path::PathBuf::from).collect::<Vec<_>>())
        }
    })
    .await
}

/// One DAG: schedule, next run, latest runs, tasks, parameters.
#[utoipa::path(get, path = "/api/v1/dags/{dag}", tag = "dags", params(("dag" = String, Path, description = "the DAG's id")),
    responses((status = 200, body = crate::protocol::DagDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_dag(Extract(state): Extract<Arc<State>>, Path(dag): Path<String>) -> Response {
    call(state, StatusCode::OK, move |s| s.dag_detail(&dag)).await
}

/// Body of `PATCH /dags/{dag}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DagPatch {
    /// Pause (true) or unpause (false) the DAG's schedule.
    pub paused: bool,
}

/// Pauses or unpauses a DAG.
#[utoipa::path(patch, path = "/api/v1/dags/{dag}", tag = "dags", params(("dag" = String, Path, description = "the DAG's id")), request_body = DagPatch,
    responses((status = 200, body = crate::protocol::PauseChange), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn patch_dag(Extract(state): Extract<Arc<State>>, Path(dag): Path<String>, bytes: Bytes) -> Response {
    let patch: DagPatch = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    call(state, StatusCode::OK, move |s| s.set_paused(&dag, patch.paused)).await
}

/// Query of `GET /dags/{dag}/source`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SourceQuery {
    /// The version [default: the latest].
    pub version: Option<u64>,
}

/// The stored source of a version.
#[utoipa::path(get, path = "/api/v1/dags/{dag}/source", tag = "dags", params(("dag" = String, Path, description = "the DAG's id"), SourceQuery),
    responses((status = 200, body = crate::protocol::DagSource), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_source(Extract(state): Extract<Arc<State>>, Path(dag): Path<String>, Query(q): Query<SourceQuery>) -> Response {
    call(state, StatusCode::OK, move |s| s.dag_source(&dag, q.version)).await
}

/// A DAG's versions, newest first.
#[utoipa::path(get, path = "/api/v1/dags/{dag}/versions", tag = "dags", params(("dag" = String, Path, description = "the DAG's id")),
    responses((status = 200, body = crate::protocol::DagVersions), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_versions(Extract(state): Extract<Arc<State>>, Path(dag): Path<String>) -> Response {
    call(state, StatusCode::OK, move |s| s.dag_versions(&dag)).await
}

/// Query of `GET /dags/{dag}/runs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only runs in this state: queued, running, success or failed.
    pub state: Option<crate::state::RunState>,
    /// Only runs whose logical date is at or after this RFC 3339 instant.
    pub from: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// Only runs whose logical date is at or before this RFC 3339 instant.
    pub to: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// How many runs [default: 25, at most 500].
    pub limit: Option<usize>,
    /// Where to start: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A DAG's runs, newest logical date first, a page at a time.
#[utoipa::path(get, path = "/api/v1/dags/{dag}/runs", tag = "runs", params(("dag" = String, Path, description = "the DAG's id"), RunsQuery),
    responses((status = 200, body = crate::protocol::RunPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_runs(Extract(state): Extract<Arc<State>>, Path(dag): Path<String>, Query(q): Query<RunsQuery>) -> Response {
    let query = RunQuery { state: q.state, from: q.from, to: q.to, limit: q.limit, cursor: q.cursor };
    call(state, StatusCode::OK, move |s| s.run_page(&dag, &query)).await
}

/// Parameters of a new run: an object of values, or `key=value` strings as `--param` takes them
/// (a value is JSON when it parses, else text).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Params {
    /// Values by name.
    Values(std::collections::BTreeMap<String, serde_json::Value>),
    /// `key=value` strings.
    Args(Vec<String>),
}

impl Default for Params {
    fn default() -> Self {
        Params::Values(Default::default())
    }
}

/// Body of `POST /dags/{dag}/runs`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// Values of declared parameters, over their defaults.
    #[serde(default)]
    pub params: Params,
    /// The logical date: a date (midnight in the DAG's time zone) or RFC 3339 [default: now].
    pub logical_date: Option<String>,
    /// A key of the caller's (a CI job's id): requests with the same key create one run, and
    /// every later one is answered with it (200 instead of 201).
    pub idempotency_key: Option<String>,
}

/// Queues a manual run.
#[utoipa::path(post, path = "/api/v1/dags/{dag}/runs", tag = "runs", params(("dag" = String, Path, description = "the DAG's id")), request_body = TriggerBody,
    responses((status = 201, description = "the run was created", body = crate::protocol::Triggered),
        (status = 200, description = "a run with this idempotency key exists", body = crate::protocol::Triggered),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn trigger_run(Extract(state): Extract<Arc<State>>, Path(dag): Path<String>, bytes: Bytes) -> Response {
    let trigger: TriggerBody = if bytes.is_empty() {
        TriggerBody::default()
    } else {
        match body(&bytes) {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    let host_state = state.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let host = ServerHost(host_state);
        let service = Service::new(&host);
        let (date, key) = (trigger.logical_date.as_deref(), trigger.idempotency_key.as_deref());
        match &trigger.params {
            Params::Values(values) => {
                let values: serde_json::Map<String, serde_json::Value> = values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                service.trigger_run(&dag, crate::service::RunParams::Values(&values), date, key)
            }
            Params::Args(args) => service.trigger_run(&dag, crate::service::RunParams::Args(args), date, key),
        }
    })
    .await;
    match answer {
        Ok(Ok(t)) => masked(&state, if t.created { StatusCode::CREATED } else { StatusCode::OK }, &t),
        Ok(Err(e)) => refusal(&state, e),
        Err(e) => service_error(ServiceError::unavailable(format!("the server failed while answering: {e}"))),
    }
}

/// Query of `GET /dags/{dag}/runs/{run}`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunWaitQuery {
    /// Hold the answer up to this many seconds (at most 30) until the run has ended and nobody
    /// executes it any more; a server that is stopping answers at once.
    pub wait: Option<u64>,
}

/// The longest `wait` a request may ask for.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A run with every task instance.
#[utoipa::path(get, path = "/api/v1/dags/{dag}/runs/{run}", tag = "runs",
    params(("dag" = String, Path, description = "the DAG's id"), ("run" = String, Path, description = "the run's id"), RunWaitQuery),
    responses((status = 200, body = crate::protocol::RunDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_run(Extract(state): Extract<Arc<State>>, Path((dag, run)): Path<(String, String)>, Query(q): Query<RunWaitQuery>) -> Response {
    let deadline = tokio::time::Instant::now() + MAX_WAIT.min(std::time::Duration::from_secs(q.wait.unwrap_or(0)));
    loop {
        // Register before looking, so a run that ends meanwhile wakes this request.
        let ended = state.run_ended.notified();
        let (dag2, run2) = (dag.clone(), run.clone());
        let answer = tokio::task::spawn_blocking({
            let state = state.clone();
            move || {
                let host = ServerHost(state);
                Service::new(&host).run(&dag2, &run2)
            }
        })
        .await;
        let detail = match answer {
            Ok(Ok(detail)) => detail,
            Ok(Err(e)) => return refusal(&state, e),
            Err(e) => return service_error(ServiceError::unavailable(format!("the server failed while answering: {e}"))),
        };
        let settled = detail.run.state.is_terminal() && detail.activity == crate::protocol::Activity::Settled;
        if settled || state.drain.is_cancelled() || tokio::time::Instant::now() >= deadline {
            return masked(&state, StatusCode::OK, &detail);
        }
        let _ = tokio::time::timeout_at(deadline, ended).await;
    }
}

/// Query of `GET /dags/{dag}/next`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NextQuery {
    /// How many fire times [default: 10, at most 10,000].
    pub n: Option<usize>,
    /// Fire times strictly after this instant: RFC 3339, or a date (midnight in the DAG's time
    /// zone) [default: now].
    pub after: Option<String>,
}

/// A scheduled DAG's next fire times, each with its data interval.
#[utoipa::path(get, path = "/api/v1/dags/{dag}/next", tag = "dags", params(("dag" = String, Path, description = "the DAG's id"), NextQuery),
    responses((status = 200, body = crate::protocol::NextFires), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_next(Extract(state): Extract<Arc<State>>, Path(dag): Path<String>, Query(q): Query<NextQuery>) -> Response {
    let n = q.n.unwrap_or(10);
    if n == 0 || n > 10_000 {
        return error(StatusCode::BAD_REQUEST, "bad_request", format!("n must be 1 to 10000, not {n}"), Some("n"));
    }
    call(state, StatusCode::OK, move |s| s.next(&dag, n, q.after.as_deref())).await
}

/// Body of `POST .../clear`: which tasks, as `flowctl clear` takes them.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearBody {
    /// Only these tasks [default: every task].
    #[serde(default)]
    pub tasks: Vec<String>,
    /// With the tasks downstream of them.
    #[serde(default)]
    pub downstream: bool,
    /// Only tasks that failed or were upstream_failed.
    #[serde(default)]
    pub failed_only: bool,
}

/// Resets tasks of a run so they run again.
#[utoipa::path(post, path = "/api/v1/dags/{dag}/runs/{run}/clear", tag = "runs",
    params(("dag" = String, Path, description = "the DAG's id"), ("run" = String, Path, description = "the run's id")), request_body = ClearBody,
    responses((status = 200, body = crate::protocol::Cleared), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the run is being executed", body = ErrorBody)))]
pub(super) async fn clear_run(Extract(state): Extract<Arc<State>>, Path((dag, run)): Path<(String, String)>, bytes: Bytes) -> Response {
    let clear: ClearBody = if bytes.is_empty() {
        ClearBody::default()
    } else {
        match body(&bytes) {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    let selection = crate::runs::Selection { tasks: clear.tasks, downstream: clear.downstream, failed_only: clear.failed_only };
    call(state, StatusCode::OK, move |s| s.clear(&dag, &run, &selection)).await
}

/// Cancels a run: its tasks stop and it fails.
#[utoipa::path(post, path = "/api/v1/dags/{dag}/runs/{run}/cancel", tag = "runs",
    params(("dag" = String, Path, description = "the DAG's id"), ("run" = String, Path, description = "the run's id")),
    responses((status = 200, body = crate::protocol::Cancelled), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn cancel_run(Extract(state): Extract<Arc<State>>, Path((dag, run)): Path<(String, String)>) -> Response {
    call(state, StatusCode::OK, move |s| s.cancel(&dag, &run)).await
}

/// Body of `POST /dags/{dag}/backfills`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillBody {
    /// The first logical date (a date or RFC 3339).
    pub from: String,
    /// The last logical date, included.
    pub to: String,
    /// Clear the failed tasks of runs in the range that failed, and run them again.
    #[serde(default)]
    pub rerun_failed: bool,
}

/// Creates runs for the past intervals whose logical dates lie in a range.
#[utoipa::path(post, path = "/api/v1/dags/{dag}/backfills", tag = "runs", params(("dag" = String, Path, description = "the DAG's id")), request_body = BackfillBody,
    responses((status = 200, body = crate::protocol::Backfilled), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn backfill(Extract(state): Extract<Arc<State>>, Path(dag): Path<String>, bytes: Bytes) -> Response {
    let backfill: BackfillBody = match body(&bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    call(state, StatusCode::OK, move |s| s.backfill(&dag, &backfill.from, &backfill.to, backfill.rerun_failed)).await
}

/// The task instances of a run.
#[utoipa::path(get, path = "/api/v1/dags/{dag}/runs/{run}/tasks", tag = "tasks",
    params(("dag" = String, Path, description = "the DAG's id"), ("run" = String, Path, description = "the run's id")),
    responses((status = 200, body = crate::protocol::TaskList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn list_tasks(Extract(state): Extract<Arc<State>>, Path((dag, run)): Path<(String, String)>) -> Response {
    call(state, StatusCode::OK, move |s| {
        s.run(&dag, &run).map(|detail| crate::protocol::TaskList { dag_id: dag, run_id: run, tasks: detail.tasks })
    })
    .await
}

/// A task instance with every attempt.
#[utoipa::path(get, path = "/api/v1/dags/{dag}/runs/{run}/tasks/{task}", tag = "tasks",
    params(("dag" = String, Path, description = "the DAG's id"), ("run" = String, Path, description = "the run's id"), ("task" = String, Path, description = "the task's id")),
    responses((status = 200, body = crate::protocol::TaskDetail), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_task(Extract(state): Extract<Arc<State>>, Path((dag, run, task)): Path<(String, String, String)>) -> Response {
    call(state, StatusCode::OK, move |s| s.task_detail(&dag, &run, &task)).await
}

/// Query of `GET .../logs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// The attempt [default: the latest].
    pub attempt: Option<u32>,
    /// The byte offset to read from [default: 0].
    pub offset: Option<u64>,
}

/// An attempt's log from an offset; with `Accept: text/event-stream`, the log so far and then its
/// new lines as they come, as server-sent events (`log` events, then one `end` event).
#[utoipa::path(get, path = "/api/v1/dags/{dag}/runs/{run}/tasks/{task}/logs", tag = "tasks",
    params(("dag" = String, Path, description = "the DAG's id"), ("run" = String, Path, description = "the run's id"), ("task" = String, Path, description = "the task's id"), LogsQuery),
    responses((status = 200, body = crate::protocol::LogChunk, description = "a part of the log (or, with Accept: text/event-stream, a stream of it)"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn get_logs(
    Extract(state): Extract<Arc<State>>,
    Path((dag, run, task)): Path<(String, String, String)>,
    Query(q): Query<LogsQuery>,
    headers: HeaderMap,
) -> Response {
    let wants_stream = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    if !wants_stream {
        return call(state, StatusCode::OK, move |s| s.log_chunk(&dag, &run, &task, q.attempt, q.offset.unwrap_or(0))).await;
    }
    follow(state, dag, run, task, q).await
}

/// How often a followed log is read for new lines.
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// `GET .../logs` with `Accept: text/event-stream`.
async fn follow(state: Arc<State>, dag: String, run: String, task: String, q: LogsQuery) -> Response {
    use axum::response::sse::{Event, Sse};
    use futures_util::StreamExt;
    let start = {
        let (state, dag, run, task) = (state.clone(), dag.clone(), run.clone(), task.clone());
        tokio::task::spawn_blocking(move || {
            let host = ServerHost(state);
            Service::new(&host).log_chunk(&dag, &run, &task, q.attempt, q.offset.unwrap_or(0))
        })
        .await
    };
    let first = match start {
        Ok(Ok(chunk)) => chunk,
        Ok(Err(e)) => return refusal(&state, e),
        Err(e) => return service_error(ServiceError::unavailable(format!("the server failed while answering: {e}"))),
    };
    let log = crate::protocol::AttemptLog {
        dag_id: dag.clone(),
        run_id: run.clone(),
        task_id: task.clone(),
        attempt: first.attempt,
        path: crate::state::attempt_log_path(&state.home.logs_dir(), &dag, &run, &task, first.attempt),
        text: String::new(),
    };
    let follower = LogFollow::from_offset(&log, first.next_offset, first.complete);
    let key = (dag, run);
    let attempt = first.attempt;
    let masker = state.execution.masker().clone();
    let opening_text = masker.mask(&first.text).into_owned();
    let opening = futures_util::stream::iter((!opening_text.is_empty()).then(|| Ok::<_, std::convert::Infallible>(Event::default().event("log").data(opening_text))));
    let rest = futures_util::stream::unfold(Some((state, follower)), move |next| {
        let key = key.clone();
        let task = task.clone();
        let masker = masker.clone();
        async move {
            let (state, mut follower) = next?;
            loop {
                let writer = state.active.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&key);
                let current = state
                    .store()
                    .task_instances(&key.0, &key.1)
                    .ok()
                    .and_then(|all| all.into_iter().find(|ti| ti.task_id == task))
                    .is_some_and(|ti| ti.try_number == attempt && ti.state == crate::lifecycle::TaskState::Running);
                match follower.step(writer, current) {
                    LogStep::Data(bytes) => {
                        let text = masker.mask(&String::from_utf8_lossy(&bytes)).into_owned();
                        return Some((Ok(Event::default().event("log").data(text)), Some((state, follower))));
                    }
                    LogStep::Wait => tokio::time::sleep(FOLLOW_INTERVAL).await,
                    LogStep::End(end) => {
                        let why = match end {
                            LogEnd::Complete => "complete",
                            LogEnd::NoWriter => "not_executed",
                            LogEnd::Abandoned => "abandoned",
                        };
                        return Some((Ok(Event::default().event("end").data(why)), None));
                    }
                }
            }
        }
    });
    Sse::new(opening.chain(rest)).into_response()
}

/// Every connection of the server's config and environment, secrets masked.
#[utoipa::path(get, path = "/api/v1/connections", tag = "connections",
    responses((status = 200, body = Vec<crate::protocol::ConnectionInfo>), (status = 401, body = ErrorBody)))]
pub(super) async fn list_connections(Extract(state): Extract<Arc<State>>) -> Response {
    call(state, StatusCode::OK, |s| s.connections()).await
}

/// Tests a connection: the cheapest authenticated call, within 30 s.
#[utoipa::path(post, path = "/api/v1/connections/{name}/test", tag = "connections", params(("name" = String, Path, description = "the connection's name")),
    responses((status = 200, body = crate::protocol::ConnectionTested), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(super) async fn test_connection(Extract(state): Extract<Arc<State>>, Path(name): Path<String>) -> Response {
    call(state, StatusCode::OK, move |s| s.test_connection(&name)).await
}

/// Rewrites the errors the router and extractors make themselves (an unknown path, a method a
/// path does not take, a query that does not parse, a body past [`MAX_BODY`]) into the one error
/// shape; answers the API makes are left as they are.
pub(super) async fn one_error_shape(request: HttpRequest, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = match axum::body::to_bytes(response.into_body(), 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let (code, message) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such path; the API's paths are listed in /api/v1/openapi.json".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "this path does not take that method; see /api/v1/openapi.json".to_string()),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", format!("the request body is larger than {} MiB, the most the API reads", MAX_BODY >> 20)),
        s if s.is_server_error() => ("unavailable", if text.is_empty() { "the server failed while answering".to_string() } else { text }),
        _ => ("bad_request", if text.is_empty() { "the request is not one this operation takes".to_string() } else { text }),
    };
    let status = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE || status == StatusCode::UNPROCESSABLE_ENTITY { StatusCode::BAD_REQUEST } else { status };
    error(status, code, message, None)
}
