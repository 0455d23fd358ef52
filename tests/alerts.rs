//! End-to-end tests of alerts against real servers on loopback: an SMTP server (Python's aiosmtpd,
//! `tests/support/smtp_server.py`, with STARTTLS and logins when a test asks) and a small HTTP
//! receiver for webhooks, both started by the test on a free port. The real `flowctl` binary runs
//! DAGs that fail, retry and succeed, and the tests check what reached the servers, what
//! `flowctl status` records, and that a run never waits on or fails because of an alert.
//!
//! `scripts/test.sh` installs aiosmtpd into a virtualenv and exports FLOWCTL_TEST_PYTHON; without
//! it these tests fail and say so. Nothing here sleeps: servers are ready when they answer, and
//! `flowctl run` exits only once its alerts are delivered or given up on.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use util::smtp::{Smtp, SmtpOptions};
use util::{free_port as closed_port, setup_with_scratch, task_in};

// ---------------------------------------------------------------------------------------------
// The SMTP server (util::smtp)

/// A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem) in `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("certificate");
    std::fs::create_dir_all(dir).expect("folder");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write cert");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
    (cert, key)
}

// ---------------------------------------------------------------------------------------------
// The webhook receiver

/// A request the receiver got.
#[derive(Debug)]
struct Posted {
    path: String,
    content_type: String,
    body: Value,
}

/// An HTTP receiver on 127.0.0.1 that records each request before answering it: with the status
/// of the first unused `(path, status)` pair for its path, else 200. Its thread ends with the
/// test process.
struct Receiver {
    port: u16,
    requests: mpsc::Receiver<Posted>,
}

impl Receiver {
    fn start(statuses: &[(&str, u16)]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let statuses: Vec<(String, u16)> = statuses.iter().map(|(p, s)| (p.to_string(), *s)).collect();
        let statuses = Arc::new(Mutex::new(statuses));
        let (tx, requests) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(posted) = read_request(&stream) else { continue };
                let status = {
                    let mut s = statuses.lock().expect("statuses");
                    match s.iter().position(|(path, _)| *path == posted.path) {
                        Some(i) => s.remove(i).1,
                        None => 200,
                    }
                };
                let _ = tx.send(posted);
                let mut stream = stream;
                let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope");
            }
        });
        Receiver { port, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Everything received so far.
    fn received(&self) -> Vec<Posted> {
        self.requests.try_iter().collect()
    }
}

fn read_request(stream: &TcpStream) -> Option<Posted> {
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).ok()?;
    let path = first.split_whitespace().nth(1)?.to_string();
    let (mut length, mut content_type) = (0usize, String::new());
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "content-type" => content_type = value.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Posted { path, content_type, body: serde_json::from_slice(&body).unwrap_or(Value::Null) })
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// An smtp: section for a plain server on `port`.
fn plain_smtp(port: u16) -> String {
    format!("smtp:\n  host: 127.0.0.1\n  port: {port}\n  tls: none\n  from: flowctl <flowctl@example.com>\n")
}

/// The run's duration as recorded, from `status --output json`.
fn recorded_duration(status: &Value) -> Duration {
    let time = |key: &str| {
        let text = status["run"][key].as_str().unwrap_or_else(|| panic!("run.{key} in {status:#}"));
        chrono::DateTime::parse_from_rfc3339(text).expect("timestamp")
    };
    (time("end") - time("start")).to_std().expect("end after start")
}

// ---------------------------------------------------------------------------------------------
// Tests

/// A DAG whose `load` task prints 60 numbered lines and fails; `extract` succeeds.
const FAILING: &str = r#"dag: al_fail
alerts:
  email:
    to: [oncall@example.com, data-team@example.com]
    on: [failure]
tasks:
  - id: extract
    operator: shell
    with:
      command: echo extracted
  - id: load
    operator: shell
    depends_on: [extract]
    with:
      command: |
        for i in $(seq -w 1 60); do echo "row-$i"; done
        echo "the warehouse refused the load" >&2
        exit 3
"#;

