"""Run model-written Python against a task's tests so that the program cannot write its own verdict.

``run_python_tests(code, tests, ...)`` returns which tests passed. Two processes take part, and the
verdict comes from the one the program cannot reach:

- the **program's process** (``_sandbox_child.py``) loads the program and then only answers
  requests: call this function with these plain-data arguments, get this attribute, iterate this;
  its answers are plain data (JSON: numbers, strings, lists, dicts, sets, Fractions, namedtuples...)
  or handles to its objects (``_sandbox_wire.py``);
- the **trusted runner** (``_sandbox_runner.py``), a separate process, runs each test snippet with
  the program's names bound to those values and handles, rebuilds every answer from JSON into its
  own built-in types, compares with its own ``==``, and alone writes the verdict lines the host reads.

So there is no verdict channel and no secret in the program's memory: replacing ``builtins.exec``,
patching the harness, reading /proc/self/mem, printing "pass" lines or ``os._exit(0)`` change only
the program's own answers. A program-defined object never equals a value of the test's own (an
always-true ``__eq__`` fails ``assert f(1) == 2``); see _sandbox_runner.py for what the program still
decides (how its own objects compare with each other) and what cannot cross (lambdas).

Isolation: bubblewrap (mode ``"bwrap"``, the default). Why bwrap: it is a small, maintained,
audited tool (Flatpak's sandbox) packaged by Debian (``apt-get install bubblewrap``, 0.8.0 in Debian
12) that works unprivileged wherever user namespaces do. The alternatives checked: nsjail is not in
Debian 12 (a source build); gVisor is a container runtime the pod does not choose; Landlock restricts
files only (not network, PIDs or signals), needs a 5.13+ kernel with the LSM on, and its PyPI
bindings are a pre-release (``landlock`` 1.0.0.dev5) or young (landlockpy 0.2, py-landlock 0.1). In a pod,
bwrap needs a node that allows unprivileged user namespaces and a seccomp profile that lets the pod
create one (Docker's and containerd's default profiles refuse it to unprivileged containers); where
either is missing the probe fails and the verifier refuses, as below. Each of the two processes gets
its own ``bwrap`` with:

- new user, PID, network, IPC, UTS and cgroup namespaces, ``--disable-userns``, all capabilities
  dropped: no network at all (only a loopback of its own), no other process visible, so no signal
  reaches the trainer and no /proc/<ppid>/environ exists; the environment is cleared;
- a root made only of the Python runtime (the interpreter, its standard library without
  site-packages, the shared libraries ``ldd`` names for it and its extension modules, all
  read-only), the harness files, a private /proc and a minimal read-only /dev; the root itself is
  remounted read-only, so the only writable place is /box, a tmpfs of ``disk_mb`` (total disk
  writes; RLIMIT_FSIZE caps each file) holding the program's file;
- a seccomp filter that refuses fork, vfork, and clone without CLONE_THREAD (clone3 answers ENOSYS
  so the C library falls back to clone): one process, threads only. With it no shell, no setsid
  child, no fork bomb; memory (RLIMIT_AS, ``memory_mb``) and CPU (RLIMIT_CPU) limits are per process,
  hence totals. The filter also refuses the memory that RLIMIT_AS does not count (System V shared
  memory and message queues, POSIX message queues, memfd), kernel keyrings, ptrace, perf, bpf,
  userfaultfd and io_uring (whose operations seccomp cannot see). ``--die-with-parent`` and a
  process-group SIGKILL at the wall-clock limit end it; a PID namespace dies with its first process,
  so nothing outlives the call.

Where the trainer runs as root, the sandbox's user is root outside its namespace (bwrap maps the
caller's uid): file access still stops at the read-only runtime tree, and it is the PID namespace
that keeps its signals in (test_cannot_kill_the_parent). The images run as uid 1000.

Fail closed: when bwrap is missing or does not work here (:func:`bwrap_problem`), the verifier
refuses with :class:`CodeSandboxUnavailable` unless the operator chose the weaker mode
``"process"`` (``platform.code_sandbox: process`` in the recipe, which ``load_config`` exports as
``RLSD_CODE_SANDBOX``; or :func:`configure`); an unknown mode is an error, never a fallback. That
mode runs the same two processes without namespaces: verdicts are still decided by the runner, but
the program is bounded only by rlimits, a process-group kill and Python audit hooks
(_sandbox_guards.py) that C code can get past. Every result says which mode ran
(``SandboxResult.mode``, ``enforced["mode"]``) and :func:`sandbox_stats` counts runs per mode.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import platform
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES = ("bwrap", "process")
BWRAP = os.environ.get("RLSD_BWRAP", "bwrap")  # path or name of the bubblewrap binary
HOST_NPROC_MARGIN = 64
_HERE = Path(__file__).resolve().parent
_FILES = ("_sandbox_child.py", "_sandbox_runner.py", "_sandbox_wire.py", "_sandbox_guards.py")
_RUNS: collections.Counter = collections.Counter()
_mode: str | None = None  # set by configure(); else $RLSD_CODE_SANDBOX (load_config sets it), else bwrap


class CodeSandboxUnavailable(RuntimeError):
    """The configured isolation cannot run here; the verifier refuses rather than run code unconfined."""


@dataclass
class SandboxResult:
    """passed[i]: test i ran and passed (tests not reached count as failed)."""

    passed: list[bool]
    loaded: bool  # the program itself ran without raising
    timed_out: bool
    returncode: int | None
    output_tail: str
    wall_s: float
    enforced: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why the program failed to load
    done: bool = False  # the runner reported the end of the test list
    mode: str = ""  # "bwrap" or "process": which isolation ran
    runner_log: str = ""  # the trusted runner's notes: why each failing test failed
    sandbox_failed: bool = False  # the runner never reported (the sandbox itself broke): no verdict at all

    @property
    def fraction_passed(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


def configure(mode: str | None) -> None:
    """Set the process-wide isolation: "bwrap" (refuse when unavailable) or "process"; None: back to
    $RLSD_CODE_SANDBOX (which ``rlsd.config.load_config`` sets from ``platform.code_sandbox``), else bwrap."""
    global _mode
    if mode is not None and mode not in MODES:
        raise ValueError(f"code sandbox mode must be one of {' | '.join(MODES)}, got {mode!r}")
    _mode = mode


def configured_mode() -> str:
    return _mode or os.environ.get("RLSD_CODE_SANDBOX") or "bwrap"


def sandbox_stats() -> dict[str, int]:
    """Runs so far in this process, per isolation mode (for metrics)."""
    return {f"code_sandbox_runs_{m}": _RUNS[m] for m in MODES}


# ------------------------------------------------------------------------------------------------
# The bubblewrap sandbox: runtime tree, seccomp filter, probe
# ------------------------------------------------------------------------------------------------

_ARCH = {  # machine -> (AUDIT_ARCH, clone, clone3, refused system calls, x32 bit). Refused: fork, vfork;
    # shmget, shmat, shmctl, msgget, mq_open, memfd_create; add_key, request_key, keyctl; ptrace,
    # perf_event_open, bpf, userfaultfd, io_uring_setup.
    "x86_64": (0xC000003E, 56, 435, (57, 58, 29, 30, 31, 68, 240, 319, 248, 249, 250, 101, 298, 321, 323, 425),
               0x40000000),
    "aarch64": (0xC00000B7, 220, 435, (194, 196, 195, 186, 180, 279, 217, 218, 219, 117, 241, 280, 282, 425), 0),
}


def seccomp_filter(machine: str | None = None) -> bytes:
    """A classic-BPF seccomp program: no new processes (threads allowed), and no memory outside the
    address-space limit (System V shared memory and message queues, POSIX queues, memfd)."""
    arch, clone, clone3, refused, x32 = _ARCH[machine or platform.machine()]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | 1, 0x00050000 | 38
    clone_thread = 0x00010000
    prog: list[tuple] = [("ld", ld, 4), ("jmp", jeq, arch, "+0", "kill"), ("ld", ld, 0)]
    if x32:
        prog.append(("jmp", jge, x32, "eperm", "+0"))
    prog.append(("jmp", jeq, clone3, "enosys", "+0"))
    for nr in refused:
        prog.append(("jmp", jeq, nr, "eperm", "+0"))
    prog += [("jmp", jeq, clone, "+0", "allow"), ("ld", ld, 16),  # args[0] (flags), low 32 bits
             ("jmp", jset, clone_thread, "allow", "eperm"),
             ("label", "allow"), ("ret", ret, allow), ("label", "eperm"), ("ret", ret, eperm),
             ("label", "enosys"), ("ret", ret, enosys), ("label", "kill"), ("ret", ret, kill)]
    labels, n = {}, 0
    for p in prog:
        if p[0] == "label":
            labels[p[1]] = n
        else:
            n += 1
    out, i = [], 0
    for p in prog:
        if p[0] == "label":
            continue
        if p[0] == "jmp":
            _, code, k, jt, jf = p
            off = [0 if t == "+0" else labels[t] - (i + 1) for t in (jt, jf)]
            out.append(struct.pack("=HBBI", code, off[0], off[1], k))
        else:
            out.append(struct.pack("=HBBI", p[1], 0, 0, p[2]))
        i += 1
    return b"".join(out)


def _base_python() -> str:
    exe = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(exe)


@functools.lru_cache(maxsize=4)
def runtime_tree(exe: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(paths to bind read-only, folders to hide): the interpreter, its stdlib, the libraries it loads."""
    r = subprocess.run([exe, "-I", "-S", "-c", "import sys, json; print(json.dumps([sys.prefix, sys.path]))"],
                       capture_output=True, text=True, timeout=30, check=True)
    prefix, path = json.loads(r.stdout)
    binds = {exe}
    hide = set()
    for d in path:
        if os.path.isdir(d) or os.path.isfile(d):
            binds.add(d)
            sp = os.path.join(d, "site-packages")
            if os.path.isdir(sp):
                hide.add(sp)
    dyn = [os.path.join(d, f) for d in path if os.path.isdir(d) and d.endswith("lib-dynload")
           for f in sorted(os.listdir(d)) if f.endswith(".so") and not f.startswith("_tkinter")]
    out = subprocess.run(["ldd", exe, *dyn], capture_output=True, text=True, timeout=60).stdout
    for line in out.splitlines():
        line = line.strip()
        lib = line.split("=>", 1)[1].strip().split(" (")[0] if "=>" in line else line.split(" (")[0]
        if lib.startswith("/") and os.path.exists(lib):
            binds.add(lib)
    if os.path.exists("/etc/ld.so.cache"):
        binds.add("/etc/ld.so.cache")
    # a library inside a bound folder needs no bind of its own
    folders = [b for b in binds if os.path.isdir(b)]
    binds = {b for b in binds if not any(b != f and b.startswith(f + "/") for f in folders)}
    return tuple(sorted(binds)), tuple(sorted(hide))


