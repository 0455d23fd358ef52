//! Retention benchmark: 10,000 runs of a small DAG with `retention: {runs: 100}`, each created and
//! executed in this process through the engine's API (`create_run`, the executor, then
//! `runs::prune`, as the server does when a run ends), printing the home's size (store, logs,
//! scratch) every 1,000 runs. Goal: the size stays flat once the first 100 runs are kept.
//! Run with `cargo bench --bench retention` (`-- RUNS` for another count; `-- RUNS no-prune` for
//! the same runs never pruned, to compare).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use flowctl_engine::runs::{create_run, logical_date};
use flowctl_engine::service::store_version;
use flowctl_engine::executor::{Executor, ExecutorSettings, RunControl};
use flowctl_engine::runs;
use flowctl_engine::secrets::Masker;
use flowctl_engine::state::{Home, RunState, Trigger};

/// Two shell tasks that write a line each (so every run has two attempt logs, and one has an
/// output), and a noop between them.
const DAG: &str = "\
dag: retained
retention: {runs: 100}
tasks:
  - id: extract
    operator: shell
    with: {command: 'echo \"extracting {{ ds }}\"; echo rows=42 >> \"$FLOWCTL_OUTPUT\"'}
  - id: check
    operator: noop
    depends_on: [extract]
  - id: load
    operator: shell
    depends_on: [check]
    with: {command: 'echo \"loading {{ tasks.extract.outputs.rows }} rows\"'}
";

/// Bytes (the files' lengths), bytes allocated on disk (as `du` counts them, folders included)
/// and files under `path`.
fn size(path: &Path) -> (u64, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0, 0);
    let Ok(entries) = std::fs::read_dir(path) else { return total };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let (bytes, disk, files) = size(&entry.path());
            total = (total.0 + bytes, total.1 + disk + meta.blocks() * 512, total.2 + files);
        } else {
            total = (total.0 + meta.len(), total.1 + meta.blocks() * 512, total.2 + 1);
        }
    }
    total
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let count: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let prune = args.get(1).is_none_or(|a| a != "no-prune");
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("home");
    let home = Home::open(&root, "retention benchmark").expect("open home");
    let registry = flowctl_operators::registry();
    let file = dir.path().join("retained.yaml");
    std::fs::write(&file, DAG).expect("write DAG");
    let compiled = flowctl_engine::compile_paths(&[file], &registry).expect("DAG compiles");
    let dag = Arc::new(compiled.dags.into_iter().next().expect("one DAG"));
    let (version, _) = store_version(home.store(), &dag).expect("store DAG");
    let settings = ExecutorSettings { parallelism: 32, logs_dir: home.logs_dir(), work_dir: home.work_dir(), die_with_flowctl: false, connections: Default::default() };
    let executor = Arc::new(Executor::new(home.store().clone(), registry, Masker::from_env(), settings));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");

    let kept = if prune { "retention: {runs: 100}" } else { "never pruned" };
    println!("{count} runs of a 3-task DAG (2 shell tasks), {kept}; home {}", root.display());
    println!(
        "{:>6}  {:>10}  {:>10}  {:>10}  {:>10}  {:>12}  {:>6}  {:>6}  {:>6}",
        "RUNS", "STORE", "LOGS", "SCRATCH", "HOME", "HOME ON DISK", "FILES", "KEPT", "RUNS/S"
    );
    let started = Instant::now();
    let mut lap = Instant::now();
    for i in 0..count {
        // One run a minute from 2024-01-01: distinct logical dates, so distinct run ids.
        let date = format!("2024-{:02}-{:02}T{:02}:{:02}:00Z", 1 + i / 44_640, 1 + (i / 1440) % 31, (i / 60) % 24, i % 60);
        let logical = logical_date(&dag, Some(&date)).expect("date");
        let run = create_run(home.store(), &dag, version, Trigger::Manual, logical, dag.params.clone()).expect("create run");
        let finished =
            runtime.block_on(executor.execute(dag.clone(), run, RunControl::default(), Arc::new(|_| {}))).expect("execute");
        assert_eq!(finished.run.state, RunState::Success, "run {i}: {:?}", finished.instances);
        if prune {
            runs::prune(home.store(), &home.logs_dir(), &home.work_dir(), &dag.id, dag.retention).expect("prune");
        }
        if (i + 1) % 1000 == 0 || i + 1 == count {
            executor.sync_logs();
            home.store().flush().expect("flush");
            let (store, _, _) = size(&root.join("store"));
            let (logs, _, _) = size(&home.logs_dir());
            let (scratch, _, _) = size(&home.work_dir());
            let (total, disk, files) = size(&root);
            let kept = home.store().runs(&dag.id).expect("runs").len();
            let rate = 1000.0 / lap.elapsed().as_secs_f64();
            lap = Instant::now();
            println!(
                "{:>6}  {:>10}  {:>10}  {:>10}  {:>10}  {:>12}  {:>6}  {:>6}  {:>6.0}",
                i + 1,
                mib(store),
                mib(logs),
                mib(scratch),
                mib(total),
                mib(disk),
                files,
                kept,
                rate
            );
        }
    }
    println!("{count} runs in {:.1}s", started.elapsed().as_secs_f64());
}
