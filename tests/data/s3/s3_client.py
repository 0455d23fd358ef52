"""An S3 client independent of flowctl, for the S3 tests: boto3 from the test virtualenv.

The tests prepare buckets and objects with it and check what flowctl wrote with it, so a bug in
flowctl's S3 code cannot hide behind the same bug on the checking side.

    s3_client.py ENDPOINT mb BUCKET
    s3_client.py ENDPOINT put BUCKET KEY FILE
    s3_client.py ENDPOINT put-text BUCKET KEY TEXT
    s3_client.py ENDPOINT same BUCKET KEY FILE     exit 0 when the object's bytes are the file's
    s3_client.py ENDPOINT head BUCKET KEY          JSON: size, etag, metadata, content_type
    s3_client.py ENDPOINT ls BUCKET PREFIX         JSON: [[key, size], ...]
    s3_client.py ENDPOINT rm BUCKET KEY

Credentials are moto's usual dummies (tests/support/moto_client.py).
"""

import json
import os
import sys

from botocore.config import Config

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "support"))
from moto_client import client  # noqa: E402


def main(argv):
    endpoint, command, args = argv[1], argv[2], argv[3:]
    s3 = client("s3", endpoint, config=Config(s3={"addressing_style": "path"}))
    if command == "mb":
        s3.create_bucket(Bucket=args[0])
    elif command == "put":
        bucket, key, path = args
        s3.upload_file(path, bucket, key)
    elif command == "put-text":
        bucket, key, text = args
        s3.put_object(Bucket=bucket, Key=key, Body=text.encode())
    elif command == "same":
        bucket, key, path = args
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
        offset = 0
        with open(path, "rb") as f:
            while True:
                want = f.read(1 << 20)
                got = body.read(len(want)) if want else body.read(1)
                if want != got:
                    for i, (a, b) in enumerate(zip(want, got)):
                        if a != b:
                            offset += i
                            break
                    else:
                        offset += min(len(want), len(got))
                    print(f"s3://{bucket}/{key} differs from {path} at byte {offset}")
                    return 1
                if not want:
                    break
                offset += len(want)
        print(f"s3://{bucket}/{key} is byte-identical to {path} ({offset} bytes)")
    elif command == "head":
        bucket, key = args
        head = s3.head_object(Bucket=bucket, Key=key)
        print(
            json.dumps(
                {
                    "size": head["ContentLength"],
                    "etag": head["ETag"].strip('"'),
                    "metadata": head.get("Metadata", {}),
                    "content_type": head.get("ContentType"),
                }
            )
        )
    elif command == "ls":
        bucket, prefix = args
        out = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out.extend([o["Key"], o["Size"]] for o in page.get("Contents", []))
        print(json.dumps(out))
    elif command == "rm":
        bucket, key = args
        s3.delete_object(Bucket=bucket, Key=key)
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
