"""The perimeter: no data leaves the network, and every attempt this process tree makes is on record.

Two layers run around every pipeline step (``step()``):

1. ``rlsd.offline.apply()``: hub, telemetry and analytics switches off (transformers, datasets,
   MLflow, Great Expectations) before any of them is imported.
2. An in-process egress guard (``guard()``). The hard boundary on a cluster is the NetworkPolicies in
   manifests/ (default-deny egress, allowed only to the listed services); this guard makes an attempt
   visible, refuses it before the packet is sent and fails the step that made it.

**The allow-list comes only from the operator**, never from run parameters: ``RLSD_EGRESS_ALLOW``
(entries separated by commas or spaces) and the file named by ``RLSD_EGRESS_ALLOW_FILE`` (default
``/etc/rlsd/egress-allow``, one entry a line, ``#`` comments), both set in the pod spec, plus the cluster
API (``KUBERNETES_SERVICE_HOST``, set by the kubelet). An entry is ``host``, ``host:port`` or
``loopback``. With none of them set (a laptop) the list is ``loopback``. The run's own destinations
(``store.endpoint``, ``tracking.uri``, ``platform.allow_hosts``), which anyone launching a run from the UI
can set, no longer widen it: a step whose config names a destination outside it is refused at once, with
a message naming the field.

What the guard covers (Python 3.8+ audit hooks, ``sys.addaudithook``, one per process, installed once):

- every ``socket.connect`` / ``connect_ex``, ``sendto`` and ``sendmsg`` with an address, and the resolvers
  ``getaddrinfo``, ``gethostbyname(_ex)``, ``gethostbyaddr`` and ``getnameinfo``, *at the ``_socket``
  level*: the events are raised by the C module, so ``_socket.socket().connect(...)``, a socket opened
  before the guard was installed, and any library that skips the ``socket`` module's Python wrappers are
  all seen. Refused before the packet (or the DNS query) leaves, with ``RefusedConnection`` (an OSError).
- every thread: the hook is process-wide while a block is open; threads started inside a block and still
  alive when it closes stay under that block's policy (refused and appended to its log) for their life.
- Python child processes: inside a block the environment carries ``RLSD_EGRESS_CHILD`` (mode, allow-list,
  a shared log file) and a ``sitecustomize`` bootstrap on ``PYTHONPATH``; every Python child that reads its
  environment and imports ``site`` (subprocess, multiprocessing spawn/forkserver, the DeepSpeed launcher's
  workers, their children) installs the same guard and appends its attempts to the shared file; forked
  children inherit the hook directly. When the block closes the children's lines are merged into the
  step's log (with their pid) and, in strict mode, **any refused attempt anywhere fails the step**.
- the log also records every child process started (``subprocess.Popen``, ``os.system``, ``os.exec*``,
  ``os.posix_spawn``, ``os.spawn*``) with ``guarded: false`` where the guard cannot follow it.

What an in-process guard **cannot** cover, said plainly (the NetworkPolicies enforce these):

- code that calls the C library itself: ``ctypes`` / ``cffi`` calls to ``connect()``, C extensions and
  native threads that open sockets without going through CPython's ``_socket``;
- non-Python programs (``os.system("curl ...")``, any binary started by subprocess) and Python children
  started with ``-I``, ``-E`` or ``-S`` or with a cleaned environment (the rlsd verifiers' children run
  ``-I -S``: the code sandbox runs in bubblewrap with its own, empty network namespace, or refuses to
  run at all unless the operator chose the weaker ``process`` mode; the SQL child only talks to SQLite) -- their starts are logged, their traffic is not;
- connections already open before the block (a ``send`` on them raises no event);
- threads started inside a block and attempts after it ends: refused and logged, but the step has
  already returned, so they cannot fail it.

An empty connection log therefore means "no Python code in this process tree tried", not "no data
left the network"; only the NetworkPolicies (and their flow logs) say the latter.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rlsd import offline

if TYPE_CHECKING:
    from rlsd.config import RLSDConfig

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}
ALLOW_ENV = "RLSD_EGRESS_ALLOW"
ALLOW_FILE_ENV = "RLSD_EGRESS_ALLOW_FILE"
DEFAULT_ALLOW_FILE = "/etc/rlsd/egress-allow"
CHILD_ENV = "RLSD_EGRESS_CHILD"
BOOTSTRAP_DIR = str(Path(__file__).with_name("_egress_boot"))
_HOSTNAME = socket.gethostname().lower()


class PerimeterError(RuntimeError):
    """A step tried to reach a destination outside the allow-list (strict mode)."""


class RefusedConnection(ConnectionRefusedError):
    """Raised inside the audited socket call; an OSError so callers treat it as a network error."""


def _is_loopback(host: str) -> bool:
    h = host.strip("[]").lower()
    if h in LOOPBACK_NAMES or h == _HOSTNAME:  # this machine's own name
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


# ----------------------------------------------------------------------------------------------
# The allow-list: the operator's, and what a run names
# ----------------------------------------------------------------------------------------------


def operator_allow_list(env: Mapping[str, str] | None = None) -> list[str]:
    """The platform's allow-list, set by the operator: ``RLSD_EGRESS_ALLOW``, the allow file, the cluster API.

    >>> operator_allow_list({"RLSD_EGRESS_ALLOW": "loopback, minio.rlsd.svc:9000", "RLSD_EGRESS_ALLOW_FILE": "/nonexistent"})
    ['loopback', 'minio.rlsd.svc:9000']
    >>> operator_allow_list({"RLSD_EGRESS_ALLOW_FILE": "/nonexistent"})
    ['loopback']
    """
    env = os.environ if env is None else env
    out: list[str] = []
    configured = False
    if env.get(ALLOW_ENV) is not None:
        configured = True
        out += env[ALLOW_ENV].replace(",", " ").split()
    f = Path(env.get(ALLOW_FILE_ENV) or DEFAULT_ALLOW_FILE)
    if f.is_file():
        configured = True
        for line in f.read_text(encoding="utf-8").splitlines():
            out += line.split("#", 1)[0].replace(",", " ").split()
    if env.get("KUBERNETES_SERVICE_HOST"):
        out.append(f"{env['KUBERNETES_SERVICE_HOST']}:{env.get('KUBERNETES_SERVICE_PORT', '443')}")
    return out if configured else ["loopback", *out]


def run_destinations(cfg: RLSDConfig) -> list[tuple[str, str]]:
    """(field, destination) pairs a run's config names: they must lie inside the operator's allow-list."""
    out: list[tuple[str, str]] = []
    if cfg.store.backend == "s3":
        out.append(("store.endpoint", cfg.store.endpoint))
    if cfg.tracking.enabled and urlsplit(cfg.tracking.uri).scheme in ("http", "https"):
        out.append(("tracking.uri", cfg.tracking.uri))
    out += [("platform.allow_hosts", h) for h in cfg.platform.allow_hosts]
    return out


def allowed_destinations(cfg: RLSDConfig | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """The allow-list a step runs under: the operator's only (``cfg`` is accepted and ignored, on purpose)."""
    return operator_allow_list(env)


