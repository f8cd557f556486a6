"""Bootstrap of the rlsd egress guard in Python child processes (see rlsd.perimeter).

Inside a guarded block the parent puts this folder first on PYTHONPATH and its guard's settings in
RLSD_EGRESS_CHILD; Python imports ``sitecustomize`` at start-up, so every Python child installs the same
audit hook and appends its attempts to the parent's shared log. Outside a block (no RLSD_EGRESS_CHILD)
this file does nothing. A child that cannot import rlsd says so on stderr and runs unguarded (its start
is already in the parent's log).
"""

import os

if os.environ.get("RLSD_EGRESS_CHILD"):
    try:
        from rlsd.perimeter import _child_bootstrap

        _child_bootstrap()
    except Exception as exc:  # noqa: BLE001 - never stop a child from starting; say why it is unguarded
        import sys

        print(f"rlsd perimeter: egress guard not installed in child {os.getpid()} ({type(exc).__name__}: {exc})",
              file=sys.stderr)
