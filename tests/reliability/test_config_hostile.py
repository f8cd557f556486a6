"""Config under hostile input (issue 18 item 7): YAML anchors, aliases and tags refused before expansion;
every numeric field inside a stated range; paths that climb out of their root refused; error messages
built only on failure and capped in length."""

from __future__ import annotations

import dataclasses
import time
import tracemalloc
import typing

import pytest

import rlsd.config as config
from rlsd.config import MAX_MESSAGE_CHARS, RANGES, ConfigError, RLSDConfig, load_config

# The classic "billion laughs" in YAML: 9 levels of 9 aliases, 9**9 (387 million) strings once expanded.
BOMB = "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def _numeric_fields() -> list[tuple[str, type]]:
    out = []
    for sec in dataclasses.fields(RLSDConfig):
        hints = typing.get_type_hints(typing.get_type_hints(RLSDConfig)[sec.name])
        out += [(f"{sec.name}.{n}", tp) for n, tp in hints.items() if tp in (int, float)]
    return out


def test_an_alias_bomb_is_refused_fast_and_in_little_memory():
    assert len(BOMB) < 400
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="anchor or alias .*line 1"):
        load_config(text=BOMB)
    took = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert took < 0.5 and peak < 5_000_000, (took, peak)


@pytest.mark.parametrize("text", [
    "train: {steps: *s}",                                   # an alias with no anchor
    "train: &t {steps: 3}",                                 # an anchor alone
    "train: {steps: 3}\neval: {<<: *t}",                    # a merge key
    "train: {steps: !!int 3}",                              # standard tag
    "train: !!map {steps: 3}",
    "model: {path: !!binary aGVsbG8=}",
    "x: !!python/object/apply:os.system ['true']",          # unsafe tag (SafeLoader would also refuse)
    "model: {path: !custom x}",                             # local tag
])
def test_anchors_aliases_and_tags_are_refused(text):
    with pytest.raises(ConfigError, match="(anchor or alias|explicit YAML tag)"):
        load_config(text=text)


def test_overrides_go_through_the_same_reader():
    with pytest.raises(ConfigError, match="explicit YAML tag"):
        load_config(overrides=["train.steps=!!int 3"])
    assert load_config(overrides=["train.steps=3"]).train.steps == 3


@pytest.mark.parametrize("text,match", [
    ("[" * 100_000, "nests deeper"),
    ("train: {steps: " + "9" * 5000 + "}", "not a usable YAML"),
    ("x" * (config.MAX_CONFIG_BYTES + 1), "refused unread"),
])
def test_deep_huge_or_oversized_documents_are_refused_with_a_short_message(text, match):
    with pytest.raises(ConfigError, match=match) as ei:
        load_config(text=text)
    assert len(str(ei.value)) <= MAX_MESSAGE_CHARS


def test_every_numeric_field_has_a_stated_range_and_the_defaults_are_inside():
    fields = _numeric_fields()
    assert len(fields) > 50
    assert sorted(k for k, _ in fields if k not in RANGES) == []
    assert sorted(set(RANGES) - {k for k, _ in fields}) == []  # no stale entries
    d = RLSDConfig()
    for key, _ in fields:
        lo, hi = RANGES[key]
        s, n = key.split(".")
        assert lo <= getattr(getattr(d, s), n) <= hi, key


@pytest.mark.parametrize("key", sorted(RANGES))
def test_every_numeric_field_refuses_a_value_above_its_range(key):
    lo, hi = RANGES[key]
    s, n = key.split(".")
    tp = typing.get_type_hints(typing.get_type_hints(RLSDConfig)[s])[n]
    above = int(hi) + 1 if tp is int else hi * 2 + 1
    with pytest.raises(ConfigError, match=rf"{key} must"):
        load_config(overrides=[f"{key}={above}"])


@pytest.mark.parametrize("text,match", [
    ("rollout: {group_size: 1e9}", "rollout.group_size must be an integer"),
    ("rollout: {group_size: 1000000000}", r"rollout.group_size must be in \[2, 1024\], got 1000000000"),
    ("train: {lr: .inf}", "train.lr must be a finite number"),
    ("train: {lr: .nan}", "train.lr must be a finite number"),
    ("train: {lr: 1e3}", r"train.lr must be in \[1e-12, 1\]"),
    ("train: {steps: -1}", "train.steps must be"),
    ("eval: {seed: 99999999999999999999}", r"eval.seed must be in"),
])
def test_the_issue_values_are_refused(text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(text=text)


def test_range_ends_are_inclusive():
    assert load_config(text="rollout: {group_size: 1024}\ntrain: {lr: 1.0}").rollout.group_size == 1024
    with pytest.raises(ConfigError):
        load_config(text="rollout: {group_size: 1025}")


def test_ranges_hold_however_the_config_is_built():
    with pytest.raises(ConfigError, match="train.lr must be a finite number"):
        RLSDConfig().replace(train=dataclasses.replace(RLSDConfig().train, lr=float("inf")))


@pytest.mark.parametrize("key,value", [
    ("store.root", "../../.."), ("store.root", "artifacts/../../etc"), ("train.output_dir", "runs/../../x"),
    ("model.path", "..\\\\..\\\\models"), ("data.train_tasks", "/data/../../etc/passwd"),
    ("tracking.artifact_location", "../mlruns"),
])
def test_paths_that_climb_out_of_their_root_are_refused(key, value):
    with pytest.raises(ConfigError, match=rf"{key} must stay inside its root"):
        load_config(overrides=[f"{key}={value}"])


def test_paths_inside_their_root_absolute_paths_and_uris_are_accepted(tmp_path):
    cfg = load_config(overrides=["store.root=artifacts/store..v2", f"train.output_dir={tmp_path}/run",
                                 "tracking.artifact_location=s3://bucket/../x"])
    assert cfg.store.root == "artifacts/store..v2"


def test_messages_are_built_only_when_a_check_fails(monkeypatch):
    def boom(v):
        raise AssertionError("a message was built for a value that passed")

    monkeypatch.setattr(config, "_r", boom)
    load_config("configs/tiny.yaml")
    load_config(text="platform: {allow_hosts: [" + ", ".join(["h"] * 5000) + "]}")


@pytest.mark.parametrize("text", [
    "train: {" + "k" * 100_000 + ": 1}",                                        # unknown key
    "model: {dtype: " + "x" * 100_000 + "}",                                    # bad literal
    "platform: {allow_hosts: [" + ", ".join(["h"] * 50_000) + ", 3]}",          # bad list
    "train: {steps: '" + "9" * 100_000 + "'}",                                  # wrong type
])
def test_messages_are_truncated(text):
    with pytest.raises(ConfigError) as ei:
        load_config(text=text)
    assert len(str(ei.value)) <= MAX_MESSAGE_CHARS


def test_a_directory_given_as_config_says_so(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
