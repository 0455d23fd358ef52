//! The sled store. Values are JSON, so a store can be inspected and migrated by hand if it ever
//! has to be; keys are laid out so one prefix scan lists a DAG's runs or a run's task instances.
//!
//! Layout: tree `meta` (schema version, index version), `dags` (dag id -> [`DagRecord`]),
//! `versions` (dag id, 0, version as 8 big-endian bytes -> [`DagVersion`]), `runs` (`r` dag 0 run
//! -> [`DagRun`]; `t` dag 0 run 0 task -> [`TaskInstance`]; `k` dag 0 key -> the run an
//! idempotency key created; and the run index, below).
//!
//! The run index keeps a DAG's runs in the orders its views ask for, so a page of the newest runs,
//! the runs in one state, a count by state or the newest created run cost what they return, not a
//! read of every run the DAG ever had: `i` dag 0 logical date, creation time, run (by logical date);
//! `n` dag 0 creation time, run (by creation); `s` dag 0 state, logical date, creation time, run
//! (by state). Times are microseconds as sortable big-endian bytes; the values are empty.
//! **Invariant:** a run's record and its index keys change in one atomic batch (creation is one
//! transaction), so the index never disagrees with the records, even after a crash.
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

use super::model::{DagRecord, DagRun, DagVersion, LatestVersion, RunState, TaskInstance};

/// The layout version this build writes.
const SCHEMA_VERSION: u64 = 1;

/// The run index's version: a store without it (written by an earlier build) gets the index
/// built from its run records when it is opened.
const RUN_INDEX_VERSION: u64 = 1;

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

/// A time as 8 bytes that sort as the times do (microseconds, sign bit flipped).
fn time_bytes(t: chrono::DateTime<chrono::Utc>) -> [u8; 8] {
    ((t.timestamp_micros() as u64) ^ (1 << 63)).to_be_bytes()
}

/// The byte a run state sorts under in the `s` index.
fn state_byte(state: RunState) -> u8 {
    match state {
        RunState::Queued => b'q',
        RunState::Running => b'r',
        RunState::Success => b's',
        RunState::Failed => b'f',
    }
}

fn state_of_byte(byte: u8) -> Option<RunState> {
    [RunState::Queued, RunState::Running, RunState::Success, RunState::Failed].into_iter().find(|s| state_byte(*s) == byte)
}

/// The prefix of a DAG's keys in one of the run index's orders (`i`, `n`, `s`).
fn index_prefix(order: u8, dag_id: &str) -> Vec<u8> {
    [&[order], dag_id.as_bytes(), b"\0"].concat()
}

/// A run's three index keys: by logical date, by creation, by state.
fn index_keys(run: &DagRun) -> [Vec<u8>; 3] {
    let (date, created, id) = (time_bytes(run.logical_date), time_bytes(run.created_at), run.run_id.as_bytes());
    [
        [&index_prefix(b'i', &run.dag_id)[..], &date, &created, id].concat(),
        [&index_prefix(b'n', &run.dag_id)[..], &created, id].concat(),
        [&index_prefix(b's', &run.dag_id)[..], &[state_byte(run.state)], &date, &created, id].concat(),
    ]
}

/// Where a page of runs starts: strictly before this position of the logical-date order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPosition {
    /// The logical date.
    pub logical_date: chrono::DateTime<chrono::Utc>,
    /// The creation time.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The run.
    pub run_id: String,
}

