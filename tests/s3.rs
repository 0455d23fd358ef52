//! End-to-end tests of the S3 operators: the real `flowctl` binary runs DAGs against a real S3
//! API, moto_server on 127.0.0.1 (`util::moto`, pinned and installed by scripts/test.sh), and an
//! independent client (boto3, `tests/data/s3/s3_client.py`) prepares objects and checks that what
//! flowctl wrote is byte-identical. Each test has buckets of its own.
//!
//! Nothing sleeps: the sensor tests put the awaited key once the sensor's log shows its first
//! poke (watched through inotify), and every run is bounded so a broken build fails instead of
//! hanging.

mod util;

use std::path::Path;
use std::time::Duration;

use util::moto::{bucket, moto, moto_with_auth, random_file, setup_aws, TestConnection};
use util::{files_under, FileWatch, Run};

/// The secret access key every test's connection uses: it must never appear in any log, error or
/// status output.
const CANARY: &str = "canary-S3-secret-4e1b77d0a9";
const KEY_ID: &str = "AKIAFLOWCTLTEST00001";
/// A broken run must not hang a test.
const LIMIT: Duration = Duration::from_secs(300);
const MIB: u64 = 1024 * 1024;

/// The tests' connection, `aws_default`, with the test keys.
const AWS: TestConnection = TestConnection { name: "AWS_DEFAULT", vars: "S3_TEST", key_id: KEY_ID, secret: CANARY };

/// The date every test runs its DAG for, and the id of that run.
const DATE: &str = "2024-01-02";
const RUN_ID: &str = "manual__2024-01-02T00:00:00Z";

fn keys(listing: &[(String, u64)]) -> Vec<&str> {
    listing.iter().map(|(k, _)| k.as_str()).collect()
}

/// An `s3.upload` DAG.
fn upload_dag(dag: &str, source: &Path, destination: &str, extra: &str) -> String {
    format!(
        "dag: {dag}\ntasks:\n  - id: upload\n    operator: s3.upload\n    with:\n      source: {}\n      destination: {destination}\n{extra}",
        source.display()
    )
}

#[test]
fn a_100_mib_multipart_upload_is_byte_identical_and_if_changed_then_skips_it() {
    let moto = moto();
    let bucket = bucket("big");
    moto.make_bucket(&bucket);
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    let data = home.scratch().join("data.bin");
    random_file(&data, 100 * MIB, 7);
    let extra = "      part_size: 8MiB\n      concurrency: 4\n      overwrite: if_changed\n";
    let file = home.write("big.yaml", &upload_dag("s3_big", &data, &format!("s3://{bucket}/raw/"), extra));

    cmd.run_file(&file, DATE, LIMIT).expect_code(0);
    moto.assert_same(&bucket, "raw/data.bin", &data);
    let head = moto.head(&bucket, "raw/data.bin");
    assert!(head["etag"].as_str().expect("etag").ends_with("-13"), "100 MiB in 8 MiB parts is 13 parts: {head}");
    assert_eq!(head["metadata"]["flowctl-part-size"], "8388608");
    let upload = cmd.task("s3_big", RUN_ID, "upload");
    assert_eq!(upload["outputs"]["keys"], serde_json::json!(["raw/data.bin"]));
    assert_eq!(upload["outputs"]["uris"], serde_json::json!([format!("s3://{bucket}/raw/data.bin")]));
    assert_eq!(upload["outputs"]["bytes"], 100 * MIB);
    assert_eq!(upload["outputs"]["files_skipped"], 0);
    let log = home.log("s3_big", RUN_ID, "upload", 1);
    assert!(log.contains(&format!("s3://{bucket}/raw/data.bin: 100 MiB in 13 parts of 8 MiB")), "{log}");
    assert!(log.contains("13/13 parts sent"), "{log}");

    // Unchanged: the multipart ETag recomputed locally with the recorded part size matches, so
    // nothing is sent (a second home, so the run id is free).
    let (home2, cmd2) = setup_aws(&AWS, moto.connection());
    let file2 = home2.write("big.yaml", &upload_dag("s3_big", &data, &format!("s3://{bucket}/raw/"), extra));
    cmd2.run_file(&file2, DATE, LIMIT).expect_code(0);
    let again = cmd2.task("s3_big", RUN_ID, "upload");
    assert_eq!(again["outputs"]["files_skipped"], 1, "{again:#}");
    assert_eq!(again["outputs"]["files_uploaded"], 0);
    assert_eq!(again["outputs"]["skipped_keys"], serde_json::json!(["raw/data.bin"]));
    assert_eq!(again["outputs"]["bytes"], 0);
    assert!(home2.log("s3_big", RUN_ID, "upload", 1).contains(&format!("unchanged, skipped: {} (s3://{bucket}/raw/data.bin)", data.display())));

    // One byte changed in the middle of a part: same size, different ETag, uploaded again.
    let mut bytes = std::fs::read(&data).expect("read data");
    bytes[50 * MIB as usize] ^= 0xff;
    std::fs::write(&data, &bytes).expect("write data");
    let (home3, cmd3) = setup_aws(&AWS, moto.connection());
    let file3 = home3.write("big.yaml", &upload_dag("s3_big", &data, &format!("s3://{bucket}/raw/"), extra));
    cmd3.run_file(&file3, DATE, LIMIT).expect_code(0);
    assert_eq!(cmd3.task("s3_big", RUN_ID, "upload")["outputs"]["files_uploaded"], 1);
    moto.assert_same(&bucket, "raw/data.bin", &data);
}

