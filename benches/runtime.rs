//! Runtime benchmarks: the real `flowctl run` binary (release build, durable state on) against
//! the goals in docs/performance.md. Run with `cargo bench --bench runtime`.
//!
//! (a) a chain of 100 shell `/bin/true` tasks, against a plain `sh` loop running `/bin/true` 100
//!     times in the same run (the process-spawn floor): at most 3x;
//! (b) a chain of 10,000 noop tasks: at most 1 s;
//! (c) a fan-out of 1,000 shell `/bin/true` tasks: at least 500 tasks/s;
//! (d) peak RSS of (b) and (c): at most 100 MB.
//!
//! (b) also measures, in the same run, what 10,000 durable flushes of the store cost on their own:
//! one flush per hand-off is the floor that durable state sets.
//!
//! Each scenario runs in a child copy of this program, so the peak RSS read from
//! `getrusage(RUSAGE_CHILDREN)` is that scenario's `flowctl` process alone.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const FLOWCTL: &str = env!("CARGO_BIN_EXE_flowctl");
const REPEATS: usize = 3;

fn chain(id: &str, tasks: usize, operator: &str) -> String {
    let mut text = format!("dag: {id}\nmax_active_tasks: 64\ntasks:\n");
    for i in 0..tasks {
        text.push_str(&format!("  - id: t{i}\n    operator: {operator}\n"));
        if operator == "shell" {
            text.push_str("    with: { argv: [/bin/true] }\n");
        }
        if i > 0 {
            text.push_str(&format!("    depends_on: [t{}]\n", i - 1));
        }
    }
    text
}

fn fan_out(id: &str, tasks: usize) -> String {
    let mut text = format!("dag: {id}\nmax_active_tasks: 64\ntasks:\n  - id: start\n    operator: noop\n");
    for i in 0..tasks {
        text.push_str(&format!("  - id: t{i}\n    operator: shell\n    with: {{ argv: [/bin/true] }}\n    depends_on: [start]\n"));
    }
    text
}

/// Runs one scenario in this process: `flowctl run`, then prints `seconds max_rss_kib`.
fn scenario(name: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (text, parallelism) = match name {
        "chain100" => (chain("chain100", 100, "shell"), "32"),
        "noop10k" => (chain("noop10k", 10_000, "noop"), "32"),
        "fanout1000" => (fan_out("fanout1000", 1000), "64"),
        other => panic!("unknown scenario {other}"),
    };
    let file = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&file, text).expect("write DAG");
    let home = dir.path().join("home");
    // Apply first, so the timed run measures running, not compiling 10,000 tasks.
    let applied = Command::new(FLOWCTL).arg("--home").arg(&home).arg("apply").arg(&file).output().expect("apply");
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    let start = Instant::now();
    let out = Command::new(FLOWCTL)
        .arg("--home")
        .arg(&home)
        .args(["run", name, "--parallelism", parallelism])
        .output()
        .expect("run");
    let elapsed = start.elapsed();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    println!("{} {}", elapsed.as_secs_f64(), usage.max_rss());
}

/// The durability floor of (b): 10,000 steps of what a noop hand-off writes (two task records)
/// followed by one flush each, through the same store, on the same disk.
fn flush_floor() -> Duration {
    use flowctl_engine::lifecycle::TaskState;
    use flowctl_engine::state::{Store, TaskInstance};
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    let mut done = TaskInstance::new("t0", 1);
    done.state = TaskState::Success;
    let mut next = TaskInstance::new("t1", 1);
    next.state = TaskState::Running;
    let start = Instant::now();
    for i in 0..10_000 {
        done.task_id = format!("t{i}");
        next.task_id = format!("t{}", i + 1);
        store.put_task("noop10k", "run", &done).expect("write");
        store.put_task("noop10k", "run", &next).expect("write");
        store.flush().expect("flush");
    }
    start.elapsed()
}

fn sh_loop() -> Duration {
    let start = Instant::now();
    let status = Command::new("sh")
        .args(["-c", "i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i+1)); done"])
        .status()
        .expect("sh");
    assert!(status.success());
    start.elapsed()
}

fn measure(name: &str) -> (f64, u64) {
    let mut results: Vec<(f64, u64)> = (0..REPEATS)
        .map(|_| {
            let out = Command::new(std::env::current_exe().expect("self")).args(["--scenario", name]).output().expect("scenario");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8_lossy(&out.stdout);
            let mut parts = text.split_whitespace();
            let seconds: f64 = parts.next().and_then(|s| s.parse().ok()).expect("seconds");
            let rss: u64 = parts.next().and_then(|s| s.parse().ok()).expect("rss");
            (seconds, rss)
        })
        .collect();
    results.sort_by(|a, b| a.0.total_cmp(&b.0));
    let peak = results.iter().map(|r| r.1).max().unwrap_or(0);
    (results[REPEATS / 2].0, peak)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--scenario") {
        scenario(&args[pos + 1]);
        return;
    }
    if args.iter().any(|a| a == "--list") || !Path::new(FLOWCTL).exists() {
        return;
    }
    let mut floors: Vec<Duration> = (0..REPEATS).map(|_| sh_loop()).collect();
    floors.sort();
    let floor = floors[REPEATS / 2].as_secs_f64();
    let (chain_s, chain_rss) = measure("chain100");
    let (noop_s, noop_rss) = measure("noop10k");
    let mut floors_b: Vec<Duration> = (0..REPEATS).map(|_| flush_floor()).collect();
    floors_b.sort();
    let floor_b = floors_b[REPEATS / 2].as_secs_f64();
    let (fan_s, fan_rss) = measure("fanout1000");
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!("medians of {REPEATS} runs, release build, durable state on");
    println!(
        "(a) chain of 100 shell tasks: {chain_s:.3} s; sh loop of 100 /bin/true: {floor:.3} s; ratio {:.2} (goal <= 3.00); peak RSS {:.1} MiB",
        chain_s / floor,
        mib(chain_rss)
    );
    println!("(b) chain of 10,000 noop tasks: {noop_s:.3} s (goal <= 1 s); {:.0} tasks/s", 10_000.0 / noop_s);
    println!(
        "    of which the durability floor, 10,000 store writes + flushes alone: {floor_b:.3} s ({:.0} us each); engine overhead {:.3} s ({:.0} us per task)",
        floor_b * 100.0,
        noop_s - floor_b,
        (noop_s - floor_b) * 100.0
    );
    println!("(c) fan-out of 1,000 shell tasks: {fan_s:.3} s, {:.0} tasks/s (goal >= 500)", 1000.0 / fan_s);
    println!("(d) peak RSS: (b) {:.1} MiB, (c) {:.1} MiB (goal <= 100 MB)", mib(noop_rss), mib(fan_rss));
}
