"""An EMR client independent of flowctl, for the EMR tests: boto3 from the test virtualenv.

The tests check what flowctl asked EMR (moto_server) for through it, so a bug in flowctl's EMR
code cannot hide behind the same bug on the checking side.

    emr_client.py ENDPOINT cluster CLUSTER          JSON: the cluster as EMR describes it
    emr_client.py ENDPOINT steps CLUSTER            JSON: its steps, oldest first
    emr_client.py ENDPOINT requests RECORDING ACTION
        JSON: the body of every EMR request ACTION (e.g. CancelSteps) in moto's request recording,
        oldest first

Credentials are moto's usual dummies (tests/support/moto_client.py).
"""

import base64
import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "support"))
from moto_client import client  # noqa: E402


def cluster(emr, cluster_id):
    c = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    flow = emr.describe_job_flows(JobFlowIds=[cluster_id])["JobFlows"][0]
    groups = emr.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]
    actions = emr.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    return {
        "name": c["Name"],
        "state": c["Status"]["State"],
        "release_label": c.get("ReleaseLabel"),
        "applications": [a["Name"] for a in c.get("Applications", [])],
        "log_uri": c.get("LogUri"),
        "service_role": c.get("ServiceRole"),
        "job_flow_role": c.get("Ec2InstanceAttributes", {}).get("IamInstanceProfile"),
        "subnet": c.get("Ec2InstanceAttributes", {}).get("Ec2SubnetId"),
        "visible_to_all_users": c.get("VisibleToAllUsers"),
        "tags": {t["Key"]: t["Value"] for t in c.get("Tags", [])},
        "configurations": c.get("Configurations", []),
        "step_concurrency_level": c.get("StepConcurrencyLevel"),
        "keep_alive": flow["Instances"].get("KeepJobFlowAliveWhenNoSteps"),
        "termination_protected": flow["Instances"].get("TerminationProtected"),
        "instance_groups": sorted(
            (
                {
                    "role": g["InstanceGroupType"],
                    "type": g["InstanceType"],
                    "count": g["RequestedInstanceCount"],
                    "market": g["Market"],
                    "bid_price": g.get("BidPrice"),
                }
                for g in groups
            ),
            key=lambda g: g["role"],
        ),
        "bootstrap_actions": [
            {"name": a["Name"], "path": a["ScriptPath"], "args": a.get("Args", [])} for a in actions
        ],
    }


def steps(emr, cluster_id):
    listed = emr.list_steps(ClusterId=cluster_id)["Steps"]
    out = []
    # ListSteps lists the newest first.
    for summary in reversed(listed):
        step = emr.describe_step(ClusterId=cluster_id, StepId=summary["Id"])["Step"]
        config = step["Config"]
        out.append(
            {
                "id": step["Id"],
                "name": step["Name"],
                "state": step["Status"]["State"],
                "action_on_failure": step["ActionOnFailure"],
                "jar": config["Jar"],
                "main_class": config.get("MainClass"),
                "args": config.get("Args", []),
                "properties": config.get("Properties", {}),
            }
        )
    return out


def requests(recording, action):
    found = []
    with open(recording) as f:
        for line in f:
            entry = json.loads(line)
            headers = {k.lower(): v for k, v in entry.get("headers", {}).items()}
            if headers.get("x-amz-target") != f"ElasticMapReduce.{action}":
                continue
            body = entry.get("body") or ""
            if entry.get("body_encoded"):
                body = base64.b64decode(body).decode()
            found.append(json.loads(body))
    return found


def main(argv):
    endpoint, command, args = argv[1], argv[2], argv[3:]
    emr = client("emr", endpoint)
    if command == "cluster":
        result = cluster(emr, args[0])
    elif command == "steps":
        result = steps(emr, args[0])
    elif command == "requests":
        result = requests(args[0], args[1])
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
