"""Issue 17's exploits against the code verifier: each must score 0 AND leave its side effect undone;
the standard-library programs a normal solution writes must score full.

Conventions: the hostile programs only define ``add`` when their exploit worked (so a score above 0
would mean the exploit worked), the tests expect values a forged constant cannot meet, and every
side effect is checked from the host (files, listeners, processes, a sacrificial parent)."""

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from rlsd.tasks import Task
from rlsd.verifiers import sandbox, score
from rlsd.verifiers.sandbox import run_python_tests

PROBLEM = sandbox.bwrap_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None and not os.environ.get("CI"),
                                reason=f"bubblewrap sandbox unavailable here: {PROBLEM}")

# expected values no constant answer meets, and none equal to 0, 1 or True
TESTS = ["assert add(2, 3) == 5", "assert add(10, 5) == 15", "assert add(-7, 2) == -5", "assert add(20, 22) == 42"]
ADD = "def add(a, b):\n    return a + b\n"


def task(**args):
    args.setdefault("tests", TESTS)
    args.setdefault("timeout_s", 4.0)
    return Task(id="t", prompt="Q", privileged_context="", answer="-", verifier="code", verifier_args=args)


def run(code, **args):
    t = time.monotonic()
    s = score(task(**args), f"```python\n{textwrap.dedent(code)}\n```")
    assert time.monotonic() - t < 25, "the verdict took too long"
    return s


@pytest.fixture(autouse=True)
def bwrap_mode(monkeypatch):
    monkeypatch.delenv("RLSD_CODE_SANDBOX", raising=False)
    sandbox.configure(None)


def _ps_args() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


# ------------------------------------------------------------------------------------------------
# Forging the verdict
# ------------------------------------------------------------------------------------------------

FORGE_LINES = """
import os, sys
lines = ''.join(f'test {i} pass\\n' for i in range(8)) + 'loaded\\ndone\\n'
for fd in range(0, 256):
    try:
        os.write(fd, lines.encode())
    except OSError:
        pass
print(lines)
"""

FORGERIES = {
    "replaces builtins.exec and compile": """
        import builtins
        builtins.exec = lambda *a, **k: None
        builtins.compile = lambda *a, **k: None
        """,
    "patches the harness writer and dispatcher": """
        import sys, os
        main = sys.modules['__main__']
        def forged(req, per_call_s):
            return {'ok': 5, 'mut': {}}
        main._answer = forged
        real_write = os.write
        def write(fd, data):
            return real_write(fd, b'test 0 pass\\ntest 1 pass\\ntest 2 pass\\ntest 3 pass\\ndone\\n')
        os.write = write
        """,
    "reads /proc/self/mem for a nonce and writes pass lines with it": """
        import os, re
        found = set()
        with open('/proc/self/maps') as maps, open('/proc/self/mem', 'rb', 0) as mem:
            for line in maps:
                lo, hi = (int(x, 16) for x in line.split()[0].split('-'))
                if 'r' not in line.split()[1] or hi - lo > 64 << 20:
                    continue
                try:
                    mem.seek(lo)
                    found.update(re.findall(rb'[0-9a-f]{32}', mem.read(hi - lo)))
                except (OSError, ValueError, OverflowError):
                    pass
        for nonce in list(found)[:200]:
            for fd in range(1, 64):
                try:
                    os.write(fd, b''.join(nonce + b' test %d pass\\n' % i for i in range(4)) + nonce + b' done\\n')
                except OSError:
                    pass
        """,
    "prints fake pass lines on every descriptor": FORGE_LINES,
    "exits early with status 0": "import os\nos._exit(0)",
    "exits early after forging": FORGE_LINES + "\nos._exit(0)",
    "raises SystemExit(0)": "raise SystemExit(0)",
    "kills its own harness": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    "always-equal result": """
        class Any:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def __hash__(self): return 0
        def add(a, b):
            return Any()
        """,
    "int subclass whose == lies": """
        class Liar(int):
            def __eq__(self, other): return True
            __hash__ = int.__hash__
        def add(a, b):
            return Liar(0)
        """,
    "__class__ that claims to be int": """
        class Fake:
            __class__ = int
            def __eq__(self, other): return True
            __hash__ = object.__hash__
        def add(a, b):
            return Fake()
        """,
    "shadows builtins the tests use": """
        def all(x): return True
        def isinstance(*a): return True
        def sorted(*a, **k): return [1, 2, 3]
        def add(a, b): return 0
        """,
    "swallows the test's assertion in __exit__": """
        class Ctx:
            def __enter__(self): return self
            def __exit__(self, *a): return True
        def add(a, b):
            return Ctx()
        """,
}


