//! `s3.wait`: a sensor that waits until a key, a prefix or a glob has objects.
//!
//! It pokes (HeadObject for a key, a listing for a prefix or glob) every `poke_interval` until
//! enough objects of the wanted size exist, or `timeout` has passed. Between pokes it gives its
//! slot back to the engine ([`flowctl_engine::operator::Slot::wait_unslotted`]), so waiting
//! sensors do not hold the DAG's `max_active_tasks` or the global `parallelism` (Airflow's
//! "reschedule" mode). A transient error of one poke (throttling, a 5xx, a lost connection, after
//! the SDK's own retries) is logged and the next poke tries again; a final one (access denied,
//! no such bucket) fails the task at once.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use flowctl_engine::operator::{ConfigError, ErrorKind, Operator, Outcome, TaskContext, TaskError};
use serde::Deserialize;

use super::list::{listing_outputs, matching};
use super::settings::{check_s3, rendered_s3, Allow, Size};
use super::transfer::{head, human_bytes, ObjectInfo, S3};
use super::url::S3Url;
use crate::aws::settings::{aws_connection, aws_settings, check_duration, parse_duration};

aws_settings! {
    /// The settings of an `s3.wait` task.
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct WaitConfig {
        /// What to wait for: one object (`s3://bucket/in/{{ ds }}/_SUCCESS`), any object under a
        /// prefix (ending with `/`), or objects matching a glob (`s3://bucket/in/{{ ds }}/*.csv`).
        pub source: String,
        /// How many matching objects must exist (a prefix or glob only) [default: 1].
        pub min_count: Option<usize>,
        /// Objects smaller than this do not count, e.g. `1` to ignore empty ones, or `10MiB`
        /// [default: 0].
        pub min_size: Option<Size>,
        /// How long to wait between pokes, e.g. `30s` or `5m`; the task holds no slot meanwhile
        /// [default: 30s].
        pub poke_interval: Option<String>,
        /// How long to wait in all before failing (or skipping, with `soft_fail`), e.g. `6h`; counted
        /// from the start of each attempt [default: 1h].
        pub timeout: Option<String>,
        /// End as skipped instead of failed when the timeout passes, so downstream tasks skip too
        /// [default: false].
        #[serde(default)]
        pub soft_fail: bool,
        connection,
    }
}

/// The poke interval when none is set.
const DEFAULT_POKE_INTERVAL: Duration = Duration::from_secs(30);
/// The timeout when none is set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

/// The `s3.wait` sensor.
pub struct Wait;

#[async_trait]
impl Operator for Wait {
    const NAME: &'static str = "s3.wait";
    const DOCS: &'static str = "docs/operators/s3.md";
    type Config = WaitConfig;

    fn check(config: &WaitConfig) -> Result<(), ConfigError> {
        let source = check_s3("source", &config.source, Allow::Any)?;
        match config.min_count {
            Some(0) => return Err(ConfigError::new("min_count", "must be at least 1")),
            Some(n) if n > 1 => {
                if let Some(source) = &source {
                    if !source.is_prefix() && !source.is_glob() {
                        return Err(ConfigError::new(
                            "min_count",
                            format!("{source} names one object, so at most 1 can exist; end the source with / (a prefix) or use a glob"),
                        ));
                    }
                }
            }
            _ => {}
        }
        if let Some(size) = &config.min_size {
            size.bytes().map_err(|e| ConfigError::new("min_size", e))?;
        }
        if let Some(interval) = &config.poke_interval {
            check_duration("poke_interval", interval)?;
        }
        if let Some(timeout) = &config.timeout {
            check_duration("timeout", timeout)?;
        }
        Ok(())
    }

    async fn execute(&self, config: WaitConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
        run(config, ctx).await
    }
}

/// What the sensor waits for, in words and as a test.
struct Target {
    source: S3Url,
    min_count: usize,
    min_size: u64,
}

impl Target {
    fn describe(&self) -> String {
        let size = if self.min_size > 0 { format!(" of at least {}", human_bytes(self.min_size)) } else { String::new() };
        if self.source.is_prefix() || self.source.is_glob() {
            let what = if self.source.is_glob() { "matching" } else { "under" };
            format!("{} object{}{size} {what} {}", self.min_count, if self.min_count == 1 { "" } else { "s" }, self.source)
        } else {
            format!("{}{size}", self.source)
        }
    }

    /// One poke: the objects that count.
    async fn poke(&self, s3: &S3) -> Result<Vec<ObjectInfo>, TaskError> {
        if self.source.is_prefix() || self.source.is_glob() {
            return matching(s3, &self.source, self.min_size).await;
        }
        Ok(head(s3, &self.source)
            .await?
            .filter(|h| h.size >= self.min_size)
            .map(|h| ObjectInfo { key: self.source.key.clone(), size: h.size, etag: h.etag })
            .into_iter()
            .collect())
    }
}

