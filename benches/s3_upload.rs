//! S3 upload benchmark: a 1 GiB file to moto_server with `s3.upload` (the real `flowctl run`
//! binary, release build, default part size and concurrency) and with `aws s3 cp` (the aws CLI
//! from the test virtualenv, its defaults) against the same endpoint in the same run. Prints both
//! throughputs and their ratio; the goal in docs/performance.md is a ratio of at least 1.0.
//!
//! Run with `cargo bench --bench s3_upload` after scripts/test.sh has installed moto[server] and
//! awscli into the virtualenv. Each tool uploads `S3_BENCH_ROUNDS` times (default 2), in
//! alternating order, each time to a fresh bucket; the best round of each counts, so one slow
//! round of the shared moto_server does not decide the comparison.

#[path = "../tests/util/mod.rs"]
mod util;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use util::moto::{aws_cli, moto, random_file, Moto};

const FLOWCTL: &str = env!("CARGO_BIN_EXE_flowctl");
const SIZE: u64 = 1024 * 1024 * 1024;

fn main() {
    let rounds: usize = std::env::var("S3_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let moto = moto();
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data.bin");
    random_file(&data, SIZE, 42);
    println!("s3 upload of {} MiB to moto_server at {}", SIZE >> 20, moto.endpoint);

    let mut flowctl_times = Vec::new();
    let mut cli_times = Vec::new();
    for round in 0..rounds {
        // Alternate who goes first, so neither always meets a warmer (or more loaded) server.
        let order: [bool; 2] = if round % 2 == 0 { [true, false] } else { [false, true] };
        for flowctl_turn in order {
            let bucket = util::moto::bucket(if flowctl_turn { "bench-flowctl" } else { "bench-cli" });
            moto.make_bucket(&bucket);
            let elapsed = if flowctl_turn { upload_with_flowctl(moto, dir.path(), &data, &bucket, round) } else { upload_with_cli(moto, &data, &bucket) };
            let head = moto.head(&bucket, "data.bin");
            assert_eq!(head["size"], SIZE, "the object has the wrong size: {head}");
            let name = if flowctl_turn { "s3.upload" } else { "aws s3 cp" };
            println!("  round {}: {name:<10} {:6.2} s  {:7.1} MiB/s", round + 1, elapsed.as_secs_f64(), mib_per_s(elapsed));
            if flowctl_turn { flowctl_times.push(elapsed) } else { cli_times.push(elapsed) }
            // Free moto's memory for the next round.
            let _ = moto.client_output(&["rm", &bucket, "data.bin"]);
        }
    }
    let best_flowctl = flowctl_times.iter().min().copied().expect("a round");
    let best_cli = cli_times.iter().min().copied().expect("a round");
    let ratio = mib_per_s(best_flowctl) / mib_per_s(best_cli);
    println!("s3.upload  (best of {rounds}): {:7.1} MiB/s", mib_per_s(best_flowctl));
    println!("aws s3 cp  (best of {rounds}): {:7.1} MiB/s", mib_per_s(best_cli));
    println!("ratio s3.upload / aws s3 cp: {ratio:.2} (goal: at least 1.0){}", if ratio >= 1.0 { "" } else { "  BELOW GOAL" });
}

fn mib_per_s(elapsed: Duration) -> f64 {
    (SIZE as f64 / (1024.0 * 1024.0)) / elapsed.as_secs_f64()
}

/// `flowctl run` of a one-task DAG, timed from start to exit.
fn upload_with_flowctl(moto: &Moto, dir: &Path, data: &Path, bucket: &str, round: usize) -> Duration {
    let home = dir.join(format!("home-{round}"));
    let file = dir.join(format!("upload-{round}.yaml"));
    std::fs::write(
        &file,
        format!("dag: s3_bench\ntasks:\n  - id: upload\n    operator: s3.upload\n    with:\n      source: {}\n      destination: s3://{bucket}/\n", data.display()),
    )
    .expect("write the DAG");
    let started = Instant::now();
    let output = Command::new(FLOWCTL)
        .arg("--home")
        .arg(&home)
        .arg("run")
        .arg(&file)
        .env("FLOWCTL_CONN_AWS_DEFAULT", moto.connection_json("BENCH_KEY_ID", "BENCH_SECRET"))
        .env("BENCH_KEY_ID", "testing")
        .env("BENCH_SECRET", "testing")
        .output()
        .expect("run flowctl");
    let elapsed = started.elapsed();
    assert!(output.status.success(), "flowctl run failed:\n{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    elapsed
}

/// `aws s3 cp` with the CLI's defaults, timed from start to exit.
fn upload_with_cli(moto: &Moto, data: &Path, bucket: &str) -> Duration {
    let started = Instant::now();
    let output = Command::new(aws_cli())
        .args(["s3", "cp", "--only-show-errors", "--endpoint-url", &moto.endpoint])
        .arg(data)
        .arg(format!("s3://{bucket}/data.bin"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("run aws s3 cp");
    let elapsed = started.elapsed();
    assert!(output.status.success(), "aws s3 cp failed:\n{}\n{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    elapsed
}