# ----------------------------------------------------------------------------------------------
# Decisions and the log
# ----------------------------------------------------------------------------------------------


class Guard:
    """Decides and records. ``allow`` entries are 'host' (any port), 'host:port' or 'loopback'."""

    def __init__(self, allow: Iterable[str], mode: str = "strict"):
        if mode not in ("strict", "record", "off"):
            raise ValueError(f"perimeter mode must be strict | record | off, got {mode!r}")
        self.mode = mode
        self.allow_entries = [a.strip() for a in allow if a.strip()]
        self.allow = [_split_hostport(a) for a in self.allow_entries if a.lower() != "loopback"]
        self.loopback = any(a.lower() == "loopback" for a in self.allow_entries)
        # IP -> the ports its allowed name may be reached on (None: any), from getaddrinfo (note_resolved)
        self.resolved: dict[str, set[int | None]] = {}
        self.log: list[dict[str, Any]] = []
        self.pid = os.getpid()
        self.child_log: str | None = None   # the file Python children (and forks) append their attempts to
        self.log_path: str | Path | None = None
        self.closed = False
        self._spawns: dict[tuple[str, str, bool], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def permits(self, host: str, port: int | None) -> tuple[bool, str]:
        h = (host or "").strip("[]").lower()
        loop = _is_loopback(h)
        if loop and self.loopback:
            return True, "loopback"
        for ah, ap in self.allow:
            same = ah == h or (loop and _is_loopback(ah) and ah not in LOOPBACK_NAMES | {_HOSTNAME} and
                               h in LOOPBACK_NAMES | {_HOSTNAME})
            if same and (ap is None or port in (None, 0) or ap == port):
                return True, "allow-list"
        ports = self.resolved.get(h, set())
        if None in ports or (ports and (port in (None, 0) or port in ports)):
            return True, "resolved from an allowed name"
        return False, "not in the allow-list"

    def note_resolved(self, name: str, ips: Iterable[str]) -> None:
        """``ips`` are the addresses of ``name``: each may be reached on the ports the allow-list gives ``name``
        (an entry 'minio.rlsd.svc:9000' lets its address through on 9000 only, as the name itself)."""
        n = (name or "").strip("[]").lower()
        ports = {ap for ah, ap in self.allow if ah == n}
        if ports:
            with self._lock:
                for ip in ips:
                    self.resolved.setdefault(str(ip).lower(), set()).update(ports)

    def check(self, op: str, host: str, port: int | None) -> None:
        ok, why = self.permits(host, port)
        refused = not ok and self.mode == "strict"
        self.record({"op": op, "host": host, "port": port, "allowed": ok, "refused": refused, "reason": why})
        if refused:
            raise RefusedConnection(f"rlsd perimeter: {op} of {_dest(host, port)} refused ({why}); "
                                    f"allowed: {', '.join(self.allow_entries) or 'nothing'}. "
                                    f"The allow-list is the platform's ({ALLOW_ENV} / {ALLOW_FILE_ENV}), "
                                    "set by the operator.")

    def record_spawn(self, entry: dict[str, Any]) -> None:
        """Child starts are counted per (event, program, guarded): a verifier that starts a child per answer
        adds one line with a count, not one line per answer."""
        if os.getpid() == self.pid and not self.closed:
            prog = (entry.get("command") or "").split(" ", 1)[0]
            key = (entry["event"], prog, entry["guarded"])
            with self._lock:
                seen = self._spawns.get(key)
                if seen is not None:
                    seen["count"] = seen.get("count", 1) + 1
                    return
            self._spawns[key] = self.record(entry)
            return
        self.record(entry)

    def record(self, entry: dict[str, Any]) -> dict[str, Any]:
        entry = {"time": round(time.time(), 3), **entry}
        if os.getpid() != self.pid:  # a forked child: its memory dies with it, the shared file does not
            entry["pid"] = os.getpid()
            _append_line(self.child_log, entry)
            return entry
        with self._lock:
            self.log.append(entry)
        if self.closed:  # a thread started in the block, acting after it: keep the written log complete
            entry["after_block"] = True
            _write(self, self.log_path)
        return entry

    @property
    def refused(self) -> list[dict[str, Any]]:
        return [e for e in self.log if e.get("refused")]

    @property
    def outside(self) -> list[dict[str, Any]]:
        """Attempts to leave the allow-list (refused in strict mode, only recorded in record mode)."""
        return [e for e in self.log if e.get("allowed") is False]

    def summary(self) -> dict[str, Any]:
        with self._lock:
            log = list(self.log)
        return {"mode": self.mode, "allow": self.allow_entries, "attempts": sum("allowed" in e for e in log),
                "outside_allow_list": sum(e.get("allowed") is False for e in log),
                "refused": sum(bool(e.get("refused")) for e in log),
                "children_unguarded": sum(e.get("count", 1) for e in log if e.get("op") == "spawn" and not e.get("guarded")),
                "log": log}


def _append_line(path: str | None, entry: dict[str, Any]) -> None:
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(entry, default=str) + "\n").encode())  # one write: lines never interleave
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------
# The audit hook (one per process, installed once, inert while no guard applies)
# ----------------------------------------------------------------------------------------------

