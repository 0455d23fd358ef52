//! `flowctl next` through the real binary: the fire times and data intervals of an applied DAG
//! or a DAG file, across daylight-saving changes, and the errors for what it cannot answer.

mod util;

use util::setup;

const NIGHTLY: &str = "\
dag: nightly
schedule: 30 2 * * *
timezone: America/New_York
start_date: 2024-01-01
tasks:
  - id: load
    operator: noop
";

/// Compares whole outputs, showing both on failure.
#[track_caller]
fn assert_text(actual: &str, expected: &str) {
    assert_eq!(actual, expected, "\n--- expected ---\n{expected}\n--- actual ---\n{actual}");
}

#[test]
fn next_of_an_applied_dag_across_the_spring_change() {
    let (home, cmd) = setup();
    let file = home.write("nightly.yaml", NIGHTLY);
    cmd.run(["apply".as_ref(), file.as_os_str()]).expect_code(0);
    let run = cmd.run(["next", "nightly", "-n", "3", "--after", "2024-03-09T12:00:00Z"]);
    run.expect_code(0);
    // 02:30 does not exist on 10 March in New York: that run fires at 03:00 EDT.
    assert_text(
        &run.stdout,
        "\
DAG nightly: \"30 2 * * *\" in America/New_York; a run's logical date is the start of its data interval
FIRES AT                   DATA INTERVAL
2024-03-10T03:00:00-04:00  [2024-03-09T02:30:00-05:00, 2024-03-10T03:00:00-04:00)
2024-03-11T02:30:00-04:00  [2024-03-10T03:00:00-04:00, 2024-03-11T02:30:00-04:00)
2024-03-12T02:30:00-04:00  [2024-03-11T02:30:00-04:00, 2024-03-12T02:30:00-04:00)
",
    );
    assert_text(&run.stderr, "");
}

#[test]
fn next_of_a_file_is_not_stored() {
    let (home, cmd) = setup();
    let hourly = NIGHTLY.replace("dag: nightly", "dag: hourly").replace("30 2 * * *", "'@hourly'");
    let file = home.write("hourly.yaml", &hourly);
    // A date is midnight in the DAG's zone; the clock goes back at 02:00 EDT, so 01:00 fires twice.
    let run = cmd.run(["next".as_ref(), file.as_os_str(), "-n".as_ref(), "3".as_ref(), "--after".as_ref(), "2024-11-03".as_ref()]);
    run.expect_code(0);
    assert_text(
        &run.stdout,
        "\
DAG hourly: \"@hourly\" in America/New_York; a run's logical date is the start of its data interval
FIRES AT                   DATA INTERVAL
2024-11-03T01:00:00-04:00  [2024-11-03T00:00:00-04:00, 2024-11-03T01:00:00-04:00)
2024-11-03T01:00:00-05:00  [2024-11-03T01:00:00-04:00, 2024-11-03T01:00:00-05:00)
2024-11-03T02:00:00-05:00  [2024-11-03T01:00:00-05:00, 2024-11-03T02:00:00-05:00)
",
    );
    assert!(!home.path().exists(), "next FILE must not create or write the home");
}

#[test]
fn next_stops_at_end_date() {
    let (home, cmd) = setup();
    let ending = NIGHTLY.replace("start_date: 2024-01-01", "start_date: 2024-01-01\nend_date: 2024-03-11");
    let file = home.write("nightly.yaml", &ending);
    // The last run is for the interval that starts on 10 March, before end_date; the one starting
    // at 02:30 on 11 March starts after it.
    let run = cmd.run(["next".as_ref(), file.as_os_str(), "--after".as_ref(), "2024-03-10T12:00:00Z".as_ref()]);
    run.expect_code(0);
    assert_text(
        &run.stdout,
        "\
DAG nightly: \"30 2 * * *\" in America/New_York; a run's logical date is the start of its data interval
FIRES AT                   DATA INTERVAL
2024-03-11T02:30:00-04:00  [2024-03-10T03:00:00-04:00, 2024-03-11T02:30:00-04:00)
no more runs: end_date is 2024-03-11T00:00:00-04:00
",
    );
    let run = cmd.run(["next".as_ref(), file.as_os_str(), "--after".as_ref(), "2025-01-01T00:00:00Z".as_ref()]);
    run.expect_code(0);
    assert!(run.stdout.ends_with("no runs after 2024-12-31T19:00:00-05:00: end_date is 2024-03-11T00:00:00-04:00\n"), "{}", run.stdout);
}

