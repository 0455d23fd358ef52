//! End-to-end tests of hostile secrets: values with `/`, `+`, a space, `%`, `"` and `\`, given in
//! the encodings they really travel in (URL-encoded in a `FLOWCTL_CONN_*` URI, base64 in an HTTP
//! `Authorization` header, JSON-escaped, form-encoded), and a `--param` equal to a secret. The
//! real binary runs tasks that print and fail with every form, pass them downstream and to an
//! HTTP site that sends the request's headers back; then every line the commands printed, every
//! view of the runs (with and without a server, text and JSON, the API's answers) and every file
//! under the home is searched for each form.

mod util;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use util::{files_under, setup_with_env, Cmd, Run, Server, TempHome};

/// The connection's password. No environment variable holds it as it is: only the connection
/// (whose variable's name does not look secret) can tell the masker about it.
const CONN_CANARY: &str = r#"Zq7/pl+us sp%ce"quo\te-canary"#;
/// The HTTP site's password, in `SITE_PASSWORD`, sent as HTTP Basic credentials.
const HTTP_CANARY: &str = r#"Hx9/ba+sic au%th"pass\word-canary"#;
/// A token in `LOADER_TOKEN`, also given to the runs as `--param token=...`.
const PARAM_CANARY: &str = "Pt4/para+m to%ken-canary";
/// The user of both logins.
const USER: &str = "loader";
/// A broken run must not hang the test.
const LIMIT: Duration = Duration::from_secs(120);

/// Percent-encodes every byte that is not unreserved (RFC 3986), as the strictest URL builders do;
/// `keep` lists more bytes left as they are, `space_plus` writes a space as `+` (form encoding).
fn percent(text: &str, keep: &[u8], space_plus: bool) -> String {
    text.bytes()
        .map(|b| match b {
            b' ' if space_plus => "+".to_string(),
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// `%2F` written `%2f`: the same encoding in lower-case hex.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::new();
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        out.push('%');
        out.push_str(&rest[at + 1..at + 3].to_ascii_lowercase());
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    out
}

/// Base64 with `alphabet`'s last two characters (`+/` or `-_`), padded.
fn base64(bytes: &[u8], last_two: &str) -> String {
    let alphabet: Vec<char> = format!("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789{last_two}").chars().collect();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize]);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every form `secret` takes on its way, by name.
fn forms(secret: &str) -> Vec<(String, String)> {
    let strict = percent(secret, b"", false);
    vec![
        ("raw".into(), secret.to_string()),
        ("percent-encoded".into(), strict.clone()),
        ("percent-encoded in lower-case hex".into(), lower_hex(&strict)),
        ("form-encoded".into(), percent(secret, b"", true)),
        ("path-encoded".into(), percent(secret, b"/", false)),
        ("userinfo-encoded".into(), percent(secret, b"+!$&'()*,%", false)),
        ("JSON string".into(), serde_json::to_string(secret).expect("JSON")),
        ("JSON in JSON".into(), serde_json::to_string(&serde_json::to_string(secret).expect("JSON")).expect("JSON")),
        ("base64".into(), base64(secret.as_bytes(), "+/")),
        ("base64url".into(), base64(secret.as_bytes(), "-_")),
        ("HTTP Basic credentials".into(), base64(format!("{USER}:{secret}").as_bytes(), "+/")),
    ]
}

/// The connection's variable: the password percent-encoded, as connection URIs require.
fn connection_uri() -> String {
    format!("mysql://{USER}:{}@127.0.0.1:9/loans", percent(CONN_CANARY, b"", false))
}

/// What must appear nowhere, by name; `in_store` is false for the forms the store may hold (a
/// `--param` is kept as given, for the tasks that need it).
struct Forbidden {
    forms: Vec<(String, String, bool)>,
}

impl Forbidden {
    fn new() -> Forbidden {
        let mut forms = Vec::new();
        for (secret, what, in_store) in [(CONN_CANARY, "connection password", false), (HTTP_CANARY, "HTTP password", false), (PARAM_CANARY, "--param", true)] {
            for (form, text) in crate::forms(secret) {
                forms.push((format!("the {what}, {form}"), text, in_store));
            }
        }
        forms.push(("the connection's URI".into(), connection_uri(), false));
        Forbidden { forms }
    }

    /// Fails if `text`, which `what` printed or holds, shows a form.
    #[track_caller]
    fn check(&self, what: &str, text: &[u8]) {
        self.check_where(what, text, false);
    }

    #[track_caller]
    fn check_where(&self, what: &str, text: &[u8], store: bool) {
        for (form, needle, allowed_in_store) in &self.forms {
            if store && *allowed_in_store {
                continue;
            }
            let found = text.windows(needle.len()).any(|w| w == needle.as_bytes());
            assert!(!found, "{what} shows {form} ({needle}):\n{}", String::from_utf8_lossy(text));
        }
    }

    /// Both streams of a command.
    #[track_caller]
    fn check_run(&self, what: &str, run: &Run) {
        self.check(&format!("stdout of {what}"), run.stdout.as_bytes());
        self.check(&format!("stderr of {what}"), run.stderr.as_bytes());
    }

    /// Every file under the home: logs, the store's files, the work folder, the lock.
    #[track_caller]
    fn check_home(&self, home: &TempHome) -> usize {
        let files = files_under(&home.path());
        for path in &files {
            let bytes = std::fs::read(path).unwrap_or_default();
            let store = path.strip_prefix(home.path()).is_ok_and(|p| p.starts_with("store"));
            self.check_where(&path.display().to_string(), &bytes, store);
        }
        files.len()
    }
}

/// A site on 127.0.0.1 that answers every request with the request's own headers as JSON, as a
/// debugging endpoint does: `/headers` with 200, `/deny` with 401 (so the headers land in the
/// task's error too).
fn header_echo_site() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the echo site");
    let address = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut headers = BTreeMap::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.trim_end().split_once(':') {
                    headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
                }
            }
            let status = if request_line.contains(" /deny") { "401 Unauthorized" } else { "200 OK" };
            let body = serde_json::json!({ "headers": headers }).to_string();
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    address
}