#[test]
fn if_changed_uploads_only_the_changed_files_of_a_folder() {
    let moto = moto();
    let bucket = bucket("changed");
    moto.make_bucket(&bucket);
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    let folder = home.scratch().join("export");
    std::fs::create_dir_all(folder.join("2024")).expect("mkdir");
    std::fs::write(folder.join("a.csv"), "id,amount\n1,10\n").expect("write");
    std::fs::write(folder.join("2024/b.json"), "{\"b\": 1}\n").expect("write");
    std::fs::write(folder.join("2024/c.txt"), "c\n").expect("write");
    let dag = |extra: &str| upload_dag("s3_changed", &folder, &format!("s3://{bucket}/in"), extra);
    let file = home.write("changed.yaml", &dag("      overwrite: if_changed\n"));
    cmd.run_file(&file, DATE, LIMIT).expect_code(0);
    assert_eq!(keys(&moto.list(&bucket, "")), ["in/2024/b.json", "in/2024/c.txt", "in/a.csv"]);
    for (key, name) in [("in/a.csv", "a.csv"), ("in/2024/b.json", "2024/b.json"), ("in/2024/c.txt", "2024/c.txt")] {
        moto.assert_same(&bucket, key, &folder.join(name));
    }
    // Content types come from the extensions.
    assert_eq!(moto.head(&bucket, "in/a.csv")["content_type"], "text/csv");
    assert_eq!(moto.head(&bucket, "in/2024/b.json")["content_type"], "application/json");

    // Same size, different bytes; and an unchanged file whose object another tool replaced.
    std::fs::write(folder.join("a.csv"), "id,amount\n1,99\n").expect("write");
    moto.put_text(&bucket, "in/2024/c.txt", "x\n");
    let (home2, cmd2) = setup_aws(&AWS, moto.connection());
    let file2 = home2.write("changed.yaml", &dag("      overwrite: if_changed\n"));
    cmd2.run_file(&file2, DATE, LIMIT).expect_code(0);
    let upload = cmd2.task("s3_changed", RUN_ID, "upload");
    assert_eq!(upload["outputs"]["keys"], serde_json::json!(["in/2024/c.txt", "in/a.csv"]), "{upload:#}");
    assert_eq!(upload["outputs"]["skipped_keys"], serde_json::json!(["in/2024/b.json"]));
    assert_eq!(upload["outputs"]["files_skipped"], 1);
    assert_eq!(upload["outputs"]["bytes"], 15 + 2);
    moto.assert_same(&bucket, "in/a.csv", &folder.join("a.csv"));
    moto.assert_same(&bucket, "in/2024/c.txt", &folder.join("2024/c.txt"));
}