#[test]
fn next_without_a_schedule_an_unknown_dag_or_a_bad_after_exits_2() {
    let (home, cmd) = setup();
    let manual = NIGHTLY.replace("dag: nightly", "dag: manual").replace("schedule: 30 2 * * *\n", "");
    let nightly = home.write("nightly.yaml", NIGHTLY);
    let manual = home.write("manual.yaml", &manual);
    cmd.run(["apply".as_ref(), nightly.as_os_str(), manual.as_os_str()]).expect_code(0);

    let run = cmd.run(["next", "manual"]);
    run.expect_code(2);
    assert_text(
        &run.stderr,
        &format!(
            "error: DAG \"manual\" has no schedule, so it has no fire times; add `schedule:` (e.g. '@daily') to {}, or start runs with `flowctl trigger manual --wait`\n",
            manual.display()
        ),
    );

    let run = cmd.run(["next", "nightlly"]);
    run.expect_code(2);
    assert_text(
        &run.stderr,
        "error: no DAG \"nightlly\" is applied to this home (did you mean \"nightly\"?); apply it with `flowctl apply FILE`, or give the file's path\n",
    );

    let run = cmd.run(["next", "nightly", "--after", "yesterday"]);
    run.expect_code(2);
    assert_text(
        &run.stderr,
        "error: --after \"yesterday\": expected an RFC 3339 timestamp like 2024-03-10T06:00:00Z or a date like 2024-03-10 (midnight in America/New_York)\n",
    );
    assert_eq!(run.stdout, "");

    let run = cmd.run(["next", "nightly", "-n", "0"]);
    run.expect_code(2);
    assert!(run.stderr.contains("0 is not in 1..=10000"), "{}", run.stderr);
}

/// Now as an RFC 3339 UTC timestamp (whole seconds), without a date library.
fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[test]
fn next_after_now_by_default() {
    let (home, cmd) = setup();
    let file = home.write("nightly.yaml", NIGHTLY);
    let before = now_rfc3339();
    let run = cmd.run(["next".as_ref(), file.as_os_str(), "-n".as_ref(), "2".as_ref()]);
    let after = now_rfc3339();
    run.expect_code(0);
    // The same as --after the instant just before or just after it ran (a fire time may fall
    // between the two).
    let explicit = |at: &str| cmd.run(["next".as_ref(), file.as_os_str(), "-n".as_ref(), "2".as_ref(), "--after".as_ref(), at.as_ref()]).stdout;
    let (from_before, from_after) = (explicit(&before), explicit(&after));
    assert!(run.stdout == from_before || run.stdout == from_after, "default:\n{}\n--after {before}:\n{from_before}", run.stdout);
    assert_eq!(run.stdout.lines().count(), 4, "{}", run.stdout);
}

/// Every `$ flowctl next ...` shown in docs/scheduling.md prints what the page says, once the
/// page's DAGs are applied.
#[test]
fn the_flowctl_next_examples_in_docs_scheduling_md_are_real() {
    let (home, cmd) = setup();
    let doc_path = util::repo_root().join("docs/scheduling.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap_or_else(|e| panic!("{}: {e}", doc_path.display()));
    // Fenced blocks as (info string, lines).
    let mut blocks: Vec<(&str, Vec<&str>)> = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            blocks.push((info, lines.by_ref().take_while(|l| !l.starts_with("```")).collect()));
        }
    }
    let mut applied = 0;
    for (info, body) in &blocks {
        if *info == "yaml" && body.first().is_some_and(|l| l.starts_with("dag:")) {
            applied += 1;
            let file = home.write(&format!("doc{applied}.yaml"), &(body.join("\n") + "\n"));
            cmd.run(["apply".as_ref(), file.as_os_str()]).expect_code(0);
        }
    }
    let mut checked = 0;
    for (info, body) in &blocks {
        if *info != "text" {
            continue;
        }
        let mut rest = body.as_slice();
        while let Some(start) = rest.iter().position(|l| l.starts_with("$ flowctl next")) {
            let args: Vec<&str> = rest[start].trim_start_matches("$ flowctl ").split_whitespace().collect();
            let end = rest[start + 1..].iter().position(|l| l.starts_with("$ ")).map_or(rest.len(), |i| start + 1 + i);
            let expected: String = rest[start + 1..end].iter().map(|l| format!("{l}\n")).collect();
            let run = cmd.run(&args);
            assert_text(&format!("{}{}", run.stdout, run.stderr), &expected);
            checked += 1;
            rest = &rest[end..];
        }
    }
    assert!(applied >= 3 && checked >= 5, "found {applied} DAGs and {checked} commands in {}", doc_path.display());
}
