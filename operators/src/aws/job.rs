//! The one external-work driver: an AWS operator that starts work which runs for minutes or hours
//! outside flowctl (EMR steps and clusters, Redshift statements, SageMaker training jobs) says how
//! to submit it, describe it and cancel it ([`Job`], with its polling half [`Describe`]), and
//! [`drive`] does the rest, the same way for every service:
//!
//! - the work is recorded through `ctx.external_jobs` before the first poll, so a retry or a
//!   restarted flowctl finds it in `ctx.external_job` and reattaches instead of submitting again;
//!   work whose name flowctl chooses ([`Job::choose_name`]) is recorded before it is submitted;
//! - a record that cannot be written cancels the work just submitted, which nobody could
//!   reattach to;
//! - polls that fail for a while (throttling, 5xx replies, a lost connection, after the SDK's own
//!   retries) are tried again with a backoff doubling from the poll interval to the job's
//!   [`Describe::MAX_BACKOFF`], up to [`MAX_POLL_FAILURES`] in a row; then the attempt fails with a
//!   retryable error and the record stays for the retry;
//! - each state change is logged once, not once per poll;
//! - `ctx.cancel` (a `flowctl cancel`, a `timeout:`) cancels the work at the service, within
//!   [`CANCEL_DEADLINE`] and with a log line that says how to cancel it by hand when the service
//!   does not; `ctx.shutdown` (flowctl itself stops) leaves it running and recorded for the next
//!   start;
//! - the record is cleared once the work has ended, so a retry submits it anew.
//!
//! [`poll`] is the wait alone, for work nothing records (`emr.terminate_cluster` asks for a
//! termination that is idempotent at EMR).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use flowctl_engine::operator::{ErrorKind, ExternalJob, LogSink, TaskContext, TaskError};

/// How many polls in a row may fail (each after the SDK's own retries) before the attempt fails.
/// The error is retryable and the job stays recorded, so the retry reattaches.
pub const MAX_POLL_FAILURES: u32 = 10;
/// How long cancelling at the service may take before the driver gives up and says how to cancel
/// by hand: the engine waits for the operator to stop, and a user waits for `flowctl cancel`.
pub const CANCEL_DEADLINE: Duration = Duration::from_secs(60);

/// The wait before the next poll after `failures` failed ones in a row: the poll interval (at
/// least a second), doubled per failure, at most `cap` (or the interval, when that is longer).
pub fn backoff(interval: Duration, failures: u32, cap: Duration) -> Duration {
    let base = interval.max(Duration::from_secs(1));
    base.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(cap.max(interval))
}

/// What a poll found.
#[derive(Debug, Clone)]
pub enum Progress<T> {
    /// The work goes on: poll again after the poll interval.
    Running,
    /// The work goes on, and the next poll must come sooner than the interval: within this (a
    /// limit of flowctl's, such as `max_runtime`, is near).
    PollWithin(Duration),
    /// The work has ended: what it produced, or the error the task fails with.
    Ended(Result<T, TaskError>),
    /// The work must not go on (a limit of flowctl's has passed): it is cancelled at the service
    /// and the task fails with this error.
    Stop(TaskError),
}

/// Why the driver cancels a job at the service, for the job's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The task was cancelled or timed out.
    Cancelled,
    /// The job was submitted but its record could not be written: a retry would submit it again.
    Unrecorded,
    /// Polling failed and the job asked to be cancelled then ([`Job::cancel_if_wait_fails`]).
    WaitFailed,
    /// A poll answered [`Progress::Stop`].
    Stopped,
}

/// How a job's log says a state change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateLines {
    /// `cluster j-1: STARTING` the first time, `cluster j-1: STARTING -> WAITING` on a change.
    Arrows,
    /// `statement 4f2... is STARTED` on every change.
    Is,
}

/// The attempt's log as polls see the work: each state of each thing is logged once.
pub struct Watch<'a> {
    log: &'a dyn LogSink,
    seen: HashMap<String, String>,
    lines: StateLines,
}

