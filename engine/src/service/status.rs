//! What a home holds: its DAGs, a DAG's runs, a run's task instances with their alert deliveries.

use std::collections::BTreeMap;

use super::dags::dag_record;
use super::Service;
use crate::diagnostic::suggestion;
use crate::protocol::{
    Activity, DagDetail, DagList, DagOverview, DagPage, DagSource, DagSummary, DagVersions, LastRun, RunDetail, RunList, RunPage, RunQuery,
    RunSummary, ServiceError, TaskDetail, TaskSummary, TaskView, VersionInfo, RECENT_RUNS,
};
use crate::state::{AlertStore, DagRecord, DagRun, RunFilter, RunPosition};

impl Service<'_> {
    /// Whether anybody executes `run`.
    fn activity(&self, run: &DagRun) -> Activity {
        if run.state.is_terminal() || self.host.is_active(&run.dag_id, &run.run_id) {
            Activity::Settled
        } else if self.host.executes_runs() {
            Activity::WaitingToStart
        } else {
            Activity::NotRunning
        }
    }

    /// An applied DAG with its schedule and its runs' states.
    fn summary(&self, record: DagRecord) -> Result<DagSummary, ServiceError> {
        let schedule = match &record.latest {
            Some(latest) => latest.schedule.clone(),
            // A record an earlier build wrote: the version says.
            None => self.host.dag(&record.dag_id, record.latest_version).ok().and_then(|dag| dag.schedule.as_ref().map(|s| s.expression.clone())),
        };
        let runs_by_state: BTreeMap<String, usize> =
            self.store().run_counts(&record.dag_id)?.into_iter().map(|(state, n)| (state.name().to_string(), n)).collect();
        let last_run = self.store().last_created_run(&record.dag_id)?.map(|r| LastRun { run_id: r.run_id, state: r.state });
        Ok(DagSummary { dag_id: record.dag_id, version: record.latest_version, paused: record.paused, schedule, last_run, runs_by_state })
    }

    /// Every applied DAG with its schedule and its runs' states.
    pub fn dags(&self) -> Result<DagList, ServiceError> {
        let dags = self.store().dags()?.into_iter().map(|record| self.summary(record)).collect::<Result<_, _>>()?;
        Ok(DagList { dags })
    }

    /// A DAG's newest `limit` runs (all when `None`), oldest logical date first.
    pub fn runs(&self, dag_id: &str, limit: Option<usize>) -> Result<RunList, ServiceError> {
        dag_record(self.store(), dag_id)?;
        let total = self.store().run_counts(dag_id)?.values().sum();
        let chosen = match limit {
            None => self.store().runs(dag_id)?,
            Some(n) => {
                let mut newest = self.store().newest_runs(dag_id, n)?;
                newest.reverse();
                newest
            }
        };
        let runs = chosen.into_iter().map(|run| RunSummary { activity: self.activity(&run), run }).collect();
        Ok(RunList { dag_id: dag_id.to_string(), runs, total })
    }

    /// A run with every task instance and the alert deliveries.
    pub fn run(&self, dag_id: &str, run_id: &str) -> Result<RunDetail, ServiceError> {
        let store = self.store();
        dag_record(store, dag_id)?;
        super::check_name(super::NameKind::Run, run_id)?;
        let Some(run) = store.run(dag_id, run_id)? else {
            let known: Vec<String> = store.runs(dag_id)?.into_iter().map(|r| r.run_id).collect();
            return Err(ServiceError::not_found(format!(
                "DAG \"{dag_id}\" has no run \"{run_id}\"{}; `flowctl status {dag_id}` lists its runs",
                suggestion(run_id, known.iter().map(String::as_str))
            )));
        };
        let stored = store.task_instances(dag_id, run_id)?;
        // In the order of the DAG version the run used, with the tasks not started yet; if that
        // version no longer compiles (an operator left this build), the stored records alone.
        let (instances, dag_compiled) = match self.host.dag(dag_id, run.dag_version) {
            Ok(dag) => (crate::runs::all_instances(&dag, stored), true),
            Err(_) => (stored, false),
        };
        let mut deliveries = AlertStore::open(store)?.for_run(dag_id, run_id)?;
        let tasks = instances
            .into_iter()
            .map(|instance| {
                let (mine, rest): (Vec<_>, Vec<_>) =
                    deliveries.drain(..).partition(|d| d.task_id.as_deref() == Some(instance.task_id.as_str()));
                deliveries = rest;
                TaskView { instance, alerts: mine }
            })
            .collect();
        let alerts = deliveries.into_iter().filter(|d| d.task_id.is_none()).collect();
        Ok(RunDetail { activity: self.activity(&run), run, tasks, dag_compiled, alerts })
    }
}

