//! Hostile DAG files: what a user who means harm (or a generator gone wrong) can drop where
//! flowctl reads DAGs. Alias bombs, nesting thousands of levels deep, huge files and numbers,
//! duplicate keys at depth, ids too long for a file name, bytes that are not text.
//!
//! Every file of `tests/data/hostile/` (listed with the headline it must produce in its
//! `MANIFEST`), and the large files generated here at test time, goes through `flowctl validate`:
//! exit code 2, a first line `path:line:col: error: ...` naming the file and what bound it passes,
//! in bounded time and memory. Each child runs under an address-space limit (`prlimit --as`), so
//! an unbounded allocation fails the test instead of the machine, and the peak resident memory of
//! every child is read back from the kernel (`getrusage(RUSAGE_CHILDREN)`) and bounded. Then one
//! `flowctl server --dags` holds the whole corpus: it keeps running, applies the good DAGs beside
//! it, and keeps a DAG's last good version when the DAG's file turns hostile.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use util::{repo_root, setup, Cmd, Run, Server};

/// The hostile corpus, relative to the repository root.
const HOSTILE: &str = "tests/data/hostile";
/// Fewer files than this means the corpus lost some.
const MIN_FILES: usize = 40;
/// The address space each `flowctl validate` may map. A billion-laughs file grew past 10 GB before
/// the reader bounded alias expansion; within the bounds, validating any file takes a few tens of
/// megabytes beside the binary's own mappings.
const ADDRESS_SPACE: u64 = 2 << 30;
/// The most resident memory any flowctl this test starts may reach, in KiB. The kernel keeps one
/// peak for all the children of this process, and tests run side by side, so one bound covers both
/// `flowctl validate` (about 120 MiB at most here, for a 1 MiB file expanded to its bound) and the
/// server holding the whole corpus (which compiles that file on two threads, and the allocator
/// keeps each thread's freed memory: about 240 MiB).
const MAX_RSS_KIB: i64 = 384 * 1024;
/// How long one `flowctl validate` may take, on a loaded machine, in a debug build.
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// A file to validate and a part of the headline it must print.
struct Case {
    path: PathBuf,
    needle: String,
}

/// The committed corpus, from its `MANIFEST`; problems with the corpus itself come back as messages.
fn committed_cases() -> (Vec<Case>, Vec<String>) {
    let dir = repo_root().join(HOSTILE);
    let manifest = std::fs::read_to_string(dir.join("MANIFEST")).expect("read tests/data/hostile/MANIFEST");
    let mut cases = Vec::new();
    let mut problems = Vec::new();
    for line in manifest.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let Some((name, needle)) = line.split_once(": ") else {
            problems.push(format!("MANIFEST: line {line:?} is not `FILE: HEADLINE PART`"));
            continue;
        };
        let path = Path::new(HOSTILE).join(name);
        if !repo_root().join(&path).is_file() {
            problems.push(format!("MANIFEST names {name}, which is not in {HOSTILE}"));
        }
        cases.push(Case { path, needle: needle.to_string() });
    }
    for entry in std::fs::read_dir(&dir).expect("read the hostile corpus") {
        let name = entry.expect("folder entry").file_name().to_string_lossy().into_owned();
        if name != "MANIFEST" && !cases.iter().any(|c| c.path.file_name().is_some_and(|n| n == name.as_str())) {
            problems.push(format!("{HOSTILE}/{name} has no line in MANIFEST: add what its headline must say"));
        }
    }
    (cases, problems)
}

/// Writes `lines` to `path` through a buffer (the large files are tens of megabytes).
fn write_lines(path: &Path, head: &str, count: usize, line: impl Fn(usize) -> String) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create generated file"));
    out.write_all(head.as_bytes()).expect("write");
    for i in 0..count {
        out.write_all(line(i).as_bytes()).expect("write");
    }
    out.flush().expect("flush");
}

