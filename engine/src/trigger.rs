//! Trigger rules: given how a task's upstream tasks ended, should it run, skip, or be marked
//! upstream_failed? Airflow's semantics, decided as soon as the answer is certain.

use crate::dag::TriggerRule;
use crate::lifecycle::TaskState;

/// What a task's trigger rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not yet: some upstream tasks have not settled.
    Wait,
    /// Start it.
    Run,
    /// Mark it skipped.
    Skip,
    /// Mark it upstream_failed.
    UpstreamFailed,
}

/// How the upstream tasks stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamCounts {
    /// All direct upstream tasks.
    pub total: usize,
    /// Ended success.
    pub success: usize,
    /// Ended failed.
    pub failed: usize,
    /// Ended upstream_failed.
    pub upstream_failed: usize,
    /// Ended skipped.
    pub skipped: usize,
}

impl UpstreamCounts {
    /// Counts the given upstream states.
    pub fn of(states: impl IntoIterator<Item = TaskState>) -> Self {
        let mut c = UpstreamCounts::default();
        for s in states {
            c.total += 1;
            match s {
                TaskState::Success => c.success += 1,
                TaskState::Failed => c.failed += 1,
                TaskState::UpstreamFailed => c.upstream_failed += 1,
                TaskState::Skipped => c.skipped += 1,
                _ => {}
            }
        }
        c
    }

    fn done(&self) -> usize {
        self.success + self.failed + self.upstream_failed + self.skipped
    }
}

/// Applies `rule` to the upstream counts.
pub fn decide(rule: TriggerRule, c: UpstreamCounts) -> Decision {
    use Decision::*;
    let all_done = c.done() == c.total;
    let failures = c.failed + c.upstream_failed;
    if c.total == 0 {
        // A root task has nothing to wait for (Airflow passes the dependency check at once).
        return Run;
    }
    match rule {
        TriggerRule::Always => Run,
        // As soon as one upstream outcome makes the answer certain, decide: Airflow marks an
        // all_success task upstream_failed the moment one upstream task fails, without waiting
        // for the slow siblings, and fires one_success at the first success.
        TriggerRule::OneSuccess if c.success > 0 => Run,
        TriggerRule::OneFailed if failures > 0 => Run,
        TriggerRule::AllSuccess if failures > 0 => UpstreamFailed,
        TriggerRule::AllSuccess if c.skipped > 0 => Skip,
        TriggerRule::AllFailed if c.success > 0 || c.skipped > 0 => Skip,
        TriggerRule::NoneFailed | TriggerRule::NoneFailedMinOneSuccess if failures > 0 => UpstreamFailed,
        TriggerRule::NoneSkipped if c.skipped > 0 => Skip,
        _ if !all_done => Wait,
        TriggerRule::AllSuccess | TriggerRule::AllFailed | TriggerRule::AllDone => Run,
        TriggerRule::OneSuccess if c.skipped == c.total => Skip,
        TriggerRule::OneSuccess => UpstreamFailed,
        TriggerRule::OneFailed => Skip,
        TriggerRule::NoneFailed | TriggerRule::NoneSkipped => Run,
        TriggerRule::NoneFailedMinOneSuccess if c.skipped == c.total => Skip,
        TriggerRule::NoneFailedMinOneSuccess => Run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;
    use TaskState::{Failed, Running, Skipped, Success};
    const UPF: TaskState = TaskState::UpstreamFailed;

    /// Every settled mix of two upstream tasks, and for each rule the decision Airflow makes.
    /// Columns: upstream, then all_success, all_failed, all_done, one_success, one_failed,
    /// none_failed, none_skipped, none_failed_min_one_success, always.
    #[rustfmt::skip]
    const MATRIX: &[([TaskState; 2], [Decision; 9])] = &[
        ([Success, Success],               [Run,            Skip, Run, Run,            Skip, Run,            Run,  Run,            Run]),
        ([Success, Failed],                [UpstreamFailed, Skip, Run, Run,            Run,  UpstreamFailed, Run,  UpstreamFailed, Run]),
        ([Success, UPF],        [UpstreamFailed, Skip, Run, Run,            Run,  UpstreamFailed, Run,  UpstreamFailed, Run]),
        ([Success, Skipped],               [Skip,           Skip, Run, Run,            Skip, Run,            Skip, Run,            Run]),
        ([Failed, Failed],                 [UpstreamFailed, Run,  Run, UpstreamFailed, Run,  UpstreamFailed, Run,  UpstreamFailed, Run]),
        ([Failed, UPF],         [UpstreamFailed, Run,  Run, UpstreamFailed, Run,  UpstreamFailed, Run,  UpstreamFailed, Run]),
        ([Failed, Skipped],                [UpstreamFailed, Skip, Run, UpstreamFailed, Run,  UpstreamFailed, Skip, UpstreamFailed, Run]),
        ([UPF, UPF], [UpstreamFailed, Run,  Run, UpstreamFailed, Run,  UpstreamFailed, Run,  UpstreamFailed, Run]),
        ([UPF, Skipped],        [UpstreamFailed, Skip, Run, UpstreamFailed, Run,  UpstreamFailed, Skip, UpstreamFailed, Run]),
        ([Skipped, Skipped],               [Skip,           Skip, Run, Skip,           Skip, Run,            Skip, Skip,           Run]),
    ];

    #[test]
    fn every_rule_against_every_settled_mix() {
        for (upstream, decisions) in MATRIX {
            for ((rule, name), want) in TriggerRule::ALL.iter().zip(decisions) {
                let got = decide(*rule, UpstreamCounts::of(upstream.iter().copied()));
                assert_eq!(got, *want, "{name} with upstream {upstream:?}");
            }
        }
    }

    #[test]
    fn certain_answers_come_early_and_others_wait() {
        let c = UpstreamCounts::of([Success, Running]);
        assert_eq!(decide(TriggerRule::OneSuccess, c), Run);
        assert_eq!(decide(TriggerRule::AllSuccess, c), Wait);
        assert_eq!(decide(TriggerRule::OneFailed, c), Wait);
        assert_eq!(decide(TriggerRule::AllFailed, c), Skip, "a success already rules out all_failed");
        assert_eq!(decide(TriggerRule::NoneFailed, c), Wait);
        assert_eq!(decide(TriggerRule::AllDone, c), Wait);
        let c = UpstreamCounts::of([Failed, TaskState::None]);
        assert_eq!(decide(TriggerRule::OneFailed, c), Run);
        assert_eq!(decide(TriggerRule::AllSuccess, c), UpstreamFailed, "Airflow does not wait for the sibling");
        assert_eq!(decide(TriggerRule::NoneFailed, c), UpstreamFailed);
        assert_eq!(decide(TriggerRule::NoneFailedMinOneSuccess, c), UpstreamFailed);
        assert_eq!(decide(TriggerRule::NoneSkipped, c), Wait);
        assert_eq!(decide(TriggerRule::AllFailed, c), Wait);
        let c = UpstreamCounts::of([Skipped, Running]);
        assert_eq!(decide(TriggerRule::AllSuccess, c), Skip);
        assert_eq!(decide(TriggerRule::NoneSkipped, c), Skip);
        assert_eq!(decide(TriggerRule::NoneFailedMinOneSuccess, c), Wait, "the other may still succeed");
        assert_eq!(decide(TriggerRule::Always, UpstreamCounts::of([TaskState::None, TaskState::None])), Run);
    }

    #[test]
    fn a_task_without_upstream_runs_whatever_its_rule() {
        for (rule, name) in TriggerRule::ALL {
            assert_eq!(decide(rule, UpstreamCounts::default()), Run, "{name}");
        }
    }
}
