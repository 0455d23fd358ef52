#!/usr/bin/env python3
"""moto_server with the few changes the loan pipeline needs to run to its end locally.

Usage: python moto_local.py [--record FILE] [--bucket NAME]... [moto_server's options: -H HOST -p PORT]

Run it with the Python of the test virtualenv (~/.cache/flowctl-venv, where scripts/test.sh
installs moto[server]==5.2.5). It imports moto, applies the patches below, creates the buckets
named with --bucket, and hands over to `moto.server.main`, so everything else is plain moto.

Why patches: moto 5.2.5 records EMR steps and Redshift Data statements but never finishes them,
so a pipeline that waits for them would wait forever. None of this runs Hive, Redshift or
SageMaker: locally, a step's or statement's *request* is what can be checked, and --record keeps
every request for that.

1. EMR steps progress. moto leaves the first step RUNNING and the others PENDING forever. Here
   each DescribeStep or ListSteps moves a step on by one state: PENDING -> RUNNING (when no
   earlier step of its cluster is still pending or running) -> COMPLETED, with its timeline's
   start and end times set. moto has no CancelSteps; it is added: PENDING and RUNNING steps
   become CANCELLED (`SUBMITTED`), others are reported `FAILED` with the reason.
2. Redshift Data statements finish. moto keeps statements STARTED forever, writes their times as
   ISO strings (the AWS SDKs expect epoch seconds; the Rust SDK cannot parse them) and has no
   BatchExecuteStatement. Here ExecuteStatement and BatchExecuteStatement return epoch times; a
   statement is STARTED at its first DescribeStatement and FINISHED from the second on
   (ResultRows 0, no result set, as a COPY or DDL reports); a batch has SubStatements (`<id>:1`,
   `<id>:2`... with their QueryString and Status). CancelStatement aborts a statement that has
   not finished. Every statement is kept with its SQL, so DescribeStatement reads it back.
3. --record FILE appends one JSON line per request that reaches the server: `method`, `path`,
   `query`, `target` (the X-Amz-Target of JSON APIs such as `ElasticMapReduce.AddJobFlowSteps`),
   `content_length`, and `json`, the parsed body of JSON API requests. S3 bodies are not kept:
   a PUT's path and length say which object was written.

SageMaker needs no patch: moto marks a training job Completed as soon as it is created (and
overwrites its AlgorithmSpecification's MetricDefinitions with a fixed one; --record keeps what
was actually sent).
"""

import io
import json
import sys
import threading
import time
import uuid

import moto.server
from moto.core.responses import ActionResult
from moto.emr.models import ElasticMapReduceBackend
from moto.emr.responses import ElasticMapReduceResponse
from moto.redshiftdata.exceptions import ResourceNotFoundException, ValidationException
from moto.redshiftdata.models import RedshiftDataAPIServiceBackend, redshiftdata_backends
from moto.redshiftdata.responses import RedshiftDataAPIServiceResponse

ACCOUNT = "123456789012"
REGION = "us-east-1"


# -- 1. EMR steps -------------------------------------------------------------------------------


def _now():
    from moto.core.utils import utcnow

    return utcnow()


def _advance(cluster, step):
    """Moves one step on by one state, in its cluster's order."""
    if step.state == "PENDING":
        earlier = cluster.steps[: cluster.steps.index(step)]
        if any(s.state in ("PENDING", "RUNNING") for s in earlier):
            return
        step.state = "RUNNING"
        step.start_date_time = _now()
    elif step.state == "RUNNING":
        if step.start_date_time is None:
            step.start_date_time = _now()
        step.state = "COMPLETED"
        step.end_date_time = _now()


_describe_step = ElasticMapReduceBackend.describe_step
_list_steps = ElasticMapReduceBackend.list_steps


def describe_step(self, cluster_id, step_id):
    step = _describe_step(self, cluster_id, step_id)
    if step is not None:
        _advance(self.clusters[cluster_id], step)
    return step


def list_steps(self, cluster_id, step_ids=None, step_states=None):
    cluster = self.clusters[cluster_id]
    wanted = set(step_ids or [])
    for step in list(cluster.steps):
        if not wanted or step.id in wanted:
            _advance(cluster, step)
    return _list_steps(self, cluster_id, step_ids=step_ids, step_states=step_states)


