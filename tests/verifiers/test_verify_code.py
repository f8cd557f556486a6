"""Python code answers: a table of ordinary and broken programs, the plain-data channel's semantics,
and the set-up checks (mode reporting, refusal without the sandbox). The exploits of issue 17 are in
test_code_adversarial.py."""

import os
import time

import pytest

from rlsd.tasks import Task
from rlsd.verifiers import sandbox, score
from rlsd.verifiers.sandbox import CodeSandboxUnavailable, run_python_tests

TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15", "assert add(0, 0) == 0"]
PROBLEM = sandbox.bwrap_problem()
# In CI bubblewrap is installed by scripts/setup.sh: a missing sandbox there is a failure, not a skip.
requires_bwrap = pytest.mark.skipif(PROBLEM is not None and not os.environ.get("CI"),
                                    reason=f"bubblewrap sandbox unavailable here: {PROBLEM}")


def task(**args):
    args.setdefault("tests", TESTS)
    args.setdefault("timeout_s", 3.0)
    return Task(id="t", prompt="Q", privileged_context="", answer="-", verifier="code", verifier_args=args)


def fence(code):
    return f"Here is my solution:\n```python\n{code}\n```\n"


CASES = [
    ("correct", fence("def add(a, b):\n    return a + b"), {}, 1.0),
    ("half right", fence("def add(a, b):\n    return abs(a) + b"), {}, 0.75),
    ("half right, all or nothing", fence("def add(a, b):\n    return abs(a) + b"), {"all_or_nothing": True}, 0.0),
    ("answer tag", "<answer>def add(a, b): return a + b</answer>", {}, 1.0),
    ("wrong", fence("def add(a, b):\n    return a - b"), {}, 0.25),  # add(0, 0) still passes
    ("syntax error", fence("def add(a, b) return a + b"), {}, 0.0),
    ("raises on load", fence("raise SystemExit(0)"), {}, 0.0),
    ("no code", "I don't know.", {}, 0.0),
    ("empty", "", {}, 0.0),
    ("one test loops", fence("def add(a, b):\n    while a == 10: pass\n    return a + b"), {"per_test_s": 1.0}, 0.75),
    ("sleeps", fence("import time\ntime.sleep(60)"), {}, 0.0),
    ("writes inside its folder", fence("open('scratch.txt', 'w').write('ok')\ndef add(a, b): return a + b"), {}, 1.0),
    ("threads", fence("import threading\nout = []\nts = [threading.Thread(target=out.append, args=(i,)) for i in range(4)]\n"
                      "[t.start() for t in ts]\n[t.join() for t in ts]\nassert len(out) == 4\ndef add(a, b): return a + b"), {}, 1.0),
    ("prints a lot", fence("for i in range(10000): print(i)\ndef add(a, b): return a + b"), {}, 1.0),
    ("huge completion", fence("def add(a, b):\n    return a + b") + "x" * 10_000_000, {}, 1.0),
    ("returns a float", fence("def add(a, b):\n    return float(a + b)"), {}, 1.0),  # 3.0 == 3 in Python
    ("returns a string", fence("def add(a, b):\n    return str(a + b)"), {}, 0.0),
    ("raises in the call", fence("def add(a, b):\n    raise ValueError('no')"), {}, 0.0),
]


@requires_bwrap
@pytest.mark.parametrize("name, completion, args, expected", CASES, ids=[c[0] for c in CASES])
def test_code_table(name, completion, args, expected):
    t = time.monotonic()
    assert score(task(**args), completion) == pytest.approx(expected)
    assert time.monotonic() - t < 20


def test_no_tests_cannot_be_verified():
    t = Task(id="t", prompt="Q", privileged_context="", answer="-", verifier="code", verifier_args={})
    assert score(t, fence("def add(a, b): return a + b")) is None


PROGRAM = '''
from collections import Counter, OrderedDict, defaultdict, deque, namedtuple
from fractions import Fraction
import datetime, enum

Point = namedtuple("Point", "x y")
LIMIT = 7
TABLE = {"a": [1, 2], (1, 2): {3}}

def ident(x):
    return x

def sort_in_place(xs):
    xs.sort()

def fill(d):
    d["k"] = 1

def counts(s):
    return Counter(s)

def apply(f, x):
    return f(x)

def gen(n):
    for i in range(n):
        yield i * i

class Account:
    def __init__(self, balance=0):
        self.balance = balance
    def deposit(self, x):
        if x <= 0:
            raise ValueError("positive amounts only")
        self.balance += x
        return self
    def __eq__(self, other):
        return isinstance(other, Account) and other.balance == self.balance
    def __hash__(self):
        return hash(self.balance)
    def __len__(self):
        return self.balance
    def __iter__(self):
        return iter(range(self.balance))
    def __add__(self, other):
        return Account(self.balance + other.balance)
    def __mul__(self, k):
        return Account(self.balance * k)
    __rmul__ = __mul__

class Overdrawn(Exception):
    pass

def withdraw(acct, x):
    if x > acct.balance:
        raise Overdrawn(str(x))
    acct.balance -= x

class Color(enum.Enum):
    RED = 1
    BLUE = 2

def red():
    return Color.RED
'''

