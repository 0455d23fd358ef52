//! `s3://` sources of `sql.load` and destinations of `sql.export`, through the S3 helpers of
//! `aws::s3`: a source's objects are downloaded into the attempt's scratch folder and loaded from
//! there (the servers' bulk paths read a local stream, and a retry starts from whole files); an
//! export is written locally and uploaded once complete.

use std::path::{Path, PathBuf};

use flowctl_engine::connections::AWS_DEFAULT;
use flowctl_engine::operator::{TaskContext, TaskError};

use crate::aws::s3::url::Glob;
use crate::aws::s3::{download_to_file, list_objects, upload_file, S3Url, UploadOptions, S3};

use super::delimited::Source;

/// Part size and parallel parts of an export's upload.
const PART_SIZE: u64 = 64 * 1024 * 1024;
const CONCURRENCY: usize = 4;

async fn connect(aws_connection: Option<&str>, ctx: &TaskContext) -> Result<S3, TaskError> {
    let connection = ctx.connections.aws(aws_connection.unwrap_or(AWS_DEFAULT)).map_err(|e| TaskError::fatal(e.to_string()))?;
    S3::connect(&connection).await
}

/// The objects `source` names (a key, a prefix ending in `/`, or a glob), downloaded in key
/// order into a folder of the attempt's scratch space, which is returned for removal.
pub async fn download_sources(source: &str, aws_connection: Option<&str>, ctx: &TaskContext) -> Result<(Vec<Source>, PathBuf), TaskError> {
    let url = S3Url::parse(source).map_err(|e| TaskError::fatal(format!("source: {e}")))?;
    let s3 = connect(aws_connection, ctx).await?;
    let keys: Vec<String> = if url.is_glob() {
        let glob = Glob::new(&url.key).map_err(|e| TaskError::fatal(format!("source: {e}")))?;
        list_objects(&s3, &url.bucket, glob.base()).await?.into_iter().map(|(k, _)| k).filter(|k| glob.matches(k)).collect()
    } else if url.is_prefix() {
        list_objects(&s3, &url.bucket, &url.key).await?.into_iter().map(|(k, _)| k).filter(|k| !k.ends_with('/')).collect()
    } else {
        vec![url.key.clone()]
    };
    if keys.is_empty() {
        return Err(TaskError::fatal(format!("source {url} matches no object")));
    }
    let folder = ctx.work_dir.join(format!("{}.{}.sql-load", ctx.task_id, ctx.try_number));
    let _ = std::fs::remove_dir_all(&folder);
    let mut sources = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let object = url.with_key(key.clone());
        let path = folder.join(format!("{i:05}-{}", object.file_name()));
        let bytes = match download_to_file(&s3, &object, &path, &ctx.cancel).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&folder);
                return Err(e);
            }
        };
        ctx.log.line(&format!("downloaded {object} ({bytes} bytes)"));
        sources.push(Source { path, display: object.to_string() });
    }
    Ok((sources, folder))
}

/// Uploads the finished export `file` to `destination`.
pub async fn upload_file_to(file: &Path, destination: &str, aws_connection: Option<&str>, ctx: &TaskContext) -> Result<(), TaskError> {
    let url = S3Url::parse(destination).map_err(|e| TaskError::fatal(format!("destination: {e}")))?;
    let s3 = connect(aws_connection, ctx).await?;
    let bytes = upload_file(&s3, file, &url, &UploadOptions::new(PART_SIZE, CONCURRENCY), &ctx.cancel).await?;
    ctx.log.line(&format!("uploaded {bytes} bytes to {url}"));
    Ok(())
}
