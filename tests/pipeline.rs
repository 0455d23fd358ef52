//! The founding pipeline end to end: `dags/loans_quarterly.yaml` and `dags/etl_daily.yaml` run by
//! the real binary against the local stand-ins of every service (tests/util/standins.rs: the
//! patched moto of scripts/standins/moto_local.py, the loan site, MariaDB, PostgreSQL, an SMTP
//! server), with the connections of the local profile (dags/profiles/local.env), and
//! `scripts/local-pipeline.sh`, the one documented command.
//!
//! What is checked, independently of flowctl: the S3 objects (boto3), the exact requests EMR,
//! the Redshift Data API and SageMaker received (moto_local.py's request record: locally none of
//! them runs, so the request is the effect), the MySQL and PostgreSQL rows, the alert emails, and
//! the runs' states.
//!
//! Needs every operator: `required-features` in Cargo.toml lists all six.

mod util;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use util::databases::{mariadb, postgres, PASSWORD};
use util::smtp::{Smtp, SmtpOptions};
use util::standins::{generate_quarter, local_profile, zip_members, LoanSite, MotoLocal};
use util::{setup, Cmd, Run, TempHome};

/// The loans per generated quarter: enough for every code path of the data, small enough to be
/// quick.
const LOANS: u32 = 120;
/// The loan site's password.
const SITE_PASSWORD: &str = "site-pw-canary";
/// The MySQL password of the `loans` user.
const RDS_PASSWORD: &str = "rds-pw-canary";
/// The tasks of loans_quarterly, in the DAG's order.
const TASKS: [&str; 13] = [
    "settings",
    "download",
    "consolidate",
    "upload_raw",
    "upload_script",
    "create_cluster",
    "process",
    "terminate_cluster",
    "mysql_origination",
    "mysql_performance",
    "redshift_table",
    "redshift_copy",
    "train",
];

/// One home with the stand-ins of the loan pipeline.
struct Pipeline {
    home: TempHome,
    cmd: Cmd,
    moto: MotoLocal,
    site: LoanSite,
    smtp: Smtp,
    config: PathBuf,
}

impl Pipeline {
    fn start() -> Pipeline {
        let (home, cmd) = setup();
        let dir = home.scratch();
        std::fs::create_dir_all(&dir).expect("scratch");
        let moto = MotoLocal::start(&dir.join("moto"));
        let site = LoanSite::start(&dir, &dir.join("site"), SITE_PASSWORD);
        let smtp = Smtp::start(&dir, SmtpOptions::default());
        let db = mariadb();
        db.sql(
            "",
            &format!(
                "DROP DATABASE IF EXISTS loans; CREATE DATABASE loans; DROP USER IF EXISTS 'loans'@'%'; \
                 CREATE USER 'loans'@'%' IDENTIFIED BY '{RDS_PASSWORD}'; GRANT ALL ON loans.* TO 'loans'@'%'"
            ),
        );
        let config = home.write(
            "config.yaml",
            &format!("smtp:\n  host: 127.0.0.1\n  port: {}\n  tls: none\n  from: flowctl <flowctl@localhost>\n", smtp.port),
        );
        Pipeline { home, cmd, moto, site, smtp, config }
    }

    /// The command with the local profile's variables, for a given MySQL password.
    fn cmd_with_rds_password(&self, rds_password: &str) -> Cmd {
        let site_port = self.site.url.rsplit(':').next().expect("port").to_string();
        let profile = local_profile(&[
            ("MOTO_PORT", self.moto.port.to_string()),
            ("MYSQL_PORT", mariadb().port.to_string()),
            ("PG_PORT", postgres().port.to_string()),
            ("LOANS_SITE_PORT", site_port),
            ("LOANS_RDS_PASSWORD", rds_password.to_string()),
            ("WAREHOUSE_PASSWORD", PASSWORD.to_string()),
        ]);
        let mut cmd = self.cmd.clone().env("LOANS_SITE_PASSWORD", SITE_PASSWORD);
        for (k, v) in &profile {
            cmd = cmd.env(k, v);
        }
        cmd
    }

