"""Shared fixtures: real MLflow and SeaweedFS S3 servers (see tests/mlflow_server.py)."""

from tests.mlflow_server import mlflow_server, mlflow_server_s3, seaweed_s3  # noqa: F401
