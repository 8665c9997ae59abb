"""Model factory: one code path for a hub checkpoint and for the small model built offline.

``build_offline_checkpoint`` writes a directory that looks exactly like a hub checkpoint (config.json,
model.safetensors, tokenizer files with a chat template), so that :func:`load_model` reads both with
``AutoTokenizer``/``AutoModelForCausalLM.from_pretrained`` and then adds the SID tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen3Config,
)

from gr2.models.config import ModelConfig
from gr2.models.tokenizer import add_sid_tokens, ensure_chat_ready, train_corpus_tokenizer

_ARCHITECTURES = {"qwen2": Qwen2Config, "qwen3": Qwen3Config}


class ModelLoadError(ValueError):
    """A model path that does not hold a loadable causal LM and tokenizer."""


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, SID tokens already added."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str
    added_tokens: int

    @property
    def num_parameters(self) -> int:
        return count_parameters(self.model)


def count_parameters(model: torch.nn.Module) -> int:
    """Unique trainable parameters (tied embeddings counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def offline_model_config(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> Qwen2Config | Qwen3Config:
    """The transformers config of the small offline model (tied embeddings keep it small)."""
    config_cls = _ARCHITECTURES[cfg.architecture]
    extra = {"head_dim": cfg.hidden_size // cfg.num_heads} if cfg.architecture == "qwen3" else {}
    return config_cls(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def build_offline_checkpoint(cfg: ModelConfig, corpus: Iterable[str], out_dir: str | Path, seed: int = 0) -> Path:
    """Train a corpus tokenizer, initialise a small Qwen model and save both like a hub checkpoint."""
    out = Path(out_dir)
    tokenizer = train_corpus_tokenizer(corpus, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency)
    config = offline_model_config(cfg, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    card = {"built_by": "gr2.models.factory.build_offline_checkpoint", "architecture": cfg.architecture,
            "parameters": count_parameters(model), "vocab_size": len(tokenizer), "seed": seed}
    (out / "gr2_model.json").write_text(json.dumps(card, indent=2) + "\n")
    return out


def load_model(path: str | Path, sid_tokens: Iterable[str] = (), seed: int = 0) -> LoadedModel:
    """Load any causal-LM checkpoint (hub id or directory), add SID tokens and resize the embeddings.

    New token rows are drawn around the mean of the existing embeddings with a generator seeded by
    ``seed``, so the same call gives the same model.
    """
    source = str(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"cannot load a causal LM from {source!r}: {err}") from err
    ensure_chat_ready(tokenizer)
    added = add_sid_tokens(tokenizer, sid_tokens)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model=model, tokenizer=tokenizer, source=source, added_tokens=added)