/// The large or special files, made in `dir` at test time rather than committed.
fn generated_cases(dir: &Path) -> Vec<Case> {
    std::fs::create_dir_all(dir).expect("create folder");
    let case = |name: &str, needle: &str| Case { path: dir.join(name), needle: needle.to_string() };
    let mut cases = Vec::new();

    // 1.5 million tasks in about 50 MB: refused before a byte of it is read.
    write_lines(&dir.join("huge_file_1_5m_tasks.yaml"), "dag: huge\ntasks:\n", 1_500_000, |i| format!("  - {{id: t{i:07}, operator: noop}}\n"));
    let size = std::fs::metadata(dir.join("huge_file_1_5m_tasks.yaml")).expect("size").len();
    cases.push(case("huge_file_1_5m_tasks.yaml", &format!("1:1: error: file is {size} bytes, more than the 1048576 bytes (1 MiB) a DAG file may have")));

    // One byte over the limit.
    let valid = "dag: just_over\ntasks:\n  - id: a\n    operator: noop\n";
    let padding = 1024 * 1024 + 1 - valid.len() - 2;
    std::fs::write(dir.join("just_over_the_size_limit.yaml"), format!("{valid}#{}\n", "x".repeat(padding))).expect("write");
    cases.push(case("just_over_the_size_limit.yaml", "file is 1048577 bytes, more than the 1048576 bytes (1 MiB)"));

    // Small tasks, many of them: within the size limit, past the task limit.
    write_lines(&dir.join("too_many_tasks.yaml"), "dag: too_many\ntasks:\n", 10_001, |i| format!("  - {{id: t{i}, operator: noop}}\n"));
    cases.push(case("too_many_tasks.yaml", "2:1: error: \"tasks\" holds 10001 tasks; a DAG may have at most 10000"));

    // 5,000 unknown dependencies in 29 KB once printed 215 MB of errors.
    let deps: String = (0..5000).map(|i| format!("m{i}, ")).collect();
    std::fs::write(dir.join("many_unknown_dependencies.yaml"), format!("dag: many_deps\ntasks:\n  - id: a\n    operator: noop\n    depends_on: [{deps}]\n")).expect("write");
    cases.push(case("many_unknown_dependencies.yaml", "error: task \"a\": depends_on names unknown task \"m0\""));

    // The whole DAG on one line of almost a megabyte, with its mistake at the end.
    let params: String = (0..60_000).map(|i| format!("p{i}: v, ")).collect();
    std::fs::write(dir.join("huge_single_line.yaml"), format!("{{dag: one_line, params: {{{params}}}, tasks: [{{id: a, operator: noop}}], typo: 1}}\n")).expect("write");
    cases.push(case("huge_single_line.yaml", "error: unknown key \"typo\" in a DAG file"));

    // About as much expansion as the bound allows a file of 1 MiB (500 copies of a 1,000-item list),
    // then a mistake: the most memory a file can make compile use.
    let items = vec!["x"; 1000].join(", ");
    let copies = vec!["*w"; 500].join(", ");
    let body = format!("dag: at_the_bound\nparams:\n  w: &w [{items}]\n  c: [{copies}]\ntasks:\n  - id: a\n    operator: noop\ntypo: 1\n");
    let padding = 1024 * 1024 - body.len() - 2;
    std::fs::write(dir.join("alias_expansion_at_the_bound.yaml"), format!("#{}\n{body}", "x".repeat(padding))).expect("write");
    cases.push(case("alias_expansion_at_the_bound.yaml", "error: unknown key \"typo\" in a DAG file"));

    // Half a million brackets, never closed.
    std::fs::write(dir.join("deep_nesting_half_a_million.yaml"), format!("dag: deep\nparams:\n  p: {}\n", "[".repeat(500_000))).expect("write");
    cases.push(case("deep_nesting_half_a_million.yaml", "mappings and lists nest deeper than 64 levels here"));

    // A quarter of a million documents.
    std::fs::write(dir.join("documents_quarter_million.yaml"), "---\n".repeat(250_000)).expect("write");
    cases.push(case("documents_quarter_million.yaml", "file holds 250000 YAML documents"));

    // A command line longer than Linux passes to a program: it would fail every attempt.
    std::fs::write(
        dir.join("shell_command_past_the_kernel_limit.yaml"),
        format!("dag: long_command\ntasks:\n  - id: a\n    operator: shell\n    with:\n      command: \": {}\"\n", "x".repeat(200_000)),
    )
    .expect("write");
    cases.push(case("shell_command_past_the_kernel_limit.yaml", "task \"a\": operator \"shell\": with.command: is 200002 bytes, more than the 131071"));

    // Not regular files: a FIFO would block a reader forever, /dev/zero never ends.
    nix::unistd::mkfifo(&dir.join("fifo.yaml"), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    cases.push(case("fifo.yaml", "1:1: error: cannot read: not a regular file"));
    std::os::unix::fs::symlink("/dev/zero", dir.join("dev_zero.yaml")).expect("symlink");
    cases.push(case("dev_zero.yaml", "1:1: error: cannot read: not a regular file"));
    cases
}

/// `cmd`'s command for `args`, run under an address-space limit so an unbounded allocation fails
/// (the child aborts) instead of taking the machine's memory.
fn bounded(cmd: &Cmd, args: &[&std::ffi::OsStr]) -> Command {
    let inner = cmd.command(args);
    let mut outer = Command::new("prlimit");
    outer.arg(format!("--as={ADDRESS_SPACE}")).arg("--").arg(inner.get_program()).args(inner.get_args());
    if let Some(dir) = inner.get_current_dir() {
        outer.current_dir(dir);
    }
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => outer.env(key, value),
            None => outer.env_remove(key),
        };
    }
    outer.stdin(Stdio::null());
    outer
}

