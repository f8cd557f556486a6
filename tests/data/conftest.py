"""Fixtures of the data-plane tests. The SeaweedFS server helper lives in tests/s3server.py."""

from __future__ import annotations

import os
import uuid

import pytest
from tests.s3server import S3Server

from rlsd.config import StoreConfig, load_config
from rlsd.data.store import LocalStore, S3Store


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    with S3Server(tmp_path_factory.mktemp("weed")) as srv:
        yield srv


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    for k in ("MINIO_ACCESS_KEY", "MINIO_SECRET_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(k, raising=False)
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


def s3_cfg(server: S3Server, **kw) -> StoreConfig:
    return StoreConfig(backend="s3", endpoint=server.endpoint, bucket=kw.pop("bucket", f"rlsd-{uuid.uuid4().hex[:10]}"),
                       secure=False, retries=kw.pop("retries", 2), **kw)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def store(request, tmp_path):
    """A fresh, empty store of each back end (a new bucket per test on the shared S3 server)."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    server = request.getfixturevalue("s3_env")
    return S3Store(s3_cfg(server))


@pytest.fixture
def cfg():
    return load_config()


@pytest.fixture(autouse=True)
def _no_gx_analytics():
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