CHANNEL_TESTS = [
    # plain data crosses as the runner's own types, compared with Python's own ==
    "for v in [0, -5, 2**100, -2**70, 1.5, float('inf'), 'x', b'\\x00', bytearray(b'ab'), None, True, (1, [2]), {1: 'a'},"
    " {1, 2}, frozenset({3}), 1 + 2j, Fraction(1, 3), range(2, 9, 3)]:\n    r = ident(v)\n    assert r == v and type(r) is type(v), (v, r)",
    "import math\nassert math.isnan(ident(float('nan')))",
    "from decimal import Decimal\nassert ident(Decimal('1.10')) == Decimal('1.10') and str(ident(Decimal('1.10'))) == '1.10'",
    "import datetime\nd = datetime.datetime(2024, 1, 2, 3, 4, 5)\nassert ident(d) == d and ident(d.date()) == d.date()",
    "from collections import deque\nassert ident(deque([1, 2], maxlen=3)) == deque([1, 2], maxlen=3)",
    "assert LIMIT == 7 and TABLE == {'a': [1, 2], (1, 2): {3}}",
    "p = Point(1, 2)\nassert p == (1, 2) and p.x == 1 and p._asdict() == {'x': 1, 'y': 2}",
    "assert counts('abca') == {'a': 2, 'b': 1, 'c': 1}\nassert counts('abca').most_common(1) == [('a', 2)]",
    # arguments are updated in place after the call
    "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]",
    "d = {}\nfill(d)\nassert d == {'k': 1}",
    # standard-library functions can be passed; handles support calls, attributes, operators, iteration
    "assert apply(len, 'abc') == 3 and apply(str.upper, 'a') == 'A'",
    "assert list(gen(4)) == [0, 1, 4, 9] and sum(gen(3)) == 5",
    "import itertools\nassert list(itertools.islice(gen(10**9), 3)) == [0, 1, 4]",
    "a = Account(5)\na.deposit(2).deposit(1)\nassert a.balance == 8 and len(a) == 8 and list(a)[:2] == [0, 1]",
    "assert Account(3) == Account(3) and Account(3) != Account(4)",
    "assert isinstance(Account(1), Account) and not isinstance(5, Account)",
    "a = Account()\ntry:\n    a.deposit(-1)\n    raise AssertionError('no error')\nexcept ValueError as e:\n    assert 'positive' in str(e)",
    "a = Account(1)\ntry:\n    withdraw(a, 5)\n    raise AssertionError('no error')\nexcept Overdrawn:\n    pass",
    "assert red() == Color.RED and red() != Color.BLUE and red().value == 1",
    # a program's objects with operators: with each other, and with a test's value when the result is its own
    "assert Account(2) + Account(3) == Account(5) and Account(2) * 3 == Account(6) and 3 * Account(2) == Account(6)",
    "assert sum([Account(1), Account(2)], Account(0)) == Account(3) and (Account(1) + Account(2)).balance == 3",
]


@requires_bwrap
def test_plain_data_channel_semantics():
    r = run_python_tests(PROGRAM, CHANNEL_TESTS, timeout_s=15)
    assert r.passed == [True] * len(CHANNEL_TESTS), r.runner_log


@requires_bwrap
def test_what_does_not_cross():
    """Lambdas of the test cannot be sent; a handle never equals a value of the test's own."""
    r = run_python_tests(PROGRAM, ["apply(lambda x: x, 1)", "assert Account(1) == 1", "assert Account(1) < Account(2)",
                                   "assert red() == 1", "assert (Account(2) * 3).balance == 6"], timeout_s=10)
    assert r.passed == [False] * 5, r.runner_log


@requires_bwrap
def test_environment_is_scrubbed():
    code = "import os, sys\nENV = dict(os.environ)\nCWD = os.getcwd()\nISOLATED = sys.flags.isolated\nopen('f.txt', 'w').write('x')"
    tests = ["assert set(ENV) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'PWD'}, ENV", "assert ISOLATED == 1",
             "assert CWD == '/box'"]
    r = run_python_tests(code, tests, timeout_s=5)
    assert r.passed == [True] * 3, r.runner_log
    assert r.mode == "bwrap" and r.enforced["mode"] == "bwrap" and r.enforced["memory_mb"] == 512


