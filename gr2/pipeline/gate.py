"""The promotion gate: the serving model's lift over the incoming order on validation, and the decision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gr2.config import GR2Config
from gr2.train.inputs import StageInputs

SERVING_METHOD = "likelihood, re-ranking prompt"  # how a bundle ranks candidates in score mode, by default
NEXT_ITEM_METHOD = "likelihood, next-item prompt"  # ... when its manifest's score_prompt is next_item


def serving_method(model_dir: Path) -> str:
    """The stage-table method that ``serve.mode: score`` reproduces for the bundle (or model) in ``model_dir``."""
    from gr2.models.bundle import MANIFEST, read_manifest

    if (model_dir / MANIFEST).exists() and read_manifest(model_dir).score_prompt == "next_item":
        return NEXT_ITEM_METHOD
    return SERVING_METHOD


def serving_lift(cfg: GR2Config, inputs: StageInputs, model_dir: str | Path) -> dict[str, Any]:
    """Paired R@1 lift (users resampled for the CI) of ``model_dir`` over the incoming order on validation."""
    from gr2.models.factory import load_model
    from gr2.train.evaluate import next_item_rankings, rerank_likelihood_rankings
    from gr2.train.inputs import subsample
    from gr2.train.stages import stage_row

    torch.set_num_threads(cfg.train.threads)
    samples = subsample(inputs.load_samples("validation"), cfg.pipeline.gate_samples, cfg.seed)
    if samples.empty:
        raise ValueError("no validation samples to gate the promotion on")
    sid_map = inputs.load_sid_map(cfg.train.model.item_tokens)
    lm = load_model(model_dir, sid_map.all_tokens())
    method = serving_method(Path(model_dir))
    if method == NEXT_ITEM_METHOD:
        rankings = next_item_rankings(lm, sid_map, samples, cfg.rerank.history_length)
    else:
        rankings = rerank_likelihood_rankings(lm, sid_map, samples, inputs.load_dataset().items)
    incoming = [[int(c) for c in cands] for cands in samples["candidates"]]
    base_row, base = stage_row("incoming order", "legacy pre-ranker", "as given", samples, incoming)
    row, _ = stage_row("serving", str(model_dir), method, samples, rankings, base=base)
    lift = row["R@1_lift_vs_incoming"]
    return {
        "split": "validation",
        "method": method,
        "samples": len(samples),
        "incoming_R@1": float(base_row["R@1"]),
        "serving_R@1": float(row["R@1"]),
        "lift": float(lift["abs"]),
        "lift_lo": float(lift["abs_lo"]),
        "lift_hi": float(lift["abs_hi"]),
    }


def decide(lift: dict[str, Any], min_lift: float) -> dict[str, Any]:
    """``promote`` when the measured lift reaches ``min_lift``, else ``hold``.

    >>> decide({"lift": 0.02}, 0.01)["decision"], decide({"lift": 0.0}, 0.01)["decision"]
    ('promote', 'hold')
    """
    return {
        **lift,
        "min_lift": float(min_lift),
        "decision": "promote" if lift["lift"] >= min_lift else "hold",
    }