    fn run_quarter(&self, quarter: &str, rds_password: &str) -> Run {
        let config = self.config.to_str().expect("UTF-8");
        self.cmd_with_rds_password(rds_password).run_within(
            Duration::from_secs(240),
            ["--config", config, "run", "dags/loans_quarterly.yaml", "--param", &format!("quarter={quarter}")],
        )
    }

    /// The latest run's id and its tasks: id -> (state, try_number, task JSON).
    fn latest_run(&self) -> (String, BTreeMap<String, (String, u64, Value)>) {
        let run = self.cmd.last_run("loans_quarterly");
        (run.clone(), self.tasks(&run))
    }

    fn tasks(&self, run: &str) -> BTreeMap<String, (String, u64, Value)> {
        self.cmd
            .tasks("loans_quarterly", run)
            .into_iter()
            .map(|(id, t)| (id, (t["state"].as_str().expect("state").to_string(), t["try_number"].as_u64().expect("try"), t)))
            .collect()
    }
}

/// Each task's state, in the DAG's order.
fn states(tasks: &BTreeMap<String, (String, u64, Value)>) -> Vec<(String, String)> {
    TASKS.iter().map(|t| (t.to_string(), tasks.get(*t).map(|(s, _, _)| s.clone()).unwrap_or_default())).collect()
}

fn expected_states(default: &str, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    TASKS
        .iter()
        .map(|t| (t.to_string(), overrides.iter().find(|(id, _)| id == t).map(|(_, s)| *s).unwrap_or(default).to_string()))
        .collect()
}

/// The generated quarter's two files: (origination text, performance text).
fn quarter_files(zip: &Path, quarter: &str) -> (String, String) {
    let members: BTreeMap<String, String> = zip_members(zip).into_iter().collect();
    let origination = members.get(&format!("historical_data_{quarter}.txt")).expect("origination member").clone();
    let performance = members.get(&format!("historical_data_time_{quarter}.txt")).expect("performance member").clone();
    (origination, performance)
}

fn count(db_sql: &str) -> usize {
    mariadb().sql("loans", db_sql).trim().parse().unwrap_or_else(|e| panic!("{db_sql}: not a count: {e}"))
}

/// The COPY batch the `redshift_copy` task must send for a quarter, statement by statement.
fn expected_copy(quarter: &str) -> Vec<String> {
    let columns = [
        "loan_sequence_number",
        "reporting_month",
        "current_upb",
        "delinquency_status",
        "loan_age",
        "remaining_months",
        "current_interest_rate",
        "zero_balance_code",
        "zero_balance_date",
        "credit_score",
        "first_payment_date",
        "maturity_date",
        "original_upb",
        "original_ltv",
        "original_dti",
        "original_interest_rate",
        "property_state",
        "loan_purpose",
        "origination_quarter",
    ];
    let list = columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
    let stage = "\"flowctl_stage_loan_performance\"";
    let target = "\"loans\".\"loan_performance\"";
    vec![
        "BEGIN".to_string(),
        format!("CREATE TEMP TABLE {stage} (LIKE {target})"),
        format!(
            "COPY {stage} ({list}) FROM 's3://loans-lake/processed/{quarter}/loans/' IAM_ROLE 'arn:aws:iam::123456789012:role/loans-redshift-copy' \
             FORMAT AS CSV DELIMITER AS '|' DATEFORMAT AS 'YYYY-MM-DD' NULL AS '\\\\N'"
        ),
        format!(
            "DELETE FROM {target} USING {stage} WHERE {target}.\"loan_sequence_number\" = {stage}.\"loan_sequence_number\" \
             AND {target}.\"reporting_month\" = {stage}.\"reporting_month\""
        ),
        format!("INSERT INTO {target} ({list}) SELECT {list} FROM {stage}"),
        "COMMIT".to_string(),
    ]
}

