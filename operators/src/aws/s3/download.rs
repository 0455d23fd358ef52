//! `s3.download`: an object, a prefix or a glob from S3 to a local folder.
//!
//! Each object is written to a temporary file beside its destination and renamed into place once
//! complete, so a failed or cancelled download never leaves a partial file under the final name.
//! Keys that would climb out of the folder (`..`) are refused.

use std::path::{Path, PathBuf};
use std::time::Instant;

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::settings::{check_concurrency, check_local, check_s3, rendered_s3, Allow, Overwrite};
use super::transfer::{download_to_file, head, human_bytes, list_object_infos, local_etag_like, multipart_part_size, ObjectInfo, S3};
use super::url::{path_for, Glob, S3Url};
use crate::aws::settings::{aws_connection, aws_settings};

/// Objects downloaded at once when `concurrency` is not set.
const DEFAULT_DOWNLOADS: usize = 4;

aws_settings! {
    /// The settings of an `s3.download` task.
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct DownloadConfig {
        /// What to download: one object (`s3://bucket/key`), everything under a prefix (ending with
        /// `/`), or the keys a glob matches (`s3://bucket/in/*.csv`, `s3://bucket/in/**/*.json`).
        pub source: String,
        /// The local folder the files go to (created when missing). An object keeps its file name;
        /// under a prefix or glob, files keep their paths below the prefix (or the glob's first
        /// folder with a wildcard).
        pub destination: String,
        connection,
        /// Objects downloaded at once (1 to 64) [default: 4].
        concurrency,
        /// What to do with local files that already exist: `always` replaces them, `never` fails
        /// naming the first one (and downloads nothing), `if_changed` skips files whose size and
        /// checksum match the object's [default: always].
        overwrite,
    }
}

/// The `s3.download` operator.
pub struct Download;

#[async_trait]
impl Operator for Download {
    const NAME: &'static str = "s3.download";
    const DOCS: &'static str = "docs/operators/s3.md";
    type Config = DownloadConfig;

    fn check(config: &DownloadConfig) -> Result<(), ConfigError> {
        check_s3("source", &config.source, Allow::Any)?;
        check_local("destination", &config.destination)?;
        check_concurrency("concurrency", config.concurrency)
    }

    async fn execute(&self, config: DownloadConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        run(config, ctx).await
    }
}

/// One object to download and where it goes.
#[derive(Debug, Clone)]
struct Item {
    object: ObjectInfo,
    path: PathBuf,
}

async fn run(config: DownloadConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
    let source = rendered_s3("source", &config.source, Allow::Any)?;
    let dest = PathBuf::from(&config.destination);
    if dest.is_file() {
        return Err(TaskError::fatal(format!("destination {} is a file; give the folder the files go to", dest.display())));
    }
    let conn = aws_connection(&ctx, &config.connection)?;
    let s3 = S3::connect(&conn).await?;
    let objects = resolve(&s3, &source).await?;
    // The part of the keys that the local paths leave out.
    let base = if source.is_glob() {
        Glob::new(&source.key).map_err(|e| TaskError::fatal(format!("source: {e}")))?.base().to_string()
    } else if source.is_prefix() {
        source.key.clone()
    } else {
        source.key.rsplit_once('/').map(|(dir, _)| format!("{dir}/")).unwrap_or_default()
    };
    let mut items = Vec::with_capacity(objects.len());
    for object in objects {
        let path = path_for(&dest, &base, &object.key).map_err(|e| TaskError::fatal(format!("s3://{}/{}: {e}", source.bucket, object.key)))?;
        items.push(Item { object, path });
    }
    let total: u64 = items.iter().map(|i| i.object.size).sum();
    ctx.log.line(&format!(
        "{} object{} ({}) from {source} to {}",
        items.len(),
        if items.len() == 1 { "" } else { "s" },
        human_bytes(total),
        dest.display()
    ));

    let (todo, skipped) = decide(&s3, &source.bucket, items, config.overwrite).await?;
    let concurrency = config.concurrency.unwrap_or(DEFAULT_DOWNLOADS);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let mut done: Vec<(Item, u64)> = Vec::new();
    let mut pending = todo.into_iter();
    loop {
        while tasks.len() < concurrency {
            let Some(item) = pending.next() else { break };
            let (s3, cancel, url) = (s3.clone(), ctx.cancel.clone(), source.with_key(&item.object.key));
            tasks.spawn(async move {
                let bytes = download_to_file(&s3, &url, &item.path, &cancel).await?;
                Ok::<_, TaskError>((item, bytes))
            });
        }
        let joined = tokio::select! {
            joined = tasks.join_next() => joined,
            _ = ctx.cancel.cancelled() => return Err(TaskError::cancelled()),
        };
        let Some(joined) = joined else { break };
        let (item, bytes) = joined.map_err(|e| TaskError::retryable(format!("a download stopped: {e}")))??;
        ctx.log.line(&format!("s3://{}/{} -> {} ({})", source.bucket, item.object.key, item.path.display(), human_bytes(bytes)));
        done.push((item, bytes));
    }
    done.sort_by(|a, b| a.0.object.key.cmp(&b.0.object.key));
    let bytes: u64 = done.iter().map(|(_, b)| b).sum();
    ctx.log.line(&format!(
        "downloaded {} file{} ({}) in {:.1}s{}",
        done.len(),
        if done.len() == 1 { "" } else { "s" },
        human_bytes(bytes),
        started.elapsed().as_secs_f64(),
        if skipped.is_empty() { String::new() } else { format!("; {} unchanged, skipped", skipped.len()) }
    ));

    let mut outputs = Outputs::new();
    outputs.insert("files".into(), Value::from(done.iter().map(|(i, _)| i.path.display().to_string()).collect::<Vec<_>>()));
    outputs.insert("keys".into(), Value::from(done.iter().map(|(i, _)| i.object.key.clone()).collect::<Vec<_>>()));
    outputs.insert("bytes".into(), json!(bytes));
    outputs.insert("files_downloaded".into(), json!(done.len()));
    outputs.insert("files_skipped".into(), json!(skipped.len()));
    outputs.insert("skipped_files".into(), Value::from(skipped));
    Ok(Outcome::Success { outputs })
}

