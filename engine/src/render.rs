//! Rendering a task's settings for one attempt: the template context (Airflow's names) and the
//! walk that renders every string under `with:`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::Environment;
use serde_json::Value;

use crate::operator::Outputs;
use crate::template::is_template;

/// The facts of a run that templates read.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// The DAG's id.
    pub dag_id: String,
    /// The run's id.
    pub run_id: String,
    /// The logical date.
    pub logical_date: DateTime<Utc>,
    /// The data interval's start.
    pub data_interval_start: DateTime<Utc>,
    /// The data interval's end.
    pub data_interval_end: DateTime<Utc>,
    /// The run's parameters.
    pub params: serde_json::Map<String, Value>,
}

/// The template context of one attempt.
pub fn context(
    facts: &RunFacts,
    task_id: &str,
    try_number: u32,
    upstream_outputs: &BTreeMap<String, Outputs>,
    env: &BTreeMap<String, String>,
) -> Value {
    let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Secs, false);
    let tasks: serde_json::Map<String, Value> = upstream_outputs
        .iter()
        .map(|(id, outputs)| (id.clone(), serde_json::json!({ "outputs": outputs })))
        .collect();
    serde_json::json!({
        "ds": facts.logical_date.format("%Y-%m-%d").to_string(),
        "ds_nodash": facts.logical_date.format("%Y%m%d").to_string(),
        "ts": ts(facts.logical_date),
        "logical_date": ts(facts.logical_date),
        "data_interval_start": ts(facts.data_interval_start),
        "data_interval_end": ts(facts.data_interval_end),
        "run_id": facts.run_id,
        "dag_id": facts.dag_id,
        "task_id": task_id,
        "try_number": try_number,
        "params": facts.params,
        "env": env,
        "tasks": tasks,
    })
}

/// Whether any string under `value` is a template (most noop and many shell tasks have none,
/// and skip building a context).
pub fn has_templates(value: &Value) -> bool {
    match value {
        Value::String(s) => is_template(s),
        Value::Array(items) => items.iter().any(has_templates),
        Value::Object(map) => map.values().any(has_templates),
        _ => false,
    }
}

/// Renders every string under `with`. The error names the setting, e.g. `with.command`.
pub fn render(env: &Environment<'_>, with: &Value, ctx: &Value) -> Result<Value, String> {
    let ctx = minijinja::Value::from_serialize(ctx);
    render_at(env, with, &ctx, "with")
}

fn render_at(env: &Environment<'_>, value: &Value, ctx: &minijinja::Value, path: &str) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) if is_template(s) => Value::String(env.render_str(s, ctx).map_err(|e| {
            let detail = e.detail().map_or_else(|| e.kind().to_string(), str::to_string);
            // Name the expression that failed (`params.nope`), not just "undefined value".
            let at = e.range().and_then(|r| s.get(r)).map(|expr| format!(" in `{}`", expr.trim())).unwrap_or_default();
            format!("cannot render {path}: {detail}{at}")
        })?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| render_at(env, v, ctx, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_at(env, v, ctx, &format!("{path}.{k}"))?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// The process environment as templates see it (`env.NAME`), read once per process.
pub fn process_env() -> Arc<BTreeMap<String, String>> {
    Arc::new(std::env::vars().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn renders_airflow_names_and_upstream_outputs() {
        let start = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
        let facts = RunFacts {
            dag_id: "d".into(),
            run_id: "manual__x".into(),
            logical_date: start,
            data_interval_start: start,
            data_interval_end: Utc.with_ymd_and_hms(2024, 3, 2, 0, 0, 0).unwrap(),
            params: serde_json::json!({"bucket": "b"}).as_object().unwrap().clone(),
        };
        let mut outputs = BTreeMap::new();
        outputs.insert("extract".to_string(), serde_json::json!({"path": "/tmp/x"}).as_object().unwrap().clone());
        let ctx = context(&facts, "load", 2, &outputs, &BTreeMap::new());
        let with = serde_json::json!({"cmd": "{{ ds }} {{ ds_nodash }} {{ ts }} {{ params.bucket }} {{ tasks.extract.outputs.path }} {{ try_number }}", "n": 3});
        let out = render(&crate::template::environment(), &with, &ctx).unwrap();
        assert_eq!(out["cmd"], "2024-03-01 20240301 2024-03-01T00:00:00+00:00 b /tmp/x 2");
        assert_eq!(out["n"], 3);
        let err = render(&crate::template::environment(), &serde_json::json!({"a": ["{{ params.nope }}"]}), &ctx).unwrap_err();
        assert!(err.starts_with("cannot render with.a[0]: "), "{err}");
    }
}