impl<'a> Watch<'a> {
    fn new(log: &'a dyn LogSink, lines: StateLines) -> Self {
        Watch { log, seen: HashMap::new(), lines }
    }

    /// Notes the state of `what` (`cluster j-1`, `statement 4f2...`), and logs it when it is not
    /// the state last noted for it.
    pub fn state(&mut self, what: &str, state: &str) {
        let old = self.seen.insert(what.to_string(), state.to_string());
        if old.as_deref() == Some(state) {
            return;
        }
        let line = match (self.lines, old) {
            (StateLines::Arrows, Some(old)) => format!("{what}: {old} -> {state}"),
            (StateLines::Arrows, None) => format!("{what}: {state}"),
            (StateLines::Is, _) => format!("{what} is {state}"),
        };
        self.log.line(&line);
    }

    /// Writes a line to the attempt's log.
    pub fn line(&self, text: &str) {
        self.log.line(text);
    }
}

/// Work the kit polls until it ends.
#[async_trait]
pub trait Describe: Send {
    /// What the work produces when it ends well.
    type Output: Send;
    /// The longest wait between polls after failed ones: how long the service may stay
    /// unreachable or throttling before a poll is tried again.
    const MAX_BACKOFF: Duration;

    /// How the log says a state change.
    const STATE_LINES: StateLines = StateLines::Arrows;

    /// Asks the service how the work goes, noting states through `watch`. An error is a failed
    /// poll: a final one ends the wait at once, a retryable one is tried again.
    async fn describe(&mut self, watch: &mut Watch<'_>) -> Result<Progress<Self::Output>, TaskError>;
}

/// A job: work an operator submits, waits for and cancels. [`drive`] runs its whole lifecycle.
#[async_trait]
pub trait Job: Describe {
    /// The external-job kind the job is recorded under (`emr_steps`, `redshift_statement`...).
    const KIND: &'static str;

    /// Work named by flowctl rather than by the service (SageMaker's training jobs) chooses its
    /// name here and returns `true`: the driver then records it *before* [`Job::submit`], and a
    /// later attempt that finds the record describes the work and submits it only if the service
    /// never heard of it.
    fn choose_name(&mut self, _ctx: &TaskContext) -> bool {
        false
    }

    /// Submits the work. Returns what to log once the work is recorded, so that a log line saying
    /// "recorded" is true when it is read.
    async fn submit(&mut self, ctx: &TaskContext) -> Result<Vec<String>, TaskError>;

    /// The record that finds the work again: its ids, as the submission (or the name) gave them.
    fn record(&self) -> ExternalJob;

    /// Takes over the work an earlier attempt recorded (of kind [`Job::KIND`]) and logs that it
    /// does; `false` when the record cannot be read, and the work is submitted anew.
    fn reattach(&mut self, job: &ExternalJob, log: &dyn LogSink) -> bool;

    /// Cancels the work at the service and logs what the service answered. The driver bounds it
    /// by [`CANCEL_DEADLINE`] and, on an error or no answer, logs [`Job::by_hand`].
    async fn cancel(&mut self, why: CancelReason, log: &dyn LogSink) -> Result<(), TaskError>;

    /// The work, as log lines and errors name it: `statement 4f2...`, `EMR cluster j-1`.
    fn name(&self) -> String;

    /// What may still run when a cancel failed, and how to cancel it by hand: `the statement may
    /// still run: cancel it with: aws redshift-data cancel-statement --id 4f2...`.
    fn by_hand(&self) -> String;

