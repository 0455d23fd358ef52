//! moto_server (pinned by scripts/install-deps.sh in the test virtualenv): a real S3 API for
//! the S3 tests and benchmark, and the EMR and SageMaker APIs for theirs. Each server is started
//! once per test binary on a free port of 127.0.0.1, the first time a test asks for it, under a
//! guard kept until the test binary exits ([`super::services`]). Tests isolate themselves by
//! bucket names ([`bucket`]) and by the ids of what they create.
//!
//! A second server, [`moto_with_auth`], checks credentials (`INITIAL_NO_AUTH_ACTION_COUNT=0`), so
//! bogus keys get S3's own `InvalidAccessKeyId`. A test binary that needs other settings starts
//! its own with [`Moto::start_in`] (the EMR tests turn on moto's request recorder).
//!
//! [`Moto::client`] runs `tests/data/s3/s3_client.py` (boto3 from the same virtualenv): an S3
//! client independent of flowctl, to prepare objects and check what flowctl wrote;
//! [`Moto::run_client`] runs another such script.
//!
//! Nothing sleeps: a server is ready once its log says it is listening (read through
//! [`super::FileWatch`], woken by inotify) and it answers a request.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use super::services::{free_port, Guard, Options};
use super::{Cmd, TempHome};

/// How long moto_server may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running moto_server.
pub struct Moto {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// Its folder (its log, and what the test binary keeps there), removed once it stops.
    pub dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
}

static MOTO: OnceLock<Moto> = OnceLock::new();
static MOTO_AUTH: OnceLock<Moto> = OnceLock::new();

/// The moto_server of this test binary that accepts any credentials.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(|| Moto::start_in(server_dir(), &[]))
}

/// The moto_server of this test binary that checks credentials: only keys moto's IAM knows are
/// accepted, so any made-up key is refused.
pub fn moto_with_auth() -> &'static Moto {
    MOTO_AUTH.get_or_init(|| Moto::start_in(server_dir(), &[("INITIAL_NO_AUTH_ACTION_COUNT", "0".as_ref())]))
}

/// The test virtualenv's Python (boto3, moto, aiosmtpd): `$FLOWCTL_TEST_PYTHON`, else the one in
/// the virtualenv scripts/install-deps.sh makes.
pub fn python() -> PathBuf {
    from_env_or_venv("FLOWCTL_TEST_PYTHON", "bin/python", "the virtualenv's Python (boto3, aiosmtpd)")
}

/// moto_server: `$FLOWCTL_TEST_MOTO`, else the one in the test virtualenv.
pub fn moto_server() -> PathBuf {
    from_env_or_venv("FLOWCTL_TEST_MOTO", "bin/moto_server", "moto_server (moto[server]==5.2.5)")
}

/// The aws CLI: `$FLOWCTL_TEST_AWS_CLI`, else the one in the test virtualenv.
pub fn aws_cli() -> PathBuf {
    from_env_or_venv("FLOWCTL_TEST_AWS_CLI", "bin/aws", "the aws CLI (awscli)")
}

fn from_env_or_venv(var: &str, relative: &str, what: &str) -> PathBuf {
    let path = match std::env::var_os(var).filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => {
            let venv = std::env::var_os("FLOWCTL_VENV").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/flowctl-venv")
            });
            venv.join(relative)
        }
    };
    assert!(
        path.is_file(),
        "the tests need {what} at {}, and there is none: run scripts/test.sh once (it creates the virtualenv and installs \
         aiosmtpd, moto[server] and awscli), or point {var} at it",
        path.display()
    );
    path
}

/// A bucket name of its own for each call in this test binary: `<prefix>-<pid>-<n>`.
pub fn bucket(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A new folder for a server of this test binary; its guard removes it once the server stops.
pub fn server_dir() -> PathBuf {
    tempfile::Builder::new().prefix("flowctl-moto-").tempdir().expect("temp dir").keep()
}

/// An `aws` connection (JSON, without keys) to the moto at `endpoint`.
pub fn connection_to(endpoint: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "aws",
        "region": "us-east-1",
        "endpoint_url": endpoint,
        "force_path_style": true,
    })
}

/// A test's AWS connection: its name and the keys flowctl reads from `<vars>_KEY_ID` and
/// `<vars>_SECRET`. The secret is a canary: it must never appear in a log, an error or status.
pub struct TestConnection {
    /// The connection's name, as in `FLOWCTL_CONN_<NAME>`, e.g. `AWS_DEFAULT`.
    pub name: &'static str,
    /// The start of the key variables' names, e.g. `S3_TEST`.
    pub vars: &'static str,
    /// The access key id.
    pub key_id: &'static str,
    /// The secret access key.
    pub secret: &'static str,
}

impl Cmd {
    /// Adds the connection `connection` (`FLOWCTL_CONN_<NAME>`): `settings`, an `aws` connection,
    /// with the test keys read from their variables. The instance metadata service is turned
    /// off, so a mistake fails at once instead of looking for credentials.
    pub fn aws_connection(self, connection: &TestConnection, mut settings: serde_json::Value) -> Cmd {
        let (id_var, secret_var) = (format!("{}_KEY_ID", connection.vars), format!("{}_SECRET", connection.vars));
        settings["access_key_id_env"] = id_var.clone().into();
        settings["secret_access_key_env"] = secret_var.clone().into();
        self.env(&id_var, connection.key_id)
            .env(&secret_var, connection.secret)
            .env(&format!("FLOWCTL_CONN_{}", connection.name), &settings.to_string())
            .env("AWS_EC2_METADATA_DISABLED", "true")
    }
}

