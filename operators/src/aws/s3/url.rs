//! `s3://bucket/key` URLs, and the local-or-S3 ends of transfer operators.
//!
//! Every S3 operator names its objects with one URL form, so parsing (and its error messages) lives
//! in one place. A URL's key may be an object's key, a prefix (ending with `/`, or empty for the
//! whole bucket), or a glob (`*`, `?`, `[...]`, `**`), as the operator allows.

use std::fmt;
use std::path::{Path, PathBuf};

use glob::{MatchOptions, Pattern};

/// An `s3://bucket/key` URL. The key has no leading `/` and may be empty (the bucket's root).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Url {
    /// The bucket's name.
    pub bucket: String,
    /// The object's key, a prefix or a glob; empty for the whole bucket.
    pub key: String,
}

impl S3Url {
    /// Parses `s3://bucket/key`; the error says what is wrong and how to write it.
    pub fn parse(text: &str) -> Result<S3Url, String> {
        let trimmed = text.trim();
        let rest = match trimmed.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("s3") => rest,
            Some((scheme, _)) => {
                return Err(format!("\"{text}\" is a {scheme}:// URL; write an S3 location as s3://bucket/key"));
            }
            None => return Err(format!("\"{text}\" is not an s3:// URL; write it as s3://bucket/key")),
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("\"{text}\" names no bucket; write it as s3://bucket/key"));
        }
        check_bucket(bucket).map_err(|why| format!("\"{text}\": bucket \"{bucket}\" {why}"))?;
        Ok(S3Url { bucket: bucket.to_string(), key: key.to_string() })
    }

    /// The same bucket with another key.
    pub fn with_key(&self, key: impl Into<String>) -> S3Url {
        S3Url { bucket: self.bucket.clone(), key: key.into() }
    }

    /// Whether the key names a prefix (a "folder"): empty or ending with `/`.
    pub fn is_prefix(&self) -> bool {
        self.key.is_empty() || self.key.ends_with('/')
    }

    /// Whether the key holds glob characters (`*`, `?`, `[`).
    pub fn is_glob(&self) -> bool {
        has_glob_chars(&self.key)
    }

    /// The last segment of the key (the object's "file name").
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// S3's bucket naming rules, the ones a typo breaks: 3 to 63 characters, lower-case letters,
/// digits, `.` and `-`, starting and ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), String> {
    if !(3..=63).contains(&bucket.len()) {
        return Err("must be 3 to 63 characters long".into());
    }
    if let Some(c) = bucket.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-')) {
        return Err(format!("holds '{c}'; bucket names are lower-case letters, digits, '.' and '-'"));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(bucket.chars().next()) || !edge_ok(bucket.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Whether `text` holds glob characters.
pub fn has_glob_chars(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// How globs match keys and paths: `*` and `?` stay within one `/`-separated segment, `**`
/// crosses them.
pub const GLOB_OPTIONS: MatchOptions = MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: false };

/// A compiled glob, with the literal part before its first glob character (the prefix to list in
/// S3, or the folder to walk on disk).
#[derive(Debug, Clone)]
pub struct Glob {
    pattern: Pattern,
    base: String,
}

impl Glob {
    /// Compiles `text`; the error names the position of the mistake.
    pub fn new(text: &str) -> Result<Glob, String> {
        let pattern = Pattern::new(text).map_err(|e| format!("invalid glob \"{text}\": {} at character {}", e.msg, e.pos + 1))?;
        // `**` only means "any folders" as a whole segment; elsewhere glob treats it as an error
        // already, so the literal base is everything up to the last `/` before the first glob
        // character.
        let first = text.find(['*', '?', '[']).unwrap_or(text.len());
        let base = match text[..first].rfind('/') {
            Some(slash) => text[..=slash].to_string(),
            None => String::new(),
        };
        Ok(Glob { pattern, base })
    }

    /// The literal part before the first glob segment, ending with `/` (or empty).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether `text` (a key, or a path written with `/`) matches.
    pub fn matches(&self, text: &str) -> bool {
        self.pattern.matches_with(text, GLOB_OPTIONS)
    }
}

/// A transfer's end: a local path or an S3 URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local file, folder or glob.
    Local(PathBuf),
    /// An S3 object, prefix or glob.
    S3(S3Url),
}

impl Location {
    /// `s3://...` is S3 (and must parse); anything else with `://` is refused; the rest is a
    /// local path.
    pub fn parse(text: &str) -> Result<Location, String> {
        if text.trim().is_empty() {
            return Err("is empty; give a local path or an s3://bucket/key URL".into());
        }
        if text.contains("://") {
            return S3Url::parse(text).map(Location::S3);
        }
        Ok(Location::Local(PathBuf::from(text)))
    }
}

/// The key an uploaded file gets: `prefix` (a key ending with `/`, or empty) followed by the
/// file's path relative to `base`, with `/` separators.
pub fn key_for(prefix: &str, base: &Path, file: &Path) -> Result<String, String> {
    let relative = file
        .strip_prefix(base)
        .map_err(|_| format!("{} is not under {}", file.display(), base.display()))?;
    let mut key = prefix.to_string();
    if !key.is_empty() && !key.ends_with('/') {
        key.push('/');
    }
    let parts: Vec<String> = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    key.push_str(&parts.join("/"));
    Ok(key)
}