/// Runs `command` to its end, killing it after [`TIME_LIMIT`].
fn run_within(command: Command) -> Run {
    util::run_command_within(command, TIME_LIMIT)
}

/// The largest resident set of any child of this test process that has ended, in KiB.
fn peak_child_rss_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).expect("getrusage").max_rss()
}

/// Validates one case; a description of what went wrong, or nothing.
fn check(cmd: &Cmd, case: &Case) -> Option<String> {
    let started = std::time::Instant::now();
    let run = run_within(bounded(cmd, &["validate".as_ref(), case.path.as_os_str()]));
    let took = started.elapsed();
    let shown = case.path.display().to_string();
    let headline = run.stdout.lines().next().unwrap_or_default();
    let names_the_file = headline.strip_prefix(&format!("{shown}:")).is_some_and(|rest| {
        let mut parts = rest.splitn(3, ':');
        let number = |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
        number(parts.next()) && number(parts.next()) && parts.next().is_some_and(|m| m.starts_with(" error: "))
    });
    let mut wrong = Vec::new();
    if run.code != 2 {
        wrong.push(format!("exit code {} (must be 2)", run.code));
    }
    if !names_the_file {
        wrong.push("the first line is not `PATH:LINE:COL: error: ...` naming the file".to_string());
    }
    if !headline.contains(&case.needle) {
        wrong.push(format!("the headline does not say {:?}", case.needle));
    }
    // A report stays small whatever the file: at most 100 errors, lines shown around the column.
    if run.stdout.len() > 200_000 {
        wrong.push(format!("{} bytes of output", run.stdout.len()));
    }
    if wrong.is_empty() {
        return None;
    }
    let head: String = run.stdout.lines().take(6).map(|l| format!("    {}\n", l.chars().take(300).collect::<String>())).collect();
    let err: String = run.stderr.lines().take(6).map(|l| format!("    {l}\n")).collect();
    Some(format!("{shown} ({took:?}): {}\n  stdout:\n{head}  stderr:\n{err}", wrong.join("; ")))
}

