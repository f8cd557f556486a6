"""Plain-data encoding between the trusted test runner and the program's process (stdlib only).

Both sides of rlsd's code sandbox import this file by path; rlsd itself never needs it. A value
crosses as JSON built only from these shapes, so what the receiver rebuilds is made of its own
built-in types and never of objects the other side defined:

- None, bool, str, float (NaN and infinities included), small int: JSON itself;
- {"$i": hex} large int; {"$t": [...]} tuple; [...] list; {"$d": [[k, v], ...], "c": cls} dict
  (cls: "", "Counter", "OrderedDict" or "defaultdict:<factory>"); {"$s": [...]} set; {"$fs": [...]}
  frozenset; {"$b": hex} bytes; {"$ba": hex} bytearray; {"$c": [re, im]} complex;
  {"$fr": [n, d]} Fraction; {"$dec": str} Decimal; {"$r": [start, stop, step]} range;
  {"$nt": [typename, [fields], [values]]} namedtuple; {"$dq": [[...], maxlen]} deque;
  {"$dt": [kind, [args]]} date / datetime / time / timedelta (naive only);
- {"$fn": [module, qualname]} a standard-library function or type (``len``, ``str.lower``), only
  from the runner to the program;
- {"$ref": id, "k": kind, "n": type name, "e": [builtin exception bases]} anything else: a handle to
  an object that stays in the process that owns it; {"$mod": name} a module, by name.

Limits: nesting depth MAX_DEPTH and MAX_ITEMS items per message; beyond them a value crosses as a
handle (program side) or is refused (runner side).
"""

import collections
import json
import sys

MAX_DEPTH = 64
MAX_ITEMS = 2_000_000
SMALL_INT = 1 << 62


class Unencodable(TypeError):
    pass


class _Budget:
    def __init__(self):
        self.items = 0


def _nt_fields(x):
    f = getattr(type(x), "_fields", None)
    if isinstance(f, tuple) and all(type(n) is str for n in f) and len(f) == tuple.__len__(x):
        return f
    return None


def encode(x, make_ref, depth=0, budget=None):
    """x -> JSON-ready structure. make_ref(obj) -> handle dict for values that do not cross as data
    (None: refuse them with Unencodable)."""
    budget = budget or _Budget()
    budget.items += 1
    if depth > MAX_DEPTH or budget.items > MAX_ITEMS:
        return _ref_or_raise(x, make_ref)
    t = type(x)  # type(), not isinstance: an object cannot lie about type() the way it can with __class__
    if x is None or t is bool or t is str or t is float:
        return x
    if t is int:
        return x if -SMALL_INT < x < SMALL_INT else {"$i": hex(x)}
    if issubclass(t, (int, float, str)) and _is_enum(t):
        return _ref_or_raise(x, make_ref)
    if issubclass(t, int):  # bool is handled above; IntFlag etc. are enums
        return encode(int.__int__(x), make_ref, depth, budget)
    if issubclass(t, float):
        return float.__float__(x)
    if issubclass(t, str):
        return str.__str__(x)
    e = lambda v: encode(v, make_ref, depth + 1, budget)  # noqa: E731
    if issubclass(t, tuple):
        f = _nt_fields(x)
        vals = [e(v) for v in tuple.__iter__(x)]
        if f is not None and t is not tuple:
            return {"$nt": [t.__name__, list(f), vals]}
        return {"$t": vals}
    if issubclass(t, list):
        return [e(v) for v in list.__iter__(x)]
    if issubclass(t, dict):
        cls = ""
        if issubclass(t, collections.Counter):
            cls = "Counter"
        elif issubclass(t, collections.OrderedDict):
            cls = "OrderedDict"
        elif issubclass(t, collections.defaultdict):
            fac = x.default_factory
            cls = "defaultdict:" + (fac.__name__ if fac in _FACTORIES else "")
        return {"$d": [[e(k), e(v)] for k, v in dict.items(x)], "c": cls}
    if issubclass(t, frozenset):
        return {"$fs": [e(v) for v in frozenset.__iter__(x)]}
    if issubclass(t, set):
        return {"$s": [e(v) for v in set.__iter__(x)]}
    if issubclass(t, bytes):
        return {"$b": bytes.hex(x)}
    if issubclass(t, bytearray):
        return {"$ba": bytearray.hex(x)}
    if t is complex:
        return {"$c": [x.real, x.imag]}
    if t is _loaded("fractions", "Fraction"):
        return {"$fr": [e(x.numerator), e(x.denominator)]}
    if t is _loaded("decimal", "Decimal"):
        return {"$dec": str(x)}
    if t is range:
        return {"$r": [e(x.start), e(x.stop), e(x.step)]}
    if t is collections.deque:
        return {"$dq": [[e(v) for v in x], x.maxlen]}
    if t is _loaded("datetime", "timedelta"):
        return {"$dt": ["timedelta", [x.days, x.seconds, x.microseconds]]}
    if t is _loaded("datetime", "datetime") and x.tzinfo is None:
        return {"$dt": ["datetime", [x.year, x.month, x.day, x.hour, x.minute, x.second, x.microsecond]]}
    if t is _loaded("datetime", "date"):
        return {"$dt": ["date", [x.year, x.month, x.day]]}
    if t is _loaded("datetime", "time") and x.tzinfo is None:
        return {"$dt": ["time", [x.hour, x.minute, x.second, x.microsecond]]}
    return _ref_or_raise(x, make_ref)


