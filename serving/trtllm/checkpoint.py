"""A Hugging Face Qwen2/Qwen3 causal LM as a TensorRT-LLM checkpoint (unified layout, one rank).

Names and layout follow TensorRT-LLM's own converter (``tensorrt_llm/models/qwen/convert.py``,
``convert_hf_qwen`` with tp = pp = 1, no quantization) and ``QWenConfig.from_hugging_face``:

==========================================  ===============================================
HF tensor                                   TensorRT-LLM tensor
==========================================  ===============================================
model.embed_tokens.weight                   transformer.vocab_embedding.weight
lm_head.weight (embed_tokens when tied)     lm_head.weight
model.norm.weight                           transformer.ln_f.weight
layers.N.self_attn.{q,k,v}_proj.weight      transformer.layers.N.attention.qkv.weight (q;k;v rows)
layers.N.self_attn.{q,k,v}_proj.bias        transformer.layers.N.attention.qkv.bias (Qwen2)
layers.N.self_attn.o_proj.weight            transformer.layers.N.attention.dense.weight
layers.N.self_attn.{q,k}_norm.weight        transformer.layers.N.attention.{q,k}_layernorm.weight (Qwen3)
layers.N.mlp.up_proj.weight                 transformer.layers.N.mlp.gate.weight
layers.N.mlp.gate_proj.weight               transformer.layers.N.mlp.fc.weight
layers.N.mlp.down_proj.weight               transformer.layers.N.mlp.proj.weight
layers.N.input_layernorm.weight             transformer.layers.N.input_layernorm.weight
layers.N.post_attention_layernorm.weight    transformer.layers.N.post_layernorm.weight
==========================================  ===============================================

(TensorRT-LLM's GatedMLP calls the up projection ``gate`` and the gate projection ``fc``.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import PretrainedConfig

SUPPORTED = ("qwen2", "qwen3")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CHECKPOINT_FILES = ("config.json", "rank0.safetensors")

# Per-layer (HF suffix, TensorRT-LLM suffix) pairs copied as they are
_LAYER_PAIRS = (
    ("self_attn.o_proj.weight", "attention.dense.weight"),
    ("mlp.up_proj.weight", "mlp.gate.weight"),
    ("mlp.gate_proj.weight", "mlp.fc.weight"),
    ("mlp.down_proj.weight", "mlp.proj.weight"),
    ("input_layernorm.weight", "input_layernorm.weight"),
    ("post_attention_layernorm.weight", "post_layernorm.weight"),
)
_QK_NORM_PAIRS = (("self_attn.q_norm.weight", "attention.q_layernorm.weight"),
                  ("self_attn.k_norm.weight", "attention.k_layernorm.weight"))


class CheckpointError(ValueError):
    """A model this converter cannot express as a TensorRT-LLM Qwen checkpoint."""


def _rope(hf: PretrainedConfig) -> tuple[float, dict | None]:
    """(rotary_base, rotary_scaling) from either the transformers 4 or 5 way of storing RoPE settings."""
    params = dict(getattr(hf, "rope_parameters", None) or getattr(hf, "rope_scaling", None) or {})
    base = float(params.pop("rope_theta", getattr(hf, "rope_theta", 10000.0)))
    kind = params.pop("rope_type", params.pop("type", "default"))
    return base, (None if kind == "default" else {"type": kind, **params})


def resolve_dtype(hf: PretrainedConfig, dtype: str) -> str:
    if dtype == "auto":
        found = getattr(hf, "dtype", None) or torch.float32
        dtype = str(found).removeprefix("torch.")
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype must be auto or one of {list(DTYPES)}, got {dtype!r}")
    return dtype


def trtllm_config(hf: PretrainedConfig, dtype: str = "auto") -> dict:
    """TensorRT-LLM's ``config.json`` for this model (the fields ``QWenConfig.to_dict`` writes)."""
    qwen_type = hf.model_type
    if qwen_type not in SUPPORTED:
        raise CheckpointError(f"model_type {qwen_type!r} is not supported; expected one of {list(SUPPORTED)}")
    if qwen_type == "qwen3" and getattr(hf, "attention_bias", False):
        raise CheckpointError("Qwen3 with attention_bias=True has no TensorRT-LLM layout (attn_bias is False)")
    head_size = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    rotary_base, rotary_scaling = _rope(hf)
    architecture = (hf.architectures or [f"{'Qwen3' if qwen_type == 'qwen3' else 'Qwen2'}ForCausalLM"])[0]
    return {
        "architecture": architecture,
        "dtype": resolve_dtype(hf, dtype),
        "logits_dtype": "float32",
        "vocab_size": hf.vocab_size,
        "hidden_size": hf.hidden_size,
        "num_hidden_layers": hf.num_hidden_layers,
        "num_attention_heads": hf.num_attention_heads,
        "num_key_value_heads": getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads,
        "head_size": head_size,
        "hidden_act": getattr(hf, "hidden_act", "silu"),
        "intermediate_size": hf.intermediate_size,
        "norm_epsilon": hf.rms_norm_eps,
        "position_embedding_type": "rope_gpt_neox",
        "max_position_embeddings": hf.max_position_embeddings,
        "rotary_embedding_dim": head_size,
        "rotary_base": rotary_base,
        "rotary_scaling": rotary_scaling,
        "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1},
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None},
        "use_parallel_embedding": False,
        "embedding_sharding_dim": 0,
        "qwen_type": qwen_type,
        "attn_bias": qwen_type != "qwen3",
        "mlp_bias": False,
        "qk_layernorm": qwen_type == "qwen3",
        "seq_length": getattr(hf, "seq_length", 8192),
        "use_logn_attn": False,
        "disable_weight_only_quant_plugin": False,
        "moe_intermediate_size": 0,
        "moe_shared_expert_intermediate_size": 0,
        "num_labels": 1,
        "tie_word_embeddings": bool(getattr(hf, "tie_word_embeddings", False)),
    }