/// The objects `source` names: the object itself, everything under the prefix, or what the glob
/// matches; an error when there is none.
pub(crate) async fn resolve(s3: &S3, source: &S3Url) -> Result<Vec<ObjectInfo>, TaskError> {
    if source.is_glob() {
        let glob = Glob::new(&source.key).map_err(|e| TaskError::fatal(format!("source: {e}")))?;
        let objects: Vec<ObjectInfo> =
            list_object_infos(s3, &source.bucket, glob.base()).await?.into_iter().filter(|o| glob.matches(&o.key)).collect();
        if objects.is_empty() {
            return Err(TaskError::fatal(format!("no object matches {source}")));
        }
        return Ok(objects);
    }
    if source.is_prefix() {
        // "Folder" marker objects (keys ending with /) hold no file.
        let objects: Vec<ObjectInfo> =
            list_object_infos(s3, &source.bucket, &source.key).await?.into_iter().filter(|o| !o.key.ends_with('/')).collect();
        if objects.is_empty() {
            return Err(TaskError::fatal(format!("no object under {source}")));
        }
        return Ok(objects);
    }
    match head(s3, source).await? {
        Some(found) => Ok(vec![ObjectInfo { key: source.key.clone(), size: found.size, etag: found.etag }]),
        None => Err(TaskError::fatal(format!("{source} does not exist; check the key (a prefix ends with /)"))),
    }
}

/// Splits the items into those to download and the local files skipped as unchanged; with
/// `never`, fails on the first file that exists.
async fn decide(s3: &S3, bucket: &str, items: Vec<Item>, overwrite: Overwrite) -> Result<(Vec<Item>, Vec<String>), TaskError> {
    if overwrite == Overwrite::Always {
        return Ok((items, Vec::new()));
    }
    if overwrite == Overwrite::Never {
        if let Some(item) = items.iter().find(|i| i.path.exists()) {
            return Err(TaskError::fatal(format!(
                "{} already exists (for s3://{bucket}/{}) and overwrite is never: nothing was downloaded; remove it, pick another destination, or set overwrite: always or if_changed",
                item.path.display(),
                item.object.key
            )));
        }
        return Ok((items, Vec::new()));
    }
    let mut todo = Vec::new();
    let mut skipped = Vec::new();
    for item in items {
        let url = S3Url { bucket: bucket.to_string(), key: item.object.key.clone() };
        if unchanged(s3, &url, &item.path, &item.object).await? {
            skipped.push(item.path.display().to_string());
        } else {
            todo.push(item);
        }
    }
    Ok((todo, skipped))
}

/// Whether the local file has the object's size and ETag.
async fn unchanged(s3: &S3, url: &S3Url, path: &Path, object: &ObjectInfo) -> Result<bool, TaskError> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(false) };
    if !meta.is_file() || meta.len() != object.size {
        return Ok(false);
    }
    let part_size = if object.etag.contains('-') {
        match multipart_part_size(s3, url).await? {
            Some(part_size) => part_size,
            None => return Ok(false),
        }
    } else {
        0
    };
    Ok(local_etag_like(path, object.size, &object.etag, part_size).await?.is_some_and(|etag| etag == object.etag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_engine::Registry;
    use serde_json::json;

    fn validate(with: Value) -> Result<(), ConfigError> {
        let mut registry = Registry::new();
        registry.register(Download);
        registry.get("s3.download").unwrap().validate(&with)
    }

    #[test]
    fn config_errors_name_the_setting() {
        assert!(validate(json!({"source": "s3://bkt/in/**/*.csv", "destination": "/data/in", "overwrite": "if_changed"})).is_ok());
        assert!(validate(json!({"source": "s3://bkt/in/{{ ds }}/", "destination": "/data/{{ ds }}"})).is_ok());
        let err = validate(json!({"source": "/data/a.csv", "destination": "/data/in"})).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("source", "\"/data/a.csv\" is not an s3:// URL; write it as s3://bucket/key"));
        let err = validate(json!({"source": "s3://bkt/a.csv", "destination": "s3://bkt/b/"})).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("destination", "\"s3://bkt/b/\" is a URL; this setting takes a local path"));
        let err = validate(json!({"source": "s3://bkt/a.csv", "destination": "x", "concurrency": 65})).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("concurrency", "65 is more than the 64 requests a task may keep in flight"));
    }
}
