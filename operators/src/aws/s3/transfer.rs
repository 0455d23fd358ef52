//! Moving bytes between local files and S3: the client, one upload (single request or multipart),
//! one download, listing, and S3's ETag computed locally.
//!
//! These are the pieces every S3 operator, and any operator that loads from or exports to
//! `s3://` (the SQL operators), shares. They take an [`S3`] (the SDK client with the connection it
//! was built from, so every error can say which credentials and endpoint were used) and a
//! cancellation token, and return [`TaskError`]s that name the bucket and key.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use flowctl_engine::connections::AwsConnection;
use flowctl_engine::operator::{LogSink, TaskError};
use md5::{Digest, Md5};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::url::S3Url;
use crate::aws::{describe_service_error, sdk_config};

/// S3's smallest part (except the last one).
pub const MIN_PART_SIZE: u64 = 5 * MIB;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * MIB;
/// S3's largest number of parts in one upload.
pub const MAX_PARTS: u64 = 10_000;
/// The object metadata key (`x-amz-meta-flowctl-part-size`) where a multipart upload records its
/// part size, so `overwrite: if_changed` can recompute the multipart ETag with the same parts.
pub const PART_SIZE_METADATA: &str = "flowctl-part-size";
/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

/// An S3 client and the connection it was built from.
#[derive(Clone, Debug)]
pub struct S3 {
    client: aws_sdk_s3::Client,
    conn: AwsConnection,
}

impl S3 {
    /// A client for the connection (see [`client`]).
    pub async fn connect(conn: &AwsConnection) -> Result<S3, TaskError> {
        Ok(S3 { client: client(conn).await?, conn: conn.clone() })
    }

    /// The SDK client, for calls these helpers do not cover.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// The connection the client was built from.
    pub fn connection(&self) -> &AwsConnection {
        &self.conn
    }

    /// An SDK error about `what` (an `s3://` URL, usually), classified by
    /// [`describe_service_error`].
    pub fn error<E>(&self, err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>, what: &str) -> TaskError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        describe_service_error(err, what, &self.conn, Some("s3"))
    }
}

/// An S3 client for the connection: its region, endpoint (`endpoints.s3` or `endpoint_url`),
/// credentials and role, path-style addressing when `force_path_style` is set, and the standard
/// retry policy. The SDK adds checksums only where S3 requires them: uploads carry a CRC32 of
/// their own (see [`upload_file`]).
pub async fn client(conn: &AwsConnection) -> Result<aws_sdk_s3::Client, TaskError> {
    let config = sdk_config(conn, "s3").await?;
    let s3_config = aws_sdk_s3::config::Builder::from(&config)
        .force_path_style(conn.force_path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    Ok(aws_sdk_s3::Client::from_conf(s3_config))
}

/// How [`upload_file`] sends a file.
#[derive(Clone)]
pub struct UploadOptions {
    /// The size of each part of a multipart upload; files up to this size go in one request.
    pub part_size: u64,
    /// Requests in flight at once; shared by every upload given the same options, so a folder of
    /// files and the parts of a large file draw on one budget (and at most `concurrency` parts
    /// are in memory).
    pub permits: Arc<Semaphore>,
    /// The objects' Content-Type; `None` guesses from the file's extension.
    pub content_type: Option<String>,
    /// Where progress of multipart uploads is logged.
    pub progress: Option<Arc<dyn LogSink>>,
}

impl UploadOptions {
    /// Options with `part_size` and `concurrency` requests in flight.
    pub fn new(part_size: u64, concurrency: usize) -> Self {
        UploadOptions { part_size, permits: Arc::new(Semaphore::new(concurrency.max(1))), content_type: None, progress: None }
    }
}

impl std::fmt::Debug for UploadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadOptions").field("part_size", &self.part_size).field("content_type", &self.content_type).finish_non_exhaustive()
    }
}

/// The part size an upload of `size` bytes uses: `part_size`, grown to the next MiB that keeps
/// the upload within S3's 10,000 parts.
pub fn effective_part_size(size: u64, part_size: u64) -> u64 {
    let part_size = part_size.max(MIN_PART_SIZE);
    if size.div_ceil(part_size) <= MAX_PARTS {
        return part_size;
    }
    size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB
}