@requires_bwrap
def test_each_result_says_which_mode_ran(monkeypatch):
    monkeypatch.delenv("RLSD_CODE_SANDBOX", raising=False)
    sandbox.configure(None)
    before = sandbox.sandbox_stats()
    r = run_python_tests("def add(a, b): return a + b", TESTS[:1], timeout_s=5)
    assert r.mode == "bwrap" and r.passed == [True]
    after = sandbox.sandbox_stats()
    assert after["code_sandbox_runs_bwrap"] == before["code_sandbox_runs_bwrap"] + 1
    assert after["code_sandbox_runs_process"] == before["code_sandbox_runs_process"]


@pytest.fixture
def no_bwrap(monkeypatch):
    """Simulate a host without the mechanism: the bwrap binary path points nowhere."""
    monkeypatch.setattr(sandbox, "BWRAP", "/nonexistent/bwrap")
    monkeypatch.delenv("RLSD_CODE_SANDBOX", raising=False)
    sandbox.configure(None)
    yield
    sandbox.configure(None)


def test_refuses_without_the_sandbox(no_bwrap):
    assert "not installed" in sandbox.bwrap_problem()
    with pytest.raises(CodeSandboxUnavailable, match="bubblewrap"):
        run_python_tests("def add(a, b): return a + b", TESTS)
    # through the public verifier too: a refusal is raised, not scored as 0 or None
    with pytest.raises(CodeSandboxUnavailable):
        score(task(), fence("def add(a, b): return a + b"))


def test_weaker_mode_only_when_explicitly_allowed(no_bwrap, monkeypatch):
    sandbox.configure("process")
    before = sandbox.sandbox_stats()["code_sandbox_runs_process"]
    r = run_python_tests("def add(a, b): return a + b", TESTS, timeout_s=5)
    assert r.passed == [True] * 4 and r.mode == "process" and r.enforced["mode"] == "process"
    assert sandbox.sandbox_stats()["code_sandbox_runs_process"] == before + 1
    assert score(task(), fence("def add(a, b): return a + b")) == 1.0
    # the recipe's setting reaches the verifier through load_config
    from rlsd.config import ConfigError, load_config

    sandbox.configure(None)
    load_config(text="platform: {code_sandbox: process}")
    assert sandbox.configured_mode() == "process"
    assert run_python_tests("def add(a, b): return a + b", TESTS[:1], timeout_s=5).mode == "process"
    load_config(text="{}")
    assert sandbox.configured_mode() == "bwrap"
    with pytest.raises(CodeSandboxUnavailable):
        run_python_tests("def add(a, b): return a + b", TESTS[:1])
    with pytest.raises(ConfigError, match="code_sandbox"):
        load_config(text="platform: {code_sandbox: none}")
    with pytest.raises(ValueError):
        run_python_tests("x = 1", ["pass"], isolation="auto")  # no silent fallback mode


def test_bwrap_that_does_not_work_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox, "BWRAP", str(fake))
    monkeypatch.delenv("RLSD_CODE_SANDBOX", raising=False)
    sandbox.configure(None)
    assert "does not work here" in sandbox.bwrap_problem()
    with pytest.raises(CodeSandboxUnavailable, match="Permission denied"):
        run_python_tests("def add(a, b): return a + b", TESTS)


@requires_bwrap
def test_a_broken_sandbox_is_no_verdict(monkeypatch, tmp_path):
    """When the runner itself never reports, the score is None (cannot verify), not a 0 for the program."""
    import shutil

    for f in ("_sandbox_child.py", "_sandbox_wire.py", "_sandbox_guards.py"):
        shutil.copy(sandbox._HERE / f, tmp_path / f)
    (tmp_path / "_sandbox_runner.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.setattr(sandbox, "_HERE", tmp_path)
    r = run_python_tests("def add(a, b): return a + b", TESTS, timeout_s=5)
    assert r.sandbox_failed and r.passed == [False] * 4
    assert score(task(), fence("def add(a, b): return a + b")) is None


def test_seccomp_filter_layout():
    """Hand-assembled BPF: 8-byte instructions, every jump inside the program, ends in returns."""
    import struct

    for machine in ("x86_64", "aarch64"):
        prog = sandbox.seccomp_filter(machine)
        assert len(prog) % 8 == 0
        ins = [struct.unpack("=HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
        for i, (code, jt, jf, _) in enumerate(ins):
            if code & 0x07 == 0x05:  # BPF_JMP
                assert i + 1 + max(jt, jf) < len(ins)
        assert ins[-1][0] == 0x06 and ins[-2][0] == 0x06
