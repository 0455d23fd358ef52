//! Compile throughput: 1,000 DAG files of 50 tasks each, the size of a large Airflow deployment's
//! DAG folder. Goal: at most 1 s in a release build on a 2-core machine. Run with
//! `cargo bench -p flowctl-engine --bench compile`; figures go to docs/performance.md.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use flowctl_engine::compile::{compile, SourceFile};
use flowctl_engine::operator::{Operator, Outcome, Registry, TaskContext, TaskError};
use serde::Deserialize;

/// A stand-in with the shape of `shell`'s settings (the real operators live in another crate).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct CommandConfig {
    command: String,
    #[serde(default)]
    env: std::collections::BTreeMap<String, String>,
}

struct CommandOperator;

#[async_trait]
impl Operator for CommandOperator {
    const NAME: &'static str = "shell";
    type Config = CommandConfig;
    async fn execute(&self, _: CommandConfig, _: TaskContext) -> Result<Outcome, TaskError> {
        Ok(Outcome::success())
    }
}

fn dag_file(index: usize, tasks: usize) -> SourceFile {
    let mut text = format!(
        "dag: bench_{index}\ndescription: generated\nschedule: '0 6 * * 1-5'\ntimezone: America/New_York\n\
start_date: 2024-01-01\nparams:\n  bucket: loans-lake\ndefaults:\n  retries: 2\n  retry_delay: 30s\n  timeout: 1h\ntasks:\n"
    );
    for t in 0..tasks {
        text.push_str(&format!("  - id: task_{t}\n    operator: shell\n"));
        if t > 0 {
            let deps: Vec<String> = [t - 1, t / 2].iter().map(|d| format!("task_{d}")).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            text.push_str(&format!("    depends_on: [{}]\n", deps.join(", ")));
        }
        text.push_str(&format!(
            "    with:\n      command: \"aws s3 cp s3://{{{{ params.bucket }}}}/{{{{ ds }}}}/part-{t}.csv /tmp/ && echo {t}\"\n      env:\n        STAGE: \"{t}\"\n"
        ));
    }
    SourceFile { path: format!("dags/bench_{index}.yaml").into(), bytes: text.into_bytes() }
}

fn main() {
    let files: Vec<SourceFile> = (0..1000).map(|i| dag_file(i, 50)).collect();
    let bytes: usize = files.iter().map(|f| f.bytes.len()).sum();
    let mut registry = Registry::new();
    registry.register(CommandOperator);
    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let compiled = compile(&files, &registry).expect("generated DAGs compile");
        times.push(start.elapsed());
        assert_eq!(compiled.dags.len(), 1000);
        assert_eq!(compiled.dags[0].tasks.len(), 50);
    }
    times.sort();
    println!(
        "compile: 1000 files x 50 tasks ({:.1} MiB): median {:.3} s, best {:.3} s, worst {:.3} s (goal <= 1 s)",
        bytes as f64 / 1048576.0,
        times[2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[4].as_secs_f64()
    );
}
