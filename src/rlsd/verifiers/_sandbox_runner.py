"""The trusted side of rlsd's code sandbox: run the task's tests and decide each verdict.

Runs as ``python -I -S -B _sandbox_runner.py <request fd> <response fd>`` in its own sandbox,
apart from the program's process (stdlib only; rlsd never imports it). stdin: the job as JSON
({"tests": [...], "per_test_s": s}); stdout: the verdict lines the host reads -- "loaded" or
"load_error <name>", one "test <i> pass|fail" per test, "done". Only this process writes there.

The program's names appear in each test's namespace as plain data (ints, strings, lists, dicts,
Fractions, namedtuples... rebuilt here from JSON, so their ``==`` is Python's own) or as
:class:`Remote` handles whose calls, attributes, iteration and operators are forwarded to the
program's process as requests. A test passes when its snippet runs here without raising.

What the program cannot do from its process: write a verdict, see the tests, or make a handle equal
a value of the test's own: ``Remote == <anything not a Remote>`` is False and ordering against it
raises TypeError, so an object with an always-true ``__eq__`` fails ``assert f(1) == 2``. What it
still decides: how its own objects compare with each other (``Point(1, 2) == Point(1, 2)`` calls its
``__eq__``) and anything a test asks it (``len``, ``bool``, ``repr``) -- those are its answers.
An operator between a handle and a value of the test's own (``f(x) - 2.5``, ``3 + v``) shows the program
that value, so its result must be a handle, and what such a handle (or anything made from it) answers as
plain data -- its ``abs``, truth, length, text, number, items -- is refused (TypeError), except a
comparison with another handle: otherwise ``abs(f(x) - expected) < tol`` would pass for an object whose
``__sub__`` returns 0 (``Vector(1, 2) * 2 == Vector(2, 4)`` still works). For the same reason ``x in handle``
with a value of the test's own is decided here, by iterating the handle and comparing each item with Python's
own ``==``: an always-true ``__contains__`` is never asked (a handle that cannot be iterated raises TypeError).
Arguments travel by value; lists, dicts, sets and bytearrays passed to a call are updated in place
with their state after the call. Functions defined in a test (lambdas) cannot be passed to the
program; standard-library functions and types (``len``, ``str.lower``, ``int``) can.
"""

import builtins
import os
import select
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's folder out
import _sandbox_wire as wire  # noqa: E402

MAX_LINE = 32 << 20
_SAFE_EXC_BASES = {"SystemExit", "KeyboardInterrupt", "GeneratorExit"}
_NO_IMPORT = {"this", "antigravity", "idlelib", "turtle", "turtledemo", "tkinter", "webbrowser", "pydoc"}


class _Timeout(BaseException):
    """The test ran past its time: never caught by a test's ``except Exception``."""


class _Gone(BaseException):
    """The program's process is gone (exited, killed, or closed its channel)."""


class _Channel:
    def __init__(self, req_fd, resp_fd):
        self.req_fd, self.resp_fd = req_fd, resp_fd
        self.buf = bytearray()
        self.next_id = 0
        self.deadline = None
        self.gone = False
        self.spoiled = False  # a timeout or a lost program during this test: it fails even if caught

    def _line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 1]
                return line
            if len(self.buf) > MAX_LINE:
                self.gone = self.spoiled = True
                raise _Gone()
            wait = None if self.deadline is None else self.deadline - time.monotonic()
            if wait is not None and wait <= 0:
                self.spoiled = True
                raise _Timeout()
            ready, _, _ = select.select([self.resp_fd], [], [], wait)
            if not ready:
                self.spoiled = True
                raise _Timeout()
            chunk = os.read(self.resp_fd, 1 << 16)
            if not chunk:
                self.gone = self.spoiled = True
                raise _Gone()
            self.buf += chunk

    def first(self):
        """The program's load report: {"loaded": true} or {"load_error": name}."""
        while True:
            try:
                msg = wire.loads(self._line())
            except ValueError:
                continue
            if isinstance(msg, dict) and ("loaded" in msg or "load_error" in msg):
                return msg

    def request(self, fn, args=(), kwargs=None, raw=False):
        if self.gone:
            self.spoiled = True
            raise _Gone()
        self.next_id += 1
        rid = self.next_id
        msg = {"id": rid, "fn": fn, "a": [_enc(a) for a in args], "k": {k: _enc(v) for k, v in (kwargs or {}).items()}}
        data = wire.dumps(msg)
        try:
            while data:
                data = data[os.write(self.req_fd, data):]
        except OSError:
            self.gone = self.spoiled = True
            raise _Gone() from None
        while True:
            try:
                reply = wire.loads(self._line())
            except ValueError:
                continue
            if isinstance(reply, dict) and reply.get("id") == rid:
                break
        if "err" in reply:
            raise _exception(reply["err"])
        if "ok" not in reply:
            raise RuntimeError("malformed reply from the program")
        if raw:
            return reply["ok"]
        mut = reply.get("mut") or {}
        if isinstance(mut, dict):
            for i, v in mut.items():
                _sync(args, i, v)
        return _dec(reply["ok"])


