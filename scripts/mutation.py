"""Mutation testing (mutmut 3) of the modules that pay rewards, guard data and gate promotion (issue 21).

    python scripts/mutation.py [GROUP ...] [--keep]      # `make mutation` runs every group

Each group is run on its own: a temporary ``git clone`` of HEAD (committed code only: the working tree,
with other people's half-edited files, is never read or written), the group's [tool.mutmut] settings
written into the clone's pyproject.toml, ``mutmut run`` limited to the group's mutant names, then the
results read from the clone's mutants/*.meta. Every group writes benchmarks/results/mutation/<group>.json
(the commit it measured, every mutant's status, each survivor's diff); benchmarks/results/mutation.md is
rebuilt from all the JSON files, so groups measured on different commits keep their own line.

A survivor is either killed by a new test or listed in EQUIVALENT below with the reason it cannot be
killed (or is not worth a test); the report shows both. Costs on 2 cores: see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "benchmarks" / "results" / "mutation"
REPORT = ROOT / "benchmarks" / "results" / "mutation.md"
MUTMUT = Path(sys.executable).parent / "mutmut"

# Per group: the source mutmut mutates, the tests it runs (its coverage map picks, per mutant, the tests
# that call the mutated function), and which mutants are run ("names": fnmatch patterns of mutant names;
# None = all of the source). Kept small enough for 2 cores; the slow end-to-end tests stay out.
GROUPS: dict[str, dict] = {
    "core": {
        "source": ["src/rlsd/core/"],
        "tests": ["tests/core/"],
        "names": None,
    },
    "evaluate": {
        "source": ["src/rlsd/evaluate.py"],
        # the metric arithmetic, leakage and reports on controlled outputs; the random tiny-model runs and
        # the CLI test are left out (slow, and they pin no value a mutant could change)
        "tests": ["tests/test_evaluate.py", "tests/test_evaluate_exact.py", "tests/test_leak_rule.py", "-k",
                  "not greedy_is_deterministic and not run_evaluation_files_and_keys and not without_baseline_and_cli "
                  "and not evaluate_model_with_controlled_sampler"],
        "names": None,
        # not mutated here: _plots (matplotlib drawing: titles, colours, sizes, bar offsets; the tests check that
        # each PNG is written and embedded, not its pixels) and evaluate_against_champion (needs a registry with a
        # champion: tests/test_champion_gate.py runs it against a real MLflow server, too slow per mutant)
        "skip": ["_plots", "evaluate_against_champion"],
    },
    "registry": {
        "source": ["src/rlsd/registry.py"],
        # gates, the alias choice and the promotion protocol against an in-memory MLflow client; the
        # MLflow round trips (register, load, _client, _await_ready) are tested against real servers in
        # tests/test_registry.py and are not mutated here (each mutant would cost a server run)
        "tests": ["tests/test_registry.py", "tests/test_registry_fake.py", "tests/test_first_version_gate.py",
                  "-m", "not integration", "-k",
                  "not embedded_sqlite"],
        "names": ["rlsd.registry.x__num__*", "rlsd.registry.x_load_evaluation__*",
                  "rlsd.registry.x_evaluation_tags__*", "rlsd.registry.x__tag_value__*",
                  "rlsd.registry.x_check_gates__*", "rlsd.registry.x__first_version_gates__*",
                  "rlsd.registry.x__comparison_gates__*", "rlsd.registry.x__pass1__*", "rlsd.registry.x__age__*",
                  "rlsd.registry.x__read_state__*", "rlsd.registry.x__choose__*", "rlsd.registry.x__get_alias__*",
                  "rlsd.registry.x__unreachable__*", "rlsd.registry.x_promote__*", "rlsd.registry.x__promote__*",
                  "rlsd.registry.x__record__*", "rlsd.registry.x__set_champion__*"],
    },
    "train": {
        "source": ["src/rlsd/train.py"],
        # the batching helpers on the toy policy (no model, no DeepSpeed): the loop itself (train()) is
        # covered end to end by tests/test_train*.py, far too slow to run once per mutant
        "tests": ["tests/test_train_updates.py", "tests/test_train_helpers.py", "-k",
                  "not micro_batched and not updates_per_batch_make and not resynced and not bfloat16 and not tenth "
                  "and not every_collective"],
        "names": ["rlsd.train.x_left_pad__*", "rlsd.train.x_update_rows__*", "rlsd.train.xǁBatchǁ*",
                  "rlsd.train.x_logps_pass__*", "rlsd.train.x_policy_update__*", "rlsd.train.x__tasks_for_step__*",
                  "rlsd.train.x__prompt_order__*", "rlsd.train.x__step_seed__*", "rlsd.train.x__all_reduce__*",
                  "rlsd.train.x__weighted_mean__*", "rlsd.train.x_completion_logits__*"],
    },
    "verifiers": {
        # the answer verifiers; NOT the code sandbox (pycode.py, sandbox.py, _sandbox_*.py): its tests run
        # hostile code (fork bombs, kill loops, writes outside its folder), and a mutant that weakens the
        # sandbox would let that code loose on the machine running the mutation test
        "source": ["src/rlsd/verifiers/"],
        "only": ["src/rlsd/verifiers/__init__.py", "src/rlsd/verifiers/extract.py", "src/rlsd/verifiers/graders.py",
                 "src/rlsd/verifiers/numeric.py", "src/rlsd/verifiers/label.py", "src/rlsd/verifiers/json_answer.py",
                 "src/rlsd/verifiers/expression.py", "src/rlsd/verifiers/sql.py"],
        "tests": ["tests/verifiers/", "tests/test_mutants_named.py", "-m", "not slow and not integration", "-k",
                  "not code_adversarial and not verify_code"],
        "names": None,
    },
    "data": {
        "source": ["src/rlsd/data/"],
        # ingest.py's format readers moved to readers.py (the CSV reader, the quarantine entry): both are "ingest"
        "only": ["src/rlsd/data/ingest.py", "src/rlsd/data/readers.py", "src/rlsd/data/redact.py",
                 "src/rlsd/data/store.py", "src/rlsd/data/index.py"],
        # with the fast reliability suites that pin the ingest invariant (every record stored or quarantined),
        # planted secrets, hostile manuals and the folder round trip; the S3 store's own tests run against a real
        # SeaweedFS server (S3Store is the back end users run), but not the S3 inbox tests (inbox.py is not
        # mutated; a server start per ingest mutant), nor the Great Expectations runs of build_validate
        # (validate.py is not mutated, 5-15 s a test), nor the hypothesis fuzzing of hostile_input
        "tests": ["tests/data/", "tests/test_mutants_named.py", "tests/reliability/test_ingest_invariant.py",
                  "tests/reliability/test_redaction_hostile.py", "tests/reliability/test_manuals_hostile.py",
                  "tests/reliability/test_store_faults.py", "-m", "not slow", "-k",
                  "not validation_quarantines_planted and not chunked_validation_equals and not s3_inbox "
                  "and not explicit_s3_prefix and not empty_inbox and not bad_inbox_input "
                  "and not pipeline_with_no_input and not server_stops and not cli_push"],
        "names": None,
    },
}

# Survivors that no test should kill, with the reason (mutant name -> reason). A name here that no
# longer survives is dropped from the report by itself; mutant numbers change when a function changes.
EQUIVALENT: dict[str, str] = {
    # core
    "rlsd.core.logprobs.x_masked_sum__mutmut_3": "`x.sum(None)` sums every element, as `x.sum()` does: same value",
    "rlsd.core.logprobs.x_masked_mean__mutmut_4": "`m.sum(None)` sums every element, as `m.sum()` does: same value",
    "rlsd.core.losses.x_policy_loss__mutmut_7": "the mask keeps its own dtype, but every use converts it "
    "(aggregate and masked_mean cast it to the loss's dtype; the bool dual mask is built with its own dtype)",
    "rlsd.core.losses.x_policy_loss__mutmut_35": "only reached with dual_clip = 0, where the all-zero dual mask is "
    "read as `.float()`: float zeros and bool zeros give the same 0.0",
    "rlsd.core.losses.x_policy_loss__mutmut_37": "same as mutmut_35 (the all-zero mask in the float dtype of `mask`)",
    "rlsd.core.losses.x_policy_loss__mutmut_39": "`dual_clip > 1` instead of `> 0` differs only for 0 < dual_clip <= 1, "
    "which the config refuses (algorithm.dual_clip must be 0 or > 1)",
    "rlsd.core.losses.x_policy_loss__mutmut_45": "`adv <= 0` adds A = 0 tokens, whose loss and bound are both 0: "
    "`clipped > bound` is false and min(0, 0) = 0",
    "rlsd.core.losses.x_policy_loss__mutmut_55": "same as mutmut_45: for A = 0, min(clipped, bound) = min(0, 0) = clipped",
    "rlsd.core.advantages.x_rlsd_token_advantages__mutmut_31": "`a <= 0` adds A = 0 rows under negative_only, whose "
    "w is exp(sign(0) * Delta) = exp(0) = 1 anyway",
    # train (the batching helpers)
    "rlsd.train.x_left_pad__mutmut_6": "torch.full with an int fill value is int64 (torch.long) without the dtype",
    "rlsd.train.x_left_pad__mutmut_9": "same as mutmut_6 (dtype argument dropped: int64 anyway)",
    "rlsd.train.x_left_pad__mutmut_19": "torch.tensor of a list of ints is int64 (torch.long) without the dtype",
    "rlsd.train.x_left_pad__mutmut_21": "same as mutmut_19",
    "rlsd.train.x_policy_update__mutmut_6": "needs_teacher only matters for algorithms without the JSD (rlsd): for opsd "
    "and grpo_opsd needs_jsd is true and runs the teacher whatever needs_teacher says",
    "rlsd.train.x_policy_update__mutmut_7": "same as mutmut_6",
    "rlsd.train.x_policy_update__mutmut_8": "same as mutmut_6",
    "rlsd.train.x_policy_update__mutmut_9": "same as mutmut_6",
    "rlsd.train.x_policy_update__mutmut_48": "`tl = \"\"` instead of None before the teacher pass: tl is only read when "
    "the JSD is needed, and then it is assigned first",
    "rlsd.train.x_policy_update__mutmut_74": "`tl = \"\"` instead of None drops the (micro, T, V) teacher logits just the "
    "same (memory, not values)",
    "rlsd.train.x_policy_update__mutmut_67": "the prompt-sharing group size only selects the faster shared-prompt pass, "
    "whose logits equal the full pass's (tests/test_train.py::test_shared_prompt_forward_equals_full_forward)",
    "rlsd.train.x_policy_update__mutmut_94": "same as mutmut_67 (the student's pass)",
    "rlsd.train.x_policy_update__mutmut_126": "the zero loss scalar on the default device: a 0-dim CPU tensor adds to a "
    "tensor on any device",
    "rlsd.train.x_policy_update__mutmut_128": "same as mutmut_126",
    "rlsd.train.x_policy_update__mutmut_250": "float(\"NAN\") is NaN, as float(\"nan\")",
    "rlsd.train.x_completion_logits__mutmut_1": "the default group size is never used (every caller passes it) and only "
    "selects the shared-prompt pass, whose logits equal the full pass's",
    "rlsd.train.x_completion_logits__mutmut_16": "positions + 2 for every token of every row: rotary position embeddings "
    "(the Llama models trained here) depend only on position differences",
    "rlsd.train.x_completion_logits__mutmut_18": "cumsum over dim +1 of a 2-D mask is cumsum over dim -1",
    "rlsd.train.x_completion_logits__mutmut_60": "no position_ids: the model counts 0, 1, ... from the first (pad) column, "
    "a constant shift per row, invisible to rotary embeddings",
    "rlsd.train.x_completion_logits__mutmut_65": "same as mutmut_60",
    "rlsd.train.x_completion_logits__mutmut_62": "use_cache in the full pass decides only whether a cache is returned "
    "(memory), not the logits",
    "rlsd.train.x_completion_logits__mutmut_67": "same as mutmut_62",
    "rlsd.train.x_completion_logits__mutmut_70": "same as mutmut_62",
    "rlsd.train.x_completion_logits__mutmut_86": "the shared prompt pass hands its cache explicitly; transformers fills a "
    "given cache whatever use_cache says (the cache length is checked right after)",
    "rlsd.train.x_completion_logits__mutmut_91": "same as mutmut_86",
    "rlsd.train.x_completion_logits__mutmut_94": "same as mutmut_86",
    "rlsd.train.x_completion_logits__mutmut_103": "same as mutmut_86 (the completion pass on the repeated cache)",
    "rlsd.train.x_completion_logits__mutmut_107": "same as mutmut_86",
    "rlsd.train.x_completion_logits__mutmut_40": "getattr default None instead of False: `not None` is `not False`",
    "rlsd.train.x_completion_logits__mutmut_59": "no attention_mask in the full pass: with use_cache=False and position "
    "ids that restart at 0 after the left pads, transformers 5.24 builds the same mask from the position ids "
    "(packed-sequence detection; measured: identical logits). Kept for versions that do not",
    "rlsd.train.x_completion_logits__mutmut_64": "same as mutmut_59",
    "rlsd.train.x_completion_logits__mutmut_115": "same as mutmut_86 (use_cache=False on the completion pass still "
    "reads the given cache)",
    # registry (numbers of src/rlsd/registry.py as of 85174a4)
    "rlsd.registry.x_load_evaluation__mutmut_8": "encoding=None reads with the locale's encoding, UTF-8 here and in the "
    "images (C.UTF-8)",
    "rlsd.registry.x_load_evaluation__mutmut_10": "\"UTF-8\" and \"utf-8\" name the same codec",
    "rlsd.registry.x__tag_value__mutmut_2": "a str skips to str(v), which is v",
    "rlsd.registry.x_check_gates__mutmut_39": "`ok = good` instead of `ok &= good` on the first gate, where ok is still True",
    "rlsd.registry.x__comparison_gates__mutmut_16": "`ok = good` instead of `ok &= good` on the function's first gate, "
    "where ok is still True",
    "rlsd.registry.x__comparison_gates__mutmut_44": "required=None is falsy like required=False",
    "rlsd.registry.x__comparison_gates__mutmut_81": "required=None is falsy like required=False",
    "rlsd.registry.x__first_version_gates__mutmut_44": "computing hi also when comp is None changes nothing: comp is None "
    "exactly when comparison is absent, null or not an object, and _num(required=False) returns None for all three",
    "rlsd.registry.x__first_version_gates__mutmut_48": "required=None is falsy like required=False",
    "rlsd.registry.x__choose__mutmut_12": "only reached when best and champion are the same version: returning the "
    "champion object instead of best names the same version",
    "rlsd.registry.x__choose__mutmut_14": "same as mutmut_12",
    "rlsd.registry.x__promote__mutmut_125": "the loop assigns champion before reading it (at least one iteration)",
    "rlsd.registry.x__get_alias__mutmut_9": "an MlflowException always has error_code: getattr's default is never used",
    "rlsd.registry.x__get_alias__mutmut_12": "same as mutmut_9 (no default needed)",
    "rlsd.registry.x__get_alias__mutmut_15": "same as mutmut_9",
    "rlsd.registry.x__promote__mutmut_158": "after the loop champion is never None: the version itself is a fresh "
    "pending candidate, so _choose returns it or a champion",
    "rlsd.registry.x__promote__mutmut_187": "same as mutmut_158: `after` is always set here",
    "rlsd.registry.x__promote__mutmut_194": "same as mutmut_158: the holder always exists",
    "rlsd.registry.x__promote__mutmut_198": "'unknown' is unreachable: the holder is a candidate (candidates have a "
    "recorded pass@1) or a champion _choose kept, which it keeps only when it has a recorded pass@1",
    "rlsd.registry.x__promote__mutmut_200": "same as mutmut_198",
    "rlsd.registry.x__promote__mutmut_201": "same as mutmut_198",
    # evaluate (numbers of src/rlsd/evaluate.py as of 1ade039)
    "rlsd.evaluate.x_find_leak__mutmut_37": "windows past the end are shorter than n words and match no n-gram",
    "rlsd.evaluate.x_find_leak__mutmut_38": "same as mutmut_37",
    "rlsd.evaluate.x_evaluate_model__mutmut_61": "progress-bar text (tqdm desc) only",
    "rlsd.evaluate.x_evaluate_model__mutmut_62": "progress-bar display (tqdm leave) only",
    "rlsd.evaluate.x_evaluate_model__mutmut_63": "progress-bar display (tqdm disable) only",
    "rlsd.evaluate.x_evaluate_model__mutmut_65": "progress-bar text (tqdm desc) only",
    "rlsd.evaluate.x_evaluate_model__mutmut_66": "progress-bar display (tqdm leave) only",
    "rlsd.evaluate.x_evaluate_model__mutmut_67": "progress-bar display (tqdm disable) only",
    "rlsd.evaluate.x_run_evaluation__mutmut_53": "cfg.eval always has num_samples: getattr's default is never used",
    "rlsd.evaluate.x_run_evaluation__mutmut_56": "same as mutmut_53",
    "rlsd.evaluate.x_run_evaluation__mutmut_62": "cfg.eval always has leak_ngram: getattr's default is never used",
    "rlsd.evaluate.x_run_evaluation__mutmut_65": "same as mutmut_62",
    "rlsd.evaluate.x_run_evaluation__mutmut_172": "encoding=None writes with the locale's encoding, UTF-8 here and in "
    "the images (C.UTF-8)",
    "rlsd.evaluate.x_run_evaluation__mutmut_174": "same as mutmut_172",
    "rlsd.evaluate.x_run_evaluation__mutmut_184": "\"UTF-8\" and \"utf-8\" name the same codec",
    "rlsd.evaluate.x_run_evaluation__mutmut_186": "same as mutmut_172",
    "rlsd.evaluate.x_run_evaluation__mutmut_188": "same as mutmut_172",
    "rlsd.evaluate.x_run_evaluation__mutmut_195": "same as mutmut_184",
    "rlsd.evaluate.x__baseline_identity__mutmut_10": "the result is built with info.get(key): a missing \"version\" key "
    "gives None, as the None value does",
    "rlsd.evaluate.x__baseline_identity__mutmut_11": "same as mutmut_10",
    "rlsd.evaluate.x_pass_at_k__mutmut_11": "`n + c < k` instead of `n - c < k`: when n - c < k <= n the product "
    "runs over i = n-c+1..n, which contains i = k, whose factor 1 - k/k is exactly 0: pass@k = 1.0 either way",
    "rlsd.evaluate.x__ngrams__mutmut_5": "extra windows past the end are shorter than n words: they can be in the "
    "secret set but never equal an n-word window of the output (find_leak reads only full windows)",
    "rlsd.evaluate.x__ngrams__mutmut_6": "same as mutmut_5 (one extra, shorter window)",
    "rlsd.evaluate.x_paired_bootstrap__mutmut_40": "rng.integers(N, size=...) draws from [0, N) like "
    "rng.integers(0, N, size=...), from the same stream: the same indices",
    "rlsd.evaluate.x_png_data_uri__mutmut_14": "\"ASCII\" and \"ascii\" name the same codec",
    "rlsd.evaluate.x_evaluate_model__mutmut_8": "num_samples default 1 instead of 0: n = max(k, num_samples) and k >= 1 "
    "(checked first), so max(k, 0) = max(k, 1) = k",
    "rlsd.evaluate.x_evaluate_model__mutmut_75": "progress-bar text (tqdm desc) only",
    "rlsd.evaluate.x_evaluate_model__mutmut_76": "progress-bar text (tqdm desc) only",
    "rlsd.evaluate.x_evaluate_model__mutmut_77": "progress-bar text (tqdm desc) only",
    "rlsd.evaluate.x_evaluate_model__mutmut_78": "progress-bar text (tqdm desc) only",
    "rlsd.evaluate.x_evaluate_model__mutmut_79": "progress-bar display (tqdm leave) only",
    "rlsd.evaluate.x_evaluate_model__mutmut_80": "progress-bar display (tqdm disable) only",
    "rlsd.evaluate.x_run_evaluation__mutmut_59": "cfg.eval always has num_samples: getattr's default is never used",
    "rlsd.evaluate.x_write_report__mutmut_193": "encoding=None writes with the locale's encoding, UTF-8 here and in "
    "the images (C.UTF-8)",
    "rlsd.evaluate.x_write_report__mutmut_195": "same as mutmut_193",
    "rlsd.evaluate.x_write_report__mutmut_204": "\"UTF-8\" and \"utf-8\" name the same codec",
    "rlsd.evaluate.x_write_report__mutmut_273": "same as mutmut_193 (report.html)",
    "rlsd.evaluate.x_write_report__mutmut_275": "same as mutmut_193 (report.html)",
    "rlsd.evaluate.x_write_report__mutmut_282": "same as mutmut_204 (report.html)",
    # verifiers: graders.py specs and composition (numbers of src/rlsd/verifiers/graders.py as of 81fee1c)
    "rlsd.verifiers.graders.x__model_path__mutmut_12":
        "the returned Path is never used: both callers (validate_spec, similarity/embedding and judge) call _model_path only for its ValueError and discard the result",
    "rlsd.verifiers.graders.x_check_grader__mutmut_25":
        "'answer: ' vs 'Answer: ': every grader reads the echo probe through case-insensitive markers (graders._MARKER and extract._LINE are re.IGNORECASE), so the probe's score is the same",
    "rlsd.verifiers.graders.x_check_grader__mutmut_26":
        "'ANSWER: ' vs 'Answer: ': every grader reads the echo probe through case-insensitive markers (graders._MARKER and extract._LINE are re.IGNORECASE), so the probe's score is the same",
    "rlsd.verifiers.graders.x_validate_spec__mutmut_113":
        "default weight 2 instead of 1 in the positive-total check: the check only asks whether the sum of positive weights is > 0, and a missing weight counts as positive either way (items are already checked to be numbers)",
    "rlsd.verifiers.graders.x_validate_spec__mutmut_228":
        "float('INF') == float('inf') in Python (case-insensitive parse), same bound",
    # end graders specs
    # verifiers: graders.py metrics, rubric, judge (numbers as of 81fee1c)
    "rlsd.verifiers.graders.x_length_factor__mutmut_14":
        "n <= allowed vs n < allowed: at n == allowed the else branch returns allowed / n == 1.0 exactly, the same as the if branch",
    "rlsd.verifiers.graders.x_token_f1__mutmut_4":
        "'not p and not r' vs 'not p or not r': when only one side is empty the Counter intersection is empty, so the next check returns the same 0.0",
    "rlsd.verifiers.graders.x_rubric__mutmut_77":
        "min(2.0, ...) vs min(1.0, ...) on got / total: got sums the matched weights, at most the matched positive ones, so got <= total and the ratio never exceeds 1",
    "rlsd.verifiers.graders.x_similarity__mutmut_27":
        "dropping smooth_method='exp' from sacrebleu.sentence_bleu: 'exp' is its default (signature: smooth_method: str = 'exp')",
    "rlsd.verifiers.graders.xǁJudgeǁprompt__mutmut_12":
        "getattr(tok, 'chat_template') without the None default: every transformers tokenizer sets self.chat_template in PreTrainedTokenizerBase.__init__ (None when absent), so the attribute always exists",
    "rlsd.verifiers.graders.xǁJudgeǁprompt__mutmut_16":
        "apply_chat_template(tokenize=None) vs tokenize=False: transformers tests it only by truthiness ('if not tokenize' / 'if tokenize'), so None returns the same rendered string",
    "rlsd.verifiers.graders.xǁ_Embedderǁembed__mutmut_4":
        "truncation=None with max_length=512: transformers defaults an unset truncation to 'longest_first' when max_length is given (with a warning), so the text is still cut at 512 tokens (checked: the 512-token test passes on it, and fails for truncation=False)",
    "rlsd.verifiers.graders.xǁ_Embedderǁembed__mutmut_8":
        "truncation left out with max_length=512: the same transformers default as truncation=None ('longest_first' when max_length is given), still cut at 512 tokens",
    # end graders metrics
    # verifiers: the other answer verifiers (numbers as of 81fee1c; numeric.py changed in 0e5fc4a after them: check
    # the numeric() and sympy_equal() entries against `mutmut show` on the next run)
    "rlsd.verifiers.expression.x_evaluate_expression__mutmut_50":
        "Fraction(str(n)) == Fraction(n) for every int constant (bools are excluded by the type check; a 200-char answer is far below int's 4300-digit str limit)",
    "rlsd.verifiers.numeric.x__clean__mutmut_89":
        "the search runs with re.IGNORECASE, so the pattern's own case (PERCENT vs percent) changes no match",
    "rlsd.verifiers.numeric.x__clean__mutmut_27":
        "'1.5E3' for '1.5e3': every later reader takes either case (_plain's and the unit regex's [eE], Fraction(), "
        "sympy's tokenizer); checked on 12 scientific answers x 13 references, identical scores",
    "rlsd.verifiers.numeric.x__clean__mutmut_102":
        "the sub runs with flags=re.IGNORECASE, so the pattern's own case (PERCENT vs percent) changes no match",
    "rlsd.verifiers.numeric.x__latex_to_sympy__mutmut_50":
        "an unreplaced '\\pi' still becomes 'pi' when the last step drops every backslash; no step in between reads it",
    "rlsd.verifiers.numeric.x__latex_to_sympy__mutmut_51":
        "an unreplaced '\\pi' still becomes 'pi' when the last step drops every backslash; no step in between reads it",
    "rlsd.verifiers.numeric.x__latex_to_sympy__mutmut_60":
        "an unreplaced '\\ln' still becomes 'ln' when the last step drops every backslash; no step in between reads it",
    "rlsd.verifiers.numeric.x__latex_to_sympy__mutmut_61":
        "an unreplaced '\\ln' still becomes 'ln' when the last step drops every backslash; no step in between reads it",
    "rlsd.verifiers.numeric.x__sympy_expr__mutmut_45":
        "parse_expr's namespace (from sympy import *) already binds ln to sympy.log (sympy.ln is sympy.log), so the local 'ln' key is redundant",
    "rlsd.verifiers.numeric.x__sympy_expr__mutmut_46":
        "parse_expr's namespace (from sympy import *) already binds ln to sympy.log (sympy.ln is sympy.log), so the local 'ln' key is redundant",
    "rlsd.verifiers.numeric.x__sympy_expr__mutmut_61":
        "evaluate=True is parse_expr's default, so dropping the argument changes nothing",
    "rlsd.verifiers.numeric.x_numeric__mutmut_62":
        "an empty or over-200-char answer let through still scores 0.0: parse_exact and _sympy_expr refuse over 200 chars and sympy cannot parse an empty string (caught: not equal)",
    "rlsd.verifiers.numeric.x_sympy_equal__mutmut_7":
        "with only one side None the mutant reaches None.free_symbols, whose AttributeError the except BaseException below turns into the same False",
    "rlsd.verifiers.sql.x__canon__mutmut_1":
        "the blob tag only separates blobs from scalars; both sides are canonicalised with the same tag and no scalar is a tuple",
    "rlsd.verifiers.sql.x__canon__mutmut_2":
        "the blob tag only separates blobs from scalars; both sides are canonicalised with the same tag and no scalar is a tuple",
    "rlsd.verifiers.sql.x_sql__mutmut_45":
        "a missing answer returns 0.0 on `empty` before the placeholder's rows or error are looked at; the reference still runs first in the child",
    "rlsd.verifiers.sql.x_sql__mutmut_46":
        "SQL keywords are case-insensitive: 'select null where 0' is the same placeholder query",
    "rlsd.verifiers.sql.x_sql__mutmut_49":
        "empty is only tested for truth: None and False are both false",
    "rlsd.verifiers.sql.x_sql__mutmut_62":
        "_answer_query returns the query .strip()ped, so rstrip() and lstrip() are both no-ops before rstrip(';')",
    "rlsd.verifiers.sql.x_sql__mutmut_73":
        "a reply with a truthy got_error never carries a list in got (the child sets got=None; run_queries' own errors have no got), so `and` and `or` agree",
    "rlsd.verifiers.sql.x_sql__mutmut_75":
        "whenever got_error is set, got is not a list (child: got=None; run_queries' errors: no got), so the isinstance check alone gives 0.0",
    "rlsd.verifiers.sql.x_sql__mutmut_76":
        "whenever got_error is set, got is not a list (child: got=None; run_queries' errors: no got), so the isinstance check alone gives 0.0",
    "rlsd.verifiers.sql.x_sql__mutmut_77":
        "whenever got_error is set, got is not a list (child: got=None; run_queries' errors: no got), so the isinstance check alone gives 0.0",
    "rlsd.verifiers.sql.x_sql__mutmut_96":
        "the default is only tested for truth: None and False are both false",
    "rlsd.verifiers.sql.x_sql__mutmut_98":
        "dict.get's own default is None, false like False",
    "rlsd.verifiers.json_answer.x__answer_text__mutmut_22":
        "only a text starting with 'X' is newly let through, and no JSON text starts with X: json.loads fails and the score is 0.0 either way",
    "rlsd.verifiers.json_answer.x__equal__mutmut_7":
        "bools are handled above; a JSON number never == a string, null, list or object, so `or` falls to the same False",
    "rlsd.verifiers.json_answer.x_json_answer__mutmut_14":
        "validator_for's own default is jsonschema's latest draft, Draft202012Validator in the pinned jsonschema 4.26 (would differ only if a later jsonschema moves its latest draft)",
    "rlsd.verifiers.label.x_label__mutmut_46":
        "`None or []` is [] like `[] or []`",
    "rlsd.verifiers.label.x_label__mutmut_48":
        "dict.get's own default is None, and `None or []` is []",
    "rlsd.verifiers.label.x_label__mutmut_51":
        "an empty choice is named only when the answer normalises to '' (words == '  '), and '' is never accepted (discarded above), so the verdict stays 0.0",
    "rlsd.verifiers.label.x_normalise_label__mutmut_11":
        "whitespace kept as-is instead of ' ' is collapsed by ' '.join(s.split()) on the next line",
    "rlsd.verifiers.label.x_normalise_label__mutmut_18":
        "no Unicode general category starts with 'X', so 'XXPSXX' drops exactly the P and S characters as 'PS' does",
    "rlsd.verifiers.extract.x__boxed_spans__mutmut_21":
        "the span end matters only to a statement starting at the box's last content character or its closing '}', and no tag ('<'), box ('\\\\') or answer line (line start) can start there",
    "rlsd.verifiers.extract.x__statements__mutmut_20":
        "ties on start never happen: a tag starts with '<', a box with '\\\\', an answer line at a line start with blank/A, so the tie-break order is never used",
    "rlsd.verifiers.extract.x_extract_answer__mutmut_14":
        "the else branch handles every kind other than tag and line as boxed, whatever the third name is",
    "rlsd.verifiers.extract.x_extract_answer__mutmut_15":
        "the else branch handles every kind other than tag and line as boxed, whatever the third name is",
    # end other verifiers
    # data
    'rlsd.data.index.xǁWorkIndexǁreplace_document__mutmut_17':
        'lower-cased SQL keywords in the INSERT OR REPLACE: SQLite keywords are case-insensitive, same statement',
    'rlsd.data.index.xǁWorkIndexǁreplace_document__mutmut_18':
        'table name SECTIONS vs sections in the INSERT: SQLite identifiers are case-insensitive, same table',
    'rlsd.data.index.xǁWorkIndexǁreplace_document__mutmut_6':
        'lower-cased SQL keywords in the DELETE: SQLite keywords are case-insensitive, same statement',
    'rlsd.data.index.xǁWorkIndexǁreplace_document__mutmut_7':
        'upper-cased SQL in the DELETE (SECTIONS, ID): SQLite keywords and table/column names are case-insensitive, same statement',
    'rlsd.data.ingest.x__ingest_into__mutmut_115':
        'rep.reasons[key] = rep.read instead of += : parse_manual only sets reasons when it returns no sections, so on the duplicate-document branch (secs non-empty) the key is always absent and = equals +=',
    'rlsd.data.ingest.x__ingest_into__mutmut_118':
        'q = [...] instead of q += [...]: parse_manual returns an empty quarantine list whenever it returns sections, so on the duplicate-document branch q is always [] and both give the same list',
    'rlsd.data.ingest.x__ingest_into__mutmut_135':
        'secs = None instead of secs = [] after a duplicate document: secs is only tested for truth (if secs:) and then deleted; None and [] are both falsy',
    'rlsd.data.ingest.x__ingest_into__mutmut_17':
        'flush() calls put_objects without known=work: put_objects then checks each digest against the store (put_object skips existing objects), so the same objects are written and the same count returned; only existence look-ups are saved by known',
    'rlsd.data.ingest.x__ingest_into__mutmut_79':
        "bar = '' instead of bar = None when progress is off: bar is only tested for truth (if bar:), and '' is falsy like None",
    'rlsd.data.ingest.x_ingest__mutmut_46':
        "the prefix of the scratch TemporaryDirectory ('RLSD-INGEST-' instead of 'rlsd-ingest-'): only the name of a temporary folder deleted at the end of the ingest; nothing records or reads it",
    'rlsd.data.ingest.xǁQuarantineSpoolǁ__init____mutmut_10':
        "open('w') without encoding writes in the locale's encoding: the same bytes wherever the locale is UTF-8 (every supported image: python:3.11-slim sets LANG=C.UTF-8, and Python >= 3.7 coerces the C locale to UTF-8), not killable on such a machine; the explicit utf-8 stays for other locales",
    'rlsd.data.ingest.xǁQuarantineSpoolǁ__init____mutmut_14':
        "encoding='UTF-8' instead of 'utf-8': codec names are case-insensitive, the same codec",
    'rlsd.data.readers.x__canonical_answer__mutmut_10':
        "separators=None: with indent=None json.dumps uses (', ', ': '), the separators given",
    'rlsd.data.readers.x__canonical_answer__mutmut_11':
        'ensure_ascii=None is falsy: json.dumps and JSONEncoder only test its truth, so it acts as False',
    'rlsd.data.readers.x__canonical_answer__mutmut_14':
        "separators omitted: with indent=None the default is (', ', ': '), the separators given",
    'rlsd.data.readers.x__cap_sections__mutmut_16':
        "para.rfind('\\n', None, max_chars): a start of None means the string start, the same as 0",
    'rlsd.data.readers.x__cap_sections__mutmut_23':
        'rfind start 1 instead of 0 differs only when the one newline before max_chars is at index 0: the original gets 0, the mutant -1, and both become max_chars through `cut if cut > 0 else max_chars`',
    'rlsd.data.readers.x__id_hint__mutmut_5':
        "next(csv.reader([s]), None): a reader over a one-string list always yields one row ([] for '') or raises csv.Error, never StopIteration, so the default is never used",
    'rlsd.data.readers.x__id_hint__mutmut_7':
        'next(csv.reader([s])) without a default: the reader over one string always yields one row or raises csv.Error, so StopIteration cannot happen',
    'rlsd.data.readers.x__id_hint__mutmut_9':
        "rstrip(None) also drops other trailing whitespace; that only changes blanks at the end of the last field (the id is .strip()ped) and never the field count (a line of blanks gives [' '] or [], both answer '')",
    'rlsd.data.readers.x__iter_lines__mutmut_16':
        'fh.readline(None) instead of readline(1 << 20) while skipping an over-long line: reads the rest of the line at once; the yield (n, None, total size) is the same, only the memory bound differs',
    'rlsd.data.readers.x__iter_lines__mutmut_18':
        'readline(2 << 20) instead of 1 << 20 while skipping an over-long line: a different chunk size, the same lines and sizes',
    'rlsd.data.readers.x__iter_lines__mutmut_19':
        'readline(1 << 21) instead of 1 << 20 while skipping an over-long line: a different chunk size, the same lines and sizes',
    'rlsd.data.readers.x_decode_text__mutmut_11':
        "'UTF-8' and 'utf-8' name the same codec",
    'rlsd.data.readers.x_decode_text__mutmut_8':
        "raw.decode(errors='surrogateescape') without the codec: bytes.decode defaults to UTF-8",
    'rlsd.data.readers.x_parse_manual__mutmut_149':
        "'UTF-8' and 'utf-8' name the same codec",
    'rlsd.data.readers.x_parse_manual__mutmut_17':
        "raw = b'XXXX' when too big: raw is not used on that path (sha256 is '' when too_big and the function returns the quarantine at once)",
    'rlsd.data.readers.x_parse_manual__mutmut_47':
        'rep.read = 1 vs += 1: quarantine() runs at most once per call (every call site returns it) on a fresh report with read 0',
    'rlsd.data.readers.x_parse_manual__mutmut_50':
        'rep.quarantined = 1 vs += 1: quarantine() runs at most once per call on a fresh report with quarantined 0',
    'rlsd.data.readers.x_parse_manual__mutmut_64':
        'rep.reasons[key] = 1 vs += 1: quarantine() runs at most once per call on a fresh report with empty reasons',
    'rlsd.data.readers.x_slug__mutmut_13':
        "strip('XX-XX') strips the characters {X, -}; after lower() and re.sub every character is in [a-z0-9-], so there is never an X to strip",
    'rlsd.data.readers.x_slug__mutmut_18':
        "rstrip('XX-XX') strips {X, -}; the text is lower-cased and reduced to [a-z0-9-] first, so no X can be there",
    'rlsd.data.readers.xǁ_HTMLSectionsǁ__init____mutmut_7':
        "the initial level is read only in handle_endtag's heading branch, which needs self.heading not None; heading is only set in handle_starttag together with self.level",
    'rlsd.data.readers.xǁ_HTMLSectionsǁ__init____mutmut_8':
        'same as __init__ mutmut_7: level is always set by the <hN> start tag before handle_endtag can read it',
    'rlsd.data.redact.x__aws_bare_ok__mutmut_11':
        'entropy > 4.2 instead of >= 4.2: _aws_bare_ok only sees 40-character matches of _AWS_SECRET_BARE, and no frequency partition of 40 characters has a Shannon entropy within 1e-6 of 4.2 (all 37338 partitions of 40 enumerated), so no input sits on the boundary',
    'rlsd.data.redact.x__card_issuer__mutmut_27':
        'Mastercard range 51..56 instead of 51..55 (n == 16): a 16-digit number starting 56 is already a known issuer through the Maestro clause (p2 in (50, 56, 57, 58, 67) and 12 <= n <= 19), so the result is True either way',
    'rlsd.data.redact.x__card_issuer__mutmut_55':
        "Discover 644..650 instead of 644..649 on int(d[:3]): int(d[:3]) == 650 means d starts with '65', which the d.startswith('65') clause already accepts with the same 16..19 lengths",
    'rlsd.data.redact.x__card_ok__mutmut_17':
        'len(d) <= 20 instead of <= 19: every clause of _card_issuer caps the length at 19 (n in (13, 16, 19), n == 16, n == 15, or ... <= n <= 19), so a 20-digit d fails _card_issuer anyway (and _CARD never matches more than 19 digits)',
    'rlsd.data.redact.x_id_hash_key_from_env__mutmut_3':
        "default None instead of '' for an unset RLSD_ID_HASH_KEY: the next line returns v.encode() only when v is truthy, and None and '' are both falsy, so the function returns None either way",
    'rlsd.data.redact.x_id_hash_key_from_env__mutmut_5':
        "os.environ.get(name) without the '' default returns None for an unset variable; None and '' are both falsy, so `v.encode() if v else None` returns None either way",
    'rlsd.data.redact.x_luhn_ok__mutmut_23':
        'total -= d instead of += d: the sum is only negated, and (-t) % 10 == 0 exactly when t % 10 == 0 (Python ints), so luhn_ok returns the same for every input',
    'rlsd.data.redact.xǁRedactorǁredact_id__mutmut_24':
        "record_id.encode('UTF-8') vs encode('utf-8'): Python's codec lookup is case-insensitive, both name the same UTF-8 codec and give the same bytes, so the HMAC is identical",
    'rlsd.data.store.xǁS3Storeǁ_call__mutmut_1':
        "last = '' vs None: StoreConfig refuses retries < 1, so the loop runs at least once and every failing try assigns last before the final raise reads it",
    'rlsd.data.store.xǁS3Storeǁ_ensure_bucket__mutmut_15':
        "make_bucket(location=None): minio 7.2 uses location = base_url.region or location or 'us-east-1', and base_url.region is the same cfg.region passed to Minio(), so the bucket's region is unchanged",
    'rlsd.data.store.xǁS3Storeǁ_ensure_bucket__mutmut_17':
        'make_bucket without location: same as location=None (see _ensure_bucket__mutmut_15)',
    'rlsd.data.store.xǁS3Storeǁ_ensure_bucket__mutmut_18':
        "location=cfg.region and None gives None or '': minio then takes base_url.region (the same cfg.region) or 'us-east-1', as for the original",
    'rlsd.data.store.xǁStoreǁlist_snapshots__mutmut_5':
        "k.rsplit('/') vs k.rsplit('/', 1): the last element ([-1]) is the same whatever the number of splits",
    'rlsd.data.store.xǁStoreǁlist_snapshots__mutmut_6':
        "k.split('/', 1)[-1] vs k.rsplit('/', 1)[-1] differ only for a key nested below snapshots/, i.e. a snapshot id containing '/'; ingest (the only writer) makes ids of 20 hex digits (sha256(...)[:20]), so no stored key is nested",
    'rlsd.data.store.xǁStoreǁlist_snapshots__mutmut_8':
        "k.rsplit('/', 2)[-1] vs k.rsplit('/', 1)[-1]: the last element is the same",
    'rlsd.data.store.xǁStoreǁlist_snapshots__mutmut_9':
        "rsplit('/', 1)[+1] vs [-1]: every key listed under 'snapshots/' contains a '/', so the split has exactly 2 parts and [1] is [-1]",
    'rlsd.data.index.xǁWorkIndexǁ__contains____mutmut_6':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁ__contains____mutmut_7':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_15':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_16':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_34':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_35':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_42':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_43':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_57':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_58':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_67':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_68':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁput_ticket__mutmut_6':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁput_ticket__mutmut_7':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁstored_ticket__mutmut_6':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁstored_ticket__mutmut_7':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁwinner__mutmut_6':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁwinner__mutmut_7':
        'only the case of the SQL text changes: SQLite keywords and table/column names are case-insensitive, the same statement',
    'rlsd.data.redact.x__iban_check__mutmut_22':
        "`want is not None or <length == want>`: for a known country every cut is tried, but iban_ok refuses any prefix whose length is not the country's, so only the original's cut can pass; for an unknown one both sides are False",
    'rlsd.data.index.xǁWorkIndexǁset_winner__mutmut_3':
        "_seq += 2 instead of += 1: seq is read only by ORDER BY seq in winners_against_stored, and 2, 4, 6... order exactly as 1, 2, 3... (a replaced winner keeps its seq either way); never near SQLite's 2**63 limit",
    'rlsd.data.ingest.xǁQuarantineSpoolǁappend__mutmut_4':
        'ensure_ascii=None instead of False: json only tests its truthiness (JSONEncoder.iterencode: `if self.ensure_ascii`), so None writes the same bytes as False',
    'rlsd.data.readers.x__id_hint__mutmut_35':
        "lstrip('XX\\ufeffXX') strips the characters {X, U+FEFF}; the name was lower-cased just before, so there is no X to strip and only the BOM goes, as in the original",
    'rlsd.data.readers.x__map_keys__mutmut_15':
        "lstrip('XX\\ufeffXX') strips the characters {X, U+FEFF}; the key was lower-cased just before, so there is no X to strip and only the BOM goes, as in the original",
    'rlsd.data.readers.x__reason_key__mutmut_6':
        "re.split without maxsplit: only element [0] is used, the text before the first ':' or '(', which does not depend on how many later splits are made",
    'rlsd.data.readers.x__reason_key__mutmut_9':
        "maxsplit=2 instead of 1: only element [0] is used, the text before the first ':' or '(', which does not depend on how many later splits are made",
    'rlsd.data.readers.x__scan_line__mutmut_10':
        'text.find(\'"\', i, None) instead of (i, n): n = len(text.rstrip(\'\\r\\n\')), so text[n:] holds only \'\\r\'/\'\\n\' and no quote can be found there',
    'rlsd.data.readers.x__scan_line__mutmut_13':
        'text.find(\'"\', i) without the end n: text[n:] holds only \'\\r\'/\'\\n\' (n = len(text.rstrip(\'\\r\\n\'))), so no quote can be found there',
    'rlsd.data.readers.x__scan_line__mutmut_42':
        'at_start = None instead of False after a closing quote: at_start is only read as `if at_start and ...` (None is falsy like False) and is never returned',
    'rlsd.data.readers.x__scan_line__mutmut_43':
        'at_start = True after a closing quote: it is read only by `at_start and text[i] == \'"\'`, and the character after a closing quote is never \'"\' (a \'"\' right after a quote is taken as an escaped \'""\' before the close), so the quote branch cannot fire; the comma branch sets at_start again',
    'rlsd.data.readers.x__scan_line__mutmut_50':
        'at_start = True instead of False on opening a quote: at_start is read only outside quotes, and the only way out of quotes (the closing quote) sets it to False again; it is not returned',
    'rlsd.data.readers.x__scan_line__mutmut_58':
        "text.find(',', i, None) instead of (i, n): text[n:] holds only '\\r'/'\\n' (n = len(text.rstrip('\\r\\n'))), so no comma can be found there",
    'rlsd.data.readers.x__scan_line__mutmut_61':
        "text.find(',', i) without the end n: text[n:] holds only '\\r'/'\\n', so no comma can be found there",
    'rlsd.data.readers.x__split_markdown__mutmut_2':
        'fenced = None instead of False: falsy like False, and `not None` is True like `not False`, so the toggle and the `if fenced` test behave the same',
    'rlsd.data.readers.x__split_plain__mutmut_17':
        "after the last line nxt is 'XXXX' instead of '': neither matches _SETEXT ^(=+|-+)\\s*$, so no setext heading either way",
    'rlsd.data.readers.x__split_plain__mutmut_30':
        'nxt.strip()[1] vs [0]: _SETEXT matched nxt from its start as one repeated mark (=+ or -+) and len(nxt.strip()) >= 3 is required, so characters 0 and 1 are the same mark',
    'rlsd.data.readers.x_csv_spans__mutmut_132':
        '\'XXXX\'.join(lines) vs \'\'.join(lines): the same for a one-line span; a span of several lines starts with a line that opened a quote, so it holds a \'"\' and is non-blank either way',
    'rlsd.data.readers.x_csv_spans__mutmut_37':
        '_scan_line(text, None, 1): inq is only tested for truth (`not inq`, `if inq`) and None is falsy like False; if no quote opens, the None comes back as inq and `while inq` treats it like False',
    'rlsd.data.readers.x_csv_spans__mutmut_44':
        "damaged = None instead of '': damaged is only tested for truth (`not damaged`, `if damaged`) before a reason string is assigned, and None is falsy like ''",
    'rlsd.data.readers.x_quarantine_entry__mutmut_17':
        "redact_id('') is also called when rid is '': redact('') is ('', Counter()), unchanged, so redact_id returns ('', Counter()) at once (no key drawn), the same as the else branch",
    'rlsd.data.readers.xǁ_Sectionsǁ__init____mutmut_4':
        'bare = None instead of False: bare is only tested for truth (`if self.bare and ...`, `if self.bare`) and None is falsy like False',
    'rlsd.data.readers.xǁ_Sectionsǁflush__mutmut_6':
        'bare = None instead of False: bare is only tested for truth (`if self.bare and ...`, `if self.bare`) and None is falsy like False',
    'rlsd.data.readers.x__as_text__mutmut_5':
        'json.dumps(..., ensure_ascii=None): the encoder only tests ensure_ascii for truth (`if self.ensure_ascii:` picks the ASCII escaper), and None is falsy like False, so non-ASCII text is kept as is either way',
    'rlsd.data.readers.x__iter_raw_tickets__mutmut_116':
        'hint \'XXXX\' in the `len(rows) != 1` branch, which no input reaches: a span that is not blank and not damaged gives csv.reader at least one line, so at least one row; a second row needs the csv module to end the record (state != IN_QUOTED_FIELD) at the end of a line where _scan_line, which follows the same quoting rules, is still inside quotes (only then is a span several lines); a lone CR that ends an unquoted field raises csv.Error instead. 1.1M generated CSV files (every string of up to 6 of \'"\', \',\', \'a\', CR, LF, \' \', NUL, BOM as header or record, 200k longer random ones) never reached it',
    'rlsd.data.readers.x__iter_raw_tickets__mutmut_117':
        'break instead of continue in the `len(rows) != 1` branch, which no input reaches (see _116)',
    'rlsd.data.readers.x__iter_raw_tickets__mutmut_141':
        'padding of len(header) + len(row) blanks instead of len(header) - len(row): zip(header, ...) stops at len(header), and the row (len(row) <= len(header) here) has at least len(header) items either way, so the extra blanks are never paired',
    'rlsd.data.readers.x__iter_raw_tickets__mutmut_85':
        '`rows[0] if len(rows) == 1 or True`: for a non-damaged, non-blank span csv.reader yields exactly one row (see _116), so the condition is always true anyway; a csv.Error is caught before it',
    'rlsd.data.readers.x__iter_raw_tickets__mutmut_93':
        "'XXnot one CSV rowXX': this reason is seen only when the header span parses to len(rows) != 1, which cannot happen (see _116); after a good header header_why is never read",
    'rlsd.data.readers.x__iter_raw_tickets__mutmut_94':
        "'not one csv row': this reason is seen only when the header span parses to len(rows) != 1, which cannot happen (see _116); after a good header header_why is never read",
    'rlsd.data.readers.x__iter_raw_tickets__mutmut_95':
        "'NOT ONE CSV ROW': this reason is seen only when the header span parses to len(rows) != 1, which cannot happen (see _116); after a good header header_why is never read",
    'rlsd.data.readers.x_iter_tickets__mutmut_33':
        "refuse('file', None, ...) instead of '': quarantine_entry tests rid only for truth (`redact_id(rid[:1000]) if rid else ('', Counter())`), and None is falsy like '', so the entry's id is '' either way",
    'rlsd.data.index.xǁWorkIndexǁshards__mutmut_7':
        'only the case of the SQL column names changes: SQLite names are case-insensitive and the rows are read by position, the same statement',
    'rlsd.data.index.xǁWorkIndexǁshards__mutmut_11':
        "same as shards mutmut_7 (the 'updated' column)",
    'rlsd.data.ingest.xǁQuarantineSpoolǁwrite__mutmut_3':
        "encoding=None reads the spool with the locale's encoding, UTF-8 here and in the images (C.UTF-8)",
    'rlsd.data.ingest.xǁQuarantineSpoolǁwrite__mutmut_5':
        '"UTF-8" and "utf-8" name the same codec',
    'rlsd.data.redact.xǁRedactorǁredact_id__mutmut_8':
        'counts comes fresh from redact(record_id), which never counts ID_HASHED (only redact_id does), so `= 1` and `+= 1` both leave 1',
    'rlsd.data.index.xǁWorkIndexǁwinners_against_stored__mutmut_3':
        'only the case of the SQL text changes: SQLite keywords and table names are case-insensitive, the same statement',
    'rlsd.data.index.xǁWorkIndexǁwinners_against_stored__mutmut_4':
        'same as winners_against_stored mutmut_3 (the table name RESOLVED is resolved)',
    'rlsd.data.ingest.x_ingest__mutmut_44':
        "only the name of ingest's scratch folder changes (tmpXXXX instead of rlsd-ingest-XXXX); the folder is removed when ingest returns or fails, and nothing reads its name",
    'rlsd.data.ingest.x__ingest_into__mutmut_69':
        "refuse(..., None, ...) for a refused symlink: quarantine_entry tests the id for truth (`if rid`), so None gives the same empty id and no counts as ''",
    'rlsd.data.ingest.x_ingest__mutmut_45':
        "same as ingest mutmut_44: only the scratch folder's name changes",
    'rlsd.data.ingest.x_ingest__mutmut_97':
        "b'XXXX' instead of b'' as id key when ingest.redact is off: the Redactor is then disabled, redact() returns every text unchanged, so redact_id never hashes and the key is never used",
    'rlsd.data.ingest.xǁQuarantineSpoolǁ__init____mutmut_8':
        "encoding=None writes the spool with the locale's encoding, UTF-8 here and in the images (C.UTF-8); same as QuarantineSpool.write mutmut_3",
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_14':
        'SQLite ignores an unknown PRAGMA without error, so the scratch index keeps its default rollback journal: the same results, only more disk writes (a speed, not a result; the index is a throw-away file)',
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_15':
        'PRAGMA values are case-insensitive: journal_mode=off is journal_mode=OFF',
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_2':
        "only the name of the index's scratch folder changes (tmpXXXX instead of rlsd-ingest-XXXX); it is removed on close and nothing reads its name",
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_4':
        'same as WorkIndex.__init__ mutmut_2',
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_6':
        'same as WorkIndex.__init__ mutmut_2',
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_7':
        'same as WorkIndex.__init__ mutmut_2',
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_16':
        'PRAGMA names and values are case-insensitive in SQLite: the same setting',
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_18':
        'PRAGMA names and values are case-insensitive in SQLite: the same setting',
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_19':
        'PRAGMA names and values are case-insensitive in SQLite: the same setting',
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_21':
        'PRAGMA names and values are case-insensitive in SQLite: the same setting',
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_22':
        'PRAGMA names and values are case-insensitive in SQLite: the same setting',
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_24':
        'PRAGMA names and values are case-insensitive in SQLite: the same setting',
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_17':
        "SQLite ignores an unknown PRAGMA without error: the scratch index keeps that setting's default, the same results at another speed (see mutmut_14)",
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_20':
        "SQLite ignores an unknown PRAGMA without error: the scratch index keeps that setting's default, the same results at another speed (see mutmut_14)",
    'rlsd.data.index.x_id_hash__mutmut_4':
        'codec names are case-insensitive: "UTF-8" is "utf-8"',
    'rlsd.data.store.x_canonical_json__mutmut_15':
        'codec names are case-insensitive: "UTF-8" is "utf-8"',
    'rlsd.data.store.x_canonical_json__mutmut_5':
        'ensure_ascii=None is falsy, and json.dumps tests it only for truth: the same bytes as ensure_ascii=False',
    'rlsd.data.index.xǁWorkIndexǁ__init____mutmut_28':
        "seq only orders winners (ORDER BY seq, first-seen order kept by the upsert): starting it at 1 instead of 0 "
        "shifts every value alike, the same order",
    'rlsd.data.redact.xǁRedactorǁredact__mutmut_7':
        "_NEEDS is a pre-filter: each listed rule's pattern cannot match a text holding none of its words "
        "(case-folded), so running every rule (needs None) finds the same spans, only slower",
    'rlsd.data.redact.xǁRedactorǁredact__mutmut_8':
        'same as Redactor.redact mutmut_7 (_NEEDS has no None key: needs is always None)',
    'rlsd.data.redact.xǁRedactorǁredact__mutmut_17':
        "a speed short-cut: both AWS_SECRET_KEY patterns need 40 characters of key ([A-Za-z0-9/+]{40}), so a text "
        "under 40 characters cannot match; running the rule anyway finds nothing more",
    'rlsd.data.redact.xǁRedactorǁredact__mutmut_18':
        'same as Redactor.redact mutmut_17',
    # end data
}


def _killed_since_by(test: str, *keys: str) -> dict[str, str]:
    return dict.fromkeys(keys, test)


# Survivors of a measured run that a test committed after that run kills (checked by hand on a clone); the next
# run of the group counts them as killed and the entry can go.
KILLED_SINCE: dict[str, str] = {
    **_killed_since_by('tests/data/test_ingest_mutants.py::test_redactions_in_a_refused_symlinks_reason_are_counted_in_its_report',
                       'rlsd.data.ingest.x__ingest_into__mutmut_44'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_file_sha256_reads_a_large_file_in_blocks_of_at_most_one_mib',
                       'rlsd.data.store.x_file_sha256__mutmut_11',
                       'rlsd.data.store.x_file_sha256__mutmut_13',
                       'rlsd.data.store.x_file_sha256__mutmut_14'),
    **_killed_since_by("tests/data/test_store_index_survivors.py (the unknown kind's message, put_objects' bytes-do-not-hash message)",
                       'rlsd.data.index.xǁWorkIndexǁ_table__mutmut_2',
                       'rlsd.data.store.xǁStoreǁput_objects__mutmut_5',
                       'rlsd.data.store.xǁStoreǁput_objects__mutmut_6'),
    **_killed_since_by('tests/data/test_ticket_reader_survivors.py::test_replaced_bytes_are_summed_over_every_line_of_a_jsonl_export',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_10'),
    **_killed_since_by('tests/data/test_ticket_reader_survivors.py::test_csv_record_refused_by_the_csv_module_names_the_error_and_its_id_and_reading_goes_on',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_109',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_110',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_111',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_112',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_113'),
    **_killed_since_by('tests/data/test_ticket_reader_survivors.py::test_jsonl_line_too_long_is_refused_and_the_next_line_is_read',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_28'),
    **_killed_since_by('tests/data/test_ticket_reader_survivors.py::test_jsonl_raw_text_loses_its_line_end_and_nothing_else',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_30',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_36'),
    **_killed_since_by('tests/data/test_ticket_reader_survivors.py::test_jsonl_nested_too_deeply_is_refused_with_its_reason_and_the_next_line_is_read',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_43',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_44',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_45',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_46',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_47'),
    **_killed_since_by('tests/data/test_ticket_reader_survivors.py::test_csv_header_refused_by_the_csv_module_names_the_error_in_every_record_it_refuses',
                       'rlsd.data.readers.x__iter_raw_tickets__mutmut_89'),
    **_killed_since_by('tests/data/test_ticket_reader_survivors.py::test_parse_time_is_utc_in_a_local_time_zone_ahead_of_utc',
                       'rlsd.data.readers.x_parse_time__mutmut_35',
                       'rlsd.data.readers.x_parse_time__mutmut_37',
                       'rlsd.data.readers.x_parse_time__mutmut_38'),
    **_killed_since_by('tests/data/test_readers_survivors.py::test_links_that_are_not_json_lose_only_their_brackets',
                       'rlsd.data.readers.x__as_links__mutmut_17'),
    **_killed_since_by('tests/data/test_readers_survivors.py::test_a_quote_at_the_start_of_a_continuation_line_closes_the_field',
                       'rlsd.data.readers.x__scan_line__mutmut_16',
                       'rlsd.data.readers.x__scan_line__mutmut_17'),
    **_killed_since_by('tests/data/test_readers_survivors.py::test_a_doubled_quote_at_the_end_of_a_line_is_an_escaped_quote_not_a_close',
                       'rlsd.data.readers.x__scan_line__mutmut_21'),
    **_killed_since_by('tests/data/test_readers_survivors.py::test_an_empty_quoted_field_opens_and_closes_at_once',
                       'rlsd.data.readers.x__scan_line__mutmut_53'),
    **_killed_since_by('tests/data/test_readers_survivors.py::test_a_line_starting_with_a_comma_counts_its_empty_first_field',
                       'rlsd.data.readers.x__scan_line__mutmut_64',
                       'rlsd.data.readers.x__scan_line__mutmut_65'),
    **_killed_since_by('tests/data/test_readers_survivors.py::test_jsonl_count_drops_a_second_bom_on_the_first_line_only',
                       'rlsd.data.readers.x_count_records__mutmut_20',
                       'rlsd.data.readers.x_count_records__mutmut_21'),
    **_killed_since_by('tests/data/test_readers_survivors.py::test_csv_count_of_a_file_whose_first_line_is_one_byte',
                       'rlsd.data.readers.x_count_records__mutmut_66'),
    **_killed_since_by('tests/data/test_readers_survivors.py::test_csv_count_refuses_spans_that_leave_lines_out',
                       'rlsd.data.readers.x_count_records__mutmut_75'),
    **_killed_since_by('tests/data/test_readers_survivors.py::test_the_field_count_of_a_multi_line_record_is_checked_against_the_header_only',
                       'rlsd.data.readers.x_csv_spans__mutmut_129'),
    **_killed_since_by('tests/data/test_readers_survivors.py::test_unreadable_pdf_reason_names_the_error_type',
                       'rlsd.data.readers.x_parse_manual__mutmut_86'),
    **_killed_since_by('tests/data/test_readers_survivors.py::test_quarantine_id_is_read_up_to_its_first_1000_characters',
                       'rlsd.data.readers.x_quarantine_entry__mutmut_19'),
    **_killed_since_by('tests/data/test_readers_survivors.py::test_quarantine_raw_text_is_redacted_up_to_its_first_8000_characters',
                       'rlsd.data.readers.x_quarantine_entry__mutmut_29'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_unknown_kind_is_refused_with_the_kinds_named',
                       'rlsd.data.index.x_iter_index__mutmut_2'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_a_corrupt_shard_is_named_by_its_first_12_hex_digits',
                       'rlsd.data.index.x_iter_index__mutmut_24'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_a_manifest_without_a_format_key_is_read_as_format_1',
                       'rlsd.data.index.x_iter_index__mutmut_4',
                       'rlsd.data.index.x_iter_index__mutmut_6',
                       'rlsd.data.index.x_iter_index__mutmut_9',
                       'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_2',
                       'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_4',
                       'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_7'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_micros_is_exact_far_from_the_epoch',
                       'rlsd.data.index.x_micros__mutmut_1'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_winners_come_back_in_the_order_ids_were_first_read',
                       'rlsd.data.index.xǁWorkIndexǁset_winner__mutmut_1',
                       'rlsd.data.index.xǁWorkIndexǁset_winner__mutmut_2'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_writes_do_not_use_the_system_temp_folder',
                       'rlsd.data.store.xǁLocalStoreǁ_put__mutmut_10',
                       'rlsd.data.store.xǁLocalStoreǁ_put__mutmut_12'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_a_write_in_flight_is_a_hidden_file_in_the_keys_folder',
                       'rlsd.data.store.xǁLocalStoreǁ_put__mutmut_11',
                       'rlsd.data.store.xǁLocalStoreǁ_put__mutmut_13',
                       'rlsd.data.store.xǁLocalStoreǁ_put__mutmut_14',
                       'rlsd.data.store.xǁLocalStoreǁ_put__mutmut_15'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_a_write_whose_folder_vanishes_reports_the_failed_rename',
                       'rlsd.data.store.xǁLocalStoreǁ_put__mutmut_27',
                       'rlsd.data.store.xǁLocalStoreǁ_put__mutmut_29'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_a_corrupt_object_tells_the_user_to_reingest',
                       'rlsd.data.store.xǁStoreǁget_object__mutmut_8',
                       'rlsd.data.store.xǁStoreǁget_object__mutmut_9'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_missing_snapshot_of_an_empty_store_lists_none_known',
                       'rlsd.data.store.xǁStoreǁread_manifest__mutmut_12',
                       'rlsd.data.store.xǁStoreǁread_manifest__mutmut_13'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_resolve_defaults_to_the_latest_snapshot',
                       'rlsd.data.store.xǁStoreǁresolve__mutmut_1',
                       'rlsd.data.store.xǁStoreǁresolve__mutmut_2'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_folder_created_stamp_is_utc_in_any_time_zone',
                       'rlsd.data.store.xǁStoreǁupload_folder__mutmut_66'),
    **_killed_since_by('tests/test_evaluate_exact.py::test_report_opens_with_the_recipes_note / ::test_run_evaluation_writes_the_configured_note (eval.note one paragraph, escaped in HTML, absent when empty; run_evaluation passes it)',
                       'rlsd.evaluate.x_run_evaluation__mutmut_224',
                       'rlsd.evaluate.x_write_report__mutmut_134',
                       'rlsd.evaluate.x_write_report__mutmut_136',
                       'rlsd.evaluate.x_write_report__mutmut_143',
                       'rlsd.evaluate.x_write_report__mutmut_145',
                       'rlsd.evaluate.x_write_report__mutmut_229',
                       'rlsd.evaluate.x_write_report__mutmut_230'),
    **_killed_since_by('tests/test_first_version_gate.py (the reasons word for word, leakage kept under needs_gain, a non-object comparison, a comparison without interval)',
                       'rlsd.registry.x__first_version_gates__mutmut_3',
                       'rlsd.registry.x__first_version_gates__mutmut_9',
                       'rlsd.registry.x__first_version_gates__mutmut_10',
                       'rlsd.registry.x__first_version_gates__mutmut_11',
                       'rlsd.registry.x__first_version_gates__mutmut_12',
                       'rlsd.registry.x__first_version_gates__mutmut_15',
                       'rlsd.registry.x__first_version_gates__mutmut_30',
                       'rlsd.registry.x__first_version_gates__mutmut_52',
                       'rlsd.registry.x__first_version_gates__mutmut_57'),
    **_killed_since_by('tests/data/test_ingest_mutants.py::test_an_incremental_ingest_offers_only_objects_the_store_lacks',
                       'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_1',
                       'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_5',
                       'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_6',
                       'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_8',
                       'rlsd.data.index.xǁWorkIndexǁload_previous__mutmut_9'),
    **_killed_since_by('tests/reliability/test_redaction_hostile.py::test_the_word_after_an_iban_is_kept_exactly',
                       'rlsd.data.redact.x__iban_check__mutmut_17',
                       'rlsd.data.redact.x__iban_check__mutmut_18',
                       'rlsd.data.redact.x__iban_check__mutmut_28',
                       'rlsd.data.redact.x__iban_check__mutmut_29'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_canonical_json_writes_non_ascii_text_as_utf8_not_escapes',
                       'rlsd.data.store.x_canonical_json__mutmut_9',
                       'rlsd.data.store.x_canonical_json__mutmut_13'),
    **_killed_since_by('tests/data/test_store_index_survivors.py::test_folder_names_with_capitals_are_accepted',
                       'rlsd.data.store.x__check_folder_name__mutmut_9'),
    **_killed_since_by('tests/data/test_store_index_survivors.py (reads on the caller\'s thread at parallelism 1, a '
                       'pool from four objects, never more reads in flight than the parallelism)',
                       *(f'rlsd.data.store.xǁStoreǁ_map__mutmut_{n}' for n in (1, 2, 3, 4, 5, 7))),
}

# The one-line mutants named in issue 21 (each applied by hand to a clone and run against the named test, which
# failed on it; see also tests/test_mutants_named.py).
NAMED = [
    ("quarantined records stored with their raw text unredacted (data/readers.py quarantine_entry)",
     "tests/test_mutants_named.py::test_quarantined_records_are_stored_redacted"),
    ("`password=abc123` kept: a minimum length on password values (data/redact.py)",
     "tests/test_mutants_named.py::test_short_passwords_are_redacted"),
    ("teacher log-probs with the first prompt token masked out (train.py left_pad / completion_logits)",
     "tests/test_train_helpers.py::test_left_pad_exact, ::test_logps_pass_gives_each_rows_own_log_probs"),
    ("store object hash check off (data/store.py get_object); the old `match=\"corrupt\"` matched the tmp folder",
     "tests/test_mutants_named.py::test_a_tampered_object_is_refused"),
    ("label choices matched as substrings (verifiers/label.py)",
     "tests/test_mutants_named.py::test_label_choices_are_whole_words_not_substrings"),
    ("JSON `true` accepted where `1` is expected (verifiers/json_answer.py _equal)",
     "tests/test_mutants_named.py::test_json_true_is_not_the_number_one"),
    ("a bare number refused on tasks with a unit (verifiers/numeric.py)",
     "tests/test_mutants_named.py::test_a_bare_number_passes_on_a_task_with_a_unit"),
    ("teacher re-synced after optimizer step 1 instead of 10 (train.py `opt_step % interval`)",
     "tests/test_train_updates.py::test_teacher_snapshot_equals_the_policy_exactly_at_the_tenth_optimizer_step"),
    ("clip_frac counting ties (core/losses.py `loss2 >= loss1`)",
     "tests/core/test_losses.py::test_policy_statistics_by_hand (core mutant x_policy_loss__mutmut_79: killed)"),
]

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 35: "suspicious",
          36: "timeout", 37: "caught by type check", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
          -11: "segfault", -9: "segfault", None: "not checked"}


def _toml_list(xs: list[str]) -> str:
    return "[" + ", ".join(json.dumps(x, ensure_ascii=False) for x in xs) + "]"


def mutmut_table(group: dict) -> str:
    return "\n".join([
        "[tool.mutmut]",
        f"source_paths = {_toml_list(group['source'])}",
        f"pytest_add_cli_args_test_selection = {_toml_list(group['tests'])}",
        *([f"only_mutate = {_toml_list(group['only'])}"] if group.get("only") else []),
        'also_copy = ["tests/", "src/", "components/", "pipelines/", "data/sample/", "configs/"]',
        # --tb=no: a failing test's traceback through a mutated module (every mutant's copy of every function:
        # data/ingest.py becomes 143,000 lines) took pytest ~60 s to draw, for each killed mutant
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x", "--tb=no"]',
        # a mutant's CPU-time limit is 2 x multiplier x (its tests' time + 1 s): at mutmut's 15, a mutant that
        # loops forever (`while i < n` never advancing) held a core for 5-6 CPU minutes; 4 still leaves a slow
        # but finishing mutant 8x its tests' CPU time (the estimate is wall time, measured on loaded cores)
        "timeout_multiplier = 4.0",
        "",
    ])


def _with_table(pyproject: str, table: str) -> str:
    """pyproject.toml text with its [tool.mutmut] table replaced by ``table``."""
    cut = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", pyproject)
    return cut.rstrip("\n") + "\n\n" + table


def _mutant_diffs(clone: Path, keys: list[str]) -> dict[str, str]:
    """The diff of each mutant against its original function, read from the mutants/ sources mutmut wrote (the
    ``x_<f>__mutmut_orig`` and ``x_<f>__mutmut_<n>`` copies of each function), instead of one ``mutmut show``
    process per mutant (1-2 s each: 10-20 minutes for a group with hundreds of survivors)."""
    import ast
    import difflib

    by_module: dict[str, list[str]] = {}
    for k in keys:
        by_module.setdefault(k.split(".x", 1)[0] if ".x" in k else k.rsplit(".", 1)[0], []).append(k)
    out: dict[str, str] = {}
    for module, ks in by_module.items():
        rel = Path("src", *module.split("."))
        f = clone / "mutants" / (str(rel) + ".py")
        if not f.is_file():
            f = clone / "mutants" / rel / "__init__.py"
        if not f.is_file():
            continue
        lines = f.read_text().splitlines()
        funcs = {n.name: lines[n.lineno - 1 - len(n.decorator_list):n.end_lineno]
                 for n in ast.walk(ast.parse("\n".join(lines))) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for k in ks:
            name = k[len(module) + 1:]  # x_f__mutmut_3, or xǁClassǁmethod__mutmut_3
            base, _, _ = name.rpartition("__mutmut_")
            mut, orig = funcs.get(name), funcs.get(base + "__mutmut_orig")
            if mut is None or orig is None:
                continue
            plain = base.split("ǁ")[-1] if "ǁ" in base else base.removeprefix("x_")
            src = f.relative_to(clone / "mutants")
            norm = lambda lines, n: [ln.replace(n, plain) for ln in lines]
            out[k] = "\n".join(difflib.unified_diff(norm(orig, base + "__mutmut_orig"), norm(mut, name),
                                                     f"a/{src}", f"b/{src}", lineterm="", n=1))
    return out


def run_group(name: str, keep: bool, jobs: int = 0) -> dict:
    g = GROUPS[name]
    tmp = Path(tempfile.mkdtemp(prefix=f"rlsd-mutation-{name}-"))
    repo = tmp / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                            text=True).stdout.strip()
    pp = repo / "pyproject.toml"
    pp.write_text(_with_table(pp.read_text(), mutmut_table(g)))
    names = g["names"]
    if g.get("skip"):  # every top-level function of the source file but these
        import ast

        src = repo / g["source"][0]
        module = ".".join(Path(g["source"][0]).with_suffix("").parts[1:])
        funcs = [n.name for n in ast.parse(src.read_text()).body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        names = [f"{module}.x_{f}__mutmut_*" for f in funcs if f not in g["skip"]]
    log = tmp / "mutmut.log"
    print(f"[{name}] mutmut on {commit[:10]} in {repo} (log {log})", flush=True)
    t0 = dt.datetime.now()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    with log.open("w") as f:
        p = subprocess.Popen([str(MUTMUT), "run", *(["--max-children", str(jobs)] if jobs else []), *(names or [])], cwd=repo, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        for chunk in iter(lambda: p.stdout.read(65536), b""):  # the spinner writes megabytes of \r lines
            f.write(chunk.replace(b"\r", b"\n").decode(errors="replace"))
        p.wait()
    minutes = (dt.datetime.now() - t0).total_seconds() / 60
    if p.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise RuntimeError(f"[{name}] mutmut exited {p.returncode} (clone kept: {tmp}); last lines:\n{tail}")
    statuses: dict[str, str] = {}
    for meta in (repo / "mutants").rglob("*.meta"):
        for key, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if names is None or any(fnmatch.fnmatch(key, pat) for pat in names):
                statuses[key] = STATUS.get(code, "suspicious")
    keys = sorted(k for k, s in statuses.items() if s not in ("killed", "timeout"))
    diffs = _mutant_diffs(repo, keys)
    survivors = {key: {"status": statuses[key], "diff": diffs.get(key, "")[-2500:]} for key in keys}
    result = {"group": name, "commit": commit, "measured_at": t0.strftime("%Y-%m-%d %H:%M UTC"),
              "minutes": round(minutes, 1), "source": g["source"], "tests": g["tests"], "names": g["names"],
              "skip": g.get("skip", []),
              "mutmut_exit": p.returncode, "counts": _counts(statuses), "survivors": survivors}
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def rerun_survivors(name: str, clone: Path) -> dict:
    """Bring a kept clone (``--keep``) of an earlier run of ``name`` to HEAD and run only that run's survivors
    again (tests are only ever added, so a killed mutant stays killed): the JSON then names both commits."""
    g = GROUPS[name]
    old = json.loads((OUT_DIR / f"{name}.json").read_text())
    subprocess.run(["git", "checkout", "-q", "--", "pyproject.toml"], cwd=clone, check=True)
    subprocess.run(["git", "pull", "-q", "--ff-only"], cwd=clone, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, check=True, capture_output=True,
                            text=True).stdout.strip()
    changed = subprocess.run(["git", "diff", "--name-only", old["commit"], commit, "--", *g["source"]], cwd=clone,
                             check=True, capture_output=True, text=True).stdout.split()
    if changed:
        raise RuntimeError(f"[{name}] the mutated source changed since {old['commit'][:10]} ({changed}): run the group")
    pp = clone / "pyproject.toml"
    pp.write_text(_with_table(pp.read_text(), mutmut_table(g)))
    for t in g["tests"]:  # mutmut copies tests into mutants/ only when it generates them: refresh the copies
        if t.startswith("tests/") and (clone / t).exists():
            dst = clone / "mutants" / t
            if (clone / t).is_dir():
                shutil.copytree(clone / t, dst, dirs_exist_ok=True)
            else:
                shutil.copy2(clone / t, dst)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    names = sorted(old["survivors"])
    t0 = dt.datetime.now()
    with (clone.parent / "mutmut-rerun.log").open("w") as f:
        p = subprocess.run([str(MUTMUT), "run", *names], cwd=clone, env=env, stdout=f, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise RuntimeError(f"[{name}] mutmut exited {p.returncode}; see {clone.parent / 'mutmut-rerun.log'}")
    codes = {}
    for meta in (clone / "mutants").rglob("*.meta"):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    counts = dict(old["counts"])
    survivors = {}
    for key in names:
        st = STATUS.get(codes.get(key), "suspicious")
        if st in ("killed", "timeout"):
            counts[old["survivors"][key]["status"]] -= 1
            counts[st] = counts.get(st, 0) + 1
        else:
            survivors[key] = old["survivors"][key]
    minutes = (dt.datetime.now() - t0).total_seconds() / 60
    return {**old, "rerun_commit": commit, "rerun_at": t0.strftime("%Y-%m-%d %H:%M UTC"),
            "rerun_minutes": round(minutes, 1), "counts": {k: v for k, v in counts.items() if v},
            "survivors": survivors}


def collect_partial(name: str, clone: Path, started: str) -> dict:
    """The results so far of a run that was stopped (its clone kept): mutants not run yet count as
    "not checked" and the kill rate is given over the mutants that were run."""
    g = GROUPS[name]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, check=True, capture_output=True,
                            text=True).stdout.strip()
    names = g["names"]
    if g.get("skip"):
        import ast

        module = ".".join(Path(g["source"][0]).with_suffix("").parts[1:])
        funcs = [n.name for n in ast.parse((clone / g["source"][0]).read_text()).body
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        names = [f"{module}.x_{f}__mutmut_*" for f in funcs if f not in g["skip"]]
    statuses = {}
    for meta in (clone / "mutants").rglob("*.meta"):
        for key, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            if names is None or any(fnmatch.fnmatch(key, pat) for pat in names):
                statuses[key] = STATUS.get(code, "suspicious")
    keys = sorted(k for k, st in statuses.items() if st not in ("killed", "timeout", "not checked"))
    diffs = _mutant_diffs(clone, keys)
    survivors = {key: {"status": statuses[key], "diff": diffs.get(key, "")[-2500:]} for key in keys}
    partial = any(st == "not checked" for st in statuses.values())
    return {"group": name, "commit": commit, "measured_at": started, "minutes": None, "source": g["source"],
            "tests": g["tests"], "names": g["names"], "skip": g.get("skip", []), "mutmut_exit": None, "partial": partial,
            "counts": _counts(statuses), "survivors": survivors}


def _counts(statuses: dict[str, str]) -> dict[str, int]:
    c: dict[str, int] = {}
    for s in statuses.values():
        c[s] = c.get(s, 0) + 1
    return c


def _rate(r: dict) -> tuple[int, int, int, float]:
    """(mutants, killed, survived, kill rate); mutants not run yet (a stopped run) are left out of all four."""
    c = r["counts"]
    total = sum(v for k, v in c.items() if k != "not checked")
    killed = c.get("killed", 0) + c.get("timeout", 0)
    tested = total - c.get("skipped", 0)
    return total, killed, total - killed, (100.0 * killed / tested if tested else 0.0)


def write_report() -> None:
    results = [json.loads(p.read_text()) for p in sorted(OUT_DIR.glob("*.json"))]
    results.sort(key=lambda r: list(GROUPS).index(r["group"]) if r["group"] in GROUPS else 99)
    lines = ["# Mutation testing (issue 21)", "",
             "Written by `scripts/mutation.py` (`make mutation`; mutmut 3). A mutant is a one-token change of the",
             "code (an operator, a constant, a string, a dropped argument); it is *killed* when a selected test fails.",
             "Kill rate = (killed + timeout) / mutants. Target: >= 90% per group. Each group is measured on the",
             "commit named in its row (a clone of HEAD at the time of the run).", "",
             "| group | commit | measured | minutes | mutants | killed | survived | kill rate | equivalent (explained) "
             "| killed by tests committed since | not explained | kill rate counting those, equivalents set aside |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        total, killed, surv, rate = _rate(r)
        eq = sum(1 for k in r["survivors"] if k in EQUIVALENT)
        later = sum(1 for k in r["survivors"] if k in KILLED_SINCE and k not in EQUIVALENT)
        adj = 100.0 * (killed + later) / (total - eq) if total - eq else 0.0
        commit = f"`{r['commit'][:10]}`" + (f", survivors re-run on `{r['rerun_commit'][:10]}`" if r.get("rerun_commit")
                                             else "")
        if r.get("partial"):
            commit += f" (**stopped**: {r['counts'].get('not checked', 0)} mutants not run)"
        lines.append(f"| {r['group']} | {commit} | {r['measured_at']} | {r['minutes'] or '-'} | {total} | {killed} "
                     f"| {surv} | {rate:.1f}% | {eq} | {later} | {surv - eq - later} | {adj:.1f}% |")
    missing = [g for g in GROUPS if g not in {r["group"] for r in results}]
    lines += ["", "Not measured yet: " + (", ".join(missing) if missing else "none")
              + " (see benchmarks/README.md for how to run a group).", "",
              "## The mutants named in issue 21", "", "| mutant | killed by |", "|---|---|"]
    lines += [f"| {m} | `{t}` |" for m, t in NAMED] + [""]
    for r in results:
        lines += [f"## {r['group']}", "",
                  f"Source: {', '.join('`' + s + '`' for s in r['source'])}. Tests: `{' '.join(r['tests'])}`."]
        if r["names"]:
            lines.append("Mutants run: " + ", ".join(f"`{n}`" for n in r["names"]) + ".")
        if r.get("skip"):
            lines.append("Functions not mutated (reason in scripts/mutation.py GROUPS): "
                         + ", ".join(f"`{n}`" for n in r["skip"]) + ".")
        lines.append(f"Status counts: {', '.join(f'{k} {v}' for k, v in sorted(r['counts'].items()))}.")
        lines.append("")
        if not r["survivors"]:
            lines += ["No survivors.", ""]
            continue
        lines.append("Survivors:")
        lines.append("")
        for key, s in r["survivors"].items():
            why = EQUIVALENT.get(key)
            later = KILLED_SINCE.get(key)
            lines.append(f"- `{key}` ({s['status']}): " + (f"equivalent: {why}" if why else
                                                          f"killed by {later}, committed after the run" if later else "**not explained**"))
            diff = [ln for ln in s["diff"].splitlines() if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---"))]
            lines += ["  ```diff"] + [f"  {ln}" for ln in diff[:8]] + ["  ```"]
        lines.append("")
    REPORT.write_text("\n".join(lines) + "\n")
    print(f"wrote {REPORT.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("groups", nargs="*", help=f"groups to run (default: all): {', '.join(GROUPS)}")
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone (its mutants/ folder) to inspect")
    ap.add_argument("--report-only", action="store_true", help="rebuild mutation.md from the saved JSON files")
    ap.add_argument("--collect-partial", metavar="CLONE", type=Path,
                    help="with one GROUP: save the results so far of a stopped run whose clone was kept")
    ap.add_argument("--started", default="", help="with --collect-partial: when the stopped run started")
    ap.add_argument("--rerun-survivors", metavar="CLONE", type=Path,
                    help="with one GROUP: bring CLONE (kept by --keep) to HEAD and run only the saved survivors again")
    ap.add_argument("--jobs", type=int, default=0,
                    help="mutants tested at once (mutmut --max-children; default: one per core)")
    a = ap.parse_args(argv)
    unknown = [g for g in a.groups if g not in GROUPS]
    if unknown:
        ap.error(f"unknown group(s) {unknown}; known: {', '.join(GROUPS)}")
    if not MUTMUT.exists():
        ap.error(f"{MUTMUT} not found: pip install -e '.[mutation]' (make mutation does)")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    if a.collect_partial:
        r = collect_partial(a.groups[0], a.collect_partial, a.started)
        (OUT_DIR / f"{a.groups[0]}.json").write_text(json.dumps(r, indent=1, ensure_ascii=False) + "\n")
    elif a.rerun_survivors:
        if len(a.groups) != 1:
            ap.error("--rerun-survivors takes exactly one GROUP")
        r = rerun_survivors(a.groups[0], a.rerun_survivors)
        (OUT_DIR / f"{a.groups[0]}.json").write_text(json.dumps(r, indent=1, ensure_ascii=False) + "\n")
        total, killed, surv, rate = _rate(r)
        print(f"[{a.groups[0]}] after re-running survivors: {total} mutants, {killed} killed, {surv} survived: {rate:.1f}%")
    elif not a.report_only:
        for name in a.groups or list(GROUPS):
            try:
                r = run_group(name, a.keep, a.jobs)
            except RuntimeError as e:  # one group's failure does not stop the others
                print(e, flush=True)
                continue
            (OUT_DIR / f"{name}.json").write_text(json.dumps(r, indent=1, ensure_ascii=False) + "\n")
            total, killed, surv, rate = _rate(r)
            print(f"[{name}] {total} mutants, {killed} killed, {surv} survived: {rate:.1f}% ({r['minutes']} min)")
    write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