/// The most items a page holds, and how many it holds when the request does not say.
pub const PAGE_LIMIT: (usize, usize) = (500, 25);

fn page_size(limit: Option<usize>) -> Result<usize, ServiceError> {
    match limit {
        None => Ok(PAGE_LIMIT.1),
        Some(0) => Err(ServiceError::bad_request("limit must be at least 1")),
        Some(n) if n > PAGE_LIMIT.0 => Err(ServiceError::bad_request(format!("limit {n} is above the most a page holds, {}", PAGE_LIMIT.0))),
        Some(n) => Ok(n),
    }
}

impl Service<'_> {
    /// What a dashboard shows of one applied DAG.
    fn overview(&self, summary: DagSummary) -> DagOverview {
        let dag = self.host.dag(&summary.dag_id, summary.version).ok();
        let record = self.store().dag(&summary.dag_id).ok().flatten();
        // The scheduler's next fire time; one already past is due now (or, without catchup,
        // skipped), so the next one to come is the first after now.
        let now = chrono::Utc::now();
        let next_run = dag.as_ref().and_then(|dag| {
            crate::timetable::next_wakeup(dag, record.as_ref().and_then(|r| r.last_scheduled_end))
                .filter(|at| *at > now)
                .or_else(|| crate::timetable::upcoming(dag, now, 1).first().map(|(at, _)| *at))
                .map(|t| t.with_timezone(&dag.timezone).fixed_offset())
        });
        let recent_runs = self
            .store()
            .newest_runs(&summary.dag_id, RECENT_RUNS)
            .unwrap_or_default()
            .into_iter()
            .map(|r| LastRun { run_id: r.run_id, state: r.state })
            .collect();
        DagOverview { description: dag.and_then(|d| d.description.clone()), next_run, recent_runs, summary }
    }

    /// A page of DAGs, by id: those after `cursor` (a DAG id), paused or not as `paused` says,
    /// whose id holds `search`.
    pub fn dag_page(&self, paused: Option<bool>, search: Option<&str>, limit: Option<usize>, cursor: Option<&str>) -> Result<DagPage, ServiceError> {
        let limit = page_size(limit)?;
        let mut chosen: Vec<DagRecord> = self
            .store()
            .dags()?
            .into_iter()
            .filter(|d| cursor.is_none_or(|c| d.dag_id.as_str() > c))
            .filter(|d| paused.is_none_or(|p| d.paused == p))
            .filter(|d| search.is_none_or(|q| d.dag_id.contains(q)))
            .take(limit + 1)
            .collect();
        let next_cursor = (chosen.len() > limit).then(|| {
            chosen.truncate(limit);
            chosen.last().map(|d| d.dag_id.clone()).unwrap_or_default()
        });
        let dags = chosen.into_iter().map(|record| self.summary(record).map(|s| self.overview(s))).collect::<Result<_, _>>()?;
        Ok(DagPage { dags, next_cursor })
    }

    /// One applied DAG in detail.
    pub fn dag_detail(&self, dag_id: &str) -> Result<DagDetail, ServiceError> {
        let record = dag_record(self.store(), dag_id)?;
        let dag = self.host.dag(dag_id, record.latest_version)?;
        let summary = self.summary(record)?;
        let tasks = dag
            .tasks
            .iter()
            .map(|t| TaskSummary {
                task_id: t.id.clone(),
                operator: t.operator.clone(),
                depends_on: t.depends_on.clone(),
                trigger_rule: t.trigger_rule,
                max_tries: t.retry.retries + 1,
            })
            .collect();
        Ok(DagDetail {
            overview: self.overview(summary),
            timezone: dag.timezone.to_string(),
            file: dag.file.clone(),
            params: dag.params.clone(),
            tasks,
        })
    }

    /// The stored source of a version of a DAG (the latest when `version` is `None`).
    pub fn dag_source(&self, dag_id: &str, version: Option<u64>) -> Result<DagSource, ServiceError> {
        let record = dag_record(self.store(), dag_id)?;
        let version = version.unwrap_or(record.latest_version);
        let stored = self.store().dag_version(dag_id, version)?.ok_or_else(|| {
            ServiceError::not_found(format!("DAG \"{dag_id}\" has no version {version}; its versions are 1 to {}", record.latest_version))
        })?;
        Ok(DagSource { dag_id: stored.dag_id, version: stored.version, file: stored.file, hash: stored.hash, applied_at: stored.applied_at, source: stored.source })
    }

    /// A DAG's versions, newest first.
    pub fn dag_versions(&self, dag_id: &str) -> Result<DagVersions, ServiceError> {
        dag_record(self.store(), dag_id)?;
        let mut versions: Vec<VersionInfo> = self
            .store()
            .dag_versions(dag_id)?
            .into_iter()
            .map(|v| VersionInfo { version: v.version, hash: v.hash, file: v.file, applied_at: v.applied_at })
            .collect();
        versions.reverse();
        Ok(DagVersions { dag_id: dag_id.to_string(), versions })
    }

    /// A page of a DAG's runs, newest logical date first.
    pub fn run_page(&self, dag_id: &str, query: &RunQuery) -> Result<RunPage, ServiceError> {
        dag_record(self.store(), dag_id)?;
        let limit = page_size(query.limit)?;
        let after = query.cursor.as_deref().map(RunCursor::parse).transpose()?;
        let filter = RunFilter {
            state: query.state,
            from: query.from.map(|t| t.with_timezone(&chrono::Utc)),
            to: query.to.map(|t| t.with_timezone(&chrono::Utc)),
        };
        let position = after.map(|c| RunPosition { logical_date: c.logical_date, created_at: c.created_at, run_id: c.run_id });
        let (mut chosen, total) = self.store().run_page(dag_id, &filter, position.as_ref(), limit + 1)?;
        let next_cursor = (chosen.len() > limit).then(|| {
            chosen.truncate(limit);
            chosen.last().map(|r| RunCursor::of(r).to_string()).unwrap_or_default()
        });
        let runs = chosen.into_iter().map(|run| RunSummary { activity: self.activity(&run), run }).collect();
        Ok(RunPage { dag_id: dag_id.to_string(), runs, total, next_cursor })
    }

    /// A task instance of a run with its attempts.
    pub fn task_detail(&self, dag_id: &str, run_id: &str, task_id: &str) -> Result<TaskDetail, ServiceError> {
        let detail = self.run(dag_id, run_id)?;
        let operator = self.host.dag(dag_id, detail.run.dag_version).ok().and_then(|dag| dag.task(task_id).map(|t| t.operator.clone()));
        let known: Vec<String> = detail.tasks.iter().map(|t| t.instance.task_id.clone()).collect();
        let Some(task) = detail.tasks.into_iter().find(|t| t.instance.task_id == task_id) else {
            return Err(ServiceError::not_found(format!(
                "run \"{run_id}\" of DAG \"{dag_id}\" has no task \"{task_id}\"{}",
                suggestion(task_id, known.iter().map(String::as_str))
            )));
        };
        let attempts = super::logs::attempts(&self.host.logs_dir(), dag_id, run_id, task_id);
        Ok(TaskDetail { dag_id: dag_id.to_string(), run_id: run_id.to_string(), task, operator, attempts })
    }
}

