//! The OpenAPI 3.1 document of the resource API, generated from the handlers' annotations and the
//! types they answer with (utoipa), so it cannot say what the code does not do. Served at
//! `/api/v1/openapi.json`; a copy is committed as `docs/openapi.json`, and a test fails when the
//! two differ.

use std::sync::OnceLock;

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{api, rest};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "flowctl API",
        description = "DAGs, runs, task instances, logs and connections of a flowctl home. Every operation but /health, /version and this document needs `Authorization: Bearer <token>` (the token is in `server.json` in the server's home). Errors share one shape: `{\"error\": {\"code\", \"message\", \"field\", \"diagnostics\"}}`.",
        license(name = "Apache-2.0")
    ),
    paths(
        rest::list_dags, rest::apply_dag, rest::get_dag, rest::patch_dag, rest::get_source, rest::get_versions, rest::get_next,
        rest::list_runs, rest::trigger_run, rest::get_run, rest::clear_run, rest::cancel_run, rest::backfill,
        rest::list_tasks, rest::get_task, rest::get_logs,
        rest::list_connections, rest::test_connection,
        api::health, api::version,
    ),
    modifiers(&BearerToken),
    security(("bearer" = [])),
    tags(
        (name = "dags", description = "applied DAGs and their versions"),
        (name = "runs", description = "runs of a DAG: list, trigger, clear, cancel, backfill"),
        (name = "tasks", description = "task instances of a run, their attempts and logs"),
        (name = "connections", description = "named connections, secrets masked"),
        (name = "server", description = "health and version"),
    )
)]
struct Document;

/// Declares the bearer token scheme every operation uses.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The document, as pretty JSON with a trailing newline (what `docs/openapi.json` holds).
pub fn document() -> String {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| {
            let mut text = Document::openapi().to_pretty_json().unwrap_or_default();
            text.push('\n');
            text
        })
        .clone()
}

#[cfg(test)]
mod tests {
    /// The committed copy is the document: a change to a handler or a type shows in review as a
    /// change of `docs/openapi.json`. `FLOWCTL_WRITE_OPENAPI=1 cargo test -p flowctl-engine
    /// openapi` writes it anew.
    #[test]
    fn docs_openapi_json_is_the_served_document() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        let document = super::document();
        if std::env::var_os("FLOWCTL_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, &document).expect("write docs/openapi.json");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == document,
            "docs/openapi.json differs from the document the server serves; write it anew with FLOWCTL_WRITE_OPENAPI=1 cargo test -p flowctl-engine openapi, and review the change"
        );
    }

    #[test]
    fn every_operation_and_schema_is_described() {
        let document: serde_json::Value = serde_json::from_str(&super::document()).expect("JSON");
        assert_eq!(document["openapi"], "3.1.0");
        let paths = document["paths"].as_object().expect("paths");
        for path in ["/api/v1/dags", "/api/v1/dags/{dag}/runs", "/api/v1/dags/{dag}/runs/{run}/tasks/{task}/logs", "/api/v1/connections", "/api/v1/health"] {
            assert!(paths.contains_key(path), "{path} is not in the document");
        }
        let schemas = document["components"]["schemas"].as_object().expect("schemas");
        // Every schema a response or a body refers to is defined.
        let text = document.to_string();
        for reference in text.split("\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            assert!(schemas.contains_key(name), "{name} is referred to but not defined");
        }
    }
}