/// Which runs [`Store::run_page`] reads.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs in this state.
    pub state: Option<RunState>,
    /// Only runs whose logical date is at or after this.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Only runs whose logical date is at or before this.
    pub to: Option<chrono::DateTime<chrono::Utc>>,
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
        let indexed = store.meta.get("run_index_version").map_err(err)?.and_then(|b| b.as_ref().try_into().ok().map(u64::from_be_bytes));
        if indexed != Some(RUN_INDEX_VERSION) {
            store.build_run_index()?;
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
                    // The run, its tasks and its index keys go together.
                    let mut batch = sled::Batch::default();
                    for item in self.runs.scan_prefix(tasks_prefix(dag_id, run_id)).keys() {
                        batch.remove(item.map_err(|e| self.sled(e))?);
                    }
                    let key = run_key(dag_id, run_id);
                    if let Some(old) = self.runs.get(&key).map_err(|e| self.sled(e))? {
                        if let Ok(old) = serde_json::from_slice::<DagRun>(&old) {
                            for index in index_keys(&old) {
                                batch.remove(index);
                            }
                        }
                    }
                    batch.remove(key);
                    self.runs.apply_batch(batch).map_err(|e| self.sled(e))?;
                }
            }
        }
        self.flush()
    }

    /// Creates a run record unless one with its id exists, and flushes: the check and the insert
    /// are one compare-and-swap, so two callers racing for an id never both get it. Returns
    /// whether this call created it.
    pub fn create_run(&self, run: &DagRun) -> Result<bool, StoreError> {
        use sled::transaction::{ConflictableTransactionError, TransactionError};
        let key = run_key(&run.dag_id, &run.run_id);
        let value = Self::encode(run);
        let indexes = index_keys(run);
        let created = self.runs.transaction(|tx| {
            if tx.get(&key)?.is_some() {
                return Err(ConflictableTransactionError::Abort(()));
            }
            tx.insert(key.as_slice(), value.as_slice())?;
            for index in &indexes {
                tx.insert(index.as_slice(), &[][..])?;
            }
            Ok(())
        });
        match created {
            Ok(()) => {}
            Err(TransactionError::Abort(())) => return Ok(false),
            Err(TransactionError::Storage(e)) => return Err(self.sled(e)),
        }
        self.flush()?;
        Ok(true)
    }

    /// Queues a run record, with its index keys in the same atomic batch; durable at the next
    /// [`Store::flush`]. Only one loop writes a run at a time (the executor while it runs it, else
    /// under [`Store::run_edits`]), so the record read here for the old keys is the current one.
    pub fn put_run(&self, run: &DagRun) -> Result<(), StoreError> {
        let key = run_key(&run.dag_id, &run.run_id);
        let mut batch = sled::Batch::default();
        let new = index_keys(run);
        if let Some(old) = self.runs.get(&key).map_err(|e| self.sled(e))? {
            if let Ok(old) = serde_json::from_slice::<DagRun>(&old) {
                for index in index_keys(&old) {
                    if !new.contains(&index) {
                        batch.remove(index);
                    }
                }
            }
        }
        for index in new {
            batch.insert(index, &[][..]);
        }
        batch.insert(key, Self::encode(run));
        self.runs.apply_batch(batch).map_err(|e| self.sled(e))
    }

    /// Builds the run index from the run records (a store an earlier build wrote), durably.
    fn build_run_index(&self) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for order in [b'i', b'n', b's'] {
            for key in self.runs.scan_prefix([order]).keys() {
                batch.remove(key.map_err(|e| self.sled(e))?);
            }
        }
        for item in self.runs.scan_prefix(b"r") {
            let (_, value) = item.map_err(|e| self.sled(e))?;
            // An unreadable record stays out of the index; reading it names it.
            if let Ok(run) = serde_json::from_slice::<DagRun>(&value) {
                for index in index_keys(&run) {
                    batch.insert(index, &[][..]);
                }
            }
        }
        self.runs.apply_batch(batch).map_err(|e| self.sled(e))?;
        self.meta.insert("run_index_version", &RUN_INDEX_VERSION.to_be_bytes()).map_err(|e| self.sled(e))?;
        self.flush()
    }

    /// The run ids one of the index's orders holds under `prefix`, in order (or reversed),
    /// with the bytes after the prefix.
    fn index_entries(&self, prefix: &[u8], reverse: bool) -> impl Iterator<Item = Result<Vec<u8>, StoreError>> + '_ {
        let scan = self.runs.scan_prefix(prefix);
        let keys: Box<dyn Iterator<Item = sled::Result<sled::IVec>>> = if reverse { Box::new(scan.keys().rev()) } else { Box::new(scan.keys()) };
        let skip = prefix.len();
        keys.map(move |k| k.map(|k| k[skip..].to_vec()).map_err(|e| self.sled(e)))
    }

    /// Reads the runs named by index entries (run ids), skipping unreadable and vanished ones.
    fn runs_named(&self, dag_id: &str, ids: impl IntoIterator<Item = String>) -> Result<Vec<DagRun>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            let key = run_key(dag_id, &id);
            if let Some(bytes) = self.runs.get(&key).map_err(|e| self.sled(e))? {
                match Self::decode(Tree::Runs, &key, &bytes) {
                    Ok(run) => out.push(run),
                    Err(e) => self.report_unreadable(&e),
                }
            }
        }
        Ok(out)
    }

    /// A DAG's newest `limit` runs by logical date, newest first.
    pub fn newest_runs(&self, dag_id: &str, limit: usize) -> Result<Vec<DagRun>, StoreError> {
        let ids: Vec<String> = self
            .index_entries(&index_prefix(b'i', dag_id), true)
            .take(limit)
            .map(|e| e.map(|rest| String::from_utf8_lossy(&rest[16..]).into_owned()))
            .collect::<Result<_, _>>()?;
        self.runs_named(dag_id, ids)
    }

    /// The DAG's most recently created run.
    pub fn last_created_run(&self, dag_id: &str) -> Result<Option<DagRun>, StoreError> {
        let ids: Vec<String> = self
            .index_entries(&index_prefix(b'n', dag_id), true)
            .take(1)
            .map(|e| e.map(|rest| String::from_utf8_lossy(&rest[8..]).into_owned()))
            .collect::<Result<_, _>>()?;
        Ok(self.runs_named(dag_id, ids)?.into_iter().next())
    }

    /// A DAG's runs from the oldest created: each one's creation time and id, for retention.
    pub fn runs_by_creation(&self, dag_id: &str) -> Result<Vec<(chrono::DateTime<chrono::Utc>, String)>, StoreError> {
        self.index_entries(&index_prefix(b'n', dag_id), false)
            .map(|e| {
                e.map(|rest| {
                    let micros = (u64::from_be_bytes(rest[..8].try_into().unwrap_or_default()) ^ (1 << 63)) as i64;
                    (chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default(), String::from_utf8_lossy(&rest[8..]).into_owned())
                })
            })
            .collect()
    }

    /// A DAG's runs in `state`, oldest logical date first.
    pub fn runs_in_state(&self, dag_id: &str, state: RunState) -> Result<Vec<DagRun>, StoreError> {
        let prefix = [&index_prefix(b's', dag_id)[..], &[state_byte(state)]].concat();
        let ids: Vec<String> =
            self.index_entries(&prefix, false).map(|e| e.map(|rest| String::from_utf8_lossy(&rest[16..]).into_owned())).collect::<Result<_, _>>()?;
        self.runs_named(dag_id, ids)
    }

    /// How many runs a DAG has in each state, counted from the index's keys alone.
    pub fn run_counts(&self, dag_id: &str) -> Result<std::collections::BTreeMap<RunState, usize>, StoreError> {
        let mut counts = std::collections::BTreeMap::new();
        for entry in self.index_entries(&index_prefix(b's', dag_id), false) {
            if let Some(state) = entry?.first().copied().and_then(state_of_byte) {
                *counts.entry(state).or_default() += 1;
            }
        }
        Ok(counts)
    }

    /// A page of a DAG's runs, newest logical date first: those `filter` keeps, strictly before
    /// `after` when given, at most `limit`; and how many `filter` keeps in all.
    pub fn run_page(&self, dag_id: &str, filter: &RunFilter, after: Option<&RunPosition>, limit: usize) -> Result<(Vec<DagRun>, usize), StoreError> {
        let prefix = match filter.state {
            Some(state) => [&index_prefix(b's', dag_id)[..], &[state_byte(state)]].concat(),
            None => index_prefix(b'i', dag_id),
        };
        let (from, to) = (filter.from.map(time_bytes), filter.to.map(time_bytes));
        let before = after.map(|p| [&time_bytes(p.logical_date)[..], &time_bytes(p.created_at), p.run_id.as_bytes()].concat());
        let mut total = 0;
        let mut ids = Vec::new();
        for entry in self.index_entries(&prefix, true) {
            let rest = entry?;
            let date: &[u8] = &rest[..8];
            if to.is_some_and(|to| date > &to[..]) {
                continue;
            }
            if from.is_some_and(|from| date < &from[..]) {
                // Newest first: every entry after this one is older still.
                break;
            }
            total += 1;
            if ids.len() < limit && before.as_ref().is_none_or(|b| rest.as_slice() < b.as_slice()) {
                ids.push(String::from_utf8_lossy(&rest[16..]).into_owned());
            }
        }
        Ok((self.runs_named(dag_id, ids)?, total))
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
        latest: LatestVersion,
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
                    Some(existing) if existing.latest_version > number => existing,
                    Some(existing) => DagRecord { latest_version: number, latest: Some(latest.clone()), ..existing },
                    None => DagRecord {
                        dag_id: dag_id.to_string(),
                        latest_version: number,
                        paused: false,
                        last_scheduled_end: None,
                        latest: Some(latest.clone()),
                    },
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
pub(crate) mod tests {
    use std::collections::BTreeSet;

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

    /// A run of `dag` for day `day` of January 2024, created `day` seconds after the epoch of the
    /// test, in `state`.
    fn dated(dag: &str, day: u32, state: RunState) -> DagRun {
        let date = chrono::NaiveDate::from_ymd_opt(2024, 1, day).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
        DagRun { logical_date: date, created_at: date + chrono::Duration::days(400), state, ..run(dag, &format!("r{day:02}")) }
    }

    fn ids(runs: &[DagRun]) -> Vec<String> {
        runs.iter().map(|r| r.run_id.clone()).collect()
    }

    #[test]
    fn the_run_index_follows_every_create_change_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for day in 1..=9 {
            let state = if day % 3 == 0 { RunState::Failed } else { RunState::Success };
            assert!(store.create_run(&dated("d", day, state)).unwrap());
        }
        assert!(store.create_run(&dated("other", 5, RunState::Queued)).unwrap());
        assert!(!store.create_run(&dated("d", 4, RunState::Queued)).unwrap(), "an id is created once");
        assert_eq!(ids(&store.newest_runs("d", 3).unwrap()), ["r09", "r08", "r07"]);
        assert_eq!(store.last_created_run("d").unwrap().unwrap().run_id, "r09");
        let counts = store.run_counts("d").unwrap();
        assert_eq!((counts[&RunState::Success], counts[&RunState::Failed]), (6, 3));

        // Pages newest first, a cursor continuing strictly after the last one shown.
        let all = RunFilter::default();
        let (first, total) = store.run_page("d", &all, None, 4).unwrap();
        assert_eq!((ids(&first), total), (vec!["r09".into(), "r08".into(), "r07".into(), "r06".into()], 9));
        let at = |r: &DagRun| RunPosition { logical_date: r.logical_date, created_at: r.created_at, run_id: r.run_id.clone() };
        let (second, _) = store.run_page("d", &all, Some(&at(&first[3])), 4).unwrap();
        assert_eq!(ids(&second), ["r05", "r04", "r03", "r02"]);
        let failed = RunFilter { state: Some(RunState::Failed), ..RunFilter::default() };
        let (page, total) = store.run_page("d", &failed, None, 10).unwrap();
        assert_eq!((ids(&page), total), (vec!["r09".into(), "r06".into(), "r03".into()], 3));
        let window = RunFilter { from: Some(dated("d", 2, RunState::Success).logical_date), to: Some(dated("d", 4, RunState::Success).logical_date), ..RunFilter::default() };
        let (inside, total) = store.run_page("d", &window, None, 10).unwrap();
        assert_eq!((ids(&inside), total), (vec!["r04".into(), "r03".into(), "r02".into()], 3));

        // A state change moves the run in the state order; a delete takes its keys along.
        store.write(&[Write::Run(dated("d", 9, RunState::Queued))]).unwrap();
        assert_eq!(ids(&store.runs_in_state("d", RunState::Queued).unwrap()), ["r09"]);
        assert_eq!(store.run_counts("d").unwrap()[&RunState::Failed], 2);
        store.write(&[Write::DeleteRun { dag_id: "d".into(), run_id: "r09".into() }]).unwrap();
        assert!(store.runs_in_state("d", RunState::Queued).unwrap().is_empty());
        assert_eq!(store.run_counts("d").unwrap().values().sum::<usize>(), 8);
        assert_eq!(store.runs_by_creation("d").unwrap().first().map(|(_, id)| id.as_str()), Some("r01"));
        assert_eq!(ids(&store.newest_runs("other", 10).unwrap()), ["r05"]);
    }

    #[test]
    fn a_store_written_without_the_run_index_gets_it_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            for day in 1..=3 {
                store.create_run(&dated("d", day, RunState::Success)).unwrap();
            }
            // What an earlier build left: the records, no index.
            for order in [b'i', b'n', b's'] {
                for key in store.runs.scan_prefix([order]).keys() {
                    store.runs.remove(key.unwrap()).unwrap();
                }
            }
            store.meta.remove("run_index_version").unwrap();
            store.flush().unwrap();
            assert!(store.newest_runs("d", 10).unwrap().is_empty());
        }
        let store = reopen(dir.path());
        assert_eq!(ids(&store.newest_runs("d", 10).unwrap()), ["r03", "r02", "r01"]);
    }

    #[test]
    fn concurrent_applies_and_pauses_lose_no_version_and_no_setting() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let version = |n: u64, source: &str| DagVersion {
            dag_id: "d".into(),
            version: n,
            hash: source.into(),
            source: source.into(),
            file: "d.yaml".into(),
            applied_at: Utc::now(),
        };
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let source = format!("source {i}");
                    let added = store.add_dag_version("d", |latest| latest.source == source, |n| version(n, &source), LatestVersion::default()).unwrap();
                    // Beside every apply, a schedule step and a pause, each changing its own field.
                    store.update_dag("d", |r| r.map(|r| DagRecord { paused: true, ..r })).unwrap();
                    added
                })
            })
            .collect();
        let mut numbers: Vec<u64> = threads
            .into_iter()
            .map(|t| match t.join().unwrap() {
                VersionAdded::Added(n) | VersionAdded::Changed(n) | VersionAdded::Unchanged(n) => n,
            })
            .collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (1..=8).collect::<Vec<u64>>(), "eight applies, eight versions");
        let sources: BTreeSet<String> = store.dag_versions("d").unwrap().into_iter().map(|v| v.source).collect();
        assert_eq!(sources.len(), 8, "each version keeps its own source: {sources:?}");
        let record = store.dag("d").unwrap().unwrap();
        assert_eq!((record.latest_version, record.paused), (8, true));
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
        let store = reopen(dir.path());
        assert_eq!(store.runs("d").unwrap().len(), 1);
        let tasks = store.task_instances("d", "r1").unwrap();
        assert_eq!(tasks[0].state, TaskState::Running);
        assert!(store.task_instances("d2", "r1").unwrap().is_empty());
        store.write(&[Write::DeleteRun { dag_id: "d".into(), run_id: "r1".into() }]).unwrap();
        assert!(store.runs("d").unwrap().is_empty());
        assert!(store.task_instances("d", "r1").unwrap().is_empty());
    }

    /// Opens a store just dropped in this process. sled's flusher thread may hold the file lock
    /// for a moment after the store is dropped (seen on a loaded machine): reopen as soon as it
    /// lets go, within a bound.
    pub(crate) fn reopen(path: &Path) -> Store {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match Store::open(path) {
                Ok(store) => return store,
                Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => std::thread::yield_now(),
                Err(e) => panic!("reopen: {e}"),
            }
        }
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
        store.update_dag("d", |_| Some(DagRecord { dag_id: "d".into(), latest_version: 1, paused: false, last_scheduled_end: None, latest: None })).unwrap();

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
