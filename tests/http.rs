//! End-to-end tests of `http.request` and `http.download`: the real `flowctl` binary runs DAGs
//! against a real HTTP server on 127.0.0.1 (`util::http_site`), which wants a login and its cookie,
//! serves zips built here, supports ETag and Range, and can answer 503 or drop a connection on
//! request. The tests check what the run did through `flowctl status`, the attempt logs, the files
//! written and the requests the server saw.

mod util;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use util::http_site::{loan_text, sha256_hex, zip_of, HttpSite};
use util::files_under;

/// The login password: it must never appear in any log, error or status output.
const CANARY: &str = "canary-Pw-7f3a9c1e";
const USER: &str = "loans-team";
const API_TOKEN: &str = "api-token-5b8e2d90";
/// A broken run must not hang a test.
const LIMIT: Duration = Duration::from_secs(120);

/// What every test's runs see: the login password and the API token, in their variables.
const ENV: &[(&str, &str)] = &[("LOANS_PASSWORD", CANARY), ("LOANS_API_TOKEN", API_TOKEN)];

fn site() -> HttpSite {
    HttpSite::start(USER, CANARY, API_TOKEN)
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap_or_else(|| panic!("not a list: {value}")).iter().map(|v| v.as_str().expect("string").to_string()).collect()
}

/// A zip of two loan files and a PDF the `members` filter must leave out.
fn quarter_zip(quarter: &str) -> (Vec<u8>, String, String) {
    let acquisition = loan_text(quarter, 200);
    let performance = loan_text(&format!("{quarter}P"), 300);
    let zip = zip_of(
        &[
            (&format!("Acquisition_{quarter}.txt"), acquisition.as_bytes()),
            (&format!("Performance_{quarter}.txt"), performance.as_bytes()),
            ("layout/readme.pdf", b"%PDF-1.4 not loans"),
        ],
        false,
    );
    (zip, acquisition, performance)
}

/// The DAG of the founding pipeline's download step: log in, download the quarter's zip, keep
/// its .txt members, and a downstream task that reads them.
fn login_dag(site: &HttpSite, dag: &str, destination: &str, if_changed: bool) -> String {
    format!(
        r#"dag: {dag}
tasks:
  - id: download
    operator: http.download
    with:
      url: {files}/loans_2024Q1.zip
      destination: {destination}
      login:
        url: {login}
        fields:
          username: {USER}
        password_env: LOANS_PASSWORD
      extract: zip
      members: "*.txt"
      if_changed: {if_changed}
      http_retry_delay: 10ms
  - id: load
    operator: shell
    depends_on: [download]
    with:
      command: |
        for f in {{{{ tasks.download.outputs.extracted | join(" ") }}}}; do echo "$(basename "$f") $(wc -l < "$f")"; done
"#,
        files = site.url("/files"),
        login = site.url("/login"),
    )
}