def cancel_steps(self):
    """CancelSteps, which moto lacks."""
    cluster_id = self._get_param("ClusterId")
    step_ids = self._get_param("StepIds", [])
    cluster = self.backend.clusters.get(cluster_id)
    if cluster is None:
        from moto.emr.exceptions import InvalidRequestException

        raise InvalidRequestException(message=f"Cluster id '{cluster_id}' is not valid.")
    infos = []
    for step_id in step_ids:
        step = next((s for s in cluster.steps if s.id == step_id), None)
        if step is None:
            infos.append({"StepId": step_id, "Status": "FAILED", "Reason": f"step {step_id} does not exist"})
        elif step.state in ("PENDING", "RUNNING"):
            step.state = "CANCELLED"
            step.end_date_time = _now()
            infos.append({"StepId": step_id, "Status": "SUBMITTED", "Reason": ""})
        else:
            infos.append({"StepId": step_id, "Status": "FAILED", "Reason": f"step is {step.state}"})
    return ActionResult({"CancelStepsInfoList": infos})


ElasticMapReduceBackend.describe_step = describe_step
ElasticMapReduceBackend.list_steps = list_steps
ElasticMapReduceResponse.cancel_steps = cancel_steps


# -- 2. Redshift Data ---------------------------------------------------------------------------


class Statement:
    """One statement or batch, as the Data API describes it."""

    def __init__(self, params, sqls, batch):
        now = time.time()
        self.id = str(uuid.uuid4())
        self.batch = batch
        self.sqls = sqls
        self.cluster_identifier = params.get("ClusterIdentifier")
        self.workgroup_name = params.get("WorkgroupName")
        self.database = params.get("Database")
        self.db_user = params.get("DbUser")
        self.secret_arn = params.get("SecretArn")
        self.statement_name = params.get("StatementName")
        self.parameters = params.get("Parameters")
        self.created_at = now
        self.updated_at = now
        self.status = "SUBMITTED"
        self.describes = 0

    def describe(self):
        self.describes += 1
        if self.status in ("SUBMITTED", "PICKED", "STARTED"):
            self.status = "STARTED" if self.describes == 1 else "FINISHED"
            self.updated_at = time.time()
        body = {
            "Id": self.id,
            "CreatedAt": self.created_at,
            "UpdatedAt": self.updated_at,
            "Database": self.database,
            "Duration": int((self.updated_at - self.created_at) * 1e9),
            "HasResultSet": False,
            "QueryString": ";\n".join(self.sqls) if self.batch else self.sqls[0],
            "RedshiftPid": 1073,
            "RedshiftQueryId": 0 if self.batch else 1,
            "Status": self.status,
        }
        if self.status == "FINISHED":
            body["ResultRows"] = 0
            body["ResultSize"] = 0
        if self.status == "ABORTED":
            body["Error"] = "the statement was cancelled"
        for key, value in (
            ("ClusterIdentifier", self.cluster_identifier),
            ("WorkgroupName", self.workgroup_name),
            ("DbUser", self.db_user),
            ("SecretArn", self.secret_arn),
            ("QueryParameters", self.parameters),
        ):
            if value:
                body[key] = value
        if self.batch:
            body["SubStatements"] = [
                {
                    "Id": f"{self.id}:{n}",
                    "QueryString": sql,
                    "Status": {"FINISHED": "FINISHED", "ABORTED": "ABORTED"}.get(self.status, "STARTED" if n == 1 else "SUBMITTED"),
                    "CreatedAt": self.created_at,
                    "UpdatedAt": self.updated_at,
                    "Duration": 0,
                    "HasResultSet": False,
                    "RedshiftQueryId": n,
                    **({"ResultRows": 0, "ResultSize": 0} if self.status == "FINISHED" else {}),
                }
                for n, sql in enumerate(self.sqls, start=1)
            ]
        return body

    def submitted(self):
        body = {"Id": self.id, "CreatedAt": self.created_at, "Database": self.database}
        for key, value in (
            ("ClusterIdentifier", self.cluster_identifier),
            ("WorkgroupName", self.workgroup_name),
            ("DbUser", self.db_user),
            ("SecretArn", self.secret_arn),
        ):
            if value:
                body[key] = value
        return body