def _bwrap_cmd(bwrap: str, exe: str, disk_bytes: int, seccomp_fd: int, extra: list[str],
               py_args: list[str]) -> list[str]:
    binds, hide = runtime_tree(exe)
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
           "--cap-drop", "ALL", "--uid", "65534", "--gid", "65534", "--hostname", "sandbox", "--clearenv",
           "--setenv", "LANG", "C.UTF-8", "--setenv", "HOME", "/box", "--setenv", "TMPDIR", "/box",
           "--setenv", "PATH", "/nonexistent"]
    for b in binds:
        cmd += ["--ro-bind", b, b]
    for h in hide:
        cmd += ["--size", "4096", "--tmpfs", h, "--remount-ro", h]
    cmd += ["--dev", "/dev", "--remount-ro", "/dev", "--proc", "/proc", "--size", str(disk_bytes), "--tmpfs", "/box"]
    for f in _FILES:
        cmd += ["--ro-bind", str(_HERE / f), f"/rlsd/{f}"]
    pyc = _compiled(str(_HERE))
    if pyc:
        cmd += ["--ro-bind", pyc, "/rlsd/__pycache__"]
    cmd += [*extra, "--remount-ro", "/", "--chdir", "/box", "--seccomp", str(seccomp_fd), exe, "-I", "-S", "-B", "-u", *py_args]
    return cmd


