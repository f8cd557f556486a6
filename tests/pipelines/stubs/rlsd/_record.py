import json
import os


def record(step, **fields):
    with open(os.environ["RLSD_STUB_LOG"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, "pid": os.getpid(), **fields}) + "\n")
