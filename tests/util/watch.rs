//! Waiting for what other processes do, woken by the event itself, never by a sleep: lines
//! appended to a file ([`FileWatch`], [`wait_for_line`], through inotify) and a FIFO a task
//! writes to ([`read_fifo`]). Every wait has a deadline, so a broken test fails instead of
//! hanging.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long [`wait_for_line`] waits.
const LINE_DEADLINE: Duration = Duration::from_secs(120);

/// Waits for a file that other processes append to, woken by inotify (through `notify`) rather
/// than by polling: [`FileWatch::wait`] reads what was appended since the last look and returns
/// once the caller's condition holds.
pub struct FileWatch {
    path: PathBuf,
    events: std::sync::mpsc::Receiver<()>,
    _watcher: notify::RecommendedWatcher,
    offset: u64,
    partial: String,
    /// The complete lines read so far.
    pub lines: Vec<String>,
}

impl FileWatch {
    /// Watches `path` (which may not exist yet; its folder must).
    pub fn new(path: &Path) -> FileWatch {
        use notify::Watcher;
        let (tx, events) = std::sync::mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
            let _ = tx.send(());
        })
        .expect("inotify watcher");
        let folder = path.parent().expect("file has a folder");
        watcher.watch(folder, notify::RecursiveMode::NonRecursive).expect("watch folder");
        FileWatch { path: path.to_path_buf(), events, _watcher: watcher, offset: 0, partial: String::new(), lines: Vec::new() }
    }

    /// Reads the complete lines appended since the last look into [`FileWatch::lines`].
    pub fn refresh(&mut self) {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else { return };
        let _ = file.seek(SeekFrom::Start(self.offset));
        let mut more = Vec::new();
        let _ = file.read_to_end(&mut more);
        self.offset += more.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&more));
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            self.lines.push(line.trim_end_matches('\n').to_string());
        }
    }

    /// Returns once `done` holds for the lines read so far, re-checking after each change to the
    /// file's folder. Fails after `limit` (a broken test must not hang), describing `what`.
    #[track_caller]
    pub fn wait<T>(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&[String]) -> Option<T>) -> T {
        self.wait_until(what, limit, |watch| {
            watch.refresh();
            done(&watch.lines)
        })
    }

    /// Returns once `done` holds for the whole text of the file, read again after each change to
    /// its folder: for a file that may be written anew, where a reader that kept its place would
    /// miss lines. Fails after `limit`, describing `what`.
    #[track_caller]
    pub fn wait_text<T>(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&str) -> Option<T>) -> T {
        self.wait_until(what, limit, |watch| done(&std::fs::read_to_string(&watch.path).unwrap_or_default()))
    }

    /// Looks until `look` returns a value: at once, and again after each change to the folder,
    /// for at most `limit`; then fails with what the file holds.
    #[track_caller]
    fn wait_until<T>(&mut self, what: &str, limit: Duration, mut look: impl FnMut(&mut Self) -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            // Drain the events first: a change after this look wakes the next wait.
            while self.events.try_recv().is_ok() {}
            if let Some(value) = look(self) {
                return value;
            }
            if self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_err() {
                let text = std::fs::read_to_string(&self.path).unwrap_or_default();
                panic!("waited {limit:?} for {what}; {} holds:\n{text}", self.path.display());
            }
        }
    }
}

/// Waits until the file at `path` (an attempt log, say) has a line containing `needle`, and
/// returns that line; its folder is made if missing. The whole file is read again after each
/// change: an attempt reattached after a restart writes its log anew. Fails after two minutes.
#[track_caller]
pub fn wait_for_line(path: &Path, needle: &str) -> String {
    std::fs::create_dir_all(path.parent().expect("file has a folder")).expect("make the file's folder");
    FileWatch::new(path).wait_text(&format!("{needle:?}"), LINE_DEADLINE, |text| text.lines().find(|l| l.contains(needle)).map(str::to_string))
}

/// Reads a FIFO that a task writes to. Opening a FIFO blocks until the other end opens it, so this
/// returns once the task has written; the timeout only stops a broken test from hanging.
pub fn read_fifo(path: &Path) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    let fifo = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read_to_string(&fifo));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(text) => text.expect("read FIFO"),
        Err(_) => panic!("nothing was written to the FIFO {} within 60s", path.display()),
    }
}
