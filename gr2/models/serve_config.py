"""Configuration of the online re-ranker (``serve:`` in the settings tree); read by KServe and Triton alike."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gr2.contract import MODEL_NAME, TRITON_HTTP_PORT


class ServeConfig(BaseModel):
    """How the server answers: model, mode, limits, feature store, A/B variant.

    NOTE: defaults are sized for K=10 candidates on a CPU pod; ``think_tokens`` only matters in ``reason`` mode.
    """

    model_config = ConfigDict(extra="forbid")

    # Parameters that control the model and how it ranks
    model_name: str = Field(MODEL_NAME, min_length=1, description="Name in the inference URLs.")
    mode: Literal["score", "generate", "reason"] = Field(
        "score", description="score: one pass of candidate likelihoods; generate: constrained answer; "
                             "reason: <think> then the constrained answer.")
    think_tokens: int = Field(64, ge=0, le=4096, description="Reasoning budget in tokens (reason mode).")
    backend: Literal["torch", "triton"] = Field(
        "torch", description="torch: the model runs in the server; triton: forwarded to a Triton server.")
    triton_url: str = Field(f"localhost:{TRITON_HTTP_PORT}", description="Triton HTTP host:port (backend: triton).")
    # Parameters that control what a request may hold
    max_candidates: int = Field(50, ge=1, description="Most candidates per row; longer rows get a 400.")
    max_batch: int = Field(64, ge=1, description="Most rows per request.")
    max_history: int = Field(1000, ge=0, description="Most history items per row; longer rows get a 400.")
    timeout_s: float = Field(10.0, gt=0, description="Model time per request, s; past it the incoming order "
                                                     "is returned with fallback=true.")
    # Parameters that control the feature store
    feature_repo: str | None = Field(None, description="Feast repo for SIDs, titles and user history "
                                                       "(None: the bundle's items and no stored history).")
    feature_store_yaml: str = Field("feature_store.yaml", description="Config file in the repo (Redis in production).")
    # Parameters that control A/B logging
    variant: str = Field("champion", min_length=1, description="Variant name written to the response log.")
    response_log: str | None = Field(None, description="JSON-lines file of every response (None: no log).")
