//! DAGs in a home: applied versions compiled again from their stored source, `apply`, and pausing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::Service;
use crate::compile::{compile, compile_paths, SourceFile};
use crate::dag::Dag;
use crate::diagnostic::suggestion;
use crate::operator::Registry;
use crate::protocol::{Applied, AppliedDag, Change, PauseChange, ServiceError};
use crate::state::{DagRecord, DagVersion, LatestVersion, Store, StoreError, VersionAdded};

/// The hint of an unknown DAG for operations that can take a file instead.
const APPLY_HINT: &str = "apply it with `flowctl apply FILE`, or give the file's path";
/// The hint of an unknown DAG for operations on applied DAGs only.
const STATUS_HINT: &str = "`flowctl status` lists them";

/// The error for a DAG id the home does not know, with the nearest known id and `hint`.
fn not_applied(store: &Store, dag_id: &str, hint: &str) -> ServiceError {
    let known: Vec<String> = store.dags().map(|d| d.into_iter().map(|r| r.dag_id).collect()).unwrap_or_default();
    ServiceError::not_found(format!(
        "no DAG \"{dag_id}\" is applied to this home{}; {hint}",
        suggestion(dag_id, known.iter().map(String::as_str))
    ))
}

/// The store's record of an applied DAG, for operations that can take a file instead.
pub(super) fn applied_record(store: &Store, dag_id: &str) -> Result<DagRecord, ServiceError> {
    super::check_name(super::NameKind::Dag, dag_id)?;
    store.dag(dag_id)?.ok_or_else(|| not_applied(store, dag_id, APPLY_HINT))
}

/// The store's record of an applied DAG.
pub(super) fn dag_record(store: &Store, dag_id: &str) -> Result<DagRecord, ServiceError> {
    super::check_name(super::NameKind::Dag, dag_id)?;
    store.dag(dag_id)?.ok_or_else(|| not_applied(store, dag_id, STATUS_HINT))
}

/// The latest applied version of a DAG, compiled.
pub fn load_applied(store: &Store, dag_id: &str, registry: &Registry) -> Result<(Arc<Dag>, u64), ServiceError> {
    let Some(record) = store.dag(dag_id)? else {
        return Err(not_applied(store, dag_id, APPLY_HINT));
    };
    load_version(store, dag_id, record.latest_version, registry).map(|dag| (dag, record.latest_version))
}

/// One stored version of a DAG, compiled again from its stored source.
pub fn load_version(store: &Store, dag_id: &str, version: u64, registry: &Registry) -> Result<Arc<Dag>, ServiceError> {
    let stored = store
        .dag_version(dag_id, version)?
        .ok_or_else(|| ServiceError::not_found(format!("DAG \"{dag_id}\" has no stored version {version}")))?;
    let file = SourceFile { path: stored.file.clone(), bytes: stored.source.into_bytes() };
    let compiled = compile(&[file], registry).map_err(|diagnostics| ServiceError::Invalid { diagnostics })?;
    compiled
        .dags
        .into_iter()
        .next()
        .map(Arc::new)
        .ok_or_else(|| ServiceError::not_found(format!("stored version {version} of \"{dag_id}\" holds no DAG")))
}

/// What a command that takes "an applied DAG's id, or a DAG file" was given.
pub enum Target {
    /// A file, compiled and not stored.
    File(Arc<Dag>),
    /// An applied DAG's latest version.
    Applied(Arc<Dag>, u64),
}

impl Target {
    /// The DAG.
    pub fn dag(&self) -> &Arc<Dag> {
        match self {
            Target::File(dag) | Target::Applied(dag, _) => dag,
        }
    }
}

/// Whether a command's DAG argument names a file rather than an applied DAG's id.
pub fn looks_like_file(target: &str) -> bool {
    target.ends_with(".yaml") || target.ends_with(".yml") || Path::new(target).is_file()
}

/// Finds the DAG a command names: a file is compiled (and stored by the caller once the rest of
/// its arguments are known to be good, so a bad `--param` stores nothing); an id is read from the
/// store, with its version. `store` may be `None` for a command that takes only files then.
pub fn resolve_target(store: Option<&Store>, target: &str, registry: &Registry) -> Result<Target, ServiceError> {
    if looks_like_file(target) {
        let compiled = compile_paths(&[PathBuf::from(target)], registry).map_err(|diagnostics| ServiceError::Invalid { diagnostics })?;
        let dag = compiled.dags.into_iter().next().ok_or_else(|| ServiceError::bad_request(format!("{target} holds no DAG")))?;
        return Ok(Target::File(Arc::new(dag)));
    }
    let Some(store) = store else {
        return Err(ServiceError::bad_request(format!("{target}: expected a DAG file (.yaml or .yml)")));
    };
    load_applied(store, target, registry).map(|(dag, version)| Target::Applied(dag, version))
}