#[test]
fn login_download_and_extract_keep_the_session_and_filter_members() {
    let site = site();
    let (zip, acquisition, performance) = quarter_zip("2024Q1");
    site.put_file("loans_2024Q1.zip", zip.clone(), true);
    let (home, cmd) = util::setup_with_env(ENV);
    // A relative destination is relative to the run's work folder.
    let file = home.write("login.yaml", &login_dag(&site, "http_login", "loans", false));
    let done = cmd.run_file(&file, "2024-03-01", LIMIT);
    done.expect_code(0);
    let id = done.run_id();

    let download = cmd.task("http_login", &id, "download");
    assert_eq!(download["state"], "success", "{download:#}");
    let folder = home.path().join("work/http_login").join(&id).join("loans").canonicalize().expect("destination exists");
    let outputs = &download["outputs"];
    assert_eq!(strings(&outputs["files"]), [folder.join("loans_2024Q1.zip").display().to_string()]);
    assert_eq!(
        strings(&outputs["extracted"]),
        [folder.join("Acquisition_2024Q1.txt").display().to_string(), folder.join("Performance_2024Q1.txt").display().to_string()]
    );
    assert_eq!(outputs["bytes"], zip.len() as u64);
    assert_eq!(outputs["changed"], true);
    assert_eq!(outputs["sources"][0]["sha256"], sha256_hex(&zip).as_str());
    assert_eq!(std::fs::read(folder.join("loans_2024Q1.zip")).expect("zip"), zip);
    assert_eq!(std::fs::read_to_string(folder.join("Acquisition_2024Q1.txt")).expect("txt"), acquisition);
    assert_eq!(std::fs::read_to_string(folder.join("Performance_2024Q1.txt")).expect("txt"), performance);
    assert!(!folder.join("layout").exists(), "the PDF was extracted though members is *.txt");
    let left = files_under(&folder);
    assert_eq!(left.len(), 3, "only the zip and two .txt files: {left:?}");

    // The server saw the login, then the download with the session cookie it set.
    let seen = site.requests();
    let paths: Vec<(&str, &str, u16, bool)> = seen.iter().map(|r| (r.method.as_str(), r.path.as_str(), r.status, r.session)).collect();
    assert_eq!(paths, [("POST", "/login", 303, false), ("GET", "/welcome", 200, true), ("GET", "/files/loans_2024Q1.zip", 200, true)]);

    // The downstream task read the extracted files through the outputs.
    let load = home.log("http_login", &id, "load", 1);
    assert!(load.contains("Acquisition_2024Q1.txt 201") && load.contains("Performance_2024Q1.txt 301"), "{load}");
    let log = home.log("http_login", &id, "download", 1);
    for line in ["logged in; the session cookie is kept for the downloads", "extracted 2 file(s) from loans_2024Q1.zip", "downloaded loans_2024Q1.zip: "] {
        assert!(log.contains(line), "no {line:?} in the log:\n{log}");
    }
}

#[test]
fn a_wrong_password_fails_at_once_naming_the_variable() {
    let site = site();
    site.put_file("loans_2024Q1.zip", quarter_zip("2024Q1").0, true);
    let (home, cmd) = util::setup_with_env(ENV);
    let cmd = cmd.env("LOANS_PASSWORD", "not-the-password");
    let text = login_dag(&site, "http_bad_login", "loans", false).replace("    operator: http.download\n", "    operator: http.download\n    retries: 2\n");
    let file = home.write("bad_login.yaml", &text);
    let done = cmd.run_file(&file, "2024-03-01", LIMIT);
    done.expect_code(1);
    let download = cmd.task("http_bad_login", &done.run_id(), "download");
    assert_eq!(download["state"], "failed");
    // Final: the task's two retries are not spent on a wrong password.
    assert_eq!(download["try_number"], 1, "{download:#}");
    assert_eq!(
        download["error"],
        format!("login at {} answered 401 Unauthorized: check the credentials: login.fields and the password in LOANS_PASSWORD", site.url("/login")).as_str()
    );
    assert!(site.requests_for("/files/loans_2024Q1.zip").is_empty(), "downloaded after a failed login");
}