async fn run(config: WaitConfig, ctx: TaskContext) -> Result<Outcome, TaskError> {
    let source = rendered_s3("source", &config.source, Allow::Any)?;
    let interval = match &config.poke_interval {
        Some(text) => parse_duration("poke_interval", text).map_err(TaskError::fatal)?,
        None => DEFAULT_POKE_INTERVAL,
    };
    let timeout = match &config.timeout {
        Some(text) => parse_duration("timeout", text).map_err(TaskError::fatal)?,
        None => DEFAULT_TIMEOUT,
    };
    let min_size = config.min_size.as_ref().map(Size::bytes).transpose().map_err(|e| TaskError::fatal(format!("min_size: {e}")))?.unwrap_or(0);
    let target = Target { source, min_count: config.min_count.unwrap_or(1), min_size };
    let conn = aws_connection(&ctx, &config.connection)?;
    let s3 = S3::connect(&conn).await?;
    let started = Instant::now();
    let deadline = started + timeout;
    ctx.log.line(&format!(
        "waiting for {}, poking every {}, for up to {}",
        target.describe(),
        humantime::format_duration(interval),
        humantime::format_duration(timeout)
    ));
    let mut last_found = 0;
    let mut last_error: Option<String> = None;
    for poke in 1.. {
        let result = tokio::select! {
            result = target.poke(&s3) => result,
            _ = ctx.cancel.cancelled() => return Err(TaskError::cancelled()),
        };
        match result {
            Ok(found) if found.len() >= target.min_count => {
                ctx.log.line(&format!("poke {poke}: found {}; done after {}", count(found.len()), elapsed(started)));
                return Ok(Outcome::Success { outputs: listing_outputs(&target.source.bucket, &found) });
            }
            Ok(found) => {
                last_found = found.len();
                last_error = None;
                ctx.log.line(&format!("poke {poke}: found {} of the {} needed", count(found.len()), target.min_count));
            }
            Err(err) if err.kind == ErrorKind::Retryable => {
                ctx.log.line(&format!("poke {poke} failed, trying again at the next poke: {}", err.message));
                last_error = Some(err.message);
            }
            Err(err) => return Err(err),
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        ctx.slot.wait_unslotted(interval.min(deadline - now), &ctx.cancel).await?;
    }
    let message = format!(
        "timed out after {} waiting for {}: {}{}",
        humantime::format_duration(timeout),
        target.describe(),
        if target.source.is_prefix() || target.source.is_glob() {
            format!("the last poke found {}", count(last_found))
        } else if min_size > 0 {
            "it does not exist, or is smaller".to_string()
        } else {
            "it does not exist".to_string()
        },
        match &last_error {
            Some(error) => format!(" (and failed: {error})"),
            None => String::new(),
        }
    );
    if config.soft_fail {
        ctx.log.line(&format!("{message}; soft_fail is set, so the task is skipped"));
        return Ok(Outcome::Skipped { reason: message, outputs: listing_outputs(&target.source.bucket, &[]) });
    }
    Err(TaskError::fatal(format!("{message}; raise `timeout`, or check what writes it")))
}

fn count(n: usize) -> String {
    format!("{n} object{}", if n == 1 { "" } else { "s" })
}

fn elapsed(since: Instant) -> String {
    let d = since.elapsed();
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_engine::Registry;
    use serde_json::{json, Value};

    fn validate(with: Value) -> Result<(), ConfigError> {
        let mut registry = Registry::new();
        registry.register(Wait);
        registry.get("s3.wait").unwrap().validate(&with)
    }

    #[test]
    fn config_errors_name_the_setting() {
        assert!(validate(json!({"source": "s3://bkt/in/{{ ds }}/_SUCCESS", "poke_interval": "10s", "timeout": "2h"})).is_ok());
        assert!(validate(json!({"source": "s3://bkt/in/*.csv", "min_count": 3, "min_size": "1KiB"})).is_ok());
        let err = validate(json!({"source": "s3://bkt/in/a.csv", "min_count": 2})).unwrap_err();
        assert_eq!(
            (err.path.as_str(), err.message.as_str()),
            ("min_count", "s3://bkt/in/a.csv names one object, so at most 1 can exist; end the source with / (a prefix) or use a glob")
        );
        let err = validate(json!({"source": "s3://bkt/in/", "poke_interval": "often"})).unwrap_err();
        assert_eq!(err.path, "poke_interval");
        assert!(err.message.starts_with("invalid duration \"often\""), "{}", err.message);
        let err = validate(json!({"source": "s3://bkt/in/", "timeout": "0s"})).unwrap_err();
        assert_eq!((err.path.as_str(), err.message.as_str()), ("timeout", "must be longer than zero"));
        let err = validate(json!({"source": "s3://bkt/in/", "min_count": 0})).unwrap_err();
        assert_eq!(err.message, "must be at least 1");
        let err = validate(json!({"source": "s3://bkt/in/[", "min_count": 1})).unwrap_err();
        assert_eq!(err.path, "source");
    }

    #[test]
    fn targets_describe_themselves() {
        let t = |source: &str, min_count, min_size| Target { source: S3Url::parse(source).unwrap(), min_count, min_size }.describe();
        assert_eq!(t("s3://bkt/in/_SUCCESS", 1, 0), "s3://bkt/in/_SUCCESS");
        assert_eq!(t("s3://bkt/in/a.csv", 1, 1024), "s3://bkt/in/a.csv of at least 1 KiB");
        assert_eq!(t("s3://bkt/in/", 1, 0), "1 object under s3://bkt/in/");
        assert_eq!(t("s3://bkt/in/*.csv", 3, 0), "3 objects matching s3://bkt/in/*.csv");
    }
}
