"""rlsd.models.build_tiny_model: a real model's shape around the local tokenizer."""

import pytest
import torch

from rlsd.models import build_tiny_model


def test_shape_options_give_the_parameter_count_by_hand():
    model, tok = build_tiny_model(None, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                                  intermediate_size=48, vocab_size=600)
    d, kv, f, V = 32, 16, 48, 600  # kv width = d * kv_heads / heads
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * f + 2 * d  # q, o, k, v, gate/up/down, two norms
    assert sum(p.numel() for p in model.parameters()) == 2 * per_layer + V * d + d  # tied head, final norm
    assert model.config.vocab_size == 600 and len(tok) < 600
    ids = torch.tensor([[1, 2, 3]])
    assert model(ids).logits.shape == (1, 3, 600)


def test_vocab_smaller_than_the_tokenizer_is_refused():
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        build_tiny_model(None, vocab_size=10)
