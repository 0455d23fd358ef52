//! The JSON Schema of DAG files (`flowctl schema`), so editors autocomplete keys and flag mistakes
//! as the user types.
//!
//! The shapes below exist only to describe the format; compile reads files through its own
//! position-keeping checks. A unit test keeps the two in step: every key compile accepts is in the
//! schema and nothing else is. Each registered operator contributes the schema of its `with:`.

use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

use crate::operator::Registry;

/// A DAG file: one DAG.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct DagFile {
    /// The DAG's id: lower-case letters, digits, `_` and `-`, at most 128 characters; unique
    /// across all files.
    #[schemars(regex(pattern = r"^[a-z0-9_-]+$"), length(max = 128))]
    dag: String,
    /// What the DAG does.
    description: Option<String>,
    /// 5-field cron (`minute hour day-of-month month day-of-week`) or @hourly, @daily, @weekly,
    /// @monthly, @quarterly, @yearly. Absent: the DAG runs only when triggered.
    schedule: Option<String>,
    /// IANA time zone the schedule and dates are read in (default UTC).
    timezone: Option<String>,
    /// The start of the first data interval: a date (2024-01-01) or an RFC 3339 timestamp.
    /// Required with a schedule.
    start_date: Option<String>,
    /// No run is scheduled after this date.
    end_date: Option<String>,
    /// Create runs for missed intervals, oldest first (default false).
    catchup: Option<bool>,
    /// How many runs of this DAG may be active at once (default 1, at most 1000).
    #[schemars(range(min = 1, max = 1000))]
    max_active_runs: Option<u32>,
    /// How many tasks of one DAG may run at once (default 16, at most 10000).
    #[schemars(range(min = 1, max = 10000))]
    max_active_tasks: Option<u32>,
    /// Parameters with their defaults; templates read them as `params.<name>`; `--param` overrides.
    params: Option<BTreeMap<String, Value>>,
    /// Settings applied to every task unless the task sets them.
    defaults: Option<Defaults>,
    /// Who hears about failures.
    alerts: Option<AlertsSpec>,
    /// How much history to keep (default: the newest 1,000 ended runs).
    retention: Option<RetentionSpec>,
    /// The tasks (at most 10000).
    #[schemars(length(min = 1, max = 10000))]
    tasks: Vec<TaskSpec>,
}

/// How much history to keep.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct RetentionSpec {
    /// Keep at most this many ended runs (the newest; at most 1000000).
    #[schemars(range(min = 1, max = 1000000))]
    runs: Option<u32>,
    /// Keep ended runs created within this many days (at most 36500).
    #[schemars(range(min = 1, max = 36500))]
    days: Option<u32>,
}

/// Task settings applied to every task.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct Defaults {
    /// How many times a failed attempt is tried again (default 0, at most 100).
    #[schemars(range(max = 100))]
    retries: Option<u32>,
    /// Delay before a retry, e.g. 30s, 5m (default 5m).
    retry_delay: Option<String>,
    /// `fixed` (default) or `exponential`.
    retry_backoff: Option<BackoffSpec>,
    /// The cap on exponential backoff (default 24h).
    max_retry_delay: Option<String>,
    /// An attempt running longer is cancelled, e.g. 2h (default: none).
    timeout: Option<String>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum BackoffSpec {
    Fixed,
    Exponential,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum TriggerRuleSpec {
    AllSuccess,
    AllFailed,
    AllDone,
    OneSuccess,
    OneFailed,
    NoneFailed,
    NoneSkipped,
    NoneFailedMinOneSuccess,
    Always,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum AlertEventSpec {
    Failure,
    Retry,
    Success,
    RunFailure,
    RunSuccess,
}

/// Alert settings.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct AlertsSpec {
    /// Email through the SMTP server in the config file.
    email: Option<EmailSpec>,
    /// HTTP POSTs.
    webhook: Option<WebhookSpec>,
}

/// Email alerts.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct EmailSpec {
    /// Recipients (default: the config file's).
    to: Option<Vec<String>>,
    /// Events that send a message (default: [failure]).
    on: Option<Vec<AlertEventSpec>>,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
enum WebhookFormatSpec {
    Json,
    Slack,
}

/// Webhook alerts.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct WebhookSpec {
    /// Where to POST.
    urls: Vec<String>,
    /// `json` (default) or `slack`.
    format: Option<WebhookFormatSpec>,
    /// Events that send a POST (default: [failure]).
    on: Option<Vec<AlertEventSpec>>,
}