_ACTIVE: list[Guard] = []          # open blocks in this process, innermost last
# thread ident -> (the block it was started in, its Thread object) once that block has closed. The object
# tells a reused ident (a later thread, after the first one died) from the thread itself; a raw _thread
# thread has no object and keeps its ident's binding.
_LATE: dict[int, tuple[Guard, Any]] = {}
_CHILD: list[Guard] = []           # in a child process: the guard from RLSD_EGRESS_CHILD
_BUSY = threading.local()          # re-entrancy: the hook's own work raises no decisions
_INSTALLED = False
_INSTALL_LOCK = threading.Lock()

_SPAWN_EVENTS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                 "os.forkpty"}


def _sockaddr(address: Any) -> tuple[str, int | None] | None:
    if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[0], (str, bytes)):
        h = address[0].decode(errors="replace") if isinstance(address[0], bytes) else address[0]
        return h, int(address[1]) if isinstance(address[1], int) else None
    return None  # AF_UNIX paths, netlink and the like stay on this machine


def _port(port: Any) -> int | None:
    if isinstance(port, bytes):
        port = port.decode(errors="replace")
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    return None  # None or a service name


def _current() -> Guard | None:
    if _LATE:
        ident = threading.get_ident()
        late = _LATE.get(ident)
        if late is not None:
            if late[1] is None or late[1] is _thread_object(ident):
                return late[0]
            _LATE.pop(ident, None)  # the ident was reused by a thread started after the block
    if _ACTIVE:
        return _ACTIVE[-1]
    return _CHILD[0] if _CHILD else None


