//! A real S3 API for the S3 tests and benchmark: moto_server (pinned by scripts/test.sh in the
//! test virtualenv), started once per test binary on a free port of 127.0.0.1 the first time a
//! test asks for it, and stopped when the test binary exits. Tests isolate themselves by bucket
//! names ([`bucket`]).
//!
//! A second server, [`moto_with_auth`], checks credentials (`INITIAL_NO_AUTH_ACTION_COUNT=0`), so
//! bogus keys get S3's own `InvalidAccessKeyId`.
//!
//! [`Moto::client`] runs `tests/data/s3/s3_client.py` (boto3 from the same virtualenv): an S3
//! client independent of flowctl, to prepare objects and check what flowctl wrote.
//!
//! Nothing sleeps: a server is ready once its log says it is listening (read through
//! [`super::FileWatch`], woken by inotify) and it answers a request.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// How long moto_server may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// A running moto_server.
pub struct Moto {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// Its log file.
    pub log: PathBuf,
    _guard: std::sync::Mutex<std::process::ChildStdin>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();
static MOTO_AUTH: OnceLock<Moto> = OnceLock::new();

/// The moto_server of this test binary that accepts any credentials.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(|| Moto::start(&[]))
}

/// The moto_server of this test binary that checks credentials: only keys moto's IAM knows are
/// accepted, so any made-up key is refused.
pub fn moto_with_auth() -> &'static Moto {
    MOTO_AUTH.get_or_init(|| Moto::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]))
}

/// The test virtualenv's Python (with boto3): `$FLOWCTL_TEST_PYTHON`, else the virtualenv
/// scripts/test.sh makes.
pub fn python() -> PathBuf {
    from_env_or_venv("FLOWCTL_TEST_PYTHON", "bin/python", "Python with boto3")
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
        "the S3 tests need {what} at {}, and there is none: run scripts/test.sh once (it creates the virtualenv and installs \
         moto[server] and awscli), or point {var} at it",
        path.display()
    );
    path
}

/// A bucket name of its own for each call in this test binary: `<prefix>-<pid>-<n>`.
pub fn bucket(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("address").port()
}

impl Moto {
    fn start(env: &[(&str, &str)]) -> Moto {
        let server = moto_server();
        let dir = tempfile::Builder::new().prefix("flowctl-moto-").tempdir().expect("temp dir").keep();
        let log = dir.join("moto.log");
        let port = free_port();
        // The guard runs the server and stops it when the test binary exits (its stdin, a pipe
        // from this process, closes), then removes the folder.
        let script = r#"dir="$1"; log="$2"; shift 2
"$@" </dev/null >>"$log" 2>&1 &
pid=$!
cat >/dev/null
kill -TERM "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir""#;
        std::fs::write(&log, b"").expect("create the moto log");
        let mut watch = super::FileWatch::new(&log);
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .arg("sh")
            .arg(&dir)
            .arg(&log)
            .arg(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env("PYTHONUNBUFFERED", "1")
            .process_group(0);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", server.display()));
        let stdin = child.stdin.take().expect("guard stdin");
        // The guard is reaped by init once the test binary has exited.
        std::mem::forget(child);
        let listening = format!("Running on http://127.0.0.1:{port}");
        watch.wait(&format!("moto_server to listen on port {port}"), START_DEADLINE, |lines| {
            lines.iter().any(|l| l.contains(&listening) || l.contains("Traceback")).then_some(())
        });
        let moto = Moto { port, endpoint: format!("http://127.0.0.1:{port}"), log, _guard: std::sync::Mutex::new(stdin) };
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
        let output = self.client_output(args);
        assert!(
            output.status.success(),
            "s3_client.py {args:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Runs the independent client and returns what it did, whatever its exit code.
    pub fn client_output(&self, args: &[&str]) -> std::process::Output {
        let script = super::repo_root().join("tests/data/s3/s3_client.py");
        Command::new(python())
            .arg(script)
            .arg(&self.endpoint)
            .args(args)
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .output()
            .expect("run s3_client.py")
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
        serde_json::json!({
            "type": "aws",
            "region": "us-east-1",
            "endpoint_url": self.endpoint,
            "force_path_style": true,
            "access_key_id_env": key_var,
            "secret_access_key_env": secret_var,
        })
        .to_string()
    }
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