@functools.lru_cache(maxsize=4)
def _compiled(here: str) -> str | None:
    """The harness files compiled once per process (unchecked-hash .pyc in a private folder bound
    at /rlsd/__pycache__): each sandbox then starts without compiling them (about 40 ms less on a
    busy 2-core machine). None (compile in the sandbox) if that fails."""
    import atexit
    import importlib.util
    import py_compile

    d = tempfile.mkdtemp(prefix="rlsd-sbx-pyc-")
    atexit.register(shutil.rmtree, d, True)
    try:
        for f in _FILES:
            cfile = os.path.join(d, os.path.basename(importlib.util.cache_from_source(f)))
            py_compile.compile(os.path.join(here, f), cfile=cfile, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        os.chmod(d, 0o755)
        return d
    except (OSError, py_compile.PyCompileError):
        return None


def _bootstrap(module: str) -> list[str]:
    """python -c arguments that import a harness module (from its .pyc) and run its main()."""
    return ["-c", f"import sys; sys.path.insert(0, '/rlsd'); import {module}; {module}.main()"]


@functools.lru_cache(maxsize=8)
def _bwrap_problem(bwrap: str, exe: str) -> str | None:
    path = shutil.which(bwrap)
    if path is None:
        return f"bubblewrap ({bwrap!r}) is not installed"
    if platform.machine() not in _ARCH:
        return f"no seccomp filter for machine {platform.machine()!r}"
    try:
        runtime_tree(exe)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        return f"cannot list the Python runtime of {exe}: {e}"
    rfd = _filter_fd()
    try:
        probe = "import os\ntry:\n    os.fork()\nexcept OSError:\n    print('ok')"
        cmd = _bwrap_cmd(path, exe, 1 << 20, rfd, [], ["-c", probe])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, pass_fds=(rfd,), env=_env())
    except (OSError, subprocess.SubprocessError) as e:
        return f"bubblewrap could not start: {e}"
    finally:
        os.close(rfd)
    if r.returncode != 0 or r.stdout.strip() != "ok":
        return f"bubblewrap does not work here (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-300:]}"
    return None