/// Where a page of runs stopped: runs are ordered by logical date, then creation time, then id,
/// and the next page holds those before it. Written as `<logical date>~<created at>~<run id>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct RunCursor {
    logical_date: chrono::DateTime<chrono::Utc>,
    created_at: chrono::DateTime<chrono::Utc>,
    run_id: String,
}

impl RunCursor {
    fn of(run: &DagRun) -> RunCursor {
        RunCursor { logical_date: run.logical_date, created_at: run.created_at, run_id: run.run_id.clone() }
    }

    fn parse(text: &str) -> Result<RunCursor, ServiceError> {
        let bad = || ServiceError::bad_request(format!("cursor \"{text}\" is not one a page of runs gave; start again without it"));
        let mut parts = text.splitn(3, '~');
        let (Some(date), Some(created), Some(run_id)) = (parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
        let time = |t: &str| chrono::DateTime::parse_from_rfc3339(t).map(|t| t.with_timezone(&chrono::Utc)).map_err(|_| bad());
        Ok(RunCursor { logical_date: time(date)?, created_at: time(created)?, run_id: run_id.to_string() })
    }
}

impl std::fmt::Display for RunCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let time = |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        write!(f, "{}~{}~{}", time(&self.logical_date), time(&self.created_at), self.run_id)
    }
}
