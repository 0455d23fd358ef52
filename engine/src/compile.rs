//! Compile: DAG files in, validated DAGs out, or every problem with its place.
//!
//! Compile is the only way a DAG enters flowctl (`validate`, `apply`, `run FILE`, the server's
//! folder watch all call it), so every check lives here and runs before anything else sees a DAG.
//! It never stops at the first problem: each file is checked key by key, each task on its own, and
//! problems across files (duplicate DAG ids) are found after all files are read. It never panics,
//! on any input; a property test feeds it arbitrary bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::Value;

use crate::dag::{
    AlertEvent, Alerts, Backoff, Dag, EmailAlert, RetryPolicy, Task, TriggerRule, WebhookAlert, WebhookFormat,
};
use crate::diagnostic::{list_names, suggestion, Diagnostic};
use crate::graph::TaskGraph;
use crate::operator::Registry;
use crate::schedule::Schedule;
use crate::template;
use crate::yaml::{self, Node, NodeKind, Pos, Scalar};

/// The keys a DAG file may have at its top level.
pub const DAG_KEYS: &[&str] = &[
    "dag",
    "description",
    "schedule",
    "timezone",
    "start_date",
    "end_date",
    "catchup",
    "max_active_runs",
    "max_active_tasks",
    "params",
    "defaults",
    "alerts",
    "retention",
    "tasks",
];
/// The keys of `retention:`.
pub const RETENTION_KEYS: &[&str] = &["runs", "days"];
/// The keys of a task.
pub const TASK_KEYS: &[&str] = &[
    "id",
    "operator",
    "description",
    "with",
    "depends_on",
    "trigger_rule",
    "retries",
    "retry_delay",
    "retry_backoff",
    "max_retry_delay",
    "timeout",
    "alerts",
];
/// The keys of `defaults:`.
pub const DEFAULTS_KEYS: &[&str] = &["retries", "retry_delay", "retry_backoff", "max_retry_delay", "timeout"];
/// The keys of `alerts:`.
pub const ALERTS_KEYS: &[&str] = &["email", "webhook"];
/// The keys of `alerts.email:`.
pub const EMAIL_KEYS: &[&str] = &["to", "on"];
/// The keys of `alerts.webhook:`.
pub const WEBHOOK_KEYS: &[&str] = &["urls", "format", "on"];

// The bounds of the DAG format. Compile enforces each one with an error that names it, so a file
// that passes compile can be stored, scheduled, run and shown; docs/dag-format.md ("Limits")
// lists them. The reader's own bounds (nesting depth, alias expansion) are in `yaml`.

/// The largest DAG file compile reads: 1 MiB. A real DAG is a few kilobytes; a generated one with
/// thousands of tasks stays well below this.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The most tasks one DAG may have.
pub const MAX_TASKS: usize = 10_000;
/// The longest DAG id or task id, in characters. Ids become folder and file names
/// (`logs/<dag>/<run>/<task>/<try>.log`, `work/<dag>/<run>/<task>.<try>.output`), whose parts a
/// file system allows 255 bytes each; 128 leaves room for what flowctl adds around an id.
pub const MAX_ID_LEN: usize = 128;
/// The most errors compile lists for one file (and, separately, the most warnings); one more line
/// says how many more it found.
pub const MAX_DIAGNOSTICS_PER_FILE: usize = 100;
/// The most retries a task may have.
pub const MAX_RETRIES: i64 = 100;
/// The largest `max_active_runs`.
pub const MAX_ACTIVE_RUNS: i64 = 1_000;
/// The largest `max_active_tasks`.
pub const MAX_ACTIVE_TASKS: i64 = 10_000;
/// The largest `retention.runs`.
pub const MAX_RETENTION_RUNS: i64 = 1_000_000;
/// The largest `retention.days`: about a hundred years.
pub const MAX_RETENTION_DAYS: i64 = 36_500;
/// The longest `retry_delay`, `max_retry_delay` and `timeout`: 30 days.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// [`MAX_DURATION`] as users write it.
pub const MAX_DURATION_TEXT: &str = "30d";

/// One DAG file's name and bytes.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path, as the user named it (diagnostics print it).
    pub path: PathBuf,
    /// The raw bytes: UTF-8 is checked by compile.
    pub bytes: Vec<u8>,
}

/// What a successful compile returns.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The DAGs, in file order.
    pub dags: Vec<Dag>,
    /// Problems that do not stop the DAGs from working.
    pub warnings: Vec<Diagnostic>,
}

/// Collects the DAG files under `paths`: files as given, folders searched recursively for
/// `*.yaml` and `*.yml`, sorted so results are stable. A path that cannot be read is reported
/// beside the files that were found, so one typo does not hide the rest.
pub fn discover(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) => {
                errors.push(
                    Diagnostic::error(path, Pos { line: 1, col: 1 }, format!("cannot read: {e}"))
                        .with_hint("check the path; flowctl takes DAG files or folders of them"),
                );
                continue;
            }
        };
        if meta.is_dir() {
            let mut found = Vec::new();
            if let Err(e) = walk(path, &mut found) {
                errors.push(Diagnostic::error(path, Pos { line: 1, col: 1 }, format!("cannot read folder: {e}")));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    (files, errors)
}

/// Collects the DAG files under `dir`, each folder once: a symbolic link back to a folder above
/// (`dags/loop -> ..`) is visited only the first time, so a loop neither recurses without end nor
/// finds every file again at each turn.
fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut visited = std::collections::HashSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        if !visited.insert(std::fs::canonicalize(&folder)?) {
            continue;
        }
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                found.push(path);
            }
        }
    }
    Ok(())
}

/// Reads one DAG file within [`MAX_FILE_BYTES`]: a larger file, or anything that is not a regular
/// file (a FIFO would block the reader forever, a device would never end), is refused before any of
/// it is read.
pub fn read_source(path: &Path) -> Result<SourceFile, Box<Diagnostic>> {
    use std::io::Read;
    let start = Pos { line: 1, col: 1 };
    let cannot_read = |e: std::io::Error| Box::new(Diagnostic::error(path, start, format!("cannot read: {e}")));
    let meta = std::fs::metadata(path).map_err(cannot_read)?;
    if !meta.is_file() {
        return Err(Box::new(
            Diagnostic::error(path, start, "cannot read: not a regular file")
                .with_hint("a DAG file is a regular .yaml or .yml file; remove or rename this one"),
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Box::new(too_large(path, meta.len(), true)));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path).and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)).map_err(cannot_read)?;
    // The file may have grown since it was measured.
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Box::new(too_large(path, bytes.len() as u64, false)));
    }
    Ok(SourceFile { path: path.to_path_buf(), bytes })
}

