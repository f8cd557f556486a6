"""Python-level guards for the program's process in the weaker 'process' mode only (stdlib only).

An audit hook (which cannot be removed) refuses sockets, process creation, signals, ctypes, rlimit
changes, writes outside the work folder and reads of other processes' /proc entries. This is a
speed bump, not a boundary: C code (or a bug in a hook) gets past it. The bubblewrap mode does not
install it; the kernel enforces the rules there.
"""

import os
import sys

_DENY = {
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
    "os.kill", "os.killpg", "signal.pthread_kill", "pty.spawn", "ctypes.dlopen", "ctypes.dlsym",
    "ctypes.cdata", "ctypes.call_function", "resource.setrlimit", "resource.prlimit", "os.chroot",
    "sys.addaudithook", "os.setsid", "os.setpgid",
}
_PATH_EVENTS = {
    "os.remove": (0,), "os.rename": (0, 1), "os.rmdir": (0,), "os.mkdir": (0,), "os.symlink": (1,),
    "os.link": (1,), "os.chmod": (0,), "os.chown": (0,), "os.truncate": (0,), "os.utime": (0,),
    "shutil.rmtree": (0,), "shutil.move": (0, 1), "shutil.copyfile": (1,), "os.mkfifo": (0,), "os.mknod": (0,),
}


def install(workdir):
    import socket

    def no_network(*a, **k):
        raise PermissionError("network access is disabled in the rlsd sandbox")

    for name in ("socket", "create_connection", "create_server", "socketpair", "fromfd", "getaddrinfo"):
        if hasattr(socket, name):
            setattr(socket, name, no_network)
    root = os.path.realpath(workdir)
    me = str(os.getpid())
    realpath, fsdecode, sep = os.path.realpath, os.fsdecode, os.sep
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    deny, path_events = frozenset(_DENY), dict(_PATH_EVENTS)

    def resolved(p):
        try:
            return realpath(fsdecode(p))
        except Exception:
            return None

    def inside(p):
        if isinstance(p, int):
            return True
        rp = resolved(p)
        return rp is not None and (rp == root or rp.startswith(root + sep) or rp == "/dev/null")

    def other_proc(p):
        if isinstance(p, int):
            return False
        rp = resolved(p) or ""
        parts = rp.split(sep)
        return len(parts) > 2 and parts[1] == "proc" and parts[2] not in (me, "self", "thread-self") and (
            parts[2].isdigit())

    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & write_flags)
            if writing and not inside(path):
                raise PermissionError(f"writing outside the sandbox folder is not allowed: {path!r}")
            if other_proc(path):
                raise PermissionError("other processes are not visible in the rlsd sandbox")
        elif event in path_events:
            for i in path_events[event]:
                if i < len(args) and not inside(args[i]):
                    raise PermissionError(f"{event} outside the sandbox folder is not allowed")
        elif event in deny or event.startswith("socket."):
            raise PermissionError(f"{event} is not allowed in the rlsd sandbox")

    sys.addaudithook(hook)
