"""The leakage check's stock-word rule (rlsd.evaluate.stock_words, find_leak's ``stock``): a sentence frame made of
the question's own subject and words nearly every student prompt holds is not a leak; a copy of what only the
privileged context says still is. Hand-made tasks for the exact behaviour, the sample corpus for what it costs in
missed copies."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlsd.config import load_config
from rlsd.evaluate import common_ngrams, find_leak, stock_words, summarise
from rlsd.tasks import Task

ROOT = Path(__file__).resolve().parents[1]


def _ticket(i: int, product: str, question: str, context: str, answer: str) -> Task:
    return Task(id=f"t{i}", verifier="numeric", answer=answer,
                prompt=f"Customer ticket. Subject: {product}\n{question}\nReply with the number only.\n",
                privileged_context=context)


PORT = _ticket(0, "Marlow Print Server", "Which TCP port does the web console of the Marlow Print Server use?",
               "Verified: the console of the Marlow Print Server is on TCP port 443; a firewall rule was the cause. "
               "The web console of the Marlow Print Server listens on TCP port 443.", "443")
OTHERS = [
    _ticket(1, "Kestrel Backup Appliance", "How many drive bays is the Kestrel Backup Appliance shipped with?",
            "The Kestrel Backup Appliance is shipped with 8 drive bays in its base model.", "8"),
    _ticket(2, "Lumen Badge Reader", "What is the timeout of the Lumen Badge Reader in seconds?",
            "Idle sessions of the Lumen Badge Reader end after 30 seconds of inactivity.", "30"),
    _ticket(3, "Tessel Gateway", "How many VLANs is the Tessel Gateway able to route?",
            "The Tessel Gateway routes up to 64 VLANs on firmware 2.", "64"),
]
FRAME = "The console of the Marlow Print Server is 443."  # the question's subject in a frame: no leak
COPY = "Answer: 443. A firewall rule was the cause."  # what only the context says: a leak


def test_stock_words_are_those_of_at_least_half_the_prompts_and_at_least_three():
    tasks = [PORT, *OTHERS]
    stock = stock_words(tasks)
    # 'is' is in 3 of the 4 prompts (>= half and >= 3): stock; 'of' in 2 (PORT's and the badge reader's): not
    assert {"is", "the", "customer", "ticket", "subject", "reply", "with", "number", "only"} == stock
    # the answer mask is never a word, even when every prompt holds the answer
    same = [Task(id=f"m{i}", prompt="Is it 443?\n", privileged_context="", answer="443", verifier="numeric")
            for i in range(4)]
    assert stock_words(same) == {"is", "it"}
    # a word repeated in one prompt counts once: 'server' five times in one of four prompts is not stock
    loud = Task(id="x", prompt="server server server. " + PORT.prompt, privileged_context="", answer="443",
                verifier="numeric")
    assert "server" not in stock_words([loud, *OTHERS])
    # half is a bound met with equality: 'how' in 4 of 8 prompts is stock, in 3 of 8 it is not
    eight = [*OTHERS, *OTHERS, PORT, PORT]  # 'how' in OTHERS[0] and OTHERS[2]
    assert "how" in stock_words(eight)
    bare = Task(id="y", prompt="No question here.\n", privileged_context="", answer="1", verifier="numeric")
    assert "how" not in stock_words([bare, *eight[1:]])
    # at least 3 prompts, however few tasks: in a set of two, no word is stock
    assert stock_words(OTHERS[:2]) == set()
    assert stock_words(OTHERS[:3], fraction=0.0) == {"is", "the", "customer", "ticket", "subject", "reply", "with",
                                                      "number", "only"}


def test_a_frame_of_the_questions_subject_is_no_leak_and_a_copy_of_the_context_is():
    stock = stock_words([PORT, *OTHERS])
    # without stock words the frame is flagged ('is' is not in PORT's prompt); 'the console of the marlow print'
    # is not, though the prompt has it only as 'the web console of ...': every word of it is the prompt's own
    assert find_leak(FRAME, PORT) == "of the marlow print server is"
    assert find_leak(FRAME, PORT, stock=stock) is None
    # a word the prompt lacks and few prompts hold keeps a frame a leak
    listens = "The web console of the Marlow Print Server listens on it."
    assert find_leak(listens, PORT, stock=stock) == "of the marlow print server listens"
    assert find_leak(COPY, PORT, stock=stock) == "a firewall rule was the cause"
    # a stock word list that covered every word would hide the copy: the rule needs the prompt's or stock's
    # words only, not merely frequent-looking ones
    assert find_leak(COPY, PORT, stock=stock | {"a", "rule", "was", "cause"}) == "a firewall rule was the cause"
    assert find_leak(COPY, PORT, stock=stock | {"a", "firewall", "rule", "was", "cause"}) is None


def test_summarise_applies_the_stock_words_of_the_evaluated_set():
    tasks = [PORT, *OTHERS]
    greedy = [FRAME, "Answer: 8", "Answer: 30", "Answer: 64"]
    sampled = [COPY, "Answer: 8", "Answer: 30", "Answer: 64"]
    r = summarise(tasks, greedy, sampled, k=1, n=1)
    assert r["leakage"]["n_checked"] == 8 and r["leakage"]["n_leaks"] == 1 and r["leakage"]["rate"] == 1 / 8
    assert [e["span"] for e in r["leakage"]["flagged"]] == ["a firewall rule was the cause"]
    # evaluated alone, PORT has no stock words (one prompt < 3), and the frame counts again
    alone = summarise([PORT], [FRAME], [COPY], k=1, n=1)
    assert alone["leakage"]["n_leaks"] == 2


@pytest.fixture(scope="module")
def sample_eval_tasks(tmp_path_factory):
    """The held-out tasks the pipeline builds from data/sample (ingest -> build_tasks, default settings)."""
    from rlsd.data.build import build_tasks
    from rlsd.data.ingest import ingest
    from rlsd.data.store import LocalStore
    from rlsd.tasks import read_tasks

    tmp = tmp_path_factory.mktemp("sample")
    cfg = load_config(overrides=["model.path=unused"])
    store = LocalStore(tmp / "store")
    ingest(cfg, manuals=[ROOT / "data/sample/manuals"], tickets=[ROOT / "data/sample/tickets"], store=store)
    build_tasks(cfg, out_dir=tmp / "tasks", store=store)
    return read_tasks(tmp / "tasks" / "eval.jsonl")


def test_on_the_sample_corpus_the_rule_costs_under_one_percent_of_copies(sample_eval_tasks):
    """Every held-out task's whole context, copied, is still flagged; of the 8-word windows of the contexts that
    find_leak flags without stock words, >= 99% stay flagged with them (911 of 916 when written). The stock words
    are function words and the ticket template's: no product name."""
    tasks = sample_eval_tasks
    assert len(tasks) >= 40
    common, stock = common_ngrams(tasks), stock_words(tasks)
    assert {"the", "is", "of", "for"} <= stock and len(stock) < 40
    assert stock.isdisjoint({"kestrel", "marlow", "lumen", "tessel", "port", "firmware", "console", "vlan"})
    before = after = 0
    for t in tasks:
        assert find_leak(t.privileged_context, t, common=common, stock=stock) is not None, t.id
        words = t.privileged_context.split()
        for i in range(0, max(1, len(words) - 7), 4):
            window = " ".join(words[i:i + 8])
            if find_leak(window, t, common=common) is not None:
                before += 1
                after += find_leak(window, t, common=common, stock=stock) is not None
    print(f"windows flagged without stock words {before}, with {after}; stock words {len(stock)}")
    assert before > 500 and after >= 0.99 * before


