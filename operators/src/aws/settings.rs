//! The settings AWS operators share, written once: the connection a task calls AWS with (and its
//! default), the durations every wait takes, `s3://` checks, and [`aws_settings!`], which adds the
//! shared fields to an operator's `Config`.
//!
//! serde's `flatten` cannot be combined with `deny_unknown_fields`, and a misspelt key must stay a
//! compile error with its path, so a shared part cannot be a struct of its own: the macro writes
//! the shared fields into each `Config` instead, with their doc comments (the JSON Schema's
//! descriptions) and serde attributes, in the place the operator puts them.

use std::time::Duration;

use flowctl_engine::connections::{AwsConnection, AWS_DEFAULT};
use flowctl_engine::operator::{ConfigError, TaskContext, TaskError};
use flowctl_engine::template::is_template;

/// The connection AWS operators use when `connection:` is not set.
pub fn default_connection() -> String {
    AWS_DEFAULT.to_string()
}

/// The AWS connection a task names, or an error saying how to define it.
pub fn aws_connection(ctx: &TaskContext, name: &str) -> Result<AwsConnection, TaskError> {
    ctx.connections.aws(name).map_err(|e| TaskError::fatal(e.0))
}

/// Parses a duration setting (`30s`, `5m`, `1h 30m`), which must be above zero.
pub fn parse_duration(path: &str, text: &str) -> Result<Duration, String> {
    let parsed = humantime::parse_duration(text.trim()).map_err(|e| format!("{path}: invalid duration \"{text}\": {e}; write e.g. 30s, 5m or 1h"))?;
    if parsed.is_zero() {
        return Err(format!("{path}: must be longer than zero"));
    }
    Ok(parsed)
}

/// Checks a duration setting at compile time (a template is checked once rendered).
pub fn check_duration(path: &str, text: &str) -> Result<(), ConfigError> {
    if is_template(text) {
        return Ok(());
    }
    parse_duration(path, text).map(drop).map_err(|e| ConfigError::new(path, e.trim_start_matches(&format!("{path}: ")).to_string()))
}

/// Checks an optional duration setting at compile time.
pub fn check_optional_duration(path: &str, text: Option<&str>) -> Result<(), ConfigError> {
    text.map_or(Ok(()), |text| check_duration(path, text))
}

/// The poll interval of a task: its `poll_interval` setting, or the operator's default.
pub fn poll_interval(setting: Option<&str>, default: Duration) -> Result<Duration, TaskError> {
    match setting {
        Some(text) => parse_duration("poll_interval", text).map_err(TaskError::fatal),
        None => Ok(default),
    }
}

/// Checks an `s3://bucket/...` URL setting (unless it is a template) for operators that hand the
/// URL to a service rather than read it themselves.
pub fn check_s3_url(path: &str, url: &str) -> Result<(), ConfigError> {
    if is_template(url) {
        return Ok(());
    }
    match url.strip_prefix("s3://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(ConfigError::new(path, format!("\"{url}\" is not an S3 URL; write s3://bucket/prefix"))),
    }
}

