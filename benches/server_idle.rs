//! An idle server's footprint: 100 DAGs applied (scheduled, nothing due), the server started,
//! then its resident memory and the CPU it uses while idle. Goal: at most 30 MB RSS, and no busy
//! loop (CPU time near zero while idle). Run with `cargo bench --bench server_idle`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FLOWCTL: &str = env!("CARGO_BIN_EXE_flowctl");
const DAGS: usize = 100;
/// How long the server is watched while idle.
const IDLE: Duration = Duration::from_secs(10);

fn status_field(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// utime + stime, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags).expect("dags folder");
    for i in 0..DAGS {
        // Scheduled, with nothing due for a long while: the server only has to wait.
        let text = format!(
            "dag: idle_{i}\nschedule: '0 6 * * *'\nstart_date: 2099-01-01\nretention: {{runs: 100}}\ntasks:\n  - id: extract\n    operator: shell\n    with: {{command: 'echo {{{{ ds }}}}'}}\n  - id: load\n    operator: noop\n    depends_on: [extract]\n"
        );
        std::fs::write(dags.join(format!("idle_{i}.yaml")), text).expect("write DAG");
    }
    let home = dir.path().join("home");
    let applied = Command::new(FLOWCTL).arg("--home").arg(&home).arg("apply").arg(&dags).output().expect("apply");
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));

    let mut server = Command::new(FLOWCTL)
        .arg("--home")
        .arg(&home)
        .args(["server", "--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("server");
    let pid = server.id();
    let mut lines = BufReader::new(server.stderr.take().expect("stderr")).lines();
    let listening = lines.by_ref().map_while(Result::ok).any(|l| l.contains("listening on"));
    assert!(listening, "the server did not start");
    let start_ticks = cpu_ticks(pid);
    let started = Instant::now();
    let mut peak_rss = 0;
    while started.elapsed() < IDLE {
        peak_rss = peak_rss.max(status_field(pid, "VmRSS:"));
        std::thread::sleep(Duration::from_millis(250));
    }
    let idle_ticks = cpu_ticks(pid) - start_ticks;
    let hwm = status_field(pid, "VmHWM:");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    let status = server.wait().expect("wait");
    println!("idle server, {DAGS} DAGs applied, watched {} s:", IDLE.as_secs());
    println!("  RSS while idle: {:.1} MiB (peak since start {:.1} MiB; goal <= 30 MB)", peak_rss as f64 / 1024.0, hwm as f64 / 1024.0);
    println!("  CPU while idle: {idle_ticks} clock ticks ({:.2} s) in {} s", idle_ticks as f64 / 100.0, IDLE.as_secs());
    println!("  stopped on SIGTERM with {status}");
}
