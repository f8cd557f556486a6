"""Real servers for tests: an ``mlflow server`` (SQLite back end) and SeaweedFS S3 for its artifacts.

Reusable by any test module (tests/conftest.py imports the fixtures)::

    def test_x(mlflow_server):        # artifacts on a local folder
        mlflow_server.url             # http://127.0.0.1:<port>
    def test_y(mlflow_server_s3):     # artifacts on S3 (SeaweedFS) through the server's proxy

Both are session-scoped and started once (~5-16 s for MLflow, ~1 s for SeaweedFS). Every server
runs in its own process group on free loopback ports and is stopped by that group's id (the MLflow
server has a uvicorn child, and a job runner with huey children unless
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false, which is set here), so nothing outlives the session.
``MlflowServer.stop()`` / ``start()`` restart a server in place (same port, same database), which
the tracking tests use to simulate an outage.

The S3 artifact store needs ``boto3`` inside the MLflow server's Python: without it the S3
fixtures skip with the pin to add. Telemetry is off for both servers.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.s3server import S3Server, free_ports

BOTO3_PIN = "boto3==1.44.5"



def _bin(name: str) -> str | None:
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.is_file() else shutil.which(name)


class _Proc:
    """A server process in its own process group; ``stop()`` ends the whole group."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # the leader is gone; children of the group may linger a moment
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                try:
                    os.killpg(pgid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                continue
            break
        self.proc = None


class MlflowServer(_Proc):
    def __init__(self, root: Path, *, artifacts_destination: str | None = None, env: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(root / "mlflow-server.log")
        self.root = root
        self.port = port or free_ports(1)[0]
        self.backend_uri = f"sqlite:///{root / 'mlflow.db'}"
        self.artifacts_destination = artifacts_destination or str(root / "artifacts")
        self.extra_env = dict(env or {})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> MlflowServer:
        exe = _bin("mlflow")
        if exe is None:
            pytest.skip("the mlflow CLI is not installed beside this Python")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
               "DO_NOT_TRACK": "true", **self.extra_env}
        self._spawn([exe, "server", "--backend-store-uri", self.backend_uri,
                     "--artifacts-destination", self.artifacts_destination,
                     "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"], env, self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"mlflow server exited at start; log:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy on {self.url} after {timeout}s; log:\n{self.log_tail()}")


class SeaweedS3(S3Server):
    """tests/s3server.py's SeaweedFS with one bucket created at start, and the client environment
    an MLflow server needs to keep its artifacts there."""

    def __init__(self, root: Path, *, bucket: str = "mlflow", **kw) -> None:
        super().__init__(root, **kw)
        self.bucket = bucket

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.endpoint}"

    def client_env(self) -> dict[str, str]:
        return {"MLFLOW_S3_ENDPOINT_URL": self.endpoint_url, **self.env(), "AWS_DEFAULT_REGION": "us-east-1"}

    def start(self) -> SeaweedS3:
        super().start()
        from minio import Minio

        client = Minio(self.endpoint, access_key=self.access_key, secret_key=self.secret_key, secure=False)
        if not client.bucket_exists(self.bucket):
            client.make_bucket(self.bucket)
        return self


# ----------------------------------------------------------------------------------------------
# Fixtures (session-scoped; tests/conftest.py imports them)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-local"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def seaweed_s3(tmp_path_factory: pytest.TempPathFactory):
    srv = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def mlflow_server_s3(tmp_path_factory: pytest.TempPathFactory, seaweed_s3: SeaweedS3):
    if importlib.util.find_spec("boto3") is None:
        pytest.skip(f"MLflow's S3 artifact store needs boto3 in the server's Python; add {BOTO3_PIN} to the dev extras")
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-s3"), artifacts_destination=f"s3://{seaweed_s3.bucket}/mlflow",
                       env=seaweed_s3.client_env())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# Test values of the Secrets the prod overlay's MLflow Deployment reads.
MANIFEST_SECRETS = {("rlsd-mlflow", "username"): "pipeline", ("rlsd-mlflow", "password"): "a-long-s3cret-pw-1",
                    ("rlsd-mlflow", "flask-secret-key"): "csrf-key", ("rlsd-mlflow-db", "password"): "db-pw",
                    ("rlsd-minio-mlflow", "accesskey"): "ak", ("rlsd-minio-mlflow", "secretkey"): "sk"}


def start_mlflow_from_manifest(root: Path, port: int, *, s3: S3Server | None = None,
                               service_port: int | None = None, s3_host: str | None = None) -> _Proc:
    """``mlflow server`` with the container command, args and env of the rendered prod overlay (basic-auth app,
    the Host allow-list, the auth file from its ConfigMap), Secrets replaced by MANIFEST_SECRETS. Substituted
    only: SQLite for PostgreSQL (both databases), 127.0.0.1 for 0.0.0.0, ``port``, one worker; with ``s3`` its
    endpoint and user serve the artifacts (named ``s3_host`` in MLflow's S3 URLs when given), without it a local
    folder does; ``service_port`` moves the allowed in-cluster ``:5000`` entries to the emulated Service port.
    Returns once /health answers (RuntimeError with the server's log otherwise)."""
    import configparser

    from tests.manifests.test_manifests import by_kind, render

    objs = render("prod")
    (c,) = by_kind(objs, "Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"]
    root.mkdir(parents=True, exist_ok=True)
    subst = {"--backend-store-uri": f"sqlite:///{root / 'mlflow.db'}", "--host": "127.0.0.1",
             "--port": str(port), "--workers": "1"}
    if s3 is None:
        subst["--artifacts-destination"] = str(root / "artifacts")
    args = []
    for a in c["args"]:
        key, eq, val = a.partition("=")
        if key in subst:
            val = subst[key]
        elif key == "--allowed-hosts" and service_port:
            val = val.replace(":5000", f":{service_port}")
        args.append(f"{key}={val}" if eq else a)
    ini = configparser.ConfigParser()
    ini.read_string(by_kind(objs, "ConfigMap")["mlflow-auth"]["data"]["basic_auth.ini"])
    ini["mlflow"]["database_uri"] = f"sqlite:///{root / 'auth.db'}"
    env = {"PATH": os.environ["PATH"], "HOME": str(root)}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = MANIFEST_SECRETS[(ref["name"], ref["key"])]
    if s3 is not None:
        env.update(s3.env())  # MLflow's own MinIO user: here the one SeaweedFS user
        env["MLFLOW_S3_ENDPOINT_URL"] = f"http://{s3_host}:{s3.endpoint.rsplit(':', 1)[1]}" if s3_host else \
            f"http://{s3.endpoint}"
    mount = next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "auth")
    if not env["MLFLOW_AUTH_CONFIG_PATH"].startswith(mount + "/"):
        raise RuntimeError(f"MLFLOW_AUTH_CONFIG_PATH {env['MLFLOW_AUTH_CONFIG_PATH']} is not on the auth volume {mount}")
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(root / os.path.basename(env["MLFLOW_AUTH_CONFIG_PATH"]))
    with open(env["MLFLOW_AUTH_CONFIG_PATH"], "w") as f:
        ini.write(f)
    proc = _Proc(root / "mlflow-server.log")
    proc._spawn([_bin("mlflow"), *c["command"][1:], *args], env, root)
    deadline = time.monotonic() + 150
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if not proc.running or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"MLflow from the manifest did not start; log:\n{proc.log_tail()}")
        time.sleep(0.5)
