//! Settings several S3 operators share, and their compile-time checks; the fields themselves are
//! written into each `Config` by `aws_settings!` (`connection`, `concurrency`, `overwrite`).
//!
//! A setting may hold a template (`s3://lake/{{ ds }}/`): compile checks what the unrendered text
//! already shows (an `s3://` start, a part size) and leaves the rest to the rendered value, which
//! the operator parses again before it runs.

use flowctl_engine::operator::{ConfigError, TaskError};
use flowctl_engine::template::is_template;
use serde::Deserialize;

use super::transfer::{human_bytes, MAX_PART_SIZE, MIB, MIN_PART_SIZE};
use super::url::{Glob, S3Url};

/// What to do when the destination already exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overwrite {
    /// Replace it.
    #[default]
    Always,
    /// Fail, naming it, and transfer nothing.
    Never,
    /// Replace it only when its size or checksum differs (S3's ETag: the MD5, or the multipart
    /// ETag computed with the same part size); skip it otherwise.
    IfChanged,
}

/// A size: a number of bytes, or a number with a unit (`8MiB`, `16 MiB`, `1GB`, `512KiB`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Size {
    /// Bytes.
    Bytes(u64),
    /// A number and a unit: B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024).
    Text(String),
}

impl Size {
    /// The number of bytes, or what is wrong with the text.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Size::Bytes(n) => Ok(*n),
            Size::Text(text) => parse_size(text),
        }
    }
}

/// Parses `8MiB`, `16 MB`, `1048576`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" is not a size; write a number of bytes or a number with a unit, e.g. 8MiB or 100MB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        other => return Err(format!("\"{text}\": unknown unit \"{other}\"; use B, KB, MB, GB, KiB, MiB or GiB")),
    };
    Ok((number * factor as f64).round() as u64)
}

/// Checks a multipart part size: within S3's 5 MiB to 5 GiB.
pub fn check_part_size(path: &str, size: &Size) -> Result<u64, ConfigError> {
    if let Size::Text(text) = size {
        if is_template(text) {
            return Ok(DEFAULT_PART_SIZE);
        }
    }
    let bytes = size.bytes().map_err(|e| ConfigError::new(path, e))?;
    if bytes < MIN_PART_SIZE {
        return Err(ConfigError::new(path, format!("{} is below S3's smallest part, 5 MiB (5242880 bytes)", human_bytes(bytes))));
    }
    if bytes > MAX_PART_SIZE {
        return Err(ConfigError::new(path, format!("{} is above S3's largest part, 5 GiB", human_bytes(bytes))));
    }
    Ok(bytes)
}

/// The part size when none is set. Large enough that a 1 GiB file is 64 requests, small enough
/// that `concurrency` parts in memory stay modest.
pub const DEFAULT_PART_SIZE: u64 = 16 * MIB;
/// Requests in flight when `concurrency` is not set.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// The most requests in flight a task may ask for.
pub const MAX_CONCURRENCY: usize = 64;

/// Checks `concurrency`: 1 to 64.
pub fn check_concurrency(path: &str, value: Option<usize>) -> Result<(), ConfigError> {
    match value {
        Some(0) => Err(ConfigError::new(path, "must be at least 1")),
        Some(n) if n > MAX_CONCURRENCY => Err(ConfigError::new(path, format!("{n} is more than the {MAX_CONCURRENCY} requests a task may keep in flight"))),
        _ => Ok(()),
    }
}

/// What a location setting may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allow {
    /// An object key only.
    Key,
    /// A key or a prefix (ending with `/`).
    KeyOrPrefix,
    /// A key, a prefix or a glob.
    Any,
}

/// Checks an `s3://` setting at compile time. Returns the URL when it has no template.
pub fn check_s3(path: &str, text: &str, allow: Allow) -> Result<Option<S3Url>, ConfigError> {
    if is_template(text) {
        // Only what the text already shows: it must be an s3:// URL unless it starts with a
        // template that may render to one.
        if !text.trim_start().starts_with("{{") && !text.trim_start().to_ascii_lowercase().starts_with("s3://") {
            return Err(ConfigError::new(path, format!("\"{text}\" is not an s3:// URL; write it as s3://bucket/key")));
        }
        return Ok(None);
    }
    let url = S3Url::parse(text).map_err(|e| ConfigError::new(path, e))?;
    check_s3_form(path, &url, allow)?;
    Ok(Some(url))
}