/// Declares an operator's `Config` struct with the settings AWS operators share written in by
/// name. The struct is written as usual (attributes, doc comments, `pub field: Type,` each ending
/// with a comma); a shared setting is written as its bare name where it belongs:
///
/// - `connection,`: the AWS connection (`String`, default `aws_default`), documented as
///   "The AWS connection [default: aws_default]." unless doc comments are written above it;
/// - `concurrency,`: requests in flight (`Option<usize>`, checked by
///   `s3::settings::check_concurrency`); its doc comments are the operator's;
/// - `overwrite,`: what to do with a destination that exists (`s3::settings::Overwrite`,
///   default `always`); its doc comments are the operator's.
///
/// ```text
/// aws_settings! {
///     /// The settings of an `s3.delete` task.
///     #[derive(Debug, Deserialize, schemars::JsonSchema)]
///     #[serde(deny_unknown_fields)]
///     pub struct DeleteConfig {
///         /// The objects to delete.
///         pub keys: Option<Vec<String>>,
///         connection,
///     }
/// }
/// ```
macro_rules! aws_settings {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($body:tt)* }) => {
        $crate::aws::settings::aws_settings!(@fields [$(#[$meta])* $vis struct $name] [] $($body)*);
    };
    (@fields $head:tt [$($done:tt)*] connection, $($rest:tt)*) => {
        $crate::aws::settings::aws_settings!(@fields $head [$($done)*
            /// The AWS connection [default: aws_default].
            #[serde(default = "crate::aws::settings::default_connection")]
            pub connection: String,
        ] $($rest)*);
    };
    (@fields $head:tt [$($done:tt)*] $(#[$doc:meta])+ connection, $($rest:tt)*) => {
        $crate::aws::settings::aws_settings!(@fields $head [$($done)*
            $(#[$doc])+
            #[serde(default = "crate::aws::settings::default_connection")]
            pub connection: String,
        ] $($rest)*);
    };
    (@fields $head:tt [$($done:tt)*] $(#[$doc:meta])+ concurrency, $($rest:tt)*) => {
        $crate::aws::settings::aws_settings!(@fields $head [$($done)*
            $(#[$doc])+
            pub concurrency: Option<usize>,
        ] $($rest)*);
    };
    (@fields $head:tt [$($done:tt)*] $(#[$doc:meta])+ overwrite, $($rest:tt)*) => {
        $crate::aws::settings::aws_settings!(@fields $head [$($done)*
            $(#[$doc])+
            #[serde(default)]
            pub overwrite: $crate::aws::s3::settings::Overwrite,
        ] $($rest)*);
    };
    (@fields $head:tt [$($done:tt)*] $(#[$attr:meta])* $fvis:vis $field:ident : $ty:ty, $($rest:tt)*) => {
        $crate::aws::settings::aws_settings!(@fields $head [$($done)* $(#[$attr])* $fvis $field: $ty,] $($rest)*);
    };
    (@fields [$($head:tt)*] [$($done:tt)*]) => {
        $($head)* { $($done)* }
    };
}
pub(crate) use aws_settings;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_checked() {
        assert_eq!(parse_duration("poke_interval", "200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(
            check_duration("timeout", "10 parsecs").unwrap_err().message,
            "invalid duration \"10 parsecs\": unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations); write e.g. 30s, 5m or 1h"
        );
        assert_eq!(check_duration("timeout", "0s").unwrap_err().message, "must be longer than zero");
        assert_eq!(check_duration("timeout", "0s").unwrap_err().path, "timeout");
        assert!(check_duration("timeout", "{{ params.t }}").is_ok());
        assert_eq!(poll_interval(None, Duration::from_secs(5)), Ok(Duration::from_secs(5)));
        assert_eq!(poll_interval(Some("0s"), Duration::from_secs(5)), Err(TaskError::fatal("poll_interval: must be longer than zero")));
    }

    #[test]
    fn s3_urls_are_checked() {
        assert!(check_s3_url("from", "s3://b/k").is_ok());
        assert!(check_s3_url("from", "s3://{{ params.bucket }}/k").is_ok());
        assert_eq!(check_s3_url("from", "b/k").unwrap_err().message, "\"b/k\" is not an S3 URL; write s3://bucket/prefix");
        assert!(check_s3_url("from", "s3:///k").is_err());
    }

    #[cfg(feature = "aws-s3")]
    aws_settings! {
        /// A config with each shared setting.
        #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
        #[serde(deny_unknown_fields)]
        struct Example {
            /// Its own field.
            source: String,
            connection,
            /// How many at once.
            concurrency,
            /// What to replace.
            overwrite,
        }
    }

    #[cfg(feature = "aws-s3")]
    #[test]
    fn the_macro_writes_the_shared_fields_in_place_and_keeps_unknown_keys_errors() {
        let example: Example = serde_json::from_value(serde_json::json!({"source": "s3://b/k"})).unwrap();
        assert_eq!((example.source.as_str(), example.connection.as_str()), ("s3://b/k", AWS_DEFAULT));
        assert_eq!(example.concurrency, None);
        assert_eq!(example.overwrite, crate::aws::s3::settings::Overwrite::Always);
        let err = serde_json::from_value::<Example>(serde_json::json!({"source": "x", "conection": "lake"})).unwrap_err();
        assert!(err.to_string().starts_with("unknown field `conection`"), "{err}");
        let schema = serde_json::to_value(schemars::schema_for!(Example)).unwrap();
        let properties: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(properties, ["source", "connection", "concurrency", "overwrite"], "in the order written");
        assert_eq!(schema["properties"]["connection"]["description"], "The AWS connection [default: aws_default].");
        assert_eq!(schema["properties"]["concurrency"]["description"], "How many at once.");
    }
}