CHANNEL = None
_PROXIES = {}
_EXC_CLASSES = {}


def _sync(args, i, v):
    """Update a list/dict/set/bytearray argument in place with its state after the call."""
    try:
        orig = args[int(i)]
        new = _dec(v)
    except Exception:
        return
    if type(orig) is list and type(new) is list:
        orig[:] = new
    elif type(orig) is bytearray and type(new) is bytearray:
        orig[:] = new
    elif type(orig) is dict and isinstance(new, dict):
        orig.clear()
        orig.update(new)
    elif type(orig) is set and type(new) is set:
        orig.clear()
        orig.update(new)


def _exc_class(name, bases, ref):
    """A local exception class standing for one of the program's (or a built-in one)."""
    if ref is None and name in vars(builtins) and name not in _SAFE_EXC_BASES:
        c = vars(builtins)[name]
        if isinstance(c, type) and issubclass(c, BaseException):
            return c
    key = ref if ref is not None else ("builtin", name)
    cls = _EXC_CLASSES.get(key)
    if cls is None:
        base = Exception
        for b in bases or ():
            c = vars(builtins).get(b) if isinstance(b, str) else None
            if isinstance(c, type) and issubclass(c, BaseException) and b not in _SAFE_EXC_BASES:
                base = c
                break
        cls = type(str(name), (base,), {"_rlsd_ref": ref, "__module__": "solution"})
        _EXC_CLASSES[key] = cls
    return cls


def _exception(err):
    if not isinstance(err, dict):
        return RuntimeError("malformed error from the program")
    cls = _exc_class(str(err.get("t", "Exception")), err.get("e"), err.get("ref"))
    try:
        return cls(str(err.get("m", "")))
    except Exception:
        return Exception(str(err.get("m", "")))


def _resolve(v):
    if "$ref" in v:
        n = v["$ref"]
        if type(n) is not int:
            raise ValueError("malformed handle")
        if v.get("k") == "exc":
            return _exc_class(str(v.get("n", "Error")), v.get("e"), n)
        p = _PROXIES.get(n)
        if p is None:
            p = _PROXIES[n] = Remote(n, str(v.get("n", "")), str(v.get("k", "")))
        return p
    if "$mod" in v:  # the test gets its own copy of a standard-library module, never the program's
        name = str(v["$mod"])
        if name in sys.stdlib_module_names and not name.startswith("_") and name not in _NO_IMPORT:
            return __import__(name)
        raise ValueError("not a standard-library module the runner imports")
    raise ValueError("the program cannot send functions")


