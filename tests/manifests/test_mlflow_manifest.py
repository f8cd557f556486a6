"""The MLflow server started with the arguments of the rendered manifest (a SQLite backend and a
local artifact folder substituted, the auth file from the rendered ConfigMap with its database
substituted, Secrets replaced by test values) answers the API under the in-cluster Host header with
the Secret's credentials, and refuses requests without credentials or from another Host."""

from __future__ import annotations

import base64
import configparser
import importlib.util
import urllib.error
import urllib.request

import pytest
from tests.manifests.test_manifests import by_kind, render
from tests.mlflow_server import MANIFEST_SECRETS, start_mlflow_from_manifest
from tests.s3server import free_ports

IN_CLUSTER = "mlflow.rlsd.svc.cluster.local:5000"

def mlflow_container():
    dep = by_kind(render("prod"), "Deployment")["mlflow"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, c


def test_no_secret_on_the_command_line_and_auth_and_hosts_set():
    _, c = mlflow_container()
    argv = c["command"] + c["args"]
    assert argv[:2] == ["mlflow", "server"]  # no shell that could expand a secret into the command line
    assert not any("$" in a for a in argv)
    secret_envs = {e["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert {"PGPASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD", "AWS_SECRET_ACCESS_KEY"} <= secret_envs
    assert "--app-name=basic-auth" in argv
    hosts = next(a for a in argv if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert IN_CLUSTER in hosts and "*" not in hosts
    ini = configparser.ConfigParser()
    ini.read_string(by_kind(render("prod"), "ConfigMap")["mlflow-auth"]["data"]["basic_auth.ini"])
    assert "@" in ini["mlflow"]["database_uri"] and ":" not in ini["mlflow"]["database_uri"].split("//")[1].split("@")[0]
    assert ini["mlflow"]["default_permission"] == "NO_PERMISSIONS"


def _request(url, host, auth=None):
    req = urllib.request.Request(url, headers={"Host": host})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None  # not listening yet


@pytest.mark.integration
def test_server_from_the_manifest_serves_the_in_cluster_host_with_credentials_only(tmp_path):
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.fail("MLflow's basic-auth app needs flask-wtf (a dev dependency, see pyproject.toml)")
    port = free_ports(1)[0]
    proc = start_mlflow_from_manifest(tmp_path, port)
    try:
        url = f"http://127.0.0.1:{port}"
        assert _request(url + "/health", "localhost") == 200
        api = url + "/api/2.0/mlflow/experiments/search?max_results=1"
        creds = (MANIFEST_SECRETS[("rlsd-mlflow", "username")], MANIFEST_SECRETS[("rlsd-mlflow", "password")])
        assert _request(api, IN_CLUSTER, creds) == 200, proc.log_tail()
        assert _request(api, "mlflow:5000", creds) == 200
        assert _request(api, IN_CLUSTER) == 401
        assert _request(api, IN_CLUSTER, (creds[0], "wrong")) == 401
        assert _request(api, "evil.example.com", creds) == 403  # the Host check is on, not a wildcard
    finally:
        proc.stop()