/// Runs the quarter, runs it again unchanged, then runs another quarter whose MySQL load fails,
/// and finishes that run with `flowctl clear --failed-only`.
#[test]
fn loans_quarterly_end_to_end_on_the_stand_ins() {
    let p = Pipeline::start();
    let q1 = generate_quarter(&p.site.data, "2024Q1", LOANS, 1);
    let (origination, performance) = quarter_files(&q1, "2024Q1");
    let (orig_rows, perf_rows) = (origination.lines().count(), performance.lines().count());
    assert_eq!(orig_rows, LOANS as usize);

    // -- 1. The quarter, from the site to every service.
    let run = p.run_quarter("2024Q1", RDS_PASSWORD);
    run.expect_code(0);
    let (run1, tasks) = p.latest_run();
    assert_eq!(states(&tasks), expected_states("success", &[]), "run {run1}:\n{}", run.stdout);
    assert!(tasks.values().all(|(_, tries, _)| *tries == 1), "every task succeeded at its first try: {tasks:#?}");
    assert_eq!(tasks["consolidate"].2["outputs"]["origination_rows"], orig_rows.to_string());
    assert_eq!(tasks["consolidate"].2["outputs"]["performance_rows"], perf_rows.to_string());

    // The S3 objects: the consolidated files (the same bytes as the provider's) and the Hive script.
    let objects = p.moto.inspect(&["objects", "loans-lake"]);
    let keys: Vec<&str> = objects.as_array().expect("objects").iter().map(|o| o["key"].as_str().expect("key")).collect();
    assert_eq!(
        keys,
        [
            "code/hive/loans_processed.q",
            "raw/2024Q1/origination/historical_data_2024Q1.txt",
            "raw/2024Q1/performance/historical_data_time_2024Q1.txt"
        ]
    );
    let text = |key: &str| p.moto.inspect(&["get", "loans-lake", key])["text"].as_str().expect("text").to_string();
    assert_eq!(text("raw/2024Q1/origination/historical_data_2024Q1.txt"), origination);
    assert_eq!(text("raw/2024Q1/performance/historical_data_time_2024Q1.txt"), performance);
    let script = std::fs::read_to_string(util::repo_root().join("dags/hive/loans_processed.q")).expect("the Hive script");
    assert_eq!(text("code/hive/loans_processed.q"), script);

    // EMR: a cluster for the run, the exact Hive step, and the cluster terminated after it.
    let run_job_flow = p.moto.requests_to("ElasticMapReduce.RunJobFlow");
    assert_eq!(run_job_flow.len(), 1, "one cluster");
    assert_eq!(run_job_flow[0]["json"]["Name"], "loans-2024Q1");
    assert_eq!(run_job_flow[0]["json"]["ReleaseLabel"], "emr-7.2.0");
    assert_eq!(run_job_flow[0]["json"]["Applications"], json!([{"Name": "Hadoop"}, {"Name": "Hive"}]));
    let cluster = tasks["create_cluster"].2["outputs"]["cluster_id"].as_str().expect("cluster id").to_string();
    let add_steps = p.moto.requests_to("ElasticMapReduce.AddJobFlowSteps");
    assert_eq!(add_steps.len(), 1, "the steps are added once");
    assert_eq!(
        add_steps[0]["json"],
        json!({
            "JobFlowId": cluster,
            "Steps": [{
                "Name": "loans_processed 2024Q1",
                "ActionOnFailure": "CANCEL_AND_WAIT",
                "HadoopJarStep": {
                    "Jar": "command-runner.jar",
                    "Args": [
                        "hive-script", "--run-hive-script", "--args",
                        "-f", "s3://loans-lake/code/hive/loans_processed.q",
                        "-d", "PROCESSED=s3://loans-lake/processed/2024Q1",
                        "-d", "QUARTER=2024Q1",
                        "-d", "RAW=s3://loans-lake/raw/2024Q1"
                    ]
                }
            }]
        })
    );
    let steps = p.moto.inspect(&["steps"]);
    assert_eq!(steps[0]["state"], "COMPLETED");
    assert_eq!(steps[0]["cluster_state"], "TERMINATED", "terminate_cluster ended the run's cluster");

    // MySQL: every record, as the provider wrote it.
    assert_eq!(count("SELECT COUNT(*) FROM origination"), orig_rows);
    assert_eq!(count("SELECT COUNT(*) FROM performance"), perf_rows);
    let first: Vec<&str> = origination.lines().next().expect("a loan").split('|').collect();
    assert_eq!(
        mariadb().sql("loans", &format!("SELECT credit_score, first_payment_date, property_state FROM origination WHERE loan_sequence_number = '{}'", first[19])).trim(),
        format!("{}\t{}\t{}", first[0], first[1], first[16])
    );

    // Redshift: the table's DDL, then the COPY batch, as the Data API received them.
    let batches = p.moto.requests_to("RedshiftData.BatchExecuteStatement");
    assert_eq!(batches.len(), 2, "{batches:#?}");
    let by_first = |needle: &str| batches.iter().find(|b| b["json"]["Sqls"][0].as_str().is_some_and(|s| s.contains(needle))).cloned();
    let ddl = by_first("CREATE SCHEMA").expect("the table's statements");
    assert_eq!(ddl["json"]["Sqls"][0], "CREATE SCHEMA IF NOT EXISTS loans");
    assert!(ddl["json"]["Sqls"][1].as_str().expect("sql").starts_with("CREATE TABLE IF NOT EXISTS loans.loan_performance ("));
    let copy = by_first("BEGIN").expect("the COPY batch");
    let sqls: Vec<String> = serde_json::from_value(copy["json"]["Sqls"].clone()).expect("Sqls");
    assert_eq!(sqls, expected_copy("2024Q1"));
    assert_eq!(copy["json"]["ClusterIdentifier"], "loans-warehouse");
    assert_eq!(copy["json"]["Database"], "loans");
    assert_eq!(copy["json"]["DbUser"], "loader");

    // SageMaker: the training job's request, on the processed training set.
    let created = p.moto.requests_to("SageMaker.CreateTrainingJob");
    assert_eq!(created.len(), 1);
    let mut request = created[0]["json"].clone();
    let name = request.as_object_mut().expect("request").remove("TrainingJobName").expect("a job name");
    assert!(name.as_str().is_some_and(|n| n.starts_with("loans-delinquency-")), "{name}");
    assert_eq!(
        request,
        json!({
            "AlgorithmSpecification": {
                "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
                "TrainingInputMode": "File"
            },
            "RoleArn": "arn:aws:iam::123456789012:role/loans-sagemaker",
            "InputDataConfig": [{
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": "s3://loans-lake/processed/2024Q1/training/",
                    "S3DataDistributionType": "FullyReplicated"
                }},
                "ContentType": "text/csv"
            }],
            "OutputDataConfig": {"S3OutputPath": "s3://loans-lake/models/2024Q1/"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": 7200},
            "HyperParameters": {"eta": "0.2", "eval_metric": "auc", "max_depth": "5", "num_round": "100", "objective": "binary:logistic"},
            "Tags": [{"Key": "pipeline", "Value": "loans_quarterly"}, {"Key": "quarter", "Value": "2024Q1"}]
        })
    );
    let jobs = p.moto.inspect(&["training-jobs"]);
    assert_eq!(jobs[0]["TrainingJobName"], name);
    assert_eq!(jobs[0]["TrainingJobStatus"], "Completed");
    assert!(p.smtp.messages().is_empty(), "a successful run sends no email");

    // -- 2. The same quarter again, nothing new on the site: everything after the download skips.
    let requests_before = p.moto.requests().len();
    let run = p.run_quarter("2024Q1", RDS_PASSWORD);
    run.expect_code(0);
    let (run2, tasks) = p.latest_run();
    assert_ne!(run2, run1);
    assert_eq!(states(&tasks), expected_states("skipped", &[("settings", "success")]), "run {run2}:\n{}", run.stdout);
    assert_eq!(p.site.count("GET", "/FLoan/Data/historical_data_2024Q1.zip", 304), 1, "the site was asked, and answered 304");
    assert_eq!(p.site.count("GET", "/FLoan/Data/historical_data_2024Q1.zip", 200), 1, "the file was sent once");
    assert_eq!(p.moto.requests().len(), requests_before, "nothing reached AWS");
    assert_eq!(count("SELECT COUNT(*) FROM origination"), orig_rows);

    // -- 3. Another quarter, with the wrong MySQL password: both loads fail, one email.
    let q2 = generate_quarter(&p.site.data, "2024Q2", LOANS, 1);
    let (origination2, performance2) = quarter_files(&q2, "2024Q2");
    let run = p.run_quarter("2024Q2", "wrong-password");
    run.expect_code(1);
    let (run3, tasks) = p.latest_run();
    assert_eq!(
        states(&tasks),
        expected_states("success", &[("mysql_origination", "failed"), ("mysql_performance", "failed")]),
        "run {run3}:\n{}",
        run.stdout
    );
    let error = tasks["mysql_origination"].2["error"].as_str().expect("an error").to_string();
    assert!(error.contains("Access denied for user 'loans'"), "{error}");
    assert!(!error.contains("wrong-password"), "the password is masked: {error}");
    assert_eq!(tasks["mysql_origination"].1, 1, "access denied is final: no retry was spent");
    assert!(run.stdout.contains("alerts: 1 sent\n"), "{}", run.stdout);
    let mails = p.smtp.messages();
    assert_eq!(mails.len(), 1, "one alert email for the failed run: {mails:#?}");
    assert_eq!(mails[0].rcpt_tos, ["loans-data@example.com"]);
    assert!(mails[0].subject.contains("RUN FAILED") && mails[0].subject.contains("loans_quarterly"), "{}", mails[0].subject);
    assert!(mails[0].body.contains("mysql_origination"), "the email names the failed task:\n{}", mails[0].body);
    let raw_puts = p.moto.puts_under("loans-lake", "raw/2024Q2/");
    assert_eq!(raw_puts, 2, "two files uploaded once each");
    let add_steps_before = p.moto.requests_to("ElasticMapReduce.AddJobFlowSteps").len();

    // `flowctl clear --failed-only` with the right password finishes the run; nothing before the
    // loads runs again.
    let config = p.config.to_str().expect("UTF-8");
    let cleared = p
        .cmd_with_rds_password(RDS_PASSWORD)
        .run_within(Duration::from_secs(120), ["--config", config, "clear", "loans_quarterly", &run3, "--failed-only"]);
    cleared.expect_code(0);
    assert!(
        cleared.stdout.contains(&format!("cleared 2 tasks of run {run3} of loans_quarterly: mysql_origination, mysql_performance")),
        "{}",
        cleared.stdout
    );
    let tasks = p.tasks(&run3);
    assert_eq!(states(&tasks), expected_states("success", &[]));
    assert_eq!(tasks["upload_raw"].1, 1, "the upload ran once");
    assert_eq!(tasks["mysql_origination"].1, 2, "the load's second try");
    assert_eq!(p.moto.puts_under("loans-lake", "raw/2024Q2/"), raw_puts, "no object was uploaded again");
    assert_eq!(p.moto.requests_to("ElasticMapReduce.AddJobFlowSteps").len(), add_steps_before, "the Hive step did not run again");
    assert_eq!(count("SELECT COUNT(*) FROM origination"), orig_rows + origination2.lines().count());
    assert_eq!(count("SELECT COUNT(*) FROM performance"), perf_rows + performance2.lines().count());
    assert_eq!(p.smtp.messages().len(), 1, "the run's success sends nothing more");
    drop(p.home);
}

