//! End-to-end tests of connections that need no service: where they come from, how they are
//! listed, and that their secrets are masked wherever flowctl writes. Testing a connection against
//! a real service is in the operator families' tests (tests/s3.rs, tests/sql.rs).

mod util;

use std::path::Path;

use util::{setup, Cmd, TempHome};

const CONFIG: &str = "\
connections:
  lake:
    type: aws
    region: eu-west-1
    endpoint_url: http://127.0.0.1:9
    access_key_id_env: LAKE_ID
    secret_access_key_env: LAKE_SECRET_KEY
    force_path_style: true
  rds:
    type: mysql
    host: rds.example.com
    user: loader
    database: loans
    password_env: RDS_PASS
  warehouse:
    type: postgres
    uri: postgres://etl@wh.example.com:5432/dw
    password_env: WAREHOUSE_PW
";

/// Secret values whose variable names do not look secret: only the connections can tell the
/// masker about them.
const ID_CANARY: &str = "AKIDCANARY4711";
const SECRET_CANARY: &str = "lake-secret-canary-0815";
const RDS_CANARY: &str = "rds-pass-canary-2342";

fn with_config(home: &TempHome, cmd: Cmd) -> Cmd {
    home.write("config.yaml", CONFIG);
    cmd.env("LAKE_ID", ID_CANARY)
        .env("LAKE_SECRET_KEY", SECRET_CANARY)
        .env("RDS_PASS", RDS_CANARY)
}

fn config_arg(home: &TempHome) -> String {
    home.scratch().join("config.yaml").to_string_lossy().into_owned()
}

fn assert_no_canary(what: &str, text: &str) {
    for canary in [ID_CANARY, SECRET_CANARY, RDS_CANARY, "warehouse-canary-99"] {
        assert!(!text.contains(canary), "{what} shows the secret {canary}:\n{text}");
    }
}

#[test]
fn list_shows_every_connection_with_its_source_and_no_secret() {
    let (home, cmd) = setup();
    let cmd = with_config(&home, cmd).env("FLOWCTL_CONN_WAREHOUSE", "postgresql://etl:warehouse-canary-99@wh.internal:6543/dw");
    let config = config_arg(&home);
    let run = cmd.run(["--config", &config, "connections", "list"]);
    run.expect_code(0);
    assert_no_canary("connections list", &run.stdout);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["NAME", "TYPE", "SOURCE", "SETTINGS"]);
    let row = |name: &str| lines.iter().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no row {name}:\n{}", run.stdout)).to_string();
    assert!(row("aws_default").contains("built-in") && row("aws_default").contains("default region and credential chain"));
    let lake = row("lake");
    assert!(lake.contains(&config) && lake.contains("region=eu-west-1") && lake.contains("access_key_id=*** secret_access_key=***"), "{lake}");
    assert!(row("rds").contains("mysql://loader:***@rds.example.com:3306/loans"));
    // The environment's definition wins over the file's, and says so.
    let warehouse = row("warehouse");
    assert!(warehouse.contains("$FLOWCTL_CONN_WAREHOUSE") && warehouse.contains("postgres://etl:***@wh.internal:6543/dw"), "{warehouse}");

    let json = cmd.json(["--config", &config, "connections", "list", "--output", "json"]);
    let names: Vec<&str> = json.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["aws_default", "lake", "rds", "warehouse"]);
    assert_no_canary("connections list --output json", &json.to_string());
}

#[test]
fn testing_an_unknown_or_broken_connection_says_what_to_fix() {
    let (home, cmd) = setup();
    let cmd = with_config(&home, cmd);
    let config = config_arg(&home);
    let run = cmd.run(["--config", &config, "connections", "test", "rsd"]);
    run.expect_code(2);
    assert_eq!(
        run.stderr.trim_end(),
        format!("error: connection \"rsd\" is not defined (did you mean \"rds\"?); add it under `connections:` in {config} or set FLOWCTL_CONN_RSD (see docs/connections.md); defined: lake, rds, warehouse")
    );
    // WAREHOUSE_PW is not set: the connection is listed as broken, and testing it says why.
    let run = cmd.run(["--config", &config, "connections", "test", "warehouse"]);
    run.expect_code(1);
    assert!(
        run.stderr.contains("connection \"warehouse\"") && run.stderr.contains("password_env names the environment variable WAREHOUSE_PW, which is not set"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_mistake_in_the_connections_section_names_its_line() {
    let (home, cmd) = setup();
    let config = home.write("config.yaml", "connections:\n  lake:\n    type: aws\n    regoin: eu-west-1\n");
    let run = cmd.run(["--config", config.to_str().unwrap(), "connections", "list"]);
    run.expect_code(2);
    assert!(run.stderr.contains("config.yaml:") && run.stderr.contains("unknown field `regoin`"), "{}", run.stderr);
    let config = home.write("config2.yaml", "connections:\n  rds:\n    type: mysql\n    uri: mysql://u:hunter2-canary@h/db\n");
    let run = cmd.run(["--config", config.to_str().unwrap(), "connections", "list"]);
    run.expect_code(2);
    assert!(run.stderr.contains("holds a password") && !run.stderr.contains("hunter2-canary"), "{}", run.stderr);
}

#[test]
fn connection_secrets_are_masked_in_task_logs_errors_and_status() {
    let (home, cmd) = setup();
    let cmd = with_config(&home, cmd);
    let config = config_arg(&home);
    // A task that prints the secrets (as a careless script would) and fails with one in its error.
    let dag = home.write(
        "leaky.yaml",
        "dag: leaky\ntasks:\n  - id: leak\n    operator: shell\n    with:\n      command: 'echo id=$LAKE_ID key=$LAKE_SECRET_KEY pw=$RDS_PASS; echo $LAKE_ID >&2; exit 3'\n",
    );
    let run = cmd.run(["--config", &config, "run", dag.to_str().unwrap()]);
    run.expect_code(1);
    assert_no_canary("flowctl run", &format!("{}{}", run.stdout, run.stderr));
    let logs = collect_files(&home.path().join("logs"));
    assert!(!logs.is_empty(), "the run wrote no log");
    for (path, text) in &logs {
        assert_no_canary(&path.display().to_string(), text);
    }
    assert!(logs.iter().any(|(_, t)| t.contains("id=*** key=*** pw=***")), "the secrets were not replaced by ***");
    let status = cmd.run(["status", "leaky", "--output", "json"]);
    assert_no_canary("flowctl status", &status.stdout);
}

/// Every file under `dir` with its text.
fn collect_files(dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    util::files_under(dir).into_iter().map(|path| {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        (path, text)
    }).collect()
}
