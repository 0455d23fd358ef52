//! The loan pipeline's local stand-ins for its end-to-end tests (tests/pipeline.rs, and the
//! Redshift tests): the patched moto (`scripts/standins/moto_local.py`, recording every request)
//! and the loan site (`scripts/standins/loan_site.py`). The databases come from
//! [`super::databases`], the SMTP server from [`super::smtp`].
//!
//! Each stand-in runs under a guard of [`super::services`]: dropping the value stops the
//! program and waits for it, and [`MotoLocal::shared`] keeps one until the test binary exits.
//! The programs are the same ones `scripts/local-pipeline.sh` runs, so the tests exercise what
//! users run.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::services::{free_port, Guard, Options};

/// How long a stand-in may take to start.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The virtualenv's Python (moto, boto3, aiosmtpd): `$FLOWCTL_TEST_PYTHON`, else the one
/// scripts/install-deps.sh makes.
pub fn venv_python() -> PathBuf {
    super::moto::python()
}

/// The patched moto of `scripts/standins/moto_local.py`, with the bucket `loans-lake` and a
/// record of every request.
pub struct MotoLocal {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// Its port.
    pub port: u16,
    /// The request record (one JSON object per line).
    pub record: PathBuf,
    log: PathBuf,
    /// None for the shared one, whose guard the test binary's exit holds.
    guard: Option<Guard>,
}

impl MotoLocal {
    /// The one of this test binary, started by the first test that asks for it (in a folder of
    /// its own, removed when it stops) and stopped when the binary exits: starting one takes
    /// seconds. Tests tell their requests apart by what they name (statement names, ids).
    pub fn shared() -> &'static MotoLocal {
        static SHARED: OnceLock<MotoLocal> = OnceLock::new();
        SHARED.get_or_init(|| {
            let dir = tempfile::Builder::new().prefix("flowctl-moto-local-").tempdir().expect("temp dir").keep();
            let mut moto = MotoLocal::start_guarded(&dir, Some(&dir));
            moto.guard.take().expect("a guard").keep_until_exit();
            moto
        })
    }

    /// Starts one in `dir` and waits until it answers; dropping it stops it.
    pub fn start(dir: &Path) -> MotoLocal {
        MotoLocal::start_guarded(dir, None)
    }

    fn start_guarded(dir: &Path, remove: Option<&Path>) -> MotoLocal {
        std::fs::create_dir_all(dir).expect("moto folder");
        let log = dir.join("moto.log");
        let record = dir.join("moto-requests.jsonl");
        std::fs::write(&log, b"").expect("create the moto log");
        let mut watch = super::FileWatch::new(&log);
        let port = free_port();
        let script = super::repo_root().join("scripts/standins/moto_local.py");
        let args: Vec<String> = vec![
            script.display().to_string(),
            "--record".into(),
            record.display().to_string(),
            "--bucket".into(),
            "loans-lake".into(),
            "-H".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
        ];
        let guard = Guard::sh(&venv_python(), &args, &log, Options { remove, ..Default::default() });
        let listening = format!("Running on http://127.0.0.1:{port}");
        let started = watch.wait(&format!("moto_local.py to listen on port {port}"), START_DEADLINE, |lines| {
            lines.iter().any(|l| l.contains(&listening) || l.contains("Traceback")).then(|| lines.iter().any(|l| l.contains(&listening)))
        });
        assert!(started, "moto_local.py failed to start (run scripts/test.sh for moto[server]):\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        MotoLocal { endpoint: format!("http://127.0.0.1:{port}"), port, record, log, guard: Some(guard) }
    }

    /// Runs `scripts/standins/inspect_aws.py` against this moto and parses its JSON.
    #[track_caller]
    pub fn inspect(&self, args: &[&str]) -> Value {
        let record = self.record.to_str().expect("UTF-8");
        let stdout = super::moto::run_python("scripts/standins/inspect_aws.py", &[&["--endpoint", &self.endpoint, "--record", record], args].concat());
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("inspect_aws.py {args:?} printed no JSON: {e}"))
    }

    /// The recorded requests, in order.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON request record"))
            .collect()
    }

    /// The recorded requests of one JSON API operation, e.g. `ElasticMapReduce.AddJobFlowSteps`.
    pub fn requests_to(&self, target: &str) -> Vec<Value> {
        self.requests().into_iter().filter(|r| r["target"] == target).collect()
    }

    /// How many PUTs wrote an object whose key starts with `prefix` (whole PutObject requests
    /// and the parts of multipart uploads alike), in bucket `bucket`.
    pub fn puts_under(&self, bucket: &str, prefix: &str) -> usize {
        let path = format!("/{bucket}/{prefix}");
        self.requests().iter().filter(|r| r["method"] == "PUT" && r["path"].as_str().is_some_and(|p| p.starts_with(&path))).count()
    }

    /// The server's log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An `aws` connection (JSON, without keys) to this server.
    pub fn connection(&self) -> Value {
        super::moto::connection_to(&self.endpoint)
    }
}