/// etl_daily: the day's payments from MySQL to one row per loan in the PostgreSQL warehouse; a
/// second run of the same day replaces its rows.
#[test]
fn etl_daily_loads_the_days_payments_into_the_warehouse() {
    let (home, cmd) = setup();
    let db = mariadb();
    db.create_database("etl_servicing");
    db.sql(
        "etl_servicing",
        "CREATE TABLE payments (loan_sequence_number VARCHAR(12) NOT NULL, paid_at DATETIME NOT NULL, amount DECIMAL(12,2) NOT NULL); \
         INSERT INTO payments VALUES ('F24Q10000001', '2024-03-31 23:59:59', 1.00), ('F24Q10000001', '2024-04-01 09:12:00', 505.12), \
         ('F24Q10000002', '2024-04-01 10:40:00', 871.90), ('F24Q10000002', '2024-04-01 16:05:00', 100.00), ('F24Q10000003', '2024-04-02 00:00:00', 7.00)",
    );
    let pg = postgres();
    pg.create_database("etl_warehouse");
    std::fs::create_dir_all(home.scratch()).expect("scratch");
    let cmd = cmd
        .current_dir(&home.scratch())
        .env("FLOWCTL_CONN_RDS", &db.url("etl_servicing"))
        .env("FLOWCTL_CONN_WAREHOUSE", &pg.url("etl_warehouse"));
    let dag = util::repo_root().join("dags/etl_daily.yaml");
    let dag = dag.to_str().expect("UTF-8");
    for _ in 0..2 {
        let run = cmd.run(["run", dag, "--date", "2024-04-02"]);
        run.expect_code(0);
        assert!(run.stdout.contains("load       success"), "{}", run.stdout);
    }
    assert_eq!(
        std::fs::read_to_string(home.scratch().join("data/etl_daily/2024-04-01/daily_totals.csv")).expect("the transform's file"),
        "day,loan_sequence_number,payments,amount\n2024-04-01,F24Q10000001,1,505.12\n2024-04-01,F24Q10000002,2,971.90\n"
    );
    assert_eq!(
        pg.psql("etl_warehouse", "SELECT day, loan_sequence_number, payments, amount FROM daily_loan_payments ORDER BY 2"),
        "2024-04-01|F24Q10000001|1|505.12\n2024-04-01|F24Q10000002|2|971.90\n"
    );
}