#[test]
fn never_refuses_an_existing_key_and_uploads_nothing() {
    let moto = moto();
    let bucket = bucket("never");
    moto.make_bucket(&bucket);
    moto.put_text(&bucket, "in/b.csv", "already here\n");
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    let folder = home.scratch().join("out");
    std::fs::create_dir_all(&folder).expect("mkdir");
    std::fs::write(folder.join("a.csv"), "a\n").expect("write");
    std::fs::write(folder.join("b.csv"), "b\n").expect("write");
    let text = upload_dag("s3_never", &folder.join("*.csv"), &format!("s3://{bucket}/in/"), "      overwrite: never\n")
        .replace("    operator: s3.upload\n", "    operator: s3.upload\n    retries: 2\n");
    let file = home.write("never.yaml", &text);
    cmd.run_file(&file, DATE, LIMIT).expect_code(1);
    let upload = cmd.task("s3_never", RUN_ID, "upload");
    assert_eq!(upload["state"], "failed");
    // Final: no retry is spent on an existing key.
    assert_eq!(upload["try_number"], 1, "{upload:#}");
    assert_eq!(
        upload["error"],
        format!(
            "s3://{bucket}/in/b.csv already exists and overwrite is never: nothing was uploaded; delete it, upload under another key, or set overwrite: always or if_changed"
        )
        .as_str()
    );
    assert_eq!(keys(&moto.list(&bucket, "")), ["in/b.csv"], "a.csv was uploaded though the task failed");
    let kept = home.write("kept.txt", "already here\n");
    moto.assert_same(&bucket, "in/b.csv", &kept);
}

