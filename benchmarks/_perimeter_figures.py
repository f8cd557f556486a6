"""Issue 18 items 6-9 figures (called at the end of benchmarks/reliability.py; runnable alone):

    PYTHONPATH=src:. python benchmarks/_perimeter_figures.py

- egress: each route of issue 18 aimed at a real listener on 127.0.0.1 outside the allow-list
  (``127.0.0.1:1``): refused? in the connection log? did the listener receive anything? The two routes an
  in-process guard cannot cover (ctypes connect, os.system of a non-Python program) are measured too and
  reported as the documented gaps they are.
- config: the 315-byte-class alias bomb (time, peak traced memory), the issue's out-of-range values and
  escaping path, numeric fields with a stated range.
- CLI and metrics log: the table tests (tests/reliability/test_cli_errors.py, test_metrics_log.py) run
  in pytest; passed / failed counts.
"""

from __future__ import annotations

import _socket
import ctypes
import ctypes.util
import json
import multiprocessing as mp
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

ALLOW = ["127.0.0.1:1"]
_LIBC: list = []  # loaded outside the guard: find_library itself starts ldconfig


class _Listener:
    def __init__(self) -> None:
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(64)
        self.tcp.settimeout(0.05)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.settimeout(0.05)
        self.port, self.uport = self.tcp.getsockname()[1], self.udp.getsockname()[1]

    def drain(self, wait: float = 0.3) -> int:
        """Connections accepted + datagrams received since the last call."""
        n, end = 0, time.time() + wait
        while time.time() < end:
            for s, get in ((self.tcp, lambda s: s.accept()[0].close()), (self.udp, lambda s: s.recv(64))):
                try:
                    get(s)
                    n += 1
                except OSError:
                    pass
        return n


def _child_connect(port: int) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        pass


def _route(name: str, lst: _Listener, tmp: Path) -> dict:
    """Run one route inside a strict guard; return refused / logged / reached."""
    from rlsd.perimeter import PerimeterError, guard

    log = tmp / f"{name.replace(' ', '_')}.json"
    pre = _socket.socket()
    late: list[threading.Thread] = []
    go = threading.Event()

    def late_sender() -> None:
        go.wait(10)
        try:
            _socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", lst.uport))
        except OSError:
            pass

    def act() -> None:
        if name == "_socket.socket().connect":
            _socket.socket().connect(("127.0.0.1", lst.port))
        elif name == "UDP sendmsg":
            _socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendmsg([b"x"], [], 0, ("127.0.0.1", lst.uport))
        elif name == "socket opened before the guard":
            pre.connect(("127.0.0.1", lst.port))
        elif name == "thread sending after the block":
            t = threading.Thread(target=late_sender)
            t.start()
            late.append(t)
        elif name == "multiprocessing child":
            p = mp.get_context("spawn").Process(target=_child_connect, args=(lst.port,))
            p.start()
            p.join(60)
        elif name == "Python subprocess":
            subprocess.run([sys.executable, "-c", f"import socket\ntry: socket.create_connection(('127.0.0.1', {lst.port}))"
                            "\nexcept OSError: pass"], timeout=60)
        elif name == "resolver via _socket":
            _socket.getaddrinfo("telemetry.example.com", 443)
        elif name == "ctypes connect":
            libc = _LIBC[0]
            addr = struct.pack("=H", socket.AF_INET) + struct.pack("!H", lst.port) + socket.inet_aton("127.0.0.1") + b"\0" * 8
            libc.connect(pre.fileno(), ctypes.c_char_p(addr), len(addr))
        elif name == "os.system":
            os.system(f"bash -c 'echo x > /dev/tcp/127.0.0.1/{lst.port}' 2>/dev/null")

    step_failed = False
    try:
        with guard(ALLOW, mode="strict", log_path=log):
            try:
                act()
            except OSError:
                pass
    except PerimeterError:
        step_failed = True
    go.set()
    for t in late:
        t.join(10)
    pre.close()
    rec = json.loads(log.read_text())
    refused = [e for e in rec["log"] if e.get("refused")]
    return {"route": name, "refused": bool(refused), "logged": any(e.get("op") != "spawn" for e in rec["log"]),
            "reached_listener": lst.drain(), "step_failed": step_failed,
            "logged_as_unguarded_child": rec["children_unguarded"]}