#[test]
fn errors_name_the_url_the_status_and_the_fix() {
    let site = site();
    site.put_file("loans_2024Q1.zip", quarter_zip("2024Q1").0, true);
    let (home, cmd) = util::setup_with_env(ENV);
    let text = format!(
        r#"dag: http_errors
defaults:
  retries: 0
tasks:
  - id: no_login
    operator: http.download
    with:
      url: {protected}
      destination: a
  - id: missing
    operator: http.download
    with:
      url: {missing}
      destination: b
  - id: unreachable
    operator: http.request
    with:
      url: http://127.0.0.1:1/health
      http_retries: 1
      http_retry_delay: 10ms
"#,
        protected = site.url("/files/loans_2024Q1.zip"),
        missing = site.url("/public/loans_2023Q4.zip"),
    );
    let file = home.write("errors.yaml", &text);
    let done = cmd.run_file(&file, "2024-03-01", LIMIT);
    done.expect_code(1);
    let id = done.run_id();
    assert_eq!(
        cmd.task("http_errors", &id, "no_login")["error"],
        format!(
            "GET {} answered 401 Unauthorized: the server wants credentials: add `auth:` (or `login:` for a site with a login form)",
            site.url("/files/loans_2024Q1.zip")
        )
        .as_str()
    );
    assert_eq!(
        cmd.task("http_errors", &id, "missing")["error"],
        format!("GET {} answered 404 Not Found: check the URL", site.url("/public/loans_2023Q4.zip")).as_str()
    );
    let unreachable = cmd.task("http_errors", &id, "unreachable");
    let error = unreachable["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("GET http://127.0.0.1:1/health failed after 2 tries: "), "{error}");
    assert!(error.to_lowercase().contains("connect"), "{error}");
}

#[test]
fn a_dropped_connection_resumes_with_range_and_the_file_is_identical() {
    let site = site();
    // Stored, not compressed: big enough that half of it is sent before the drop.
    let text = loan_text("2024Q2", 40_000);
    let zip = zip_of(&[("Acquisition_2024Q2.txt", text.as_bytes())], true);
    assert!(zip.len() > 1_000_000, "{}", zip.len());
    site.put_file("loans_2024Q2.zip", zip.clone(), false);
    site.drop_next_body();
    let (home, cmd) = util::setup_with_env(ENV);
    let destination = home.scratch().join("resume");
    let file = home.write(
        "resume.yaml",
        &format!(
            "dag: http_resume\ntasks:\n  - id: download\n    operator: http.download\n    with:\n      url: {}\n      destination: {}\n      checksum: sha256:{}\n      http_retry_delay: 10ms\n",
            site.url("/public/loans_2024Q2.zip"),
            destination.display(),
            sha256_hex(&zip)
        ),
    );
    let done = cmd.run_file(&file, "2024-03-01", LIMIT);
    done.expect_code(0);
    let id = done.run_id();

    let seen = site.requests_for("/public/loans_2024Q2.zip");
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!((seen[0].status, seen[0].range.as_deref()), (200, None));
    let range = seen[1].range.as_deref().expect("the second request asks for the rest");
    let from: u64 = range.strip_prefix("bytes=").and_then(|r| r.strip_suffix('-')).and_then(|n| n.parse().ok()).expect("bytes=N-");
    assert!(from > 0 && from < zip.len() as u64, "resumed from byte {from} of {}", zip.len());
    assert_eq!(seen[1].status, 206);
    assert!(seen[1].if_range.as_deref().is_some_and(|v| v.starts_with('"')), "If-Range carries the ETag: {seen:#?}");
    assert_eq!(std::fs::read(destination.join("loans_2024Q2.zip")).expect("file"), zip, "the resumed file differs");
    let left = files_under(&destination);
    assert_eq!(left, [destination.join("loans_2024Q2.zip")], "no .part file is left");

    let log = home.log("http_resume", &id, "download", 1);
    assert!(log.contains(&format!("loans_2024Q2.zip: resuming from byte {from}")), "{log}");
    assert!(log.contains("loans_2024Q2.zip: the connection dropped after "), "{log}");
    assert!(log.contains("checksum sha256:"), "{log}");
}

#[test]
fn a_later_attempt_resumes_the_part_an_earlier_one_left() {
    let site = site();
    let text = loan_text("2024Q4", 30_000);
    let zip = zip_of(&[("Acquisition_2024Q4.txt", text.as_bytes())], true);
    site.put_file("loans_2024Q4.zip", zip.clone(), false);
    site.drop_next_body();
    let (home, cmd) = util::setup_with_env(ENV);
    let destination = home.scratch().join("later");
    // No retry within the attempt: the drop fails attempt 1, and attempt 2 resumes its .part.
    let file = home.write(
        "later.yaml",
        &format!(
            "dag: http_later\ntasks:\n  - id: download\n    operator: http.download\n    retries: 1\n    retry_delay: 1s\n    with:\n      url: {}\n      destination: {}\n      http_retries: 0\n",
            site.url("/public/loans_2024Q4.zip"),
            destination.display(),
        ),
    );
    let done = cmd.run_file(&file, "2024-03-01", LIMIT);
    done.expect_code(0);
    let id = done.run_id();
    let download = cmd.task("http_later", &id, "download");
    assert_eq!((download["state"].as_str(), download["try_number"].as_u64()), (Some("success"), Some(2)), "{download:#}");
    let seen = site.requests_for("/public/loans_2024Q4.zip");
    assert_eq!(seen.iter().map(|r| r.status).collect::<Vec<_>>(), [200, 206], "{seen:#?}");
    let from: u64 = seen[1].range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.strip_suffix('-')).and_then(|n| n.parse().ok()).expect("a Range request");
    assert!(from > 0, "{seen:#?}");
    assert_eq!(std::fs::read(destination.join("loans_2024Q4.zip")).expect("file"), zip);
    let first = std::fs::read_to_string(home.path().join("logs/http_later").join(&id).join("download/1.log")).expect("log of try 1");
    assert!(first.contains("the part downloaded is kept and the next attempt resumes it"), "{first}");
    let second = std::fs::read_to_string(home.path().join("logs/http_later").join(&id).join("download/2.log")).expect("log of try 2");
    assert!(second.contains("an earlier attempt downloaded"), "{second}");
    assert!(second.contains(&format!("loans_2024Q4.zip: resuming from byte {from}")), "{second}");
}

