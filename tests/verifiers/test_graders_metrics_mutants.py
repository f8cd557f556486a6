"""Free-text graders, exact values at the edges (issue 21's survivors): the answer and anti-hacking rules
(echo, length, repetition), the metrics (blank text, BLEU's case, the ROUGE tokenizer's stemming, the
embedder's 512-token cut), the rubric's corner cases, and the local judge's rules -- its prompt, cache
key, greedy 4-token generation, batching, time bound, parse-failure count and local-only loading.

The judge's model is a tiny random one (built once per module); where a test needs a known reply, a
scripted stand-in for the model's ``generate`` answers instead, so the expected scores are exact."""

from __future__ import annotations

import hashlib
import shutil
import types

import pytest

from rlsd.tasks import Task
from rlsd.verifiers import graders as G

REF = "Cleared the print spooler queue, then removed and re-added the printer on the print server."
PLAIN_PROMPT = (
    "You grade a support answer against the verified resolution.\n"
    "Verified resolution: {reference}\n"
    "Answer to grade: {answer}\n"
    "Does the answer give the same resolution? Reply with one integer from 0 (wrong or unrelated) "
    "to 10 (the same resolution).\nScore:")


def _task(prompt: str, answer: str, spec=None) -> Task:
    return Task(id="t", prompt=prompt, privileged_context="", answer=answer, verifier="text",
                verifier_args={"grader": spec} if spec is not None else {})


# --- the answer and the anti-hacking rules -------------------------------------------------------


def test_answer_markers_are_looked_for_in_the_first_32000_characters_only():
    filler = "y" * 32000
    completion = "Answer: kept " + filler + " Answer: ignored"  # the second marker starts past 32,000
    assert G.answer_text(completion) == "kept " + "y" * 7995  # cut to MAX_ANSWER_CHARS = 8000
    assert G.answer_text("Answer: a " + "y" * 100 + " Answer: b") == "b"  # within reach: the last one wins


def test_token_f1_of_disjoint_words_is_zero():
    assert G.token_f1("printer rebooted", "queue cleared") == 0.0
    assert G.token_f1("a", "") == 0.0 and G.token_f1("", "") == 0.0


def test_echo_needs_f1_to_the_question_at_least_half_and_above_f1_to_the_reference():
    # f1("a x y z", "a b c d") = 1/4: below 0.5, even though the reference shares nothing
    assert G.is_echo("a x y z", _task("a b c d", "q")) is False
    # f1("a c", "a b") = 2 * (1/2 * 1/2) / 1 = 0.5 exactly: an echo (>= 0.5)
    assert G.is_echo("a c", _task("a b", "z")) is True
    # the question and the reference are the same words: 1.0 to both, not higher to the question
    assert G.is_echo("a b", _task("a b", "a b")) is False


def test_length_allowance_is_three_times_a_long_reference():
    ref20 = " ".join(f"r{i}" for i in range(20))  # r = 20: L = max(60, 50) = 60
    assert G.length_factor(" ".join(["x"] * 60), ref20) == 1.0
    assert G.length_factor(" ".join(["x"] * 80), ref20) == pytest.approx(60 / 80)
    assert G.length_factor(" ".join(["x"] * 120), ref20) == pytest.approx(0.5)
    # an empty reference: L = max(0, 30) = 30
    assert G.length_factor(" ".join(["x"] * 30), "") == 1.0
    assert G.length_factor(" ".join(["x"] * 60), "") == pytest.approx(0.5)


def test_repetition_factor_counts_distinct_word_trigrams_from_three_trigrams_on():
    # aab, abb, bbb: 3 distinct of 3 (word pairs would repeat: ab twice)
    assert G.repetition_factor("a a b b b") == 1.0
    # aaa x 3: 1 distinct of 3 -> (1/3) / 0.8
    assert G.repetition_factor("a a a a a") == pytest.approx((1 / 3) / 0.8)
    # fewer than 3 trigrams: untouched, exactly 1
    assert G.repetition_factor("a a a a") == 1.0
    assert G.repetition_factor("a b") == 1.0
    assert G.repetition_factor("") == 1.0