/// A task.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
#[allow(dead_code)]
struct TaskSpec {
    /// The task's id, unique in the DAG: lower-case letters, digits, `_` and `-`, at most 128
    /// characters.
    #[schemars(regex(pattern = r"^[a-z0-9_-]+$"), length(max = 128))]
    id: String,
    /// A registered operator, e.g. `shell`.
    operator: String,
    /// What the task does.
    description: Option<String>,
    /// The operator's settings; every string is a template.
    with: Option<BTreeMap<String, Value>>,
    /// Tasks that must settle before this one starts.
    depends_on: Option<Vec<String>>,
    /// When the task runs given its upstream outcomes (default all_success).
    trigger_rule: Option<TriggerRuleSpec>,
    /// How many times a failed attempt is tried again (at most 100).
    #[schemars(range(max = 100))]
    retries: Option<u32>,
    /// Delay before a retry, e.g. 30s.
    retry_delay: Option<String>,
    /// `fixed` or `exponential`.
    retry_backoff: Option<BackoffSpec>,
    /// The cap on exponential backoff.
    max_retry_delay: Option<String>,
    /// An attempt running longer is cancelled.
    timeout: Option<String>,
    /// Overrides the DAG's alerts for this task.
    alerts: Option<AlertsSpec>,
}

/// The JSON Schema of a DAG file, with the `with:` of each registered operator.
pub fn dag_schema(registry: &Registry) -> Schema {
    let mut generator = SchemaGenerator::default();
    let mut schema = generator.root_schema_for::<DagFile>();
    let mut per_operator = Vec::new();
    for name in registry.names() {
        let Some(operator) = registry.get(name) else { continue };
        let with = operator.config_schema(&mut generator);
        per_operator.push(json_schema!({
            "if": { "properties": { "operator": { "const": name } }, "required": ["operator"] },
            "then": { "properties": { "with": with } }
        }));
    }
    let names: Vec<&str> = registry.names().collect();
    let definitions = generator.definitions().clone();
    if let Some(task) = definitions.get("TaskSpec").cloned() {
        let mut task: Schema = serde_json::from_value(task).unwrap_or_default();
        task.insert("allOf".into(), Value::Array(per_operator.into_iter().map(Value::from).collect()));
        if let Some(Value::Object(props)) = task.get_mut("properties") {
            props.insert("operator".into(), serde_json::json!({ "description": "A registered operator", "enum": names }));
        }
        let mut all = definitions;
        all.insert("TaskSpec".into(), task.into());
        schema.insert("$defs".into(), Value::Object(all));
    }
    schema.insert("title".into(), "flowctl DAG file".into());
    schema
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::{ALERTS_KEYS, DAG_KEYS, DEFAULTS_KEYS, EMAIL_KEYS, TASK_KEYS, WEBHOOK_KEYS};

    fn keys(schema: &Value) -> Vec<String> {
        let mut keys: Vec<String> = schema["properties"].as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    }

    fn sorted(list: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn schema_keys_match_what_compile_accepts() {
        let schema = serde_json::to_value(dag_schema(&Registry::new())).unwrap();
        let defs = &schema["$defs"];
        assert_eq!(keys(&schema), sorted(DAG_KEYS));
        assert_eq!(keys(&defs["TaskSpec"]), sorted(TASK_KEYS));
        assert_eq!(keys(&defs["Defaults"]), sorted(DEFAULTS_KEYS));
        assert_eq!(keys(&defs["RetentionSpec"]), sorted(crate::compile::RETENTION_KEYS));
        assert_eq!(keys(&defs["AlertsSpec"]), sorted(ALERTS_KEYS));
        assert_eq!(keys(&defs["EmailSpec"]), sorted(EMAIL_KEYS));
        assert_eq!(keys(&defs["WebhookSpec"]), sorted(WEBHOOK_KEYS));
    }

    #[test]
    fn schema_bounds_are_compile_bounds() {
        use crate::compile::{MAX_ACTIVE_RUNS, MAX_ACTIVE_TASKS, MAX_ID_LEN, MAX_RETENTION_DAYS, MAX_RETENTION_RUNS, MAX_RETRIES, MAX_TASKS};
        let schema = serde_json::to_value(dag_schema(&Registry::new())).unwrap();
        let (top, defs) = (&schema["properties"], &schema["$defs"]);
        assert_eq!(top["dag"]["maxLength"], MAX_ID_LEN);
        assert_eq!(top["max_active_runs"]["maximum"], MAX_ACTIVE_RUNS);
        assert_eq!(top["max_active_tasks"]["maximum"], MAX_ACTIVE_TASKS);
        assert_eq!(top["tasks"]["maxItems"], MAX_TASKS);
        assert_eq!(defs["RetentionSpec"]["properties"]["runs"]["maximum"], MAX_RETENTION_RUNS);
        assert_eq!(defs["RetentionSpec"]["properties"]["days"]["maximum"], MAX_RETENTION_DAYS);
        assert_eq!(defs["Defaults"]["properties"]["retries"]["maximum"], MAX_RETRIES);
        assert_eq!(defs["TaskSpec"]["properties"]["retries"]["maximum"], MAX_RETRIES);
        assert_eq!(defs["TaskSpec"]["properties"]["id"]["maxLength"], MAX_ID_LEN);
    }
}
