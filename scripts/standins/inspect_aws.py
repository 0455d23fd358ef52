#!/usr/bin/env python3
"""What the local AWS stand-in holds and was asked to do, read independently of flowctl.

Usage (with the virtualenv's Python, which has boto3):
  inspect_aws.py --endpoint URL objects BUCKET [PREFIX]   every object: key, size, ETag, LastModified (JSON)
  inspect_aws.py --endpoint URL get BUCKET KEY              one object's text (JSON: {"text": ...})
  inspect_aws.py --endpoint URL steps                     every EMR step of every cluster (JSON)
  inspect_aws.py --endpoint URL training-jobs             every SageMaker training job, described (JSON)
  inspect_aws.py --record FILE requests [TARGET...]       recorded requests, e.g. ElasticMapReduce.AddJobFlowSteps (JSON)
  inspect_aws.py --endpoint URL --record FILE summary     a short report for people

S3, EMR and SageMaker are read through boto3 (moto's own API answers); what was *sent* comes
from moto_local.py's request record (--record), which is how the Hive step, the Redshift SQL and
the SageMaker request are checked locally, where none of them runs.
"""

import argparse
import json
import sys


def client(endpoint, service):
    import boto3

    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="inspect",
        aws_secret_access_key="inspect",
    )


def objects(endpoint, bucket, prefix=""):
    s3 = client(endpoint, "s3")
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found.append(
                {
                    "key": item["Key"],
                    "size": item["Size"],
                    "etag": item["ETag"].strip('"'),
                    "last_modified": item["LastModified"].isoformat(),
                }
            )
    return found


def get(endpoint, bucket, key):
    body = client(endpoint, "s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return {"text": body.decode("utf-8")}


def steps(endpoint):
    emr = client(endpoint, "emr")
    found = []
    for cluster in emr.list_clusters()["Clusters"]:
        for step in emr.list_steps(ClusterId=cluster["Id"])["Steps"]:
            found.append(
                {
                    "cluster_id": cluster["Id"],
                    "cluster_name": cluster["Name"],
                    "cluster_state": cluster["Status"]["State"],
                    "step_id": step["Id"],
                    "name": step["Name"],
                    "state": step["Status"]["State"],
                    "action_on_failure": step["ActionOnFailure"],
                    "jar": step["Config"]["Jar"],
                    "args": step["Config"]["Args"],
                }
            )
    return found


def training_jobs(endpoint):
    sagemaker = client(endpoint, "sagemaker")
    found = []
    for summary in sagemaker.list_training_jobs()["TrainingJobSummaries"]:
        job = sagemaker.describe_training_job(TrainingJobName=summary["TrainingJobName"])
        job.pop("ResponseMetadata", None)
        found.append(json.loads(json.dumps(job, default=str)))
    return found


def requests(record, targets):
    found = []
    with open(record) as f:
        for line in f:
            entry = json.loads(line)
            if not targets or entry.get("target") in targets:
                found.append(entry)
    return found


def summary(endpoint, record):
    lines = ["S3 objects in loans-lake:"]
    for item in objects(endpoint, "loans-lake"):
        lines.append(f"  {item['key']}  ({item['size']} bytes)")
    for entry in requests(record, ["ElasticMapReduce.AddJobFlowSteps"]):
        for step in entry["json"]["Steps"]:
            lines.append(f"EMR step sent (moto does not run it): {step['Name']}")
            lines.append("  " + " ".join([step["HadoopJarStep"]["Jar"], *step["HadoopJarStep"]["Args"]]))
    for entry in requests(record, ["RedshiftData.ExecuteStatement", "RedshiftData.BatchExecuteStatement"]):
        sqls = entry["json"].get("Sqls") or [entry["json"].get("Sql")]
        lines.append(f"Redshift SQL sent (moto does not run it), {len(sqls)} statement(s):")
        for sql in sqls:
            lines.append("  " + " ".join(sql.split())[:160] + ("..." if len(" ".join(sql.split())) > 160 else ""))
    for entry in requests(record, ["SageMaker.CreateTrainingJob"]):
        body = entry["json"]
        channels = ", ".join(c["DataSource"]["S3DataSource"]["S3Uri"] for c in body.get("InputDataConfig", []))
        lines.append(f"SageMaker training job sent (moto does not train): {body['TrainingJobName']} on {channels}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="moto's URL, e.g. http://127.0.0.1:5000")
    parser.add_argument("--record", help="moto_local.py's request record")
    parser.add_argument("command", choices=["objects", "get", "steps", "training-jobs", "requests", "summary"])
    parser.add_argument("args", nargs="*")
    args = parser.parse_args()
    if args.command == "objects":
        result = objects(args.endpoint, *args.args)
    elif args.command == "get":
        result = get(args.endpoint, *args.args)
    elif args.command == "steps":
        result = steps(args.endpoint)
    elif args.command == "training-jobs":
        result = training_jobs(args.endpoint)
    elif args.command == "requests":
        result = requests(args.record, args.args)
    else:
        print(summary(args.endpoint, args.record))
        return 0
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