def _make_ref(x):
    if type(x) is Remote:
        return {"$ref": object.__getattribute__(x, "_r")}
    if isinstance(x, type) and issubclass(x, BaseException) and x.__dict__.get("_rlsd_ref") is not None:
        return {"$ref": x.__dict__["_rlsd_ref"]}
    mod = getattr(x, "__module__", None) or getattr(getattr(x, "__objclass__", None), "__module__", None)
    qual = getattr(x, "__qualname__", None)
    if isinstance(x, (type, type(len), type(str.lower))) and isinstance(qual, str) and "<" not in qual and (
            mod == "builtins" or mod in sys.stdlib_module_names):
        return {"$fn": [mod, qual]}
    raise wire.Unencodable(f"a {type(x).__name__} cannot be sent to the program")


def _enc(x):
    return wire.encode(x, _make_ref)


def _dec(v):
    return wire.decode(v, _resolve)


_SAW_TEST_VALUE = set()  # handles the program made after an operator showed it a value of the test's own


def _seen(x):
    return type(x) is Remote and object.__getattribute__(x, "_r") in _SAW_TEST_VALUE


def _checked(result, saw):
    """An answer computed with a test's value in view: only a handle, which inherits the mark."""
    if not saw:
        return result
    if type(result) is not Remote:
        raise TypeError("a program object's answer computed from a value of the test's own is not a value "
                        "the test can use")
    _SAW_TEST_VALUE.add(object.__getattribute__(result, "_r"))
    return result


def _apply(fn, *args, **kwargs):
    saw = any(_seen(a) for a in args) or any(_seen(v) for v in kwargs.values())
    return _checked(CHANNEL.request(fn, args, kwargs), saw)


def _cmp(name):
    def op(self, other):
        if type(other) is not Remote:
            return NotImplemented  # a handle never equals, nor orders against, a value of the test's own
        return CHANNEL.request(name, (self, other))  # two of its own objects: the program's answer
    op.__name__ = f"__{name}__"
    return op


def _binop(name, reflected=False):
    def op(self, other):
        args = (other, self) if reflected else (self, other)
        return _checked(CHANNEL.request(name, args), type(other) is not Remote or _seen(self) or _seen(other))
    return op


class Remote:
    """A handle to an object in the program's process; every use is a request to it."""

    __slots__ = ("_r", "_n", "_k", "__weakref__")

    def __init__(self, r, n, k):
        object.__setattr__(self, "_r", r)
        object.__setattr__(self, "_n", n)
        object.__setattr__(self, "_k", k)

    def __call__(self, *args, **kwargs):
        saw = _seen(self) or any(_seen(a) for a in args) or any(_seen(v) for v in kwargs.values())
        return _checked(CHANNEL.request({"$ref": object.__getattribute__(self, "_r")}, args, kwargs), saw)

    def __getattr__(self, name):
        return _apply("getattr", self, name)

    def __setattr__(self, name, value):
        _apply("setattr", self, name, value)

    def __delattr__(self, name):
        _apply("delattr", self, name)

    def __repr__(self):
        r = _apply("repr", self)
        return r if type(r) is str else f"<remote {object.__getattribute__(self, '_n')}>"

    def __str__(self):
        r = _apply("str", self)
        if type(r) is not str:
            raise TypeError("__str__ returned non-string")
        return r

    def __format__(self, spec):
        return _apply("format", self, spec)

    def __bool__(self):
        r = _apply("bool", self)
        if type(r) is not bool:
            raise TypeError("__bool__ should return bool")
        return r

    def __len__(self):
        return _apply("len", self)

    def __iter__(self):
        it = _apply("iter", self)
        return it if type(it) is Remote else iter(it)

    def __next__(self):
        return _apply("next", self)

    def __reversed__(self):
        it = _apply("reversed", self)
        return it if type(it) is Remote else iter(it)

    def __contains__(self, item):
        if type(item) is not Remote:  # a value of the test's own: decided here, by iterating the handle (what
            # Python does for a class without __contains__); the program's __contains__ would see the value and
            # could say True to anything
            return any(x is item or x == item for x in self)
        return bool(_apply("contains", self, item))

    def __getitem__(self, key):
        return _apply("getitem", self, key)

    def __setitem__(self, key, value):
        _apply("setitem", self, key, value)

    def __delitem__(self, key):
        _apply("delitem", self, key)

    def __hash__(self):
        h = _apply("hash", self)
        if type(h) is not int:
            raise TypeError("__hash__ should return an integer")
        return h

    def __index__(self):
        r = _apply("index", self)
        if type(r) is not int:
            raise TypeError("__index__ returned non-int")
        return r

    def __int__(self):
        return _typed(_apply("int", self), int)

    def __float__(self):
        return _typed(_apply("float", self), float)

    def __neg__(self):
        return _apply("neg", self)

    def __pos__(self):
        return _apply("pos", self)

    def __abs__(self):
        return _apply("abs", self)

    def __invert__(self):
        return _apply("invert", self)

    def __instancecheck__(self, obj):
        return _apply("isinstance", obj, self) is True

    def __subclasscheck__(self, cls):
        return _apply("issubclass", cls, self) is True

    def __enter__(self):
        return _apply("enter", self)

    def __exit__(self, *exc):
        _apply("exit", self, None, None, None)
        return False  # the program never swallows an exception raised in the test's with-block

    __eq__, __ne__, __lt__, __le__, __gt__, __ge__ = (_cmp(n) for n in ("eq", "ne", "lt", "le", "gt", "ge"))


