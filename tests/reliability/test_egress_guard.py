"""The egress guard against the routes of issue 18, each aimed at a real listener on this machine.

The listeners (TCP and UDP on 127.0.0.1) are *outside* the allow-list: the operator's list here is
``127.0.0.1:1`` (a port nothing listens on), so loopback in general is not allowed. For every route the
test asserts three things: the call was refused, the attempt is in the connection log, and the listener
received nothing. ctypes and os.system are the documented gaps of an in-process guard: their tests assert
what really happens (the listener is reached) so that the README's claim stays honest.
"""

from __future__ import annotations

import _socket
import ctypes
import ctypes.util
import json
import multiprocessing as mp
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from rlsd.perimeter import PerimeterError, RefusedConnection, guard, step

ALLOW = ["127.0.0.1:1"]


class Listener:
    """A TCP and a UDP listener on 127.0.0.1 that count what reaches them."""

    def __init__(self) -> None:
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(64)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port, self.uport = self.tcp.getsockname()[1], self.udp.getsockname()[1]
        self.accepted = 0
        self.datagrams = 0
        self._stop = False
        self._t = [threading.Thread(target=self._accept, daemon=True), threading.Thread(target=self._recv, daemon=True)]
        for t in self._t:
            t.start()

    def _accept(self) -> None:
        self.tcp.settimeout(0.1)
        while not self._stop:
            try:
                c, _ = self.tcp.accept()
            except OSError:
                continue
            self.accepted += 1
            c.close()

    def _recv(self) -> None:
        self.udp.settimeout(0.1)
        while not self._stop:
            try:
                self.udp.recv(64)
            except OSError:
                continue
            self.datagrams += 1

    def reached(self, wait: float = 0.3) -> int:
        time.sleep(wait)
        return self.accepted + self.datagrams

    def close(self) -> None:
        self._stop = True
        for t in self._t:
            t.join(2)
        self.tcp.close()
        self.udp.close()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


def _log(path) -> dict:
    return json.loads(path.read_text())


def _refusals(log: dict, port: int) -> list[dict]:
    return [e for e in log["log"] if e.get("refused") and e.get("port") == port]


# ---------------------------------------------------------------------------------------- in this process


