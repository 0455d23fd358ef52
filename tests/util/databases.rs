//! Real PostgreSQL and MariaDB servers for the SQL tests and benchmarks: each is initialised in a
//! temporary folder and started once per test binary on a free port of 127.0.0.1, the first time
//! a test asks for it, and stopped (and its folder removed) when the test binary exits.
//!
//! A server runs under a guard of [`services`] kept until the binary exits: it is stopped and
//! waited for then, or, if the binary dies without running any code, as soon as the kernel
//! closes the guard's pipe. PostgreSQL refuses to run as root, so as root it runs as `nobody`.
//! A missing server binary fails the test, saying to run scripts/test.sh, which installs both.

#![allow(dead_code)]

// Declared here rather than beside this file in mod.rs: benches/sql_load.rs includes this file
// alone, and it needs the guards too.
#[path = "services.rs"]
pub mod services;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The password of the `flowctl` user on both servers.
pub const PASSWORD: &str = "flowctl-test-pw";

/// How long a server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// A running PostgreSQL.
pub struct Postgres {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// The folder of its unix socket.
    pub socket_dir: PathBuf,
    bin: PathBuf,
}

/// A running MariaDB.
pub struct Mariadb {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Its unix socket.
    pub socket: PathBuf,
}

static POSTGRES: OnceLock<Postgres> = OnceLock::new();
static MARIADB: OnceLock<Mariadb> = OnceLock::new();

/// The PostgreSQL of this test binary, started on first use.
pub fn postgres() -> &'static Postgres {
    POSTGRES.get_or_init(start_postgres)
}

/// The MariaDB of this test binary, started on first use.
pub fn mariadb() -> &'static Mariadb {
    MARIADB.get_or_init(start_mariadb)
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// `nobody`'s uid and gid, from /etc/passwd.
fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .and_then(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
        })
        .unwrap_or((65534, 65534))
}

/// The newest PostgreSQL's `bin` folder under /usr/lib/postgresql.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").is_file() && bin.join("postgres").is_file())
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!("PostgreSQL's initdb and postgres are not installed (/usr/lib/postgresql/<version>/bin): run scripts/test.sh"),
    }
}

fn which(program: &str, places: &[&str]) -> PathBuf {
    for place in places {
        let path = Path::new(place).join(program);
        if path.is_file() {
            return path;
        }
    }
    panic!("{program} is not installed: run scripts/test.sh (it installs mariadb-server)")
}

/// A folder that the server's user can use.
fn server_dir(prefix: &str, owner: Option<(u32, u32)>) -> PathBuf {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().expect("temp dir").keep();
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the server folder");
    }
    dir
}

/// Starts `server args...` under a guard kept until the test binary exits, as `owner` when
/// given; the guard removes `dir` after the server stops.
fn start_guarded(server: &Path, args: &[String], dir: &Path, log: &Path, owner: Option<(u32, u32)>) {
    services::Guard::sh(server, args, log, services::Options { remove: Some(dir), owner, ..Default::default() }).keep_until_exit();
}

