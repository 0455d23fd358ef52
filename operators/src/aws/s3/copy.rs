//! `s3.copy`: objects from one S3 location to another, server side (no bytes pass through
//! flowctl).
//!
//! Objects up to 5 GiB are copied with one CopyObject; larger ones with a multipart copy
//! (UploadPartCopy of byte ranges), as S3 requires.

use async_trait::async_trait;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::download::resolve;
use super::settings::{check_concurrency, check_s3, rendered_s3, Allow, Overwrite};
use super::transfer::{head, human_bytes, ObjectInfo, MIB, S3};
use super::url::{Glob, S3Url};
use crate::aws::settings::{aws_connection, aws_settings};

/// The largest object one CopyObject may copy.
const MAX_SINGLE_COPY: u64 = 5 * 1024 * MIB;
/// The part size of multipart copies.
const COPY_PART_SIZE: u64 = 512 * MIB;
/// Copies in flight when `concurrency` is not set.
const DEFAULT_COPIES: usize = 8;

aws_settings! {
    /// The settings of an `s3.copy` task.
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct CopyConfig {
        /// What to copy: one object (`s3://bucket/key`), everything under a prefix (ending with `/`),
        /// or the keys a glob matches (`s3://bucket/in/*.csv`).
        pub source: String,
        /// Where to: `s3://bucket/prefix/` (objects keep their names, or their keys below the source
        /// prefix or the glob's first folder with a wildcard), or `s3://bucket/key` for one object.
        pub destination: String,
        /// The AWS connection, for both ends [default: aws_default].
        connection,
        /// Copies in flight at once (1 to 64) [default: 8].
        concurrency,
        /// What to do with destination keys that already exist: `always` replaces them, `never`
        /// fails naming the first one (and copies nothing), `if_changed` skips objects whose size
        /// and ETag match [default: always].
        overwrite,
    }
}

/// The `s3.copy` operator.
pub struct Copy;

#[async_trait]
impl Operator for Copy {
    const NAME: &'static str = "s3.copy";
    const DOCS: &'static str = "docs/operators/s3.md";
    type Config = CopyConfig;

    fn check(config: &CopyConfig) -> Result<(), ConfigError> {
        let source = check_s3("source", &config.source, Allow::Any)?;
        let destination = check_s3("destination", &config.destination, Allow::KeyOrPrefix)?;
        if let (Some(source), Some(destination)) = (source, destination) {
            if (source.is_prefix() || source.is_glob()) && !destination.is_prefix() {
                return Err(ConfigError::new(
                    "destination",
                    format!("\"{destination}\" is one key, and the source names many objects; end it with / to copy under that prefix"),
                ));
            }
            if source == destination {
                return Err(ConfigError::new("destination", "is the source itself; copy to another key or prefix"));
            }
        }
        check_concurrency("concurrency", config.concurrency)
    }

    async fn execute(&self, config: CopyConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        run(config, ctx).await
    }
}

async fn run(config: CopyConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
    let source = rendered_s3("source", &config.source, Allow::Any)?;
    let destination = rendered_s3("destination", &config.destination, Allow::KeyOrPrefix)?;
    let many = source.is_prefix() || source.is_glob();
    if many && !destination.is_prefix() {
        return Err(TaskError::fatal(format!("destination {destination} is one key, and the source names many objects; end it with /")));
    }
    let conn = aws_connection(&ctx, &config.connection)?;
    let s3 = S3::connect(&conn).await?;
    let objects = resolve(&s3, &source).await?;
    let base = if source.is_glob() {
        Glob::new(&source.key).map_err(|e| TaskError::fatal(format!("source: {e}")))?.base().to_string()
    } else if source.is_prefix() {
        source.key.clone()
    } else {
        source.key.rsplit_once('/').map(|(dir, _)| format!("{dir}/")).unwrap_or_default()
    };
    let pairs: Vec<(ObjectInfo, S3Url)> = objects
        .into_iter()
        .map(|object| {
            let key = if destination.is_prefix() {
                format!("{}{}", destination.key, object.key.strip_prefix(&base).unwrap_or(&object.key))
            } else {
                destination.key.clone()
            };
            (object, destination.with_key(key))
        })
        .collect();
    let total: u64 = pairs.iter().map(|(o, _)| o.size).sum();
    ctx.log.line(&format!("{} object{} ({}) from {source} to {destination}", pairs.len(), if pairs.len() == 1 { "" } else { "s" }, human_bytes(total)));

    // Decide before copying anything, so `never` leaves the destination untouched.
    let mut todo = Vec::new();
    let mut skipped = Vec::new();
    for (object, target) in pairs {
        if config.overwrite != Overwrite::Always {
            if let Some(existing) = head(&s3, &target).await? {
                if config.overwrite == Overwrite::Never {
                    return Err(TaskError::fatal(format!(
                        "{target} already exists and overwrite is never: nothing was copied; delete it, copy to another key, or set overwrite: always or if_changed"
                    )));
                }
                if existing.size == object.size && existing.etag == object.etag {
                    ctx.log.line(&format!("unchanged, skipped: {target}"));
                    skipped.push(target.key);
                    continue;
                }
            }
        }
        todo.push((object, target));
    }

    let concurrency = config.concurrency.unwrap_or(DEFAULT_COPIES);
    let mut tasks = JoinSet::new();
    let mut copied: Vec<(String, u64)> = Vec::new();
    let mut pending = todo.into_iter();
    loop {
        while tasks.len() < concurrency {
            let Some((object, target)) = pending.next() else { break };
            let (s3, from) = (s3.clone(), source.with_key(&object.key));
            tasks.spawn(async move {
                copy_object(&s3, &from, &target, object.size).await?;
                Ok::<_, TaskError>((from, target, object.size))
            });
        }
        let joined = tokio::select! {
            joined = tasks.join_next() => joined,
            _ = ctx.cancel.cancelled() => return Err(TaskError::cancelled()),
        };
        let Some(joined) = joined else { break };
        let (from, target, size) = joined.map_err(|e| TaskError::retryable(format!("a copy stopped: {e}")))??;
        ctx.log.line(&format!("{from} -> {target} ({})", human_bytes(size)));
        copied.push((target.key, size));
    }
    copied.sort();
    let bytes: u64 = copied.iter().map(|(_, b)| b).sum();
    ctx.log.line(&format!(
        "copied {} object{} ({}){}",
        copied.len(),
        if copied.len() == 1 { "" } else { "s" },
        human_bytes(bytes),
        if skipped.is_empty() { String::new() } else { format!("; {} unchanged, skipped", skipped.len()) }
    ));
    let mut outputs = Outputs::new();
    outputs.insert("bucket".into(), json!(destination.bucket));
    outputs.insert("keys".into(), Value::from(copied.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()));
    outputs.insert("bytes".into(), json!(bytes));
    outputs.insert("files_copied".into(), json!(copied.len()));
    outputs.insert("files_skipped".into(), json!(skipped.len()));
    outputs.insert("skipped_keys".into(), Value::from(skipped));
    Ok(Outcome::Success { outputs })
}

