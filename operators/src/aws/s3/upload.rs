//! `s3.upload`: a local file, folder or glob to S3.
//!
//! Files up to `part_size` go in one PutObject, larger ones in a multipart upload whose parts are
//! sent `concurrency` at a time (the same budget is shared by all files, so a folder of small
//! files is sent in parallel too). Every request carries the CRC32 of its bytes, so S3 rejects a
//! corrupted transfer. `overwrite` decides what happens to existing keys, before anything is
//! sent: `never` fails on the first existing key and uploads nothing; `if_changed` skips files
//! whose size and ETag match the object's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, Operator, Outcome, Outputs, TaskContext, TaskError};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::settings::{
    check_concurrency, check_local, check_part_size, check_s3, rendered_s3, Allow, Overwrite, Size,
    DEFAULT_CONCURRENCY, DEFAULT_PART_SIZE,
};
use super::transfer::{effective_part_size, head, human_bytes, local_error, local_etag_like, multipart_part_size, upload_file, UploadOptions, S3};
use super::url::{has_glob_chars, key_for, Glob, S3Url};
use crate::aws::settings::{aws_connection, aws_settings};

aws_settings! {
    /// The settings of an `s3.upload` task.
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct UploadConfig {
        /// What to upload: a local file, a folder (everything under it, keys keep the folder's
        /// layout), or a glob (`exports/*.csv`, `out/**/*.parquet`; keys keep the layout below the
        /// glob's first folder with a wildcard). Relative paths are from flowctl's working directory.
        pub source: String,
        /// Where to: `s3://bucket/prefix/` (files keep their names, or their paths below a folder or
        /// glob), or `s3://bucket/key` to give a single file its own key.
        pub destination: String,
        connection,
        /// The size of each part of a multipart upload, e.g. `16MiB` (5 MiB to 5 GiB); files up to
        /// this size go in one request [default: 16MiB].
        pub part_size: Option<Size>,
        /// Requests in flight at once, parts and files together (1 to 64) [default: 8].
        concurrency,
        /// The objects' Content-Type [default: from each file's extension, e.g. text/csv, else
        /// application/octet-stream].
        pub content_type: Option<String>,
        /// What to do with keys that already exist: `always` replaces them, `never` fails naming the
        /// first one (and uploads nothing), `if_changed` skips files whose size and checksum match
        /// [default: always].
        overwrite,
    }
}

/// The `s3.upload` operator.
pub struct Upload;

#[async_trait]
impl Operator for Upload {
    const NAME: &'static str = "s3.upload";
    const DOCS: &'static str = "docs/operators/s3.md";
    type Config = UploadConfig;

    fn check(config: &UploadConfig) -> Result<(), ConfigError> {
        check_local("source", &config.source)?;
        if !flowctl_engine::template::is_template(&config.source) && has_glob_chars(&config.source) {
            Glob::new(&config.source).map_err(|e| ConfigError::new("source", e))?;
        }
        let destination = check_s3("destination", &config.destination, Allow::KeyOrPrefix)?;
        if let Some(destination) = destination {
            if has_glob_chars(&config.source) && !destination.is_prefix() {
                return Err(ConfigError::new(
                    "destination",
                    format!("\"{destination}\" is one key, and a glob source can match many files; end it with / to upload under that prefix"),
                ));
            }
        }
        if let Some(size) = &config.part_size {
            check_part_size("part_size", size)?;
        }
        check_concurrency("concurrency", config.concurrency)?;
        if let Some(content_type) = &config.content_type {
            if !content_type.contains('/') && !flowctl_engine::template::is_template(content_type) {
                return Err(ConfigError::new("content_type", format!("\"{content_type}\" is not a media type; write e.g. text/csv or application/json")));
            }
        }
        Ok(())
    }

    async fn execute(&self, config: UploadConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        run(config, ctx).await
    }
}

/// One file to upload and its key.
#[derive(Debug, Clone)]
struct Item {
    path: PathBuf,
    key: String,
    size: u64,
}