/// Polls `ready` until it holds, or panics with the server's log after the deadline.
fn wait_until(what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + START_DEADLINE;
    while !ready() {
        if Instant::now() > deadline {
            panic!("{what} did not accept connections within {}s; its log:\n{}", START_DEADLINE.as_secs(), std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_postgres() -> Postgres {
    let bin = postgres_bin();
    let owner = if is_root() { Some(nobody()) } else { None };
    let dir = server_dir("flowctl-pg-", owner);
    let data = dir.join("data");
    let log = dir.join("server.log");
    let as_owner = |program: PathBuf| {
        let mut c = Command::new(program);
        if let Some((uid, gid)) = owner {
            c.uid(uid).gid(gid);
        }
        c.current_dir(&dir);
        c
    };
    let mut initdb = as_owner(bin.join("initdb"));
    initdb.args(["-D", data.to_str().expect("UTF-8"), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"]);
    services::run_to_end(&mut initdb, "initdb");
    let port = services::free_port();
    let args: Vec<String> = [
        "-D",
        data.to_str().expect("UTF-8"),
        "-p",
        &port.to_string(),
        "-k",
        dir.to_str().expect("UTF-8"),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "max_connections=100",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    start_guarded(&bin.join("postgres"), &args, &dir, &log, owner);
    let pg = Postgres { port, socket_dir: dir.clone(), bin };
    wait_until("PostgreSQL", &log, || pg.try_psql("postgres", "SELECT 1").is_ok_and(|out| out.trim() == "1"));
    pg.psql("postgres", &format!("CREATE ROLE flowctl LOGIN SUPERUSER PASSWORD '{PASSWORD}'"));
    pg
}

impl Postgres {
    /// Runs SQL as the superuser through the unix socket; returns the rows as `a|b` lines.
    pub fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.socket_dir.to_str().expect("UTF-8"), "-p", &self.port.to_string(), "-U", "postgres", "-d", database, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// [`Postgres::try_psql`], panicking on failure.
    #[track_caller]
    pub fn psql(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql).unwrap_or_else(|e| panic!("psql {sql}: {e}"))
    }

    /// A fresh, empty database.
    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER flowctl"));
    }

    /// The connection URI of `database` as the `flowctl` user, password included.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://flowctl:{PASSWORD}@127.0.0.1:{}/{database}", self.port)
    }

    /// The `psql` program.
    pub fn psql_program(&self) -> PathBuf {
        self.bin.join("psql")
    }
}

/// The name of the user this process runs as.
fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn start_mariadb() -> Mariadb {
    let install = which("mariadb-install-db", &["/usr/bin", "/usr/local/bin", "/usr/sbin"]);
    let server = which("mariadbd", &["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]);
    which("mariadb", &["/usr/bin", "/usr/local/bin"]);
    let dir = server_dir("flowctl-mariadb-", None);
    let data = dir.join("data");
    let log = dir.join("server.log");
    let user = if is_root() { "root".to_string() } else { current_user() };
    let mut command = Command::new(install);
    command.args([
        "--no-defaults",
        &format!("--datadir={}", data.display()),
        &format!("--user={user}"),
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
    ]);
    services::run_to_end(&mut command, "mariadb-install-db");
    let port = services::free_port();
    let socket = dir.join("mysqld.sock");
    let mut args = vec![
        "--no-defaults".to_string(),
        format!("--datadir={}", data.display()),
        format!("--port={port}"),
        "--bind-address=127.0.0.1".to_string(),
        format!("--socket={}", socket.display()),
        format!("--pid-file={}", dir.join("mysqld.pid").display()),
        "--local-infile=1".to_string(),
        "--skip-log-bin".to_string(),
        "--skip-name-resolve".to_string(),
        "--innodb-buffer-pool-size=256M".to_string(),
        "--innodb-log-file-size=256M".to_string(),
        "--innodb-flush-log-at-trx-commit=2".to_string(),
        "--max-allowed-packet=64M".to_string(),
    ];
    if is_root() {
        args.push("--user=root".to_string());
    }
    start_guarded(&server, &args, &dir, &log, None);
    let db = Mariadb { port, socket };
    wait_until("MariaDB", &log, || db.try_sql("", "SELECT 1").is_ok_and(|out| out.trim() == "1"));
    db.sql("", &format!("CREATE USER 'flowctl'@'%' IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON *.* TO 'flowctl'@'%'"));
    db
}

impl Mariadb {
    /// Runs SQL as root through the unix socket; returns the rows as tab-separated lines.
    pub fn try_sql(&self, database: &str, sql: &str) -> Result<String, String> {
        let mut command = Command::new("mariadb");
        command.args(["--no-defaults", "-N", "-B", "-uroot", &format!("--socket={}", self.socket.display()), "-e", sql]);
        if !database.is_empty() {
            command.arg(database);
        }
        let output = command.stdin(Stdio::null()).output().map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// [`Mariadb::try_sql`], panicking on failure.
    #[track_caller]
    pub fn sql(&self, database: &str, sql: &str) -> String {
        self.try_sql(database, sql).unwrap_or_else(|e| panic!("mariadb {sql}: {e}"))
    }

    /// A fresh, empty database.
    pub fn create_database(&self, name: &str) {
        self.sql("", &format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"));
    }

    /// The connection URI of `database` as the `flowctl` user, password included.
    pub fn url(&self, database: &str) -> String {
        format!("mysql://flowctl:{PASSWORD}@127.0.0.1:{}/{database}", self.port)
    }
}