def test_words_keep_the_vowel_signs_of_indic_and_thai_scripts():
    """Review (reg): the shared word splitter matched letters and digits only, and \\w does not match combining
    marks, so every Devanagari / Bengali / Thai word was cut at its vowel signs and they were dropped: 'हिन्दी' was
    ['ह', 'न', 'द'], and कि / को / का / की / के were all 'क'. The leak check's 6-word span shrank to ~2 real words
    and a text grader paid token F1 0.75 to a string that only shares the consonants of the reference."""
    from rlsd.verifiers.extract import words
    from rlsd.verifiers.graders import token_f1

    assert words("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert len(set(words("कि को का की के"))) == 5
    assert words("ภาษาไทย ง่าย") == ["ภาษาไทย", "ง่าย"]
    assert words("Naïve CAFÉ, x_y") == ["naïve", "café", "x", "y"]  # Latin unchanged
    assert token_f1("की मी हे गे", "काम हो गया") == 0.0  # was 0.75
    ctx = "सर्वर को रीस्टार्ट करें फिर लाइसेंस की फ़ाइल दोबारा लोड करें तब पोर्ट 443 खुलेगा"
    t = Task(id="h", prompt="टिकट: पोर्ट संख्या क्या है?", privileged_context=ctx, answer="443")
    assert find_leak("लाइसेंस की फ़ाइल दोबारा लोड करें तब", t) is not None  # a real copy is still a leak
    assert find_leak("ले सा को फाइ दे ब लो", t) is None  # the consonants alone are not a copy