/// The sample files: the real layout (32 fields each), deterministic for a quarter, different
/// for a new revision.
#[test]
fn sample_loan_files_are_deterministic_and_in_the_real_layout() {
    let (home, _cmd) = setup();
    let a = generate_quarter(&home.scratch().join("a"), "2023Q4", 40, 1);
    let b = generate_quarter(&home.scratch().join("b"), "2023Q4", 40, 1);
    let c = generate_quarter(&home.scratch().join("c"), "2023Q4", 40, 2);
    let bytes = |p: &Path| std::fs::read(p).expect("read zip");
    assert_eq!(bytes(&a), bytes(&b), "the same quarter gives the same bytes");
    assert_ne!(bytes(&a), bytes(&c), "a new revision changes them");
    let (origination, performance) = quarter_files(&a, "2023Q4");
    assert_eq!(origination.lines().count(), 40);
    for (n, line) in origination.lines().enumerate() {
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 32, "origination line {}: {line}", n + 1);
        assert_eq!(fields[19], format!("F23Q4{:07}", n + 1), "loan sequence number");
        assert!(fields[1].len() == 6 && fields[1].starts_with("2023") || fields[1].starts_with("2024"), "first payment YYYYMM: {line}");
    }
    for line in performance.lines() {
        assert_eq!(line.split('|').count(), 32, "performance line: {line}");
    }
    let loans_with_months: std::collections::BTreeSet<&str> = performance.lines().map(|l| l.split('|').next().expect("loan")).collect();
    assert_eq!(loans_with_months.len(), 40, "every loan has monthly records");
}

