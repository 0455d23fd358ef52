//! Attempt logs: `logs/<dag>/<run>/<task>/<attempt>.log`, written by one background thread so
//! file creation and writes never sit on the executor's path between two tasks.
//!
//! Each line starts with a UTC timestamp. Output of the task follows ` | `; flowctl's own lines
//! follow ` flowctl: `, and the last line of every attempt is `flowctl: attempt N ended: STATE`,
//! which `flowctl logs --follow` waits for. Secrets are masked before a line is queued.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;

use chrono::{SecondsFormat, Utc};

use crate::operator::LogSink;
use crate::secrets::Masker;

/// The words that start the last line of an attempt log, before its number.
pub const ATTEMPT_END_MARKER: &str = " flowctl: attempt ";

/// Whether `line` is the last line of an attempt log: ` flowctl: attempt N ended: STATE`.
pub fn is_end_line(line: &str) -> bool {
    line.split_once(ATTEMPT_END_MARKER)
        .and_then(|(_, rest)| rest.split_once(' '))
        .is_some_and(|(number, rest)| number.parse::<u32>().is_ok() && rest.starts_with("ended: "))
}

enum Op {
    Open { id: u64, path: PathBuf },
    Line { id: u64, text: String },
    Close { id: u64 },
    Sync { done: mpsc::Sender<()> },
}

/// The background writer. Dropping the last handle ends the thread after it writes what was queued.
#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Op>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
    masker: Masker,
}

impl LogWriter {
    /// Starts the writer thread.
    pub fn start(masker: Masker) -> LogWriter {
        let (tx, rx) = mpsc::channel::<Op>();
        std::thread::Builder::new()
            .name("flowctl-logs".into())
            .spawn(move || {
                let mut files: HashMap<u64, File> = HashMap::new();
                for op in rx {
                    match op {
                        Op::Open { id, path } => {
                            if let Some(parent) = path.parent() {
                                let _ = std::fs::create_dir_all(parent);
                            }
                            // Appended to, never truncated: an attempt that reattaches after a
                            // restart keeps the lines its first process wrote (the job it submitted).
                            match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
                                Ok(f) => {
                                    files.insert(id, f);
                                }
                                Err(e) => tracing::error!(path = %path.display(), error = %e, "cannot create attempt log"),
                            }
                        }
                        Op::Line { id, text } => {
                            if let Some(f) = files.get_mut(&id) {
                                let _ = f.write_all(text.as_bytes());
                            }
                        }
                        Op::Close { id } => {
                            files.remove(&id);
                        }
                        Op::Sync { done } => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .ok();
        LogWriter { tx, next_id: Arc::new(std::sync::atomic::AtomicU64::new(1)), masker }
    }

    /// Opens an attempt's log. The file is created with the first line worth keeping: a line the
    /// task writes, its rendered settings, or an error. An attempt that has none of these (a
    /// `noop`) leaves no file, as Airflow's EmptyOperator leaves no log.
    pub fn open(&self, path: PathBuf) -> AttemptLog {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        AttemptLog {
            id,
            tx: self.tx.clone(),
            masker: self.masker.clone(),
            pending: std::sync::Mutex::new(Some((path, String::new()))),
        }
    }

    /// Waits until everything queued so far is written.
    pub fn sync(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Op::Sync { done }).is_ok() {
            let _ = wait.recv();
        }
    }
}

/// One attempt's log.
pub struct AttemptLog {
    id: u64,
    tx: mpsc::Sender<Op>,
    masker: Masker,
    /// Until the file is opened: its path and the header lines written so far.
    pending: std::sync::Mutex<Option<(PathBuf, String)>>,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl AttemptLog {
    /// Queues text for the file, opening it first if `keep` says the text is worth a file.
    fn send(&self, text: String, keep: bool) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.as_mut() {
            Some((_, header)) if !keep => header.push_str(&text),
            Some(_) => {
                if let Some((path, header)) = pending.take() {
                    let _ = self.tx.send(Op::Open { id: self.id, path });
                    let _ = self.tx.send(Op::Line { id: self.id, text: header + &text });
                }
            }
            None => {
                let _ = self.tx.send(Op::Line { id: self.id, text });
            }
        }
    }

    /// A line of flowctl's own; `keep` makes it worth a file on its own (settings, errors).
    pub fn engine_line(&self, text: &str, keep: bool) {
        let masked = self.masker.mask(text);
        let lines: String = masked.lines().map(|l| format!("{} flowctl: {l}\n", now())).collect();
        self.send(lines, keep);
    }

    /// Writes the last line and closes the file; `keep` forces a file (the attempt failed).
    pub fn close(&self, attempt: u32, state: &str, keep: bool) {
        // Masked like every other line, and one line, so it stays the last line of the file: a
        // multi-line error (a shell task's stderr tail) is in the log above and in `flowctl status`.
        let masked = self.masker.mask(state);
        let first = masked.lines().next().unwrap_or_default();
        self.send(format!("{}{ATTEMPT_END_MARKER}{attempt} ended: {first}\n", now()), keep);
        if self.pending.lock().map(|p| p.is_none()).unwrap_or(true) {
            let _ = self.tx.send(Op::Close { id: self.id });
        }
    }
}

impl LogSink for AttemptLog {
    fn line(&self, text: &str) {
        self.send(format!("{} | {}\n", now(), self.masker.mask(text)), true);
    }
}