/// Uploads the file `src` to `url`: one PutObject up to `options.part_size`, a multipart upload
/// above it (parts in parallel; the upload is aborted on error or cancel so no parts are left
/// behind). Every request carries the CRC32 of its bytes, which S3 checks, so the payload itself
/// is not signed (SigV4's SHA-256 of every byte would only repeat that check). Returns the bytes
/// sent.
pub async fn upload_file(s3: &S3, src: &Path, url: &S3Url, options: &UploadOptions, cancel: &CancellationToken) -> Result<u64, TaskError> {
    let file = std::fs::File::open(src).map_err(|e| local_error("cannot open", src, &e))?;
    let size = file.metadata().map_err(|e| local_error("cannot read", src, &e))?.len();
    let content_type = options.content_type.clone().unwrap_or_else(|| guess_content_type(src).to_string());
    if size <= options.part_size {
        let _permit = acquire(&options.permits, cancel).await?;
        let (data, crc) = read_part(Arc::new(file), src.to_path_buf(), 0, size as usize).await?;
        let request = s3
            .client
            .put_object()
            .bucket(&url.bucket)
            .key(&url.key)
            .content_type(content_type)
            .content_length(size as i64)
            .checksum_crc32(crc)
            .body(ByteStream::from(data))
            .customize()
            .disable_payload_signing()
            .send();
        tokio::select! {
            result = request => { result.map_err(|e| s3.error(&e, &url.to_string()))?; }
            _ = cancel.cancelled() => return Err(TaskError::cancelled()),
        }
        return Ok(size);
    }

    let part_size = effective_part_size(size, options.part_size);
    let parts = size.div_ceil(part_size);
    let created = s3
        .client
        .create_multipart_upload()
        .bucket(&url.bucket)
        .key(&url.key)
        .content_type(content_type)
        .metadata(PART_SIZE_METADATA, part_size.to_string())
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .map_err(|e| s3.error(&e, &url.to_string()))?;
    let Some(upload_id) = created.upload_id().map(str::to_string) else {
        return Err(TaskError::retryable(format!("{url}: CreateMultipartUpload answered without an upload id")));
    };
    let uploaded = tokio::select! {
        result = upload_parts(s3, Arc::new(file), src, url, &upload_id, size, part_size, options) => result,
        _ = cancel.cancelled() => Err(TaskError::cancelled()),
    };
    let completed = match uploaded {
        Ok(completed) => completed,
        Err(err) => {
            abort_upload(s3, url, &upload_id).await;
            return Err(err);
        }
    };
    let complete = s3
        .client
        .complete_multipart_upload()
        .bucket(&url.bucket)
        .key(&url.key)
        .upload_id(&upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
        .send();
    let result = tokio::select! {
        result = complete => result.map_err(|e| s3.error(&e, &url.to_string())),
        _ = cancel.cancelled() => Err(TaskError::cancelled()),
    };
    if let Err(err) = result {
        abort_upload(s3, url, &upload_id).await;
        return Err(err);
    }
    if let Some(log) = &options.progress {
        log.line(&format!("{url}: {} in {parts} parts of {}", human_bytes(size), human_bytes(part_size)));
    }
    Ok(size)
}

/// Sends every part, at most as many at once as `options.permits` allows, and returns them in
/// order for CompleteMultipartUpload.
#[allow(clippy::too_many_arguments)]
async fn upload_parts(
    s3: &S3,
    file: Arc<std::fs::File>,
    src: &Path,
    url: &S3Url,
    upload_id: &str,
    size: u64,
    part_size: u64,
    options: &UploadOptions,
) -> Result<Vec<CompletedPart>, TaskError> {
    let parts = size.div_ceil(part_size);
    let mut tasks = JoinSet::new();
    let mut done = Vec::with_capacity(parts as usize);
    let mut next_report = 1;
    let mut report = |done: usize| {
        // About every tenth of the upload, for large ones.
        if let Some(log) = &options.progress {
            if parts >= 10 && done as u64 * 10 >= next_report * parts {
                log.line(&format!("{url}: {done}/{parts} parts sent"));
                next_report += 1;
            }
        }
    };
    for index in 0..parts {
        // A part is read only once a request slot is free, so memory stays at the budget.
        let permit = options.permits.clone().acquire_owned().await.map_err(|_| TaskError::cancelled())?;
        let offset = index * part_size;
        let length = part_size.min(size - offset) as usize;
        let (s3, file, src, url, upload_id) = (s3.clone(), file.clone(), src.to_path_buf(), url.clone(), upload_id.to_string());
        tasks.spawn(async move {
            let _permit = permit;
            let number = (index + 1) as i32;
            let (data, crc) = read_part(file, src, offset, length).await?;
            let reply = s3
                .client
                .upload_part()
                .bucket(&url.bucket)
                .key(&url.key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(length as i64)
                .checksum_crc32(&crc)
                .body(ByteStream::from(data))
                .customize()
                .disable_payload_signing()
                .send()
                .await
                .map_err(|e| s3.error(&e, &format!("{url} (part {number})")))?;
            let Some(etag) = reply.e_tag() else {
                return Err(TaskError::retryable(format!("{url} (part {number}): UploadPart answered without an ETag")));
            };
            Ok::<_, TaskError>(CompletedPart::builder().part_number(number).e_tag(etag).checksum_crc32(crc).build())
        });
        // Collect what has finished, so an error stops the upload early.
        while let Some(joined) = tasks.try_join_next() {
            done.push(joined.map_err(join_error)??);
            report(done.len());
        }
    }
    while let Some(joined) = tasks.join_next().await {
        done.push(joined.map_err(join_error)??);
        report(done.len());
    }
    done.sort_by_key(|p| p.part_number());
    Ok(done)
}

/// Aborts a multipart upload so its parts stop costing storage; a failure is only logged by the
/// caller's error (S3's lifecycle rules clean up what is left).
async fn abort_upload(s3: &S3, url: &S3Url, upload_id: &str) {
    let abort = s3.client.abort_multipart_upload().bucket(&url.bucket).key(&url.key).upload_id(upload_id).send();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), abort).await;
}