#[test]
fn answers_503_are_retried_within_the_attempt_then_succeed_or_fail_retryable() {
    let site = site();
    site.put_file("loans_2024Q3.zip", zip_of(&[("a.txt", b"1|2\n")], false), false);
    let (home, cmd) = util::setup_with_env(ENV);
    let url = site.url("/public/loans_2024Q3.zip");
    let dag = |name: &str, retries: u32| {
        format!(
            "dag: {name}\ntasks:\n  - id: download\n    operator: http.download\n    retries: 0\n    with:\n      url: {url}\n      destination: out\n      http_retries: {retries}\n      http_retry_delay: 10ms\n"
        )
    };
    site.fail_next(2);
    let file = home.write("retry.yaml", &dag("http_retry", 3));
    let done = cmd.run_file(&file, "2024-03-01", LIMIT);
    done.expect_code(0);
    let statuses: Vec<u16> = site.requests_for("/public/loans_2024Q3.zip").iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
    let log = home.log("http_retry", &done.run_id(), "download", 1);
    assert!(log.contains(&format!("GET {url}: 503 Service Unavailable; trying again in 10ms (try 2 of 4)")), "{log}");
    assert!(log.contains(&format!("GET {url}: 503 Service Unavailable; trying again in 20ms (try 3 of 4)")), "{log}");

    site.fail_next(10);
    let file = home.write("retry_out.yaml", &dag("http_retry_out", 1));
    let done = cmd.run_file(&file, "2024-03-01", LIMIT);
    done.expect_code(1);
    let download = cmd.task("http_retry_out", &done.run_id(), "download");
    assert_eq!(
        download["error"],
        format!("GET {url} answered 503 Service Unavailable after 2 tries: the server failed: it may be down; the task's retries will try again").as_str()
    );
}

#[test]
fn a_checksum_mismatch_fails_with_expected_and_actual() {
    let site = site();
    let zip = zip_of(&[("a.txt", b"1|2\n")], false);
    site.put_file("loans.zip", zip.clone(), false);
    let (home, cmd) = util::setup_with_env(ENV);
    let url = site.url("/public/loans.zip");
    let wrong = "0".repeat(64);
    let destination = home.scratch().join("sums");
    let file = home.write(
        "checksum.yaml",
        &format!(
            "dag: http_checksum\ntasks:\n  - id: download\n    operator: http.download\n    retries: 2\n    with:\n      url: {url}\n      destination: {}\n      checksum: sha256:{wrong}\n",
            destination.display()
        ),
    );
    let done = cmd.run_file(&file, "2024-03-01", LIMIT);
    done.expect_code(1);
    let download = cmd.task("http_checksum", &done.run_id(), "download");
    assert_eq!(
        download["error"],
        format!(
            "checksum mismatch for {url}: expected sha256:{wrong}, got sha256:{}: check `checksum`, or whether the server now publishes another file",
            sha256_hex(&zip)
        )
        .as_str()
    );
    assert_eq!(download["try_number"], 1, "a mismatch is final: {download:#}");
    let left = files_under(&destination);
    assert!(left.is_empty(), "a file that failed its checksum is left behind: {left:?}");
}