/// The one documented command runs the quarter on fresh stand-ins, shows the status table and
/// what the stand-ins received, stops everything, and stays under a minute.
#[test]
fn local_pipeline_script_runs_a_quarter_in_under_a_minute() {
    let (home, _cmd) = setup();
    let started = Instant::now();
    let output = std::process::Command::new(util::repo_root().join("scripts/local-pipeline.sh"))
        .arg("2023Q3")
        .env("FLOWCTL_BIN", env!("CARGO_BIN_EXE_flowctl"))
        .env("TMPDIR", home.path().parent().expect("temp dir"))
        .env("FLOWCTL_VENV", util::standins::venv_python().parent().and_then(Path::parent).expect("venv"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run scripts/local-pipeline.sh");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "scripts/local-pipeline.sh failed:\n{stdout}\n{stderr}");
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
    assert!(stdout.contains("DAG              SCHEDULE    PAUSED  LAST RUN"), "the status table:\n{stdout}");
    assert!(stdout.contains("loans_quarterly  @quarterly  no"), "{stdout}");
    for task in TASKS {
        assert!(stdout.lines().any(|l| l.starts_with(task) && l.contains(" success ")), "{task} succeeded:\n{stdout}");
    }
    assert!(stdout.contains("-d QUARTER=2023Q3 -d RAW=s3://loans-lake/raw/2023Q3"), "the EMR step:\n{stdout}");
    assert!(stdout.contains("  origination: 250 rows"), "MySQL:\n{stdout}");
    // It cleaned up after itself: no folder of its own is left.
    let leftovers: Vec<_> = std::fs::read_dir(home.path().parent().expect("temp dir"))
        .expect("read temp dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("flowctl-local-pipeline."))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}