/// Reads `length` bytes at `offset` and their CRC32 (base64, as `x-amz-checksum-crc32` wants
/// it), off the async threads.
async fn read_part(file: Arc<std::fs::File>, src: PathBuf, offset: u64, length: usize) -> Result<(Vec<u8>, String), TaskError> {
    tokio::task::spawn_blocking(move || {
        let mut data = vec![0u8; length];
        file.read_exact_at(&mut data, offset).map_err(|e| local_error("cannot read", &src, &e))?;
        let crc = crc32fast::hash(&data);
        Ok((data, aws_smithy_types::base64::encode(crc.to_be_bytes())))
    })
    .await
    .map_err(join_error)?
}

async fn acquire(permits: &Arc<Semaphore>, cancel: &CancellationToken) -> Result<tokio::sync::OwnedSemaphorePermit, TaskError> {
    tokio::select! {
        permit = permits.clone().acquire_owned() => permit.map_err(|_| TaskError::cancelled()),
        _ = cancel.cancelled() => Err(TaskError::cancelled()),
    }
}

/// Downloads `url` to the file `dest` (its folder is created): the bytes go to a temporary file
/// beside it, renamed into place once complete, so a failed or cancelled download never leaves a
/// partial file under the final name. Returns the bytes written.
pub async fn download_to_file(s3: &S3, url: &S3Url, dest: &Path, cancel: &CancellationToken) -> Result<u64, TaskError> {
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(parent).await.map_err(|e| local_error("cannot create the folder", parent, &e))?;
    }
    let request = s3.client.get_object().bucket(&url.bucket).key(&url.key).send();
    let reply = tokio::select! {
        reply = request => reply.map_err(|e| {
            if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                TaskError::fatal(format!("{url} does not exist; check the key (a prefix ends with /)"))
            } else {
                s3.error(&e, &url.to_string())
            }
        })?,
        _ = cancel.cancelled() => return Err(TaskError::cancelled()),
    };
    let expected = reply.content_length().map(|n| n as u64);
    let mut body = reply.body;
    let partial = partial_path(dest);
    let result = async {
        let mut out = tokio::fs::File::create(&partial).await.map_err(|e| local_error("cannot create", &partial, &e))?;
        let mut written = 0u64;
        loop {
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                _ = cancel.cancelled() => return Err(TaskError::cancelled()),
            };
            match chunk {
                None => break,
                Some(Ok(bytes)) => {
                    out.write_all(&bytes).await.map_err(|e| local_error("cannot write", &partial, &e))?;
                    written += bytes.len() as u64;
                }
                Some(Err(e)) => return Err(TaskError::retryable(format!("{url}: the download broke off after {written} bytes: {e}"))),
            }
        }
        out.flush().await.map_err(|e| local_error("cannot write", &partial, &e))?;
        out.sync_all().await.map_err(|e| local_error("cannot write", &partial, &e))?;
        if let Some(expected) = expected.filter(|&n| n != written) {
            return Err(TaskError::retryable(format!("{url}: received {written} bytes of {expected}")));
        }
        tokio::fs::rename(&partial, dest).await.map_err(|e| local_error("cannot rename into", dest, &e))?;
        Ok(written)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result
}