#[test]
fn a_failing_task_sends_one_email_to_its_recipients_with_the_log_tail() {
    let (home, cmd) = setup_with_scratch();
    let smtp = Smtp::start(&home.scratch(), SmtpOptions::default());
    home.write_config(&format!("{}alerts:\n  ui_url: https://flowctl.example.com/\n", plain_smtp(smtp.port)));
    let dag = home.write("fail.yaml", FAILING);
    let run = cmd.run(["run", dag.to_str().expect("path"), "--date", "2024-03-01"]);
    run.expect_code(1);
    let id = run.run_id();
    assert!(run.stdout.contains("alerts: 1 sent\n"), "{}", run.stdout);

    let mail = smtp.messages();
    assert_eq!(mail.len(), 1, "exactly one message: {mail:#?}");
    let mail = &mail[0];
    assert_eq!(mail.rcpt_tos, ["oncall@example.com", "data-team@example.com"]);
    assert_eq!(mail.subject, format!("[flowctl] FAILED al_fail.load (run {id}, try 1 of 1)"));
    assert_eq!(mail.from, "flowctl <flowctl@example.com>");
    for expected in [
        "Task load of DAG al_fail failed on try 1 of 1; it will not be retried.",
        "DAG:          al_fail\n",
        &format!("Run:          {id}\n"),
        "Logical date: 2024-03-01T00:00:00Z\n",
        "Try:          1 of 1\n",
        "Error:        command exited with code 3: the warehouse refused the load",
        &format!("Run page:     https://flowctl.example.com/dags/al_fail/runs/{}\n", id.replace(':', "%3A")),
    ] {
        assert!(mail.body.contains(expected), "{expected:?} is not in the body:\n{}", mail.body);
    }
    // The last 50 lines of the attempt log, as the file has them, and nothing before them.
    let log_path = home.path().join("logs/al_fail").join(&id).join("load/1.log");
    let log = std::fs::read_to_string(&log_path).expect("attempt log");
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() > 50, "the log has {} lines", lines.len());
    let tail: String = lines[lines.len() - 50..].iter().map(|l| format!("    {l}\n")).collect();
    assert!(mail.body.contains(&format!("Last 50 lines of the attempt log:\n\n{tail}")), "{}", mail.body);
    assert!(mail.body.contains("| row-60\n") && !mail.body.contains("| row-01\n"), "{}", mail.body);

    let status = cmd.status("al_fail", &id);
    let alerts = task_in(&status, "load")["alerts"].as_array().expect("alerts of load").clone();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!((alerts[0]["state"].as_str(), alerts[0]["tries"].as_u64()), (Some("delivered"), Some(1)));
    assert_eq!(alerts[0]["event"], "failure");
    assert!(task_in(&status, "extract")["alerts"].as_array().expect("alerts").is_empty());
    // Nothing undelivered to show.
    let text = cmd.run(["status", "al_fail", &id]);
    assert!(!text.stdout.contains("alert"), "{}", text.stdout);
}

#[test]
fn retry_alerts_name_the_try_and_failure_alerts_wait_for_the_last_try() {
    let (home, cmd) = setup_with_scratch();
    let smtp = Smtp::start(&home.scratch(), SmtpOptions::default());
    home.write_config(&plain_smtp(smtp.port));
    let dag = home.write(
        "retry.yaml",
        r#"dag: al_retry
alerts:
  email:
    to: [oncall@example.com]
    on: [retry, failure]
tasks:
  - id: flaky
    operator: shell
    retries: 2
    retry_delay: 10ms
    with:
      command: |
        n=$(cat "$SCRATCH/count" 2>/dev/null || echo 0)
        n=$((n + 1)); echo "$n" > "$SCRATCH/count"
        if [ "$n" -lt 3 ]; then echo "not yet: attempt $n" >&2; exit 1; fi
        echo done
"#,
    );
    let run = cmd.run(["run", dag.to_str().expect("path")]);
    run.expect_code(0);
    let id = run.run_id();
    let subjects: Vec<String> = smtp.messages().into_iter().map(|m| m.subject).collect();
    assert_eq!(
        subjects,
        [
            format!("[flowctl] RETRY al_retry.flaky (run {id}, try 1 of 3)"),
            format!("[flowctl] RETRY al_retry.flaky (run {id}, try 2 of 3)"),
        ],
        "one message per failed try that will be retried, none for the success"
    );
    let mail = smtp.messages();
    assert!(mail[1].body.contains("failed on try 2 of 3 and will be retried") && mail[1].body.contains("not yet: attempt 2"), "{}", mail[1].body);
}