/// Copies one object server side: CopyObject up to 5 GiB, a multipart copy above.
async fn copy_object(s3: &S3, from: &S3Url, to: &S3Url, size: u64) -> Result<(), TaskError> {
    let what = format!("copy {from} to {to}");
    if size <= MAX_SINGLE_COPY {
        s3.client()
            .copy_object()
            .copy_source(copy_source(from))
            .bucket(&to.bucket)
            .key(&to.key)
            .send()
            .await
            .map_err(|e| s3.error(&e, &what))?;
        return Ok(());
    }
    let created =
        s3.client().create_multipart_upload().bucket(&to.bucket).key(&to.key).send().await.map_err(|e| s3.error(&e, &what))?;
    let upload_id = created.upload_id().unwrap_or_default().to_string();
    let mut parts = Vec::new();
    let result = async {
        for (index, start) in (0..size).step_by(COPY_PART_SIZE as usize).enumerate() {
            let end = (start + COPY_PART_SIZE).min(size) - 1;
            let number = index as i32 + 1;
            let reply = s3
                .client()
                .upload_part_copy()
                .copy_source(copy_source(from))
                .copy_source_range(format!("bytes={start}-{end}"))
                .bucket(&to.bucket)
                .key(&to.key)
                .upload_id(&upload_id)
                .part_number(number)
                .send()
                .await
                .map_err(|e| s3.error(&e, &format!("{what} (part {number})")))?;
            let etag = reply.copy_part_result().and_then(|r| r.e_tag()).unwrap_or_default().to_string();
            parts.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
        }
        s3.client()
            .complete_multipart_upload()
            .bucket(&to.bucket)
            .key(&to.key)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await
            .map_err(|e| s3.error(&e, &what))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = s3.client().abort_multipart_upload().bucket(&to.bucket).key(&to.key).upload_id(&upload_id).send().await;
    }
    result
}

/// The `x-amz-copy-source` value: `bucket/key` with the key percent-encoded (its `/` kept).
pub fn copy_source(url: &S3Url) -> String {
    let mut out = format!("{}/", url.bucket);
    for byte in url.key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_engine::Registry;

    fn validate(with: Value) -> Result<(), ConfigError> {
        let mut registry = Registry::new();
        registry.register(Copy);
        registry.get("s3.copy").unwrap().validate(&with)
    }

    #[test]
    fn copy_source_encodes_the_key() {
        assert_eq!(copy_source(&S3Url::parse("s3://bkt/a b/ü+x.csv").unwrap()), "bkt/a%20b/%C3%BC%2Bx.csv");
    }

    #[test]
    fn config_errors_name_the_setting() {
        assert!(validate(json!({"source": "s3://bkt/in/*.csv", "destination": "s3://bkt/out/"})).is_ok());
        let err = validate(json!({"source": "s3://bkt/in/", "destination": "s3://bkt/out"})).unwrap_err();
        assert_eq!(
            (err.path.as_str(), err.message.as_str()),
            ("destination", "\"s3://bkt/out\" is one key, and the source names many objects; end it with / to copy under that prefix")
        );
        let err = validate(json!({"source": "s3://bkt/a", "destination": "s3://bkt/a"})).unwrap_err();
        assert_eq!(err.message, "is the source itself; copy to another key or prefix");
        let err = validate(json!({"source": "s3://bkt/a", "destination": "s3://bkt/b*"})).unwrap_err();
        assert_eq!(err.path, "destination");
    }
}
