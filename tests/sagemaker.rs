//! End-to-end tests of `sagemaker.train`: the real `flowctl` binary creates a training job on
//! moto_server (`util::moto`, pinned and installed by scripts/test.sh), and an independent client
//! (boto3, `tests/data/sagemaker/sagemaker_client.py`) checks what the CreateTrainingJob request
//! carried. moto completes a job as soon as it is created, so the waits, failures, reattach and
//! stop sequences are tested against scripted replies in operators/src/aws/sagemaker/tests.rs.

mod util;

use std::time::Duration;

use serde_json::{json, Value};
use util::moto::{moto, setup_aws, Moto, TestConnection};

/// The secret access key of the test connection: it must never appear in a log or status.
const CANARY: &str = "canary-sagemaker-secret-7d21f0";
/// A broken run must not hang a test.
const LIMIT: Duration = Duration::from_secs(300);
const RUN_ID: &str = "manual__2024-03-01T00:00:00Z";

/// The tests' connection, `aws_default`.
const AWS: TestConnection = TestConnection { name: "AWS_DEFAULT", vars: "SM_TEST", key_id: "AKIAFLOWCTLSAGEMAKER", secret: CANARY };

/// Runs the independent client (`tests/data/sagemaker/sagemaker_client.py`); panics with its
/// output when it fails.
fn client(moto: &Moto, args: &[&str]) -> String {
    moto.run_client("tests/data/sagemaker/sagemaker_client.py", args)
}

const TRAIN_DAG: &str = r#"dag: sm_churn
params:
  eta: 0.2
tasks:
  - id: train
    operator: sagemaker.train
    with:
      job_name_prefix: churn-{{ ds_nodash }}
      algorithm_specification:
        training_image: 683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1
        training_input_mode: File
      role_arn: arn:aws:iam::123456789012:role/sagemaker-training
      input_data_config:
        - channel_name: train
          s3_uri: s3://ml-data/churn/{{ ds }}/train/
          content_type: text/csv
        - channel_name: validation
          s3_uri: s3://ml-data/churn/{{ ds }}/validation/
          content_type: text/csv
          distribution: ShardedByS3Key
      output_data_config:
        s3_output_path: s3://ml-models/churn
      resource_config:
        instance_type: ml.m5.xlarge
        instance_count: 2
        volume_size_in_gb: 50
      stopping_condition:
        max_runtime_in_seconds: 7200
      hyperparameters:
        objective: binary:logistic
        num_round: 100
        eta: "{{ params.eta }}"
      tags:
        team: risk
      max_runtime: 3h
      poll_interval: 1s
  - id: report
    operator: shell
    depends_on: [train]
    with:
      command: echo "model {{ tasks.train.outputs.model_artifacts }} billed {{ tasks.train.outputs.billable_seconds }}s"
"#;