#[test]
fn with_smtp_down_the_run_is_unchanged_and_the_failed_delivery_is_recorded() {
    let (home, cmd) = setup_with_scratch();
    let dag = home.write("fail.yaml", FAILING);
    // The same DAG with no config file: no alerts at all.
    let baseline = cmd.run(["run", dag.to_str().expect("path")]);
    baseline.expect_code(1);
    let baseline_status = cmd.status("al_fail", &baseline.run_id());

    let port = closed_port();
    home.write_config(&plain_smtp(port));
    let run = cmd.run(["run", dag.to_str().expect("path")]);
    run.expect_code(1);
    let id = run.run_id();
    let status = cmd.status("al_fail", &id);
    for t in ["extract", "load"] {
        assert_eq!(task_in(&status, t)["state"], task_in(&baseline_status, t)["state"], "task {t}");
    }
    assert_eq!(status["run"]["state"], "failed");
    // Three tries with backoff take 3 s; the run's own recorded time does not include them.
    let took = recorded_duration(&status);
    assert!(took < Duration::from_millis(2500), "the run took {took:?}: alerts delayed it");

    let alert = &task_in(&status, "load")["alerts"][0];
    assert_eq!((alert["state"].as_str(), alert["tries"].as_u64()), (Some("failed"), Some(3)), "{alert:#}");
    let connect = format!("cannot connect to the SMTP server 127.0.0.1:{port}: connection refused; check smtp.host and smtp.port in");
    assert!(alert["last_error"].as_str().is_some_and(|e| e.contains(&connect)), "{alert:#}");
    assert!(run.stderr.contains(&format!("warning: alert not delivered after 3 tries: email to oncall@example.com, data-team@example.com for failure of task load (try 1) of run {id}: {connect}")), "{}", run.stderr);
    assert!(run.stdout.contains(&format!("alerts: 0 sent, 1 not delivered (see `flowctl status al_fail {id}`)")), "{}", run.stdout);

    let text = cmd.run(["status", "al_fail", &id]);
    text.expect_code(0);
    let line = format!(
        "alert not delivered: email to oncall@example.com, data-team@example.com for failure of task load (try 1) after 3 tries: {connect}"
    );
    assert!(text.stdout.contains(&line), "{}", text.stdout);
}

/// A DAG whose task prints the SMTP password's variable and fails with it in its error.
const CANARY_DAG: &str = r#"dag: al_canary
alerts:
  email:
    to: [oncall@example.com]
tasks:
  - id: leak
    operator: shell
    with:
      command: |
        echo "password is $SMTP_PW"
        echo "cannot log in with $SMTP_PW" >&2
        exit 1
"#;

const CANARY: &str = "canary-pw-5f1e9a";