/// The temporary name a download is written under.
fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".flowctl-partial");
    dest.with_file_name(name)
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag, without quotes.
    pub etag: String,
}

/// Every object of `bucket` whose key starts with `prefix`, with its size, in key order.
pub async fn list_objects(s3: &S3, bucket: &str, prefix: &str) -> Result<Vec<(String, u64)>, TaskError> {
    Ok(list_object_infos(s3, bucket, prefix).await?.into_iter().map(|o| (o.key, o.size)).collect())
}

/// [`list_objects`] with each object's ETag.
pub async fn list_object_infos(s3: &S3, bucket: &str, prefix: &str) -> Result<Vec<ObjectInfo>, TaskError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = s3
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .map_err(|e| s3.error(&e, &format!("s3://{bucket}/{prefix}")))?;
        for object in page.contents() {
            if let Some(key) = object.key() {
                out.push(ObjectInfo {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    etag: object.e_tag().unwrap_or("").trim_matches('"').to_string(),
                });
            }
        }
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
            _ => break,
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// What HeadObject says about an existing object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag, without quotes.
    pub etag: String,
    /// The part size recorded by a flowctl multipart upload.
    pub part_size: Option<u64>,
}

/// The object at `url`, or `None` when there is none.
pub async fn head(s3: &S3, url: &S3Url) -> Result<Option<Head>, TaskError> {
    match s3.client.head_object().bucket(&url.bucket).key(&url.key).send().await {
        Ok(reply) => Ok(Some(Head {
            size: reply.content_length().unwrap_or(0).max(0) as u64,
            etag: reply.e_tag().unwrap_or("").trim_matches('"').to_string(),
            part_size: reply.metadata().and_then(|m: &HashMap<String, String>| m.get(PART_SIZE_METADATA)).and_then(|v| v.parse().ok()),
        })),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
        Err(e) => Err(s3.error(&e, &url.to_string())),
    }
}

/// The part size a multipart object was uploaded with: the one flowctl recorded in its metadata,
/// else the size of its first part (HeadObject with partNumber=1). `None` when neither is known.
pub async fn multipart_part_size(s3: &S3, url: &S3Url) -> Result<Option<u64>, TaskError> {
    if let Some(found) = head(s3, url).await? {
        if found.part_size.is_some() {
            return Ok(found.part_size);
        }
    }
    match s3.client.head_object().bucket(&url.bucket).key(&url.key).part_number(1).send().await {
        Ok(reply) => Ok(reply.content_length().filter(|n| *n > 0).map(|n| n as u64)),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
        Err(e) => Err(s3.error(&e, &url.to_string())),
    }
}

