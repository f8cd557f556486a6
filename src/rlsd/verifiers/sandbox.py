"""A sandbox for running untrusted Python (model-written code) against unit tests.

``run_python_tests(code, tests, ...)`` runs ``code`` and then each test snippet in a separate
process and returns which tests passed. What is enforced, layer by layer:

1. Process: a fresh ``python -I -S -B`` (isolated mode: no PYTHON* variables, no user site, no
   site-packages, no bytecode writes) in its own session, started in a throw-away temporary working
   folder that is deleted afterwards; the environment is scrubbed to PATH, HOME/TMPDIR (the work
   folder), LANG. A wall-time limit kills the whole process group (and, with namespaces, the whole
   PID namespace) with SIGKILL.
2. Resource limits (``resource.setrlimit`` in ``preexec_fn``; hard = soft so the program cannot
   raise them): RLIMIT_AS (address space, ``memory_mb``), RLIMIT_CPU (CPU seconds), RLIMIT_FSIZE
   (largest file, also caps the captured stdout/stderr), RLIMIT_NOFILE, RLIMIT_CORE = 0, and
   RLIMIT_NPROC. Linux counts RLIMIT_NPROC per user over the whole machine, so the limit set before
   exec is the user's current task count plus a margin (:data:`HOST_NPROC_MARGIN`); inside a user
   namespace the harness then lowers it to ``nproc`` tasks counted within the namespace.
3. Kernel isolation, when ``unshare`` with unprivileged user namespaces and ``setpriv`` work on this
   host (probed once, :func:`namespaces_available`): new user, network, PID and mount namespaces.
   The network namespace has only a loopback interface (down): no route anywhere. In the mount
   namespace every mount is remounted read-only except the work folder (bind-mounted on itself),
   so writes to /tmp, $HOME or the project fail with EROFS; /proc is the namespace's own. All
   capabilities are then dropped (bounding set cleared, no_new_privs) before Python starts, so the
   program cannot undo the remounts.
4. Python guards in the child (``python_guards=True``), installed before the solution runs: the
   ``socket`` module's constructors and resolvers are replaced by functions that raise
   PermissionError, and an audit hook (which cannot be removed) refuses socket creation, process
   creation (fork, exec, subprocess, posix_spawn, system), signalling other processes, ctypes,
   frame/gc introspection (used to protect the result channel), rlimit changes and any write,
   delete, rename or mkdir outside the work folder. This is defence in depth, not a boundary on its
   own: without namespaces (e.g. a container that forbids user namespaces) a determined program
   could bypass Python-level hooks via C extensions; the rlimits and the kill still apply.

Result channel: a pipe (fd inherited by the child) where each line starts with a random nonce given
on stdin; the program's own stdout/stderr go to a size-capped file whose tail is returned.
Not defended against: a program that games the tests themselves (e.g. returns an object whose
``__eq__`` is always True); the tests are the task author's responsibility.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST_NPROC_MARGIN = 64
_CHILD = Path(__file__).with_name("_sandbox_child.py")
_NS_CMD = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount",
           "--mount-proc"]
# Runs as root of the new user namespace: make the work folder its own mount, remount every other
# mount read-only, drop every capability, then exec Python.
_NS_SETUP = r"""
w="$1"; shift
mount --bind "$w" "$w" || exit 97
while read -r _ _ _ _ mp _; do
  [ "$mp" = "$w" ] && continue
  mount -o remount,bind,ro "$mp" 2>/dev/null