/// Checks that a parsed URL has a form the setting allows.
pub fn check_s3_form(path: &str, url: &S3Url, allow: Allow) -> Result<(), ConfigError> {
    if url.is_glob() {
        if allow != Allow::Any {
            return Err(ConfigError::new(path, format!("\"{url}\" holds a glob character (*, ? or [), and this setting takes a key or a prefix")));
        }
        Glob::new(&url.key).map_err(|e| ConfigError::new(path, e))?;
    }
    if allow == Allow::Key && url.is_prefix() {
        return Err(ConfigError::new(path, format!("\"{url}\" names a prefix; name one object (a key that does not end with /)")));
    }
    Ok(())
}

/// Checks a local path setting at compile time: it must not be a URL.
pub fn check_local(path: &str, text: &str) -> Result<(), ConfigError> {
    if text.trim().is_empty() {
        return Err(ConfigError::new(path, "is empty; give a local path"));
    }
    if text.contains("://") && !text.trim_start().starts_with("{{") {
        return Err(ConfigError::new(path, format!("\"{text}\" is a URL; this setting takes a local path")));
    }
    Ok(())
}

/// Parses a rendered `s3://` setting before running.
pub fn rendered_s3(path: &str, text: &str, allow: Allow) -> Result<S3Url, TaskError> {
    let url = S3Url::parse(text).map_err(|e| TaskError::fatal(format!("{path}: {e}")))?;
    check_s3_form(path, &url, allow).map_err(|e| TaskError::fatal(format!("{}: {}", e.path, e.message)))?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("8MiB").unwrap(), 8 * MIB);
        assert_eq!(parse_size("16 MiB").unwrap(), 16 * MIB);
        assert_eq!(parse_size("5MB").unwrap(), 5_000_000);
        assert_eq!(parse_size("1.5GiB").unwrap(), 1536 * MIB);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("8 parsecs").unwrap_err(), "\"8 parsecs\": unknown unit \"parsecs\"; use B, KB, MB, GB, KiB, MiB or GiB");
        assert_eq!(parse_size("lots").unwrap_err(), "\"lots\" is not a size; write a number of bytes or a number with a unit, e.g. 8MiB or 100MB");
    }

    #[test]
    fn part_size_stays_within_s3_limits() {
        assert_eq!(check_part_size("part_size", &Size::Text("8MiB".into())).unwrap(), 8 * MIB);
        let err = check_part_size("part_size", &Size::Text("5MB".into())).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("part_size", "4.8 MiB is below S3's smallest part, 5 MiB (5242880 bytes)"));
        let err = check_part_size("part_size", &Size::Text("6GiB".into())).unwrap_err();
        assert_eq!(err.message, "6 GiB is above S3's largest part, 5 GiB");
        assert!(check_part_size("part_size", &Size::Text("{{ params.part }}".into())).is_ok());
    }

    #[test]
    fn concurrency_is_checked() {
        assert_eq!(check_concurrency("concurrency", Some(0)).unwrap_err().message, "must be at least 1");
        assert!(check_concurrency("concurrency", Some(64)).is_ok());
    }

    #[test]
    fn s3_settings_are_checked_for_their_form() {
        assert!(check_s3("destination", "s3://bkt/prefix/", Allow::KeyOrPrefix).unwrap().is_some());
        assert!(check_s3("destination", "s3://bkt/{{ ds }}/", Allow::KeyOrPrefix).unwrap().is_none());
        assert!(check_s3("destination", "{{ params.dest }}", Allow::KeyOrPrefix).unwrap().is_none());
        let err = check_s3("destination", "bkt/{{ ds }}/", Allow::KeyOrPrefix).unwrap_err();
        assert_eq!(err.message, "\"bkt/{{ ds }}/\" is not an s3:// URL; write it as s3://bucket/key");
        let err = check_s3("source", "s3://bkt/a/*.csv", Allow::KeyOrPrefix).unwrap_err();
        assert_eq!(err.message, "\"s3://bkt/a/*.csv\" holds a glob character (*, ? or [), and this setting takes a key or a prefix");
        let err = check_s3("source", "s3://bkt/a/", Allow::Key).unwrap_err();
        assert_eq!(err.message, "\"s3://bkt/a/\" names a prefix; name one object (a key that does not end with /)");
        let err = check_s3("source", "s3://bkt/a/[x", Allow::Any).unwrap_err();
        assert_eq!(err.message, "invalid glob \"a/[x\": invalid range pattern at character 3");
        assert_eq!(check_local("destination", "s3://x/y").unwrap_err().message, "\"s3://x/y\" is a URL; this setting takes a local path");
    }
}