/// A fresh home ([`super::setup_with_scratch`]) with the AWS connection `connection` whose
/// settings are `settings` (e.g. [`Moto::connection`]), see [`Cmd::aws_connection`].
pub fn setup_aws(connection: &TestConnection, settings: serde_json::Value) -> (TempHome, Cmd) {
    let (home, cmd) = super::setup_with_scratch();
    (home, cmd.aws_connection(connection, settings))
}

impl Moto {
    /// Starts moto_server in `dir` (see [`server_dir`]) with `envs` added to its environment,
    /// kept until the test binary exits, and waits until it answers.
    pub fn start_in(dir: PathBuf, envs: &[(&str, &OsStr)]) -> Moto {
        let server = moto_server();
        let log = dir.join("moto.log");
        let port = free_port();
        std::fs::write(&log, b"").expect("create the moto log");
        let mut watch = super::FileWatch::new(&log);
        let args = ["-H".to_string(), "127.0.0.1".to_string(), "-p".to_string(), port.to_string()];
        Guard::sh(&server, &args, &log, Options { envs: envs.to_vec(), remove: Some(&dir), ..Default::default() }).keep_until_exit();
        let listening = format!("Running on http://127.0.0.1:{port}");
        watch.wait(&format!("moto_server to listen on port {port}"), START_DEADLINE, |lines| {
            lines.iter().any(|l| l.contains(&listening) || l.contains("Traceback")).then_some(())
        });
        let moto = Moto { port, endpoint: format!("http://127.0.0.1:{port}"), dir, log };
        let (status, body) = moto.http("GET", "/moto-api/data.json");
        assert_eq!(status, 200, "moto_server on port {port} does not answer: {body}\nits log:\n{}", moto.log_text());
        moto
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One plain HTTP request to the server: status and body.
    pub fn http(&self, method: &str, path: &str) -> (u16, String) {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto_server");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.port)
            .expect("send the request");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("read the response");
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, body.to_string())
    }

    /// Runs the independent client (`tests/data/s3/s3_client.py`) with `args`; panics with its
    /// output when it fails.
    #[track_caller]
    pub fn client(&self, args: &[&str]) -> String {
        self.run_client("tests/data/s3/s3_client.py", args)
    }

    /// Runs the independent client and returns what it did, whatever its exit code.
    pub fn client_output(&self, args: &[&str]) -> std::process::Output {
        python_output("tests/data/s3/s3_client.py", &[&[self.endpoint.as_str()], args].concat())
    }

    /// Runs `script` (a client of the repository, e.g. `tests/data/emr/emr_client.py`) with this
    /// server's endpoint and `args`; returns what it printed, or panics with its output.
    #[track_caller]
    pub fn run_client(&self, script: &str, args: &[&str]) -> String {
        run_python(script, &[&[self.endpoint.as_str()], args].concat())
    }

    /// An `aws` connection (JSON, without keys) to this server.
    pub fn connection(&self) -> serde_json::Value {
        connection_to(&self.endpoint)
    }

    /// Creates a bucket.
    #[track_caller]
    pub fn make_bucket(&self, bucket: &str) {
        self.client(&["mb", bucket]);
    }

    /// Writes an object holding `text`.
    #[track_caller]
    pub fn put_text(&self, bucket: &str, key: &str, text: &str) {
        self.client(&["put-text", bucket, key, text]);
    }

    /// Uploads a file with boto3.
    #[track_caller]
    pub fn put_file(&self, bucket: &str, key: &str, path: &Path) {
        self.client(&["put", bucket, key, path.to_str().expect("UTF-8 path")]);
    }

    /// Asserts that the object's bytes are the file's.
    #[track_caller]
    pub fn assert_same(&self, bucket: &str, key: &str, path: &Path) {
        let output = self.client_output(&["same", bucket, key, path.to_str().expect("UTF-8 path")]);
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// HeadObject: `size`, `etag`, `metadata`, `content_type`.
    #[track_caller]
    pub fn head(&self, bucket: &str, key: &str) -> serde_json::Value {
        serde_json::from_str(&self.client(&["head", bucket, key])).expect("head prints JSON")
    }

    /// Every key under `prefix` with its size, in key order.
    #[track_caller]
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        serde_json::from_str(&self.client(&["ls", bucket, prefix])).expect("ls prints JSON")
    }

    /// A `FLOWCTL_CONN_<NAME>` value for a connection to this server whose keys are read from
    /// the variables `key_var` and `secret_var`.
    pub fn connection_json(&self, key_var: &str, secret_var: &str) -> String {
        let mut settings = self.connection();
        settings["access_key_id_env"] = key_var.into();
        settings["secret_access_key_env"] = secret_var.into();
        settings.to_string()
    }
}

/// Runs a Python script of the repository (`script`, relative to its root) with the test
/// virtualenv's Python and `args`, and returns what it did, whatever its exit code.
pub fn python_output(script: &str, args: &[&str]) -> std::process::Output {
    python_script(script, args).output().unwrap_or_else(|e| panic!("run {script}: {e}"))
}

/// Runs the script as [`python_output`] does, panicking with its output when it fails; returns
/// its stdout.
#[track_caller]
pub fn run_python(script: &str, args: &[&str]) -> String {
    let output = super::services::run_to_end(&mut python_script(script, args), &format!("{script} {args:?}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn python_script(script: &str, args: &[&str]) -> Command {
    let mut command = Command::new(python());
    command.arg(super::repo_root().join(script)).args(args).env_remove("AWS_PROFILE").stdin(Stdio::null());
    command
}

/// Writes `size` bytes of seeded pseudo-random data (incompressible, so every part differs) to
/// `path`.
pub fn random_file(path: &Path, size: u64, seed: u64) {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).expect("create the data file"));
    let mut state = seed;
    let mut block = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            // SplitMix64.
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).expect("write the data file");
        left -= n as u64;
    }
    file.flush().expect("flush the data file");
}