    /// Whether the work is cancelled when the wait for it fails (polling gave up, or a final
    /// error): a cluster flowctl started and nobody will use. Otherwise the record stays for the
    /// retry.
    fn cancel_if_wait_fails(&self) -> bool {
        false
    }
}

/// Why [`poll`] returned before the work ended.
#[derive(Debug)]
pub enum Stopped {
    /// A poll answered [`Progress::Stop`].
    Stop(TaskError),
    /// Polling failed: a final error, or [`MAX_POLL_FAILURES`] retryable ones in a row.
    Failed(TaskError),
    /// The attempt was cancelled, or flowctl is stopping (`ctx.shutdown` tells which).
    Interrupted,
}

/// Polls `work` every `interval` until it ends: what it produced, or the error it ended with.
/// Failed polls are tried again with backoff; the first poll is at once.
pub async fn poll<D: Describe>(work: &mut D, ctx: &TaskContext, interval: Duration) -> Result<Result<D::Output, TaskError>, Stopped> {
    let mut watch = Watch::new(ctx.log.as_ref(), D::STATE_LINES);
    let mut failures = 0u32;
    loop {
        let polled = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => None,
            polled = work.describe(&mut watch) => Some(polled),
        };
        let delay = match polled.ok_or(Stopped::Interrupted)? {
            Ok(Progress::Running) => {
                failures = 0;
                interval
            }
            Ok(Progress::PollWithin(soon)) => {
                failures = 0;
                interval.min(soon)
            }
            Ok(Progress::Ended(result)) => return Ok(result),
            Ok(Progress::Stop(err)) => return Err(Stopped::Stop(err)),
            Err(err) if err.kind == ErrorKind::Final => return Err(Stopped::Failed(err)),
            Err(err) => {
                failures += 1;
                if failures >= MAX_POLL_FAILURES {
                    return Err(Stopped::Failed(TaskError::retryable(format!(
                        "{} ({MAX_POLL_FAILURES} polls in a row failed; a retry reattaches)",
                        err.message
                    ))));
                }
                let delay = backoff(interval, failures, D::MAX_BACKOFF);
                ctx.log.line(&format!(
                    "poll {failures} of {MAX_POLL_FAILURES} allowed in a row failed, trying again in {}: {}",
                    humantime::format_duration(delay),
                    err.message
                ));
                delay
            }
        };
        let slept = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        };
        if !slept {
            return Err(Stopped::Interrupted);
        }
    }
}

/// Runs a job for one attempt: reattaches to the recorded one or submits and records it, polls it
/// every `interval` until it ends, cancels it or leaves it running when the attempt is
/// interrupted, and clears the record once it has ended.
pub async fn drive<J: Job>(job: &mut J, ctx: &TaskContext, interval: Duration) -> Result<J::Output, TaskError> {
    if !reattach(job, ctx) {
        start(job, ctx).await?;
    }
    match poll(job, ctx, interval).await {
        Ok(ended) => {
            clear(job, ctx).await;
            ended
        }
        Err(Stopped::Stop(err)) => {
            stop_at_service(job, CancelReason::Stopped, ctx).await;
            clear(job, ctx).await;
            Err(err)
        }
        Err(Stopped::Failed(err)) => {
            if job.cancel_if_wait_fails() {
                stop_at_service(job, CancelReason::WaitFailed, ctx).await;
                clear(job, ctx).await;
            }
            Err(err)
        }
        Err(Stopped::Interrupted) => Err(interrupted(job, ctx).await),
    }
}

/// Takes over the job an earlier attempt recorded, if it is one of this kind.
fn reattach<J: Job>(job: &mut J, ctx: &TaskContext) -> bool {
    let Some(recorded) = &ctx.external_job else {
        return false;
    };
    if recorded.kind == J::KIND && job.reattach(recorded, ctx.log.as_ref()) {
        return true;
    }
    ctx.log.line(&format!(
        "the recorded external job ({} {}) is not one this task can reattach to: starting anew",
        recorded.kind, recorded.id
    ));
    false
}