#[test]
fn every_hostile_file_is_refused_with_a_clear_headline_in_bounded_time_and_memory() {
    let (home, cmd) = setup();
    let (mut cases, mut failures) = committed_cases();
    if cases.len() < MIN_FILES {
        failures.push(format!("only {} files in {HOSTILE}; the corpus must keep at least {MIN_FILES}", cases.len()));
    }
    cases.extend(generated_cases(&home.scratch().join("generated")));
    failures.extend(cases.iter().filter_map(|case| check(&cmd, case)));
    let peak = peak_child_rss_kib();
    eprintln!("{} hostile files validated; the largest flowctl peaked at {} MiB resident", cases.len(), peak / 1024);
    if peak > MAX_RSS_KIB {
        failures.push(format!("a flowctl validate peaked at {peak} KiB resident, more than {MAX_RSS_KIB} KiB"));
    }
    assert!(failures.is_empty(), "{} problems in {} hostile files:\n\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn thousands_of_errors_print_a_hundred_and_count_the_rest() {
    let (home, cmd) = setup();
    let deps: String = (0..5000).map(|i| format!("m{i}, ")).collect();
    let file = home.write("deps.yaml", &format!("dag: many_deps\ntasks:\n  - id: a\n    operator: noop\n    depends_on: [{deps}]\n"));
    let run = run_within(bounded(&cmd, &["validate".as_ref(), file.as_os_str()]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    let errors: Vec<&str> = run.stdout.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 101, "100 errors and the line that counts the rest");
    assert!(
        errors[100].ends_with("error: 4900 more errors in this file not shown (the first 100 are), the next one here"),
        "{}",
        errors[100]
    );
    assert!(run.stdout.ends_with("error: 5000 errors in 1 file (1 file checked)\n"), "{}", &run.stdout[run.stdout.len() - 200..]);
    // The hint lists some tasks, never every one; the whole report is a few kilobytes.
    assert!(run.stdout.len() < 64 * 1024, "{} bytes", run.stdout.len());
}

/// A DAG that runs at once and succeeds.
fn good_dag(id: &str) -> String {
    format!("dag: {id}\nparams:\n  p: 1\ntasks:\n  - id: a\n    operator: noop\n")
}

#[test]
fn a_server_watching_the_hostile_corpus_keeps_running_and_keeps_last_good_versions() {
    let (home, cmd) = setup();
    let dags = home.scratch().join("dags");
    std::fs::create_dir_all(&dags).expect("create the DAG folder");
    let (committed, problems) = committed_cases();
    assert!(problems.is_empty(), "{problems:?}");
    for case in &committed {
        std::fs::copy(repo_root().join(&case.path), dags.join(case.path.file_name().expect("file name"))).expect("copy");
    }
    let generated = generated_cases(&dags);
    // A link back to the folder itself: walked once, not forever.
    std::os::unix::fs::symlink(&dags, dags.join("loop")).expect("symlink");
    let good = home.write("dags/zz_good.yaml", &good_dag("zz_good"));
    let evolving = home.write("dags/zz_evolving.yaml", &good_dag("zz_evolving"));

    let mut server = Server::start(&cmd, &["--dags", dags.to_str().expect("UTF-8 path")]);
    // The folder is read in order: every hostile file is reported, then the good ones applied.
    let mut hostile: Vec<PathBuf> = committed.iter().map(|c| dags.join(c.path.file_name().expect("name"))).collect();
    hostile.extend(generated.iter().map(|c| c.path.clone()));
    hostile.sort();
    for file in &hostile {
        server.wait_for_stderr(&format!("flowctl server: {} does not compile; its DAG keeps its last good version", file.display()));
    }
    for id in ["zz_evolving", "zz_good"] {
        let line = server.wait_for_stderr("DAG applied");
        assert!(line.contains(id), "expected {id} to be applied next: {line}");
    }
    let (status, body) = server.http("GET", "/health", None, None);
    assert_eq!(status, 200, "{body}");
    let versions = |cmd: &Cmd| -> Vec<(String, u64)> {
        let dags = cmd.json(["status", "--output", "json"]);
        dags.as_array().expect("DAGs").iter().map(|d| (d["dag_id"].as_str().unwrap_or_default().to_string(), d["version"].as_u64().unwrap_or(0))).collect()
    };
    assert_eq!(versions(&cmd), [("zz_evolving".to_string(), 1), ("zz_good".to_string(), 1)], "only the good DAGs are applied");

    // The evolving DAG's file turns into an alias bomb: the server reports it and keeps version 1.
    let bomb = std::fs::read_to_string(repo_root().join(HOSTILE).join("alias_bomb_9_levels.yaml")).expect("read");
    std::fs::write(&evolving, bomb.replace("dag: laughs", "dag: zz_evolving")).expect("write");
    server.wait_for_stderr(&format!("flowctl server: {} does not compile; its DAG keeps its last good version", evolving.display()));
    server.wait_for_stderr(&format!("{}:7:42: error: invalid YAML: alias *l3 expands the file past 100000 nodes", evolving.display()));
    assert_eq!(versions(&cmd), [("zz_evolving".to_string(), 1), ("zz_good".to_string(), 1)], "the last good version is kept");

    // And the server still does its work.
    let (status, _) = server.http("GET", "/health", None, None);
    assert_eq!(status, 200);
    cmd.run(["trigger", "zz_evolving", "--date", "2024-01-01", "--wait"]).expect_code(0);
    cmd.run(["trigger", "zz_good", "--date", "2024-01-01", "--wait"]).expect_code(0);
    assert!(good.is_file());
    server.stop().expect_code(0);
    let peak = peak_child_rss_kib();
    eprintln!("the server holding the hostile corpus peaked at {} MiB resident", peak / 1024);
    assert!(peak <= MAX_RSS_KIB, "a flowctl peaked at {peak} KiB resident, more than {MAX_RSS_KIB} KiB");
}

/// A run's parameters nested 130 levels deep, as a build without compile's depth bound stored
/// them: serde_json writes it, and cannot read it back.
fn too_deep() -> serde_json::Value {
    (0..130).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]))
}

