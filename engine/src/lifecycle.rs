//! The task-instance lifecycle: one transition table, in one place.
//!
//! Every state change of a task instance goes through [`transition`]. An event that makes no sense
//! in the current state is refused and changes nothing, so a late event (an attempt that reports
//! after the task already timed out and moved on, a retry timer firing after a cancel) can never
//! corrupt a settled task.

use serde::{Deserialize, Serialize};

/// Where a task instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its upstream tasks.
    None,
    /// Ready to start, waiting for a free slot.
    Scheduled,
    /// An attempt is running.
    Running,
    /// An attempt failed and another will start after the retry delay.
    UpForRetry,
    /// Done: the work was done.
    Success,
    /// Done: the last allowed attempt failed, or the error was final.
    Failed,
    /// Done: never ran because an upstream task failed.
    UpstreamFailed,
    /// Done: nothing to do, or skipped by its trigger rule.
    Skipped,
}

impl TaskState {
    /// Every state, for tests and tables.
    pub const ALL: [TaskState; 8] = [
        TaskState::None,
        TaskState::Scheduled,
        TaskState::Running,
        TaskState::UpForRetry,
        TaskState::Success,
        TaskState::Failed,
        TaskState::UpstreamFailed,
        TaskState::Skipped,
    ];

    /// Whether the task is settled: downstream tasks may decide on it.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Success | TaskState::Failed | TaskState::UpstreamFailed | TaskState::Skipped)
    }

    /// The name shown by `flowctl status`.
    pub fn name(self) -> &'static str {
        match self {
            TaskState::None => "none",
            TaskState::Scheduled => "scheduled",
            TaskState::Running => "running",
            TaskState::UpForRetry => "up_for_retry",
            TaskState::Success => "success",
            TaskState::Failed => "failed",
            TaskState::UpstreamFailed => "upstream_failed",
            TaskState::Skipped => "skipped",
        }
    }
}

/// What can happen to a task instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    /// Its trigger rule says run: it waits for a slot.
    Ready,
    /// A slot was free: an attempt starts.
    Start,
    /// The attempt succeeded.
    Succeeded,
    /// The attempt ended as skipped.
    Skipped,
    /// The attempt failed and the retry policy allows another try.
    FailedWillRetry,
    /// The attempt failed for good.
    Failed,
    /// The retry delay has passed.
    RetryDue,
    /// Its trigger rule says an upstream failure stops it.
    UpstreamFailed,
    /// Its trigger rule says skip.
    UpstreamSkipped,
    /// The run was cancelled before this task finished.
    Cancelled,
    /// `flowctl clear`: run it again.
    Cleared,
}

impl TaskEvent {
    /// Every event, for tests.
    pub const ALL: [TaskEvent; 11] = [
        TaskEvent::Ready,
        TaskEvent::Start,
        TaskEvent::Succeeded,
        TaskEvent::Skipped,
        TaskEvent::FailedWillRetry,
        TaskEvent::Failed,
        TaskEvent::RetryDue,
        TaskEvent::UpstreamFailed,
        TaskEvent::UpstreamSkipped,
        TaskEvent::Cancelled,
        TaskEvent::Cleared,
    ];
}

/// An event the current state does not accept; nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("task in state {} does not accept {event:?}", from.name())]
pub struct Refused {
    /// The state the task stays in.
    pub from: TaskState,
    /// The refused event.
    pub event: TaskEvent,
}

/// The transition table.
pub fn transition(from: TaskState, event: TaskEvent) -> Result<TaskState, Refused> {
    use TaskEvent as E;
    use TaskState as S;
    let to = match (from, event) {
        (S::None, E::Ready) => S::Scheduled,
        (S::None, E::UpstreamFailed) => S::UpstreamFailed,
        (S::None, E::UpstreamSkipped) => S::Skipped,
        (S::Scheduled, E::Start) => S::Running,
        (S::Running, E::Succeeded) => S::Success,
        (S::Running, E::Skipped) => S::Skipped,
        (S::Running, E::FailedWillRetry) => S::UpForRetry,
        (S::Running, E::Failed) => S::Failed,
        (S::UpForRetry, E::RetryDue) => S::Scheduled,
        // A cancelled run stops what runs or waits to retry; tasks that never started stay as
        // they are, so `status` shows what did happen.
        (S::Running | S::UpForRetry, E::Cancelled) => S::Failed,
        (S::Scheduled, E::Cancelled) => S::None,
        (s, E::Cleared) if s.is_terminal() => S::None,
        _ => return Err(Refused { from, event }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskEvent as E;
    use TaskState as S;

    /// The whole table, written out: every (state, event) pair not listed here is refused.
    const ALLOWED: &[(TaskState, TaskEvent, TaskState)] = &[
        (S::None, E::Ready, S::Scheduled),
        (S::None, E::UpstreamFailed, S::UpstreamFailed),
        (S::None, E::UpstreamSkipped, S::Skipped),
        (S::Scheduled, E::Start, S::Running),
        (S::Scheduled, E::Cancelled, S::None),
        (S::Running, E::Succeeded, S::Success),
        (S::Running, E::Skipped, S::Skipped),
        (S::Running, E::FailedWillRetry, S::UpForRetry),
        (S::Running, E::Failed, S::Failed),
        (S::Running, E::Cancelled, S::Failed),
        (S::UpForRetry, E::RetryDue, S::Scheduled),
        (S::UpForRetry, E::Cancelled, S::Failed),
        (S::Success, E::Cleared, S::None),
        (S::Failed, E::Cleared, S::None),
        (S::UpstreamFailed, E::Cleared, S::None),
        (S::Skipped, E::Cleared, S::None),
    ];

    #[test]
    fn every_pair_follows_the_table() {
        for from in S::ALL {
            for event in E::ALL {
                let expected = ALLOWED.iter().find(|(f, e, _)| *f == from && *e == event).map(|(_, _, to)| *to);
                match (transition(from, event), expected) {
                    (Ok(to), Some(want)) => assert_eq!(to, want, "{from:?} + {event:?}"),
                    (Err(refused), None) => assert_eq!(refused, Refused { from, event }),
                    (got, want) => panic!("{from:?} + {event:?}: got {got:?}, table says {want:?}"),
                }
            }
        }
    }

    #[test]
    fn a_late_event_after_a_terminal_state_changes_nothing() {
        for from in S::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in E::ALL.into_iter().filter(|e| *e != E::Cleared) {
                assert!(transition(from, event).is_err(), "{from:?} accepted late {event:?}");
            }
        }
    }
}