/// The local path a downloaded object gets: `dest` followed by the key's part after `prefix`.
/// Keys that would climb out of `dest` (`..` segments, absolute parts) are refused.
pub fn path_for(dest: &Path, prefix: &str, key: &str) -> Result<PathBuf, String> {
    let relative = key.strip_prefix(prefix).unwrap_or(key).trim_start_matches('/');
    let mut path = dest.to_path_buf();
    for segment in relative.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(format!("key \"{key}\" climbs out of the destination folder with '..'; it is not downloaded")),
            s => path.push(s),
        }
    }
    if path == dest {
        return Err(format!("key \"{key}\" names no file below the prefix"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_key() {
        assert_eq!(S3Url::parse("s3://my-bucket/a/b.csv").unwrap(), S3Url { bucket: "my-bucket".into(), key: "a/b.csv".into() });
        assert_eq!(S3Url::parse("s3://my-bucket").unwrap().key, "");
        assert_eq!(S3Url::parse("S3://my-bucket/").unwrap().key, "");
        assert!(S3Url::parse("s3://my-bucket/").unwrap().is_prefix());
        assert!(S3Url::parse("s3://my-bucket/x/").unwrap().is_prefix());
        assert!(!S3Url::parse("s3://my-bucket/x").unwrap().is_prefix());
        assert!(S3Url::parse("s3://my-bucket/x/*.csv").unwrap().is_glob());
        assert_eq!(S3Url::parse("s3://my-bucket/a/b.csv").unwrap().to_string(), "s3://my-bucket/a/b.csv");
        assert_eq!(S3Url::parse("s3://my-bucket/a/b.csv").unwrap().file_name(), "b.csv");
    }

    #[test]
    fn parse_errors_say_how_to_write_it() {
        assert_eq!(S3Url::parse("my-bucket/key").unwrap_err(), "\"my-bucket/key\" is not an s3:// URL; write it as s3://bucket/key");
        assert_eq!(S3Url::parse("https://x/y").unwrap_err(), "\"https://x/y\" is a https:// URL; write an S3 location as s3://bucket/key");
        assert_eq!(S3Url::parse("s3:///key").unwrap_err(), "\"s3:///key\" names no bucket; write it as s3://bucket/key");
        assert_eq!(
            S3Url::parse("s3://My_Bucket/k").unwrap_err(),
            "\"s3://My_Bucket/k\": bucket \"My_Bucket\" holds 'M'; bucket names are lower-case letters, digits, '.' and '-'"
        );
        assert_eq!(S3Url::parse("s3://ab/k").unwrap_err(), "\"s3://ab/k\": bucket \"ab\" must be 3 to 63 characters long");
        assert_eq!(S3Url::parse("s3://-abc/k").unwrap_err(), "\"s3://-abc/k\": bucket \"-abc\" must start and end with a letter or digit");
    }

    #[test]
    fn locations_are_local_or_s3() {
        assert_eq!(Location::parse("data/out.csv").unwrap(), Location::Local("data/out.csv".into()));
        assert!(matches!(Location::parse("s3://bkt/x").unwrap(), Location::S3(_)));
        assert_eq!(Location::parse("gs://b/x").unwrap_err(), "\"gs://b/x\" is a gs:// URL; write an S3 location as s3://bucket/key");
        assert_eq!(Location::parse(" ").unwrap_err(), "is empty; give a local path or an s3://bucket/key URL");
    }

    #[test]
    fn globs_keep_star_within_a_segment() {
        let g = Glob::new("data/2024/*.csv").unwrap();
        assert_eq!(g.base(), "data/2024/");
        assert!(g.matches("data/2024/a.csv"));
        assert!(!g.matches("data/2024/x/a.csv"));
        let g = Glob::new("data/**/*.csv").unwrap();
        assert_eq!(g.base(), "data/");
        assert!(g.matches("data/a.csv"));
        assert!(g.matches("data/x/y/a.csv"));
        assert!(!g.matches("other/a.csv"));
        assert_eq!(Glob::new("*.csv").unwrap().base(), "");
        assert_eq!(Glob::new("data/[a-.csv").unwrap_err(), "invalid glob \"data/[a-.csv\": invalid range pattern at character 6");
    }

    #[test]
    fn keys_and_paths_map_both_ways() {
        assert_eq!(key_for("out/", Path::new("/tmp/d"), Path::new("/tmp/d/x/a.csv")).unwrap(), "out/x/a.csv");
        assert_eq!(key_for("out", Path::new("/tmp/d"), Path::new("/tmp/d/a.csv")).unwrap(), "out/a.csv");
        assert_eq!(key_for("", Path::new("/tmp/d"), Path::new("/tmp/d/a.csv")).unwrap(), "a.csv");
        assert_eq!(path_for(Path::new("/dl"), "in/", "in/x/a.csv").unwrap(), PathBuf::from("/dl/x/a.csv"));
        assert_eq!(path_for(Path::new("/dl"), "", "a.csv").unwrap(), PathBuf::from("/dl/a.csv"));
        assert_eq!(
            path_for(Path::new("/dl"), "in/", "in/../../etc/passwd").unwrap_err(),
            "key \"in/../../etc/passwd\" climbs out of the destination folder with '..'; it is not downloaded"
        );
        assert_eq!(path_for(Path::new("/dl"), "in/", "in/").unwrap_err(), "key \"in/\" names no file below the prefix");
    }
}
