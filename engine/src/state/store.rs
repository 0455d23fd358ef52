//! The sled store. Values are JSON, so a store can be inspected and migrated by hand if it ever
//! has to be; keys are laid out so one prefix scan lists a DAG's runs or a run's task instances.
//!
//! Layout: tree `meta` (schema version), `dags` (dag id -> [`DagRecord`]), `versions`
//! (dag id, 0, version as 8 big-endian bytes -> [`DagVersion`]), `runs` (`r` dag 0 run ->
//! [`DagRun`]; `t` dag 0 run 0 task -> [`TaskInstance`]).
//!
//! [`Store::write`] inserts a step's records one after another and flushes once. It does not use
//! sled's `apply_batch`, whose batch manifest costs a second disk sync per flush (133 µs instead of
//! 72 µs per hand-off on our benchmark machine). Ordered inserts are enough: sled's log is replayed
//! in order and stops at the first incomplete entry, so after a crash a later record of a step is
//! never durable without the earlier ones, and records are written in the order the executor
//! decided them (a task's success before the start of the task it unblocked).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::model::{DagRecord, DagRun, DagVersion, TaskInstance};

/// The layout version this build writes.
const SCHEMA_VERSION: u64 = 1;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed (disk full, corruption, permissions).
    #[error("state store at {path}: {source}")]
    Sled {
        /// The store's folder.
        path: String,
        /// The cause.
        source: sled::Error,
    },
    /// A record could not be read back.
    #[error("state store: record {key} is unreadable: {message}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// Why.
        message: String,
    },
    /// The store was written by a newer flowctl.
    #[error("state store at {path} has schema version {found}, newer than this flowctl understands ({SCHEMA_VERSION}); upgrade flowctl")]
    TooNew {
        /// The store's folder.
        path: String,
        /// The version found.
        found: u64,
    },
}

/// What [`Store::add_dag_version`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionAdded {
    /// The first version of a DAG the store had not seen.
    Added(u64),
    /// A new version of a known DAG.
    Changed(u64),
    /// The latest version holds the same source: nothing stored.
    Unchanged(u64),
}

/// One change in a batch.
#[derive(Debug, Clone)]
pub enum Write {
    /// Create or replace a run.
    Run(DagRun),
    /// Create or replace a task instance of a run.
    Task {
        /// The DAG.
        dag_id: String,
        /// The run.
        run_id: String,
        /// The new record.
        instance: TaskInstance,
    },
    /// Delete a run and its task instances (retention).
    DeleteRun {
        /// The DAG.
        dag_id: String,
        /// The run.
        run_id: String,
    },
}

/// The embedded store.
///
/// Several threads of one process write to it at once (the API's requests, the scheduler, every
/// run's loop). Changes that read a record and write it back go through a compare-and-swap
/// ([`Store::create_run`], [`Store::update_dag`], [`Store::add_dag_version`]) or, for the
/// read-decide-write sequences on ended runs (clear, cancel, retention), hold
/// [`Store::run_edits`], so no two of them interleave and no write is lost.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    dags: sled::Tree,
    versions: sled::Tree,
    runs: sled::Tree,
    path: String,
    edits: std::sync::Arc<std::sync::Mutex<()>>,
    /// The unreadable records reported so far, so each is reported once per process.
    reported: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Which tree a key belongs to, to name its record in messages.
#[derive(Clone, Copy)]
enum Tree {
    Dags,
    Versions,
    Runs,
}

/// A key as a person reads it: `run etl/manual__2024-01-01T00:00:00Z`,
/// `task instance etl/manual__.../load`, `DAG etl`, `version 3 of DAG etl`.
fn describe_key(tree: Tree, key: &[u8]) -> String {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).replace('\0', "/");
    match tree {
        Tree::Dags => format!("DAG {}", text(key)),
        Tree::Versions => match key.len().checked_sub(9).filter(|&at| key[at] == 0) {
            Some(at) => {
                let version = key[at + 1..].try_into().map(u64::from_be_bytes).unwrap_or_default();
                format!("version {version} of DAG {}", text(&key[..at]))
            }
            None => format!("version {}", text(key)),
        },
        Tree::Runs => match key.split_first() {
            Some((b'r', rest)) => format!("run {}", text(rest)),
            Some((b't', rest)) => format!("task instance {}", text(rest)),
            _ => format!("run record {}", text(key)),
        },
    }
}