/// The first character YAML does not allow in a file (outside the printable set of YAML 1.2,
/// section 5.1: tab, line breaks, and everything from space on except DEL, the C1 controls other
/// than NEL, U+FFFE and U+FFFF), with its place.
fn first_unprintable(source: &str) -> Option<(Pos, char)> {
    let printable = |c: char| {
        matches!(c, '\t' | '\n' | '\r' | '\u{85}')
            || (' '..='\u{7e}').contains(&c)
            || ('\u{a0}'..='\u{fffd}').contains(&c)
            || c >= '\u{10000}'
    };
    let (mut line, mut col) = (1, 1);
    for c in source.chars() {
        if !printable(c) {
            return Some((Pos { line, col }, c));
        }
        if c == '\n' {
            line += 1;
            col = 1;
        } else {
            col += 1;
        }
    }
    None
}

/// The error for a file of `size` bytes (or, when not `exact`, at least that many).
fn too_large(path: &Path, size: u64, exact: bool) -> Diagnostic {
    let at_least = if exact { "" } else { "at least " };
    Diagnostic::error(
        path,
        Pos { line: 1, col: 1 },
        format!("file is {at_least}{size} bytes, more than the {MAX_FILE_BYTES} bytes (1 MiB) a DAG file may have"),
    )
    .with_hint("split the pipeline into several DAG files; a DAG needing this much YAML is likely generated and can be generated smaller")
}

/// Reads and compiles the DAG files under `paths` (see [`discover`]).
pub fn compile_paths(paths: &[PathBuf], registry: &Registry) -> Result<Compiled, Vec<Diagnostic>> {
    let (files, mut errors) = discover(paths);
    let mut sources = Vec::with_capacity(files.len());
    for path in files {
        match read_source(&path) {
            Ok(source) => sources.push(source),
            Err(e) => errors.push(*e),
        }
    }
    match compile(&sources, registry) {
        Ok(compiled) if errors.is_empty() => Ok(compiled),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Compiles DAG files: every DAG and warning, or every error of every file.
pub fn compile(files: &[SourceFile], registry: &Registry) -> Result<Compiled, Vec<Diagnostic>> {
    let results = compile_each(files, registry);
    let mut dags = Vec::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut seen: HashMap<String, (PathBuf, Pos)> = HashMap::new();
    for (dag, id_pos, mut diags) in results {
        if let Some((dag, id_pos)) = dag.zip(id_pos) {
            if let Some((first_file, first_pos)) = seen.get(&dag.id) {
                diags.push(
                    Diagnostic::error(
                        &dag.file,
                        id_pos,
                        format!(
                            "DAG id \"{}\" is already used by {}:{}:{}",
                            dag.id,
                            first_file.display(),
                            first_pos.line,
                            first_pos.col
                        ),
                    )
                    .with_hint("DAG ids must be unique across all files: rename one of them"),
                );
            } else {
                seen.insert(dag.id.clone(), (dag.file.clone(), id_pos));
                dags.push(dag);
            }
        }
        for d in diags {
            match d.severity {
                crate::diagnostic::Severity::Error => errors.push(d),
                crate::diagnostic::Severity::Warning => warnings.push(d),
            }
        }
    }
    if errors.is_empty() {
        Ok(Compiled { dags, warnings })
    } else {
        Err(errors)
    }
}

type FileResult = (Option<Dag>, Option<Pos>, Vec<Diagnostic>);

/// Files are independent until the duplicate-id check, so large folders compile on every core.
fn compile_each(files: &[SourceFile], registry: &Registry) -> Vec<FileResult> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(files.len().max(1));
    if workers <= 1 || files.len() < 16 {
        let env = template::environment();
        return files.iter().map(|f| compile_file(f, registry, &env)).collect();
    }
    let chunk = files.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                let handle = scope.spawn(move || {
                    let env = template::environment();
                    part.iter().map(|f| compile_file(f, registry, &env)).collect::<Vec<_>>()
                });
                (part, handle)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(part, handle)| {
                // Compile never panics; should it ever, the files of that thread fail loudly
                // instead of dropping out of the result as if they were not there.
                handle.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|f| {
                            let d = Diagnostic::error(&f.path, Pos { line: 1, col: 1 }, "compile failed unexpectedly on this file")
                                .with_hint("this is a bug in flowctl: please report it with the file");
                            (None, None, vec![d])
                        })
                        .collect()
                })
            })
            .collect()
    })
}

/// Checks one file. Returns the DAG when the file has no error, the position of its `dag:` value,
/// and its diagnostics.
fn compile_file(file: &SourceFile, registry: &Registry, env: &minijinja::Environment<'_>) -> FileResult {
    let mut cx = Checker::new(&file.path);
    let (dag, id_pos) = check_file(&mut cx, file, registry, env);
    let diags = cx.finish();
    let has_errors = diags.iter().any(|d| d.severity == crate::diagnostic::Severity::Error);
    (if has_errors { None } else { dag }, id_pos, diags)
}

fn check_file(
    cx: &mut Checker<'_>,
    file: &SourceFile,
    registry: &Registry,
    env: &minijinja::Environment<'_>,
) -> (Option<Dag>, Option<Pos>) {
    if file.bytes.len() as u64 > MAX_FILE_BYTES {
        cx.diags.push(too_large(&file.path, file.bytes.len() as u64, true));
        cx.errors += 1;
        return (None, None);
    }
    let source = match std::str::from_utf8(&file.bytes) {
        Ok(s) => s,
        Err(e) => {
            let valid = String::from_utf8_lossy(&file.bytes[..e.valid_up_to()]).into_owned();
            let line = valid.matches('\n').count() + 1;
            let col = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            cx.error(
                Pos { line, col },
                format!("file is not valid UTF-8 (byte offset {})", e.valid_up_to()),
                Some("save the file as UTF-8"),
            );
            return (None, None);
        }
    };
    // Editors on Windows may start a UTF-8 file with a byte order mark; it is not part of the YAML.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    if let Some((pos, c)) = first_unprintable(source) {
        // The YAML reader stops at a NUL as if the file ended there, which would hide the rest of
        // the file; every other control character is as invisible in an editor.
        cx.error(
            pos,
            format!("file holds the control character U+{:04X}; YAML allows only printable characters", u32::from(c)),
            Some("remove it; inside a double-quoted string, write it as an escape such as \"\\x07\" if the value needs it"),
        );
        return (None, None);
    }
    let docs = match yaml::parse(source) {
        Ok(docs) => docs,
        Err(e) => {
            let hint = if let Some(hint) = &e.hint {
                hint.as_str()
            } else if e.message.starts_with("unknown alias") {
                "define the anchor (`&name`) on a node above the alias (`*name`) that copies it"
            } else if e.message.starts_with("mapping values are not allowed") {
                "check the indentation: keys of one mapping start in the same column; quote values that hold \": \""
            } else {
                "check the indentation and quoting here"
            };
            cx.error(e.pos, format!("invalid YAML: {}", e.message), Some(hint));
            return (None, None);
        }
    };
    if docs.roots.len() > 1 {
        let pos = docs.starts.get(1).copied().unwrap_or_default();
        cx.error(
            pos,
            format!("file holds {} YAML documents; a DAG file holds exactly one DAG", docs.roots.len()),
            Some("split the documents into one file each"),
        );
        return (None, None);
    }
    let root = match docs.roots.into_iter().next() {
        Some(root) if !matches!(root.kind, NodeKind::Scalar(Scalar::Null)) => root,
        _ => {
            let only_comments = source.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
            let message = if source.trim().is_empty() {
                "file is empty"
            } else if only_comments {
                "file holds only comments, no DAG"
            } else {
                "file holds an empty YAML document, no DAG"
            };
            cx.error(Pos { line: 1, col: 1 }, message, Some("a DAG file needs at least `dag:` and `tasks:`"));
            return (None, None);
        }
    };
    if root.as_map().is_none() {
        cx.error(
            root.pos,
            format!("a DAG file must be a mapping with `dag:` and `tasks:`, found {}", root.type_name()),
            Some("a file holds one DAG: write its keys at the top level, without a leading `- `"),
        );
        return (None, None);
    }
    for problem in &docs.problems {
        cx.yaml_problem(&root, problem);
    }
    let dag = cx.dag(&root, source, registry, env);
    let id_pos = root.get("dag").map(|(_, v)| v.pos);
    (dag, id_pos)
}