def bwrap_problem() -> str | None:
    """Why the bubblewrap sandbox cannot run here (None: it works). Probed once per binary."""
    return _bwrap_problem(BWRAP, _base_python())


def _filter_fd() -> int:
    prog = seccomp_filter()
    r, w = os.pipe()
    os.write(w, prog)
    os.close(w)
    return r


def _env() -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


# ------------------------------------------------------------------------------------------------
# Running a program against its tests
# ------------------------------------------------------------------------------------------------


def _user_tasks() -> int:
    """Tasks of this user on the machine: what RLIMIT_NPROC counts (process mode only)."""
    uid, n = os.getuid(), 0
    try:
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    if os.stat(f"/proc/{p}").st_uid == uid:
                        n += len(os.listdir(f"/proc/{p}/task"))
                except OSError:
                    pass
    except OSError:
        return 4096
    return n


def _limits(memory_mb: int, cpu_s: int, fsize_bytes: int, nproc: int | None):
    import resource

    plan = [(resource.RLIMIT_AS, memory_mb * 1024 * 1024), (resource.RLIMIT_CPU, cpu_s),
            (resource.RLIMIT_FSIZE, fsize_bytes), (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, 256)]
    if nproc is not None:
        plan.append((resource.RLIMIT_NPROC, nproc))

    def apply() -> None:  # between fork and exec: setrlimit calls only
        for what, value in plan:
            try:
                resource.setrlimit(what, (value, value))
            except (ValueError, OSError):
                pass

    return apply


