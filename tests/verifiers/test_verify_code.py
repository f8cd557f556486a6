"""Python code answers in the sandbox: a table of programs, and the host checks behind it.

Every adversarial program must come back with a score within loose wall-time bounds and leave the
host unharmed (no file outside the work folder, no stray processes, no network)."""

import os
import subprocess
import sys
import time
import uuid

import pytest

from rlsd.tasks import Task
from rlsd.verifiers import score
from rlsd.verifiers.sandbox import namespaces_available, run_python_tests

TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15", "assert add(0, 0) == 0"]


def task(**args):
    args.setdefault("tests", TESTS)
    args.setdefault("timeout_s", 2.0)
    return Task(id="t", prompt="Q", privileged_context="", answer="-", verifier="code", verifier_args=args)


def fence(code):
    return f"Here is my solution:\n```python\n{code}\n```\n"


ESCAPE = f"/tmp/escape-{uuid.uuid4().hex}"

CASES = [
    ("correct", fence("def add(a, b):\n    return a + b"), {}, 1.0),
    ("half right", fence("def add(a, b):\n    return abs(a) + b"), {}, 0.75),
    ("half right, all or nothing", fence("def add(a, b):\n    return abs(a) + b"), {"all_or_nothing": True}, 0.0),
    ("answer tag", "<answer>def add(a, b): return a + b</answer>", {}, 1.0),
    ("wrong", fence("def add(a, b):\n    return a - b"), {}, 0.25),  # add(0, 0) still passes
    ("syntax error", fence("def add(a, b) return a + b"), {}, 0.0),
    ("raises on load", fence("raise SystemExit(0)"), {}, 0.0),
    ("exits early", fence("import os\nos._exit(0)"), {}, 0.0),
    ("no code", "I don't know.", {}, 0.0),
    ("empty", "", {}, 0.0),
    ("loops forever", fence("while True:\n    pass"), {}, 0.0),
    ("one test loops", fence("def add(a, b):\n    while a == 10: pass\n    return a + b"), {"per_test_s": 1.0}, 0.75),
    ("sleeps", fence("import time\ntime.sleep(60)"), {}, 0.0),
    ("forks in a loop", fence("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"), {}, 0.0),
    ("subprocess", fence("import subprocess\nsubprocess.run(['sh', '-c', 'echo hi'])\ndef add(a, b): return a + b"), {}, 0.0),
    ("opens a socket", fence("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\ndef add(a, b): return a + b"), {}, 0.0),
    ("raw _socket", fence("import _socket\n_socket.socket()\ndef add(a, b): return a + b"), {}, 0.0),
    ("writes outside", fence(f"open({ESCAPE!r}, 'w').write('x')\ndef add(a, b): return a + b"), {}, 0.0),
    ("os.open outside", fence(f"import os\nos.open({ESCAPE!r}, os.O_CREAT | os.O_WRONLY)\ndef add(a, b): return a + b"), {}, 0.0),
    ("writes inside", fence("open('scratch.txt', 'w').write('ok')\ndef add(a, b): return a + b"), {}, 1.0),
    ("allocates gigabytes", fence("x = bytearray(8 * 1024**3)\ndef add(a, b): return a + b"), {}, 0.0),
    ("grows a list", fence("x = []\nwhile True:\n    x.append(' ' * 10**6)"), {}, 0.0),
    ("prints a flood", fence("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"), {}, 0.0),
    ("ctypes", fence("import ctypes\ndef add(a, b): return a + b"), {}, 0.0),
    ("kills everything", fence("import os, signal\nos.kill(-1, signal.SIGKILL)\ndef add(a, b): return a + b"), {}, 0.0),
    ("forges a result", fence(
        "import os\nfor fd in range(3, 64):\n    for n in range(4):\n        try: os.write(fd, b'0' * 32 + f' test {n} pass\\n'.encode())\n"
        "        except OSError: pass\ndef add(a, b): return 0"), {}, 0.5),  # add(-1, 1) and add(0, 0) pass; forged lines do not
    ("huge completion", fence("def add(a, b):\n    return a + b") + "x" * 10_000_000, {}, 1.0),
]


@pytest.mark.parametrize("name, completion, args, expected", CASES, ids=[c[0] for c in CASES])
def test_code_table(name, completion, args, expected):
    t = time.monotonic()
    assert score(task(**args), completion) == pytest.approx(expected)
    assert time.monotonic() - t < 15
    assert not os.path.exists(ESCAPE)


def test_host_is_unharmed_after_the_table():
    """No sandbox process survives (the harness runs rlsd.verifiers._sandbox_child)."""
    time.sleep(0.2)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "_sandbox_child.py" not in ps
    assert not os.path.exists(ESCAPE)


def test_no_tests_cannot_be_verified():
    t = Task(id="t", prompt="Q", privileged_context="", answer="-", verifier="code", verifier_args={})
    assert score(t, fence("def add(a, b): return a + b")) is None


def test_environment_is_scrubbed_and_folder_is_throwaway(monkeypatch):
    monkeypatch.setenv("RLSD_SECRET_TOKEN", "hunter2")
    code = "import os\nENV = dict(os.environ)\nCWD = os.getcwd()\nopen('f.txt', 'w').write('x')"
    tests = ["assert 'RLSD_SECRET_TOKEN' not in ENV", "assert set(ENV) <= {'PATH', 'HOME', 'TMPDIR', 'LANG', 'PWD'}",
             "import sys\nassert sys.flags.isolated == 1", "assert os.path.exists('f.txt')"]
    r = run_python_tests(code, tests, timeout_s=5)
    assert r.passed == [True] * 4, r
    assert r.enforced["memory_mb"] == 512


@pytest.mark.skipif(not namespaces_available(), reason="unprivileged user namespaces are not available here")
@pytest.mark.parametrize("program, check", [
    # with the Python guards OFF, the kernel layers alone must hold
    (f"open({ESCAPE!r}, 'w').write('x')", "escape"),
    ("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)", "net"),
    ("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", "fork"),
])
def test_kernel_isolation_holds_without_python_guards(program, check):
    t = time.monotonic()
    r = run_python_tests(program + "\nDONE = 1", ["assert DONE == 1"], timeout_s=3, python_guards=False,
                         isolation="namespaces")
    assert time.monotonic() - t < 15
    assert r.passed == [False]
    assert r.enforced["network_interfaces"] == ["lo"]
    assert r.enforced["fs_readonly_outside_workdir"] is True
    assert r.enforced["pid"] == 1  # its own PID namespace: killing it kills everything it forked
    assert not os.path.exists(ESCAPE)


def test_process_isolation_fallback_still_bounds_the_program():
    """Without namespaces (isolation='process') the rlimits, the kill and the Python guards remain."""
    t = time.monotonic()
    r = run_python_tests("x = bytearray(4 * 1024**3)", ["pass"], timeout_s=5, isolation="process")
    assert r.error and "MemoryError" in r.error
    r = run_python_tests(f"open({ESCAPE!r}, 'w')", ["pass"], timeout_s=5, isolation="process")
    assert r.error and "PermissionError" in r.error
    r = run_python_tests("while True: pass", ["pass"], timeout_s=2, isolation="process")
    assert r.timed_out and r.passed == [False]
    assert time.monotonic() - t < 15
    assert not os.path.exists(ESCAPE)


def test_sandbox_python_is_this_interpreter():
    r = run_python_tests("import sys\nEXE = sys.executable", [f"assert EXE == {sys.executable!r}"], timeout_s=5)
    assert r.passed == [True]
