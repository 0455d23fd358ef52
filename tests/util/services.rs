//! The background programs the tests start (moto, PostgreSQL, MariaDB, the loan site, the SMTP
//! server) and the one rule they all follow: **a guard that is dropped stops its program and
//! waits for it**, and a program shared by a whole test binary is stopped, and waited for, when
//! that binary exits. Nothing the tests start is left running, re-parented to init.
//!
//! A program runs under a small `sh` guard ([`Guard::sh`]) that reads its standard input, a pipe
//! from this process. Closing the pipe is the one way to stop it: the guard sends the program
//! SIGTERM, waits for it, removes its folder if it has one, and exits. The pipe closes when the
//! [`Guard`] is dropped, or, if this process dies without running any code (SIGKILL, abort),
//! when the kernel closes its files, so even then the program stops. A program that exits by
//! itself once its standard input closes (`tests/support/smtp_server.py`) is its own guard
//! ([`Guard::direct`]).
//!
//! Dropping or stopping a guard waits for it, bounded: a program still there after
//! [`STOP_DEADLINE`] is killed with its whole process group, so a stuck server cannot hang the
//! suite. Each guard has its own process group, so a Ctrl-C of `cargo test` reaches the test
//! binary, whose exit then stops the guards in order, rather than killing servers mid-test.
//!
//! This file is declared by `databases.rs` (re-exported as `util::services`) because
//! `benches/sql_load.rs` includes `databases.rs` alone; so it uses nothing else of `util`.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::Duration;

/// How long a program may take to stop once asked, before its process group is killed.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// A free TCP port on 127.0.0.1 (bound, then released): for a server to listen on, or, since
/// nothing listens on it, for a test of a refused connection.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("address").port()
}

/// Runs a helper program to the end (an `initdb`, a client script) with nothing on its standard
/// input, and returns what it did; panics with its output, naming it `what`, when it cannot start
/// or fails.
#[track_caller]
pub fn run_to_end(command: &mut Command, what: &str) -> std::process::Output {
    let output = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: cannot start: {e}: run scripts/test.sh"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// What else a guarded program needs.
#[derive(Default)]
pub struct Options<'a> {
    /// Added to the program's environment.
    pub envs: Vec<(&'a str, &'a OsStr)>,
    /// A folder the guard removes once the program has stopped.
    pub remove: Option<&'a Path>,
    /// Run the guard and the program as this uid and gid (PostgreSQL refuses to run as root).
    pub owner: Option<(u32, u32)>,
}

/// A running program and the pipe whose closing stops it. Dropping it stops the program and
/// waits for it; [`Guard::keep_until_exit`] hands it to the test binary's exit instead.
pub struct Guard {
    what: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

/// The guard: starts the program, waits for its standard input to close (the test binary let it
/// go, or exited), then stops the program and waits for it. The program gets none of the files
/// the tests inherited beyond the standard three (such as the lock a `flock cargo test` holds),
/// so even a program that outlived its guard would hold nothing.
const GUARD_SCRIPT: &str = r#"remove="$1"; log="$2"; shift 2
"$@" </dev/null >>"$log" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
pid=$!
cat >/dev/null
kill -TERM "$pid" 2>/dev/null
wait "$pid"
if [ -n "$remove" ]; then rm -rf "$remove"; fi"#;

impl Guard {
    /// Runs `program args...` under a `sh` guard, its output appended to `log`.
    pub fn sh(program: &Path, args: &[String], log: &Path, options: Options<'_>) -> Guard {
        let remove = options.remove.map(Path::as_os_str).unwrap_or_default();
        let mut command = Command::new("sh");
        command.arg("-c").arg(GUARD_SCRIPT).arg("sh").arg(remove).arg(log).arg(program).args(args);
        command.stdout(Stdio::null()).stderr(Stdio::null()).env("PYTHONUNBUFFERED", "1");
        for (k, v) in &options.envs {
            command.env(k, v);
        }
        if let Some((uid, gid)) = options.owner {
            command.uid(uid).gid(gid);
        }
        Guard::spawn(command, &program.display().to_string())
    }

    /// Spawns `command`, a program that exits by itself once its standard input closes, with
    /// that input a pipe from this process. Its stdout and stderr are as `command` sets them.
    pub fn direct(command: Command, what: &str) -> Guard {
        Guard::spawn(command, what)
    }

    fn spawn(mut command: Command, what: &str) -> Guard {
        command.stdin(Stdio::piped()).process_group(0);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}; run scripts/test.sh"));
        let stdin = child.stdin.take().expect("guard stdin");
        Guard { what: what.to_string(), child: Some(child), stdin: Some(stdin) }
    }

    /// The program's standard output, if `command` piped it (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// Stops the program (closes the pipe) and waits for the guard; see [`STOP_DEADLINE`].
    pub fn stop(&mut self) {
        drop(self.stdin.take());
        if let Some(child) = self.child.take() {
            wait_bounded(child, &self.what);
        }
    }

    /// Keeps the program running until this test binary exits, then stops it and waits for it:
    /// for the servers every test of a binary shares (moto, the databases).
    ///
    /// libtest has no hook for "all tests are done", and statics are never dropped, so the
    /// stop is registered with the C library's `atexit`, which `exit` runs once `main` returns.
    #[allow(unsafe_code)]
    pub fn keep_until_exit(self) {
        static AT_EXIT: Once = Once::new();
        AT_EXIT.call_once(|| {
            extern "C" {
                fn atexit(callback: extern "C" fn()) -> std::ffi::c_int;
            }
            // SAFETY: atexit only stores the pointer to `stop_kept`, a plain function that lives
            // as long as the process and never unwinds into the C library (it catches panics).
            let registered = unsafe { atexit(stop_kept) };
            assert_eq!(registered, 0, "atexit failed");
        });
        KEPT.lock().unwrap_or_else(|e| e.into_inner()).push(self);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The guards of this test binary's shared servers.
static KEPT: Mutex<Vec<Guard>> = Mutex::new(Vec::new());

/// Run by `exit` once the tests are done: asks every shared server to stop at once, so they shut
/// down side by side, then waits for each.
extern "C" fn stop_kept() {
    let _ = std::panic::catch_unwind(|| {
        let mut kept = std::mem::take(&mut *KEPT.lock().unwrap_or_else(|e| e.into_inner()));
        for guard in &mut kept {
            drop(guard.stdin.take());
        }
        for guard in &mut kept {
            guard.stop();
        }
    });
}

/// Waits for `child`; if it has not exited after [`STOP_DEADLINE`], kills its process group
/// (the guard, the program and what the program started) and reaps it.
fn wait_bounded(mut child: Child, what: &str) {
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let what = what.to_string();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(STOP_DEADLINE).is_err() {
            eprintln!("{what} did not stop within {}s of being asked: killing its process group", STOP_DEADLINE.as_secs());
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let _ = child.wait();
    let _ = done.send(());
    let _ = watchdog.join();
}