# --- rubric corner cases --------------------------------------------------------------------------


def test_rubric_pattern_matches_regardless_of_case():
    items = [{"pattern": r"PRINT\s+SERVER"}]
    # 4 words, 2 inside the match: d = 0.5, no stuffing discount
    assert G.rubric(items, "restarted the print server") == 1.0


def test_rubric_without_positive_weight_or_without_words_scores_zero():
    assert G.rubric([{"phrase": "reboot", "weight": 0}], "reboot the printer") == 0.0
    assert G.rubric([{"phrase": "reboot", "weight": -1}], "reboot the printer") == 0.0
    assert G.rubric([{"phrase": "reboot"}], "?!") == 0.0
    assert G.rubric([{"pattern": "[?]"}], "?!") == 0.0
    # through the grader: an answer of punctuation alone is not empty, but it has no words and pays nothing
    spec = {"grader": "rubric", "items": [{"phrase": "spooler queue"}]}
    assert G.grade(spec, "Answer: ?!", _task("What fixed the printer?", REF)) == 0.0


def test_rubric_overlapping_matches_count_the_answer_as_all_key_phrases():
    # "spooler queue" and "queue cleared" both match "spooler queue cleared": 4 words inside of 3, d = 1
    items = [{"phrase": "spooler queue"}, {"phrase": "queue cleared"}]
    assert G.rubric(items, "spooler queue cleared") == 0.0


def test_rubric_pattern_with_groups_counts_the_whole_match_as_inside():
    # a bare list of key phrases pays nothing whether or not a pattern has groups (findall gave the groups:
    # one word of "re-added the printer" inside, so the list paid 1.0)
    stuffed = "cleared the spooler queue re-added the printer " * 3
    for pattern in (r"re-?added the printer", r"re-?(added|installed) the printer", r"re-?added the printer( driver)?"):
        assert G.rubric([{"phrase": "cleared the spooler queue"}, {"pattern": pattern}], stuffed) == 0.0, pattern
    written = "I cleared the spooler queue on the workstation, then re-added the printer and printed a test page."
    assert G.rubric([{"phrase": "cleared the spooler queue"}, {"pattern": r"re-?(added|installed) the printer"}],
                    written) == 1.0


# --- metrics -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    from rlsd.models import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-judge")
    build_tiny_model(out, hidden_size=32, num_layers=1, num_heads=1, seed=0)
    return out


@pytest.mark.parametrize("metric", ["rouge_l", "bleu", "token_f1", "fuzzy"])
def test_similarity_of_blank_text_is_zero(metric):
    assert G.similarity(metric, "", REF) == 0.0
    assert G.similarity(metric, "   ", REF) == 0.0
    assert G.similarity(metric, REF, " \n") == 0.0


def test_embedding_similarity_of_blank_text_is_zero(judge_dir):
    model = str(judge_dir)
    assert G.similarity("embedding", "", REF, model) == 0.0
    assert G.similarity("embedding", "   ", REF, model) == 0.0  # the tiny model's cosine here would be 0.41
    assert G.similarity("embedding", REF, " \n", model) == 0.0


def test_bleu_ignores_case():
    assert G.similarity("bleu", REF.upper(), REF) == pytest.approx(1.0)


def test_similarity_names_an_unknown_metric():
    with pytest.raises(ValueError, match="^unknown similarity metric 'meteor'$"):
        G.similarity("meteor", "a", "b")


def test_rouge_tokenizer_stems_ascii_words_of_four_letters_or_more_only():
    # Porter would give printer, wa, run, café: 3-letter and non-ASCII words are left as they are
    assert G._Tokenizer().tokenize("The PRINTERS was runs cafés") == ["the", "printer", "was", "run", "cafés"]


def test_embedding_reads_the_first_512_tokens_only(judge_dir):
    e = G._Embedder(str(judge_dir))
    head = "1" * 512  # the tiny tokenizer splits digits: one token each
    a, b = e.embed(head + "2" * 20), e.embed(head + "3" * 20)
    assert e.tok(head + "2" * 20)["input_ids"][511:513] == [18, 19]  # token 513 is the first that differs
    assert bool((a == b).all()) and bool((a == e.embed(head)).all())