/// The ETag S3 gives an object with this content when uploaded in parts of `part_size`
/// (`parts: None`: in one request): the hex MD5 of the bytes, or for `n` parts the hex MD5 of the
/// parts' concatenated binary MD5s followed by `-n`.
pub fn etag_of(data: &[u8], part_size: Option<u64>) -> String {
    let mut hasher = EtagHasher::new(part_size);
    hasher.update(data);
    hasher.finish()
}

/// Computes S3's ETag of a stream of bytes, single-part or multipart.
pub struct EtagHasher {
    part_size: Option<u64>,
    current: Md5,
    in_part: u64,
    part_digests: Vec<u8>,
    parts: u64,
}

impl EtagHasher {
    /// A hasher for an upload in parts of `part_size`, or in one request (`None`).
    pub fn new(part_size: Option<u64>) -> Self {
        EtagHasher { part_size, current: Md5::new(), in_part: 0, part_digests: Vec::new(), parts: 0 }
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        let Some(part_size) = self.part_size else {
            self.current.update(data);
            return;
        };
        while !data.is_empty() {
            let room = (part_size - self.in_part) as usize;
            let take = room.min(data.len());
            self.current.update(&data[..take]);
            self.in_part += take as u64;
            data = &data[take..];
            if self.in_part == part_size {
                self.close_part();
            }
        }
    }

    fn close_part(&mut self) {
        let digest = std::mem::replace(&mut self.current, Md5::new()).finalize();
        self.part_digests.extend_from_slice(&digest);
        self.parts += 1;
        self.in_part = 0;
    }

    /// The ETag, without quotes.
    pub fn finish(mut self) -> String {
        if self.part_size.is_none() {
            return hex(&self.current.finalize());
        }
        if self.in_part > 0 || self.parts == 0 {
            self.close_part();
        }
        format!("{}-{}", hex(&Md5::digest(&self.part_digests)), self.parts)
    }
}

/// The ETag of the local file `path` in the form `remote` has (plain MD5, or `md5-N` with
/// `part_size`), or `None` when the two cannot be compared (a multipart ETag whose part count
/// does not fit the part size, or an ETag that is not an MD5, as with SSE-KMS).
pub async fn local_etag_like(path: &Path, size: u64, remote_etag: &str, part_size: u64) -> Result<Option<String>, TaskError> {
    let part_size = match remote_etag.split_once('-') {
        None if remote_etag.len() == 32 && remote_etag.bytes().all(|b| b.is_ascii_hexdigit()) => None,
        None => return Ok(None),
        Some((_, n)) => match n.parse::<u64>() {
            Ok(n) if part_size > 0 && size.div_ceil(part_size) == n => Some(part_size),
            _ => return Ok(None),
        },
    };
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&path).map_err(|e| local_error("cannot open", &path, &e))?;
        let mut hasher = EtagHasher::new(part_size);
        let mut buffer = vec![0u8; MIB as usize];
        loop {
            let n = file.read(&mut buffer).map_err(|e| local_error("cannot read", &path, &e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        Ok(Some(hasher.finish()))
    })
    .await
    .map_err(join_error)?
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Content-Type from a file's extension, for the kinds of files pipelines move; anything else
/// is `application/octet-stream`.
pub fn guess_content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    match ext.as_str() {
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "txt" | "log" => "text/plain",
        "json" => "application/json",
        "jsonl" | "ndjson" => "application/x-ndjson",
        "xml" => "application/xml",
        "html" | "htm" => "text/html",
        "yaml" | "yml" => "application/yaml",
        "parquet" => "application/vnd.apache.parquet",
        "avro" => "application/avro",
        "gz" | "gzip" => "application/gzip",
        "zip" => "application/zip",
        "tar" => "application/x-tar",
        "sql" => "application/sql",
        "py" => "text/x-python",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        _ => "application/octet-stream",
    }
}