/// The loan provider's stand-in, serving (and generating) zips in its data folder.
pub struct LoanSite {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The folder of `historical_data_YYYYQn.zip` files.
    pub data: PathBuf,
    log: PathBuf,
    _guard: Guard,
}

impl LoanSite {
    /// Starts one serving `data`, whose login accepts `loans-team` with `password`.
    pub fn start(dir: &Path, data: &Path, password: &str) -> LoanSite {
        std::fs::create_dir_all(data).expect("site data folder");
        let log = dir.join("site.log");
        std::fs::write(&log, b"").expect("create the site log");
        let mut watch = super::FileWatch::new(&log);
        let script = super::repo_root().join("scripts/standins/loan_site.py");
        let args: Vec<String> = vec![script.display().to_string(), "--data".into(), data.display().to_string()];
        let envs = vec![("LOANS_SITE_PASSWORD", password.as_ref())];
        let guard = Guard::sh(Path::new("python3"), &args, &log, Options { envs, ..Default::default() });
        let port: u16 = watch.wait("loan_site.py to listen", START_DEADLINE, |lines| {
            if let Some(l) = lines.iter().find(|l| l.contains("Traceback") || l.starts_with("loan_site.py:")) {
                panic!("loan_site.py failed: {l}\n{}", lines.join("\n"));
            }
            lines.iter().find_map(|l| l.strip_prefix("listening ")).and_then(|p| p.trim().parse().ok())
        });
        LoanSite { url: format!("http://127.0.0.1:{port}"), data: data.to_path_buf(), log, _guard: guard }
    }

    /// Its request counts, by `METHOD PATH STATUS`.
    pub fn stats(&self) -> Value {
        let (status, body) = super::http(self.url.trim_start_matches("http://"), "GET", "/stats", None, None);
        assert_eq!(status, 200, "GET /stats: {body}");
        serde_json::from_str(&body).expect("stats JSON")
    }

    /// How many requests for `path` got `status`.
    pub fn count(&self, method: &str, path: &str, status: u16) -> u64 {
        self.stats()[format!("{method} {path} {status}")].as_u64().unwrap_or(0)
    }
}

/// Writes the quarter's zip with `scripts/standins/loans.py` into `out`; returns its path.
#[track_caller]
pub fn generate_quarter(out: &Path, quarter: &str, loans: u32, revision: u32) -> PathBuf {
    let script = super::repo_root().join("scripts/standins/loans.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(quarter)
        .arg("--out")
        .arg(out)
        .args(["--loans", &loans.to_string(), "--revision", &revision.to_string()])
        .stdin(Stdio::null())
        .output()
        .expect("run loans.py");
    assert!(output.status.success(), "loans.py failed: {}", String::from_utf8_lossy(&output.stderr));
    out.join(format!("historical_data_{quarter}.zip"))
}

/// The members of a zip and their text.
pub fn zip_members(path: &Path) -> Vec<(String, String)> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(path).expect("open the zip")).expect("read the zip");
    (0..archive.len())
        .map(|i| {
            let mut member = archive.by_index(i).expect("zip member");
            let mut text = String::new();
            member.read_to_string(&mut text).expect("member text");
            (member.name().to_string(), text)
        })
        .collect()
}

/// The variables `dags/profiles/local.env` defines, read by a shell the way
/// scripts/local-pipeline.sh reads it, given the stand-ins' ports and passwords in `standins`.
#[track_caller]
pub fn local_profile(standins: &[(&str, String)]) -> Vec<(String, String)> {
    let profile = super::repo_root().join("dags/profiles/local.env");
    let mut command = Command::new("sh");
    command.arg("-c").arg(r#"set -eu; set -a; . "$1"; set +a; env"#).arg("sh").arg(&profile).env_clear();
    command.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in standins {
        command.env(k, v);
    }
    let output = command.stdin(Stdio::null()).output().expect("run sh");
    assert!(output.status.success(), "reading {} failed: {}", profile.display(), String::from_utf8_lossy(&output.stderr));
    let before: Vec<&str> = standins.iter().map(|(k, _)| *k).collect();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            !before.contains(k) && (k.starts_with("FLOWCTL_CONN_") || k.starts_with("LOANS_") || k.starts_with("STANDIN_"))
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
