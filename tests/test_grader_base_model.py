"""A free-text grader with ``model: base`` on the path pipeline users take: the base model lives only in the store
(``model.path: store://models/<name>``), and ingest, build-tasks, grade, evaluate and train each run in their own
empty folder, as pods do. Before, the recipe failed to load in the first step (``base`` was replaced by the
reference, which is not a folder), and a task file carried the folder path of the pod that built it.

The invariant: every step that grades scores exactly what the same grader scores with an explicit folder
holding the store's model; the task files say ``base``; a step left without a copy fails naming it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rlsd import cli
from rlsd.config import load_config
from rlsd.model_refs import fetch_model, import_model
from rlsd.tasks import read_tasks
from rlsd.verifiers import graders as G
from tests.helpers import warm_tiny_model

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
EMBED = {"grader": "similarity", "metric": "embedding", "model": "base"}
GRADER = json.dumps({"grader": "mean", "of": ["token_f1", EMBED]})  # the model moves every score


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The store holding the base model (imported from a folder that is then deleted) and the recipe's overrides."""
    root = tmp_path_factory.mktemp("base-grader")
    store = root / "store"
    sets = [f"store.root={store}", "model.path=store://models/tiny", f"ingest.text_grader={GRADER}",
            "tracking.enabled=false"]
    src = root / "import-me"
    shutil.copytree(warm_tiny_model(), src)
    import_model(load_config(overrides=sets), src, "tiny")
    shutil.rmtree(src)  # the store's copy is the only one
    own = root / "own-copy"  # what the explicit-folder reference scores are computed with
    fetch_model(load_config(overrides=sets), "store://models/tiny", own)
    return root, sets, own


def _pod(root: Path, name: str, monkeypatch) -> Path:
    d = root / name
    d.mkdir()
    monkeypatch.chdir(d)
    monkeypatch.delenv(G.BASE_ENV, raising=False)  # a new pod: nothing named by an earlier step
    return d