async fn run(config: UploadConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
    let destination = rendered_s3("destination", &config.destination, Allow::KeyOrPrefix)?;
    let part_size = match &config.part_size {
        Some(size) => check_part_size("part_size", size).map_err(|e| TaskError::fatal(format!("part_size: {}", e.message)))?,
        None => DEFAULT_PART_SIZE,
    };
    let concurrency = config.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    let items = tokio::task::spawn_blocking({
        let source = config.source.clone();
        let destination = destination.clone();
        move || plan(&source, &destination)
    })
    .await
    .map_err(|e| TaskError::retryable(format!("listing the source stopped: {e}")))??;
    let total: u64 = items.iter().map(|i| i.size).sum();
    ctx.log.line(&format!(
        "{} file{} ({}) from {} to s3://{}/{}",
        items.len(),
        if items.len() == 1 { "" } else { "s" },
        human_bytes(total),
        config.source,
        destination.bucket,
        if items.len() == 1 { items[0].key.as_str() } else { destination.key.as_str() }
    ));

    let conn = aws_connection(&ctx, &config.connection)?;
    let s3 = S3::connect(&conn).await?;
    let (todo, skipped) = decide(&s3, &destination.bucket, items, config.overwrite, part_size, concurrency, &ctx).await?;

    let mut options = UploadOptions::new(part_size, concurrency);
    options.content_type = config.content_type.clone();
    options.progress = Some(ctx.log.clone());
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    let mut uploaded: Vec<(String, u64)> = Vec::with_capacity(todo.len());
    let mut pending = todo.into_iter();
    loop {
        // Up to `concurrency` files are open at once; their requests share the permits.
        while tasks.len() < concurrency {
            let Some(item) = pending.next() else { break };
            let (s3, options, cancel, url) = (s3.clone(), options.clone(), ctx.cancel.clone(), destination.with_key(&item.key));
            tasks.spawn(async move {
                let bytes = upload_file(&s3, &item.path, &url, &options, &cancel).await?;
                Ok::<_, TaskError>((item, bytes))
            });
        }
        let joined = tokio::select! {
            joined = tasks.join_next() => joined,
            _ = ctx.cancel.cancelled() => return Err(TaskError::cancelled()),
        };
        let Some(joined) = joined else { break };
        let (item, bytes) = joined.map_err(|e| TaskError::retryable(format!("an upload stopped: {e}")))??;
        ctx.log.line(&format!("{} -> s3://{}/{} ({})", item.path.display(), destination.bucket, item.key, human_bytes(bytes)));
        uploaded.push((item.key, bytes));
    }
    uploaded.sort();
    let bytes: u64 = uploaded.iter().map(|(_, b)| b).sum();
    let seconds = started.elapsed().as_secs_f64();
    ctx.log.line(&format!(
        "uploaded {} file{} ({}) in {:.1}s{}{}",
        uploaded.len(),
        if uploaded.len() == 1 { "" } else { "s" },
        human_bytes(bytes),
        seconds,
        if seconds > 0.0 && bytes > 0 { format!(", {}/s", human_bytes((bytes as f64 / seconds) as u64)) } else { String::new() },
        if skipped.is_empty() { String::new() } else { format!("; {} unchanged, skipped", skipped.len()) }
    ));

    let mut outputs = Outputs::new();
    outputs.insert("bucket".into(), json!(destination.bucket));
    outputs.insert("keys".into(), Value::from(uploaded.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()));
    outputs.insert("uris".into(), Value::from(uploaded.iter().map(|(k, _)| format!("s3://{}/{k}", destination.bucket)).collect::<Vec<_>>()));
    outputs.insert("bytes".into(), json!(bytes));
    outputs.insert("files_uploaded".into(), json!(uploaded.len()));
    outputs.insert("files_skipped".into(), json!(skipped.len()));
    outputs.insert("skipped_keys".into(), Value::from(skipped));
    Ok(Outcome::Success { outputs })
}

/// The files `source` names and their keys under `destination`.
fn plan(source: &str, destination: &S3Url) -> Result<Vec<Item>, TaskError> {
    let mut items = Vec::new();
    if has_glob_chars(source) {
        let glob = Glob::new(source).map_err(|e| TaskError::fatal(format!("source: {e}")))?;
        let base = if glob.base().is_empty() { PathBuf::from(".") } else { PathBuf::from(glob.base()) };
        if !base.is_dir() {
            return Err(TaskError::fatal(format!("source \"{source}\": the folder {} does not exist", base.display())));
        }
        for path in walk(&base)? {
            let text = path_text(&path, glob.base().is_empty());
            if glob.matches(&text) {
                let key = key_for(&destination.key, &base, &path).map_err(TaskError::fatal)?;
                items.push(Item { size: file_size(&path)?, path, key });
            }
        }
        if items.is_empty() {
            return Err(TaskError::fatal(format!("source \"{source}\" matches no file (looked under {})", base.display())));
        }
    } else {
        let path = Path::new(source);
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TaskError::fatal(format!("source {source} does not exist")),
            _ => local_error("cannot read", path, &e),
        })?;
        if meta.is_dir() {
            for file in walk(path)? {
                let key = key_for(&destination.key, path, &file).map_err(TaskError::fatal)?;
                items.push(Item { size: file_size(&file)?, path: file, key });
            }
            if items.is_empty() {
                return Err(TaskError::fatal(format!("source folder {source} holds no file")));
            }
        } else {
            let key = if destination.is_prefix() {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                format!("{}{name}", destination.key)
            } else {
                destination.key.clone()
            };
            items.push(Item { path: path.to_path_buf(), key, size: meta.len() });
        }
    }
    items.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(items)
}