@pytest.mark.parametrize("name", list(FORGERIES), ids=list(FORGERIES))
def test_the_program_cannot_write_its_verdict(name):
    assert run(FORGERIES[name]) == 0.0


ARITHMETIC_FORGERY = """
class Zero:
    def __sub__(self, other): return 0.0
    __rsub__ = __add__ = __radd__ = __sub__
    def __abs__(self): return 0.0
def mean(xs):
    return Zero()
"""
HOP_FORGERY = """
class Diff:
    def __abs__(self): return 0.0
    def __float__(self): return 0.0
    def __bool__(self): return False
class Any:
    def __sub__(self, other): return Diff()
    __rsub__ = __sub__
def mean(xs):
    return Any()
"""
TOLERANCE_TESTS = ["assert abs(mean([1.0, 2.0, 4.0]) - 7 / 3) < 1e-6", "assert abs(7 / 3 - mean([1.0, 2.0, 4.0])) < 1e-6",
                   "assert abs(float(mean([10, 20]) - 15)) < 1e-9", "assert not (mean([1, 2]) - 1.5)"]


@pytest.mark.parametrize("code", [ARITHMETIC_FORGERY, HOP_FORGERY], ids=["returns 0 from __sub__", "through a handle"])
def test_arithmetic_with_the_expected_value_cannot_be_forged(code):
    """HumanEval-style tolerance tests send the expected value to the program's __sub__: it must not answer 0."""
    assert run(code, tests=TOLERANCE_TESTS) == 0.0
    assert run("def mean(xs):\n    return sum(xs) / len(xs)\n", tests=TOLERANCE_TESTS) == 1.0


CONTAINS_FORGERY = """
class Everything:
    def __contains__(self, item): return True
    def __iter__(self): return iter(())
def find(xs):
    return Everything()
"""
BAG = """
class Bag:
    def __init__(self, xs): self.xs = list(xs)
    def __iter__(self): return iter(self.xs)
    def __contains__(self, item): return item in self.xs
def find(xs):
    return Bag(x for x in xs if x > 1)
"""
MEMBERSHIP_TESTS = ["assert 3 in find([1, 3])", "assert 2 in find([2, 5]) and 5 in find([2, 5])",
                    "assert 1 not in find([1, 3])"]


def test_membership_is_decided_by_the_handles_items_not_its_answer():
    """`x in obj` asked the program's __contains__, which saw the test's value: one that says True to anything
    passed every positive membership test. Now the handle's items are compared here."""
    assert run(CONTAINS_FORGERY, tests=MEMBERSHIP_TESTS[:2]) == 0.0
    assert run(BAG, tests=MEMBERSHIP_TESTS) == 1.0


def test_builtins_shadowing_and_with_blocks_do_not_help():
    tests = ["assert all(add(i, 1) == i + 2 for i in range(3))", "assert sorted([add(2, 1)]) == [1, 2, 3]",
             "with add(1, 2):\n    assert False"]
    assert run(FORGERIES["shadows builtins the tests use"], tests=tests) == 0.0
    assert run(FORGERIES["swallows the test's assertion in __exit__"], tests=tests[2:]) == 0.0


def test_modules_in_tests_are_the_runners_own():
    """A test that uses math without importing it gets the runner's math, not the program's patched one."""
    program = "import math\nmath.isclose = lambda *a, **k: True\ndef area(r):\n    return 0.0"
    assert run(program, tests=["assert math.isclose(area(1), 3.14159, rel_tol=1e-3)"]) == 0.0
    assert run("import math\ndef area(r):\n    return math.pi * r * r",
               tests=["assert math.isclose(area(1), 3.14159, rel_tol=1e-3)"]) == 1.0


