"""A SageMaker client independent of flowctl, for tests/sagemaker.rs: boto3 from the test
virtualenv, so what flowctl sent is checked by a second implementation of the API.

    sagemaker_client.py ENDPOINT describe NAME   JSON: DescribeTrainingJob, plus "Tags" (ListTags)
    sagemaker_client.py ENDPOINT names           JSON: every training job's name, sorted

Credentials are moto's usual dummies (tests/support/moto_client.py).
"""

import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "support"))
from moto_client import client  # noqa: E402


def main(argv):
    endpoint, command, args = argv[1], argv[2], argv[3:]
    sagemaker = client("sagemaker", endpoint)
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