/// A path as the glob sees it: `/`-separated, without a leading `./` when the glob had no folder.
fn path_text(path: &Path, strip_dot: bool) -> String {
    let text = path.to_string_lossy().into_owned();
    if strip_dot {
        text.strip_prefix("./").map(str::to_string).unwrap_or(text)
    } else {
        text
    }
}

fn file_size(path: &Path) -> Result<u64, TaskError> {
    std::fs::metadata(path).map(|m| m.len()).map_err(|e| local_error("cannot read", path, &e))
}

/// Every file under `dir` (following symbolic links to files), in path order.
fn walk(dir: &Path) -> Result<Vec<PathBuf>, TaskError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let entries = std::fs::read_dir(&current).map_err(|e| local_error("cannot list", &current, &e))?;
        for entry in entries {
            let entry = entry.map_err(|e| local_error("cannot list", &current, &e))?;
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(|e| local_error("cannot read", &path, &e))?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Splits the items into those to upload and the keys skipped as unchanged; with `never`, fails
/// on the first key that exists. The checks run `concurrency` at a time.
async fn decide(
    s3: &S3,
    bucket: &str,
    items: Vec<Item>,
    overwrite: Overwrite,
    part_size: u64,
    concurrency: usize,
    ctx: &TaskContext,
) -> Result<(Vec<Item>, Vec<String>), TaskError> {
    if overwrite == Overwrite::Always {
        return Ok((items, Vec::new()));
    }
    let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for (index, item) in items.iter().cloned().enumerate() {
        let (s3, url, semaphore) = (s3.clone(), S3Url { bucket: bucket.to_string(), key: item.key.clone() }, semaphore.clone());
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await.map_err(|_| TaskError::cancelled())?;
            let existing = head(&s3, &url).await?;
            let verdict = match (overwrite, existing) {
                (_, None) => Verdict::Upload,
                (Overwrite::Never, Some(_)) => Verdict::Exists,
                (_, Some(remote)) if remote.size != item.size => Verdict::Upload,
                (_, Some(remote)) => {
                    // The parts the object was sent in: recorded by flowctl, else its first
                    // part's size, else this task's own part size.
                    let remote_part = match (remote.etag.contains('-'), remote.part_size) {
                        (false, _) => None,
                        (true, Some(recorded)) => Some(recorded),
                        (true, None) => multipart_part_size(&s3, &url).await?,
                    };
                    let local_part = remote_part.unwrap_or_else(|| effective_part_size(item.size, part_size));
                    match local_etag_like(&item.path, item.size, &remote.etag, local_part).await? {
                        Some(etag) if etag == remote.etag => Verdict::Unchanged,
                        Some(_) => Verdict::Upload,
                        None => Verdict::Incomparable,
                    }
                }
            };
            Ok::<_, TaskError>((index, verdict))
        });
    }
    let mut verdicts = vec![Verdict::Upload; items.len()];
    loop {
        let joined = tokio::select! {
            joined = tasks.join_next() => joined,
            _ = ctx.cancel.cancelled() => return Err(TaskError::cancelled()),
        };
        let Some(joined) = joined else { break };
        let (index, verdict) = joined.map_err(|e| TaskError::retryable(format!("a check stopped: {e}")))??;
        verdicts[index] = verdict;
    }
    if let Some(index) = verdicts.iter().position(|v| *v == Verdict::Exists) {
        let existing = verdicts.iter().filter(|v| **v == Verdict::Exists).count();
        let others = if existing > 1 { format!(" (and {} more of the {} files)", existing - 1, items.len()) } else { String::new() };
        return Err(TaskError::fatal(format!(
            "s3://{bucket}/{} already exists{others} and overwrite is never: nothing was uploaded; delete it, upload under another key, or set overwrite: always or if_changed",
            items[index].key
        )));
    }
    let mut todo = Vec::new();
    let mut skipped = Vec::new();
    for (item, verdict) in items.into_iter().zip(verdicts) {
        match verdict {
            Verdict::Unchanged => {
                ctx.log.line(&format!("unchanged, skipped: {} (s3://{bucket}/{})", item.path.display(), item.key));
                skipped.push(item.key);
            }
            Verdict::Incomparable => {
                ctx.log.line(&format!(
                    "s3://{bucket}/{}: its ETag is not an MD5 this upload can recompute (another tool's part size, or KMS encryption); uploading again",
                    item.key
                ));
                todo.push(item);
            }
            _ => todo.push(item),
        }
    }
    Ok((todo, skipped))
}