def run_python_tests(code: str, tests: list[str], *, timeout_s: float = 10.0, per_test_s: float = 0.0,
                     memory_mb: int = 512, cpu_s: int | None = None, max_output_bytes: int = 1 << 20,
                     disk_mb: int = 16, isolation: str | None = None) -> SandboxResult:
    """Run ``code`` and decide each test of ``tests`` in the trusted runner (a test passes when its
    snippet runs without raising).

    timeout_s: wall-clock limit for everything; per_test_s: time limit per test (0 = none; each call
    into the program is also interrupted at this limit); memory_mb: address space of each process;
    cpu_s: CPU seconds of each process (default ceil(timeout_s) + 1); max_output_bytes: largest file
    (the program's captured output included); disk_mb: total writable space (bwrap mode);
    isolation: "bwrap" | "process" (default: :func:`configured_mode`).
    Raises CodeSandboxUnavailable when the mode is bwrap and bwrap cannot run here.
    """
    mode = isolation or configured_mode()
    if mode not in MODES:
        raise ValueError(f"isolation must be one of {' | '.join(MODES)}, got {mode!r}")
    exe = _base_python()
    if mode == "bwrap":
        problem = bwrap_problem()
        if problem:
            raise CodeSandboxUnavailable(
                f"the code verifier will not run model-written code without its sandbox: {problem}. Install "
                "bubblewrap (apt-get install bubblewrap; user namespaces must be allowed), or accept the weaker "
                "process isolation explicitly with platform.code_sandbox: process (RLSD_CODE_SANDBOX=process).")
    t0 = time.monotonic()
    n = len(tests)
    cpu = int(cpu_s if cpu_s is not None else int(timeout_s) + 1)
    disk = int(disk_mb) << 20
    fds: list[int] = []
    procs: list[subprocess.Popen] = []
    work = tempfile.mkdtemp(prefix="rlsd-sbx-") if mode == "process" else None
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    try:
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        fds += [req_r, req_w, resp_r, resp_w]
        per = f"{max(0.0, per_test_s):g}"
        if mode == "bwrap":
            src = tempfile.TemporaryFile()
            src.write(code.encode("utf-8", "surrogatepass"))
            src.flush()
            src.seek(0)
            f_child, f_runner = _filter_fd(), _filter_fd()
            fds += [f_child, f_runner]
            child_cmd = _bwrap_cmd(BWRAP, exe, disk, f_child, ["--file", str(src.fileno()), "/box/solution.py"],
                                   [*_bootstrap("_sandbox_child"), str(req_r), str(resp_w), "/box/solution.py", per, "0"])
            runner_cmd = _bwrap_cmd(BWRAP, exe, disk, f_runner, [],
                                    [*_bootstrap("_sandbox_runner"), str(req_w), str(resp_r)])
            child_fds, runner_fds = (req_r, resp_w, f_child, src.fileno()), (req_w, resp_r, f_runner)
            cwd_child = cwd_runner = None
            nproc = None
        else:
            src = None
            os.chmod(work, 0o700)
            os.makedirs(os.path.join(work, "p"))
            os.makedirs(os.path.join(work, "r"))
            path = os.path.join(work, "p", "solution.py")
            with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
                f.write(code)
            child_cmd = [exe, "-I", "-S", "-B", "-u", str(_HERE / "_sandbox_child.py"), str(req_r), str(resp_w), path, per, "1"]
            runner_cmd = [exe, "-I", "-S", "-B", str(_HERE / "_sandbox_runner.py"), str(req_w), str(resp_r)]
            child_fds, runner_fds = (req_r, resp_w), (req_w, resp_r)
            cwd_child, cwd_runner = os.path.join(work, "p"), os.path.join(work, "r")
            nproc = _user_tasks() + HOST_NPROC_MARGIN
        limits = _limits(memory_mb, cpu, max_output_bytes, nproc)
        env = _env() if mode == "bwrap" else {**_env(), "HOME": cwd_child, "TMPDIR": cwd_child}
        try:
            runner = subprocess.Popen(runner_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                      cwd=cwd_runner, env=env, pass_fds=runner_fds, start_new_session=True,
                                      preexec_fn=limits)
            procs.append(runner)
            child = subprocess.Popen(child_cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                     cwd=cwd_child, env=env, pass_fds=child_fds, start_new_session=True,
                                     preexec_fn=limits)
            procs.append(child)
        except OSError as e:
            raise CodeSandboxUnavailable(f"could not start the code sandbox ({mode}): {e}") from e
        finally:
            if src is not None:
                src.close()
        for fd in fds:
            os.close(fd)
        fds.clear()
        _RUNS[mode] += 1
        try:
            runner.stdin.write(json.dumps({"tests": list(tests), "per_test_s": per_test_s}).encode())
            runner.stdin.close()
        except OSError:
            pass
        raw, timed_out = _read_until(runner.stdout.fileno(), t0 + timeout_s)
        for p in procs:
            _kill(p)
        rcs = []
        for p in procs:
            try:
                rcs.append(p.wait(timeout=5))
            except subprocess.TimeoutExpired:
                rcs.append(None)
        res = _parse(raw, n)
        res.timed_out = timed_out and not res.done
        res.returncode = rcs[1] if len(rcs) > 1 else None
        res.wall_s = time.monotonic() - t0
        res.output_tail = _tail(out)
        res.mode = mode
        res.runner_log = _tail(err, 4000)
        if not res.done and not res.timed_out and not raw:
            res.sandbox_failed = True
            res.error = res.error or f"the test runner failed: {_tail(err, 1000).strip()[-500:]}"
        res.enforced.update({"mode": mode, "memory_mb": memory_mb, "cpu_s": cpu, "wall_s": timeout_s,
                             "fsize_bytes": max_output_bytes, "disk_bytes": disk if mode == "bwrap" else None,
                             "processes": 1 if mode == "bwrap" else nproc,
                             "network": "none" if mode == "bwrap" else "python guards only"})
        return res
    finally:
        for p in procs:
            if p.poll() is None:
                _kill(p)
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            for s in (p.stdin, p.stdout):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
        for fd in fds:
            os.close(fd)
        out.close()
        err.close()
        if work:
            _rmtree(work)


def _read_until(fd: int, deadline: float) -> tuple[bytes, bool]:
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(buf), True
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return bytes(buf), False
            if len(buf) < 1 << 20:
                buf += chunk
            if buf.endswith(b"done\n"):
                return bytes(buf), False


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the process group (bwrap: the PID namespace dies with it, --die-with-parent)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(f, n: int = 4000) -> str:
    try:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - n))
        return f.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""


def _rmtree(path: str) -> None:
    def fix(func, p, exc):  # the program may have removed permissions on what it created
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def _parse(raw: bytes, n_tests: int) -> SandboxResult:
    passed = [False] * n_tests
    loaded, done, error = False, False, None
    for line in raw.decode("utf-8", "replace").splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "loaded":
            loaded = True
        elif kind == "load_error":
            error = f"the program raised {rest} while loading"
        elif kind == "test":
            i, _, verdict = rest.partition(" ")
            if i.isdigit() and int(i) < n_tests:
                passed[int(i)] = verdict == "pass"
        elif kind == "done":
            done = True
    return SandboxResult(passed, loaded, False, None, "", 0.0, {}, error, done)
