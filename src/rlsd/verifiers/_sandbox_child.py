"""The harness that runs inside the sandbox process (stdlib only; never imported by rlsd).

argv: <result fd> <job.json>. The first line of stdin is a nonce; every result line written to the
result fd starts with it, so output the untrusted program writes elsewhere cannot pass as a result.
Order: read nonce and job, delete job.json, set the tight process limit, probe what the kernel
enforces, install the Python guards (audit hook + socket monkeypatch), run the solution, then each
test in its own copy of the solution's globals, one result line per test, then os._exit.
"""

import json
import os
import signal
import sys

_write = os.write
_exit = os._exit


def _finish():
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
    _exit(0)


class _TestTimeout(BaseException):
    pass


def _probe(workdir):
    facts = {}
    try:
        import socket as _s

        facts["network_interfaces"] = sorted(n for _, n in _s.if_nameindex())
    except OSError as e:
        facts["network_interfaces"] = "unknown: " + type(e).__name__
    facts["fs_readonly_outside_workdir"] = not os.access("/tmp", os.W_OK) and not os.access(os.path.dirname(workdir), os.W_OK)
    facts["pid"] = os.getpid()
    return facts


_DENY = {
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
    "os.kill", "os.killpg", "signal.pthread_kill", "pty.spawn",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "ctypes.cdata/buffer", "ctypes.call_function",
    "sys._getframe", "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "object.__getattr__",
    "resource.setrlimit", "resource.prlimit", "os.chroot", "webbrowser.open", "sys.addaudithook",
}
_PATH_EVENTS = {  # event -> indices of path arguments that must stay inside the work folder
    "os.remove": (0,), "os.rename": (0, 1), "os.rmdir": (0,), "os.mkdir": (0,), "os.symlink": (1,),
    "os.link": (1,), "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,),
    "shutil.rmtree": (0,), "shutil.move": (0, 1), "shutil.copyfile": (1,), "shutil.copytree": (1,),
    "os.mkfifo": (0,), "os.mknod": (0,), "os.setxattr": (0,), "os.removexattr": (0,),
}


def _install_guards(workdir):
    import socket

    def _no_network(*a, **k):
        raise PermissionError("network access is disabled in the rlsd sandbox")

    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo",
                 "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getnameinfo"):
        if hasattr(socket, name):
            setattr(socket, name, _no_network)

    root = os.path.realpath(workdir)
    realpath, fsdecode, sep = os.path.realpath, os.fsdecode, os.sep
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    deny, path_events = frozenset(_DENY), dict(_PATH_EVENTS)

    def inside(p):
        if isinstance(p, int):
            return True  # an already-open descriptor
        try:
            rp = realpath(fsdecode(p))
        except Exception:
            return False
        return rp == root or rp.startswith(root + sep) or rp == "/dev/null"

    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if writing and not inside(path):
                raise PermissionError(f"writing outside the sandbox folder is not allowed: {path!r}")
        elif event in path_events:
            for i in path_events[event]:
                if i < len(args) and not inside(args[i]):
                    raise PermissionError(f"{event} outside the sandbox folder is not allowed")
        elif event in deny or event.startswith("socket."):
            raise PermissionError(f"{event} is not allowed in the rlsd sandbox")

    sys.addaudithook(hook)


def main():
    fd = int(sys.argv[1])
    nonce = sys.stdin.readline().strip()

    def emit(line):
        _write(fd, (nonce + " " + line + "\n").encode())

    with open(sys.argv[2], encoding="utf-8") as f:
        job = json.load(f)
    os.remove(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past RLIMIT_FSIZE fail with EFBIG instead
    if job.get("nproc"):
        import resource

        n = int(job["nproc"])
        resource.setrlimit(resource.RLIMIT_NPROC, (n, n))
    workdir = job["workdir"]
    os.chdir(workdir)
    emit("probe " + json.dumps(_probe(workdir)))
    if job.get("guards", True):
        _install_guards(workdir)
    per_test = float(job.get("per_test_s") or 0)

    def _alarm(signum, frame):
        raise _TestTimeout()

    ns = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(job["code"], "solution.py", "exec"), ns)
    except BaseException as e:
        emit("load_error " + type(e).__name__)
        _finish()
    emit("loaded")
    for i, test in enumerate(job["tests"]):
        ok = False
        try:
            if per_test > 0:
                signal.signal(signal.SIGALRM, _alarm)
                signal.setitimer(signal.ITIMER_REAL, per_test)
            exec(compile(test, f"<test {i}>", "exec"), dict(ns))
            ok = True
        except BaseException:
            ok = False
        finally:
            if per_test > 0:
                signal.setitimer(signal.ITIMER_REAL, 0)
        emit(f"test {i} {'pass' if ok else 'fail'}")
    emit("done")
    _finish()


if __name__ == "__main__":
    main()