done < /proc/self/mountinfo
exec setpriv --bounding-set=-all --inh-caps=-all --no-new-privs -- "$@"
"""


@dataclass
class SandboxResult:
    """passed[i]: test i ran and passed (tests not reached count as failed)."""

    passed: list[bool]
    loaded: bool  # the solution itself ran without raising
    timed_out: bool
    returncode: int | None
    output_tail: str
    wall_s: float
    enforced: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why the program failed to load, or why the sandbox could not run it
    done: bool = False  # the harness reported the end of the test list

    @property
    def fraction_passed(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


@functools.lru_cache(maxsize=1)
def namespaces_available() -> bool:
    """True when unprivileged user+net+pid+mount namespaces and setpriv work here (probed once)."""
    if not (shutil.which("unshare") and shutil.which("setpriv") and shutil.which("mount")):
        return False
    try:
        with tempfile.TemporaryDirectory(prefix="rlsd-nsprobe-") as d:
            r = subprocess.run(_NS_CMD + ["sh", "-c", _NS_SETUP, "sh", d, "sh", "-c", f"touch {d}/ok && ! touch /tmp/.rlsd-ro-probe 2>/dev/null"],
                               capture_output=True, timeout=20, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
            return r.returncode == 0 and os.path.exists(os.path.join(d, "ok"))
    except (OSError, subprocess.SubprocessError):
        return False


def _user_tasks() -> int:
    """Tasks (processes and threads) of this user on the machine: what RLIMIT_NPROC counts."""
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


def _limits(memory_mb: int, cpu_s: int, fsize_bytes: int, nproc: int):
    import resource

    plan = [(resource.RLIMIT_AS, memory_mb * 1024 * 1024), (resource.RLIMIT_CPU, cpu_s),
            (resource.RLIMIT_FSIZE, fsize_bytes), (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NOFILE, 256),
            (resource.RLIMIT_NPROC, nproc)]

    def apply() -> None:  # runs in the child between fork and exec: setrlimit calls only
        for what, value in plan:
            try:
                resource.setrlimit(what, (value, value))
            except (ValueError, OSError):
                pass

    return apply


def run_python_tests(code: str, tests: list[str], *, timeout_s: float = 10.0, per_test_s: float = 0.0,
                     memory_mb: int = 512, cpu_s: int | None = None, max_output_bytes: int = 1 << 20,
                     nproc: int = 16, isolation: str = "auto", python_guards: bool = True) -> SandboxResult:
    """Run ``code`` then each snippet of ``tests`` (a test passes when it runs without raising).

    timeout_s: wall-clock limit for the whole run; per_test_s: a soft per-test alarm (0 = none);
    memory_mb: address-space limit; cpu_s: CPU-seconds limit (default ceil(timeout_s) + 1);
    max_output_bytes: largest file the program may write, stdout/stderr included;
    nproc: tasks allowed inside the namespace; isolation: "auto" (namespaces when available),
    "namespaces" (required; error result when unavailable) or "process" (no namespaces).
    """
    t0 = time.monotonic()
    use_ns = isolation == "namespaces" or (isolation == "auto" and namespaces_available())
    if isolation == "namespaces" and not namespaces_available():
        return SandboxResult([False] * len(tests), False, False, None, "", 0.0,
                             error="namespaces requested but unshare/user namespaces are unavailable here")
    work = tempfile.mkdtemp(prefix="rlsd-sbx-")
    rfd = wfd = -1
    try:
        os.chmod(work, 0o700)
        job_path = os.path.join(work, "job.json")
        with open(job_path, "w", encoding="utf-8") as f:
            json.dump({"code": code, "tests": list(tests), "workdir": work, "per_test_s": per_test_s,
                       "guards": python_guards, "nproc": nproc if use_ns else 0}, f)
        rfd, wfd = os.pipe()
        py = [sys.executable, "-I", "-S", "-B", str(_CHILD), str(wfd), job_path]
        cmd = (_NS_CMD + ["sh", "-c", _NS_SETUP, "sh", work] + py) if use_ns else py
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
        cpu = int(cpu_s if cpu_s is not None else int(timeout_s) + 1)
        preexec = _limits(memory_mb, cpu, max_output_bytes, _user_tasks() + HOST_NPROC_MARGIN)
        out_path = os.path.join(work, ".stdout")
        with open(out_path, "wb") as out:
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, cwd=work,
                                        env=env, pass_fds=(wfd,), start_new_session=True, preexec_fn=preexec,
                                        close_fds=True)
            except OSError as e:
                return SandboxResult([False] * len(tests), False, False, None, "", time.monotonic() - t0,
                                     error=f"could not start the sandbox: {e}")
        os.close(wfd)
        wfd = -1
        nonce = secrets.token_hex(16)
        try:
            proc.stdin.write((nonce + "\n").encode())
            proc.stdin.close()
        except OSError:
            pass
        buf, timed_out = bytearray(), False
        deadline = t0 + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([rfd], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(rfd, 65536)
                if not chunk:
                    break  # every writer closed: the harness (and anything it spawned) is gone
                if len(buf) < 1 << 20:
                    buf += chunk
        _kill(proc)
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        res = _parse(bytes(buf), nonce, len(tests))
        res.timed_out = timed_out and not res.done
        res.returncode = rc
        res.wall_s = time.monotonic() - t0
        res.output_tail = _tail(out_path)
        res.enforced.update({"namespaces": use_ns, "python_guards": python_guards, "memory_mb": memory_mb,
                             "cpu_s": cpu, "wall_s": timeout_s, "fsize_bytes": max_output_bytes,
                             "nproc_in_namespace": nproc if use_ns else None})
        return res
    finally:
        for fd in (rfd, wfd):
            if fd >= 0:
                os.close(fd)
        _rmtree(work)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group (with namespaces, killing unshare kills the PID namespace)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _tail(path: str, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
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


def _parse(raw: bytes, nonce: str, n_tests: int) -> SandboxResult:
    passed = [False] * n_tests
    loaded, done, error, enforced = False, False, None, {}
    for line in raw.decode("utf-8", "replace").splitlines():
        if not line.startswith(nonce + " "):
            continue
        parts = line[len(nonce) + 1:].split(" ", 1)
        kind, rest = parts[0], (parts[1] if len(parts) > 1 else "")
        if kind == "probe":
            try:
                enforced = json.loads(rest)
            except ValueError:
                pass
        elif kind == "loaded":
            loaded = True
        elif kind == "load_error":
            error = f"the program raised {rest} while loading"
        elif kind == "test":
            i, _, verdict = rest.partition(" ")
            if i.isdigit() and int(i) < n_tests:
                passed[int(i)] = verdict == "pass"
        elif kind == "done":
            done = True
    return SandboxResult(passed, loaded, False, None, "", 0.0, enforced, error, done)