/// What the overwrite check decided for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Upload,
    Unchanged,
    Exists,
    Incomparable,
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_engine::Registry;
    use serde_json::json;

    fn validate(with: Value) -> Result<(), ConfigError> {
        let mut registry = Registry::new();
        registry.register(Upload);
        registry.get("s3.upload").unwrap().validate(&with)
    }

    #[test]
    fn config_errors_name_the_setting() {
        assert!(validate(json!({"source": "out/*.csv", "destination": "s3://bkt/in/"})).is_ok());
        let err = validate(json!({"source": "s3://bkt/a", "destination": "s3://bkt/in/"})).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("source", "\"s3://bkt/a\" is a URL; this setting takes a local path"));
        let err = validate(json!({"source": "a.csv", "destination": "/tmp/x"})).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("destination", "\"/tmp/x\" is not an s3:// URL; write it as s3://bucket/key"));
        let err = validate(json!({"source": "out/*.csv", "destination": "s3://bkt/in"})).unwrap_err();
        assert_eq!(err.message, "\"s3://bkt/in\" is one key, and a glob source can match many files; end it with / to upload under that prefix");
        let err = validate(json!({"source": "a", "destination": "s3://bkt/", "part_size": "1MiB"})).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("part_size", "1 MiB is below S3's smallest part, 5 MiB (5242880 bytes)"));
        let err = validate(json!({"source": "a", "destination": "s3://bkt/", "concurrency": 0})).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("concurrency", "must be at least 1"));
        let err = validate(json!({"source": "a", "destination": "s3://bkt/", "overwrite": "sometimes"})).unwrap_err();
        assert_eq!(err.path, "overwrite");
        let err = validate(json!({"source": "out/[x", "destination": "s3://bkt/"})).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("source", "invalid glob \"out/[x\": invalid range pattern at character 5"));
        let err = validate(json!({"source": "a", "destination": "s3://bkt/", "content_type": "csv"})).unwrap_err();
        assert_eq!(err.message, "\"csv\" is not a media type; write e.g. text/csv or application/json");
        let err = validate(json!({"source": "a", "destination": "s3://bkt/", "bucket": "x"})).unwrap_err();
        assert!(err.message.starts_with("unknown field `bucket`"), "{}", err.message);
    }

    #[test]
    fn plan_maps_files_folders_and_globs_to_keys() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("out/2024/x")).unwrap();
        for (name, text) in [("out/a.csv", "a"), ("out/b.txt", "bb"), ("out/2024/c.csv", "ccc"), ("out/2024/x/d.csv", "dddd")] {
            std::fs::write(root.join(name), text).unwrap();
        }
        let dest = S3Url::parse("s3://bkt/in/").unwrap();
        let keys = |source: &str, dest: &S3Url| -> Vec<(String, u64)> {
            plan(&format!("{}/{source}", root.display()), dest).unwrap().into_iter().map(|i| (i.key, i.size)).collect()
        };
        assert_eq!(keys("out/a.csv", &dest), [("in/a.csv".to_string(), 1)]);
        assert_eq!(keys("out/a.csv", &S3Url::parse("s3://bkt/in/renamed.csv").unwrap()), [("in/renamed.csv".to_string(), 1)]);
        assert_eq!(
            keys("out", &dest).into_iter().map(|(k, _)| k).collect::<Vec<_>>(),
            ["in/2024/c.csv", "in/2024/x/d.csv", "in/a.csv", "in/b.txt"]
        );
        // A folder with a destination that is not a prefix: the files go below it.
        assert_eq!(keys("out/2024", &S3Url::parse("s3://bkt/in").unwrap()).into_iter().map(|(k, _)| k).collect::<Vec<_>>(), ["in/c.csv", "in/x/d.csv"]);
        assert_eq!(keys("out/*.csv", &dest).into_iter().map(|(k, _)| k).collect::<Vec<_>>(), ["in/a.csv"]);
        assert_eq!(keys("out/**/*.csv", &dest).into_iter().map(|(k, _)| k).collect::<Vec<_>>(), ["in/2024/c.csv", "in/2024/x/d.csv", "in/a.csv"]);
        let err = plan(&format!("{}/out/*.parquet", root.display()), &dest).unwrap_err();
        assert_eq!(err.message, format!("source \"{0}/out/*.parquet\" matches no file (looked under {0}/out/)", root.display()));
        let err = plan(&format!("{}/missing.csv", root.display()), &dest).unwrap_err();
        assert_eq!(err.message, format!("source {}/missing.csv does not exist", root.display()));
        assert_eq!(err.kind, flowctl_engine::operator::ErrorKind::Final);
    }
}
