import json
import os

from rlsd._record import record


def validate(cfg, *, snapshot="latest", out_dir):
    record("validate", snapshot=snapshot, out_dir=out_dir)
    with open(os.path.join(out_dir, "validation.json"), "w") as f:
        json.dump({"failure_rate": 0.0}, f)
    return {"failure_rate": 0.0, "rows": 3}
