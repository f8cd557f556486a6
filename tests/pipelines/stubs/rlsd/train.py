import os

from rlsd._record import record


def train(cfg, output_dir=None):
    record("train", train_tasks=cfg.data.train_tasks, tasks_exist=os.path.isfile(cfg.data.train_tasks),
           steps=cfg.train.steps, algorithm=cfg.algorithm.name, output_dir=output_dir)
    os.makedirs(os.path.join(output_dir, "final"))
    with open(os.path.join(output_dir, "final", "config.json"), "w") as f:
        f.write("{}")
    return {"final_model": os.path.join(output_dir, "final"), "steps": cfg.train.steps}