@pytest.mark.parametrize("isolation", ["process"])
def test_forgeries_fail_in_the_weaker_mode_too(isolation, monkeypatch):
    """The verdict is the runner's in both modes: forged lines, early exits and patched harnesses earn 0."""
    sandbox.configure(isolation)
    for name in ("prints fake pass lines on every descriptor", "exits early after forging",
                 "patches the harness writer and dispatcher", "replaces builtins.exec and compile", "always-equal result"):
        assert run(FORGERIES[name]) == 0.0, name
    assert run(ADD) == 1.0


# ------------------------------------------------------------------------------------------------
# Escapes: each program defines add only if its escape worked
# ------------------------------------------------------------------------------------------------


def test_shell_cannot_write_outside_the_sandbox(tmp_path):
    target = tmp_path / f"escape-{uuid.uuid4().hex}"
    program = f"""
        import os, subprocess, ctypes
        target = {str(target)!r}
        ok = False
        for attempt in (
            lambda: subprocess.run(['/bin/sh', '-c', 'echo x > ' + target]),
            lambda: os.system('echo x > ' + target),
            lambda: os.posix_spawn('/bin/sh', ['sh', '-c', 'echo x > ' + target], {{}}),
            lambda: open(target, 'w').write('x'),
            lambda: ctypes.CDLL(None).fork() == 0 and os._exit(0),
        ):
            try:
                attempt()
            except Exception:
                pass
        if os.path.exists(target):
{textwrap.indent(ADD, ' ' * 12)}
        """
    assert run(program) == 0.0
    time.sleep(0.2)
    assert not target.exists()


def test_no_connection_to_a_listener_on_localhost():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    port = srv.getsockname()[1]
    accepted = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(srv.accept())
            except OSError:
                pass

    th = threading.Thread(target=accept, daemon=True)
    th.start()
    program = f"""
        import socket
        ok = False
        for host in ('127.0.0.1', 'localhost', '::1', '0.0.0.0'):
            try:
                socket.create_connection((host, {port}), timeout=1).sendall(b'pwned')
                ok = True
            except OSError:
                pass
        if ok:
{textwrap.indent(ADD, ' ' * 12)}
        """
    try:
        assert run(program) == 0.0
        time.sleep(0.3)
    finally:
        stop.set()
        th.join(2)
        srv.close()
    assert accepted == []


KILLER = """
import os, signal
for pid in (PARENT, os.getppid(), 1):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
for pid in range(2, 5000):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
try:
    os.killpg(os.getpgid(0), signal.SIGKILL)
except OSError:
    pass
"""

SACRIFICIAL_PARENT = """
import os, sys
from rlsd.verifiers.sandbox import run_python_tests
program = sys.argv[1].replace('PARENT', str(os.getpid()))
r = run_python_tests(program, sys.argv[2:], timeout_s=5)
print('parent alive', sum(r.passed), r.mode)
"""