def _args(sets: list[str]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


@pytest.fixture(scope="module")
def built(world, tmp_path_factory):
    root, sets, _ = world
    mp = pytest.MonkeyPatch()
    try:
        _pod(root, "ingest", mp)
        assert cli.main(["ingest", "--manuals", str(SAMPLE / "manuals"), "--tickets", str(SAMPLE / "tickets"),
                         *_args(sets)]) == 0
        tasks = _pod(root, "build", mp) / "tasks"
        assert cli.main(["build-tasks", "--output", str(tasks), *_args(sets)]) == 0
        assert G.BASE_ENV not in __import__("os").environ  # the fetched copy was for the block only
    finally:
        mp.undo()
    return tasks


def test_task_files_say_base_not_a_pod_folder(built):
    text = [t for f in ("train.jsonl", "eval.jsonl") for t in read_tasks(built / f) if t.verifier == "text"]
    assert len(text) >= 5
    f1 = {"grader": "similarity", "metric": "token_f1"}
    assert all(t.verifier_args["grader"] == {"grader": "mean", "of": [f1, EMBED]} for t in text)
    assert "build" not in (built / "train.jsonl").read_text()  # no path of the pod that built them


def test_the_build_tasks_component_writes_what_the_cli_wrote(built, world, monkeypatch):
    """The pipeline's component in its own empty folder: same checks (it fetches the base too), same files."""
    import yaml
    from components.build_tasks import build_tasks as component
    from kfp.dsl import Artifact, Dataset

    from rlsd.data.store import open_store

    root, sets, _ = world
    d = _pod(root, "component", monkeypatch)
    tree: dict = {}
    for s in sets:
        key, value = s.split("=", 1)
        section, field = key.split(".")
        tree.setdefault(section, {})[field] = yaml.safe_load(value)
    snap = open_store(load_config(overrides=sets).store).read_manifest("latest")["snapshot_id"]
    tasks = Dataset(name="tasks", uri=str(d / "tasks"), metadata={})
    component.python_func(config_yaml=yaml.safe_dump(tree), snapshot_id=snap, snapshot="latest", store_endpoint="",
                          store_bucket="", tasks=tasks, connections=Artifact(name="c", uri=str(d / "c"), metadata={}))
    assert tasks.metadata["counts"]["text_grader"]["tasks"] >= 5
    for f in ("train.jsonl", "eval.jsonl"):
        assert (d / "tasks" / f).read_bytes() == (built / f).read_bytes()


def test_grade_scores_with_the_stores_model(built, world, monkeypatch, capsys):
    """`rlsd grade` in another empty folder fetches the base and scores what an explicit folder scores."""
    root, sets, own = world
    d = _pod(root, "grade", monkeypatch)
    tasks = [t for t in read_tasks(built / "eval.jsonl") if t.verifier == "text"][:3]
    comp = d / "completions.jsonl"
    answers = ["Answer: the spooler was restarted", "Answer: " + tasks[1].answer.split(";")[0], "Answer: no idea"]
    comp.write_text("".join(json.dumps({"task_id": t.id, "completion": a}) + "\n" for t, a in zip(tasks, answers)))
    rc = cli.main(["grade", "--tasks", str(built / "eval.jsonl"), "--completions", str(comp), "--output", "out",
                   *_args(sets)])
    got = json.loads((d / "out" / "grade.json").read_text())["completions"]
    explicit = {"grader": "mean", "of": ["token_f1", {**EMBED, "model": str(own)}]}
    want = [G.grade(explicit, a, t) for t, a in zip(tasks, answers)]
    assert rc == 0 and [c["score"] for c in got] == pytest.approx(want, abs=1e-9)
    assert len(set(round(w, 6) for w in want)) == 3 and 0 < min(want)  # three different, model-dependent scores


@pytest.mark.parametrize("baseline", ["base", "a folder"])
def test_evaluate_grades_with_the_pinned_base(built, world, monkeypatch, baseline):
    """Compared with the base (fetched once for both uses) or with another model (a champion's or a given
    folder: the base is fetched for the graders alone)."""
    from rlsd.evaluate import evaluate_against_champion, run_evaluation

    root, sets, own = world
    _pod(root, "evaluate-" + baseline.replace(" ", "-"), monkeypatch)
    cfg = load_config(overrides=sets + ["eval.k=1", "eval.num_samples=1", "eval.max_new_tokens=8", "eval.limit=0"])
    if baseline == "base":
        res = evaluate_against_champion(cfg, candidate=own, base_model="store://models/tiny", champion="",
                                        tasks_path=built / "eval.jsonl", out_dir="ev")
        assert res["baseline"]["kind"] == "base"
    else:
        run_evaluation(cfg, candidate=own, baseline=own, tasks_path=built / "eval.jsonl", out_dir="ev")
    assert G.BASE_ENV not in __import__("os").environ
    rows = [json.loads(x) for x in Path("ev/per_task.jsonl").read_text().splitlines()]
    tasks = {t.id: t for t in read_tasks(built / "eval.jsonl")}
    text_rows = [r for r in rows if tasks[r["id"]].verifier == "text"]
    assert text_rows and len(rows) == 2 * len(tasks)
    # every text task's greedy output (kept whole when short) is scored as the explicit folder scores it
    explicit = {"grader": "mean", "of": ["token_f1", {**EMBED, "model": str(own)}]}
    checked = [r for r in text_rows if len(r["greedy_text"]) < 500]
    assert checked
    for r in checked:
        assert G.grade(explicit, r["greedy_text"], tasks[r["id"]]) == pytest.approx(r["greedy_score"], abs=1e-9)


def test_train_fetches_the_base_and_grades_with_it(built, world, monkeypatch):
    root, sets, _ = world
    d = _pod(root, "train", monkeypatch)
    text = [t for t in read_tasks(built / "train.jsonl") if t.verifier == "text"][:4]
    from rlsd.tasks import write_tasks

    write_tasks(text, d / "train.jsonl")
    run = ["data.train_tasks=train.jsonl", "data.eval_tasks=train.jsonl", "rollout.group_size=2",
           "rollout.prompts_per_step=2", "rollout.max_new_tokens=8", "rollout.engine=generate", "train.steps=1",
           "train.checkpoint_every=0", "train.eval_every=0", "algorithm.name=grpo"]
    assert cli.main(["train", "--output", "run", *_args(sets + run)]) == 0
    m = [json.loads(x) for x in Path("run/metrics.jsonl").read_text().splitlines()]
    assert m[0]["step"] == 1 and 0.0 <= m[0]["reward_mean"] <= 1.0


def test_a_step_without_the_base_fails_naming_it(built, world, monkeypatch):
    """Grading a task file where nothing names the base model (a library call, not an rlsd entry point) is
    an error that says so, not a reward of None or 0 at every step."""
    root, _, _ = world
    _pod(root, "bare", monkeypatch)
    from rlsd.verifiers import score, score_many

    t = next(t for t in read_tasks(built / "eval.jsonl") if t.verifier == "text")
    for grade in (lambda: score(t, f"Answer: {t.answer}"), lambda: score_many([t], ["Answer: x"])):
        with pytest.raises(G.GraderModelMissing, match="grader model: base names the run's base model"):
            grade()  # raised through score, which turns a verifier's other errors into None