/// Prints every form of the connection's password (decoded from its variable, as a script
/// would), with `print` writes them to `$FLOWCTL_OUTPUT` too, with `fail` writes them to stderr
/// and fails; with `outputs-then-bad-line` writes the outputs, then a line the outputs file does
/// not accept.
const FORMS_PY: &str = r#"
import base64, json, os, re, sys, urllib.parse
uri = os.environ["FLOWCTL_CONN_LOANS"]
pw = urllib.parse.unquote(urllib.parse.urlsplit(uri).password)
strict = urllib.parse.quote(pw, safe="")
forms = {
    "raw": pw,
    "strict": strict,
    "lower": re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), strict),
    "form": urllib.parse.quote_plus(pw, safe=""),
    "path": urllib.parse.quote(pw),
    "query": urllib.parse.urlencode({"password": pw}),
    "json": json.dumps(pw),
    "json_in_json": json.dumps(json.dumps(pw)),
    "b64": base64.b64encode(pw.encode()).decode(),
    "b64url": base64.urlsafe_b64encode(pw.encode()).decode(),
    "basic": "Basic " + base64.b64encode(("loader:" + pw).encode()).decode(),
    "uri": uri,
}
mode = sys.argv[1]
out = sys.stderr if mode == "fail" else sys.stdout
for key, value in forms.items():
    print(key, value, file=out)
print(json.dumps(forms), file=out)
if mode in ("print", "outputs-then-bad-line"):
    with open(os.environ["FLOWCTL_OUTPUT"], "a") as f:
        for key, value in forms.items():
            f.write(key + "=" + value + "\n")
        if mode == "outputs-then-bad-line":
            f.write(pw + "\n")