def _loaded(module, name):
    """A class of a module only if that module is already imported (none of its objects exist otherwise):
    keeps fractions, decimal and datetime out of every sandbox's start-up."""
    return getattr(sys.modules.get(module), name, None)


def _is_enum(t):
    return any(getattr(c, "__module__", "") == "enum" for c in t.__mro__[1:])


def _ref_or_raise(x, make_ref):
    if make_ref is None:
        raise Unencodable(f"a {type(x).__name__} cannot be sent to the program")
    return make_ref(x)


_FACTORIES = (int, list, set, dict, str, float, tuple, frozenset)
_FACTORY_BY_NAME = {f.__name__: f for f in _FACTORIES}
_NT_CACHE = {}


def decode(v, resolve, depth=0):
    """JSON structure -> value; resolve(dict) turns {"$ref"/"$mod"/"$fn": ...} into an object."""
    if depth > MAX_DEPTH + 2:
        raise ValueError("value nested too deeply")
    t = type(v)
    if v is None or t in (bool, int, float, str):
        return v
    d = lambda w: decode(w, resolve, depth + 1)  # noqa: E731
    if t is list:
        return [d(w) for w in v]
    if t is not dict or len(v) == 0:
        raise ValueError("malformed value")
    if "$i" in v:
        return int(v["$i"], 16)
    if "$t" in v:
        return tuple(d(w) for w in v["$t"])
    if "$d" in v:
        cls = v.get("c", "")
        if cls == "Counter":
            out = collections.Counter()
        elif cls == "OrderedDict":
            out = collections.OrderedDict()
        elif isinstance(cls, str) and cls.startswith("defaultdict:"):
            out = collections.defaultdict(_FACTORY_BY_NAME.get(cls.split(":", 1)[1]))
        else:
            out = {}
        for k, w in v["$d"]:
            out[d(k)] = d(w)
        return out
    if "$s" in v:
        return {d(w) for w in v["$s"]}
    if "$fs" in v:
        return frozenset(d(w) for w in v["$fs"])
    if "$b" in v:
        return bytes.fromhex(v["$b"])
    if "$ba" in v:
        return bytearray.fromhex(v["$ba"])
    if "$c" in v:
        return complex(float(v["$c"][0]), float(v["$c"][1]))
    if "$fr" in v:
        from fractions import Fraction

        return Fraction(d(v["$fr"][0]), d(v["$fr"][1]))
    if "$dec" in v:
        from decimal import Decimal

        return Decimal(str(v["$dec"]))
    if "$r" in v:
        return range(*(d(w) for w in v["$r"]))
    if "$dq" in v:
        items, maxlen = v["$dq"]
        return collections.deque((d(w) for w in items), maxlen if type(maxlen) is int else None)
    if "$dt" in v:
        import datetime

        kind, args = v["$dt"]
        cls = {"timedelta": datetime.timedelta, "datetime": datetime.datetime, "date": datetime.date,
               "time": datetime.time}[kind]
        return cls(*[int(a) for a in args])
    if "$nt" in v:
        name, fields, vals = v["$nt"]
        key = (str(name), tuple(str(f) for f in fields))
        cls = _NT_CACHE.get(key)
        if cls is None:
            try:
                cls = collections.namedtuple(key[0], key[1])
            except ValueError:
                cls = collections.namedtuple("Record", key[1], rename=True)
            _NT_CACHE[key] = cls
        return cls(*[d(w) for w in vals])
    if "$ref" in v or "$mod" in v or "$fn" in v:
        return resolve(v)
    raise ValueError("malformed value")


def dumps(msg):
    return (json.dumps(msg, separators=(",", ":"), allow_nan=True) + "\n").encode("utf-8")


def loads(line):
    return json.loads(line)
