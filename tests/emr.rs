//! End-to-end tests of the EMR operators: the real `flowctl` binary (and `flowctl server`) runs
//! DAGs against moto_server's EMR on 127.0.0.1, and an independent client (boto3,
//! `tests/data/emr/emr_client.py`) checks what reached EMR: the cluster's settings, each step's
//! exact `command-runner.jar` arguments, the termination.
//!
//! moto keeps EMR steps RUNNING forever, which makes a step the perfect long job for the timeout,
//! cancel and restart tests. moto 5.2.5 does not implement CancelSteps (it answers HTTP 500), so
//! the moto_server here records every request it receives (its request recorder), and the tests
//! read the CancelSteps requests from that recording: the cancel reaching the service is checked
//! at the service's door. The mocked-client unit tests (operators/src/aws/emr/tests.rs) cover
//! what moto cannot produce: PENDING -> RUNNING -> COMPLETED, FAILED with FailureDetails,
//! throttling.
//!
//! Nothing sleeps: the tests wait on attempt logs through inotify and on runs through the
//! server's API, with deadlines.

mod util;

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use util::moto::{setup_aws, Moto, TestConnection};
use util::{wait_for_line, Server};

/// The secret access key of the tests' connection: it must never appear in a log or an output.
const CANARY: &str = "canary-EMR-secret-7d2c0e51";
/// A broken run must not hang a test.
const LIMIT: Duration = Duration::from_secs(300);

/// The tests' connection, `aws_default`, to [`moto`].
const AWS: TestConnection = TestConnection { name: "AWS_DEFAULT", vars: "EMR_TEST", key_id: "AKIAFLOWCTLEMRTEST01", secret: CANARY };

/// moto_server for this test binary, with its request recorder on (util::moto's servers have it
/// off, and its default file would land in the repository): the recording is `recording.jsonl`
/// in the server's folder.
fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let dir = util::moto::server_dir();
        let recording = dir.join("recording.jsonl");
        Moto::start_in(dir, &[("MOTO_ENABLE_RECORDING", "true".as_ref()), ("MOTO_RECORDER_FILEPATH", recording.as_ref())])
    })
}

/// What the tests ask EMR, through the independent client (`tests/data/emr/emr_client.py`).
trait Emr {
    /// Runs `emr_client.py` with `args` and parses what it prints.
    fn emr_client(&self, args: &[&str]) -> Value;

    /// The cluster as EMR describes it.
    #[track_caller]
    fn cluster(&self, id: &str) -> Value {
        self.emr_client(&["cluster", id])
    }

    /// The cluster's steps, oldest first.
    #[track_caller]
    fn steps(&self, cluster: &str) -> Vec<Value> {
        self.emr_client(&["steps", cluster]).as_array().expect("a list").clone()
    }

    /// The body of every request `action` (e.g. `CancelSteps`) moto received, oldest first.
    fn requests(&self, action: &str) -> Vec<Value>;

    /// The StepIds of each CancelSteps request moto received for `cluster`.
    #[track_caller]
    fn cancels(&self, cluster: &str) -> Vec<Vec<String>> {
        self.requests("CancelSteps")
            .iter()
            .filter(|r| r["ClusterId"] == cluster)
            .map(|r| serde_json::from_value(r["StepIds"].clone()).expect("StepIds is a list of ids"))
            .collect()
    }
}

impl Emr for Moto {
    #[track_caller]
    fn emr_client(&self, args: &[&str]) -> Value {
        let stdout = self.run_client("tests/data/emr/emr_client.py", args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("emr_client.py {args:?} printed no JSON ({e}): {stdout}"))
    }

    #[track_caller]
    fn requests(&self, action: &str) -> Vec<Value> {
        let recording = self.dir.join("recording.jsonl");
        self.emr_client(&["requests", recording.to_str().expect("UTF-8 path"), action]).as_array().expect("a list").clone()
    }
}

