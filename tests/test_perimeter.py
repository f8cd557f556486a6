"""The network guard: planted outbound connections are refused before any packet leaves; loopback works.

192.0.2.1 is TEST-NET-1 (RFC 5737): documentation only, never routed. The guard refuses it in
Python before the real connect() runs, so no traffic is sent in these tests.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest

from rlsd.config import load_config
from rlsd.perimeter import (
    Guard,
    PerimeterError,
    RefusedConnection,
    allowed_destinations,
    guard,
    operator_allow_list,
    step,
)

PLANTED = ("192.0.2.1", 80)


def _echo_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        conn.sendall(conn.recv(16))
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


def test_planted_connection_is_refused_and_reported(tmp_path):
    log = tmp_path / "connections.json"
    real_connect = socket.socket.connect
    with pytest.raises(PerimeterError, match=r"192\.0\.2\.1:80"):
        with guard(["minio.rlsd.svc:9000"], mode="strict", log_path=log):
            socket.create_connection(PLANTED, timeout=0.2)
    assert socket.socket.connect is real_connect, "the guard must restore the socket module"
    rec = json.loads(log.read_text())
    assert rec["refused"] == 1 and rec["attempts"] == 1
    # create_connection resolves first: refused at the lookup, before any socket exists
    assert rec["log"][0] | {"time": 0} == {"time": 0, "op": "getaddrinfo", "host": "192.0.2.1", "port": 80,
                                           "allowed": False, "refused": True, "reason": "not in the allow-list"}


def test_refusal_swallowed_by_a_library_still_fails_the_step(tmp_path):
    with pytest.raises(PerimeterError) as ei:
        with guard([], mode="strict", log_path=tmp_path / "c.json"):
            try:
                urllib.request.urlopen("http://192.0.2.1:8080/upload", timeout=0.2)
            except urllib.error.URLError:
                pass  # a careless library carries on
    assert "192.0.2.1:8080" in str(ei.value) and "RLSD_EGRESS_ALLOW" in str(ei.value)


def test_raw_socket_connect_is_refused_with_a_clear_error():
    with pytest.raises(PerimeterError):
        with guard([], mode="strict"):
            s = socket.socket()
            try:
                with pytest.raises(RefusedConnection, match="refused"):
                    s.connect(PLANTED)
                with pytest.raises(RefusedConnection):
                    s.connect_ex(PLANTED)
            finally:
                s.close()


def test_loopback_is_allowed_and_recorded(tmp_path):
    srv, t = _echo_server()
    port = srv.getsockname()[1]
    with guard(["loopback"], mode="strict", log_path=tmp_path / "c.json") as g:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
            c.sendall(b"ping")
            assert c.recv(16) == b"ping"
    t.join(5)
    srv.close()
    assert g.refused == [] and g.outside == []
    assert [(e["op"], e["host"], e["port"], e["allowed"]) for e in g.log][:2] == [
        ("getaddrinfo", "127.0.0.1", port, True), ("connect", "127.0.0.1", port, True)]


def test_dns_lookup_of_an_outside_name_is_refused_before_the_query():
    with pytest.raises(PerimeterError, match="telemetry.example.com"):
        with guard(["minio:9000"], mode="strict"):
            with pytest.raises(RefusedConnection):
                socket.getaddrinfo("telemetry.example.com", 443)


def test_udp_and_legacy_lookups_are_guarded_too():
    real = (socket.socket.sendto, socket.gethostbyname)
    with pytest.raises(PerimeterError) as ei:
        with guard(["loopback"], mode="strict") as g:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                with pytest.raises(RefusedConnection):
                    s.sendto(b"telemetry", ("192.0.2.1", 8125))  # a statsd-style UDP ping
                s.sendto(b"ok", ("127.0.0.1", 9))                 # loopback: allowed (discard port)
            with pytest.raises(RefusedConnection):
                socket.gethostbyname("metrics.example.com")
            assert socket.gethostbyname("localhost").startswith("127.")
    assert (socket.socket.sendto, socket.gethostbyname) == real
    assert [(e["op"], e["host"], e["refused"]) for e in g.log] == [
        ("sendto", "192.0.2.1", True), ("sendto", "127.0.0.1", False),
        ("gethostbyname", "metrics.example.com", True), ("gethostbyname", "localhost", False)]
    assert "stopped: 192.0.2.1:8125, metrics.example.com. Allowed: loopback" in str(ei.value)


def test_loopback_is_allowed_only_when_the_operator_lists_it():
    g = Guard(["127.0.0.1:5000"], mode="record")
    assert g.permits("127.0.0.1", 5000)[0] and g.permits("localhost", 5000)[0]   # a loopback name, the listed port
    assert not g.permits("127.0.0.1", 5001)[0] and not g.permits("::1", 22)[0]
    assert Guard(["loopback"]).permits("::1", 22)[0]


def test_decisions_host_port_and_record_mode():
    g = Guard(["minio.rlsd.svc:9000", "mlflow.rlsd.svc", "[fd00::5]:443", "loopback"], mode="record")
    assert g.permits("minio.rlsd.svc", 9000) == (True, "allow-list")
    assert g.permits("minio.rlsd.svc", 9001)[0] is False      # port pinned
    assert g.permits("MLflow.rlsd.svc", 5000)[0] is True        # any port, case-insensitive
    assert g.permits("fd00::5", 443)[0] is True
    assert g.permits("::1", 1)[0] and g.permits("127.8.9.10", 1)[0] and g.permits("localhost", None)[0]
    g.check("connect", "192.0.2.1", 80)  # record mode: logged, not raised
    assert g.outside[0]["host"] == "192.0.2.1" and g.refused == []
    with pytest.raises(ValueError, match="strict | record | off"):
        Guard([], mode="lenient")


def test_allow_list_comes_from_the_operator_never_from_the_run(tmp_path):
    cfg = load_config(text="store: {backend: s3, endpoint: 'minio.rlsd.svc:9000'}\n"
                           "tracking: {uri: 'https://mlflow.rlsd.svc/'}\nplatform: {allow_hosts: [pypi.internal]}")
    allow_file = tmp_path / "egress-allow"
    allow_file.write_text("# set by the operator\nminio.rlsd.svc:9000  # the store\nmlflow.rlsd.svc:443\n")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
           "RLSD_EGRESS_ALLOW": "loopback", "RLSD_EGRESS_ALLOW_FILE": str(allow_file)}
    assert allowed_destinations(cfg, env=env) == ["loopback", "minio.rlsd.svc:9000", "mlflow.rlsd.svc:443",
                                                  "10.96.0.1:443"]  # pypi.internal (a run parameter) is not in it
    none = {"RLSD_EGRESS_ALLOW_FILE": str(tmp_path / "absent")}
    assert operator_allow_list(none) == ["loopback"]  # a laptop: this machine only
    assert allowed_destinations(cfg, env=none) == ["loopback"]  # whatever the config names


def test_step_sets_offline_switches_and_guards(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import os
    with pytest.raises(PerimeterError):
        with step("train: {steps: 3}", {"train.steps": 2, "model.path": ""}, log_path=tmp_path / "c.json") as cfg:
            assert cfg.train.steps == 2 and os.environ["HF_HUB_OFFLINE"] == "1"
            try:
                socket.create_connection(PLANTED, timeout=0.2)
            except OSError:
                pass
    assert json.loads((tmp_path / "c.json").read_text())["refused"] == 1


def test_off_mode_patches_nothing(tmp_path):
    real = socket.create_connection
    with guard([], mode="off", log_path=tmp_path / "c.json") as g:
        assert socket.create_connection is real
    assert g.log == [] and json.loads((tmp_path / "c.json").read_text())["mode"] == "off"


def test_the_real_stack_runs_under_the_strict_guard_with_zero_refusals(tmp_path):
    """Load a model with transformers, log to a local MLflow store, all inside the strict guard."""
    with step(f"tracking: {{uri: 'sqlite:///{tmp_path}/mlflow.db'}}", {}, log_path=tmp_path / "c.json") as cfg:
        import mlflow

        from rlsd.models import build_tiny_model, load_model, load_tokenizer

        build_tiny_model(str(tmp_path / "tiny"))
        model, tok = load_model(str(tmp_path / "tiny")), load_tokenizer(str(tmp_path / "tiny"))
        assert model(**tok("2+2=", return_tensors="pt")).logits.ndim == 3
        mlflow.set_tracking_uri(cfg.tracking.uri)
        mlflow.set_experiment("perimeter")
        with mlflow.start_run():
            mlflow.log_metric("x", 1.0)
    log = json.loads((tmp_path / "c.json").read_text())
    assert log["mode"] == "strict" and log["refused"] == 0 and log["outside_allow_list"] == 0, log["log"]


def test_an_address_resolved_from_an_allowed_name_keeps_the_names_port(monkeypatch):
    """Clients resolve a name and connect to its address: the address may be reached where the name may, and
    no further (an entry 'host:9000' let its address through on every port before)."""
    fake = {"minio.rlsd.svc": "10.0.0.7", "mlflow.rlsd.svc": "10.0.0.8", "telemetry.example.com": "10.0.0.9"}

    def resolver(host, port, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (fake[host], port or 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    with guard(["minio.rlsd.svc:9000", "mlflow.rlsd.svc"], mode="record") as g:
        socket.getaddrinfo("minio.rlsd.svc", 9000)
        socket.getaddrinfo("mlflow.rlsd.svc", 5000)
        socket.getaddrinfo("telemetry.example.com", 443)
        assert g.permits("10.0.0.7", 9000) == (True, "resolved from an allowed name")
        assert g.permits("10.0.0.7", 22)[0] is False
        assert g.permits("10.0.0.8", 5000)[0] and g.permits("10.0.0.8", 22)[0]  # the name has any port
        assert g.permits("10.0.0.9", 443)[0] is False  # a name outside the list: its address stays outside
