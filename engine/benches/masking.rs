//! Masking throughput: every attempt-log line, error and output passes through the masker, so it
//! must stay cheap when nothing in the text is secret, which is nearly always. 100,000 log lines
//! of about 100 bytes with 20 secrets of the shapes real ones have (AWS keys with `/` and `+`,
//! passwords with punctuation, tokens, a connection URI); one line in 1,000 holds a secret in
//! some form. Run with `cargo bench -p flowctl-engine --bench masking`; figures go to
//! docs/performance.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use flowctl_engine::secrets::Masker;

const LINES: usize = 100_000;
const SECRETS: usize = 20;

fn secret(i: usize) -> String {
    match i % 4 {
        0 => format!("wJalrXUtnFEMI/K7MDENG+bPxRfiCY{i:02}EXAMPLEKEY"),
        1 => format!("Zq7/pl+us sp%ce\"quo\\te-{i:02}"),
        2 => format!("ghp_{i:02}aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z"),
        _ => format!("mysql://loader:pa%2Fss%2Bw{i:02}rd@db.internal:3306/loans"),
    }
}

fn line(i: usize, secrets: &[String]) -> String {
    let plain = match i % 5 {
        0 => format!("2024-03-01T00:00:{:02}.000Z | loading batch {i} of loans_2024Q1.csv: 1250 rows into staging.loans", i % 60),
        1 => format!("2024-03-01T00:00:{:02}.000Z | {{\"rows\": {i}, \"path\": \"/data/eu/loans_20240301.csv\", \"ok\": true}}", i % 60),
        2 => format!("2024-03-01T00:00:{:02}.000Z flowctl: GET https://api.example.com/v2/loans?quarter=2024Q1&page={i} 200 OK", i % 60),
        3 => format!("2024-03-01T00:00:{:02}.000Z | INFO  org.apache.hadoop.mapreduce.Job: map 100% reduce {}%", i % 60, i % 100),
        _ => format!("2024-03-01T00:00:{:02}.000Z | uploaded s3://loans-lake/raw/2024Q1/part-{i:05}.csv (5.2 MiB)", i % 60),
    };
    if i % 1000 == 999 {
        let secret = &secrets[(i / 1000) % secrets.len()];
        let shown = match (i / 1000) % 3 {
            0 => secret.clone(),
            1 => secret.replace('/', "%2F").replace('+', "%2B"),
            _ => format!("{secret:?}"),
        };
        format!("{plain} password={shown}")
    } else {
        plain
    }
}

fn main() {
    let secrets: Vec<String> = (0..SECRETS).map(secret).collect();
    measure("secrets of the usual shapes", &secrets);
    // A secret that starts with punctuation gives the search no literal to look for first.
    let punctuated: Vec<String> = secrets.iter().map(|s| format!("\"/+{s}")).collect();
    measure("secrets that start with punctuation", &punctuated);
}

fn measure(what: &str, secrets: &[String]) {
    let masker = Masker::default();
    for s in secrets {
        masker.add(s);
    }
    let lines: Vec<String> = (0..LINES).map(|i| line(i, secrets)).collect();
    let bytes: usize = lines.iter().map(String::len).sum();
    // The first call compiles whatever the masker prepares; it is not part of the steady state.
    let warm = Instant::now();
    black_box(masker.mask(&lines[0]));
    let first = warm.elapsed();
    let mut times: Vec<Duration> = Vec::new();
    let mut masked = 0;
    for _ in 0..5 {
        let start = Instant::now();
        masked = 0;
        for l in &lines {
            if matches!(black_box(masker.mask(black_box(l))), std::borrow::Cow::Owned(_)) {
                masked += 1;
            }
        }
        times.push(start.elapsed());
    }
    times.sort();
    let per_line = |d: Duration| d.as_nanos() as f64 / LINES as f64;
    println!(
        "masking, {what}: {LINES} lines ({:.1} MiB), {SECRETS} secrets, {masked} lines masked: median {:.1} ms ({:.0} ns/line, {:.0} MiB/s), best {:.1} ms, worst {:.1} ms; first call {:.2} ms",
        bytes as f64 / 1048576.0,
        times[2].as_secs_f64() * 1000.0,
        per_line(times[2]),
        bytes as f64 / 1048576.0 / times[2].as_secs_f64(),
        times[0].as_secs_f64() * 1000.0,
        times[4].as_secs_f64() * 1000.0,
        first.as_secs_f64() * 1000.0,
    );
}
