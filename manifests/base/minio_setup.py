"""Idempotent MinIO setup, run by the minio-setup Job (safe to re-run after every apply).

Creates the buckets (the store's bucket versioned), one policy and user for the pipeline (read the
inbox, read and write its own prefixes) and one for MLflow (its bucket only), and attaches them.
Root credentials come from MINIO_ROOT_USER / MINIO_ROOT_PASSWORD, the users' keys from
<PREFIX>_ACCESS_KEY / <PREFIX>_SECRET_KEY: all environment variables from Secrets, never arguments.
"""

import json
import os
import sys

STORE_BUCKET = os.environ.get("RLSD_STORE_BUCKET", "rlsd")
MLFLOW_BUCKET = os.environ.get("RLSD_MLFLOW_BUCKET", "mlflow")
# The pipeline reads the whole bucket (manuals and tickets arrive under inbox/) and writes only the
# prefixes rlsd.data.store keeps: content-addressed objects, snapshot manifests, refs, keys, folders.
PIPELINE_WRITE_PREFIXES = ("objects/", "snapshots/", "refs/", "keys/", "folders/")


def _statement(actions, resources):
    return {"Effect": "Allow", "Action": list(actions), "Resource": list(resources)}


def policies(store_bucket=STORE_BUCKET, mlflow_bucket=MLFLOW_BUCKET):
    """{policy name: policy document}."""
    store = f"arn:aws:s3:::{store_bucket}"
    mlflow = f"arn:aws:s3:::{mlflow_bucket}"
    return {
        "rlsd-pipeline": {"Version": "2012-10-17", "Statement": [
            _statement(["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketVersions"], [store]),
            _statement(["s3:GetObject", "s3:GetObjectVersion"], [f"{store}/*"]),
            _statement(["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                       [f"{store}/{p}*" for p in PIPELINE_WRITE_PREFIXES]),
        ]},
        "rlsd-mlflow": {"Version": "2012-10-17", "Statement": [
            _statement(["s3:ListBucket", "s3:GetBucketLocation"], [mlflow]),
            _statement(["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                       [f"{mlflow}/*"]),
        ]},
    }


USERS = {"rlsd-pipeline": "PIPELINE", "rlsd-mlflow": "MLFLOW"}  # policy -> env prefix of its user's keys


def setup(client, admin, env=os.environ, log=print):
    """Make the buckets, policies and users exist as described; calling it twice changes nothing."""
    from minio.versioningconfig import ENABLED, VersioningConfig

    for bucket in (STORE_BUCKET, MLFLOW_BUCKET):
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
            log(f"created bucket {bucket}")
    client.set_bucket_versioning(STORE_BUCKET, VersioningConfig(ENABLED))
    for name, doc in policies().items():
        admin.policy_add(name, policy=doc)  # add replaces an existing policy of that name
        access_key = env[f"{USERS[name]}_ACCESS_KEY"]
        admin.user_add(access_key, env[f"{USERS[name]}_SECRET_KEY"])  # add resets an existing user's key
        attached = json.loads(admin.user_info(access_key)).get("policyName", "")
        if name not in attached.split(","):
            admin.attach_policy([name], user=access_key)
        log(f"user for {name}: policy attached")


def main():
    from minio import Minio, MinioAdmin
    from minio.credentials import StaticProvider

    endpoint = os.environ.get("MINIO_ENDPOINT", "minio:9000")
    creds = StaticProvider(os.environ["MINIO_ROOT_USER"], os.environ["MINIO_ROOT_PASSWORD"])
    client = Minio(endpoint, credentials=creds, secure=False)
    admin = MinioAdmin(endpoint=endpoint, credentials=creds, secure=False)
    setup(client, admin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
