"""boto3 clients for moto_server, shared by the tests' independent clients (tests/data/*/*_client.py).

Credentials are moto's usual dummies; moto_server without INITIAL_NO_AUTH_ACTION_COUNT accepts
any, and keeps every key's resources in one account.
"""

import boto3


def client(service, endpoint, **options):
    """A boto3 client of `service` on the moto_server at `endpoint`, in us-east-1."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        **options,
    )