def _statements(response):
    backend = redshiftdata_backends[response.current_account][response.region]
    if not hasattr(backend, "flowctl_statements"):
        backend.flowctl_statements = {}
    return backend.flowctl_statements


def _submit(response, sqls, batch):
    params = json.loads(response.body or "{}")
    if not params.get("Database"):
        raise ValidationException("Database is required")
    if not (params.get("ClusterIdentifier") or params.get("WorkgroupName")):
        raise ValidationException("either ClusterIdentifier or WorkgroupName is required")
    if not sqls or any(not (s or "").strip() for s in sqls):
        raise ValidationException("Sql must not be empty")
    statement = Statement(params, sqls, batch)
    _statements(response)[statement.id] = statement
    return 200, {}, json.dumps(statement.submitted())


def _find(response):
    statement_id = (json.loads(response.body or "{}").get("Id") or "").split(":")[0]
    statement = _statements(response).get(statement_id)
    if statement is None:
        raise ResourceNotFoundException()
    return statement


def execute_statement(self):
    return _submit(self, [json.loads(self.body or "{}").get("Sql")], batch=False)


def batch_execute_statement(self):
    return _submit(self, json.loads(self.body or "{}").get("Sqls") or [], batch=True)


def describe_statement(self):
    return 200, {}, json.dumps(_find(self).describe())


def cancel_statement(self):
    statement = _find(self)
    if statement.status in ("FINISHED", "FAILED", "ABORTED"):
        raise ValidationException(f"Could not cancel a query that is already in {statement.status} state with ID: {statement.id}")
    statement.status = "ABORTED"
    statement.updated_at = time.time()
    return 200, {}, json.dumps({"Status": True})


RedshiftDataAPIServiceResponse.execute_statement = execute_statement
RedshiftDataAPIServiceResponse.batch_execute_statement = batch_execute_statement
RedshiftDataAPIServiceResponse.describe_statement = describe_statement
RedshiftDataAPIServiceResponse.cancel_statement = cancel_statement
assert RedshiftDataAPIServiceBackend  # the backend keeps the statements (reset with moto's API)


# -- 3. The request record ----------------------------------------------------------------------


class Recorder:
    """WSGI middleware: one JSON line per request, then moto."""

    def __init__(self, app, path):
        self.app = app
        self.path = path
        self.lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.app, name)

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET")
        length = environ.get("CONTENT_LENGTH") or ""
        content_type = environ.get("CONTENT_TYPE") or ""
        entry = {
            "time": time.time(),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING") or "",
            "target": target,
            "content_length": int(length) if length.isdigit() else None,
        }
        if target and "json" in content_type and length.isdigit():
            body = environ["wsgi.input"].read(int(length))
            environ["wsgi.input"] = io.BytesIO(body)
            try:
                entry["json"] = json.loads(body or b"{}")
            except ValueError:
                entry["json"] = None
        if not environ.get("PATH_INFO", "").startswith("/moto-api"):
            with self.lock, open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")
        return self.app(environ, start_response)


def main(argv):
    record = None
    buckets = []
    rest = []
    args = iter(argv)
    for arg in args:
        if arg == "--record":
            record = next(args)
        elif arg == "--bucket":
            buckets.append(next(args))
        else:
            rest.append(arg)
    if record:
        open(record, "a").close()
        dispatcher = moto.server.DomainDispatcherApplication

        def recording(*a, **kw):
            return Recorder(dispatcher(*a, **kw), record)

        moto.server.DomainDispatcherApplication = recording
    if buckets:
        from moto.s3.models import s3_backends

        for bucket in buckets:
            s3_backends[ACCOUNT]["aws"].create_bucket(bucket, REGION)
    print("moto_local: EMR steps progress, Redshift Data statements finish (see scripts/standins/moto_local.py)", flush=True)
    moto.server.main(rest)


if __name__ == "__main__":
    main(sys.argv[1:])