#[test]
fn starttls_with_a_self_signed_certificate_works_where_the_config_trusts_it() {
    let (home, cmd) = setup_with_scratch();
    let (cert, key) = self_signed(&home.scratch().join("tls"));
    let smtp = Smtp::start(&home.scratch(), SmtpOptions { tls: Some((&cert, &key)), login: Some(("flowctl", CANARY)) });
    let cmd = cmd.env("SMTP_PW", CANARY);
    let smtp_section = |trust: &str| {
        format!(
            "smtp:\n  host: 127.0.0.1\n  port: {}\n  tls: starttls\n  username: flowctl\n  password_env: SMTP_PW\n  from: flowctl@example.com\n{trust}alerts:\n  to: [oncall@example.com]\n",
            smtp.port
        )
    };

    // Not trusted: refused, and the message says what to set.
    home.write_config(&smtp_section(""));
    let refused = cmd.run(["alert", "test"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains(&format!("error: cannot send the test message: TLS with the SMTP server 127.0.0.1:{} failed: invalid peer certificate", smtp.port))
            && refused.stderr.contains("set smtp.ca_file in"),
        "{}",
        refused.stderr
    );
    assert!(smtp.messages().is_empty());

    // Trusted through ca_file (relative to the config file's folder).
    std::fs::copy(&cert, home.path().join("smtp-ca.pem")).expect("copy cert");
    home.write_config(&smtp_section("  ca_file: smtp-ca.pem\n"));
    let sent = cmd.run(["alert", "test"]);
    sent.expect_code(0);
    assert_eq!(
        sent.stdout,
        format!("sent a test message to oncall@example.com through 127.0.0.1:{} (starttls, user flowctl)\n", smtp.port)
    );
    let dag = home.write("canary.yaml", CANARY_DAG);
    let run = cmd.run(["run", dag.to_str().expect("path")]);
    run.expect_code(1);
    let mail = smtp.messages();
    assert_eq!(mail.len(), 2, "{mail:#?}");
    assert_eq!(mail[0].subject, "[flowctl] test message");
    for m in &mail {
        assert!(m.tls && m.login.as_deref() == Some("flowctl"), "sent over TLS, logged in: {m:#?}");
    }
    assert!(mail[1].subject.starts_with("[flowctl] FAILED al_canary.leak ("), "{}", mail[1].subject);
}

#[test]
fn a_canary_smtp_password_never_appears_in_logs_status_mail_or_errors() {
    let (home, cmd) = setup_with_scratch();
    let (cert, key) = self_signed(&home.scratch().join("tls"));
    let smtp = Smtp::start(&home.scratch(), SmtpOptions { tls: Some((&cert, &key)), login: Some(("flowctl", CANARY)) });
    // SMTP_PW's name does not mark it as secret: only the config's password_env does.
    let cmd = cmd.env("SMTP_PW", CANARY);
    let config = format!(
        "smtp:\n  host: 127.0.0.1\n  port: {}\n  username: flowctl\n  password_env: SMTP_PW\n  from: flowctl@example.com\n  ca_file: {}\n",
        smtp.port,
        cert.display()
    );
    home.write_config(&config);
    let dag = home.write("canary.yaml", CANARY_DAG);
    let run = cmd.run(["run", dag.to_str().expect("path")]);
    run.expect_code(1);
    let id = run.run_id();
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1, "the login with the canary worked: {mail:#?}");
    let log = cmd.run(["logs", "al_canary", &id, "leak"]);
    assert!(log.stdout.contains("password is ***"), "the task saw a masked value: {}", log.stdout);

    // A wrong password: the error names the user and the variable, never the password.
    let wrong = cmd.clone().env("SMTP_PW", "wrong-canary-pw-77c2");
    let failed = wrong.run(["alert", "test", "--to", "oncall@example.com"]);
    failed.expect_code(2);
    assert!(
        failed.stderr.contains(&format!("authentication failed for user flowctl at the SMTP server 127.0.0.1:{}: 535", smtp.port))
            && failed.stderr.contains("the password in $SMTP_PW"),
        "{}",
        failed.stderr
    );
    let wrong_run = wrong.run(["run", dag.to_str().expect("path")]);
    let wrong_id = wrong_run.run_id();

    let mut shown = vec![
        ("run stdout".to_string(), run.stdout.clone()),
        ("run stderr".to_string(), run.stderr.clone()),
        ("mail body".to_string(), mail[0].body.clone()),
        ("logs".to_string(), log.stdout.clone()),
        ("alert test stderr".to_string(), failed.stderr.replace("wrong-canary-pw-77c2", "")),
        ("failed run stdout".to_string(), wrong_run.stdout.clone()),
        ("failed run stderr".to_string(), wrong_run.stderr.clone()),
    ];
    for args in [
        vec!["status", "al_canary", &id],
        vec!["status", "al_canary", &id, "--output", "json"],
        vec!["status", "al_canary", &wrong_id],
        vec!["status", "al_canary", &wrong_id, "--output", "json"],
    ] {
        let out = cmd.run(&args);
        shown.push((args.join(" "), out.stdout + &out.stderr));
    }
    let wrong_status = cmd.run(["status", "al_canary", &wrong_id]);
    assert!(wrong_status.stdout.contains("authentication failed for user flowctl"), "{}", wrong_status.stdout);
    for (what, text) in &shown {
        assert!(!text.contains(CANARY), "the SMTP password appears in {what}:\n{text}");
        assert!(!text.contains("wrong-canary-pw-77c2"), "the wrong SMTP password appears in {what}:\n{text}");
    }
}