#[test]
fn train_sends_the_whole_request_and_outputs_the_model_path() {
    let moto = moto();
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    let file = home.write("sm_churn.yaml", TRAIN_DAG);

    cmd.run_file(&file, "2024-03-01", LIMIT).expect_code(0);

    let train = cmd.task("sm_churn", RUN_ID, "train");
    assert_eq!(train["state"], "success", "{train:#}");
    let name = train["outputs"]["job_name"].as_str().expect("job_name output").to_string();
    assert!(name.starts_with("churn-20240301-") && name.len() <= 63, "{name}");
    assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{name}");

    // What SageMaker received, read back by boto3.
    let job: Value = serde_json::from_str(&client(moto, &["describe", &name])).expect("describe prints JSON");
    assert_eq!(job["TrainingJobName"], name.as_str());
    assert_eq!(job["AlgorithmSpecification"]["TrainingImage"], "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1");
    assert_eq!(job["AlgorithmSpecification"]["TrainingInputMode"], "File");
    assert_eq!(job["RoleArn"], "arn:aws:iam::123456789012:role/sagemaker-training");
    assert_eq!(
        job["InputDataConfig"],
        json!([
            {
                "ChannelName": "train",
                "ContentType": "text/csv",
                "DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": "s3://ml-data/churn/2024-03-01/train/",
                    "S3DataDistributionType": "FullyReplicated",
                }},
            },
            {
                "ChannelName": "validation",
                "ContentType": "text/csv",
                "DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": "s3://ml-data/churn/2024-03-01/validation/",
                    "S3DataDistributionType": "ShardedByS3Key",
                }},
            },
        ])
    );
    assert_eq!(job["OutputDataConfig"], json!({"S3OutputPath": "s3://ml-models/churn"}));
    assert_eq!(job["ResourceConfig"], json!({"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 50}));
    assert_eq!(job["StoppingCondition"], json!({"MaxRuntimeInSeconds": 7200}));
    assert_eq!(job["HyperParameters"], json!({"objective": "binary:logistic", "num_round": "100", "eta": "0.2"}));
    assert_eq!(job["Tags"], json!([{"Key": "team", "Value": "risk"}]));

    // moto puts the model at <output path>/<job>/output/model.tar.gz; the task says where.
    let artifacts = format!("s3://ml-models/churn/{name}/output/model.tar.gz");
    assert_eq!(job["ModelArtifacts"]["S3ModelArtifacts"], artifacts.as_str());
    assert_eq!(train["outputs"]["model_artifacts"], artifacts.as_str());
    assert_eq!(train["outputs"]["job_arn"], job["TrainingJobArn"]);
    assert!(train["outputs"].get("billable_seconds").is_some(), "{train:#}");
    let report = home.log("sm_churn", RUN_ID, "report", 1);
    assert!(report.contains(&format!("model {artifacts} billed")), "the downstream task reads the outputs:\n{report}");

    let log = home.log("sm_churn", RUN_ID, "train", 1);
    assert!(log.contains(&format!("created training job {name} (")), "{log}");
    assert!(log.contains(&format!("training job {name} is Completed")), "{log}");
    assert!(log.contains("  Starting: Preparing the instances for training"), "{log}");
    let status = cmd.run(["status", "sm_churn", RUN_ID, "--output", "json"]);
    for text in [&log, &report, &status.stdout] {
        assert!(!text.contains(CANARY), "the secret key leaked:\n{text}");
    }
}

#[test]
fn each_run_trains_a_job_of_its_own() {
    let moto = moto();
    let (home, cmd) = setup_aws(&AWS, moto.connection());
    let dag = TRAIN_DAG.replace("dag: sm_churn", "dag: sm_twice").replace("churn-{{ ds_nodash }}", "twice");
    let file = home.write("sm_twice.yaml", &dag);

    cmd.run_file(&file, "2024-03-01", LIMIT).expect_code(0);
    cmd.run_file(&file, "2024-03-02", LIMIT).expect_code(0);

    let names: Vec<String> = serde_json::from_str(&client(moto, &["names"])).expect("names prints JSON");
    let ours: Vec<&String> = names.iter().filter(|n| n.starts_with("twice-")).collect();
    assert_eq!(ours.len(), 2, "two runs, two jobs with names of their own: {names:?}");
}

#[test]
fn mistakes_in_the_request_fail_validation_with_their_line() {
    let (home, cmd) = util::setup();
    let broken = TRAIN_DAG
        .replace("instance_type: ml.m5.xlarge", "instance_type: m5.xlarge")
        .replace("      max_runtime: 3h\n", "");
    let file = home.write("sm_broken.yaml", &broken);

    let run = cmd.run(["validate".as_ref(), file.as_os_str()]);

    run.expect_code(2);
    let text = format!("{}{}", run.stdout, run.stderr);
    let expected = format!(
        "{}:24:24: error: task \"train\": operator \"sagemaker.train\": with.resource_config.instance_type: \"m5.xlarge\" is not a SageMaker instance type; they start with ml., e.g. ml.m5.xlarge",
        file.display()
    );
    assert!(text.lines().any(|l| l == expected), "expected the line\n{expected}\nin:\n{text}");

    let typo = TRAIN_DAG.replace("role_arn:", "role_ar:");
    let file = home.write("sm_typo.yaml", &typo);
    let run = cmd.run(["validate".as_ref(), file.as_os_str()]);
    run.expect_code(2);
    let text = format!("{}{}", run.stdout, run.stderr);
    let expected = format!(
        "{}:12:7: error: task \"train\": operator \"sagemaker.train\": unknown key \"role_ar\" in with (did you mean \"role_arn\"?)",
        file.display()
    );
    assert!(text.lines().any(|l| l == expected), "expected the line\n{expected}\nin:\n{text}");
}