sys.exit(1 if mode == "fail" else 0)
"#;

fn dag(script: &Path, echo: &str) -> String {
    let script = script.display();
    format!(
        r#"dag: encodings
params:
  token: none
tasks:
  - id: leak
    operator: shell
    with:
      command: python3 {script} print
  - id: relay
    operator: shell
    depends_on: [leak]
    with:
      command: 'echo "relayed {{{{ tasks.leak.outputs.strict }}}} {{{{ tasks.leak.outputs.form }}}} {{{{ tasks.leak.outputs.b64 }}}} {{{{ tasks.leak.outputs.uri }}}}"'
  - id: fail
    operator: shell
    with:
      command: python3 {script} fail
  - id: bad_outputs
    operator: shell
    with:
      command: python3 {script} outputs-then-bad-line
  - id: query
    operator: sql.execute
    with:
      connection: loans
      sql: select 1
  - id: call
    operator: http.request
    with:
      url: http://{echo}/headers
      auth:
        basic: {{username: {USER}, password_env: SITE_PASSWORD}}
  - id: call_denied
    operator: http.request
    with:
      url: http://{echo}/deny
      http_retries: 0
      auth:
        basic: {{username: {USER}, password_env: SITE_PASSWORD}}
  - id: relay_headers
    operator: shell
    depends_on: [call]
    with:
      command: 'echo "relayed {{{{ tasks.call.outputs.body.headers.authorization }}}}"'
  - id: param
    operator: shell
    with:
      command: 'echo "token {{{{ params.token }}}}"; test "{{{{ params.token }}}}" = "$LOADER_TOKEN" && echo the task got the real token'
"#
    )
}

fn home_with_secrets() -> (TempHome, Cmd) {
    let uri = connection_uri();
    setup_with_env(&[("FLOWCTL_CONN_LOANS", &uri), ("SITE_PASSWORD", HTTP_CANARY), ("LOADER_TOKEN", PARAM_CANARY)])
}

/// Every view of the runs of `encodings` as the CLI prints it, text and JSON.
fn views(cmd: &Cmd, run_ids: &[String]) -> Vec<(String, Run)> {
    let mut views = Vec::new();
    let mut args: Vec<Vec<String>> = vec![vec!["status".into()], vec!["status".into(), "encodings".into()]];
    for run_id in run_ids {
        args.push(vec!["status".into(), "encodings".into(), run_id.clone()]);
        for task in ["leak", "relay", "fail", "bad_outputs", "query", "call", "call_denied", "relay_headers", "param"] {
            args.push(vec!["logs".into(), "encodings".into(), run_id.clone(), task.into()]);
        }
    }
    for a in args {
        let text = cmd.run(&a);
        let mut json_args = a.clone();
        if a[0] == "status" {
            json_args.extend(["--output".to_string(), "json".to_string()]);
            views.push((json_args.join(" "), cmd.run(&json_args)));
        }
        views.push((a.join(" "), text));
    }
    views
}