#[test]
fn webhooks_post_flowctl_json_and_slack_messages() {
    let (home, cmd) = setup_with_scratch();
    // The first POST is answered 503: the dispatcher tries again.
    let receiver = Receiver::start(&[("/json", 503)]);
    let dag = home.write(
        "hooks.yaml",
        &format!(
            r#"dag: al_hooks
alerts:
  webhook:
    urls: ["{json}"]
    on: [run_failure]
tasks:
  - id: load
    operator: shell
    alerts:
      webhook:
        urls: ["{slack}"]
        format: slack
        on: [failure]
    with:
      command: |
        echo "loading <orders> & more"
        exit 4
"#,
            json = receiver.url("/json"),
            slack = receiver.url("/slack/T000/B000/secret")
        ),
    );
    let run = cmd.run(["run", dag.to_str().expect("path")]);
    run.expect_code(1);
    let id = run.run_id();
    let posted = receiver.received();
    let paths: Vec<&str> = posted.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths.len(), 3, "{posted:#?}");
    assert!(posted.iter().all(|p| p.content_type == "application/json"), "{posted:#?}");

    let slack: Vec<&Posted> = posted.iter().filter(|p| p.path.starts_with("/slack")).collect();
    let json: Vec<&Posted> = posted.iter().filter(|p| p.path == "/json").collect();
    assert_eq!((slack.len(), json.len()), (1, 2), "one Slack message; the JSON one twice (503, then 200): {paths:?}");
    let subject = format!("[flowctl] FAILED al_hooks.load (run {id}, try 1 of 1)");
    let body = &slack[0].body;
    assert_eq!(body["text"], subject.as_str());
    let blocks = body["blocks"].as_array().expect("blocks");
    assert_eq!(blocks[0]["type"], "header");
    let all = serde_json::to_string(blocks).expect("JSON");
    assert!(all.contains("loading &lt;orders&gt; &amp; more"), "log tail, escaped for Slack: {all}");

    let body = &json[1].body;
    assert_eq!(body, &json[0].body, "a retry sends the same message");
    assert_eq!((body["event"].as_str(), body["dag_id"].as_str(), body["run_id"].as_str()), (Some("run_failure"), Some("al_hooks"), Some(id.as_str())));
    assert_eq!(body["subject"], format!("[flowctl] RUN FAILED al_hooks (run {id})").as_str());
    assert_eq!(body["tasks"][0]["task_id"], "load");
    assert_eq!(body["tasks"][0]["state"], "failed");

    let status = cmd.status("al_hooks", &id);
    let run_alert = &status["alerts"][0];
    assert_eq!((run_alert["state"].as_str(), run_alert["tries"].as_u64()), (Some("delivered"), Some(2)), "{run_alert:#}");
    assert!(run_alert["last_error"].as_str().is_some_and(|e| e.contains("answered 503")), "{run_alert:#}");
    assert_eq!(task_in(&status, "load")["alerts"][0]["state"], "delivered");
}

#[test]
fn a_webhook_that_refuses_is_not_retried_and_its_secret_path_is_not_shown() {
    let (home, cmd) = setup_with_scratch();
    let receiver = Receiver::start(&[("/hooks/secret-path", 404)]);
    let dag = home.write(
        "refused.yaml",
        &format!(
            "dag: al_refused\nalerts:\n  webhook:\n    urls: [\"{}\"]\ntasks:\n  - id: load\n    operator: shell\n    with:\n      command: exit 1\n",
            receiver.url("/hooks/secret-path")
        ),
    );
    let run = cmd.run(["run", dag.to_str().expect("path")]);
    run.expect_code(1);
    let id = run.run_id();
    assert_eq!(receiver.received().len(), 1, "a 404 is final");
    let text = cmd.run(["status", "al_refused", &id]);
    let line = format!(
        "alert not delivered: webhook http://127.0.0.1:{}/… for failure of task load (try 1) after 1 try: webhook http://127.0.0.1:{}/… answered 404 Not Found: nope",
        receiver.port, receiver.port
    );
    assert!(text.stdout.contains(&line), "{}", text.stdout);
    assert!(!text.stdout.contains("secret-path") && !run.stderr.contains("secret-path"), "{}{}", text.stdout, run.stderr);
}