def _get(state: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    if name not in state:
        raise CheckpointError(f"the model has no tensor {name!r}")
    return state[name]


def hf_to_trtllm(state: Mapping[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """Rename and fuse an HF state dict into TensorRT-LLM's tensors, cast to ``config['dtype']``."""
    dtype = DTYPES[config["dtype"]]
    out: dict[str, torch.Tensor] = {}
    for layer in range(config["num_hidden_layers"]):
        hf, trt = f"model.layers.{layer}.", f"transformer.layers.{layer}."
        out[trt + "attention.qkv.weight"] = torch.cat(
            [_get(state, f"{hf}self_attn.{p}_proj.weight") for p in "qkv"], dim=0)
        if config["attn_bias"]:
            out[trt + "attention.qkv.bias"] = torch.cat([_get(state, f"{hf}self_attn.{p}_proj.bias") for p in "qkv"])
        pairs = _LAYER_PAIRS + (_QK_NORM_PAIRS if config["qk_layernorm"] else ())
        out.update({trt + dst: _get(state, hf + src) for src, dst in pairs})
    embed = _get(state, "model.embed_tokens.weight")
    out["transformer.vocab_embedding.weight"] = embed
    out["lm_head.weight"] = embed if config["tie_word_embeddings"] else _get(state, "lm_head.weight")
    out["transformer.ln_f.weight"] = _get(state, "model.norm.weight")
    return {name: t.detach().to(dtype).contiguous().clone() for name, t in out.items()}


def trtllm_to_hf(weights: Mapping[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """The inverse of :func:`hf_to_trtllm`: the HF state dict (``lm_head`` included, tied or not)."""
    q_rows = config["num_attention_heads"] * config["head_size"]
    kv_rows = config["num_key_value_heads"] * config["head_size"]
    out: dict[str, torch.Tensor] = {}
    for layer in range(config["num_hidden_layers"]):
        hf, trt = f"model.layers.{layer}.", f"transformer.layers.{layer}."
        for p, part in zip("qkv", weights[trt + "attention.qkv.weight"].split([q_rows, kv_rows, kv_rows]),
                           strict=True):
            out[f"{hf}self_attn.{p}_proj.weight"] = part
        if config["attn_bias"]:
            for p, part in zip("qkv", weights[trt + "attention.qkv.bias"].split([q_rows, kv_rows, kv_rows]),
                               strict=True):
                out[f"{hf}self_attn.{p}_proj.bias"] = part
        pairs = _LAYER_PAIRS + (_QK_NORM_PAIRS if config["qk_layernorm"] else ())
        out.update({hf + src: weights[trt + dst] for src, dst in pairs})
    out["model.embed_tokens.weight"] = weights["transformer.vocab_embedding.weight"]
    out["lm_head.weight"] = weights["lm_head.weight"]
    out["model.norm.weight"] = weights["transformer.ln_f.weight"]
    return out


def write_checkpoint(model: torch.nn.Module, out_dir: str | Path, dtype: str = "auto") -> dict:
    """Write ``config.json`` + ``rank0.safetensors`` for ``model`` under ``out_dir``; returns the config."""
    config = trtllm_config(model.config, dtype)
    weights = hf_to_trtllm(model.state_dict(), config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=4) + "\n")
    save_file(weights, str(out / "rank0.safetensors"), metadata={"format": "pt"})
    return config