#[test]
fn the_sensor_succeeds_when_the_key_appears_mid_wait() {
    let moto = moto();
    let bucket = bucket("sensor");
    moto.make_bucket(&bucket);
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    let text = format!(
        "dag: s3_sensor\ntasks:\n  - id: wait\n    operator: s3.wait\n    with:\n      source: s3://{bucket}/in/{{{{ ds }}}}/_SUCCESS\n      poke_interval: 100ms\n      timeout: 2m\n"
    );
    let file = home.write("sensor.yaml", &text);
    let log = home.log_path("s3_sensor", RUN_ID, "wait", 1);
    std::fs::create_dir_all(log.parent().expect("folder")).expect("mkdir the log folder");
    let mut watch = FileWatch::new(&log);
    let child = cmd
        .command(["run".as_ref(), file.as_os_str(), "--date".as_ref(), "2024-01-02".as_ref()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("flowctl runs");
    watch.wait("the sensor's first poke", LIMIT, |lines| lines.iter().any(|l| l.contains("| poke 1: found 0 objects of the 1 needed")).then_some(()));
    moto.put_text(&bucket, "in/2024-01-02/_SUCCESS", "");
    let done: Run = child.wait_with_output().expect("wait for flowctl").into();
    done.expect_code(0);
    let text = home.log("s3_sensor", RUN_ID, "wait", 1);
    assert!(text.contains(&format!("| waiting for s3://{bucket}/in/2024-01-02/_SUCCESS, poking every 100ms, for up to 2m")), "{text}");
    assert!(text.contains("| poke 1: found 0 objects of the 1 needed"), "{text}");
    assert!(text.lines().any(|l| l.contains(": found 1 object; done after")), "{text}");
    let wait = cmd.task("s3_sensor", RUN_ID, "wait");
    assert_eq!(wait["outputs"]["keys"], serde_json::json!(["in/2024-01-02/_SUCCESS"]));
    assert_eq!(wait["outputs"]["count"], 1);
}

#[test]
fn a_waiting_sensor_leaves_its_slot_to_the_task_it_waits_for() {
    // max_active_tasks: 1 and two independent tasks: the sensor starts first and waits for a key
    // that only the other task writes. Holding its slot while waiting, the sensor would block the
    // writer until its timeout.
    let moto = moto();
    let bucket = bucket("slot");
    moto.make_bucket(&bucket);
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    let text = format!(
        r#"dag: s3_slot
max_active_tasks: 1
tasks:
  - id: wait
    operator: s3.wait
    with:
      source: s3://{bucket}/ready/
      poke_interval: 100ms
      timeout: 1m
  - id: produce
    operator: shell
    with:
      argv: ["{python}", "{script}", "{endpoint}", "put-text", "{bucket}", "ready/part-0", "x"]
"#,
        python = util::moto::python().display(),
        script = util::repo_root().join("tests/data/s3/s3_client.py").display(),
        endpoint = moto.endpoint,
    );
    let file = home.write("slot.yaml", &text);
    cmd.run_file(&file, DATE, LIMIT).expect_code(0);
    let text = home.log("s3_slot", RUN_ID, "wait", 1);
    assert!(text.contains("| poke 1: found 0 objects of the 1 needed"), "the sensor did not start first:\n{text}");
    assert!(text.contains(": found 1 object; done after"), "{text}");
    assert_eq!(cmd.task("s3_slot", RUN_ID, "wait")["outputs"]["keys"], serde_json::json!(["ready/part-0"]));
}

#[test]
fn the_sensor_times_out_with_a_clear_error_or_skips_with_soft_fail() {
    let moto = moto();
    let bucket = bucket("timeout");
    moto.make_bucket(&bucket);
    moto.put_text(&bucket, "in/a.csv", "a\n");
    moto.put_text(&bucket, "in/empty.csv", "");
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    let text = format!(
        r#"dag: s3_timeout
tasks:
  - id: wait
    operator: s3.wait
    retries: 2
    with:
      source: s3://{bucket}/in/*.csv
      min_count: 2
      min_size: 1
      poke_interval: 200ms
      timeout: 1s
  - id: soft
    operator: s3.wait
    with:
      source: s3://{bucket}/in/missing.csv
      poke_interval: 200ms
      timeout: 500ms
      soft_fail: true
  - id: after_soft
    operator: noop
    depends_on: [soft]
"#
    );
    let file = home.write("timeout.yaml", &text);
    cmd.run_file(&file, DATE, LIMIT).expect_code(1);
    let wait = cmd.task("s3_timeout", RUN_ID, "wait");
    assert_eq!(wait["state"], "failed");
    assert_eq!(wait["try_number"], 1, "a sensor timeout is final: {wait:#}");
    assert_eq!(
        wait["error"],
        format!(
            "timed out after 1s waiting for 2 objects of at least 1 B matching s3://{bucket}/in/*.csv: the last poke found 1 object; raise `timeout`, or check what writes it"
        )
        .as_str()
    );
    let soft = cmd.task("s3_timeout", RUN_ID, "soft");
    assert_eq!(soft["state"], "skipped", "{soft:#}");
    assert_eq!(cmd.task("s3_timeout", RUN_ID, "after_soft")["state"], "skipped");
    let log = home.log("s3_timeout", RUN_ID, "soft", 1);
    assert!(
        log.contains(&format!("timed out after 500ms waiting for s3://{bucket}/in/missing.csv: it does not exist; soft_fail is set, so the task is skipped")),
        "{log}"
    );
}

#[test]
fn wrong_credentials_give_a_clear_final_error() {
    let moto = moto_with_auth();
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    let data = home.write("a.csv", "a\n");
    let text = upload_dag("s3_creds", &data, "s3://no-such-keys/in/", "").replace("    operator: s3.upload\n", "    operator: s3.upload\n    retries: 2\n");
    let file = home.write("creds.yaml", &text);
    let done = cmd.run_file(&file, DATE, LIMIT);
    done.expect_code(1);
    let upload = cmd.task("s3_creds", RUN_ID, "upload");
    assert_eq!(upload["try_number"], 1, "bad keys are final: {upload:#}");
    assert_eq!(
        upload["error"],
        format!(
            "s3://no-such-keys/in/a.csv: endpoint {} does not know the access key (InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records); the keys come from static keys from the environment variables the connection names (connection \"aws_default\"): check that they are current and belong to this account and endpoint",
            moto.endpoint
        )
        .as_str()
    );
    // The same through `flowctl connections test`.
    let tested = cmd.run(["connections", "test", "aws_default"]);
    tested.expect_code(1);
    assert!(
        tested.stderr.contains(&format!("sts GetCallerIdentity: endpoint {} does not know the access key (InvalidClientTokenId", moto.endpoint)),
        "{}",
        tested.stderr
    );
    for text in [&done.stdout, &done.stderr, &tested.stdout, &tested.stderr, &home.log("s3_creds", RUN_ID, "upload", 1)] {
        assert!(!text.contains(CANARY), "the secret key leaked:\n{text}");
    }
}

#[test]
fn an_unreachable_endpoint_is_retryable_and_named() {
    let moto = moto();
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let connection = serde_json::json!({"type": "aws", "region": "us-east-1", "endpoint_url": endpoint, "force_path_style": true,
        "access_key_id_env": "S3_TEST_KEY_ID", "secret_access_key_env": "S3_TEST_SECRET"});
    let cmd = cmd.env("FLOWCTL_CONN_NOWHERE", &connection.to_string());
    let text = "dag: s3_nowhere\ntasks:\n  - id: list\n    operator: s3.list\n    with:\n      source: s3://lake/in/\n      connection: nowhere\n";
    let file = home.write("nowhere.yaml", text);
    cmd.run_file(&file, DATE, LIMIT).expect_code(1);
    let list = cmd.task("s3_nowhere", RUN_ID, "list");
    let error = list["error"].as_str().expect("error");
    assert!(
        error.starts_with(&format!("s3://lake/in/: cannot reach endpoint {endpoint} (")),
        "{error}"
    );
    assert!(error.ends_with("after 5 tries; check the endpoint and the network (connection \"nowhere\")"), "{error}");
}

#[test]
fn list_download_copy_and_delete_work_together_and_the_secret_never_shows() {
    let moto = moto();
    let bucket = bucket("round");
    moto.make_bucket(&bucket);
    moto.put_text(&bucket, "in/2024-01-02/a.csv", "id\n1\n");
    moto.put_text(&bucket, "in/2024-01-02/b.csv", "id\n2\n3\n");
    moto.put_text(&bucket, "in/2024-01-02/x/c.json", "{}\n");
    moto.put_text(&bucket, "in/2024-01-01/old.csv", "old\n");
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    let downloads = home.scratch().join("dl");
    let text = format!(
        r#"dag: s3_round
tasks:
  - id: list
    operator: s3.list
    with:
      source: s3://{bucket}/in/{{{{ ds }}}}/*.csv
  - id: show
    operator: shell
    depends_on: [list]
    with:
      command: echo "keys={{{{ tasks.list.outputs.keys | join(',') }}}} sizes={{{{ tasks.list.outputs.sizes | join(',') }}}}"
  - id: download
    operator: s3.download
    with:
      source: s3://{bucket}/in/{{{{ ds }}}}/
      destination: {downloads}
  - id: copy
    operator: s3.copy
    depends_on: [list]
    with:
      source: s3://{bucket}/in/{{{{ ds }}}}/**/*.csv
      destination: s3://{bucket}/archive/{{{{ ds }}}}/
  - id: one
    operator: s3.copy
    with:
      source: s3://{bucket}/in/2024-01-02/x/c.json
      destination: s3://{bucket}/single/renamed.json
  - id: delete
    operator: s3.delete
    depends_on: [download, copy, one]
    with:
      prefix: s3://{bucket}/in/{{{{ ds }}}}/
  - id: delete_keys
    operator: s3.delete
    depends_on: [one]
    with:
      keys: ["s3://{bucket}/in/2024-01-01/old.csv", "s3://{bucket}/in/2024-01-01/never-existed.csv"]
"#,
        downloads = downloads.display()
    );
    let file = home.write("round.yaml", &text);
    let done = cmd.run_file(&file, DATE, LIMIT);
    done.expect_code(0);

    // s3.list outputs, read downstream through templates.
    let list = cmd.task("s3_round", RUN_ID, "list");
    assert_eq!(list["outputs"]["keys"], serde_json::json!(["in/2024-01-02/a.csv", "in/2024-01-02/b.csv"]));
    assert_eq!(list["outputs"]["sizes"], serde_json::json!([5, 7]));
    assert_eq!(list["outputs"]["count"], 2);
    assert_eq!(list["outputs"]["total_bytes"], 12);
    assert!(home.log("s3_round", RUN_ID, "show", 1).contains("| keys=in/2024-01-02/a.csv,in/2024-01-02/b.csv sizes=5,7"));

    // s3.download of a prefix keeps the layout below it.
    let got: Vec<String> = files_under(&downloads).iter().map(|p| p.strip_prefix(&downloads).expect("below").display().to_string()).collect();
    assert_eq!(got, ["a.csv", "b.csv", "x/c.json"]);
    assert_eq!(std::fs::read_to_string(downloads.join("b.csv")).expect("b.csv"), "id\n2\n3\n");
    assert_eq!(std::fs::read_to_string(downloads.join("x/c.json")).expect("c.json"), "{}\n");
    let download = cmd.task("s3_round", RUN_ID, "download");
    assert_eq!(download["outputs"]["files_downloaded"], 3);
    assert_eq!(download["outputs"]["bytes"], 15);

    // s3.copy of a glob and of one object; s3.delete of a prefix and of keys.
    let listing = moto.list(&bucket, "");
    assert_eq!(keys(&listing), ["archive/2024-01-02/a.csv", "archive/2024-01-02/b.csv", "single/renamed.json"]);
    moto.assert_same(&bucket, "archive/2024-01-02/b.csv", &downloads.join("b.csv"));
    moto.assert_same(&bucket, "single/renamed.json", &downloads.join("x/c.json"));
    assert_eq!(cmd.task("s3_round", RUN_ID, "copy")["outputs"]["keys"], serde_json::json!(["archive/2024-01-02/a.csv", "archive/2024-01-02/b.csv"]));
    let delete = cmd.task("s3_round", RUN_ID, "delete");
    assert_eq!(delete["outputs"]["count"], 3);
    assert_eq!(cmd.task("s3_round", RUN_ID, "delete_keys")["outputs"]["count"], 2);

    // The secret access key is nowhere: not in any log file, not in status (text or JSON).
    let mut seen = vec![done.stdout.clone(), done.stderr.clone()];
    for path in files_under(&home.path().join("logs")) {
        seen.push(std::fs::read_to_string(&path).unwrap_or_default());
    }
    assert!(seen.len() > 8, "expected a log file per task: {seen:?}");
    for args in [vec!["status", "s3_round", RUN_ID], vec!["status", "s3_round", RUN_ID, "--output", "json"], vec!["status"], vec!["connections", "list"]] {
        let out = cmd.run(&args);
        out.expect_code(0);
        seen.push(out.stdout);
        seen.push(out.stderr);
    }
    for text in &seen {
        assert!(!text.contains(CANARY), "the secret key leaked:\n{text}");
    }
}

#[test]
fn connections_test_reports_the_account_and_endpoint() {
    let moto = moto();
    let (_home, cmd) = setup_aws(&AWS, moto.connection());
    let tested = cmd.run(["connections", "test", "aws_default"]);
    tested.expect_code(0);
    assert!(
        tested.stdout.contains(&format!(
            "ok: account 123456789012, identity arn:aws:sts::123456789012:user/moto, region us-east-1, endpoint {} (credentials: static keys from the environment variables the connection names)",
            moto.endpoint
        )),
        "{}",
        tested.stdout
    );
    assert!(!tested.stdout.contains(CANARY) && !tested.stderr.contains(CANARY));
}

#[test]
fn download_errors_name_the_object_and_never_leaves_partial_files() {
    let moto = moto();
    let bucket = bucket("dlerr");
    moto.make_bucket(&bucket);
    moto.put_text(&bucket, "in/a.csv", "a\n");
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    let dest = home.scratch().join("dl");
    std::fs::create_dir_all(&dest).expect("mkdir");
    std::fs::write(dest.join("a.csv"), "local\n").expect("write");
    let text = format!(
        r#"dag: s3_dlerr
tasks:
  - id: missing
    operator: s3.download
    with:
      source: s3://{bucket}/in/nope.csv
      destination: {dest}
  - id: no_bucket
    operator: s3.list
    with:
      source: s3://{bucket}-gone/in/
  - id: never
    operator: s3.download
    with:
      source: s3://{bucket}/in/
      destination: {dest}
      overwrite: never
"#,
        dest = dest.display()
    );
    let file = home.write("dlerr.yaml", &text);
    cmd.run_file(&file, DATE, LIMIT).expect_code(1);
    assert_eq!(
        cmd.task("s3_dlerr", RUN_ID, "missing")["error"],
        format!("s3://{bucket}/in/nope.csv does not exist; check the key (a prefix ends with /)").as_str()
    );
    assert_eq!(
        cmd.task("s3_dlerr", RUN_ID, "no_bucket")["error"],
        format!(
            "s3://{bucket}-gone/in/: the bucket does not exist at endpoint {}; check the bucket's name and the connection's region and endpoint (connection \"aws_default\")",
            moto.endpoint
        )
        .as_str()
    );
    assert_eq!(
        cmd.task("s3_dlerr", RUN_ID, "never")["error"],
        format!(
            "{}/a.csv already exists (for s3://{bucket}/in/a.csv) and overwrite is never: nothing was downloaded; remove it, pick another destination, or set overwrite: always or if_changed",
            dest.display()
        )
        .as_str()
    );
    assert_eq!(std::fs::read_to_string(dest.join("a.csv")).expect("a.csv"), "local\n");
    assert_eq!(files_under(&dest), [dest.join("a.csv")], "a partial or extra file was left behind");
}

#[test]
fn the_example_dag_runs_against_s3_when_its_connection_is_set() {
    let moto = moto();
    let bucket = bucket("example");
    moto.make_bucket(&bucket);
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    let cmd = cmd.env("FLOWCTL_CONN_LOCAL_S3", &moto.connection_json("S3_TEST_KEY_ID", "S3_TEST_SECRET"));
    let work = home.scratch().join("work");
    let file = util::repo_root().join("dags/examples/s3_pipeline.yaml");
    let done = cmd.run_within(
        LIMIT,
        [
            "run".as_ref(),
            file.as_os_str(),
            "--date".as_ref(),
            "2024-01-02".as_ref(),
            "--param".as_ref(),
            format!("bucket={bucket}").as_ref(),
            "--param".as_ref(),
            format!("work={}", work.display()).as_ref(),
        ],
    );
    done.expect_code(0);
    for id in ["export", "upload", "wait", "list", "report", "archive", "fetch", "clean_up"] {
        assert_eq!(cmd.task("s3_pipeline", RUN_ID, id)["state"], "success", "{id}: {}", done.stdout);
    }
    assert!(home.log("s3_pipeline", RUN_ID, "report", 1).contains("| 2 files, 74 bytes - raw/2024-01-02/balances.csv, raw/2024-01-02/rates.csv"));
    assert_eq!(keys(&moto.list(&bucket, "")), ["archive/2024-01-02/balances.csv", "archive/2024-01-02/rates.csv"]);
    let back = work.join("2024-01-02/back");
    for name in ["balances.csv", "rates.csv"] {
        assert_eq!(std::fs::read(back.join(name)).expect("fetched"), std::fs::read(work.join("2024-01-02/out").join(name)).expect("exported"));
    }
}

#[test]
fn a_connection_without_a_region_says_how_to_set_it() {
    let moto = moto();
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    let connection = serde_json::json!({"type": "aws", "endpoint_url": moto.endpoint, "force_path_style": true,
        "access_key_id_env": "S3_TEST_KEY_ID", "secret_access_key_env": "S3_TEST_SECRET"});
    let file = home.write(
        "noregion.yaml",
        "dag: s3_noregion\ntasks:\n  - id: list\n    operator: s3.list\n    with:\n      source: s3://lake/in/\n      connection: noregion\n",
    );
    // No region from the environment or a profile either.
    let done: Run = cmd
        .command(["run".as_ref(), file.as_os_str(), "--date".as_ref(), "2024-01-02".as_ref()])
        .env("FLOWCTL_CONN_NOREGION", connection.to_string())
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", home.scratch().join("no-aws-config"))
        .output()
        .expect("flowctl runs")
        .into();
    done.expect_code(1);
    assert_eq!(
        cmd.task("s3_noregion", RUN_ID, "list")["error"],
        "connection \"noregion\" has no region: set `region:` in its definition (config.yaml, or ?region=... in FLOWCTL_CONN_NOREGION), or export AWS_REGION"
    );
}