/// Accumulates one file's diagnostics while its keys are read, listing at most
/// [`MAX_DIAGNOSTICS_PER_FILE`] errors and as many warnings: a file of thousands of mistakes is
/// fixed a hundred at a time, and its report stays small whatever the file holds.
struct Checker<'f> {
    file: &'f Path,
    diags: Vec<Diagnostic>,
    /// The task being checked, named in each diagnostic.
    task: Option<String>,
    /// Errors found, listed or not.
    errors: usize,
    /// Warnings found, listed or not.
    warnings: usize,
    /// Where the first error and the first warning that were not listed are.
    first_omitted: [Option<Pos>; 2],
}

/// A task's settings as read, before defaults and graph checks.
struct TaskDraft<'n> {
    node: &'n Node,
    id: String,
    id_pos: Pos,
    operator: Option<String>,
    description: Option<String>,
    with: Option<&'n Node>,
    depends_on: Vec<(String, Pos)>,
    trigger_rule: TriggerRule,
    settings: TaskSettings,
    alerts: Option<Alerts>,
}

/// The settings `defaults:` may give and tasks may override.
#[derive(Default, Clone, Copy)]
struct TaskSettings {
    retries: Option<u32>,
    retry_delay: Option<Duration>,
    retry_backoff: Option<Backoff>,
    max_retry_delay: Option<Duration>,
    timeout: Option<Duration>,
}

