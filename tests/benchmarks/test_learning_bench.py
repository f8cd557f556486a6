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