def _typed(v, t):
    if type(v) is not t:
        raise TypeError(f"expected {t.__name__}")
    return v


for _op, _name in (("add", "add"), ("sub", "sub"), ("mul", "mul"), ("truediv", "truediv"), ("floordiv", "floordiv"),
                   ("mod", "mod"), ("pow", "pow"), ("matmul", "matmul"), ("and", "and_"), ("or", "or_"),
                   ("xor", "xor"), ("lshift", "lshift"), ("rshift", "rshift")):
    setattr(Remote, f"__{_op}__", _binop(_name))
    setattr(Remote, f"__r{_op}__", _binop(_name, reflected=True))


def _namespace(shadowed):
    """The test's globals: builtins, then the program's top-level names (each decoded on its own; one
    that cannot cross is left out). A program cannot redefine what a test means by len, sorted, ..."""
    ns = {"__name__": "__rlsd_test__", "__builtins__": builtins}
    table = CHANNEL.request("globals", raw=True)
    items = table.get("$d") if isinstance(table, dict) else None
    for item in items if isinstance(items, list) else ():
        try:
            name, value = item
            if isinstance(name, str) and name not in shadowed:
                ns[name] = _dec(value)
        except Exception:
            pass
    return ns


def main():
    global CHANNEL
    job = wire.loads(sys.stdin.buffer.read())
    tests, per_test = job["tests"], float(job.get("per_test_s") or 0)
    # Verdicts go to the original stdout only; whatever a test or a module prints goes to the log.
    verdict_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(line):
        data = (line + "\n").encode()
        while data:
            data = data[os.write(verdict_fd, data):]

    CHANNEL = _Channel(int(sys.argv[1]), int(sys.argv[2]))
    try:
        first = CHANNEL.first()
    except BaseException:
        emit("load_error NoReport")
        emit("done")
        return
    if "load_error" in first:
        emit("load_error " + "".join(c for c in str(first["load_error"])[:80] if c.isalnum() or c == "_"))
        emit("done")
        return
    emit("loaded")
    shadowed = set(vars(builtins))
    for i, test in enumerate(tests):
        ok = False
        CHANNEL.deadline = time.monotonic() + per_test + 0.5 if per_test > 0 else None
        CHANNEL.spoiled = False
        try:
            code = compile(test, f"<test {i}>", "exec")
            exec(code, _namespace(shadowed))
            ok = not CHANNEL.spoiled
        except BaseException as e:  # the reason goes to the runner's log (SandboxResult.runner_log)
            ok = False
            sys.stderr.write(f"test {i}: {type(e).__name__}: {str(e)[:300]}\n")
        CHANNEL.deadline = None
        emit(f"test {i} {'pass' if ok else 'fail'}")
    emit("done")


if __name__ == "__main__":
    main()