#[test]
fn email_without_to_goes_to_the_config_recipients_and_no_recipients_is_said() {
    let (home, cmd) = setup_with_scratch();
    let smtp = Smtp::start(&home.scratch(), SmtpOptions::default());
    let dag = home.write(
        "defaults.yaml",
        "dag: al_defaults\nalerts:\n  email:\n    on: [failure]\ntasks:\n  - id: load\n    operator: shell\n    with:\n      command: exit 1\n",
    );
    home.write_config(&format!("{}alerts:\n  to: [team@example.com]\n", plain_smtp(smtp.port)));
    cmd.run(["run", dag.to_str().expect("path")]).expect_code(1);
    let mail = smtp.messages();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].rcpt_tos, ["team@example.com"]);

    home.write_config(&plain_smtp(smtp.port));
    let run = cmd.run(["run", dag.to_str().expect("path")]);
    run.expect_code(1);
    let id = run.run_id();
    assert!(
        run.stderr.contains("warning: DAG \"al_defaults\" asks for alert emails (alerts.email in")
            && run.stderr.contains("but names no recipients"),
        "said at the start of the run: {}",
        run.stderr
    );
    assert_eq!(smtp.messages().len(), 1, "nothing sent");
    let text = cmd.run(["status", "al_defaults", &id]);
    assert!(text.stdout.contains("alert not delivered: email (no recipients) for failure of task load (try 1): no recipients"), "{}", text.stdout);
}

#[test]
fn alert_test_says_plainly_what_went_wrong() {
    let (home, cmd) = setup_with_scratch();
    let config = home.path().join("config.yaml");
    let run = cmd.run(["alert", "test", "--to", "me@example.com"]);
    run.expect_code(2);
    assert_eq!(
        run.stderr,
        format!("error: there is no config file ({}), so no email can be sent; add an smtp: section with host and from (see docs/config.md)\n", config.display())
    );

    home.write_config("alerts:\n  to: [me@example.com]\n");
    let run = cmd.run(["alert", "test"]);
    run.expect_code(2);
    assert!(run.stderr.starts_with(&format!("error: {} has no `smtp:` section", config.display())), "{}", run.stderr);

    home.write_config("smtp:\n  host: 127.0.0.1\n  prot: 25\n  from: flowctl@example.com\n");
    let run = cmd.run(["alert", "test", "--to", "me@example.com"]);
    run.expect_code(2);
    assert_eq!(
        run.stderr,
        format!(
            "error: {}:3:3: unknown key \"prot\" in `smtp:` (did you mean \"port\"?)\n  hint: smtp accepts: host, port, tls, username, password_env, from, ca_file; see docs/config.md\n",
            config.display()
        )
    );

    let port = closed_port();
    home.write_config(&plain_smtp(port));
    let run = cmd.run(["alert", "test", "--to", "me@example.com"]);
    run.expect_code(2);
    assert!(run.stderr.starts_with(&format!("error: cannot send the test message: cannot connect to the SMTP server 127.0.0.1:{port}: connection refused; check smtp.host and smtp.port in {}", config.display())), "{}", run.stderr);

    home.write_config(&format!("smtp:\n  host: 127.0.0.1\n  port: {port}\n  username: flowctl\n  password_env: FLOWCTL_TEST_UNSET_PW\n  from: flowctl@example.com\n"));
    let run = cmd.run(["alert", "test", "--to", "me@example.com"]);
    run.expect_code(2);
    assert!(run.stderr.contains("smtp.password_env in") && run.stderr.contains("names the environment variable FLOWCTL_TEST_UNSET_PW, which is not set"), "{}", run.stderr);

    // --config names another file; a run with a broken config stops before it starts.
    let smtp = Smtp::start(&home.scratch(), SmtpOptions::default());
    let other = home.write("other.yaml", &plain_smtp(smtp.port));
    let run = cmd.run(["--config", other.to_str().expect("path"), "alert", "test", "--to", "me@example.com"]);
    run.expect_code(0);
    assert_eq!(run.stdout, format!("sent a test message to me@example.com through 127.0.0.1:{} (none)\n", smtp.port));
    assert_eq!(smtp.messages()[0].rcpt_tos, ["me@example.com"]);
    let missing = home.scratch().join("missing.yaml");
    let run = cmd.run(["run", "--config", missing.to_str().expect("path"), "tests/data/runtime/success.yaml"]);
    run.expect_code(2);
    assert!(run.stderr.starts_with(&format!("error: cannot read config file {}", missing.display())), "{}", run.stderr);
}

