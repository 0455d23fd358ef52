//! `flowctl apply PATH...`: compile everything, then store the new versions. On any error,
//! nothing is stored.

use std::path::{Path, PathBuf};

use chrono::Utc;
use sha2::{Digest, Sha256};

use super::inspect::print_diagnostics;
use super::table::Table;
use super::{exit, open_home, CommandError};
use crate::compile::compile_paths;
use crate::dag::Dag;
use crate::operator::Registry;
use crate::state::{DagVersion, Store, StoreError};

/// What applying a DAG did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A DAG id the store had not seen.
    Added,
    /// A new version of a known DAG.
    Changed,
    /// The same source as the latest version.
    Unchanged,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Changed => "changed",
            Change::Unchanged => "unchanged",
        }
    }
}

/// The SHA-256 of a DAG's source, hex.
pub fn source_hash(source: &str) -> String {
    Sha256::digest(source.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores `dag` as a new version unless its source is unchanged. Returns the version runs of it
/// should record, and what happened.
pub fn store_version(store: &Store, dag: &Dag) -> Result<(u64, Change), StoreError> {
    let hash = source_hash(&dag.source);
    let record = store.dag(&dag.id)?;
    if let Some(record) = &record {
        if let Some(latest) = store.dag_version(&dag.id, record.latest_version)? {
            if latest.hash == hash {
                return Ok((latest.version, Change::Unchanged));
            }
        }
    }
    let version = record.as_ref().map_or(1, |r| r.latest_version + 1);
    let paused = record.as_ref().is_some_and(|r| r.paused);
    store.put_dag_version(
        &DagVersion {
            dag_id: dag.id.clone(),
            version,
            hash,
            source: dag.source.clone(),
            file: absolute(&dag.file),
            applied_at: Utc::now(),
        },
        paused,
    )?;
    Ok((version, if record.is_some() { Change::Changed } else { Change::Added }))
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Runs `flowctl apply`.
pub fn apply(home: Option<&Path>, paths: &[PathBuf], registry: &Registry) -> Result<u8, CommandError> {
    let compiled = match compile_paths(paths, registry) {
        Ok(c) => c,
        Err(errors) => {
            print_diagnostics(&mut std::io::stderr(), &errors);
            eprintln!("error: nothing applied: {} error(s); fix them (see `flowctl validate`) and apply again", errors.len());
            return Ok(exit::INVALID);
        }
    };
    print_diagnostics(&mut std::io::stderr(), &compiled.warnings);
    let home = open_home(home, "flowctl apply")?;
    let mut table = Table::new(&["DAG", "VERSION", "CHANGE", "FILE"]);
    let mut counts = [0usize; 3];
    for dag in &compiled.dags {
        let (version, change) = store_version(home.store(), dag)?;
        counts[change as usize] += 1;
        table.row(vec![dag.id.clone(), version.to_string(), change.name().into(), dag.file.display().to_string()]);
    }
    out!("{}", table.render());
    outln!("applied: {} added, {} changed, {} unchanged", counts[0], counts[1], counts[2]);
    Ok(exit::OK)
}
