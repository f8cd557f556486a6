"""Per-step overhead of kfp.local's SubprocessRunner(use_venv=False): what the local pipeline run pays
for running every step as its own subprocess, before any rlsd work.

A chain of N no-op lightweight components (each imports rlsd.perimeter and enters the same
``step()`` context the real components use) is run through kfp.local, compiled first, exactly as
``rlsd.pipeline_local.run_local`` runs the real pipeline. Writes benchmarks/results/kfp_local_overhead.json.

    PYTHONPATH=src:. OMP_NUM_THREADS=1 python benchmarks/kfp_local_overhead.py --steps 10 --repeats 3
"""

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from kfp import compiler, components, dsl, local
from kfp.dsl import Artifact, Output


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def noop(x: int, connections: Output[Artifact]) -> int:
    from rlsd.perimeter import step

    with step("{}", {}, log_path=connections.path):
        pass
    return x + 1


def chain(n: int):
    @dsl.pipeline(name="overhead")
    def p(x: int = 0):
        t = noop(x=x)
        for _ in range(n - 1):
            t = noop(x=t.outputs["Output"])
    return p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        yaml_path = Path(tmp) / "p.yaml"
        compiler.Compiler().compile(chain(args.steps), str(yaml_path))
        pipeline = components.load_component_from_file(str(yaml_path))
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=tmp)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            pipeline(x=0)
            times.append(time.perf_counter() - t0)
    per_step = statistics.median(times) / args.steps
    result = {"steps": args.steps, "repeats": args.repeats, "pipeline_seconds": [round(t, 3) for t in times],
              "median_seconds_per_step": round(per_step, 3), "python": platform.python_version(),
              "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores"}
    out = Path(__file__).parent / "results" / "kfp_local_overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