/// Submits the job and records it, in the order its naming needs.
async fn start<J: Job>(job: &mut J, ctx: &TaskContext) -> Result<(), TaskError> {
    if ctx.cancel.is_cancelled() {
        return Err(TaskError::cancelled());
    }
    if job.choose_name(ctx) {
        // Durable before the service hears of it: whatever happens next, a later attempt knows
        // the name to look for.
        ctx.external_jobs.record(job.record()).await?;
        let submitted = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => None,
            submitted = job.submit(ctx) => Some(submitted),
        };
        return match submitted {
            // The request may have reached the service: the name is enough to cancel it.
            None => Err(interrupted(job, ctx).await),
            Some(Ok(lines)) => {
                log_all(ctx, &lines);
                Ok(())
            }
            Some(Err(err)) => {
                // Refused: nothing exists under the name, so the retry must not look for it.
                if err.kind == ErrorKind::Final {
                    clear(job, ctx).await;
                }
                Err(err)
            }
        };
    }
    let lines = submit_through_cancel(job, ctx).await?;
    if let Err(err) = ctx.external_jobs.record(job.record()).await {
        ctx.log.line(&format!("cannot record {} ({}): cancelling it, or a retry would run it twice", job.name(), err.message));
        stop_at_service(job, CancelReason::Unrecorded, ctx).await;
        return Err(err);
    }
    log_all(ctx, &lines);
    Ok(())
}

/// Submits work the service names. A cancel during the request waits a while for the answer,
/// since the service may have started the work and only the answer says what to cancel.
async fn submit_through_cancel<J: Job>(job: &mut J, ctx: &TaskContext) -> Result<Vec<String>, TaskError> {
    let submit = job.submit(ctx);
    tokio::pin!(submit);
    let early = tokio::select! {
        biased;
        answer = &mut submit => Some(answer),
        _ = ctx.cancel.cancelled() => None,
    };
    match early {
        Some(answer) => answer,
        None => match tokio::time::timeout(CANCEL_DEADLINE, submit).await {
            Ok(answer) => answer,
            Err(_) => {
                ctx.log.line(&format!(
                    "the task was cancelled while its work was submitted, and the service did not answer within {}: it may have started {} work that no task waits for",
                    humantime::format_duration(CANCEL_DEADLINE),
                    J::KIND
                ));
                Err(TaskError::cancelled())
            }
        },
    }
}

/// The attempt was interrupted while the job ran: leave it running when flowctl itself is
/// stopping (the next start reattaches), cancel it at the service otherwise.
async fn interrupted<J: Job>(job: &mut J, ctx: &TaskContext) -> TaskError {
    let name = job.name();
    if ctx.shutdown.is_cancelled() {
        ctx.log.line(&format!("flowctl is stopping: leaving {name} running; the next start reattaches"));
        return TaskError::retryable(format!("flowctl stopped while {name} ran; the next start reattaches to it"));
    }
    stop_at_service(job, CancelReason::Cancelled, ctx).await;
    clear(job, ctx).await;
    TaskError::cancelled()
}

/// Cancels the job at the service, bounded in time; never fails the caller, which is failing
/// already, but says how to cancel by hand when the service did not.
async fn stop_at_service<J: Job>(job: &mut J, why: CancelReason, ctx: &TaskContext) {
    let log = ctx.log.as_ref();
    let answer = tokio::time::timeout(CANCEL_DEADLINE, job.cancel(why, log)).await;
    match answer {
        Ok(Ok(())) => {}
        Ok(Err(err)) => log.line(&format!("{}; {}", err.message, job.by_hand())),
        Err(_) => log.line(&format!(
            "the request to stop {} got no answer within {}; {}",
            job.name(),
            humantime::format_duration(CANCEL_DEADLINE),
            job.by_hand()
        )),
    }
}

/// Forgets the record: the job has ended (or was cancelled), so a retry submits it anew. A store
/// that cannot clear costs the retry one poll of an ended job, not the attempt's result.
async fn clear<J: Job>(job: &J, ctx: &TaskContext) {
    if let Err(err) = ctx.external_jobs.clear().await {
        ctx.log.line(&format!("could not clear the record of {}: {}", job.name(), err.message));
    }
}

