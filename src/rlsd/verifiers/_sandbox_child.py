"""The program's side of rlsd's code sandbox: load the untrusted program, then answer call requests.

Runs as ``python -I -S -B _sandbox_child.py <request fd> <response fd> <solution.py> <per_call_s>
<guards>`` inside the sandbox (stdlib only; rlsd never imports it). Everything in this process is
under the program's control once the program runs, so nothing here decides a verdict and nothing
here is secret: it only executes what the trusted runner (_sandbox_runner.py, another process) asks
for -- "call this function with these plain-data arguments", "get this attribute", "iterate this" --
and answers with plain data or a handle (see _sandbox_wire). A program that patches this file's
functions, forges answers or exits early can only change the answers it gives; the runner compares
them with the expected values itself.

Protocol: one JSON line per message. First the child sends {"loaded": true} or {"load_error": name};
then, for each request {"id", "fn", "a", "k"}, one reply {"id", "ok", "mut"} or {"id", "err"}.
"""

import builtins
import operator
import os
import signal
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's folder out
import _sandbox_wire as wire  # noqa: E402

_REFS = {}  # handle id -> object (kept alive for the runner)
_IDS = {}  # id(object) -> handle id


class _CallTimeout(BaseException):
    pass


def _kind(x):
    if isinstance(x, type):
        return "exc" if issubclass(x, BaseException) else "class"
    if callable(x):
        return "callable"
    if hasattr(type(x), "__next__"):
        return "iterator"
    return "object"


def _make_ref(x):
    if isinstance(x, types.ModuleType):
        return {"$mod": x.__name__}
    n = _IDS.get(id(x))
    if n is None or _REFS.get(n) is not x:
        n = len(_REFS) + 1
        _REFS[n], _IDS[id(x)] = x, n
    ref = {"$ref": n, "k": _kind(x), "n": getattr(x, "__name__", type(x).__name__) if isinstance(x, type) else type(x).__name__}
    if ref["k"] == "exc":
        ref["e"] = [c.__name__ for c in x.__mro__ if c.__module__ == "builtins"]
    return ref


def _resolve(v):
    if "$ref" in v:
        return _REFS[v["$ref"]]
    if "$mod" in v:
        return sys.modules[v["$mod"]]
    mod, qual = v["$fn"]
    obj = builtins if mod == "builtins" else __import__(mod)
    for part in str(qual).split("."):
        obj = getattr(obj, part)
    return obj


_NAMED = {  # what the runner may apply to handles besides calling them
    "getattr": getattr, "setattr": setattr, "delattr": delattr, "len": len, "iter": iter, "next": next,
    "bool": bool, "repr": repr, "str": str, "hash": hash, "format": format, "isinstance": isinstance,
    "issubclass": issubclass, "int": int, "float": float, "index": operator.index, "abs": abs,
    "reversed": reversed, "dir": dir, "enter": lambda o: type(o).__enter__(o),
    "exit": lambda o, *a: type(o).__exit__(o, *a),
}
for _name in ("getitem", "setitem", "delitem", "contains", "eq", "ne", "lt", "le", "gt", "ge", "add", "sub",
              "mul", "truediv", "floordiv", "mod", "pow", "matmul", "neg", "pos", "invert", "and_", "or_", "xor",
              "lshift", "rshift"):
    _NAMED[_name] = getattr(operator, _name)
_MUTABLE = (list, dict, set, bytearray)


def _send(fd, msg):
    data = wire.dumps(msg)
    while data:
        data = data[os.write(fd, data):]


def _error(e):
    t = type(e)
    return {"t": t.__name__, "e": [c.__name__ for c in t.__mro__ if c.__module__ == "builtins"],
            "ref": _make_ref(t)["$ref"] if t.__module__ != "builtins" else None, "m": str(e)[:1000]}


def _answer(req, per_call_s):
    fn = req.get("fn")
    f = _NAMED[fn] if isinstance(fn, str) else _resolve(fn)
    args = [wire.decode(a, _resolve) for a in req.get("a", [])]
    kwargs = {str(k): wire.decode(v, _resolve) for k, v in req.get("k", {}).items()}
    if per_call_s > 0:
        signal.setitimer(signal.ITIMER_REAL, per_call_s)
    try:
        result = f(*args, **kwargs)
    finally:
        if per_call_s > 0:
            signal.setitimer(signal.ITIMER_REAL, 0)
    mut = {str(i): wire.encode(a, _make_ref) for i, a in enumerate(args) if isinstance(a, _MUTABLE)}
    return {"ok": wire.encode(result, _make_ref), "mut": mut}


def _globals(module):
    """The program's top-level names as an encoded dict (dunder names left out)."""
    items = []
    for name, value in list(vars(module).items()):
        if not isinstance(name, str) or name.startswith("__"):
            continue
        try:
            items.append([name, wire.encode(value, _make_ref)])
        except Exception:
            pass
    return {"$d": items, "c": ""}


def _load(path, guards_root):
    with open(path, encoding="utf-8") as f:
        src = f.read()
    module = types.ModuleType("solution")
    module.__file__ = path
    sys.modules["solution"] = module
    import linecache

    linecache.cache[path] = (len(src), None, src.splitlines(True), path)
    if guards_root:
        import _sandbox_guards

        _sandbox_guards.install(guards_root)
    exec(compile(src, path, "exec"), module.__dict__)
    return module


def main():
    req_fd, resp_fd, path, per_call_s, guards = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the file-size limit fail with EFBIG instead

    def on_alarm(signum, frame):
        raise _CallTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    try:
        module = _load(path, os.path.dirname(path) if guards == "1" else "")
    except BaseException as e:
        _send(resp_fd, {"load_error": type(e).__name__})
        os._exit(0)
    _send(resp_fd, {"loaded": True})
    reader = os.fdopen(req_fd, "rb", buffering=1 << 16)
    while True:
        line = reader.readline()
        if not line:
            break
        try:
            req = wire.loads(line)
            rid = req["id"]
        except Exception:
            continue
        try:
            if req.get("fn") == "globals":
                reply = {"ok": _globals(module)}
            else:
                reply = _answer(req, per_call_s)
        except _CallTimeout:
            reply = {"err": {"t": "TimeoutError", "e": ["TimeoutError", "OSError", "Exception", "BaseException"],
                             "ref": None, "m": "call exceeded its time limit"}}
        except BaseException as e:
            try:
                reply = {"err": _error(e)}
            except BaseException:
                reply = {"err": {"t": "Exception", "e": ["Exception"], "ref": None, "m": ""}}
        reply["id"] = rid
        try:
            _send(resp_fd, reply)
        except ValueError:  # an int too large for JSON or the like
            _send(resp_fd, {"id": rid, "err": {"t": "ValueError", "e": ["ValueError"], "ref": None, "m": "unencodable"}})
        except OSError:
            break
    os._exit(0)


if __name__ == "__main__":
    main()