def test_models_are_loaded_from_local_files_only(judge_dir, monkeypatch):
    import transformers

    calls = []

    class Spy:
        def __init__(self, name):
            self.name, self.real = name, getattr(transformers, name)

        def from_pretrained(self, *args, **kwargs):
            calls.append((self.name, args, kwargs))
            return self.real.from_pretrained(*args, **kwargs)

    for name in ("AutoTokenizer", "AutoModel", "AutoModelForCausalLM"):
        monkeypatch.setattr(transformers, name, Spy(name))
    path = str(judge_dir)
    G.Judge(path)
    G._Embedder(path)
    assert calls == [("AutoTokenizer", (path,), {"local_files_only": True}),
                     ("AutoModelForCausalLM", (path,), {"local_files_only": True}),
                     ("AutoTokenizer", (path,), {"local_files_only": True}),
                     ("AutoModel", (path,), {"local_files_only": True})]


# --- the judge -----------------------------------------------------------------------------------


class ScriptedLM:
    """Stands in for the judge's causal LM: each prompt gets the reply scripted for its answer (text, or token
    ids), returned as ``generate`` does (the prompt's ids, then the reply, right-padded); records each call."""

    def __init__(self, tok, replies):
        self.tok, self.replies, self.calls = tok, replies, []

    def generate(self, input_ids, attention_mask, **kwargs):
        import torch

        self.calls.append({"input_ids": input_ids.tolist(), "attention_mask": attention_mask.tolist(), **kwargs})
        rows = []
        for ids in input_ids.tolist():
            answer = self.tok.decode(ids, skip_special_tokens=True).split("Answer to grade: ")[1].split("\n")[0]
            r = self.replies.get(answer, "no idea")
            rows.append(r if isinstance(r, list) else self.tok(r, add_special_tokens=False)["input_ids"])
        width = max(len(r) for r in rows)
        pad = kwargs.get("pad_token_id") or 0
        return torch.tensor([ids + r + [pad] * (width - len(r)) for ids, r in zip(input_ids.tolist(), rows)])


def _scripted(path, replies, **kw):
    j = G.Judge(str(path), **kw)
    j.model = ScriptedLM(j.tok, replies)
    return j


def test_judge_prompt_is_the_fixed_text_with_each_side_cut_at_1500(judge_dir):
    j = G.Judge(str(judge_dir))
    assert j.tok.chat_template is None
    assert j.prompt("A" * 2000, "R" * 2000) == PLAIN_PROMPT.format(reference="R" * 1500, answer="A" * 1500)
    assert j.prompt("re-added it", REF) == PLAIN_PROMPT.format(reference=REF, answer="re-added it")


def test_judge_prompt_goes_in_the_chat_template_as_a_user_turn_with_the_generation_prompt(judge_dir):
    j = G.Judge(str(judge_dir))
    j.tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
                           "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    plain = PLAIN_PROMPT.format(reference=REF, answer="re-added it")
    assert j.prompt("re-added it", REF) == "<|user|>" + plain + "<|assistant|>"


def test_judge_cache_key_is_sha256_of_model_folder_and_prompt(judge_dir):
    j = G.Judge(str(judge_dir))
    assert j.key("the prompt") == hashlib.sha256(f"{judge_dir}\0the prompt".encode()).hexdigest()


def test_judge_generates_greedily_4_tokens_in_batches_of_16_padded_with_the_tokenizers_pad(judge_dir):
    j = _scripted(judge_dir, {})
    assert j.tok.pad_token == "<pad>" and j.tok.pad_token_id == 0  # the tokenizer's own pad is kept
    j.score_many([(f"answer {i}", REF) for i in range(17)])
    calls = j.model.calls
    assert [len(c["input_ids"]) for c in calls] == [16, 1]
    assert [{k: v for k, v in c.items() if k not in ("input_ids", "attention_mask")} for c in calls] == [
        {"do_sample": False, "max_new_tokens": 4, "pad_token_id": 0}] * 2
    # the prompt is encoded as it is: no special tokens of the tokenizer's own are added to it
    from tokenizers.processors import TemplateProcessing

    j2 = _scripted(judge_dir, {})
    j2.tok._tokenizer.post_processor = TemplateProcessing(single="<eos> $A", special_tokens=[("<eos>", 1)])
    prompt = j2.prompt("re-added it", REF)
    j2.score_many([("re-added it", REF)])
    assert j2.model.calls[0]["input_ids"] == [j2.tok(prompt, add_special_tokens=False)["input_ids"]]


