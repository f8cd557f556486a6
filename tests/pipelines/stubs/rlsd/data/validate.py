import json
import os

from rlsd._record import record


def validate(cfg, *, snapshot="latest", out_dir):
    record("validate", snapshot=snapshot, out_dir=out_dir)
    for name, text in [("report.json", json.dumps({"passed": True})), ("report.md", "# valid\n"),
                       ("report.html", "<h1>valid</h1>")]:
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text)
    return {"failure_rate": 0.0, "rows": 3}