/// Waits (blocking on the lock itself, no polling) until no process holds the store's file lock,
/// which sled's threads let go of a moment after the store is dropped.
fn wait_until_store_unlocked(home: &Path) {
    let db = std::fs::File::open(home.join("store").join("db")).expect("open the store's db file");
    let locked = nix::fcntl::Flock::lock(db, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| e).expect("lock the store");
    drop(locked);
}

#[test]
fn an_unreadable_record_never_takes_down_status_or_the_server() {
    let (home, cmd) = setup();
    let file = home.write("keep.yaml", &good_dag("keep"));
    cmd.run(["apply", file.to_str().expect("UTF-8 path")]).expect_code(0);
    cmd.run(["trigger", "keep", "--date", "2024-01-01"]).expect_code(0);
    {
        let store = flowctl_engine::state::Store::open(&home.path().join("store")).expect("open the store");
        let mut run = store.runs("keep").expect("runs").remove(0);
        run.run_id = "manual__deep".into();
        run.params.insert("p".into(), too_deep());
        store.put_run(&run).expect("write the run");
        store.flush().expect("flush");
    }
    wait_until_store_unlocked(&home.path());

    // status lists the DAG and its readable run, and names the record it skips.
    let key = "record run keep/manual__deep is unreadable: recursion limit exceeded";
    let run = cmd.run(["status"]);
    run.expect_code(0);
    assert!(run.stdout.contains("keep"), "{}", run.stdout);
    assert!(run.stderr.contains(&format!("flowctl: warning: state store: {key}")), "{}", run.stderr);
    let run = cmd.run(["status", "keep"]);
    run.expect_code(0);
    assert!(run.stdout.contains("manual__2024-01-01T00:00:00Z"), "{}", run.stdout);
    assert!(!run.stdout.contains("manual__deep"), "{}", run.stdout);
    // Asking for the record itself says what is wrong with it.
    let run = cmd.run(["status", "keep", "manual__deep"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains(key), "{}", run.stderr);

    // The server starts, says which record it skips, and runs the queued run.
    let mut server = Server::start(&cmd, &[]);
    let line = server.wait_for_stderr("skipping an unreadable record");
    assert!(line.contains("run keep/manual__deep"), "{line}");
    assert_eq!(server.wait_for_run("keep", "manual__2024-01-01T00:00:00Z"), "success");
    let (status, body) = server.http("GET", "/health", None, None);
    assert_eq!(status, 200, "{body}");
    server.stop().expect_code(0);
}

#[test]
fn a_param_nested_deeper_than_a_dag_file_may_nest_is_refused() {
    let (home, cmd) = setup();
    let file = home.write("params.yaml", &good_dag("params"));
    cmd.run(["apply", file.to_str().expect("UTF-8 path")]).expect_code(0);
    let deep = format!("p={}1{}", "[".repeat(100), "]".repeat(100));
    let run = cmd.run(["trigger", "params", "--param", &deep]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("--param \"p\": the value nests 100 levels deep; a parameter's value may nest at most 62 levels"),
        "{}",
        run.stderr
    );
    let ok = format!("p={}1{}", "[".repeat(62), "]".repeat(62));
    cmd.run(["trigger", "params", "--param", &ok]).expect_code(0);
    cmd.run(["status", "params"]).expect_code(0);
}
