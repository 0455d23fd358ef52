"""A SageMaker client independent of flowctl, for tests/sagemaker.rs: boto3 from the test
virtualenv, so what flowctl sent is checked by a second implementation of the API.

    sagemaker_client.py ENDPOINT describe NAME   JSON: DescribeTrainingJob, plus "Tags" (ListTags)
    sagemaker_client.py ENDPOINT names           JSON: every training job's name, sorted

Credentials are moto's usual dummies; moto_server without INITIAL_NO_AUTH_ACTION_COUNT accepts
any.
"""

import json
import sys

import boto3


def main(argv):
    endpoint, command, args = argv[1], argv[2], argv[3:]
    sagemaker = boto3.client(
        "sagemaker",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    if command == "describe":
        job = sagemaker.describe_training_job(TrainingJobName=args[0])
        job.pop("ResponseMetadata", None)
        job["Tags"] = sagemaker.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]
        print(json.dumps(job, default=str, sort_keys=True))
    elif command == "names":
        pages = sagemaker.get_paginator("list_training_jobs").paginate()
        names = sorted(j["TrainingJobName"] for page in pages for j in page["TrainingJobSummaries"])
        print(json.dumps(names))
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main(sys.argv)