#[test]
fn if_changed_skips_the_download_and_its_downstream_tasks_until_the_file_changes() {
    let site = site();
    let (first_zip, _, _) = quarter_zip("2024Q1");
    site.put_file("loans_2024Q1.zip", first_zip.clone(), true);
    let (home, cmd) = util::setup_with_env(ENV);
    let file = home.write("changed.yaml", &login_dag(&site, "http_changed", "loans", true));

    let first = cmd.run_file(&file, "2024-03-01", LIMIT);
    first.expect_code(0);
    let first_id = first.run_id();
    let download = cmd.task("http_changed", &first_id, "download");
    assert_eq!((download["state"].as_str(), download["outputs"]["changed"].as_bool()), (Some("success"), Some(true)));
    let etag = download["outputs"]["sources"][0]["etag"].as_str().expect("etag kept for the next run").to_string();

    // Nothing changed: the server answers 304, the download and its downstream task skip.
    for (date, previous) in [("2024-06-01", "first"), ("2024-09-01", "a skipped run")] {
        let again = cmd.run_file(&file, date, LIMIT);
        again.expect_code(0);
        let id = again.run_id();
        let download = cmd.task("http_changed", &id, "download");
        assert_eq!(download["state"], "skipped", "after {previous}: {download:#}");
        assert_eq!(download["outputs"]["changed"], false);
        assert_eq!(download["outputs"]["files"], serde_json::json!([]));
        assert_eq!(download["outputs"]["sources"][0]["etag"], etag.as_str(), "the comparison data carries on");
        assert_eq!(cmd.task("http_changed", &id, "load")["state"], "skipped");
        let table = cmd.run(["status", "http_changed", &id]);
        table.expect_code(0);
        for name in ["download", "load"] {
            let row = table.stdout.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{}", table.stdout));
            assert_eq!(row.split_whitespace().nth(1), Some("skipped"), "{}", table.stdout);
        }
        let log = home.log("http_changed", &id, "download", 1);
        assert!(log.contains(&format!("{}: unchanged (304 Not Modified)", site.url("/files/loans_2024Q1.zip"))), "{log}");
        let last = site.requests_for("/files/loans_2024Q1.zip").pop().expect("a request");
        assert_eq!((last.if_none_match.as_deref(), last.status), (Some(etag.as_str()), 304));
    }

    // A new file: downloaded again, and the downstream task runs.
    let (second_zip, _, _) = quarter_zip("2024Q2");
    site.put_file("loans_2024Q1.zip", second_zip.clone(), true);
    let changed = cmd.run_file(&file, "2024-12-01", LIMIT);
    changed.expect_code(0);
    let id = changed.run_id();
    let download = cmd.task("http_changed", &id, "download");
    assert_eq!((download["state"].as_str(), download["outputs"]["changed"].as_bool()), (Some("success"), Some(true)));
    assert_eq!(download["outputs"]["sources"][0]["sha256"], sha256_hex(&second_zip).as_str());
    assert_eq!(cmd.task("http_changed", &id, "load")["state"], "success");
    assert!(home.log("http_changed", &id, "load", 1).contains("Acquisition_2024Q2.txt 201"));
}