def _thread_object(ident: int) -> Any:
    return getattr(threading, "_active", {}).get(ident)


def _spawn_entry(event: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """Is the child going to run the guard? Python, not isolated, with the bootstrap in its environment."""
    if event == "subprocess.Popen":
        exe, argv, env = args[0], list(args[1] or []) if not isinstance(args[1], (str, bytes)) else [args[1]], args[3]
    elif event in ("os.exec", "os.posix_spawn"):
        exe, argv, env = args[0], list(args[1] or []), args[2] if len(args) > 2 else None
    elif event == "os.spawn":  # (mode, path, args, env)
        exe, argv, env = args[1], list(args[2] or []), args[3] if len(args) > 3 else None
    else:  # os.system(command), os.fork()
        if event.startswith("os.fork"):
            return {"op": "spawn", "event": event, "guarded": True, "why": "forked: inherits the hook"}
        return {"op": "spawn", "event": event, "command": str(args[0])[:200], "guarded": False,
                "why": "a shell command: not Python, not covered in-process (the NetworkPolicies apply)"}
    argv = [a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in argv]
    prog = os.path.basename(str(exe if exe is not None else (argv[0] if argv else "")))
    python = prog.startswith("python") or (exe is not None and os.path.realpath(str(exe)) == os.path.realpath(sys.executable))
    flags = "".join(a[1:] for a in argv[1:] if a.startswith("-") and not a.startswith("--") and a not in ("-c", "-m"))
    envd = None if env is None else {(k.decode() if isinstance(k, bytes) else k): v for k, v in dict(env).items()}
    if not python:
        why, ok = "not a Python program: not covered in-process (the NetworkPolicies apply)", False
    elif any(f in flags for f in "IES"):
        why, ok = "Python with -I/-E/-S: the bootstrap does not run", False
    elif envd is not None and CHILD_ENV not in envd:
        why, ok = "Python with an environment lacking the guard bootstrap", False
    else:
        why, ok = "Python: the bootstrap installs the guard", True
    return {"op": "spawn", "event": event, "command": " ".join(argv)[:200], "guarded": ok, "why": why}


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not event.startswith(("socket.", "subprocess.", "os.")):
        return
    if getattr(_BUSY, "on", False):
        return
    g = _current()
    if g is None or g.mode == "off":
        return
    _BUSY.on = True
    try:
        if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
            hp = _sockaddr(args[1]) if len(args) > 1 else None
            if hp is not None:
                g.check(event[7:], *hp)
        elif event == "socket.getaddrinfo":
            host, port = args[0], args[1]
            if host is not None:
                name = host.decode(errors="replace") if isinstance(host, bytes) else str(host)
                g.check("getaddrinfo", name, _port(port))
        elif event in ("socket.gethostbyname", "socket.gethostbyaddr"):
            g.check(event[7:], str(args[0]), None)
        elif event == "socket.getnameinfo":
            hp = _sockaddr(args[0])
            if hp is not None:
                g.check("getnameinfo", *hp)
        elif event in _SPAWN_EVENTS:
            g.record_spawn(_spawn_entry(event, args))
    finally:
        _BUSY.on = False


def _install_hook() -> None:
    global _INSTALLED
    with _INSTALL_LOCK:
        if not _INSTALLED:
            sys.addaudithook(_hook)
            _INSTALLED = True


def _child_bootstrap() -> None:
    """Run by ``_egress_boot/sitecustomize.py`` in a Python child: the parent's guard, reporting to its file."""
    spec = json.loads(os.environ[CHILD_ENV])
    g = Guard(spec["allow"], spec["mode"])
    g.child_log = spec["log"]
    g.pid = -1  # never the child's pid: every entry goes to the shared file
    _CHILD[:] = [g]
    _install_hook()


# ----------------------------------------------------------------------------------------------
# The block
# ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def guard(allow: Iterable[str], *, mode: str = "strict", log_path: str | Path | None = None) -> Iterator[Guard]:
    """Guard this process (all threads) and its Python children for the block; write the log to ``log_path``.

    ``allow`` is the operator's list (:func:`operator_allow_list`); include ``loopback`` to allow this
    machine. In strict mode, leaving the block raises :class:`PerimeterError` if any attempt was refused,
    here or in a child, even when a library caught the socket error and carried on.
    """
    g = Guard(allow, mode)
    g.log_path = log_path
    if mode == "off":
        try:
            yield g
        finally:
            _write(g, log_path)
        return
    _install_hook()
    fd, g.child_log = tempfile.mkstemp(prefix="rlsd-egress-", suffix=".jsonl")
    os.close(fd)
    saved = {k: os.environ.get(k) for k in (CHILD_ENV, "PYTHONPATH")}
    os.environ[CHILD_ENV] = json.dumps({"mode": mode, "allow": g.allow_entries, "log": g.child_log})
    os.environ["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else [])])
    orig_gai = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        infos = orig_gai(host, port, *args, **kwargs)  # the hook has decided on the name already
        name = host.decode() if isinstance(host, bytes) else (host or "")
        if not _is_loopback(name):
            g.note_resolved(name, [i[4][0] for i in infos])
        return infos

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    before = set(sys._current_frames())
    _ACTIVE.append(g)
    try:
        yield g
    except PerimeterError:
        raise
    except Exception as exc:  # a library may have wrapped the refusal: say what really happened
        _close(g, before, saved, orig_gai)
        if g.refused:
            raise PerimeterError(_message(g)) from exc
        raise
    else:
        _close(g, before, saved, orig_gai)
        if g.refused:  # refused, but swallowed by a caller that carried on (or refused in a child)
            raise PerimeterError(_message(g))
    finally:
        if not g.closed:
            _close(g, before, saved, orig_gai)
        _write(g, log_path)


def _close(g: Guard, before: set[int], saved: dict[str, str | None], orig_gai: Any) -> None:
    if g.closed:
        return
    if g in _ACTIVE:
        _ACTIVE.remove(g)
    socket.getaddrinfo = orig_gai  # type: ignore[assignment]
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    for ident in set(sys._current_frames()) - before:  # started in the block, still running
        _LATE[ident] = (g, _thread_object(ident))
    for ident in [i for i in _LATE if i not in sys._current_frames()]:  # dead since: forget them
        _LATE.pop(ident, None)
    if g.child_log:
        try:
            lines = Path(g.child_log).read_text(encoding="utf-8").splitlines()
        except OSError:
            lines = []
        for ln in lines:
            try:
                g.log.append({**json.loads(ln), "child": True})
            except ValueError:
                continue
        with contextlib.suppress(OSError):
            os.unlink(g.child_log)
        g.child_log = None
    g.closed = True


def _message(g: Guard) -> str:
    dests = sorted({_dest(e["host"], e["port"]) for e in g.refused})
    kids = sum(1 for e in g.refused if e.get("child"))
    return (f"rlsd perimeter (strict): this step tried to reach {len(dests)} destination(s) outside the "
            f"allow-list and was stopped: {', '.join(dests)}"
            f"{f' ({kids} attempt(s) from child processes)' if kids else ''}. "
            f"Allowed: {', '.join(g.allow_entries) or '-'}. The allow-list is the platform's ({ALLOW_ENV} / "
            f"{ALLOW_FILE_ENV}, set by the operator); find what calls out (the connection log lists every attempt).")


def _write(g: Guard, log_path: str | Path | None) -> None:
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(log_path) + ".tmp")
        tmp.write_text(json.dumps(g.summary(), indent=2, default=str), encoding="utf-8")
        os.replace(tmp, log_path)


def overrides_from(params: Mapping[str, Any]) -> list[str]:
    """Promoted pipeline parameters -> ``section.field=value`` overrides; None and "" keep the recipe's value.

    >>> overrides_from({"store.endpoint": "minio:9000", "store.bucket": "", "train.steps": 3, "model.path": None})
    ['store.endpoint="minio:9000"', 'train.steps=3']
    """
    return [f"{k}={json.dumps(v)}" for k, v in params.items() if v is not None and v != ""]


def check_run_destinations(g: Guard, cfg: RLSDConfig) -> None:
    """Refuse (strict) or record a config that names a destination outside the operator's allow-list."""
    for field, dest in run_destinations(cfg):
        host, port = _split_hostport(dest)
        ok, _ = g.permits(host, port)
        if ok:
            continue
        g.record({"op": "config", "field": field, "host": host, "port": port, "allowed": False,
                  "refused": g.mode == "strict", "reason": "a run parameter names a host outside the allow-list"})
        if g.mode == "strict":
            raise PerimeterError(
                f"rlsd perimeter (strict): {field} names {_dest(host, port)}, which is outside the platform "
                f"allow-list ({', '.join(g.allow_entries) or '-'}). Run parameters cannot widen it: ask the "
                f"operator to add it to {ALLOW_ENV} or the allow file ({ALLOW_FILE_ENV}), or point {field} at "
                "an allowed service.")


@contextlib.contextmanager
def step(config_yaml: str, params: Mapping[str, Any] | None = None, *,
         log_path: str | Path | None = None) -> Iterator[RLSDConfig]:
    """What every pipeline step runs inside: offline switches, the validated config, the guard.

    ``params`` maps dotted config keys to promoted pipeline parameters (see :func:`overrides_from`).

    >>> with step("platform: {perimeter: record}", {"train.steps": 2}) as cfg:
    ...     cfg.train.steps
    2
    """
    from rlsd.config import load_config

    offline.apply()
    cfg = load_config(text=config_yaml, overrides=overrides_from(params or {}))
    with guard(operator_allow_list(), mode=cfg.platform.perimeter, log_path=log_path) as g:
        if g.mode != "off":
            check_run_destinations(g, cfg)
        yield cfg