#[test]
fn an_event_seen_again_or_after_a_restart_is_sent_once() {
    use flowctl_engine::alerts::AlertDispatcher;
    use flowctl_engine::config::Config;
    use flowctl_engine::executor::Progress;
    use flowctl_engine::lifecycle::TaskState;
    use flowctl_engine::secrets::Masker;
    use flowctl_engine::state::{RunState, Store, Trigger};

    let receiver = Receiver::start(&[]);
    let text = format!(
        "dag: al_once\nalerts:\n  webhook:\n    urls: [\"{}\"]\n    on: [failure, retry, run_failure]\ntasks:\n  - id: load\n    operator: shell\n    retries: 1\n    with:\n      command: exit 1\n",
        receiver.url("/once")
    );
    let file = flowctl_engine::SourceFile { path: "once.yaml".into(), bytes: text.into_bytes() };
    let compiled = flowctl_engine::compile(&[file], &flowctl_operators::registry()).expect("compiles");
    let dag = Arc::new(compiled.dags.into_iter().next().expect("a DAG"));
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    let run = flowctl_engine::runs::create_run(&store, &dag, 1, Trigger::Manual, chrono::Utc::now(), Default::default())
        .expect("run");
    let settled = |state, try_number| Progress::TaskSettled {
        task_id: "load".into(),
        state,
        try_number,
        duration: Some(Duration::from_millis(5)),
        error: Some("exit code 1".into()),
    };
    // Two processes in turn (a restart), each seeing every event twice.
    for _ in 0..2 {
        let dispatcher = AlertDispatcher::new(Config::default(), &store, dir.path().join("logs"), Masker::default(), |_| {})
            .expect("dispatcher");
        let observer = dispatcher.observer(dag.clone(), &run, Arc::new(|| {}));
        for _ in 0..2 {
            observer.observe(&settled(TaskState::UpForRetry, 1));
            observer.observe(&settled(TaskState::Failed, 2));
            observer.observe(&Progress::RunFinished { state: RunState::Failed });
        }
        dispatcher.finish(Duration::from_secs(10));
    }
    let mut events: Vec<String> =
        receiver.received().iter().map(|p| format!("{} {}", p.body["event"].as_str().unwrap_or("?"), p.body["try_number"])).collect();
    events.sort();
    assert_eq!(events, ["failure 2", "retry 1", "run_failure null"], "one POST per event");
}

#[test]
fn a_server_that_never_answers_holds_flowctl_run_about_ten_seconds_at_most() {
    let (home, cmd) = setup_with_scratch();
    // Accepts connections and never says a word; the connections stay open.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming() {
            open.push(stream);
        }
    });
    home.write_config(&plain_smtp(port));
    let dag = home.write("fail.yaml", FAILING);
    let started = std::time::Instant::now();
    let run = cmd.run(["run", dag.to_str().expect("path")]);
    let waited = started.elapsed();
    run.expect_code(1);
    assert!(waited < Duration::from_secs(20), "flowctl run took {waited:?}; its wait for alerts is bounded at 10 s");
    let id = run.run_id();
    let status = cmd.status("al_fail", &id);
    assert!(recorded_duration(&status) < Duration::from_millis(2500), "{status:#}");
    let alert = &task_in(&status, "load")["alerts"][0];
    assert_eq!(alert["state"], "failed", "{alert:#}");
    assert_eq!(
        alert["last_error"], "flowctl stopped waiting for it when it exited (its first try had not finished)",
        "{alert:#}"
    );
}

/// The config file examples in the docs (```yaml blocks that start with `# config.yaml`) must be
/// files flowctl reads.
#[test]
fn config_examples_in_the_docs_are_valid_config_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Examples may name a CA file next to config.yaml.
    let (cert, _) = self_signed(dir.path());
    std::fs::copy(&cert, dir.path().join("corp-root-ca.pem")).expect("copy");
    let mut checked = 0;
    for doc in ["docs/config.md", "docs/alerts.md"] {
        let text = std::fs::read_to_string(util::repo_root().join(doc)).expect("read doc");
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let fence = line.trim_start();
            if fence != "```yaml" {
                continue;
            }
            let indent = line.len() - fence.len();
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim_start() != "```").map(|l| l.get(indent..).unwrap_or("")).collect();
            if block.first() != Some(&"# config.yaml") {
                continue;
            }
            let yaml = block.join("\n");
            let parsed = flowctl_engine::config::Config::parse(&dir.path().join("config.yaml"), &yaml, &flowctl_operators::registry().aws_services());
            assert!(parsed.is_ok(), "{doc}: a config example does not read: {}\n{yaml}", parsed.unwrap_err());
            checked += 1;
        }
    }
    assert!(checked >= 4, "found only {checked} config examples");
}