fn run_key(dag_id: &str, run_id: &str) -> Vec<u8> {
    [b"r", dag_id.as_bytes(), b"\0", run_id.as_bytes()].concat()
}

fn runs_prefix(dag_id: &str) -> Vec<u8> {
    [b"r", dag_id.as_bytes(), b"\0"].concat()
}

fn task_key(dag_id: &str, run_id: &str, task_id: &str) -> Vec<u8> {
    [b"t", dag_id.as_bytes(), b"\0", run_id.as_bytes(), b"\0", task_id.as_bytes()].concat()
}

fn tasks_prefix(dag_id: &str, run_id: &str) -> Vec<u8> {
    [b"t", dag_id.as_bytes(), b"\0", run_id.as_bytes(), b"\0"].concat()
}

fn version_key(dag_id: &str, version: u64) -> Vec<u8> {
    [dag_id.as_bytes(), b"\0", &version.to_be_bytes()].concat()
}

impl Store {
    /// Opens or creates the store in `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let err = |source| StoreError::Sled { path: shown.clone(), source };
        let db = sled::Config::new().path(path).cache_capacity(16 * 1024 * 1024).open().map_err(err)?;
        let store = Store {
            meta: db.open_tree("meta").map_err(err)?,
            dags: db.open_tree("dags").map_err(err)?,
            versions: db.open_tree("versions").map_err(err)?,
            runs: db.open_tree("runs").map_err(err)?,
            db,
            path: shown.clone(),
            edits: Default::default(),
            reported: Default::default(),
        };
        match store.meta.get("schema_version").map_err(err)? {
            Some(bytes) => {
                let found = bytes.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX);
                if found > SCHEMA_VERSION {
                    return Err(StoreError::TooNew { path: shown, found });
                }
            }
            None => {
                store.meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes()).map_err(err)?;
                store.flush()?;
            }
        }
        Ok(store)
    }

    fn sled(&self, source: sled::Error) -> StoreError {
        StoreError::Sled { path: self.path.clone(), source }
    }

    fn decode<T: DeserializeOwned>(tree: Tree, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { key: describe_key(tree, key), message: e.to_string() })
    }

    /// Reads every record of a scan. A record that cannot be read (written by a build that let
    /// something nest deeper than serde_json reads back, or damaged by hand) is reported with its
    /// key and skipped, so one bad record never hides the others from a listing, the scheduler or
    /// a start; sled's own errors still fail the scan.
    fn scan<T: DeserializeOwned>(&self, tree: Tree, items: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in items {
            let (key, value) = item.map_err(|e| self.sled(e))?;
            match Self::decode(tree, &key, &value) {
                Ok(record) => out.push(record),
                Err(e) => self.report_unreadable(&e),
            }
        }
        Ok(out)
    }

    /// Says once per process that a record was skipped: on the server's log when there is one
    /// (`tracing`), else on stderr, where the CLI's user sees it beside the answer.
    fn report_unreadable(&self, error: &StoreError) {
        let StoreError::Corrupt { key, .. } = error else { return };
        if !self.reported.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone()) {
            return;
        }
        if tracing::dispatcher::has_been_set() {
            tracing::error!(record = %key, %error, "skipping an unreadable record; everything else carries on");
        } else {
            eprintln!("flowctl: warning: {error}; skipped (everything else carries on)");
        }
    }

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        serde_json::to_vec(value).unwrap_or_default()
    }

    /// Makes every write so far durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(|e| self.sled(e))
    }

    /// Writes run and task records in order, then flushes once.
    pub fn write(&self, writes: &[Write]) -> Result<(), StoreError> {
        for write in writes {
            match write {
                Write::Run(run) => self.put_run(run)?,
                Write::Task { dag_id, run_id, instance } => self.put_task(dag_id, run_id, instance)?,
                Write::DeleteRun { dag_id, run_id } => {
                    // Tasks first, so a crash midway leaves a run with fewer tasks, never tasks
                    // without their run.
                    for item in self.runs.scan_prefix(tasks_prefix(dag_id, run_id)).keys() {
                        self.runs.remove(item.map_err(|e| self.sled(e))?).map_err(|e| self.sled(e))?;
                    }
                    self.runs.remove(run_key(dag_id, run_id)).map_err(|e| self.sled(e))?;
                }
            }
        }
        self.flush()
    }

    /// Creates a run record unless one with its id exists, and flushes: the check and the insert
    /// are one compare-and-swap, so two callers racing for an id never both get it. Returns
    /// whether this call created it.
    pub fn create_run(&self, run: &DagRun) -> Result<bool, StoreError> {
        let swapped = self
            .runs
            .compare_and_swap(run_key(&run.dag_id, &run.run_id), None::<&[u8]>, Some(Self::encode(run)))
            .map_err(|e| self.sled(e))?;
        if swapped.is_err() {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    /// Queues a run record; durable at the next [`Store::flush`].
    pub fn put_run(&self, run: &DagRun) -> Result<(), StoreError> {
        self.runs.insert(run_key(&run.dag_id, &run.run_id), Self::encode(run)).map(drop).map_err(|e| self.sled(e))
    }

    /// Queues a task-instance record; durable at the next [`Store::flush`].
    pub fn put_task(&self, dag_id: &str, run_id: &str, instance: &TaskInstance) -> Result<(), StoreError> {
        self.runs
            .insert(task_key(dag_id, run_id, &instance.task_id), Self::encode(instance))
            .map(drop)
            .map_err(|e| self.sled(e))
    }

    /// Adds a version of DAG `dag_id` and makes it the latest, durably, unless `same` says the
    /// latest version already holds this source. `make` builds the version from its number. The
    /// number is claimed with a compare-and-swap on the version's key, and the DAG's record moves
    /// to it with another, so two applies at once get two versions, each with its own source, and
    /// the DAG's other settings (paused, schedule position) are kept. Returns the version runs
    /// should record, and whether it is new (with whether the DAG existed before).
    pub fn add_dag_version(
        &self,
        dag_id: &str,
        same: impl Fn(&DagVersion) -> bool,
        make: impl Fn(u64) -> DagVersion,
    ) -> Result<VersionAdded, StoreError> {
        loop {
            let current = self.dag(dag_id)?;
            if let Some(record) = &current {
                match self.dag_version(dag_id, record.latest_version) {
                    Ok(Some(latest)) if same(&latest) => return Ok(VersionAdded::Unchanged(latest.version)),
                    Ok(_) => {}
                    // An unreadable latest version is replaced by this one rather than blocking
                    // every apply of the DAG from now on.
                    Err(e @ StoreError::Corrupt { .. }) => self.skip_unreadable(&e),
                    Err(e) => return Err(e),
                }
            }
            let number = current.as_ref().map_or(1, |r| r.latest_version + 1);
            let claimed = self
                .versions
                .compare_and_swap(version_key(dag_id, number), None::<&[u8]>, Some(Self::encode(&make(number))))
                .map_err(|e| self.sled(e))?;
            if claimed.is_err() {
                // Another apply took this number first and is moving the record to it: look again.
                std::thread::yield_now();
                continue;
            }
            self.update_dag(dag_id, |record| {
                Some(match record {
                    Some(existing) => DagRecord { latest_version: existing.latest_version.max(number), ..existing },
                    None => DagRecord { dag_id: dag_id.to_string(), latest_version: number, paused: false, last_scheduled_end: None },
                })
            })?;
            return Ok(if current.is_some() { VersionAdded::Changed(number) } else { VersionAdded::Added(number) });
        }
    }

    /// Changes a DAG's record atomically and durably: `change` gets the record as stored now and
    /// returns the new one (`None` leaves it as it is), and is called again if another writer
    /// changed the record meanwhile. Returns the record as written (or as found, when unchanged).
    pub fn update_dag(&self, dag_id: &str, change: impl Fn(Option<DagRecord>) -> Option<DagRecord>) -> Result<Option<DagRecord>, StoreError> {
        loop {
            let old = self.dags.get(dag_id).map_err(|e| self.sled(e))?;
            let record: Option<DagRecord> = old.as_ref().map(|bytes| Self::decode(Tree::Dags, dag_id.as_bytes(), bytes)).transpose()?;
            let Some(new) = change(record.clone()) else { return Ok(record) };
            if record.as_ref() == Some(&new) {
                return Ok(record);
            }
            let swapped = self.dags.compare_and_swap(dag_id, old, Some(Self::encode(&new))).map_err(|e| self.sled(e))?;
            if swapped.is_ok() {
                self.flush()?;
                return Ok(Some(new));
            }
        }
    }

    /// The run an idempotency key of a DAG's triggers created, if one did.
    pub fn idempotent_run(&self, dag_id: &str, key: &str) -> Result<Option<String>, StoreError> {
        let ikey = [b"k", dag_id.as_bytes(), b"\0", key.as_bytes()].concat();
        Ok(self.runs.get(&ikey).map_err(|e| self.sled(e))?.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Records that a trigger with `key` created `run_id`, durably. Call it under
    /// [`Store::run_edits`], after checking [`Store::idempotent_run`], so one key makes one run.
    pub fn record_idempotent_run(&self, dag_id: &str, key: &str, run_id: &str) -> Result<(), StoreError> {
        let ikey = [b"k", dag_id.as_bytes(), b"\0", key.as_bytes()].concat();
        self.runs.insert(ikey, run_id.as_bytes()).map_err(|e| self.sled(e))?;
        self.flush()
    }

    /// The lock that read-decide-write sequences on runs no loop executes (clear, cancel of an
    /// idle run, retention) hold, so they never interleave.
    pub fn run_edits(&self) -> std::sync::MutexGuard<'_, ()> {
        self.edits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A DAG's record. An unreadable record is an error naming it: the caller asked for it.
    pub fn dag(&self, dag_id: &str) -> Result<Option<DagRecord>, StoreError> {
        match self.dags.get(dag_id).map_err(|e| self.sled(e))? {
            Some(bytes) => Ok(Some(Self::decode(Tree::Dags, dag_id.as_bytes(), &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every DAG's record, sorted by id; unreadable ones are reported and skipped.
    pub fn dags(&self) -> Result<Vec<DagRecord>, StoreError> {
        self.scan(Tree::Dags, self.dags.iter())
    }

    /// One version of a DAG. An unreadable record is an error naming it.
    pub fn dag_version(&self, dag_id: &str, version: u64) -> Result<Option<DagVersion>, StoreError> {
        let key = version_key(dag_id, version);
        match self.versions.get(&key).map_err(|e| self.sled(e))? {
            Some(bytes) => Ok(Some(Self::decode(Tree::Versions, &key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every version of a DAG, oldest first.
    pub fn dag_versions(&self, dag_id: &str) -> Result<Vec<DagVersion>, StoreError> {
        self.versions
            .scan_prefix([dag_id.as_bytes(), b"\0"].concat())
            .map(|item| {
                let (key, value) = item.map_err(|e| self.sled(e))?;
                Self::decode(Tree::Versions, &key, &value)
            })
            .collect()
    }

    /// Reports a record a caller found unreadable and goes on without it (see [`Store::dags`]).
    pub fn skip_unreadable(&self, error: &StoreError) {
        self.report_unreadable(error);
    }

    /// A run. An unreadable record is an error naming it.
    pub fn run(&self, dag_id: &str, run_id: &str) -> Result<Option<DagRun>, StoreError> {
        let key = run_key(dag_id, run_id);
        match self.runs.get(&key).map_err(|e| self.sled(e))? {
            Some(bytes) => Ok(Some(Self::decode(Tree::Runs, &key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// A DAG's runs, oldest logical date first; unreadable ones are reported and skipped.
    pub fn runs(&self, dag_id: &str) -> Result<Vec<DagRun>, StoreError> {
        let mut runs: Vec<DagRun> = self.scan(Tree::Runs, self.runs.scan_prefix(runs_prefix(dag_id)))?;
        runs.sort_by(|a, b| (a.logical_date, a.created_at, &a.run_id).cmp(&(b.logical_date, b.created_at, &b.run_id)));
        Ok(runs)
    }

    /// A run's task instances, in key order; unreadable ones are reported and skipped (for
    /// showing a run; resuming one reads them with [`Store::task_instances_to_resume`]).
    pub fn task_instances(&self, dag_id: &str, run_id: &str) -> Result<Vec<TaskInstance>, StoreError> {
        self.scan(Tree::Runs, self.runs.scan_prefix(tasks_prefix(dag_id, run_id)))
    }

    /// A run's task instances, every one, or the error naming the first unreadable one. A run
    /// resumes only from complete records: a task whose record is skipped would look as if it never
    /// started and run again, though it may have succeeded.
    pub fn task_instances_to_resume(&self, dag_id: &str, run_id: &str) -> Result<Vec<TaskInstance>, StoreError> {
        self.runs
            .scan_prefix(tasks_prefix(dag_id, run_id))
            .map(|item| {
                let (key, value) = item.map_err(|e| self.sled(e))?;
                Self::decode(Tree::Runs, &key, &value)
            })
            .collect()
    }

    /// Opens (creating if needed) a tree of its own for a feature that keeps its own records
    /// (alert deliveries, schedules), in the same store and under the same flush.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(name).map_err(|e| self.sled(e))
    }

    /// The size of the store on disk, in bytes.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::TaskState;
    use crate::state::model::{DagRecord, RunState, Trigger};
    use chrono::Utc;

    fn run(dag: &str, id: &str) -> DagRun {
        let now = Utc::now();
        DagRun {
            dag_id: dag.into(),
            run_id: id.into(),
            logical_date: now,
            data_interval_start: now,
            data_interval_end: now,
            trigger: Trigger::Manual,
            params: Default::default(),
            dag_version: 1,
            state: RunState::Queued,
            created_at: now,
            start: None,
            end: None,
            note: None,
        }
    }

    #[test]
    fn runs_and_tasks_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut ti = TaskInstance::new("a", 1);
            ti.state = TaskState::Running;
            store
                .write(&[
                    Write::Run(run("d", "r1")),
                    Write::Task { dag_id: "d".into(), run_id: "r1".into(), instance: ti },
                    Write::Run(run("d2", "r1")),
                ])
                .unwrap();
        }
        // sled's flusher thread may hold the file lock for a moment after the store is dropped
        // (seen on a loaded machine): reopen as soon as it lets go, within a bound.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let store = loop {
            match Store::open(dir.path()) {
                Ok(store) => break store,
                Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                    std::thread::yield_now()
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        assert_eq!(store.runs("d").unwrap().len(), 1);
        let tasks = store.task_instances("d", "r1").unwrap();
        assert_eq!(tasks[0].state, TaskState::Running);
        assert!(store.task_instances("d2", "r1").unwrap().is_empty());
        store.write(&[Write::DeleteRun { dag_id: "d".into(), run_id: "r1".into() }]).unwrap();
        assert!(store.runs("d").unwrap().is_empty());
        assert!(store.task_instances("d", "r1").unwrap().is_empty());
    }

    /// A value nested past serde_json's recursion limit, as a build without compile's depth
    /// bound could store in a run's parameters.
    fn too_deep() -> serde_json::Value {
        (0..130).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]))
    }

    #[test]
    fn listings_skip_unreadable_records_and_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut deep = run("d", "deep");
        deep.params.insert("p".into(), too_deep());
        store.write(&[Write::Run(run("d", "good")), Write::Run(deep)]).unwrap();
        store.write(&[Write::Task { dag_id: "d".into(), run_id: "good".into(), instance: TaskInstance::new("a", 1) }]).unwrap();
        store.tree("runs").unwrap().insert(task_key("d", "good", "b"), b"{not json".to_vec()).unwrap();
        store.tree("dags").unwrap().insert("broken", b"[]".to_vec()).unwrap();
        store.update_dag("d", |_| Some(DagRecord { dag_id: "d".into(), latest_version: 1, paused: false, last_scheduled_end: None })).unwrap();

        assert_eq!(store.runs("d").unwrap().iter().map(|r| r.run_id.as_str()).collect::<Vec<_>>(), ["good"]);
        assert_eq!(store.dags().unwrap().iter().map(|d| d.dag_id.as_str()).collect::<Vec<_>>(), ["d"]);
        assert_eq!(store.task_instances("d", "good").unwrap().len(), 1);
        // Resuming needs every record: the error names the one that cannot be read.
        let err = store.task_instances_to_resume("d", "good").unwrap_err().to_string();
        assert!(err.starts_with("state store: record task instance d/good/b is unreadable: "), "{err}");
        // Asking for the record itself says why it cannot be read.
        let err = store.run("d", "deep").unwrap_err().to_string();
        assert!(err.starts_with("state store: record run d/deep is unreadable: recursion limit exceeded"), "{err}");
        let reported = store.reported.lock().unwrap().clone();
        let mut reported: Vec<&str> = reported.iter().map(String::as_str).collect();
        reported.sort();
        assert_eq!(reported, ["DAG broken", "run d/deep", "task instance d/good/b"], "each reported once");
    }

    #[test]
    fn keys_are_named_as_people_read_them() {
        assert_eq!(describe_key(Tree::Versions, &version_key("etl", 3)), "version 3 of DAG etl");
        assert_eq!(describe_key(Tree::Runs, &run_key("etl", "r")), "run etl/r");
        assert_eq!(describe_key(Tree::Dags, b"etl"), "DAG etl");
    }
}
