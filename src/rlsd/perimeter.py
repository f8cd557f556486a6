"""The perimeter: no data leaves the network, and every attempt to do so is on record.

Two layers run around every pipeline step (``step()``):

1. ``rlsd.offline.apply()``: hub, telemetry and analytics switches off (transformers, datasets,
   MLflow, Great Expectations) before any of them is imported.
2. An in-process network guard (``guard()``) that patches ``socket.socket.connect`` /
   ``connect_ex`` / ``sendto`` (UDP), ``socket.create_connection`` and the name lookups
   ``socket.getaddrinfo`` / ``gethostbyname`` / ``gethostbyname_ex``. Every outbound attempt
   is recorded; a destination outside the allow-list (store endpoint, tracking server, cluster
   API, loopback, ``platform.allow_hosts``) is refused *before* any packet is sent (and before a
   DNS query names it). In ``strict`` mode the step then fails with a message naming each refused
   destination, even when a library caught the socket error and carried on; ``record`` mode only
   logs; ``off`` disables the guard. The connection log is written as JSON (an artifact per step).

Limits, said plainly: the guard covers Python code in this process (all of urllib3, requests,
httpx, minio, mlflow and boto go through these calls); child processes (the DeepSpeed launcher's
workers) get the environment switches but not the guard, and C extensions that open sockets
themselves bypass it. On a cluster the NetworkPolicies in manifests/ are the hard boundary; this
guard makes a leak visible and fails the run that caused it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rlsd import offline
from rlsd.config import RLSDConfig, load_config

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


class PerimeterError(RuntimeError):
    """A step tried to reach a destination outside the allow-list (strict mode)."""


class RefusedConnection(ConnectionRefusedError):
    """Raised inside the patched socket call; an OSError so callers treat it as a network error."""


def _is_loopback(host: str) -> bool:
    h = host.strip("[]").lower()
    if h in LOOPBACK_NAMES or h == socket.gethostname().lower():  # this machine's own name
        return True
    try:
        return ipaddress.ip_address(h.split("%")[0]).is_loopback
    except ValueError:
        return False


def _dest(host: str, port: int | None) -> str:
    return f"{host}:{port}" if port else host


def _split_hostport(entry: str) -> tuple[str, int | None]:
    """'host', 'host:port', '[::1]:9000', 'http://host:port/path' -> (host, port or None)."""
    e = entry.strip()
    if "://" in e:
        u = urlsplit(e)
        port = u.port or {"http": 80, "https": 443}.get(u.scheme)
        return (u.hostname or "").lower(), port
    if e.startswith("["):
        host, _, rest = e[1:].partition("]")
        return host.lower(), int(rest[1:]) if rest.startswith(":") and rest[1:] else None
    if e.count(":") == 1:
        host, port = e.split(":")
        return host.lower(), int(port) if port else None
    return e.lower(), None  # a bare name or a bare IPv6 address


def allowed_destinations(cfg: RLSDConfig, env: dict[str, str] | None = None) -> list[str]:
    """The run's allow-list: store endpoint, tracking server, cluster API and ``platform.allow_hosts``.

    >>> from rlsd.config import load_config
    >>> allowed_destinations(load_config(text="store: {backend: s3, endpoint: 'minio:9000'}"), env={})
    ['minio:9000']
    """
    env = os.environ if env is None else env
    out: list[str] = []
    if cfg.store.backend == "s3":
        out.append(cfg.store.endpoint)
    if cfg.tracking.enabled and urlsplit(cfg.tracking.uri).scheme in ("http", "https"):
        u = urlsplit(cfg.tracking.uri)
        out.append(f"{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}")
    if env.get("KUBERNETES_SERVICE_HOST"):
        out.append(f"{env['KUBERNETES_SERVICE_HOST']}:{env.get('KUBERNETES_SERVICE_PORT', '443')}")
    out.extend(cfg.platform.allow_hosts)
    return out


class Guard:
    """Decides and records. ``allow`` entries are 'host' (any port) or 'host:port'."""

    def __init__(self, allow: Iterable[str], mode: str = "strict"):
        if mode not in ("strict", "record", "off"):
            raise ValueError(f"perimeter mode must be strict | record | off, got {mode!r}")
        self.mode = mode
        self.allow = [_split_hostport(a) for a in allow]
        self.resolved: set[str] = set()  # IPs returned by getaddrinfo for an allowed name
        self.log: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def permits(self, host: str, port: int | None) -> tuple[bool, str]:
        h = (host or "").strip("[]").lower()
        if _is_loopback(h):
            return True, "loopback"
        for ah, ap in self.allow:
            if ah == h and (ap is None or port in (None, 0) or ap == port):
                return True, "allow-list"
        if h in self.resolved:
            return True, "resolved from an allowed name"
        return False, "not in the allow-list"

    def check(self, op: str, host: str, port: int | None) -> None:
        ok, why = self.permits(host, port)
        refused = not ok and self.mode == "strict"
        with self._lock:
            self.log.append({"time": round(time.time(), 3), "op": op, "host": host, "port": port,
                             "allowed": ok, "refused": refused, "reason": why})
        if refused:
            raise RefusedConnection(f"rlsd perimeter: {op} of {_dest(host, port)} refused ({why}); "
                                    f"allowed: loopback, {', '.join(self._allow_text()) or 'nothing else'}. "
                                    "Add it to platform.allow_hosts if it is inside your network.")

    def _allow_text(self) -> list[str]:
        return [f"{h}:{p}" if p else h for h, p in self.allow]

    @property
    def refused(self) -> list[dict[str, Any]]:
        return [e for e in self.log if e["refused"]]

    @property
    def outside(self) -> list[dict[str, Any]]:
        """Attempts to leave the allow-list (refused in strict mode, only recorded in record mode)."""
        return [e for e in self.log if not e["allowed"]]

    def summary(self) -> dict[str, Any]:
        return {"mode": self.mode, "allow": self._allow_text(), "attempts": len(self.log),
                "outside_allow_list": len(self.outside), "refused": len(self.refused), "log": self.log}


def _sockaddr(address: Any) -> tuple[str, int | None] | None:
    if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[0], str):
        return address[0], int(address[1])
    return None  # AF_UNIX paths and the like stay on this machine


@contextlib.contextmanager
def guard(allow: Iterable[str], *, mode: str = "strict", log_path: str | Path | None = None) -> Iterator[Guard]:
    """Patch the socket module for the duration of the block; write the log to ``log_path``.

    In strict mode, leaving the block raises :class:`PerimeterError` if any attempt was refused.
    """
    g = Guard(allow, mode)
    if mode == "off":
        try:
            yield g
        finally:
            _write(g, log_path)
        return
    orig_connect, orig_connect_ex, orig_sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto
    orig_create, orig_gai = socket.create_connection, socket.getaddrinfo
    orig_ghbn, orig_ghbn_ex = socket.gethostbyname, socket.gethostbyname_ex

    def connect(self: socket.socket, address: Any) -> Any:
        hp = _sockaddr(address)
        if hp is not None:
            g.check("connect", *hp)
        return orig_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        hp = _sockaddr(address)
        if hp is not None:
            g.check("connect", *hp)
        return orig_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> Any:
        hp = _sockaddr(args[-1]) if args else None  # sendto(data, address) / sendto(data, flags, address)
        if hp is not None:
            g.check("sendto", *hp)
        return orig_sendto(self, data, *args)

    def lookup(orig: Any, op: str) -> Any:
        def wrapped(name: str) -> Any:
            g.check(op, name, None)
            return orig(name)
        return wrapped

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        g.check("create_connection", str(address[0]), int(address[1]))
        return orig_create(address, *args, **kwargs)

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else (host or "")
        p = int(port) if isinstance(port, int) or (isinstance(port, str) and port.isdigit()) else None
        g.check("getaddrinfo", name, p)
        infos = orig_gai(host, port, *args, **kwargs)
        with g._lock:
            g.resolved.update(str(i[4][0]).lower() for i in infos)
        return infos

    socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = connect, connect_ex, sendto  # type: ignore[method-assign]
    socket.create_connection, socket.getaddrinfo = create_connection, getaddrinfo  # type: ignore[assignment]
    socket.gethostbyname = lookup(orig_ghbn, "gethostbyname")  # type: ignore[assignment]
    socket.gethostbyname_ex = lookup(orig_ghbn_ex, "gethostbyname_ex")  # type: ignore[assignment]
    try:
        yield g
    except Exception as exc:  # a library may have wrapped the refusal: say what really happened
        if g.refused:
            raise PerimeterError(_message(g)) from exc
        raise
    else:
        if g.refused:  # refused, but swallowed by a caller that carried on
            raise PerimeterError(_message(g))
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto = (  # type: ignore[method-assign]
            orig_connect, orig_connect_ex, orig_sendto)
        socket.create_connection, socket.getaddrinfo = orig_create, orig_gai  # type: ignore[assignment]
        socket.gethostbyname, socket.gethostbyname_ex = orig_ghbn, orig_ghbn_ex  # type: ignore[assignment]
        _write(g, log_path)


def _message(g: Guard) -> str:
    dests = sorted({_dest(e["host"], e["port"]) for e in g.refused})
    return (f"rlsd perimeter (strict): this step tried to reach {len(dests)} destination(s) outside the "
            f"allow-list and was stopped: {', '.join(dests)}. Allowed: loopback, {', '.join(g._allow_text()) or '-'}. "
            "If a destination is inside your network add it to platform.allow_hosts; otherwise find what "
            "calls out (the connection log lists every attempt).")


def _write(g: Guard, log_path: str | Path | None) -> None:
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(json.dumps(g.summary(), indent=2), encoding="utf-8")


def overrides_from(params: Mapping[str, Any]) -> list[str]:
    """Promoted pipeline parameters -> ``section.field=value`` overrides; None and "" keep the recipe's value.

    >>> overrides_from({"store.endpoint": "minio:9000", "store.bucket": "", "train.steps": 3, "model.path": None})
    ['store.endpoint="minio:9000"', 'train.steps=3']
    """
    return [f"{k}={json.dumps(v)}" for k, v in params.items() if v is not None and v != ""]


@contextlib.contextmanager
def step(config_yaml: str, params: Mapping[str, Any] | None = None, *,
         log_path: str | Path | None = None) -> Iterator[RLSDConfig]:
    """What every pipeline step runs inside: offline switches, the validated config, the guard.

    ``params`` maps dotted config keys to promoted pipeline parameters (see :func:`overrides_from`).

    >>> with step("platform: {perimeter: record}", {"train.steps": 2}) as cfg:
    ...     cfg.train.steps
    2
    """
    offline.apply()
    cfg = load_config(text=config_yaml, overrides=overrides_from(params or {}))
    with guard(allowed_destinations(cfg), mode=cfg.platform.perimeter, log_path=log_path):
        yield cfg