def test_judge_scores_replies_and_counts_the_unreadable(judge_dir):
    j = _scripted(judge_dir, {"a": "7", "b": "10/10", "c": " 3 out of 10", "d": "eleven"})
    assert j.score_many([("a", REF), ("b", REF), ("c", REF), ("d", REF)]) == [0.7, 1.0, 0.3, 0.0]
    assert (j.calls, j.parse_failures) == (4, 1)
    assert j.score_many([("e", REF), ("a", REF)]) == [0.0, 0.7]  # "e" gets "no idea"; "a" is cached
    assert (j.calls, j.parse_failures) == (5, 2)


def test_judge_reads_the_reply_without_its_special_tokens(judge_dir):
    j = G.Judge(str(judge_dir))
    one, zero = j.tok("1", add_special_tokens=False)["input_ids"], j.tok("0", add_special_tokens=False)["input_ids"]
    j.model = ScriptedLM(j.tok, {"a": one + [j.tok.pad_token_id] + zero, "b": one + [j.tok.eos_token_id]})
    # "1", <pad>, "0" reads "10" (with the special token left in, "1<pad>0" would read 1)
    assert j.score_many([("a", REF), ("b", REF)]) == [1.0, 0.1]
    assert j.parse_failures == 0


class _Clock:
    def __init__(self, *ticks):
        self.ticks = list(ticks)

    def monotonic(self):
        return self.ticks.pop(0) if len(self.ticks) > 1 else self.ticks[0]


def test_judge_time_bound_defaults_to_120_s_and_a_batch_started_at_120_s_runs(judge_dir, monkeypatch):
    j = _scripted(judge_dir, {f"answer {i}": "8" for i in range(17)})
    # the call starts at 1000 s; the first batch of 16 starts at 120.0 s (not past the bound), the second at 120.5 s
    monkeypatch.setattr(G, "time", types.SimpleNamespace(monotonic=_Clock(1000.0, 1120.0, 1120.5).monotonic))
    out = j.score_many([(f"answer {i}", REF) for i in range(17)])
    assert out == [0.8] * 16 + [0.0]
    assert (j.calls, j.timeouts, j.parse_failures) == (16, 1, 0)


def test_judge_timeouts_add_up_over_batches(judge_dir, monkeypatch):
    j = _scripted(judge_dir, {"a": "9", "b": "9", "c": "9"}, batch_size=2, timeout_s=0.5)
    monkeypatch.setattr(G, "time", types.SimpleNamespace(monotonic=_Clock(0.0, 1.0, 2.0).monotonic))
    assert j.score_many([("a", REF), ("b", REF), ("c", REF)]) == [0.0, 0.0, 0.0]
    assert (j.calls, j.timeouts) == (0, 3)


def test_judge_pads_with_eos_when_the_tokenizer_has_no_pad(judge_dir, tmp_path):
    from transformers import AutoTokenizer

    nopad = tmp_path / "nopad"
    shutil.copytree(judge_dir, nopad)
    tok = AutoTokenizer.from_pretrained(str(nopad))
    tok.pad_token = None
    tok.save_pretrained(str(nopad))
    j = _scripted(nopad, {"a": "6", "a much longer answer": "4"})
    assert j.tok.pad_token == "<eos>" and j.tok.pad_token_id == 1
    assert j.score_many([("a", REF), ("a much longer answer", REF)]) == [0.6, 0.4]
    (call,) = j.model.calls
    assert call["pad_token_id"] == 1
    short, long = call["input_ids"]
    pad = len(long) - len(j.tok(j.prompt("a", REF), add_special_tokens=False)["input_ids"])
    assert pad > 0 and short[:pad] == [1] * pad  # left-padded with <eos>
