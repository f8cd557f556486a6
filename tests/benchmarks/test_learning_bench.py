"""The learning benchmark's own arithmetic: generated tasks verify, held-out sets are disjoint, the
answer-token locator and the seed interval are right (hand-computed values)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import learning

from rlsd.models import train_tokenizer
from rlsd.tasks import read_tasks
from rlsd.verifiers import score


def test_chain_scratchpad_hand_computed():
    assert learning.chain_scratchpad([3, 7, 5]) == "3+7=10,10+5=15\nA:15"
    assert learning.chain_scratchpad([9, 9]) == "9+9=18\nA:18"


def test_generated_solutions_score_one_and_tiers_cycle(tmp_path):
    d = learning.make_tasks(tmp_path, n_train=70, n_eval_per_tier=3, n_dev_per_tier=2)
    train, dev, ev = (read_tasks(d / f"{s}.jsonl") for s in ("train", "dev", "eval"))
    for t in train + dev + ev:
        assert score(t, t.meta["solution"]) == 1.0, t
        assert t.privileged_context == t.answer
    tiers = {t.meta["tier"] for t in ev}
    assert tiers == {"add-2", "add-3", "add-4", "add-5", "chain-3", "chain-5", "chain-7"}
    assert all(sum(t.meta["tier"] == k for t in ev) == 3 for k in tiers)
    prompts = [t.prompt for t in train]
    assert not ({t.prompt for t in ev} & set(prompts)) and not ({t.prompt for t in dev} & set(prompts))
    assert not ({t.prompt for t in ev} & {t.prompt for t in dev})


def test_answer_token_start_points_after_the_marker():
    tok = train_tokenizer()
    ids = tok("1+2=3\nA:42", add_special_tokens=False).input_ids
    i = learning.answer_token_start(tok, ids)
    assert tok.decode(ids[i:]) == "42"
    assert learning.answer_token_start(tok, tok("1+2=3", add_special_tokens=False).input_ids) is None


def test_seed_interval_hand_computed():
    m, h = learning.ci([0.2, 0.4, 0.6])  # sd 0.2, t(0.975, 2) = 4.303
    assert m == pytest.approx(0.4) and h == pytest.approx(4.303 * 0.2 / math.sqrt(3))
    m, h = learning.ci([0.5])
    assert m == 0.5 and math.isnan(h)


def test_claims_table_pairs_seeds_and_measures_the_fall_from_each_seeds_peak():
    # hand-computed: two seeds; opsd's runs listed seed 1 first, so pairing must go by seed, not position
    base = {"greedy": 0.4, "hint_copy_rate": 0.0, "shortcut_rate": 0.1}

    def run(seed, c5, c10, ent, hint):
        return {"seed": seed, "curve": [[5, c5], [10, c10]], "metrics": [{"entropy": 9.0}] + [{"entropy": ent}] * 2,
                "final": {"hint_copy_rate": hint, "shortcut_rate": 0.1}}

    results = {"grpo": [run(0, 0.5, 0.6, 0.2, 0.0), run(1, 0.4, 0.6, 0.3, 0.0)],
               "opsd": [run(1, 0.6, 0.4, 0.5, 0.3), run(0, 0.7, 0.5, 0.4, 0.1)]}
    curve, steps = learning.curves(results, base)
    assert steps == [0, 5, 10] and curve["opsd"][0] == [0.4, 0.4] and curve["opsd"][10] == [0.4, 0.5]
    lines = learning.claims_table(results, base, curve, steps, last_k=2)
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in lines[1].splitlines()[2:]}
    t1 = 12.706  # t(0.975, 1 degree of freedom)
    # opsd - grpo per seed: area (0.6-0.55, 0.5-0.5) = (+0.05, 0); final (-0.1, -0.2); entropy (+0.2, +0.2)
    h_area = t1 * math.sqrt(2 * 0.025 ** 2) / math.sqrt(2)
    h_final = t1 * math.sqrt(2 * 0.05 ** 2) / math.sqrt(2)
    h_hint = t1 * math.sqrt(2 * 0.1 ** 2) / math.sqrt(2)
    # entropy over all steps: the first step's 9.0 is common to all runs, so (9 + 2 x 0.4) / 3 - (9 + 2 x 0.2) / 3
    # = 0.4 / 3 per seed; over the last 2 steps +0.2 per seed
    assert rows["opsd"] == [f"0.025 ± {h_area:.3f}", f"-0.150 ± {h_final:.3f}", "-0.200, -0.100", "-0.200 ± 0.000",
                            "5, 5",
                            f"{0.4 / 3:.3f} ± 0.000", "0.200 ± 0.000", f"0.200 ± {h_hint:.3f}", "0.000 ± 0.000"]
    # grpo ends at its peak in both seeds (step 10); its own differences to grpo are not shown
    assert rows["grpo"] == ["-", "-", "-", "0.000 ± 0.000", "10, 10", "-", "-", "0.000 ± 0.000", "0.000 ± 0.000"]
