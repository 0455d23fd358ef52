//! S3 operators (`s3.upload`, `s3.download`, `s3.copy`, `s3.delete`, `s3.list`, `s3.wait`) and the
//! S3 helpers other operators use to load from or export to `s3://`.
//!
//! - `url.rs`: `s3://bucket/key` URLs, local-or-S3 locations, globs, key and path mapping;
//! - `transfer.rs`: the client, one upload (multipart above the part size), one download,
//!   listing, S3's ETag computed locally;
//! - `settings.rs`: the settings several operators share (overwrite, sizes, concurrency,
//!   locations) and their compile-time checks; the connection and durations are the AWS kit's
//!   (`aws::settings`);
//! - one file per operator.

pub mod url;
pub mod transfer;
pub mod settings;
pub mod upload;
pub mod download;
pub mod copy;
pub mod delete;
pub mod list;
pub mod wait;

pub use transfer::{client, download_to_file, list_objects, upload_file, UploadOptions, S3};
pub use url::S3Url;

use flowctl_engine::Registry;

/// Adds the S3 operators.
pub fn register(registry: &mut Registry) {
    registry
        .register_aws_service("s3")
        .register(upload::Upload)
        .register(download::Download)
        .register(copy::Copy)
        .register(delete::DeleteObjects)
        .register(list::List)
        .register(wait::Wait);
}