/// What follows `marker` in `line`, up to the next character outside `[A-Za-z0-9-]`.
fn id_after(line: &str, marker: &str) -> String {
    let start = line.find(marker).unwrap_or_else(|| panic!("no {marker:?} in {line:?}")) + marker.len();
    line[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect()
}

#[test]
fn a_cluster_is_created_with_the_requested_settings_and_terminated() {
    let (home, cmd) = setup_aws(&AWS, moto().connection());
    let dag = home.write(
        "emr_create.yaml",
        r#"
dag: emr_create
tasks:
  - id: create
    operator: emr.create_cluster
    with:
      name: "loans {{ ds }}"
      release_label: emr-7.2.0
      applications: [Hadoop, Hive, Spark, Sqoop]
      log_uri: s3://logs/emr/
      service_role: EMR_LoansRole
      job_flow_role: EMR_EC2_LoansRole
      visible_to_all_users: false
      step_concurrency_level: 2
      tags: {team: loans, cost_center: 42}
      instances:
        instance_groups:
          - {instance_role: MASTER, instance_type: m5.xlarge, instance_count: 1}
          - {instance_role: CORE, instance_type: m5.2xlarge, instance_count: 2, market: SPOT, bid_price: "0.30"}
        keep_job_flow_alive_when_no_steps: true
      bootstrap_actions:
        - {name: jdbc drivers, path: s3://code/bootstrap/jdbc.sh, args: [mysql, 8]}
      configurations:
        - classification: hive-site
          properties: {hive.exec.parallel: "true"}
      poll_interval: 1s
  - id: terminate
    operator: emr.terminate_cluster
    depends_on: [create]
    with:
      cluster_id: "{{ tasks.create.outputs.cluster_id }}"
      poll_interval: 1s
"#,
    );
    let run = cmd.run_file(&dag, "2024-03-01", LIMIT);
    run.expect_code(0);
    let ti = cmd.tasks("emr_create", "manual__2024-03-01T00:00:00Z");
    let cluster = ti["create"]["outputs"]["cluster_id"].as_str().expect("cluster_id output").to_string();
    assert!(cluster.starts_with("j-"), "{cluster}");
    assert_eq!(ti["create"]["outputs"]["state"], "WAITING");
    assert!(ti["create"]["outputs"]["cluster_arn"].as_str().is_some_and(|a| a.ends_with(&format!(":cluster/{cluster}"))), "{:#}", ti["create"]);
    assert_eq!(ti["terminate"]["outputs"], json!({"cluster_id": cluster, "state": "TERMINATED"}));
    assert!(ti["create"]["external_job"].is_null(), "the record is cleared once the cluster is ready: {:#}", ti["create"]);

    let described = moto().cluster(&cluster);
    assert_eq!(
        described,
        json!({
            "name": "loans 2024-03-01",
            "state": "TERMINATED",
            "release_label": "emr-7.2.0",
            "applications": ["Hadoop", "Hive", "Spark", "Sqoop"],
            "log_uri": "s3://logs/emr/",
            "service_role": "EMR_LoansRole",
            "job_flow_role": "EMR_EC2_LoansRole",
            "subnet": null,
            "visible_to_all_users": false,
            "tags": {"team": "loans", "cost_center": "42"},
            "configurations": [{"Classification": "hive-site", "Properties": {"hive.exec.parallel": "true"}}],
            "step_concurrency_level": 2,
            "keep_alive": true,
            "termination_protected": false,
            "instance_groups": [
                {"role": "CORE", "type": "m5.2xlarge", "count": 2, "market": "SPOT", "bid_price": "0.30"},
                {"role": "MASTER", "type": "m5.xlarge", "count": 1, "market": "ON_DEMAND", "bid_price": null}
            ],
            "bootstrap_actions": [{"name": "jdbc drivers", "path": "s3://code/bootstrap/jdbc.sh", "args": ["mysql", "8"]}]
        })
    );
    let log = home.log("emr_create", "manual__2024-03-01T00:00:00Z", "create", 1);
    assert!(log.contains(&format!(" | started EMR cluster {cluster} (\"loans 2024-03-01\", emr-7.2.0) and recorded its id; waiting until it is WAITING or RUNNING\n")), "{log}");
    assert!(log.contains(&format!(" | cluster {cluster}: WAITING\n")), "{log}");
    let log = home.log("emr_create", "manual__2024-03-01T00:00:00Z", "terminate", 1);
    assert!(log.contains(&format!(" | asked EMR to terminate cluster {cluster} (TerminateJobFlows)\n")), "{log}");
    assert!(log.contains(&format!(" | cluster {cluster}: TERMINATED\n")), "{log}");
    assert!(!log.contains(CANARY), "{log}");
}

#[test]
fn each_step_type_reaches_emr_as_exact_command_runner_args_and_a_timeout_cancels_the_steps() {
    let (home, cmd) = setup_aws(&AWS, moto().connection());
    let dag = home.write(
        "emr_steps.yaml",
        r#"
dag: emr_steps
tasks:
  - id: create
    operator: emr.create_cluster
    with:
      name: steps
      release_label: emr-7.2.0
      applications: [Hive, Spark, Sqoop]
      instances:
        instance_groups: [{instance_role: MASTER, instance_type: m5.xlarge, instance_count: 1}]
      poll_interval: 1s
  - id: transform
    operator: emr.add_steps
    depends_on: [create]
    timeout: 5s
    retries: 0
    with:
      cluster_id: "{{ tasks.create.outputs.cluster_id }}"
      poll_interval: 1s
      steps:
        - name: hive script
          hive:
            script: s3://code/hive/daily.q
            variables: {DAY: "{{ ds }}", MIN_AMOUNT: 100}
        - name: hive query
          action_on_failure: CONTINUE
          hive:
            query: SELECT count(*) FROM loans WHERE day = '${DAY}'
            variables: {DAY: "{{ ds }}"}
        - name: spark
          spark:
            application: s3://code/jobs/score.py
            conf: {spark.executor.memory: 4g}
            args: [--day, "{{ ds }}"]
        - name: sqoop
          sqoop:
            command: >-
              sqoop export --connect jdbc:mysql://db.internal:3306/loans --table daily_scores
              --export-dir s3://lake/scores/{{ ds }}/ --input-fields-terminated-by ','
        - name: jar
          action_on_failure: TERMINATE_CLUSTER
          jar:
            path: s3://code/jobs/loans.jar
            main_class: com.example.Reconcile
            args: ["{{ ds }}", two words]
  - id: terminate
    operator: emr.terminate_cluster
    depends_on: [transform]
    trigger_rule: all_done
    with:
      cluster_id: "{{ tasks.create.outputs.cluster_id }}"
      poll_interval: 1s
"#,
    );
    let run = cmd.run_file(&dag, "2024-03-01", LIMIT);
    // The run ends with its leaf, `terminate`, which cleaned up after the timeout.
    run.expect_code(0);
    let run_id = "manual__2024-03-01T00:00:00Z";
    let ti = cmd.tasks("emr_steps", run_id);
    assert_eq!(ti["transform"]["state"], "failed", "{:#}", ti["transform"]);
    assert_eq!(ti["transform"]["error"], "timed out after 5s");
    assert_eq!(ti["terminate"]["state"], "success", "all_done cleans up after the timeout: {:#}", ti["terminate"]);
    let cluster = ti["create"]["outputs"]["cluster_id"].as_str().expect("cluster_id").to_string();

    // Exactly the five steps, each with its exact jar and arguments.
    let steps = moto().steps(&cluster);
    let shape: Vec<Value> = steps.iter().map(|s| json!([s["name"], s["action_on_failure"], s["jar"], s["main_class"], s["args"]])).collect();
    assert_eq!(
        shape,
        [
            json!(["hive script", "CANCEL_AND_WAIT", "command-runner.jar", null,
                ["hive-script", "--run-hive-script", "--args", "-f", "s3://code/hive/daily.q", "-d", "DAY=2024-03-01", "-d", "MIN_AMOUNT=100"]]),
            json!(["hive query", "CONTINUE", "command-runner.jar", null,
                ["hive", "-e", "SELECT count(*) FROM loans WHERE day = '${DAY}'", "-d", "DAY=2024-03-01"]]),
            json!(["spark", "CANCEL_AND_WAIT", "command-runner.jar", null,
                ["spark-submit", "--deploy-mode", "cluster", "--conf", "spark.executor.memory=4g", "s3://code/jobs/score.py", "--day", "2024-03-01"]]),
            json!(["sqoop", "CANCEL_AND_WAIT", "command-runner.jar", null,
                ["sqoop", "export", "--connect", "jdbc:mysql://db.internal:3306/loans", "--table", "daily_scores",
                 "--export-dir", "s3://lake/scores/2024-03-01/", "--input-fields-terminated-by", ","]]),
            // moto keeps no MainClass: the request itself shows it, below.
            json!(["jar", "TERMINATE_CLUSTER", "s3://code/jobs/loans.jar", null, ["2024-03-01", "two words"]]),
        ]
    );
    let added: Vec<Value> = moto().requests("AddJobFlowSteps").into_iter().filter(|r| r["JobFlowId"] == cluster.as_str()).collect();
    assert_eq!(added.len(), 1, "one AddJobFlowSteps request: {added:#?}");
    assert_eq!(
        added[0]["Steps"][4]["HadoopJarStep"],
        json!({"Jar": "s3://code/jobs/loans.jar", "MainClass": "com.example.Reconcile", "Args": ["2024-03-01", "two words"]})
    );
    let ids: Vec<String> = steps.iter().map(|s| s["id"].as_str().expect("id").to_string()).collect();

    // The timeout cancelled every step that had not ended, at EMR.
    let cancels = moto().cancels(&cluster);
    assert!(!cancels.is_empty(), "no CancelSteps request reached moto for {cluster}");
    assert!(cancels.iter().all(|c| *c == ids), "CancelSteps named other steps than {ids:?}: {cancels:?}");
    let log = home.log("emr_steps", run_id, "transform", 1);
    assert!(log.contains(&format!(" | added 5 steps to EMR cluster {cluster} and recorded their ids:\n")), "{log}");
    assert!(log.contains(&format!(" |   step \"sqoop\" ({}): command-runner.jar sqoop export --connect jdbc:mysql://db.internal:3306/loans --table daily_scores --export-dir s3://lake/scores/2024-03-01/ --input-fields-terminated-by ,\n", ids[3])), "{log}");
    assert!(log.contains(&format!(" | step \"hive script\" ({}): RUNNING\n", ids[0])), "{log}");
    assert!(log.contains(&format!(" | cancelling EMR steps {} on cluster {cluster} (CancelSteps)\n", ids.join(", "))), "{log}");
    // moto 5.2.5 has no CancelSteps: its HTTP 500 is reported with what to do by hand.
    assert!(
        log.contains(&format!("the steps may still run: cancel them in the EMR console or with: aws emr cancel-steps --cluster-id {cluster} --step-ids {}\n", ids.join(" "))),
        "{log}"
    );
    assert!(!log.contains(CANARY), "{log}");
}

#[test]
fn a_restarted_server_reattaches_to_the_recorded_step_without_adding_it_again_and_a_cancel_reaches_emr() {
    let (home, cmd) = setup_aws(&AWS, moto().connection());
    let dag = home.write(
        "emr_restart.yaml",
        r#"
dag: emr_restart
tasks:
  - id: create
    operator: emr.create_cluster
    with:
      name: restart
      release_label: emr-7.2.0
      applications: [Hive]
      instances:
        instance_groups: [{instance_role: MASTER, instance_type: m5.xlarge, instance_count: 1}]
      poll_interval: 1s
  - id: load
    operator: emr.add_steps
    depends_on: [create]
    with:
      cluster_id: "{{ tasks.create.outputs.cluster_id }}"
      poll_interval: 1s
      steps:
        - name: daily load
          hive: {script: s3://code/hive/load.q, variables: {DAY: "{{ ds }}"}}
"#,
    );
    cmd.run(["apply".as_ref(), dag.as_os_str()]).expect_code(0);
    let run_id = "manual__2024-03-01T00:00:00Z";
    let log = home.log_path("emr_restart", run_id, "load", 1);

    let server = Server::start(&cmd, &[]);
    cmd.run(["trigger", "emr_restart", "--date", "2024-03-01"]).expect_code(0);
    // The log line comes after the record is durable.
    let added = wait_for_line(&log, " | added 1 step to EMR cluster ");
    let cluster = id_after(&added, "EMR cluster ");
    let step = id_after(&wait_for_line(&log, " |   step \"daily load\" ("), "step \"daily load\" (");
    wait_for_line(&log, &format!(" | step \"daily load\" ({step}): RUNNING"));
    let ti = cmd.tasks("emr_restart", run_id);
    assert_eq!(
        ti["load"]["external_job"],
        json!({"kind": "emr_steps", "id": step, "detail": {"cluster_id": cluster, "step_ids": step}}),
        "status shows the recorded step"
    );

    // kill -9 in the middle of the wait, and start again.
    server.kill();
    let server = Server::start(&cmd, &[]);
    let reattached = wait_for_line(&log, " | reattached to EMR step");
    assert!(
        reattached.ends_with(&format!(" | reattached to EMR step {step} on cluster {cluster}, added by an earlier attempt: polling it, not adding the steps again")),
        "{reattached}"
    );
    wait_for_line(&log, &format!(" | step \"daily load\" ({step}): RUNNING"));
    let steps = moto().steps(&cluster);
    assert_eq!(steps.len(), 1, "the step was added exactly once: {steps:#?}");
    assert_eq!(steps[0]["id"], step.as_str());

    // Cancelling the run cancels the step at EMR.
    let cancelled = cmd.run(["cancel", "emr_restart", run_id]);
    cancelled.expect_code(1);
    assert!(cancelled.stdout.contains(&format!("run {run_id} failed in ")), "{}", cancelled.stdout);
    assert_eq!(server.wait_for_run("emr_restart", run_id), "failed");
    wait_for_line(&log, &format!(" | cancelling EMR step {step} on cluster {cluster} (CancelSteps)"));
    let cancels = moto().cancels(&cluster);
    assert!(!cancels.is_empty() && cancels.iter().all(|c| *c == [step.clone()]), "{cancels:?}");
    let ti = cmd.tasks("emr_restart", run_id);
    assert_eq!(ti["load"]["try_number"], 1, "the restart went on with the same attempt: {:#}", ti["load"]);
    assert_eq!(ti["load"]["error"], "cancelled by the user");
    assert!(ti["load"]["external_job"].is_null(), "{:#}", ti["load"]);
    assert!(!home.log("emr_restart", run_id, "load", 1).contains(CANARY));
    let stderr = server.stderr();
    server.stop().expect_code(0);
    assert!(!stderr.contains(CANARY));
}

#[test]
fn mistakes_in_emr_settings_are_compile_errors_with_their_place() {
    let (home, cmd) = setup_aws(&AWS, moto().connection());
    let dag = home.write(
        "emr_broken.yaml",
        r#"dag: emr_broken
tasks:
  - id: create
    operator: emr.create_cluster
    with:
      name: loans
      release_label: "7.2.0"
      instances:
        instance_groups: [{instance_role: MASTER, instance_type: m5.xlarge, instance_count: 1}]
  - id: load
    operator: emr.add_steps
    depends_on: [create]
    with:
      cluster_id: "{{ tasks.create.outputs.cluster_id }}"
      steps:
        - hive: {script: s3://code/a.q}
          spark: {application: s3://code/b.py}
  - id: export
    operator: emr.add_steps
    depends_on: [create]
    with:
      cluster_id: "{{ tasks.create.outputs.cluster_id }}"
      steps:
        - sqoop: {command: "sqoop export --where 'day = {{ ds }}"}
  - id: stop
    operator: emr.terminate_cluster
    with:
      cluster_id: cluster-1
"#,
    );
    let run = cmd.run(["validate".as_ref(), dag.as_os_str()]);
    run.expect_code(2);
    let errors: Vec<&str> = run.stdout.lines().filter(|l| l.contains(": error: ")).collect();
    let file = dag.display().to_string();
    assert_eq!(
        errors,
        [
            format!("{file}:7:22: error: task \"create\": operator \"emr.create_cluster\": with.release_label: \"7.2.0\" is not an EMR release label; write e.g. emr-7.2.0 (aws emr list-release-labels lists them)"),
            format!("{file}:16:11: error: task \"load\": operator \"emr.add_steps\": with.steps[0]: gives both `hive` and `spark`; a step runs one program, so make them two steps"),
            format!("{file}:24:28: error: task \"export\": operator \"emr.add_steps\": with.steps[0].sqoop.command: has a single quote (') that is never closed"),
            format!("{file}:28:19: error: task \"stop\": operator \"emr.terminate_cluster\": with.cluster_id: \"cluster-1\" is not an EMR cluster id (j- followed by letters and digits, e.g. j-2AXXXXXXGAPLF); pass an upstream emr.create_cluster's id with \"{{{{ tasks.<id>.outputs.cluster_id }}}}\""),
        ],
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("= hint: see docs/operators/emr.add_steps.md for its settings"), "{}", run.stdout);
}