ROUTES = {
    "_socket.socket().connect": lambda L: _socket.socket().connect(("127.0.0.1", L.port)),
    "_socket.socket().connect_ex": lambda L: _socket.socket().connect_ex(("127.0.0.1", L.port)),
    "socket.create_connection": lambda L: socket.create_connection(("127.0.0.1", L.port), timeout=1),
    "UDP sendto": lambda L: _socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", L.uport)),
    "UDP sendmsg": lambda L: _socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendmsg([b"x"], [], 0,
                                                                                      ("127.0.0.1", L.uport)),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_each_socket_route_is_refused_logged_and_sends_nothing(listener, tmp_path, route):
    log = tmp_path / "c.json"
    with pytest.raises(PerimeterError, match="127.0.0.1"):
        with guard(ALLOW, mode="strict", log_path=log):
            with pytest.raises(RefusedConnection):
                ROUTES[route](listener)
    assert listener.reached() == 0
    port = listener.uport if "UDP" in route else listener.port
    assert len(_refusals(_log(log), port)) == 1


@pytest.mark.parametrize("kind", ["socket.socket", "_socket.socket"])
def test_a_socket_opened_before_the_guard_is_covered(listener, tmp_path, kind):
    s = socket.socket() if kind == "socket.socket" else _socket.socket()
    try:
        with pytest.raises(PerimeterError):
            with guard(ALLOW, mode="strict", log_path=tmp_path / "c.json"):
                with pytest.raises(RefusedConnection):
                    s.connect(("127.0.0.1", listener.port))
    finally:
        s.close()
    assert listener.reached() == 0 and len(_refusals(_log(tmp_path / "c.json"), listener.port)) == 1


@pytest.mark.parametrize("call", [
    lambda: _socket.getaddrinfo("telemetry.example.com", 443),
    lambda: _socket.gethostbyname("telemetry.example.com"),
    lambda: _socket.gethostbyname_ex("telemetry.example.com"),
    lambda: _socket.gethostbyaddr("192.0.2.7"),
    lambda: _socket.getnameinfo(("192.0.2.7", 443), 0),
], ids=["getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"])
def test_resolvers_called_through__socket_are_refused_before_the_query(tmp_path, call):
    with pytest.raises(PerimeterError):
        with guard(ALLOW, mode="strict", log_path=tmp_path / "c.json"):
            with pytest.raises(RefusedConnection):
                call()
    log = _log(tmp_path / "c.json")
    assert log["refused"] == 1 and log["log"][0]["host"] in ("telemetry.example.com", "192.0.2.7")


def test_a_thread_started_in_the_block_is_refused_after_it(listener, tmp_path):
    log = tmp_path / "c.json"
    go, done = threading.Event(), []

    def sender():
        go.wait(10)
        try:
            _socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"late", ("127.0.0.1", listener.uport))
            done.append("sent")
        except RefusedConnection:
            done.append("refused")

    with guard(ALLOW, mode="strict", log_path=log):
        t = threading.Thread(target=sender)
        t.start()
    assert _log(log)["attempts"] == 0  # the block ended clean
    go.set()
    t.join(10)
    assert done == ["refused"] and listener.reached() == 0
    late = _log(log)["log"]  # the step's log was rewritten with the late attempt
    assert [(e["op"], e["port"], e["refused"], e.get("after_block")) for e in late] == [
        ("sendto", listener.uport, True, True)]
    # a thread started after the block is not under it
    other = []
    t2 = threading.Thread(target=lambda: other.append(_socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(
        b"free", ("127.0.0.1", listener.uport))))
    t2.start()
    t2.join(10)
    assert other == [4] and listener.reached() == 1


def _child_connects(port: int) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        pass  # a careless child carries on


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_multiprocessing_child_is_refused_and_reported_to_the_parent(listener, tmp_path, method):
    log = tmp_path / "c.json"
    with pytest.raises(PerimeterError, match=r"child process"):
        with guard(ALLOW, mode="strict", log_path=log):
            p = mp.get_context(method).Process(target=_child_connects, args=(listener.port,))
            p.start()
            p.join(60)
            assert p.exitcode == 0
    assert listener.reached() == 0
    kids = [e for e in _log(log)["log"] if e.get("child") and e["op"] != "spawn"]
    assert kids and all(e["refused"] and e["pid"] != os.getpid() for e in kids), kids


def test_a_python_subprocess_is_refused_and_reported_to_the_parent(listener, tmp_path):
    log = tmp_path / "c.json"
    code = (f"import _socket\ntry: _socket.socket().connect(('127.0.0.1', {listener.port}))\n"
            "except OSError as e: print(type(e).__name__)")
    with pytest.raises(PerimeterError, match=r"child process"):
        with guard(ALLOW, mode="strict", log_path=log):
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
            assert r.stdout.strip() == "RefusedConnection", r.stderr
    assert listener.reached() == 0
    rec = _log(log)
    assert [e["op"] for e in rec["log"] if e.get("child")] == ["connect"]
    assert [e["guarded"] for e in rec["log"] if e["op"] == "spawn"] == [True]


def test_record_mode_logs_children_without_refusing(listener, tmp_path):
    log = tmp_path / "c.json"
    with guard(ALLOW, mode="record", log_path=log):
        subprocess.run([sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {listener.port}))"],
                       check=True, timeout=60)
    assert listener.reached() == 1
    kids = [e for e in _log(log)["log"] if e.get("child") and e["op"] != "spawn"]
    assert kids and all(not e["allowed"] and not e["refused"] for e in kids)