impl TaskSettings {
    fn or(self, defaults: TaskSettings) -> TaskSettings {
        TaskSettings {
            retries: self.retries.or(defaults.retries),
            retry_delay: self.retry_delay.or(defaults.retry_delay),
            retry_backoff: self.retry_backoff.or(defaults.retry_backoff),
            max_retry_delay: self.max_retry_delay.or(defaults.max_retry_delay),
            timeout: self.timeout.or(defaults.timeout),
        }
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

impl<'f> Checker<'f> {
    fn new(file: &'f Path) -> Self {
        Checker { file, diags: Vec::new(), task: None, errors: 0, warnings: 0, first_omitted: [None, None] }
    }

    /// Whether another error would still be listed. Checks whose message costs work (a "did you
    /// mean" among thousands of tasks) ask first, so a file of many mistakes stays quick.
    fn room(&self) -> bool {
        self.errors < MAX_DIAGNOSTICS_PER_FILE
    }

    fn error(&mut self, pos: Pos, message: impl Into<String>, hint: Option<&str>) {
        self.errors += 1;
        if self.errors > MAX_DIAGNOSTICS_PER_FILE {
            self.first_omitted[0].get_or_insert(pos);
            return;
        }
        self.diags.push(Diagnostic::error(self.file, pos, message).in_task(self.task.as_deref()).with_hint_opt(hint));
    }

    /// An error whose message is only written when it will be listed.
    fn error_with(&mut self, pos: Pos, describe: impl FnOnce() -> (String, Option<String>)) {
        if self.room() {
            let (message, hint) = describe();
            self.error(pos, message, hint.as_deref());
        } else {
            self.error(pos, String::new(), None);
        }
    }

    fn warning(&mut self, pos: Pos, message: impl Into<String>, hint: Option<&str>) {
        self.warnings += 1;
        if self.warnings > MAX_DIAGNOSTICS_PER_FILE {
            self.first_omitted[1].get_or_insert(pos);
            return;
        }
        self.diags.push(Diagnostic::warning(self.file, pos, message).in_task(self.task.as_deref()).with_hint_opt(hint));
    }

    /// The file's diagnostics in the order of the file, then one line for each kind of which more
    /// were found than listed.
    fn finish(mut self) -> Vec<Diagnostic> {
        self.diags.sort_by_key(|d| (d.line, d.column));
        let omitted = [
            (self.errors.saturating_sub(MAX_DIAGNOSTICS_PER_FILE), "error"),
            (self.warnings.saturating_sub(MAX_DIAGNOSTICS_PER_FILE), "warning"),
        ];
        for (i, (count, kind)) in omitted.into_iter().enumerate() {
            if count == 0 {
                continue;
            }
            let pos = self.first_omitted[i].unwrap_or_default();
            let plural = if count == 1 { "" } else { "s" };
            let message = format!(
                "{count} more {kind}{plural} in this file not shown (the first {MAX_DIAGNOSTICS_PER_FILE} are), the next one here"
            );
            let d = if i == 0 { Diagnostic::error(self.file, pos, message) } else { Diagnostic::warning(self.file, pos, message) };
            let mut d = d.with_hint(format!(
                "compile lists at most {MAX_DIAGNOSTICS_PER_FILE} {kind}s per file: fix these and check again"
            ));
            d.omitted = count;
            self.diags.push(d);
        }
        self.diags
    }

    /// Reports a mistake the YAML reader left out of the tree, naming the mapping that holds it
    /// (and the task, for a mapping inside one).
    fn yaml_problem(&mut self, root: &Node, problem: &yaml::Problem) {
        use yaml::PathSegment;
        let (task, rest) = match problem.path.as_slice() {
            [PathSegment::Key(tasks), PathSegment::Index(i), rest @ ..] if tasks == "tasks" => {
                let id = root
                    .get("tasks")
                    .and_then(|(_, v)| v.as_seq())
                    .and_then(|items| items.get(*i))
                    .and_then(|t| t.get("id"))
                    .and_then(|(_, v)| v.scalar_text())
                    .filter(|id| valid_id(id));
                (Some(id), rest)
            }
            path => (None, path),
        };
        let what = match (&task, rest) {
            (None, []) => "a DAG file".to_string(),
            (Some(_), []) => "a task".to_string(),
            (_, path) => format!("`{}:`", yaml::path_text(path)),
        };
        let saved = self.task.take();
        self.task = task.flatten();
        match &problem.kind {
            yaml::ProblemKind::DuplicateKey { key, first } => self.error(
                problem.pos,
                format!("duplicate key \"{key}\" in {what} (first set at line {})", first.line),
                Some("a key may appear once: remove one of them"),
            ),
            yaml::ProblemKind::CollectionKey { found } => self.error(
                problem.pos,
                format!("keys of {what} must be strings, found {found}"),
                Some("write the key as a plain name; a `? ` or `[...]:` key is a YAML mapping or list"),
            ),
        }
        self.task = saved;
    }

    /// The entries of a mapping, with unknown and duplicate keys reported. `what` names the
    /// mapping in messages ("a task", "`defaults:`").
    fn entries<'n>(&mut self, node: &'n Node, known: &[&str], what: &str) -> Vec<(&'n str, Pos, &'n Node)> {
        let Some(map) = node.as_map() else {
            self.error(node.pos, format!("{what} must be a mapping, found {}", node.type_name()), None);
            return Vec::new();
        };
        // The YAML reader already reported and dropped duplicate keys, in every mapping.
        let mut out = Vec::new();
        for (key, value) in map {
            let Some(name) = key.as_str() else {
                self.error(key.pos, format!("keys of {what} must be strings, found {}", key.type_name()), None);
                continue;
            };
            if !known.contains(&name) {
                self.error_with(key.pos, || {
                    (
                        format!("unknown key \"{name}\" in {what}{}", suggestion(name, known.iter().copied())),
                        Some(format!("valid keys: {}", known.join(", "))),
                    )
                });
                continue;
            }
            out.push((name, key.pos, value));
        }
        out
    }

    fn string(&mut self, key: &str, node: &Node) -> Option<String> {
        match node.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                let hint = (node.as_map().is_some()).then_some(
                    "a value that starts with { is a YAML mapping: put quotes around templates, e.g. \"{{ ds }}\"",
                );
                self.error(node.pos, format!("\"{key}\" must be a string, found {}", node.type_name()), hint);
                None
            }
        }
    }

    fn bool(&mut self, key: &str, node: &Node) -> Option<bool> {
        match node.kind {
            NodeKind::Scalar(Scalar::Bool(b)) => Some(b),
            _ => {
                let yaml11 = node.as_str().is_some_and(|s| {
                    ["yes", "no", "on", "off", "y", "n"].contains(&s.to_ascii_lowercase().as_str())
                });
                let hint = yaml11.then_some("write true or false: flowctl reads YAML 1.2, where yes/no/on/off are strings");
                self.error(node.pos, format!("\"{key}\" must be true or false, found {}", node.type_name()), hint);
                None
            }
        }
    }

    /// A whole number in `min..=max`. Every integer of the format has a maximum, so a value that
    /// would wrap, overflow a date or ask for a billion retries is an error that names the range.
    fn count(&mut self, key: &str, node: &Node, min: i64, max: i64) -> Option<u32> {
        let range_hint = || format!("use a whole number from {min} to {max}");
        match node.kind {
            NodeKind::Scalar(Scalar::Int(i)) if (min..=max).contains(&i) => u32::try_from(i).ok(),
            NodeKind::Scalar(Scalar::Int(i)) if i < min => {
                self.error(node.pos, format!("\"{key}\" must be at least {min}, found {i}"), Some(&range_hint()));
                None
            }
            NodeKind::Scalar(Scalar::Int(i)) => {
                self.error(node.pos, format!("\"{key}\" must be at most {max}, found {i}"), Some(&range_hint()));
                None
            }
            // A whole number beyond 64 bits is read as a float; it is still a number too large.
            NodeKind::Scalar(Scalar::Float(f)) if f.is_finite() && f.fract() == 0.0 && f.abs() >= 9.2e18 => {
                let (bound, word) = if f < 0.0 { (min, "least") } else { (max, "most") };
                self.error(node.pos, format!("\"{key}\" must be at {word} {bound}, found {f:.0}"), Some(&range_hint()));
                None
            }
            _ => {
                self.error(
                    node.pos,
                    format!("\"{key}\" must be a whole number, found {}", node.type_name()),
                    Some(&format!("write a number without quotes, e.g. `{key}: {}`", min.max(2).min(max))),
                );
                None
            }
        }
    }

    /// A duration up to [`MAX_DURATION`]; `zero` says whether `0s` means something for `key`.
    fn duration(&mut self, key: &str, node: &Node, zero: bool) -> Option<Duration> {
        let hint = "write a duration such as 30s, 10m, 2h or 1h 30m";
        let Some(text) = node.as_str() else {
            if let NodeKind::Scalar(Scalar::Int(n)) = node.kind {
                self.error(
                    node.pos,
                    format!("\"{key}\" must be a duration with a unit, found the bare number {n}"),
                    Some(&format!("add a unit, e.g. \"{n}s\" or \"{n}m\"")),
                );
            } else {
                self.error(node.pos, format!("\"{key}\" must be a duration, found {}", node.type_name()), Some(hint));
            }
            return None;
        };
        let too_long = |cx: &mut Self| {
            cx.error(
                node.pos,
                format!("\"{key}\" must be at most {MAX_DURATION_TEXT} (30 days), found \"{text}\""),
                Some(&format!("use a duration up to {MAX_DURATION_TEXT}")),
            );
        };
        if text.trim_start().starts_with('-') {
            self.error(node.pos, format!("\"{key}\" must not be negative, found \"{text}\""), Some(hint));
            return None;
        }
        match humantime::parse_duration(text) {
            Ok(d) if d > MAX_DURATION => {
                too_long(self);
                None
            }
            Ok(d) if d.is_zero() && !zero => {
                self.error(
                    node.pos,
                    format!("\"{key}\" must be longer than 0s, found \"{text}\""),
                    Some(&format!("leave \"{key}\" out for no limit, or give the longest an attempt may run, e.g. 1h")),
                );
                None
            }
            Ok(d) => Some(d),
            Err(humantime::DurationError::NumberOverflow) => {
                too_long(self);
                None
            }
            Err(humantime::DurationError::UnknownUnit { unit, .. }) if !unit.is_empty() => {
                const UNITS: &[&str] = &[
                    "ms", "s", "sec", "seconds", "second", "m", "min", "minutes", "minute", "h", "hours", "hour", "d",
                    "days", "day", "w", "weeks", "week",
                ];
                let guess = suggestion(&unit, UNITS.iter().copied());
                self.error(node.pos, format!("invalid duration \"{text}\" for \"{key}\": unknown unit \"{unit}\"{guess}"), Some(hint));
                None
            }
            Err(e) => {
                self.error(node.pos, format!("invalid duration \"{text}\" for \"{key}\": {e}"), Some(hint));
                None
            }
        }
    }

    fn choice<T: Copy>(&mut self, key: &str, node: &Node, choices: &[(T, &'static str)]) -> Option<T> {
        let names: Vec<&str> = choices.iter().map(|(_, n)| *n).collect();
        let Some(text) = node.as_str() else {
            self.error(
                node.pos,
                format!("\"{key}\" must be one of {}, found {}", names.join(", "), node.type_name()),
                None,
            );
            return None;
        };
        if let Some((value, _)) = choices.iter().find(|(_, n)| *n == text) {
            return Some(*value);
        }
        self.error(
            node.pos,
            format!("invalid {key} \"{text}\"{}", suggestion(text, names.iter().copied())),
            Some(&format!("use one of: {}", names.join(", "))),
        );
        None
    }

    fn string_list(&mut self, key: &str, node: &Node) -> Vec<(String, Pos)> {
        let Some(items) = node.as_seq() else {
            self.error(
                node.pos,
                format!("\"{key}\" must be a list, found {}", node.type_name()),
                Some(&format!("write a list, e.g. `{key}: [a, b]`")),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match item.as_str() {
                Some(s) => out.push((s.to_string(), item.pos)),
                None => self.error(item.pos, format!("items of \"{key}\" must be strings, found {}", item.type_name()), None),
            }
        }
        out
    }

    fn date(&mut self, key: &str, node: &Node, tz: Tz) -> Option<DateTime<Utc>> {
        let hint = "write a date (2024-01-31) or an RFC 3339 timestamp (2024-01-31T06:00:00Z)";
        let Some(text) = node.scalar_text() else {
            self.error(node.pos, format!("\"{key}\" must be a date, found {}", node.type_name()), Some(hint));
            return None;
        };
        if let Ok(t) = DateTime::parse_from_rfc3339(&text) {
            return Some(t.with_timezone(&Utc));
        }
        let local = NaiveDate::parse_from_str(&text, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .or_else(|| NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S").ok())
            .or_else(|| NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S").ok());
        match local.map(|l| tz.from_local_datetime(&l).earliest()) {
            Some(Some(t)) => Some(t.with_timezone(&Utc)),
            Some(None) => {
                self.error(node.pos, format!("\"{key}\" {text} does not exist in time zone {tz}"), Some(hint));
                None
            }
            None => {
                let no_such_day = NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                    .is_err_and(|e| e.kind() == chrono::format::ParseErrorKind::OutOfRange);
                let why = if no_such_day { ": there is no such day" } else { "" };
                self.error(node.pos, format!("invalid date \"{text}\" for \"{key}\"{why}"), Some(hint));
                None
            }
        }
    }

    fn id(&mut self, what: &str, node: &Node) -> Option<String> {
        let text = match node.scalar_text() {
            Some(t) => t,
            None => {
                self.error(node.pos, format!("{what} id must be a string, found {}", node.type_name()), None);
                return None;
            }
        };
        let length = text.chars().count();
        if length > MAX_ID_LEN {
            let shown: String = text.chars().take(32).collect();
            self.error(
                node.pos,
                format!("{what} id \"{shown}...\" is {length} characters long; an id may have at most {MAX_ID_LEN}"),
                Some("shorten it: ids become folder and file names (logs/<dag>/<run>/<task>/<try>.log), which file systems keep short"),
            );
            None
        } else if valid_id(&text) {
            Some(text)
        } else {
            self.error(
                node.pos,
                format!("invalid {what} id \"{text}\": use only lower-case letters, digits, \"_\" and \"-\""),
                Some(&format!("for example \"{}\"", suggest_id(&text))),
            );
            None
        }
    }

    fn settings(&mut self, key: &str, node: &Node, settings: &mut TaskSettings) {
        match key {
            "retries" => settings.retries = self.count(key, node, 0, MAX_RETRIES),
            "retry_delay" => settings.retry_delay = self.duration(key, node, true),
            "max_retry_delay" => settings.max_retry_delay = self.duration(key, node, true),
            "timeout" => settings.timeout = self.duration(key, node, false),
            "retry_backoff" => {
                settings.retry_backoff =
                    self.choice(key, node, &[(Backoff::Fixed, "fixed"), (Backoff::Exponential, "exponential")]);
            }
            _ => {}
        }
    }

    fn alert_events(&mut self, node: &Node, what: &str) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        for (name, pos) in self.string_list("on", node) {
            match AlertEvent::ALL.iter().find(|(_, n)| *n == name) {
                Some((event, _)) => events.push(*event),
                None => {
                    let names = AlertEvent::ALL.iter().map(|(_, n)| *n);
                    self.error(
                        pos,
                        format!("unknown alert event \"{name}\" in {what}{}", suggestion(&name, names.clone())),
                        Some(&format!("use any of: {}", names.collect::<Vec<_>>().join(", "))),
                    );
                }
            }
        }
        events
    }

    /// Reports a list that the mapping `node` (whose key is at `key_pos`) must hold and not leave
    /// empty. Wrong types were reported when the entries were read.
    fn require_list(&mut self, node: &Node, key_pos: Pos, key: &str, what: &str, hint: &str) {
        if node.as_map().is_none() {
            return;
        }
        match node.get(key) {
            None => self.error(key_pos, format!("missing required key \"{key}\" in {what}"), Some(hint)),
            Some((_, v)) if v.as_seq().is_some_and(<[Node]>::is_empty) => {
                self.error(v.pos, format!("\"{key}\" in {what} is empty"), Some(hint));
            }
            Some(_) => {}
        }
    }

    fn alerts(&mut self, node: &Node) -> Alerts {
        let mut alerts = Alerts::default();
        for (key, key_pos, value) in self.entries(node, ALERTS_KEYS, "`alerts:`") {
            match key {
                "email" => {
                    let mut email = EmailAlert { to: Vec::new(), on: vec![AlertEvent::Failure] };
                    for (k, _, v) in self.entries(value, EMAIL_KEYS, "`alerts.email:`") {
                        match k {
                            "to" => {
                                let list = if v.as_str().is_some() {
                                    vec![(v.as_str().unwrap_or_default().to_string(), v.pos)]
                                } else {
                                    self.string_list("to", v)
                                };
                                for (address, pos) in list {
                                    if !address.contains('@') {
                                        self.error(
                                            pos,
                                            format!("\"{address}\" in alerts.email.to is not an email address"),
                                            Some("write addresses as name@example.com"),
                                        );
                                    }
                                    email.to.push(address);
                                }
                            }
                            "on" => email.on = self.alert_events(v, "alerts.email.on"),
                            _ => {}
                        }
                    }
                    // Without `to:`, the config file's `alerts.to` receive the mail; an empty list
                    // is a mistake, not a way to say so.
                    if let Some((_, to)) = value.as_map().and(value.get("to")) {
                        if to.as_seq().is_some_and(<[Node]>::is_empty) {
                            self.error(
                                to.pos,
                                "\"to\" in `alerts.email:` is empty",
                                Some("list who gets the mail, e.g. `to: [data-team@example.com]`, or leave `to:` out to mail the config file's alerts.to"),
                            );
                        }
                    }
                    alerts.email = Some(email);
                }
                "webhook" => {
                    let mut hook = WebhookAlert { urls: Vec::new(), format: WebhookFormat::Json, on: vec![AlertEvent::Failure] };
                    for (k, _, v) in self.entries(value, WEBHOOK_KEYS, "`alerts.webhook:`") {
                        match k {
                            "urls" => {
                                for (url, pos) in self.string_list("urls", v) {
                                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                                        self.error(
                                            pos,
                                            format!("webhook URL \"{url}\" must start with http:// or https://"),
                                            Some(&format!("write the whole URL, e.g. \"https://{url}\"")),
                                        );
                                    }
                                    hook.urls.push(url);
                                }
                            }
                            "format" => {
                                let formats = [(WebhookFormat::Json, "json"), (WebhookFormat::Slack, "slack")];
                                hook.format = self.choice("alerts.webhook.format", v, &formats).unwrap_or_default();
                            }
                            "on" => hook.on = self.alert_events(v, "alerts.webhook.on"),
                            _ => {}
                        }
                    }
                    let hint = "list where to post, e.g. `urls: [https://hooks.example.com/...]`";
                    self.require_list(value, key_pos, "urls", "`alerts.webhook:`", hint);
                    alerts.webhook = Some(hook);
                }
                _ => {}
            }
        }
        alerts
    }

    fn dag(&mut self, root: &Node, source: &str, registry: &Registry, env: &minijinja::Environment<'_>) -> Option<Dag> {
        let entries = self.entries(root, DAG_KEYS, "a DAG file");
        let find = |name: &str| entries.iter().find(|(k, _, _)| *k == name).map(|(_, p, v)| (*p, *v));

        let id = match find("dag") {
            Some((_, v)) => self.id("DAG", v),
            None => {
                self.error(root.pos, "missing required key \"dag\"", Some("add `dag: <id>` naming the DAG"));
                None
            }
        };
        let timezone = match find("timezone") {
            Some((_, v)) => self.string("timezone", v).and_then(|name| match name.parse::<Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    let zones = chrono_tz::TZ_VARIANTS.iter().map(|z| z.name());
                    self.error(
                        v.pos,
                        format!("unknown time zone \"{name}\"{}", suggestion(&name, zones)),
                        Some("use an IANA name such as UTC, Europe/Paris or America/New_York"),
                    );
                    None
                }
            }),
            None => Some(Tz::UTC),
        };
        let tz = timezone.unwrap_or(Tz::UTC);
        let schedule = find("schedule").and_then(|(_, v)| {
            if matches!(v.kind, NodeKind::Scalar(Scalar::Null)) {
                return None;
            }
            let text = self.string("schedule", v)?;
            match text.parse::<Schedule>() {
                Ok(s) => Some(s),
                Err(message) => {
                    self.error(
                        v.pos,
                        message,
                        Some("use 5-field cron (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @quarterly, @yearly"),
                    );
                    None
                }
            }
        });
        let start_date = find("start_date").and_then(|(_, v)| self.date("start_date", v, tz));
        let end_date = find("end_date").and_then(|(_, v)| self.date("end_date", v, tz));
        if let (Some((pos, _)), None) = (find("schedule").filter(|(_, v)| v.as_str().is_some()), find("start_date")) {
            self.error(
                pos,
                "\"start_date\" is required when \"schedule\" is set",
                Some("add `start_date: 2024-01-01`: the first data interval starts then"),
            );
        }
        if let (Some(start), Some(end)) = (start_date, end_date) {
            if start > end {
                let as_written = |key: &str| find(key).and_then(|(_, v)| v.scalar_text()).unwrap_or_default();
                let pos = find("end_date").map_or(root.pos, |(_, v)| v.pos);
                self.error(
                    pos,
                    format!("end_date {} is before start_date {}", as_written("end_date"), as_written("start_date")),
                    Some("end_date must come after start_date: swap them or fix the typo"),
                );
            }
        }
        if schedule.is_none() {
            if let Some((pos, v)) = find("catchup") {
                if matches!(v.kind, NodeKind::Scalar(Scalar::Bool(true))) {
                    self.warning(pos, "\"catchup\" has no effect without a schedule", None);
                }
            }
        }
        let catchup = find("catchup").and_then(|(_, v)| self.bool("catchup", v)).unwrap_or(false);
        let max_active_runs = find("max_active_runs").and_then(|(_, v)| self.count("max_active_runs", v, 1, MAX_ACTIVE_RUNS)).unwrap_or(1);
        let max_active_tasks = find("max_active_tasks").and_then(|(_, v)| self.count("max_active_tasks", v, 1, MAX_ACTIVE_TASKS)).unwrap_or(16);
        let description = find("description").and_then(|(_, v)| self.string("description", v));

        let mut params = serde_json::Map::new();
        if let Some((_, v)) = find("params") {
            if matches!(v.kind, NodeKind::Scalar(Scalar::Null)) {
                // `params:` with nothing under it declares no parameters.
            } else if let Some(map) = v.as_map() {
                for (key, value) in map {
                    let name = key.scalar_text().unwrap_or_default();
                    let identifier = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                    if !identifier {
                        self.error(
                            key.pos,
                            format!("invalid parameter name \"{name}\": use letters, digits and \"_\", not starting with a digit"),
                            Some("templates read parameters as params.<name>"),
                        );
                    }
                    params.insert(name, value.to_json());
                }
            } else {
                self.error(v.pos, format!("\"params\" must be a mapping of names to defaults, found {}", v.type_name()), None);
            }
        }

        let mut defaults = TaskSettings::default();
        if let Some((_, v)) = find("defaults") {
            for (key, _, value) in self.entries(v, DEFAULTS_KEYS, "`defaults:`") {
                self.settings(key, value, &mut defaults);
            }
        }
        let alerts = find("alerts").map(|(_, v)| self.alerts(v));
        let mut retention = crate::dag::Retention::DEFAULT;
        if let Some((_, v)) = find("retention") {
            for (key, _, value) in self.entries(v, RETENTION_KEYS, "`retention:`") {
                match key {
                    "runs" => retention.runs = self.count("retention.runs", value, 1, MAX_RETENTION_RUNS).map(|n| n as usize),
                    "days" => retention.days = self.count("retention.days", value, 1, MAX_RETENTION_DAYS),
                    _ => {}
                }
            }
        }

        const EMPTY_TASKS_HINT: &str = "add at least one task, e.g. `- id: extract` with `operator: shell`";
        let drafts = match find("tasks") {
            None => {
                self.error(root.pos, "missing required key \"tasks\"", Some("add `tasks:` with at least one task"));
                Vec::new()
            }
            Some((pos, v)) => match v.as_seq() {
                Some([]) => {
                    self.error(pos, "\"tasks\" is empty: a DAG needs at least one task", Some(EMPTY_TASKS_HINT));
                    Vec::new()
                }
                Some(items) if items.len() > MAX_TASKS => {
                    self.error(
                        pos,
                        format!("\"tasks\" holds {} tasks; a DAG may have at most {MAX_TASKS}", items.len()),
                        Some("split the pipeline into several DAGs"),
                    );
                    Vec::new()
                }
                Some(items) => items.iter().filter_map(|item| self.task(item)).collect(),
                None if matches!(v.kind, NodeKind::Scalar(Scalar::Null)) => {
                    self.error(pos, "\"tasks\" is empty: a DAG needs at least one task", Some(EMPTY_TASKS_HINT));
                    Vec::new()
                }
                None => {
                    self.error(
                        v.pos,
                        format!("\"tasks\" must be a list of tasks, found {}", v.type_name()),
                        Some("write each task as a list item: `- id: extract`"),
                    );
                    Vec::new()
                }
            },
        };

        let tasks = self.tasks(drafts, defaults, &params, registry, env);
        let dag_id = id?;
        let (tasks, graph) = tasks?;
        Some(Dag {
            id: dag_id,
            file: self.file.to_path_buf(),
            source: source.to_string(),
            description,
            schedule,
            timezone: tz,
            start_date,
            end_date,
            catchup,
            max_active_runs,
            max_active_tasks,
            params,
            alerts,
            retention,
            task_index: tasks.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect(),
            tasks,
            graph,
        })
    }

    fn task<'n>(&mut self, node: &'n Node) -> Option<TaskDraft<'n>> {
        self.task = None;
        if node.as_map().is_none() {
            self.error(
                node.pos,
                format!("a task must be a mapping with `id:` and `operator:`, found {}", node.type_name()),
                Some("write each task as `- id: <name>` with `operator: <name>` on the next line, indented alike"),
            );
            return None;
        }
        // Name the task in every diagnostic, so read the id before anything else.
        let id = node.get("id").and_then(|(_, v)| v.scalar_text());
        self.task = id.clone().filter(|id| valid_id(id));
        let entries = self.entries(node, TASK_KEYS, "a task");
        let mut draft = TaskDraft {
            node,
            id: String::new(),
            id_pos: node.pos,
            operator: None,
            description: None,
            with: None,
            depends_on: Vec::new(),
            trigger_rule: TriggerRule::AllSuccess,
            settings: TaskSettings::default(),
            alerts: None,
        };
        let mut id_ok = false;
        for (key, _, value) in &entries {
            match *key {
                "id" => {
                    draft.id_pos = value.pos;
                    if let Some(id) = self.id("task", value) {
                        draft.id = id;
                        id_ok = true;
                    }
                }
                "operator" => draft.operator = self.string("operator", value),
                "description" => draft.description = self.string("description", value),
                "with" => {
                    if value.as_map().is_some() || matches!(value.kind, NodeKind::Scalar(Scalar::Null)) {
                        draft.with = Some(value);
                    } else {
                        self.error(
                            value.pos,
                            format!("\"with\" must be a mapping of the operator's settings, found {}", value.type_name()),
                            None,
                        );
                    }
                }
                "depends_on" => draft.depends_on = self.string_list("depends_on", value),
                "trigger_rule" => {
                    draft.trigger_rule = self.choice("trigger_rule", value, &TriggerRule::ALL).unwrap_or_default();
                }
                "alerts" => draft.alerts = Some(self.alerts(value)),
                other => self.settings(other, value, &mut draft.settings),
            }
        }
        if !entries.iter().any(|(k, _, _)| *k == "id") {
            self.error(node.pos, "task is missing required key \"id\"", Some("add `id: <name>`, unique in the DAG"));
        }
        if !entries.iter().any(|(k, _, _)| *k == "operator") && node.get("operator").is_none() {
            self.error(node.pos, "missing required key \"operator\"", Some("add `operator: shell` (or another registered operator)"));
        }
        self.task = None;
        id_ok.then_some(draft)
    }

    fn tasks(
        &mut self,
        drafts: Vec<TaskDraft<'_>>,
        defaults: TaskSettings,
        params: &serde_json::Map<String, Value>,
        registry: &Registry,
        env: &minijinja::Environment<'_>,
    ) -> Option<(Vec<Task>, TaskGraph)> {
        let errors_before = self.error_count();
        // Unique ids.
        let mut first_seen: HashMap<&str, Pos> = HashMap::new();
        for draft in &drafts {
            if let Some(first) = first_seen.get(draft.id.as_str()) {
                self.task = Some(draft.id.clone());
                self.error(
                    draft.id_pos,
                    format!("duplicate task id \"{}\" (first defined at line {})", draft.id, first.line),
                    Some("task ids must be unique in a DAG: rename one"),
                );
            } else {
                first_seen.insert(&draft.id, draft.id_pos);
            }
        }
        let all_tasks: BTreeSet<String> = drafts.iter().map(|d| d.id.clone()).collect();

        // Dependencies name real tasks, and not the task itself.
        for draft in &drafts {
            self.task = Some(draft.id.clone());
            let mut seen = BTreeSet::new();
            for (dep, pos) in &draft.depends_on {
                if dep == &draft.id {
                    self.error(*pos, "task depends on itself", Some("remove it from its own depends_on"));
                } else if !all_tasks.contains(dep) {
                    self.error_with(*pos, || {
                        (
                            format!(
                                "depends_on names unknown task \"{dep}\"{}",
                                suggestion(dep, all_tasks.iter().map(String::as_str))
                            ),
                            Some(format!("tasks in this DAG: {}", list_names(all_tasks.iter().map(String::as_str)))),
                        )
                    });
                } else if !seen.insert(dep) {
                    self.warning(*pos, format!("\"{dep}\" is listed twice in depends_on"), None);
                }
            }
        }
        let deps: Vec<(String, Vec<String>)> = drafts
            .iter()
            .map(|d| (d.id.clone(), d.depends_on.iter().filter(|(dep, _)| dep != &d.id).map(|(dep, _)| dep.clone()).collect()))
            .collect();
        let graph = TaskGraph::new(deps.iter().map(|(id, d)| (id.as_str(), d.as_slice())));
        let cycles = graph.cycles();
        for cycle in &cycles {
            let first = cycle.first().cloned().unwrap_or_default();
            let next = cycle.get(1).cloned().unwrap_or_default();
            // Point at the dependency that closes the loop: `next` depends on `first`.
            let pos = drafts
                .iter()
                .find(|d| d.id == next)
                .and_then(|d| d.depends_on.iter().find(|(dep, _)| *dep == first).map(|(_, p)| *p))
                .unwrap_or_default();
            self.task = Some(next.clone());
            self.error(
                pos,
                format!("dependency cycle: {}", cycle.join(" -> ")),
                Some("a DAG cannot loop: remove one of these dependencies"),
            );
        }

        // Operators and their settings, with templates checked against what each task can see.
        let declared_params: BTreeSet<String> = params.keys().cloned().collect();
        // Only templates that read `tasks.` need to know what is upstream; with a cycle, "upstream"
        // means nothing (the cycle is reported on its own) and every task counts.
        let reads_tasks = drafts.iter().any(|d| d.with.is_some_and(|w| mentions(w, "tasks")));
        let ancestry = if reads_tasks && cycles.is_empty() { graph.ancestry() } else { None };
        let mut tasks = Vec::with_capacity(drafts.len());
        for draft in &drafts {
            self.task = Some(draft.id.clone());
            let with_json = draft.with.map_or(Value::Object(Default::default()), |w| match w.kind {
                NodeKind::Scalar(Scalar::Null) => Value::Object(Default::default()),
                _ => w.to_json(),
            });
            if let Some(name) = &draft.operator {
                match registry.get(name) {
                    None => {
                        let pos = draft.node.get("operator").map_or(draft.node.pos, |(_, v)| v.pos);
                        self.error(
                            pos,
                            format!("unknown operator \"{name}\"{}", suggestion(name, registry.names())),
                            Some(&format!("registered operators: {}", registry.names().collect::<Vec<_>>().join(", "))),
                        );
                    }
                    // A `with:` that is not a mapping was reported already; its settings are unknown.
                    Some(_) if draft.with.is_none() && draft.node.get("with").is_some() => {}
                    Some(operator) => {
                        if let Err(e) = operator.validate(&with_json) {
                            self.operator_error(draft, name, &operator.docs(), e);
                        }
                    }
                }
            }
            if let Some(with) = draft.with {
                // With a cycle, "upstream" means nothing; the cycle is reported on its own.
                let is_upstream = |task: &str| match &ancestry {
                    Some(ancestry) => ancestry.is_upstream(task, &draft.id),
                    None => all_tasks.contains(task),
                };
                let scope = template::Scope {
                    params: &declared_params,
                    all_tasks: &all_tasks,
                    upstream: &is_upstream,
                    suggest: self.room(),
                };
                self.templates(with, env, &scope);
            }
            let settings = draft.settings.or(defaults);
            let retry = RetryPolicy {
                retries: settings.retries.unwrap_or(RetryPolicy::DEFAULT.retries),
                delay: settings.retry_delay.unwrap_or(RetryPolicy::DEFAULT.delay),
                backoff: settings.retry_backoff.unwrap_or(RetryPolicy::DEFAULT.backoff),
                max_delay: settings.max_retry_delay.unwrap_or(RetryPolicy::DEFAULT.max_delay),
            };
            tasks.push(Task {
                id: draft.id.clone(),
                operator: draft.operator.clone().unwrap_or_default(),
                description: draft.description.clone(),
                with: with_json,
                depends_on: draft.depends_on.iter().map(|(d, _)| d.clone()).collect(),
                trigger_rule: draft.trigger_rule,
                retry,
                timeout: settings.timeout,
                alerts: draft.alerts.clone(),
            });
        }
        self.task = None;
        if self.error_count() > errors_before {
            return None;
        }
        let order = graph.topological_order()?;
        let mut by_id: BTreeMap<String, Task> = tasks.into_iter().map(|t| (t.id.clone(), t)).collect();
        let ordered = order.iter().filter_map(|id| by_id.remove(id)).collect();
        Some((ordered, graph))
    }

    fn error_count(&self) -> usize {
        self.diags.iter().filter(|d| d.severity == crate::diagnostic::Severity::Error).count()
    }

    /// Turns serde's wording into ours and points at the exact key or value under `with:`.
    fn operator_error(&mut self, draft: &TaskDraft<'_>, operator: &str, docs: &str, error: crate::operator::ConfigError) {
        let with_node = draft.with;
        let unknown = error.message.starts_with("unknown field `");
        let target = with_node.map_or(draft.node, |w| if unknown { locate_key(w, &error.path) } else { w.locate(&error.path) });
        let path = if error.path.is_empty() { "with".to_string() } else { format!("with.{}", error.path) };
        let message = &error.message;
        if let Some(rest) = message.strip_prefix("unknown field `") {
            let (field, expected) = rest.split_once('`').unwrap_or((rest, ""));
            let fields: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let parent = path.rsplit_once('.').map_or("with", |(p, _)| p);
            let hint = if fields.is_empty() {
                format!("operator \"{operator}\" takes no settings here: remove this key")
            } else {
                format!("valid keys: {}", fields.join(", "))
            };
            self.error(
                target.pos,
                format!("operator \"{operator}\": unknown key \"{field}\" in {parent}{}", suggestion(field, fields.iter().copied())),
                Some(&hint),
            );
        } else if let Some(rest) = message.strip_prefix("missing field `") {
            let field = rest.trim_end_matches('`');
            self.error(
                target.pos,
                format!("operator \"{operator}\": missing required key \"{field}\" in {path}"),
                Some(&format!("see {docs} for its settings")),
            );
        } else if let Some((_, expected)) = message.strip_prefix("invalid type: ").and_then(|m| m.rsplit_once(", expected ")) {
            self.error(
                target.pos,
                format!("operator \"{operator}\": {path} must be {}, found {}", user_type(expected), target.type_name()),
                Some(&if target.as_map().is_some() {
                    "a value that starts with { is a YAML mapping: put quotes around templates, e.g. \"{{ ds }}\"".to_string()
                } else {
                    format!("see {docs} for its settings")
                }),
            );
        } else {
            self.error(
                target.pos,
                format!("operator \"{operator}\": {path}: {message}"),
                Some(&format!("see {docs} for its settings")),
            );
        }
    }

    fn templates(&mut self, node: &Node, env: &minijinja::Environment<'_>, scope: &template::Scope<'_>) {
        match &node.kind {
            NodeKind::Scalar(Scalar::Str(text)) if template::is_template(text) => {
                for problem in template::check(env, text, scope) {
                    self.error(node.pos, problem.message, problem.hint.as_deref());
                }
            }
            NodeKind::Seq(items) => items.iter().for_each(|i| self.templates(i, env, scope)),
            NodeKind::Map(entries) => entries.iter().for_each(|(_, v)| self.templates(v, env, scope)),
            NodeKind::Scalar(_) => {}
        }
    }
}