def egress(tmp: Path) -> dict:
    _LIBC[:] = [ctypes.CDLL(ctypes.util.find_library("c"))]
    lst = _Listener()
    covered = ["_socket.socket().connect", "UDP sendmsg", "socket opened before the guard",
               "thread sending after the block", "multiprocessing child", "Python subprocess", "resolver via _socket"]
    gaps = ["ctypes connect", "os.system"]
    rows = [_route(n, lst, tmp) for n in covered + gaps]
    lst.tcp.close()
    lst.udp.close()
    ok = [r for r in rows[:len(covered)] if r["refused"] and r["logged"] and r["reached_listener"] == 0]
    return {"routes": rows, "covered_refused_logged": len(ok), "covered_total": len(covered),
            "gaps_reaching_listener": sum(r["reached_listener"] > 0 for r in rows[len(covered):]), "gaps_total": len(gaps)}


def config_figures() -> dict:
    import rlsd.config as config
    from rlsd.config import ConfigError, load_config

    bomb = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        load_config(text=bomb)
        bomb_refused = False
    except ConfigError:
        bomb_refused = True
    took = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    refused = 0
    issue = ["rollout: {group_size: 1e9}", "rollout: {group_size: 1000000000}", "train: {lr: .inf}",
             "store: {root: ../../..}", "train: {steps: !!int 3}"]
    for t in issue:
        try:
            load_config(text=t)
        except ConfigError:
            refused += 1
    import dataclasses
    import typing

    numeric = [f"{s.name}.{n}" for s in dataclasses.fields(config.RLSDConfig)
               for n, tp in typing.get_type_hints(typing.get_type_hints(config.RLSDConfig)[s.name]).items()
               if tp in (int, float)]
    return {"alias_bomb_bytes": len(bomb), "alias_bomb_refused": bomb_refused, "alias_bomb_ms": round(took * 1000, 2),
            "alias_bomb_peak_kb": round(peak / 1024, 1), "issue_values_refused": refused, "issue_values": len(issue),
            "numeric_fields_with_range": sum(k in config.RANGES for k in numeric), "numeric_fields": len(numeric)}


def table_tests(tmp: Path) -> dict:
    out = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    for name, path in (("cli one-line failures", "tests/reliability/test_cli_errors.py"),
                       ("metrics.jsonl resume", "tests/reliability/test_metrics_log.py")):
        xml = tmp / (Path(path).stem + ".xml")
        subprocess.run([sys.executable, "-m", "pytest", path, "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"],
                       cwd=ROOT, env=env, capture_output=True, timeout=900)
        cases = list(ET.parse(xml).getroot().iter("testcase")) if xml.exists() else []
        bad = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
        skipped = [c for c in cases if c.find("skipped") is not None]
        out[name] = {"passed": len(cases) - len(bad) - len(skipped), "failed": len(bad), "skipped": len(skipped)}
    return out


def report() -> dict:
    """Measure and print; returns every figure."""
    with tempfile.TemporaryDirectory(prefix="rlsd-perimeter-") as tmp:
        eg = egress(Path(tmp))
        cf = config_figures()
        tt = table_tests(Path(tmp))
    print(f"egress guard: {eg['covered_refused_logged']}/{eg['covered_total']} routes refused, logged and sent nothing "
          f"to a listener outside the allow-list; documented gaps (ctypes connect, os.system of a non-Python "
          f"program): {eg['gaps_reaching_listener']}/{eg['gaps_total']} reach it (NetworkPolicies enforce those)")
    for r in eg["routes"]:
        print(f"  {r['route']:32s} refused {str(r['refused']):5s} attempt logged {str(r['logged']):5s} "
              f"reached listener {r['reached_listener']}  step failed {str(r['step_failed']):5s}"
              + ("  (start logged as an unguarded child)" if r["logged_as_unguarded_child"] else "")
              + ("  (the step had returned: refused and appended to its log)" if r["route"].startswith("thread") else ""))
    print(f"config: {cf['alias_bomb_bytes']}-byte alias bomb refused={cf['alias_bomb_refused']} in {cf['alias_bomb_ms']} ms, "
          f"peak {cf['alias_bomb_peak_kb']} KiB; issue values refused {cf['issue_values_refused']}/{cf['issue_values']}; "
          f"numeric fields with a stated range {cf['numeric_fields_with_range']}/{cf['numeric_fields']}")
    for k, v in tt.items():
        print(f"{k}: {v['passed']} passed, {v['failed']} failed, {v['skipped']} skipped")
    return {"egress": eg, "config": cf, "tables": tt}


if __name__ == "__main__":
    res = report()
    ok = res["egress"]["covered_refused_logged"] == res["egress"]["covered_total"]
    sys.exit(0 if ok and all(v["failed"] == 0 for v in res["tables"].values()) else 1)