def test_outside_a_block_nothing_is_guarded(listener):
    with guard(ALLOW, mode="strict"):
        pass
    socket.create_connection(("127.0.0.1", listener.port), timeout=2).close()
    assert "RLSD_EGRESS_CHILD" not in os.environ
    r = subprocess.run([sys.executable, "-c", f"import socket; socket.create_connection(('127.0.0.1', {listener.port}))"],
                       timeout=60)
    assert r.returncode == 0 and listener.reached() == 2


# ---------------------------------------------------------------------------------------- run parameters


def test_run_parameters_cannot_widen_the_allow_list(monkeypatch, tmp_path):
    monkeypatch.setenv("RLSD_EGRESS_ALLOW", "loopback minio.rlsd.svc:9000")
    ok = "store: {backend: s3, endpoint: 'minio.rlsd.svc:9000', bucket: rlsd}\ntracking: {enabled: false}"
    with step(ok, {}, log_path=tmp_path / "ok.json"):
        pass
    for params, field in [({"store.endpoint": "exfil.example.com:9000"}, "store.endpoint"),
                          ({"tracking.enabled": True, "tracking.uri": "https://collector.example.com"}, "tracking.uri"),
                          ({"platform.allow_hosts": ["collector.example.com"]}, "platform.allow_hosts")]:
        with pytest.raises(PerimeterError, match=rf"{field} names .*example.com.* outside the platform allow-list"):
            with step(ok, params, log_path=tmp_path / "no.json"):
                raise AssertionError("the step body must not run")
        assert _log(tmp_path / "no.json")["refused"] == 1


# ---------------------------------------------------------------------------------------- documented gaps


def test_known_gap_ctypes_connect_is_not_seen(listener, tmp_path):
    """ctypes calls libc's connect() directly: no audit event, so the guard neither refuses nor logs it.
    Documented in rlsd.perimeter and the README: the NetworkPolicies are what stop it on a cluster."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    s = socket.socket()
    addr = struct.pack("=H", socket.AF_INET) + struct.pack("!H", listener.port) + socket.inet_aton("127.0.0.1") + b"\0" * 8
    try:
        with guard(ALLOW, mode="strict", log_path=tmp_path / "c.json"):
            rc = libc.connect(s.fileno(), ctypes.c_char_p(addr), len(addr))
    finally:
        s.close()
    assert rc == 0 and listener.reached() == 1          # it got through
    assert _log(tmp_path / "c.json")["attempts"] == 0   # and the log does not know


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash's /dev/tcp")
def test_known_gap_os_system_of_a_non_python_program(listener, tmp_path):
    """A shell program's traffic is not covered in-process; its start is logged as an unguarded child."""
    with guard(ALLOW, mode="strict", log_path=tmp_path / "c.json"):
        os.system(f"bash -c 'echo x > /dev/tcp/127.0.0.1/{listener.port}' 2>/dev/null")
    assert listener.reached() == 1  # it got through
    log = _log(tmp_path / "c.json")
    assert log["refused"] == 0 and log["children_unguarded"] == 1
    assert [e["event"] for e in log["log"] if e["op"] == "spawn" and not e["guarded"]] == ["os.system"]


def test_child_starts_are_counted_not_repeated(tmp_path):
    """A verifier starting a child per answer must not grow the log by a line per answer."""
    with guard(ALLOW, mode="strict", log_path=tmp_path / "c.json"):
        for _ in range(3):
            subprocess.run(["true"], check=True)
        subprocess.run([sys.executable, "-I", "-c", "pass"], check=True)
    log = _log(tmp_path / "c.json")
    spawns = [(e["command"].split()[0], e.get("count", 1), e["guarded"]) for e in log["log"] if e["op"] == "spawn"]
    assert spawns == [("true", 3, False), (sys.executable, 1, False)]  # -I: the bootstrap cannot run
    assert log["children_unguarded"] == 4 and log["refused"] == 0