fn log_all(ctx: &TaskContext, lines: &[String]) {
    for line in lines {
        ctx.log.line(line);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use flowctl_engine::operator::MemoryLog;
    use flowctl_engine::testing::{Journal, TestTask};

    use super::*;

    #[test]
    fn backoff_doubles_from_the_poll_interval_up_to_the_cap() {
        let s = Duration::from_secs;
        let emr: Vec<u64> = (1..=9).map(|n| backoff(s(30), n, s(300)).as_secs()).collect();
        assert_eq!(emr, [30, 60, 120, 240, 300, 300, 300, 300, 300]);
        let redshift: Vec<u64> = (1..=6).map(|n| backoff(s(5), n, s(60)).as_secs()).collect();
        assert_eq!(redshift, [5, 10, 20, 40, 60, 60]);
        assert_eq!(backoff(Duration::ZERO, 1, s(60)), s(1), "at least a second");
        assert_eq!(backoff(s(120), 3, s(60)), s(120), "never shorter than the interval");
        assert_eq!(backoff(s(30), 40, s(300)), s(300), "no overflow after many failures");
    }

    #[test]
    fn each_state_is_logged_once() {
        let log = MemoryLog::default();
        let mut watch = Watch::new(&log, StateLines::Arrows);
        watch.state("step s-1", "PENDING");
        watch.state("step s-1", "PENDING");
        watch.state("step s-1", "RUNNING");
        watch.state("step s-2", "RUNNING");
        watch.line("a line of its own");
        assert_eq!(log.lines(), ["step s-1: PENDING", "step s-1: PENDING -> RUNNING", "step s-2: RUNNING", "a line of its own"]);
        let log = MemoryLog::default();
        let mut watch = Watch::new(&log, StateLines::Is);
        for state in ["SUBMITTED", "STARTED", "STARTED"] {
            watch.state("statement 4f2", state);
        }
        assert_eq!(log.lines(), ["statement 4f2 is SUBMITTED", "statement 4f2 is STARTED"]);
    }

    /// A job whose service is a script: each describe takes the next reply (the last one repeats),
    /// and every request goes to the journal the job store writes to.
    struct Fake {
        journal: Journal,
        replies: VecDeque<Result<Progress<&'static str>, TaskError>>,
        id: Option<String>,
        named_first: bool,
        submit_error: Option<TaskError>,
        cancel_answers: bool,
        cancel_on_failure: bool,
        /// Cancelled while the submission waits for its answer.
        cancel_while_submitting: Option<tokio_util::sync::CancellationToken>,
    }

    impl Fake {
        fn new(task: &TestTask, replies: Vec<Result<Progress<&'static str>, TaskError>>) -> Fake {
            Fake {
                journal: task.jobs.journal().clone(),
                replies: replies.into(),
                id: None,
                named_first: false,
                submit_error: None,
                cancel_answers: true,
                cancel_on_failure: false,
                cancel_while_submitting: None,
            }
        }
    }

    fn running() -> Result<Progress<&'static str>, TaskError> {
        Ok(Progress::Running)
    }

    fn done() -> Result<Progress<&'static str>, TaskError> {
        Ok(Progress::Ended(Ok("done")))
    }

    fn throttled() -> Result<Progress<&'static str>, TaskError> {
        Err(TaskError::retryable("Describe f-1: throttled"))
    }

    #[async_trait]
    impl Describe for Fake {
        type Output = &'static str;
        const MAX_BACKOFF: Duration = Duration::from_secs(60);

        async fn describe(&mut self, watch: &mut Watch<'_>) -> Result<Progress<&'static str>, TaskError> {
            self.journal.push("describe");
            let reply = if self.replies.len() > 1 { self.replies.pop_front().expect("a reply") } else { self.replies[0].clone() };
            if let Ok(Progress::Running) = &reply {
                watch.state("fake f-1", "RUNNING");
            }
            reply
        }
    }

    #[async_trait]
    impl Job for Fake {
        const KIND: &'static str = "fake";

        fn choose_name(&mut self, _ctx: &TaskContext) -> bool {
            if self.named_first {
                self.id = Some("f-1".into());
            }
            self.named_first
        }

        async fn submit(&mut self, _ctx: &TaskContext) -> Result<Vec<String>, TaskError> {
            self.journal.push("submit");
            if let Some(cancel) = self.cancel_while_submitting.take() {
                cancel.cancel();
                tokio::task::yield_now().await;
            }
            if let Some(err) = self.submit_error.clone() {
                return Err(err);
            }
            self.id = Some("f-1".into());
            Ok(vec!["submitted f-1 and recorded it".into()])
        }

        fn record(&self) -> ExternalJob {
            ExternalJob { kind: Self::KIND.into(), id: self.id.clone().unwrap_or_default(), detail: Default::default() }
        }

        fn reattach(&mut self, job: &ExternalJob, log: &dyn LogSink) -> bool {
            log.line(&format!("reattached to {}", job.id));
            self.id = Some(job.id.clone());
            true
        }

        async fn cancel(&mut self, why: CancelReason, log: &dyn LogSink) -> Result<(), TaskError> {
            self.journal.push(format!("cancel {why:?}"));
            if !self.cancel_answers {
                std::future::pending::<()>().await;
            }
            log.line("cancelled f-1");
            Ok(())
        }

        fn name(&self) -> String {
            "fake f-1".into()
        }

        fn by_hand(&self) -> String {
            "it may still run: cancel it with: fake cancel f-1".into()
        }

        fn cancel_if_wait_fails(&self) -> bool {
            self.cancel_on_failure
        }
    }

    fn recorded() -> ExternalJob {
        ExternalJob { kind: "fake".into(), id: "f-1".into(), detail: Default::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn the_job_is_recorded_before_the_first_poll_and_cleared_once_it_ended() {
        let task = TaskContext::test_builder().build();
        let mut job = Fake::new(&task, vec![running(), running(), done()]);
        let started = tokio::time::Instant::now();
        assert_eq!(drive(&mut job, &task.ctx, Duration::from_secs(30)).await, Ok("done"));
        assert_eq!(task.journal(), ["submit", "record fake f-1", "describe", "describe", "describe", "clear"]);
        assert_eq!(task.log.lines(), ["submitted f-1 and recorded it", "fake f-1: RUNNING"], "each state once, after the record");
        assert_eq!(started.elapsed(), Duration::from_secs(60), "the first poll at once, then one per interval");
    }

    #[tokio::test(start_paused = true)]
    async fn a_recorded_job_is_reattached_to_and_never_submitted() {
        let task = TaskContext::test_builder().recorded(recorded()).build();
        let mut job = Fake::new(&task, vec![running(), done()]);
        assert_eq!(drive(&mut job, &task.ctx, Duration::from_secs(30)).await, Ok("done"));
        assert_eq!(task.journal(), ["describe", "describe", "clear"]);
        assert_eq!(task.log.lines()[0], "reattached to f-1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_of_another_kind_is_not_reattached_to() {
        let other = ExternalJob { kind: "emr_steps".into(), id: "s-1".into(), detail: Default::default() };
        let task = TaskContext::test_builder().recorded(other).build();
        let mut job = Fake::new(&task, vec![done()]);
        assert_eq!(drive(&mut job, &task.ctx, Duration::from_secs(30)).await, Ok("done"));
        assert_eq!(task.journal(), ["submit", "record fake f-1", "describe", "clear"]);
        assert_eq!(task.log.lines()[0], "the recorded external job (emr_steps s-1) is not one this task can reattach to: starting anew");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_polls_back_off_and_give_up_keeping_the_record() {
        let task = TaskContext::test_builder().build();
        let mut job = Fake::new(&task, vec![running(), throttled()]);
        let started = tokio::time::Instant::now();
        let err = drive(&mut job, &task.ctx, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err, TaskError::retryable("Describe f-1: throttled (10 polls in a row failed; a retry reattaches)"));
        assert_eq!(task.journal().iter().filter(|e| *e == "describe").count(), 11);
        assert_eq!(task.jobs.current(), Some(recorded()), "the job may still run: the retry reattaches");
        let lines = task.log.lines();
        assert_eq!(lines[2], "poll 1 of 10 allowed in a row failed, trying again in 5s: Describe f-1: throttled");
        assert_eq!(lines[3], "poll 2 of 10 allowed in a row failed, trying again in 10s: Describe f-1: throttled");
        assert_eq!(lines.len(), 2 + 9);
        // 5s after RUNNING, then 5 + 10 + 20 + 40 and five times the one-minute cap.
        assert_eq!(started.elapsed(), Duration::from_secs(5 + 5 + 10 + 20 + 40 + 5 * 60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_final_poll_error_ends_the_wait_at_once() {
        let task = TaskContext::test_builder().build();
        let mut job = Fake::new(&task, vec![Err(TaskError::fatal("access denied"))]);
        assert_eq!(drive(&mut job, &task.ctx, Duration::from_secs(5)).await, Err(TaskError::fatal("access denied")));
        assert_eq!(task.journal(), ["submit", "record fake f-1", "describe"], "no clear: the work may run on");
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_that_asks_for_it_is_cancelled_when_the_wait_fails() {
        let task = TaskContext::test_builder().build();
        let mut job = Fake::new(&task, vec![Err(TaskError::fatal("access denied"))]);
        job.cancel_on_failure = true;
        assert_eq!(drive(&mut job, &task.ctx, Duration::from_secs(5)).await, Err(TaskError::fatal("access denied")));
        assert_eq!(task.journal(), ["submit", "record fake f-1", "describe", "cancel WaitFailed", "clear"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_job_that_failed_is_cleared_and_fails_the_task() {
        let task = TaskContext::test_builder().build();
        let mut job = Fake::new(&task, vec![Ok(Progress::Ended(Err(TaskError::retryable("f-1 failed"))))]);
        assert_eq!(drive(&mut job, &task.ctx, Duration::from_secs(5)).await, Err(TaskError::retryable("f-1 failed")));
        assert_eq!(task.journal().last().map(String::as_str), Some("clear"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_cancels_the_job_at_the_service() {
        let task = TaskContext::test_builder().build();
        let mut job = Fake::new(&task, vec![Ok(Progress::PollWithin(Duration::from_secs(2))), Ok(Progress::Stop(TaskError::retryable("too long")))]);
        let started = tokio::time::Instant::now();
        assert_eq!(drive(&mut job, &task.ctx, Duration::from_secs(30)).await, Err(TaskError::retryable("too long")));
        assert_eq!(started.elapsed(), Duration::from_secs(2), "polled again within the time asked, not the interval");
        assert_eq!(task.journal(), ["submit", "record fake f-1", "describe", "describe", "cancel Stopped", "clear"]);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_the_task_cancels_the_job_and_clears_the_record() {
        let task = TaskContext::test_builder().build();
        let mut job = Fake::new(&task, vec![running()]);
        let cancel = task.ctx.cancel.clone();
        let (result, ()) = tokio::join!(drive(&mut job, &task.ctx, Duration::from_secs(30)), async move {
            tokio::time::sleep(Duration::from_secs(45)).await;
            cancel.cancel();
        });
        assert_eq!(result, Err(TaskError::cancelled()));
        assert_eq!(task.journal(), ["submit", "record fake f-1", "describe", "describe", "cancel Cancelled", "clear"]);
        assert_eq!(task.log.lines().last().map(String::as_str), Some("cancelled f-1"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_flowctl_leaves_the_job_running_and_recorded() {
        let task = TaskContext::test_builder().build();
        let mut job = Fake::new(&task, vec![running()]);
        let result = {
            let drive = drive(&mut job, &task.ctx, Duration::from_secs(30));
            let stop = async {
                tokio::time::sleep(Duration::from_secs(45)).await;
                task.shut_down();
            };
            tokio::join!(drive, stop).0
        };
        assert_eq!(result, Err(TaskError::retryable("flowctl stopped while fake f-1 ran; the next start reattaches to it")));
        assert_eq!(task.journal(), ["submit", "record fake f-1", "describe", "describe"], "no cancel, no clear");
        assert_eq!(task.jobs.current(), Some(recorded()));
        assert_eq!(task.log.lines().last().map(String::as_str), Some("flowctl is stopping: leaving fake f-1 running; the next start reattaches"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_cancelled_before_it_submitted_anything_submits_nothing() {
        let task = TaskContext::test_builder().build();
        let mut job = Fake::new(&task, vec![running()]);
        task.cancel();
        assert_eq!(drive(&mut job, &task.ctx, Duration::from_secs(30)).await, Err(TaskError::cancelled()));
        assert!(task.journal().is_empty(), "{:?}", task.journal());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_the_service_does_not_answer_is_given_up_with_the_way_to_cancel_by_hand() {
        let task = TaskContext::test_builder().recorded(recorded()).build();
        let mut job = Fake::new(&task, vec![running()]);
        job.cancel_answers = false;
        task.cancel();
        let started = tokio::time::Instant::now();
        assert_eq!(drive(&mut job, &task.ctx, Duration::from_secs(30)).await, Err(TaskError::cancelled()));
        assert_eq!(started.elapsed(), CANCEL_DEADLINE);
        assert_eq!(task.journal(), ["cancel Cancelled", "clear"]);
        assert_eq!(
            task.log.lines().last().map(String::as_str),
            Some("the request to stop fake f-1 got no answer within 1m; it may still run: cancel it with: fake cancel f-1")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancel_during_the_submission_waits_for_the_answer_and_cancels_what_it_started() {
        let task = TaskContext::test_builder().build();
        let mut job = Fake::new(&task, vec![running()]);
        job.cancel_while_submitting = Some(task.ctx.cancel.clone());
        assert_eq!(drive(&mut job, &task.ctx, Duration::from_secs(30)).await, Err(TaskError::cancelled()));
        assert_eq!(task.journal(), ["submit", "record fake f-1", "cancel Cancelled", "clear"], "recorded, then cancelled, never polled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_that_fails_cancels_the_submitted_job() {
        let task = TaskContext::test_builder().build();
        task.jobs.refuse_records("the store is read-only");
        let mut job = Fake::new(&task, vec![running()]);
        assert_eq!(drive(&mut job, &task.ctx, Duration::from_secs(30)).await, Err(TaskError::retryable("the store is read-only")));
        assert_eq!(task.journal(), ["submit", "record refused fake f-1", "cancel Unrecorded"], "never polled, never left running");
        assert_eq!(task.log.lines()[0], "cannot record fake f-1 (the store is read-only): cancelling it, or a retry would run it twice");
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_flowctl_names_is_recorded_before_it_is_submitted() {
        let task = TaskContext::test_builder().build();
        let mut job = Fake::new(&task, vec![done()]);
        job.named_first = true;
        assert_eq!(drive(&mut job, &task.ctx, Duration::from_secs(30)).await, Ok("done"));
        assert_eq!(task.journal(), ["record fake f-1", "submit", "describe", "clear"]);

        // A refusal means nothing exists under the name: the record goes. Anything else may have
        // reached the service: the record stays for the retry to look the name up.
        for (err, cleared) in [(TaskError::fatal("invalid request"), true), (TaskError::retryable("HTTP 503"), false)] {
            let task = TaskContext::test_builder().build();
            let mut job = Fake::new(&task, vec![done()]);
            job.named_first = true;
            job.submit_error = Some(err.clone());
            assert_eq!(drive(&mut job, &task.ctx, Duration::from_secs(30)).await, Err(err));
            assert_eq!(task.jobs.current().is_none(), cleared, "{:?}", task.journal());
        }

        // A refused record: nothing was submitted.
        let task = TaskContext::test_builder().build();
        task.jobs.refuse_records("the store is read-only");
        let mut job = Fake::new(&task, vec![done()]);
        job.named_first = true;
        assert!(drive(&mut job, &task.ctx, Duration::from_secs(30)).await.is_err());
        assert_eq!(task.journal(), ["record refused fake f-1"]);
    }
}
