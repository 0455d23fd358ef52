//! `s3.delete`: listed keys, or everything under a prefix.
//!
//! Keys go to DeleteObjects in batches of 1,000 (S3's limit); a key S3 refuses fails the task with
//! the key and S3's reason. Deleting a key that does not exist is not an error (S3 answers the
//! same), so a retried delete succeeds.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde::Deserialize;
use serde_json::{json, Value};

use super::settings::{check_s3, rendered_s3, Allow};
use super::transfer::{list_objects, S3};
use crate::aws::settings::{aws_connection, aws_settings};

/// S3's limit of keys per DeleteObjects.
const BATCH: usize = 1000;

aws_settings! {
    /// The settings of an `s3.delete` task.
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct DeleteConfig {
        /// The objects to delete, as `s3://bucket/key` URLs. Give this or `prefix`.
        pub keys: Option<Vec<String>>,
        /// Delete every object under this prefix (`s3://bucket/tmp/run-1/`; a whole bucket is
        /// refused). Give this or `keys`.
        pub prefix: Option<String>,
        connection,
    }
}

/// The `s3.delete` operator.
pub struct DeleteObjects;

#[async_trait]
impl Operator for DeleteObjects {
    const NAME: &'static str = "s3.delete";
    const DOCS: &'static str = "docs/operators/s3.md";
    type Config = DeleteConfig;

    fn check(config: &DeleteConfig) -> Result<(), ConfigError> {
        match (&config.keys, &config.prefix) {
            (Some(_), Some(_)) => return Err(ConfigError::new("", "give either `keys` or `prefix`, not both")),
            (None, None) => return Err(ConfigError::new("", "give `keys` (s3:// URLs of objects) or `prefix` (an s3:// prefix to empty)")),
            (Some(keys), None) => {
                if keys.is_empty() {
                    return Err(ConfigError::new("keys", "is empty; list at least one s3://bucket/key"));
                }
                for (i, key) in keys.iter().enumerate() {
                    check_s3(&format!("keys[{i}]"), key, Allow::Key)?;
                }
            }
            (None, Some(prefix)) => {
                if let Some(url) = check_s3("prefix", prefix, Allow::KeyOrPrefix)? {
                    check_prefix(&url.key).map_err(|e| ConfigError::new("prefix", e))?;
                }
            }
        }
        Ok(())
    }

    async fn execute(&self, config: DeleteConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        run(config, ctx).await
    }
}

fn check_prefix(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("names a whole bucket; s3.delete empties a prefix inside one (s3://bucket/some/prefix/)".into());
    }
    Ok(())
}

async fn run(config: DeleteConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
    let conn = aws_connection(&ctx, &config.connection)?;
    let s3 = S3::connect(&conn).await?;
    // Keys by bucket.
    let mut targets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(keys) = &config.keys {
        for (i, key) in keys.iter().enumerate() {
            let url = rendered_s3(&format!("keys[{i}]"), key, Allow::Key)?;
            targets.entry(url.bucket).or_default().push(url.key);
        }
    }
    if let Some(prefix) = &config.prefix {
        let url = rendered_s3("prefix", prefix, Allow::KeyOrPrefix)?;
        check_prefix(&url.key).map_err(|e| TaskError::fatal(format!("prefix: {e}")))?;
        let keys: Vec<String> = list_objects(&s3, &url.bucket, &url.key).await?.into_iter().map(|(k, _)| k).collect();
        ctx.log.line(&format!("{} object{} under {url}", keys.len(), if keys.len() == 1 { "" } else { "s" }));
        targets.entry(url.bucket).or_default().extend(keys);
    }
    let mut deleted = Vec::new();
    for (bucket, keys) in targets {
        for batch in keys.chunks(BATCH) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TaskError::fatal(format!("s3://{bucket}: {e}")))?;
            let delete = Delete::builder().set_objects(Some(objects)).quiet(true).build().map_err(|e| TaskError::fatal(format!("s3://{bucket}: {e}")))?;
            let request = s3.client().delete_objects().bucket(&bucket).delete(delete).send();
            let reply = tokio::select! {
                reply = request => reply.map_err(|e| s3.error(&e, &format!("s3://{bucket}/ (DeleteObjects)")))?,
                _ = ctx.cancel.cancelled() => return Err(TaskError::cancelled()),
            };
            if let Some(first) = reply.errors().first() {
                let code = first.code().unwrap_or("");
                let message = first.message().unwrap_or("");
                let fatal = matches!(code, "AccessDenied" | "NoSuchBucket" | "InvalidArgument");
                let text = format!(
                    "s3://{bucket}/{}: S3 refused to delete it ({code}: {message}){}",
                    first.key().unwrap_or(""),
                    if reply.errors().len() > 1 { format!(", and {} more keys", reply.errors().len() - 1) } else { String::new() }
                );
                return Err(if fatal { TaskError::fatal(text) } else { TaskError::retryable(text) });
            }
            for key in batch {
                deleted.push(format!("s3://{bucket}/{key}"));
            }
            ctx.log.line(&format!("deleted {} object{} from s3://{bucket}", batch.len(), if batch.len() == 1 { "" } else { "s" }));
        }
    }
    let mut outputs = Outputs::new();
    outputs.insert("count".into(), json!(deleted.len()));
    outputs.insert("deleted".into(), Value::from(deleted));
    Ok(Outcome::Success { outputs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_engine::Registry;

    fn validate(with: Value) -> Result<(), ConfigError> {
        let mut registry = Registry::new();
        registry.register(DeleteObjects);
        registry.get("s3.delete").unwrap().validate(&with)
    }

    #[test]
    fn config_errors_name_the_setting() {
        assert!(validate(json!({"keys": ["s3://bkt/a", "s3://other/b"]})).is_ok());
        assert!(validate(json!({"prefix": "s3://bkt/tmp/"})).is_ok());
        assert_eq!(validate(json!({})).unwrap_err().message, "give `keys` (s3:// URLs of objects) or `prefix` (an s3:// prefix to empty)");
        assert_eq!(validate(json!({"keys": ["s3://bkt/a"], "prefix": "s3://bkt/x/"})).unwrap_err().message, "give either `keys` or `prefix`, not both");
        let err = validate(json!({"keys": ["s3://bkt/a", "s3://bkt/dir/"]})).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("keys[1]", "\"s3://bkt/dir/\" names a prefix; name one object (a key that does not end with /)"));
        let err = validate(json!({"prefix": "s3://bkt/"})).unwrap_err();
        assert_eq!(
            (err.path.as_str(), err.message.as_str()),
            ("prefix", "names a whole bucket; s3.delete empties a prefix inside one (s3://bucket/some/prefix/)")
        );
        assert_eq!(validate(json!({"keys": []})).unwrap_err().message, "is empty; list at least one s3://bucket/key");
    }
}
