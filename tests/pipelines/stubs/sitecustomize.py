"""Test-only: put these stand-in rlsd step modules ahead of the real ones in every kfp.local subprocess.

tests/pipelines/test_pipeline.py adds this folder to PYTHONPATH so that the real compiled
pipeline runs end to end through kfp.local with fast stand-ins for the heavy steps. Each stand-in
records its call in $RLSD_STUB_LOG (one JSON line) and writes the files the real step writes.
"""

import os

if os.environ.get("RLSD_STUB_LOG"):
    import rlsd

    rlsd.__path__.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "rlsd"))