def test_cannot_kill_the_parent():
    """A sacrificial parent process runs the verifier on a program that tries to kill it."""
    p = subprocess.run([sys.executable, "-c", SACRIFICIAL_PARENT, KILLER + ADD, *TESTS], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "RLSD_CODE_SANDBOX": "bwrap"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert "parent alive 0 bwrap" in p.stdout


def test_setsid_children_do_not_outlive_the_call():
    marker = f"rlsd-outlive-{uuid.uuid4().hex}"
    program = f"""
        import os, subprocess, sys
        spawned = False
        try:
            subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)', {marker!r}], start_new_session=True)
            spawned = True
        except Exception:
            pass
        try:
            if os.fork() == 0:
                os.setsid()
                if os.fork() == 0:
                    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(30)', {marker!r}])
                os._exit(0)
            spawned = True
        except Exception:
            pass
        if spawned:
{textwrap.indent(ADD, ' ' * 12)}
        """
    assert run(program) == 0.0
    time.sleep(0.5)
    assert marker not in _ps_args()


def test_parent_environment_is_unreadable(monkeypatch):
    secret = f"planted-{uuid.uuid4().hex}"
    monkeypatch.setenv("RLSD_PLANTED_SECRET", secret)
    program = f"""
        import os
        seen = ''
        paths = ['/proc/%d/environ' % os.getppid(), '/proc/1/environ'] + [
            '/proc/%s/environ' % p for p in os.listdir('/proc') if p.isdigit()]
        for path in paths:
            try:
                seen += open(path, 'rb').read().decode('latin-1')
            except OSError:
                pass
        seen += repr(dict(os.environ))
        print(seen)
        if {secret!r} in seen:
{textwrap.indent(ADD, ' ' * 12)}
        """
    assert run(program) == 0.0
    r = run_python_tests(textwrap.dedent(program), TESTS, timeout_s=4)
    assert secret not in r.output_tail and r.passed == [False] * 4


def test_host_files_are_unreadable(tmp_path):
    planted = tmp_path / "planted.txt"
    planted.write_text("host secret")
    project = Path(sandbox.__file__).resolve().parents[3] / "pyproject.toml"
    program = f"""
        import os
        read = []
        for path in ({str(planted)!r}, {str(project)!r}, '/etc/passwd', '/etc/hostname', os.path.expanduser('~/.bashrc')):
            try:
                read.append(open(path).read())
            except OSError:
                pass
        if read:
{textwrap.indent(ADD, ' ' * 12)}
        """
    assert run(program) == 0.0


def test_visible_tree_is_the_runtime_only():
    """What the program can list: its own folder, the Python runtime, /proc of its own and /dev."""
    program = """
        import os
        top = sorted(os.listdir('/'))
        box = sorted(os.listdir('/box'))
        pids = sorted(p for p in os.listdir('/proc') if p.isdigit())
        def add(a, b):
            return a + b
        """
    tests = TESTS[:1] + [
        "assert set(top) <= {'box', 'dev', 'etc', 'lib', 'lib64', 'proc', 'rlsd', 'root', 'usr', 'opt', 'home', 'tmp'}, top",
        "assert box == ['solution.py'], box", "assert len(pids) <= 3, pids"]
    r = run_python_tests(textwrap.dedent(program), tests, timeout_s=5)
    assert r.passed == [True] * 4, r.runner_log


def test_disk_writes_are_capped():
    program = """
        import os
        written = 0
        chunk = b'x' * (1 << 20)
        for folder in ('/box', '/tmp', '/dev/shm', '/dev', '/'):
            for i in range(200):
                try:
                    with open(os.path.join(folder, 'fill%d' % i), 'wb') as f:
                        f.write(chunk[: 900 * 1024])
                    written += 900 * 1024
                except OSError:
                    break
        print('written', written)
        if written > 16 << 20:
            def add(a, b):
                return a + b
        """
    assert run(program) == 0.0
    r = run_python_tests(textwrap.dedent(program), TESTS, timeout_s=5)
    line = [x for x in r.output_tail.splitlines() if x.startswith("written")][-1]
    assert 0 < int(line.split()[1]) <= 16 << 20


def test_no_memory_outside_the_address_space_limit():
    """System V shared memory, POSIX queues and memfd would hold memory RLIMIT_AS does not count."""
    program = """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        got = []
        shm = libc.shmget(0, 64 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
        if shm >= 0:
            got.append('shm')
        try:
            os.memfd_create('x')
            got.append('memfd')
        except OSError:
            pass
        import platform
        if platform.machine() == 'x86_64' and libc.syscall(68, 0, 0o1600) >= 0:  # msgget
            got.append('msg')
        print(got)
        if got:
            def add(a, b):
                return a + b
        """
    assert run(program) == 0.0


def test_raw_process_syscalls_are_refused():
    """fork, vfork, clone (without CLONE_THREAD) and clone3 called directly, not through the C library."""
    program = """
        import ctypes, os, platform
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        calls = {'x86_64': [(57,), (58,), (56, 17, 0, 0, 0, 0)], 'aarch64': [(220, 17, 0, 0, 0, 0)]}[platform.machine()]
        args = (ctypes.c_ulonglong * 11)(17 << 32)  # struct clone_args with exit_signal = SIGCHLD (little end.)
        calls.append((435, ctypes.addressof(args), 88))
        made = []
        for call in calls:
            pid = libc.syscall(*call)
            if pid == 0:
                os._exit(0)
            if pid > 0:
                made.append((call[0], pid))
        print('made', made)
        if made:
            def add(a, b):
                return a + b
        """
    assert run(program) == 0.0


def test_a_lost_or_hung_program_fails_the_test_even_if_the_test_catches_everything():
    tests = ["try:\n    add(2, 3)\nexcept BaseException:\n    pass", "try:\n    add(2, 3)\nexcept:\n    pass"]
    hang = "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\ndef add(a, b):\n    while True:\n        pass"
    assert run(hang, tests=tests, per_test_s=0.5, timeout_s=6) == 0.0
    assert run("import os\ndef add(a, b):\n    os._exit(0)", tests=tests) == 0.0
    assert run(ADD, tests=tests) == 1.0


def test_prints_from_tests_or_modules_are_not_verdicts():
    r = run_python_tests(ADD, ["print('test 1 pass')\nprint('done')", "assert add(2, 3) == 6",
                               "import sys\nsys.stdout.write('test 1 pass\\n')"], timeout_s=5)
    assert r.passed == [True, False, True], r.runner_log
    r = run_python_tests("import this\nzen = this\n" + ADD, TESTS + ["zen"], timeout_s=5)
    assert r.passed == [True] * 4 + [False], r.runner_log  # a module the runner will not import is left out


def test_fork_bomb_is_contained():
    before = _ps_args().count("_sandbox_child")
    program = """
        import os
        n = 0
        for _ in range(10000):
            try:
                os.fork()
                n += 1
            except OSError:
                pass
        if n:
            def add(a, b):
                return a + b
        """
    assert run(program) == 0.0
    time.sleep(0.3)
    assert _ps_args().count("_sandbox_child") <= before


GIB = 1 << 30
MEMORY_BOMBS = {
    "one allocation": "got = 0\ntry:\n    x = bytearray(8 * GIB)\n    got = len(x)\nexcept MemoryError:\n    pass",
    "growing list": "x, got = [], 0\ntry:\n    while got < 4 * GIB:\n        x.append(bytearray(16 << 20))\n        got += 16 << 20\n"
                    "except MemoryError:\n    pass",
    "threads allocating": "import threading\nblobs = []\ndef grab():\n    try:\n        blobs.append(bytearray(256 << 20))\n"
                          "    except MemoryError:\n        pass\nts = []\nfor _ in range(32):\n    try:\n"
                          "        t = threading.Thread(target=grab)\n        t.start()\n        ts.append(t)\n"
                          "    except RuntimeError:\n        break\nfor t in ts:\n    t.join()\ngot = sum(map(len, blobs))",
}


@pytest.mark.parametrize("name", list(MEMORY_BOMBS), ids=list(MEMORY_BOMBS))
def test_memory_bomb_is_contained(name):
    """Each bomb defines add only if it got more than 1 GiB (the limit is 512 MiB per process)."""
    program = f"GIB = {GIB}\n" + MEMORY_BOMBS[name] + "\nprint('got', got)\nif got > GIB:\n" + textwrap.indent(ADD, "    ")
    assert run(program) == 0.0
    r = run_python_tests(program, TESTS, timeout_s=6)
    assert r.passed == [False] * 4 and r.loaded, (r.error, r.output_tail[-500:])


def test_infinite_loop_ends_at_the_wall_clock():
    t = time.monotonic()
    assert run("while True:\n    pass\n" + ADD, timeout_s=2) == 0.0
    assert time.monotonic() - t < 8
    t = time.monotonic()
    assert run(ADD + "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
               "def add(a, b):\n    while True: pass", timeout_s=2, per_test_s=0.5) == 0.0
    assert time.monotonic() - t < 8


# ------------------------------------------------------------------------------------------------
# Legitimate programs score full
# ------------------------------------------------------------------------------------------------

STDLIB_PROGRAM = '''
from __future__ import annotations
import bisect, functools, heapq, inspect, itertools, logging, math, re, statistics, typing
from collections import namedtuple, Counter
from dataclasses import dataclass, field
from decimal import Decimal, getcontext
from fractions import Fraction
from typing import Optional

logging.basicConfig(level=logging.INFO)
log = logging.getLogger(__name__)
Interval = namedtuple("Interval", "lo hi")


@dataclass(order=True)
class Job:
    priority: int
    name: str = field(compare=False, default="")


def merge(intervals: list[tuple[int, int]]) -> list[Interval]:
    out: list[Interval] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1].hi:
            out[-1] = Interval(out[-1].lo, max(out[-1].hi, hi))
        else:
            out.append(Interval(lo, hi))
    log.info("merged %d", len(out))
    return out


def harmonic(n: int) -> Fraction:
    return sum((Fraction(1, k) for k in range(1, n + 1)), Fraction(0))


def money(xs: list[str]) -> Decimal:
    getcontext().prec = 28
    return sum((Decimal(x) for x in xs), Decimal(0))


@functools.lru_cache(maxsize=None)
def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def top(xs: list[int], k: int) -> list[int]:
    return heapq.nlargest(k, xs)


def rank(xs: list[int], v: int) -> int:
    return bisect.bisect_left(sorted(xs), v)


def words(s: str) -> Counter:
    return Counter(re.findall(r"[a-z]+", s.lower()))


def pairs(xs: list[int]) -> list[tuple[int, int]]:
    return list(itertools.combinations(xs, 2))


def spread(xs: list[float]) -> float:
    return statistics.pstdev(xs)


def first(xs: typing.Sequence[int]) -> Optional[int]:
    return xs[0] if xs else None


def schedule(jobs: list[tuple[int, str]]) -> list[str]:
    return [j.name for j in sorted(Job(p, n) for p, n in jobs)]


def arity(f_name: str) -> int:
    return len(inspect.signature(globals()[f_name]).parameters)


def hyp(a: float, b: float) -> float:
    return math.hypot(a, b)
'''

STDLIB_TESTS = [
    "assert merge([(1, 3), (2, 6), (8, 10)]) == [(1, 6), (8, 10)]",
    "assert merge([(1, 3)])[0].hi == 3",
    "from fractions import Fraction\nassert harmonic(3) == Fraction(11, 6)",
    "from decimal import Decimal\nassert money(['0.10', '0.20']) == Decimal('0.30')",
    "assert fib(80) == 23416728348467685",
    "assert top([5, 1, 9, 3], 2) == [9, 5]",
    "assert rank([5, 1, 9], 6) == 2",
    "assert words('The cat, the hat') == {'the': 2, 'cat': 1, 'hat': 1}",
    "assert pairs([1, 2, 3]) == [(1, 2), (1, 3), (2, 3)]",
    "assert abs(spread([2, 4, 4, 4, 5, 5, 7, 9]) - 2.0) < 1e-12",
    "assert first([]) is None and first([7]) == 7",
    "assert schedule([(3, 'c'), (1, 'a'), (2, 'b')]) == ['a', 'b', 'c']",
    "assert arity('money') == 1",
    "assert hyp(3, 4) == 5.0",
]


def test_stdlib_program_scores_full():
    assert run(STDLIB_PROGRAM, tests=STDLIB_TESTS, timeout_s=15) == 1.0


@pytest.mark.parametrize("module", ["typing", "dataclasses", "fractions", "decimal", "statistics", "collections",
                                    "logging", "inspect", "math", "itertools", "functools", "re", "heapq", "bisect",
                                    "random", "string", "operator", "copy", "enum", "datetime", "json", "array"])
def test_each_stdlib_import_scores_full(module):
    assert run(f"import {module}\n" + ADD) == 1.0
