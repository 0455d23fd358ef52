//! The pieces every EMR wait is made of: a sleep and a request that end when the attempt is
//! cancelled, a tolerance for polls that fail for a while (throttling, 5xx replies, a lost
//! connection, after the SDK's own retries), and a log line per state change rather than per
//! poll.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use flowctl_engine::operator::{ErrorKind, LogSink, TaskContext, TaskError};

/// How many polls in a row may fail (each after the SDK's own retries) before the attempt fails.
/// The error is retryable and the job stays recorded, so the retry reattaches.
pub const MAX_POLL_FAILURES: u32 = 10;
/// The longest wait between two polls after failures: the wait doubles from the poll interval
/// up to this.
pub const MAX_POLL_BACKOFF: Duration = Duration::from_secs(300);

/// Why a wait ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupted {
    /// The task was cancelled or timed out: cancel the work at the service.
    Cancelled,
    /// flowctl itself is stopping: leave the work running for the next start to reattach to.
    Shutdown,
}

/// Why a wait ended before the work did.
#[derive(Debug)]
pub enum Stop {
    /// Polling failed for good.
    Error(TaskError),
    /// The attempt was cancelled, or flowctl is stopping.
    Interrupted(Interrupted),
}

impl From<Interrupted> for Stop {
    fn from(i: Interrupted) -> Self {
        Stop::Interrupted(i)
    }
}

fn interrupted(ctx: &TaskContext) -> Interrupted {
    if ctx.shutdown.is_cancelled() {
        Interrupted::Shutdown
    } else {
        Interrupted::Cancelled
    }
}

/// Sleeps `duration`, unless the attempt is cancelled first.
pub async fn sleep(ctx: &TaskContext, duration: Duration) -> Result<(), Interrupted> {
    tokio::select! {
        _ = tokio::time::sleep(duration) => Ok(()),
        _ = ctx.cancel.cancelled() => Err(interrupted(ctx)),
    }
}

/// Runs a request, unless the attempt is cancelled first (a request the SDK retries can take a
/// minute; a cancel must not wait for it).
pub async fn guard<T>(ctx: &TaskContext, request: impl Future<Output = T>) -> Result<T, Interrupted> {
    tokio::select! {
        result = request => Ok(result),
        _ = ctx.cancel.cancelled() => Err(interrupted(ctx)),
    }
}

/// Counts polls that failed in a row and says how long to wait before the next one.
#[derive(Debug)]
pub struct Tolerance {
    interval: Duration,
    failures: u32,
}

impl Tolerance {
    /// A tolerance for polls every `interval`.
    pub fn new(interval: Duration) -> Self {
        Tolerance { interval, failures: 0 }
    }

    /// A poll succeeded: the count starts again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// A poll failed: returns how long to wait before the next one, or the error to end the
    /// attempt with (a final error at once; a retryable one after [`MAX_POLL_FAILURES`] in a row).
    pub fn failed(&mut self, err: TaskError, log: &dyn LogSink) -> Result<Duration, TaskError> {
        if err.kind == ErrorKind::Final {
            return Err(err);
        }
        self.failures += 1;
        if self.failures >= MAX_POLL_FAILURES {
            return Err(TaskError::retryable(format!("{} ({MAX_POLL_FAILURES} polls in a row failed; a retry reattaches)", err.message)));
        }
        let factor = 1u32 << (self.failures - 1).min(16);
        let delay = self.interval.saturating_mul(factor).min(MAX_POLL_BACKOFF.max(self.interval));
        log.line(&format!(
            "poll {} of {MAX_POLL_FAILURES} allowed in a row failed, trying again in {}: {}",
            self.failures,
            humantime::format_duration(delay),
            err.message
        ));
        Ok(delay)
    }
}

/// The last state seen of each job, so each change is logged once.
#[derive(Debug, Default)]
pub struct States(HashMap<String, String>);

impl States {
    /// Notes `state` for `id`. Returns what to log when it is new: `STATE` the first time,
    /// `OLD -> NEW` after a change; `None` when nothing changed.
    pub fn note(&mut self, id: &str, state: &str) -> Option<String> {
        match self.0.insert(id.to_string(), state.to_string()) {
            None => Some(state.to_string()),
            Some(old) if old == state => None,
            Some(old) => Some(format!("{old} -> {state}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowctl_engine::operator::MemoryLog;

    #[test]
    fn each_state_is_logged_once() {
        let mut states = States::default();
        assert_eq!(states.note("s-1", "PENDING").as_deref(), Some("PENDING"));
        assert_eq!(states.note("s-1", "PENDING"), None);
        assert_eq!(states.note("s-1", "RUNNING").as_deref(), Some("PENDING -> RUNNING"));
        assert_eq!(states.note("s-2", "RUNNING").as_deref(), Some("RUNNING"));
    }

    #[test]
    fn failed_polls_back_off_up_to_a_bound_and_give_up() {
        let log = MemoryLog::default();
        let mut t = Tolerance::new(Duration::from_secs(30));
        let delays: Vec<u64> = (0..MAX_POLL_FAILURES - 1)
            .map(|_| t.failed(TaskError::retryable("ThrottlingException: Rate exceeded"), &log).unwrap().as_secs())
            .collect();
        assert_eq!(delays, [30, 60, 120, 240, 300, 300, 300, 300, 300]);
        let err = t.failed(TaskError::retryable("ThrottlingException: Rate exceeded"), &log).unwrap_err();
        assert_eq!(err, TaskError::retryable("ThrottlingException: Rate exceeded (10 polls in a row failed; a retry reattaches)"));
        assert_eq!(log.lines()[0], "poll 1 of 10 allowed in a row failed, trying again in 30s: ThrottlingException: Rate exceeded");
        t.succeeded();
        assert_eq!(t.failed(TaskError::retryable("x"), &log).unwrap(), Duration::from_secs(30));
        assert_eq!(t.failed(TaskError::fatal("access denied"), &log).unwrap_err(), TaskError::fatal("access denied"));
    }
}
