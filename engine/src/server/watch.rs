//! `--dags DIR`: apply the folder at start and whenever a file in it changes. Each file is compiled
//! on its own, so a file that no longer compiles is reported with its diagnostics and its DAG keeps
//! its last good version while the others move on. Files are read and compiled within compile's
//! bounds (size, depth, alias expansion, diagnostics per file), so no file dropped into the folder
//! can exhaust the server's memory or stack.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::State;
use crate::compile::{compile, discover, read_source};

/// How long to wait after a change for the burst of events an editor's save makes to settle.
const SETTLE: Duration = Duration::from_millis(300);

/// Compiles every file of `dir` on its own and stores the new versions of those that compile.
pub(super) fn apply_folder(state: &Arc<State>, dir: &Path) {
    let (files, errors) = discover(&[dir.to_path_buf()]);
    for e in errors {
        tracing::error!(diagnostic = %e.short(), "cannot read the DAG folder");
    }
    let mut seen: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
    for path in files {
        // Within compile's bounds: a file too large, or not a regular file, is refused unread.
        let file = match read_source(&path) {
            Ok(file) => file,
            Err(d) => {
                tracing::error!(diagnostic = %d.short(), "cannot read DAG file; its DAG keeps its last good version");
                eprintln!("flowctl server: {} does not compile; its DAG keeps its last good version\n{}", path.display(), d.render(None));
                continue;
            }
        };
        let source = String::from_utf8_lossy(&file.bytes).into_owned();
        match compile(std::slice::from_ref(&file), &state.registry) {
            Ok(compiled) => {
                for dag in compiled.dags {
                    if let Some(first) = seen.get(&dag.id) {
                        tracing::error!(file = %path.display(), dag_id = %dag.id, first = %first.display(), "DAG id already used by another file; keeping the first");
                        continue;
                    }
                    seen.insert(dag.id.clone(), path.clone());
                    match crate::service::store_version(state.store(), &dag) {
                        Ok((version, change)) => {
                            if change != crate::protocol::Change::Unchanged {
                                tracing::info!(dag_id = %dag.id, version, change = ?change, "DAG applied");
                            }
                        }
                        Err(e) => tracing::error!(dag_id = %dag.id, error = %e, "cannot store the DAG"),
                    }
                }
            }
            Err(diagnostics) => {
                // On stderr as well: the server's operator must see why a change is not applied.
                let mut shown = format!("flowctl server: {} does not compile; its DAG keeps its last good version\n", path.display());
                for d in diagnostics {
                    tracing::error!(diagnostic = %d.short(), "DAG file does not compile; its DAG keeps its last good version");
                    shown.push_str(&format!("{}\n", d.render(Some(&source))));
                }
                eprint!("{shown}");
            }
        }
    }
    state.wake.notify_one();
}

/// Watches `dir`; the returned watcher stops watching when dropped.
pub(super) fn start(state: Arc<State>, dir: PathBuf) -> Option<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(folder = %dir.display(), error = %e, "cannot watch the DAG folder; changes need `flowctl apply`");
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::Recursive) {
        tracing::error!(folder = %dir.display(), error = %e, "cannot watch the DAG folder; changes need `flowctl apply`");
        return None;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let the burst settle, then apply once.
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            let state = state.clone();
            let dir = dir.clone();
            let _ = tokio::task::spawn_blocking(move || apply_folder(&state, &dir)).await;
        }
    });
    Some(watcher)
}