#[test]
fn a_hostile_password_is_masked_in_every_encoding_and_every_view() {
    let (home, cmd) = home_with_secrets();
    let forbidden = Forbidden::new();
    let echo = header_echo_site();
    let script = home.write("forms.py", FORMS_PY);
    let file = home.write("encodings.yaml", &dag(&script, &echo));
    let token = format!("token={PARAM_CANARY}");

    // Without a server: a run in this process.
    let run = cmd.run_within(LIMIT, ["run".as_ref(), file.as_os_str(), "--param".as_ref(), token.as_ref()]);
    run.expect_code(1);
    forbidden.check_run("flowctl run", &run);
    let first = run.run_id();

    let status = cmd.status("encodings", &first);
    let tasks = util::tasks_in(&status);
    let state = |task: &str| tasks[task]["state"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        ["leak", "relay", "fail", "bad_outputs", "query", "call", "call_denied", "relay_headers", "param"].map(state),
        ["success", "success", "failed", "failed", "failed", "success", "failed", "success", "success"],
        "{status:#}"
    );
    // The masker had something to do, and the tasks had the real values.
    assert_eq!(tasks["leak"]["outputs"]["strict"], "***", "{status:#}");
    assert_eq!(tasks["call"]["outputs"]["body"]["headers"]["authorization"], "Basic ***", "{status:#}");
    assert_eq!(status["run"]["params"]["token"], "***", "{status:#}");
    assert!(home.log("encodings", &first, "param", 1).contains("the task got the real token"), "{}", home.log("encodings", &first, "param", 1));
    assert!(home.log("encodings", &first, "relay", 1).contains("relayed *** *** *** ***"), "{}", home.log("encodings", &first, "relay", 1));

    for (what, run) in views(&cmd, std::slice::from_ref(&first)) {
        forbidden.check_run(&format!("{what} without a server"), &run);
    }
    let connections = [
        cmd.run(["connections", "list"]),
        cmd.run(["connections", "list", "--output", "json"]),
        cmd.run_within(LIMIT, ["connections", "test", "loans"]),
    ];
    for run in &connections {
        forbidden.check_run("flowctl connections", run);
    }
    // A mistyped parameter's value is not echoed in the clear.
    let typo = format!("tokn={PARAM_CANARY}");
    let refused = [
        cmd.run(["run".as_ref(), file.as_os_str(), "--param".as_ref(), typo.as_ref()]),
        cmd.run(["trigger", "encodings", "--param", &typo]),
    ];
    for run in &refused {
        run.expect_code(2);
        forbidden.check_run("a refused --param", run);
    }

    // With a server: the same views through its API, and a run it executes.
    let server = Server::start(&cmd, &[]);
    let triggered = cmd.run_within(LIMIT, ["trigger", "encodings", "--param", &token, "--wait"]);
    triggered.expect_code(1);
    forbidden.check_run("flowctl trigger --wait through the server", &triggered);
    let refused = cmd.run(["trigger", "encodings", "--param", &typo]);
    refused.expect_code(2);
    forbidden.check_run("a refused --param through the server", &refused);
    let runs: Vec<String> = cmd.runs("encodings").iter().map(|r| r["run_id"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for (what, run) in views(&cmd, &runs) {
        forbidden.check_run(&format!("{what} through the server"), &run);
    }
    let mut requests: Vec<(&str, String, Option<String>)> = vec![
        ("GET", "/api/v1/dags".into(), None),
        ("GET", "/api/v1/dags/encodings".into(), None),
        ("GET", "/api/v1/dags/encodings/runs".into(), None),
    ];
    for run_id in &runs {
        let run = util::encode(run_id);
        requests.push(("GET", format!("/api/v1/dags/encodings/runs/{run}"), None));
        requests.push(("GET", format!("/api/v1/dags/encodings/runs/{run}/tasks"), None));
    }
    let refused_trigger = serde_json::json!({"params": [typo.clone()]}).to_string();
    requests.push(("POST", "/api/v1/dags/encodings/runs".into(), Some(refused_trigger)));
    for (method, path, body) in &requests {
        let (code, answer) = server.http(method, path, Some(&server.token), body.as_deref());
        assert!(code == 200 || (method == &"POST" && code == 400), "{method} {path}: {code}: {answer}");
        forbidden.check(&format!("the API's answer to {method} {path}"), answer.as_bytes());
    }
    let (_, body) = server.http("GET", &requests[3].1, Some(&server.token), None);
    assert!(body.contains(r#""token":"***""#), "the API shows the run's params masked: {body}");
    let stopped = server.stop();
    forbidden.check_run("flowctl server", &stopped);

    // Everything on disk: logs, the store's files, the work folder (outputs files included).
    let files = forbidden.check_home(&home);
    assert!(files > 10, "the home holds only {files} files");
}
