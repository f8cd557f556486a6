"""Prompts that never lose their template: long questions and contexts are shortened in the middle; string
overrides keep their newlines; dropout is off in the policy; the shared-prompt pass checks its cache."""

from __future__ import annotations

import pytest
import torch

from rlsd.config import ConfigError, load_config
from rlsd.prompts import (
    CUT_MARKER,
    PromptTooLongError,
    fit_student,
    fit_teacher,
    n_tokens,
    render,
    template_tail,
)
from rlsd.tasks import Task

CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEMPLATE = "{question}\nHere is a reference solution: {context}\nNow solve it your own way:\n"


@pytest.fixture(scope="module")
def tok():
    from rlsd.models import train_tokenizer

    t = train_tokenizer()
    t.chat_template = CHAT
    return t


def _task(q: str, ctx: str = "42") -> Task:
    return Task(id="t1", prompt=q, privileged_context=ctx, answer="42")


QUESTION = "START of the ticket. " + " ".join(f"line {i} printer queue stuck again" for i in range(200)) + " END?"
CONTEXT = "CTX-BEGIN " + " ".join(f"step {i} restart the spooler" for i in range(200)) + " CTX-END"


@pytest.mark.parametrize("chat", [True, False])
def test_a_long_question_is_cut_in_the_middle_and_keeps_the_template_tail(tok, chat):
    budget = 200
    text = fit_student(_task(QUESTION), tok, chat, "Answer:", budget)
    tail = template_tail(tok, chat, "Answer:")
    assert tail.endswith("Answer:") and (tail.startswith("<|im_end|>") if chat else tail == "Answer:")
    assert n_tokens(text, tok) <= budget and text.endswith(tail)
    assert "START of the ticket." in text and "END?" in text and CUT_MARKER in text
    assert n_tokens(text, tok) >= budget - 8  # binary search keeps as much of the question as fits
    short = _task("What is 2+3?")
    assert fit_student(short, tok, chat, "Answer:", budget) == render("What is 2+3?", tok, chat, "Answer:")


def test_the_teacher_loses_context_before_question_and_never_its_instruction(tok):
    tail = template_tail(tok, True, "")
    text = fit_teacher(_task("What is the fix for code E42?", CONTEXT), TEMPLATE, tok, True, "", 260)
    assert n_tokens(text, tok) <= 260 and text.endswith(tail)
    assert "What is the fix for code E42?" in text  # the short question stays whole
    assert "CTX-BEGIN" in text and "CTX-END" in text and CUT_MARKER in text
    assert "Now solve it your own way:" in text and "Here is a reference solution:" in text
    both = fit_teacher(_task(QUESTION, CONTEXT), TEMPLATE, tok, True, "", 260)
    assert n_tokens(both, tok) <= 260 and both.endswith(tail) and "Now solve it your own way:" in both
    assert both.count(CUT_MARKER) == 2  # context down to the marker, then the question cut too
    assert "START of the ticket." in both and "END?" in both


def test_a_budget_below_the_template_is_refused(tok):
    with pytest.raises(PromptTooLongError, match="rollout.max_prompt_tokens"):
        fit_teacher(_task(QUESTION, CONTEXT), TEMPLATE, tok, True, "Answer:", 10)


def test_the_sampler_refuses_a_prompt_over_budget_instead_of_cutting_it(tok):
    from rlsd.rollout import encode_prompts

    long = render(QUESTION, tok, True, "Answer:")
    with pytest.raises(ValueError, match="max_prompt_tokens=64"):
        encode_prompts(tok, [long, "short"], 2, 64)
    ids, mask = encode_prompts(tok, ["a b c", "short"], 2, 64)
    assert ids.shape[0] == 4 and mask.sum(1).tolist()[0] == n_tokens("a b c", tok)


def test_trainer_refuses_prompts_whose_tails_differ():
    from rlsd.train import _check_prompt_tails

    _check_prompt_tails(["q1 Answer:"], ["q1 ctx Answer:"], [[1, 2, 3]], "Answer:", 8)
    with pytest.raises(AssertionError, match="template tail"):
        _check_prompt_tails(["q1 Answer:"], ["q1 ctx Answ"], [[1, 2, 3]], "Answer:", 8)
    with pytest.raises(AssertionError, match="template tail"):
        _check_prompt_tails(["q1 Answer:"], ["q1 ctx Answer:"], [[1] * 9], "Answer:", 8)


# ---------------------------------------------------------------------------------------------- --set strings


def test_set_keeps_newlines_in_strings_and_round_trips():
    raw = "{question}\nH:{context}\n"
    for given in (raw, f"'{raw}'", '"{question}\\nH:{context}\\n"'):
        cfg = load_config(overrides=[f"teacher.template={given}"])
        assert cfg.teacher.template == raw, given
        again = load_config(text=cfg.to_yaml())
        assert again == cfg
    cfg = load_config(overrides=["model.response_prefix=Answer: ", "model.path=123"])
    assert cfg.model.response_prefix == "Answer: " and cfg.model.path == "123"


def test_numbers_as_people_type_them_and_no_infinities():
    assert load_config(overrides=["train.lr=1e-4"]).train.lr == pytest.approx(1e-4)
    for bad in ("train.lr=.inf", "train.lr=nan", "algorithm.eps_high=.inf"):
        with pytest.raises(ConfigError, match="finite"):
            load_config(overrides=[bad])


# ---------------------------------------------------------------------------------------------- the policy


def test_dropout_is_off_in_the_policy():
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlsd.models import disable_dropout

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, attention_dropout=0.5, attn_implementation="eager"))
    model.train()
    ids = torch.randint(0, 50, (2, 12))
    assert not torch.equal(model(ids).logits, model(ids).logits)  # dropout acts before
    disable_dropout(model).train()
    torch.testing.assert_close(model(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert model.config.attention_dropout == 0.0


def test_shared_prompt_pass_refuses_a_model_that_drops_the_cache():
    """If the model ignored the cache (as transformers does under gradient checkpointing), the completions would
    be scored without their prompt: the pass must fail, not return those logits."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlsd.train import completion_logits

    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2))

    class DropsCache(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, cache=None, past_key_values=None, **kw):
            return self.inner(**kw)

    p_ids = torch.randint(0, 50, (4, 5))
    p_ids[2:] = p_ids[0]
    p_ids[1] = p_ids[0]
    p_ids[3] = p_ids[2]
    c_ids = torch.randint(0, 50, (4, 3))
    ones = torch.ones_like
    full = completion_logits(model, p_ids, ones(p_ids), c_ids, ones(c_ids), 1.0, 2)  # the real model: fine
    assert full.shape == (4, 3, 50)
    with pytest.raises(RuntimeError, match="cached positions"):
        completion_logits(DropsCache(), p_ids, ones(p_ids), c_ids, ones(c_ids), 1.0, 2)
