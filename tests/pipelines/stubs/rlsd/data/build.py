import os

from rlsd._record import record


def build_tasks(cfg, *, snapshot="latest", out_dir):
    record("build_tasks", snapshot=snapshot, out_dir=out_dir)
    paths = {}
    for split in ("train", "eval"):
        paths[split] = os.path.join(out_dir, f"{split}.jsonl")
        with open(paths[split], "w") as f:
            f.write('{"id": "%s-1"}\n' % split)
    return {"train_path": paths["train"], "eval_path": paths["eval"], "counts": {"train": 1, "eval": 1}}