#[test]
fn if_changed_compares_content_hashes_when_the_server_sends_no_validators() {
    let site = site();
    site.without_validators();
    site.put_file("rates.zip", zip_of(&[("rates.txt", b"2024-03-01|4.5\n")], false), false);
    let (home, cmd) = util::setup_with_env(ENV);
    let file = home.write(
        "hash.yaml",
        &format!(
            "dag: http_hash\ntasks:\n  - id: download\n    operator: http.download\n    with:\n      url: {}\n      destination: rates\n      if_changed: true\n",
            site.url("/public/rates.zip")
        ),
    );
    let first = cmd.run_file(&file, "2024-03-01", LIMIT);
    first.expect_code(0);
    assert_eq!(cmd.task("http_hash", &first.run_id(), "download")["state"], "success");
    let second = cmd.run_file(&file, "2024-03-02", LIMIT);
    second.expect_code(0);
    let id = second.run_id();
    let download = cmd.task("http_hash", &id, "download");
    assert_eq!(download["state"], "skipped", "{download:#}");
    let log = home.log("http_hash", &id, "download", 1);
    assert!(log.contains(&format!("{}: unchanged (same content, sha256 ", site.url("/public/rates.zip"))), "{log}");
    let seen = site.requests_for("/public/rates.zip");
    assert!(seen.iter().all(|r| r.if_none_match.is_none() && r.if_modified_since.is_none()), "{seen:#?}");
    // The skipped run left no file in its folder.
    let folder = home.path().join("work/http_hash").join(&id).join("rates");
    let left = files_under(&folder);
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_canary_password_is_never_printed() {
    let site = site();
    site.put_file("loans_2024Q1.zip", quarter_zip("2024Q1").0, true);
    let (home, cmd) = util::setup_with_env(ENV);
    let file = home.write("canary.yaml", &login_dag(&site, "http_canary", "loans", false));
    let good = cmd.run_file(&file, "2024-03-01", LIMIT);
    good.expect_code(0);
    let good_id = good.run_id();
    // The password did reach the server: the login gave a session that the download used.
    assert!(site.requests_for("/files/loans_2024Q1.zip").iter().any(|r| r.session && r.status == 200));
    // A failing login, whose error is printed and stored.
    let wrong = home.write(
        "canary_wrong.yaml",
        &login_dag(&site, "http_canary_wrong", "loans", false).replace("username: loans-team", "username: someone-else"),
    );
    let bad = cmd.run_file(&wrong, "2024-03-01", LIMIT);
    bad.expect_code(1);
    let bad_id = bad.run_id();

    let mut shown = vec![("run".to_string(), format!("{}{}", good.stdout, good.stderr)), ("failed run".to_string(), format!("{}{}", bad.stdout, bad.stderr))];
    for args in [
        vec!["status"],
        vec!["status", "--output", "json"],
        vec!["status", "http_canary", &good_id],
        vec!["status", "http_canary", &good_id, "--output", "json"],
        vec!["status", "http_canary_wrong", &bad_id, "--output", "json"],
        vec!["logs", "http_canary", &good_id, "download"],
        vec!["logs", "http_canary_wrong", &bad_id, "download"],
    ] {
        let out = cmd.run(&args);
        shown.push((args.join(" "), format!("{}{}", out.stdout, out.stderr)));
    }
    let files = files_under(&home.path());
    let logs: Vec<&PathBuf> = files.iter().filter(|p| p.extension().is_some_and(|e| e == "log")).collect();
    assert!(logs.len() >= 3, "expected attempt logs under the home: {files:?}");
    for path in &files {
        let bytes = std::fs::read(path).unwrap_or_default();
        shown.push((path.display().to_string(), String::from_utf8_lossy(&bytes).into_owned()));
    }
    for (what, text) in &shown {
        assert!(!text.contains(CANARY), "the password appears in {what}:\n{text}");
    }
    // The operator never wrote the password: nothing in its log needed masking.
    for (dag, id) in [("http_canary", &good_id), ("http_canary_wrong", &bad_id)] {
        let log = home.log(dag, id, "download", 1);
        assert!(!log.contains("***"), "the download wrote something the masker had to hide:\n{log}");
    }
}

#[test]
fn request_outputs_reach_downstream_templates() {
    let site = site();
    let (home, cmd) = util::setup_with_env(ENV);
    let cmd = cmd.env("LOANS_WRONG_TOKEN", "not-the-api-token");
    let file = home.write(
        "request.yaml",
        &format!(
            r#"dag: http_request
tasks:
  - id: api
    operator: http.request
    with:
      url: {loans}
      query:
        quarter: "{{{{ ds }}}}"
        limit: 2
      auth:
        bearer:
          token_env: LOANS_API_TOKEN
      output_headers: [ETag, X-Missing]
  - id: post
    operator: http.request
    depends_on: [api]
    with:
      url: {echo}
      method: post
      json:
        first: "{{{{ tasks.api.outputs.body.items[0].id }}}}"
        rows: 2
      expect_status: [201]
  - id: use
    operator: shell
    depends_on: [api, post]
    with:
      command: |
        echo 'first={{{{ tasks.api.outputs.body.items[0].id }}}} count={{{{ tasks.api.outputs.body.count }}}} etag={{{{ tasks.api.outputs.headers.etag }}}}'
        echo 'echoed={{{{ tasks.post.outputs.body.body }}}} status={{{{ tasks.post.outputs.status }}}}'
  - id: form
    operator: http.request
    with:
      url: {echo}
      method: POST
      form:
        quarter: 2024Q1
        rows: 2
      expect_status: ["2xx"]
  - id: raw
    operator: http.request
    with:
      url: {echo}
      method: put
      headers:
        Content-Type: text/csv
      body: "a|b\n1|2\n"
      max_body_bytes: 20
  - id: bad_token
    operator: http.request
    retries: 2
    with:
      url: {loans}
      auth:
        bearer:
          token_env: LOANS_WRONG_TOKEN
"#,
            loans = site.url("/api/loans"),
            echo = site.url("/api/echo"),
        ),
    );
    let done = cmd.run_file(&file, "2024-03-01", LIMIT);
    done.expect_code(1);
    let id = done.run_id();
    let api = cmd.task("http_request", &id, "api");
    assert_eq!(api["state"], "success", "{api:#}");
    assert_eq!(api["outputs"]["status"], 200);
    assert_eq!(api["outputs"]["headers"], serde_json::json!({"etag": "\"loans-v7\"", "x-missing": null}));
    assert_eq!(api["outputs"]["body"]["quarter"], "2024-03-01");
    assert_eq!(api["outputs"]["body"]["items"][1]["balance"], 98000);
    assert_eq!(api["outputs"]["body_truncated"], false);
    let post = cmd.task("http_request", &id, "post");
    assert_eq!(post["outputs"]["body"]["content_type"], "application/json");
    assert_eq!(post["outputs"]["body"]["body"], r#"{"first":"L-1001","rows":2}"#);

    let form = cmd.task("http_request", &id, "form");
    assert_eq!(form["outputs"]["body"]["content_type"], "application/x-www-form-urlencoded");
    assert_eq!(form["outputs"]["body"]["body"], "quarter=2024Q1&rows=2");
    let raw = cmd.task("http_request", &id, "raw");
    assert_eq!(raw["outputs"]["status"], 201, "{raw:#}");
    assert_eq!(raw["outputs"]["body_truncated"], true);
    assert_eq!(raw["outputs"]["body"], r#"{"method":"PUT","que"#, "the first 20 bytes, as text");
    let raw_seen = site.requests_for("/api/echo");
    assert!(raw_seen.iter().any(|r| r.method == "PUT"), "{raw_seen:#?}");

    let lines: Vec<String> = home.log("http_request", &id, "use", 1)
        .lines()
        .filter_map(|l| l.split_once(" | ").map(|(_, t)| t.to_string()))
        .collect();
    assert_eq!(lines, [r#"first=L-1001 count=2 etag="loans-v7""#, r#"echoed={"first":"L-1001","rows":2} status=201"#]);

    let seen = site.requests_for("/api/loans?limit=2&quarter=2024-03-01");
    assert_eq!(seen.len(), 1, "{:#?}", site.requests());
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {API_TOKEN}").as_str()));

    let bad = cmd.task("http_request", &id, "bad_token");
    assert_eq!(bad["try_number"], 1, "a 401 is final: {bad:#}");
    assert_eq!(
        bad["error"],
        format!(
            "GET {} answered 401 Unauthorized, expected 2xx: check the credentials in LOANS_WRONG_TOKEN (auth.bearer.token_env)\nthe server said: {{\"error\":\"bad token\"}}",
            site.url("/api/loans")
        )
        .as_str()
    );
}

/// Broken settings fail `flowctl validate` with the field's path, line and column:
/// `tests/data/http/invalid/NAME.yaml` against `NAME.expected`.
#[test]
fn invalid_settings_are_reported_at_compile_time_with_their_path() {
    let (_home, cmd) = util::setup();
    let dir = util::repo_root().join("tests/data/http/invalid");
    let cases = util::files_ending(&dir, &["yaml"]);
    assert!(cases.len() >= 5, "the HTTP compile cases are missing from {}", dir.display());
    let mut failures = Vec::new();
    for case in &cases {
        let relative = case.strip_prefix(util::repo_root()).expect("under the repository");
        let expected_path = case.with_extension("expected");
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| panic!("read {}: {e}", expected_path.display()));
        let out = cmd.run(["validate".as_ref(), relative.as_os_str()]);
        let errors: Vec<&str> = out.stdout.lines().chain(out.stderr.lines()).filter(|l| l.contains(": error: ")).collect();
        let want: Vec<&str> = expected.lines().filter(|l| !l.trim().is_empty()).collect();
        if out.code != 2 || errors != want {
            failures.push(format!("{}: exit {}\nexpected:\n{}\nactual:\n{}{}", relative.display(), out.code, want.join("\n"), out.stdout, out.stderr));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