/// The SHA-256 of a DAG's source, hex.
pub fn source_hash(source: &str) -> String {
    Sha256::digest(source.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores `dag` as a new version unless its source is unchanged. Returns the version runs of it
/// should record, and what happened. Two applies at once get a version each
/// ([`Store::add_dag_version`]).
pub fn store_version(store: &Store, dag: &Dag) -> Result<(u64, Change), StoreError> {
    store_version_as(store, dag, std::path::absolute(&dag.file).unwrap_or_else(|_| dag.file.clone()))
}

/// [`store_version`], recording `file` as where the version came from.
fn store_version_as(store: &Store, dag: &Dag, file: PathBuf) -> Result<(u64, Change), StoreError> {
    let hash = source_hash(&dag.source);
    let added = store.add_dag_version(
        &dag.id,
        |latest| latest.hash == hash,
        |version| DagVersion {
            dag_id: dag.id.clone(),
            version,
            hash: hash.clone(),
            source: dag.source.clone(),
            file: file.clone(),
            applied_at: Utc::now(),
        },
        LatestVersion { schedule: dag.schedule.as_ref().map(|s| s.expression.clone()), description: dag.description.clone() },
    )?;
    Ok(match added {
        VersionAdded::Added(v) => (v, Change::Added),
        VersionAdded::Changed(v) => (v, Change::Changed),
        VersionAdded::Unchanged(v) => (v, Change::Unchanged),
    })
}

impl Service<'_> {
    /// `apply`: compiles `paths` and stores the new versions; on any error stores nothing.
    pub fn apply(&self, paths: &[PathBuf]) -> Result<Applied, ServiceError> {
        let compiled = compile_paths(paths, self.registry()).map_err(|diagnostics| ServiceError::Invalid { diagnostics })?;
        let mut dags = Vec::new();
        for dag in &compiled.dags {
            let (version, change) = store_version(self.store(), dag)?;
            dags.push(AppliedDag { dag_id: dag.id.clone(), version, change, file: dag.file.clone() });
        }
        if dags.iter().any(|d| d.change != Change::Unchanged) {
            self.host.dags_changed();
        }
        Ok(Applied { dags, warnings: compiled.warnings })
    }

    /// `apply` of a file's text sent over the API: `name` is the file's name, as diagnostics and
    /// the stored version name it (a name ending in `.yaml` or `.yml`, without folders).
    pub fn apply_source(&self, name: &str, source: &str) -> Result<Applied, ServiceError> {
        let plain = !name.is_empty() && name.len() <= 255 && !name.contains(['/', '\\', '\0']) && !name.starts_with('.');
        if !plain || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            return Err(ServiceError::bad_request(format!(
                "file \"{}\": name the file as it is called, e.g. loans.yaml: a name ending in .yaml or .yml, without folders",
                name.escape_debug()
            )));
        }
        let file = SourceFile { path: PathBuf::from(name), bytes: source.as_bytes().to_vec() };
        let compiled = compile(&[file], self.registry()).map_err(|diagnostics| ServiceError::Invalid { diagnostics })?;
        let mut dags = Vec::new();
        for dag in &compiled.dags {
            let (version, change) = store_version_as(self.store(), dag, dag.file.clone())?;
            dags.push(AppliedDag { dag_id: dag.id.clone(), version, change, file: dag.file.clone() });
        }
        if dags.iter().any(|d| d.change != Change::Unchanged) {
            self.host.dags_changed();
        }
        Ok(Applied { dags, warnings: compiled.warnings })
    }

    /// `pause` and `unpause`.
    pub fn set_paused(&self, dag_id: &str, paused: bool) -> Result<PauseChange, ServiceError> {
        dag_record(self.store(), dag_id)?;
        // The flag alone changes, atomically: the scheduler writes the same record.
        let changed = std::cell::Cell::new(false);
        self.store().update_dag(dag_id, |record| {
            let record = record?;
            changed.set(record.paused != paused);
            Some(DagRecord { paused, ..record })
        })?;
        if changed.get() {
            self.host.dags_changed();
        }
        Ok(PauseChange { dag_id: dag_id.to_string(), paused, changed: changed.get() })
    }

    /// Whether a DAG is paused (false for one the store does not know).
    pub(super) fn is_paused(&self, dag_id: &str) -> bool {
        self.store().dag(dag_id).ok().flatten().is_some_and(|r| r.paused)
    }
}