/// Whether any string under `node` contains `word`.
fn mentions(node: &Node, word: &str) -> bool {
    match &node.kind {
        NodeKind::Scalar(Scalar::Str(text)) => text.contains(word),
        NodeKind::Seq(items) => items.iter().any(|i| mentions(i, word)),
        NodeKind::Map(entries) => entries.iter().any(|(_, v)| mentions(v, word)),
        NodeKind::Scalar(_) => false,
    }
}

/// serde's name for an expected type, in the words the rest of compile's messages use.
fn user_type(expected: &str) -> &str {
    match expected {
        "a sequence" => "a list",
        "a map" => "a mapping",
        "a borrowed string" => "a string",
        "a boolean" => "true or false",
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "isize" | "usize" => "a whole number",
        "f32" | "f64" => "a number",
        other if other.starts_with("struct ") => "a mapping",
        other => other,
    }
}

/// The key node for a path ending in a key that exists (so "unknown key" points at the key),
/// else the deepest node on the path.
fn locate_key<'n>(root: &'n Node, path: &str) -> &'n Node {
    let (parent, last) = match path.rsplit_once('.') {
        Some((p, l)) => (p, l),
        None => ("", path),
    };
    if !last.contains('[') {
        if let Some((key, _)) = root.locate(parent).get(last) {
            return key;
        }
    }
    root.locate(path)
}

fn suggest_id(text: &str) -> String {
    let mut id: String = text
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else if c == '-' { '-' } else { '_' })
        .collect();
    if id.is_empty() {
        id.push_str("my_dag");
    }
    id
}

#[cfg(test)]
mod tests;
