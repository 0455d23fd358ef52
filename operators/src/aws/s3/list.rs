//! `s3.list`: the keys and sizes under a prefix or matching a glob, as outputs downstream tasks
//! read through templates (`{{ tasks.list.outputs.keys }}`).

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::settings::{check_s3, rendered_s3, Allow, Size};
use super::transfer::{human_bytes, list_object_infos, ObjectInfo, S3};
use super::url::{Glob, S3Url};
use crate::aws::settings::{aws_connection, aws_settings};

/// The most objects a listing returns when `max_keys` is not set: outputs are stored with the
/// run, so a listing of millions belongs in a file, not in outputs.
const DEFAULT_MAX_KEYS: usize = 10_000;

aws_settings! {
    /// The settings of an `s3.list` task.
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct ListConfig {
        /// What to list: every key starting with a prefix (`s3://bucket/in/2024-`, `s3://bucket/`),
        /// or the keys a glob matches (`s3://bucket/in/*.csv`, `s3://bucket/in/**/*.json`).
        pub source: String,
        connection,
        /// Leave out objects smaller than this, e.g. `1` to skip empty ones or `1KiB` [default: 0].
        pub min_size: Option<Size>,
        /// Fail when more objects than this match, rather than store a huge output [default: 10000].
        pub max_keys: Option<usize>,
    }
}

/// The `s3.list` operator.
pub struct List;

#[async_trait]
impl Operator for List {
    const NAME: &'static str = "s3.list";
    const DOCS: &'static str = "docs/operators/s3.md";
    type Config = ListConfig;

    fn check(config: &ListConfig) -> Result<(), ConfigError> {
        check_s3("source", &config.source, Allow::Any)?;
        if let Some(size) = &config.min_size {
            size.bytes().map_err(|e| ConfigError::new("min_size", e))?;
        }
        if config.max_keys == Some(0) {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        Ok(())
    }

    async fn execute(&self, config: ListConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        let source = rendered_s3("source", &config.source, Allow::Any)?;
        let min_size = config.min_size.as_ref().map(Size::bytes).transpose().map_err(|e| TaskError::fatal(format!("min_size: {e}")))?.unwrap_or(0);
        let conn = aws_connection(&ctx, &config.connection)?;
        let s3 = S3::connect(&conn).await?;
        let objects = tokio::select! {
            found = matching(&s3, &source, min_size) => found?,
            _ = ctx.cancel.cancelled() => return Err(TaskError::cancelled()),
        };
        let max_keys = config.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
        if objects.len() > max_keys {
            return Err(TaskError::fatal(format!(
                "{} objects match {source}, more than max_keys ({max_keys}); narrow the prefix or glob, or raise max_keys",
                objects.len()
            )));
        }
        let total: u64 = objects.iter().map(|o| o.size).sum();
        ctx.log.line(&format!("{} object{} ({}) match {source}", objects.len(), if objects.len() == 1 { "" } else { "s" }, human_bytes(total)));
        Ok(Outcome::Success { outputs: listing_outputs(&source.bucket, &objects) })
    }
}

/// The objects under `source` (a prefix, or a glob's literal base filtered by the glob) of at
/// least `min_size` bytes, in key order. Folder markers (keys ending with `/`) are left out.
pub(crate) async fn matching(s3: &S3, source: &S3Url, min_size: u64) -> Result<Vec<ObjectInfo>, TaskError> {
    let (prefix, glob) = if source.is_glob() {
        let glob = Glob::new(&source.key).map_err(|e| TaskError::fatal(format!("source: {e}")))?;
        (glob.base().to_string(), Some(glob))
    } else {
        (source.key.clone(), None)
    };
    Ok(list_object_infos(s3, &source.bucket, &prefix)
        .await?
        .into_iter()
        .filter(|o| !o.key.ends_with('/') && o.size >= min_size && glob.as_ref().is_none_or(|g| g.matches(&o.key)))
        .collect())
}

/// `keys`, `sizes`, `uris`, `count`, `total_bytes` and `bucket` of a listing.
pub(crate) fn listing_outputs(bucket: &str, objects: &[ObjectInfo]) -> Outputs {
    let mut outputs = Outputs::new();
    outputs.insert("bucket".into(), json!(bucket));
    outputs.insert("keys".into(), Value::from(objects.iter().map(|o| o.key.clone()).collect::<Vec<_>>()));
    outputs.insert("sizes".into(), Value::from(objects.iter().map(|o| o.size).collect::<Vec<_>>()));
    outputs.insert("uris".into(), Value::from(objects.iter().map(|o| format!("s3://{bucket}/{}", o.key)).collect::<Vec<_>>()));
    outputs.insert("count".into(), json!(objects.len()));
    outputs.insert("total_bytes".into(), json!(objects.iter().map(|o| o.size).sum::<u64>()));
    outputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_engine::Registry;

    fn validate(with: Value) -> Result<(), ConfigError> {
        let mut registry = Registry::new();
        registry.register(List);
        registry.get("s3.list").unwrap().validate(&with)
    }

    #[test]
    fn config_errors_name_the_setting() {
        assert!(validate(json!({"source": "s3://bkt/in/2024-", "min_size": "1KiB", "max_keys": 50})).is_ok());
        let err = validate(json!({"source": "s3://bkt/in/", "max_keys": 0})).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("max_keys", "must be at least 1"));
        let err = validate(json!({"source": "s3://bkt/in/", "min_size": "big"})).unwrap_err();
        assert_eq!(err.path, "min_size");
        let err = validate(json!({"source": "s3://b/in/"})).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("source", "\"s3://b/in/\": bucket \"b\" must be 3 to 63 characters long"));
    }

    #[test]
    fn outputs_keep_keys_and_sizes_aligned() {
        let objects = [
            ObjectInfo { key: "in/a.csv".into(), size: 5, etag: String::new() },
            ObjectInfo { key: "in/b.csv".into(), size: 7, etag: String::new() },
        ];
        let outputs = listing_outputs("bkt", &objects);
        assert_eq!(outputs["keys"], json!(["in/a.csv", "in/b.csv"]));
        assert_eq!(outputs["sizes"], json!([5, 7]));
        assert_eq!(outputs["uris"], json!(["s3://bkt/in/a.csv", "s3://bkt/in/b.csv"]));
        assert_eq!(outputs["count"], 2);
        assert_eq!(outputs["total_bytes"], 12);
    }
}
