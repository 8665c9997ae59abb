"""Configuration of the causal LM the model factory builds or loads (``train.model`` in the settings tree)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ModelConfig(BaseModel):
    """Which causal LM is trained: a hub/local checkpoint, or a small Qwen model built offline."""

    model_config = ConfigDict(extra="forbid")

    # Parameters that control which model is trained
    base_model: str = Field(
        "",
        description="Any Hugging Face causal-LM path or hub id; empty = build a small model offline from "
        "the corpus (no network).",
    )
    architecture: Literal["qwen2", "qwen3"] = Field(
        "qwen3", description="Architecture of the offline model (transformers model type)."
    )
    item_tokens: Literal["sid", "item", "sid+item"] = Field(
        "sid", description="How prompts name items: sid = the semantic-ID code tokens (shared between similar "
        "items); item = one <i_N> token per item; sid+item = both.")
    # Parameters that control the size of the offline model
    hidden_size: int = Field(128, ge=8, description="Width of the residual stream (units).")
    num_layers: int = Field(2, ge=1, description="Transformer blocks.")
    num_heads: int = Field(4, ge=1, description="Attention heads; hidden_size must be divisible by it.")
    num_kv_heads: int = Field(2, ge=1, description="Key/value heads (grouped-query attention).")
    intermediate_size: int = Field(256, ge=8, description="Width of the MLP (units).")
    max_position_embeddings: int = Field(
        2048, ge=64, description="Longest sequence the model accepts (tokens)."
    )
    # Parameters that control the corpus tokenizer of the offline model
    vocab_size: int = Field(
        2000, ge=300, description="BPE vocabulary trained on the corpus, before SID tokens."
    )
    min_frequency: int = Field(2, ge=1, description="A merge must occur this often in the corpus.")

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"train.model: hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads}) and num_heads by num_kv_heads ({self.num_kv_heads})"
            )
        return self