/// Bytes in words: `1.5 GiB`, `12 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A local file error: fatal when the file is missing or unreadable by permissions, retryable
/// otherwise (a full disk, an I/O error).
pub fn local_error(action: &str, path: &Path, err: &std::io::Error) -> TaskError {
    let message = format!("{action} {}: {err}", path.display());
    match err.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::IsADirectory => TaskError::fatal(message),
        _ => TaskError::retryable(message),
    }
}

fn join_error(err: tokio::task::JoinError) -> TaskError {
    TaskError::retryable(format!("a transfer task stopped: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_part_etag_is_the_md5() {
        assert_eq!(etag_of(b"", None), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(etag_of(b"hello world", None), "5eb63bbbe01eeed093cb22bb8f5acdc3");
    }

    #[test]
    fn multipart_etag_is_the_md5_of_part_md5s() {
        // Parts "hello" and " world": md5 of the two binary md5s, then -2.
        let mut concat = Vec::new();
        concat.extend_from_slice(&Md5::digest(b"hello"));
        concat.extend_from_slice(&Md5::digest(b" worl"));
        concat.extend_from_slice(&Md5::digest(b"d"));
        let expected = format!("{}-3", hex(&Md5::digest(&concat)));
        assert_eq!(etag_of(b"hello world", Some(5)), expected);
        // Feeding in odd chunks gives the same result.
        let mut hasher = EtagHasher::new(Some(5));
        for chunk in [&b"hel"[..], b"lo w", b"orld"] {
            hasher.update(chunk);
        }
        assert_eq!(hasher.finish(), expected);
        // A size that is a multiple of the part size has no empty last part.
        assert!(etag_of(b"0123456789", Some(5)).ends_with("-2"));
    }

    #[test]
    fn multipart_etag_matches_a_known_s3_value() {
        // 6 MiB of zeros in 5 MiB parts, as S3 (and moto) report it.
        let data = vec![0u8; 6 * MIB as usize];
        let first = Md5::digest(&data[..5 * MIB as usize]);
        let second = Md5::digest(&data[5 * MIB as usize..]);
        let mut concat = first.to_vec();
        concat.extend_from_slice(&second);
        assert_eq!(etag_of(&data, Some(5 * MIB)), format!("{}-2", hex(&Md5::digest(&concat))));
    }

    #[tokio::test]
    async fn local_etag_follows_the_remote_form() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world").unwrap();
        let plain = local_etag_like(&path, 11, "5eb63bbbe01eeed093cb22bb8f5acdc3", 5).await.unwrap();
        assert_eq!(plain.as_deref(), Some("5eb63bbbe01eeed093cb22bb8f5acdc3"));
        let multi = local_etag_like(&path, 11, "00000000000000000000000000000000-3", 5).await.unwrap();
        assert_eq!(multi, Some(etag_of(b"hello world", Some(5))));
        // 11 bytes in 5-byte parts make 3 parts, never 2: no comparison.
        assert_eq!(local_etag_like(&path, 11, "00000000000000000000000000000000-2", 5).await.unwrap(), None);
        // Not an MD5 (SSE-KMS): no comparison.
        assert_eq!(local_etag_like(&path, 11, "xyz", 5).await.unwrap(), None);
    }

    #[test]
    fn part_size_grows_to_stay_within_10000_parts() {
        assert_eq!(effective_part_size(100 * MIB, 8 * MIB), 8 * MIB);
        assert_eq!(effective_part_size(100 * MIB, MIB), 5 * MIB);
        let huge = 200 * 1024 * MIB; // 200 GiB
        let grown = effective_part_size(huge, 8 * MIB);
        assert_eq!(grown % MIB, 0);
        assert!(huge.div_ceil(grown) <= MAX_PARTS);
        assert!(huge.div_ceil(grown - MIB) > MAX_PARTS);
    }

    #[test]
    fn content_types_and_sizes_read_well() {
        assert_eq!(guess_content_type(Path::new("a/b.CSV")), "text/csv");
        assert_eq!(guess_content_type(Path::new("a/b")), "application/octet-stream");
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(8 * MIB), "8 MiB");
        assert_eq!(human_bytes(1536 * MIB), "1.5 GiB");
    }
}
