"""Configuration of the re-ranking task: protocol, legacy pre-ranker, samples, baselines, evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RerankConfig(BaseModel):
    """Legacy pre-ranker, samples, prompt format and evaluation settings.

    The protocol (``gr2.rerank.protocol``) is a global temporal cut or per-user leave-one-out; either
    way every model (SIDs, features, legacy pre-ranker, SASRec, the LM) learns only from the
    protocol's learnable interactions, which ``gr2 data split`` writes as ``train.parquet``.

    NOTE: defaults are the demo sizes for MovieLens 100K; the smoke profile caps samples and epochs.
    """

    model_config = ConfigDict(extra="forbid")

    # Parameters that control the evaluation protocol
    protocol: Literal["temporal", "leave_one_out"] = Field(
        "temporal",
        description="temporal: a global time cut; leave_one_out: per user last item test, second to last "
                    "validation (GR2's public experiments). Decides what every stage may learn from.",
    )
    test_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="Share of interactions (the latest in time) that are test positions."
    )
    validation_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="Share of interactions just before the test cut that are validation positions."
    )
    fit_fraction: float = Field(
        0.3, gt=0, lt=0.9,
        description="Share of the pre-validation interactions (the latest) on which the pointwise scorer is fit "
                    "and train samples are built; earlier ones only give its statistics (no target leaks into "
                    "its own features).",
    )
    cut_times: list[int] | None = Field(
        None, min_length=3, max_length=3,
        description="temporal only: pin [fit_start, validation_start, test_start] (unix s) instead of the "
                    "fractions, e.g. fixed dates in production.",
    )
    min_history: int = Field(3, ge=1, description="Positions need at least this many earlier items of the user.")
    warn_tie_share: float = Field(
        0.01, gt=0, description="Warn when timestamp ties move a temporal cut by more than this share of interactions."
    )
    warn_gap_days: float = Field(
        365.0, gt=0, description="Warn when the learnable data ends more than this many days before test (median user)."
    )
    warn_min_coverage: float = Field(
        0.10, ge=0, le=1, description="Warn when the legacy top K holds the target for less than this share of positions."
    )
    warn_min_test_samples: int = Field(1000, ge=0, description="Warn when fewer test samples remain (wide CIs).")

    # Parameters that control the legacy pre-ranker
    num_candidates: int = Field(10, ge=2, description="K: candidates per sample, as in GR2 (K=10).")
    retrieval_size: int = Field(
        100, ge=1, description="Items retrieved by co-occurrence with the recent history before scoring."
    )
    popular_candidates: int = Field(
        30, ge=0, description="Recently popular items added to the retrieved set (cold users, fallbacks)."
    )
    recent_items: int = Field(20, ge=1, description="Latest history items that drive co-occurrence retrieval.")
    recency_decay: float = Field(
        0.9, gt=0, le=1, description="Weight of the n-th most recent history item is decay**n (unitless)."
    )
    recent_window_days: float = Field(
        30.0, gt=0, description="Window before the statistics cut for the recent-popularity feature (days)."
    )
    legacy_model: Literal["logreg", "gbdt"] = Field(
        "logreg", description="Pointwise scorer: logistic regression or gradient-boosted trees (scikit-learn)."
    )
    fit_max_positions: int = Field(
        20000, ge=100, description="Positions sampled to fit the scorer (bounds fit time)."
    )
    fit_negatives: int = Field(20, ge=1, description="Retrieved non-targets sampled per fit position.")
    exclude_seen: bool = Field(True, description="Never offer an item the user already interacted with.")

    # Parameters that control the samples
    history_length: int = Field(20, ge=1, description="Items of history kept per sample (oldest -> newest).")
    positive_window: int = Field(
        10, ge=0,
        description="Candidates the user consumes within this many interactions after the target are extra "
                    "(graded) positives for AUC / graded NDCG.",
    )
    max_samples_per_split: int | None = Field(
        None, ge=1, description="Cap on positions per split (smoke runs); None = all positions."
    )

    # Parameters that control the SASRec baseline
    sasrec_dim: int = Field(64, ge=8, description="Embedding and hidden size.")
    sasrec_layers: int = Field(2, ge=1, description="Transformer blocks.")
    sasrec_heads: int = Field(2, ge=1, description="Attention heads (must divide sasrec_dim).")
    sasrec_max_len: int = Field(50, ge=2, description="Longest input sequence (items).")
    sasrec_dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on embeddings and blocks.")
    sasrec_epochs: int = Field(30, ge=1, description="Maximum passes over the training sequences.")
    sasrec_patience: int = Field(4, ge=1, description="Epochs without validation MRR gain before stopping.")
    sasrec_batch_size: int = Field(128, ge=1, description="Sequences per step.")
    sasrec_lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    sasrec_negatives: int = Field(
        0, ge=0, description="Sampled-softmax negatives per position; 0 = full softmax over the catalog."
    )

    # Parameters that control evaluation
    bootstrap_samples: int = Field(1000, ge=10, description="Bootstrap resamples for 95% confidence intervals.")
    bootstrap_by_user: bool = Field(
        True, description="Resample users rather than samples (samples of one user are correlated)."
    )
    num_threads: int = Field(
        1, ge=1, le=2,
        description="torch threads; 1 because the 2-core build machines are shared and OpenMP threads that "
                    "spin-wait under contention made SASRec epochs 4x slower with 2 (measured).",
    )

    @model_validator(mode="after")
    def _check(self) -> RerankConfig:
        if self.sasrec_dim % self.sasrec_heads:
            raise ValueError(f"sasrec_dim={self.sasrec_dim} must be divisible by sasrec_heads={self.sasrec_heads}")
        if self.test_fraction + self.validation_fraction >= 0.9:
            raise ValueError("test_fraction + validation_fraction must leave at least 10% for training")
        if self.retrieval_size + self.popular_candidates < self.num_candidates:
            raise ValueError("retrieval_size + popular_candidates must be >= num_candidates")
        return self
