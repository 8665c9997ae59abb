"""``gr2 train internalize``: a second GRPO pass in the answer-only format; its model is the serving checkpoint.

The pass starts from the better of the RL and reasoning-SFT models (``train.internalize.init``), drops the
``<think>`` block so the ranking is answered directly, and turns ``train/internalize/model`` into a serving
bundle in place (:func:`gr2.models.bundle.write_serving_bundle`): the HF checkpoint with its tokenizer and
chat template, plus ``sid_map.parquet``, ``items.parquet`` and the ``gr2_serving.json`` manifest. The
manifest's ``score_prompt`` (how ``serve.mode: score`` asks the model) is the prompt with the higher
likelihood R@1 on the stage's validation samples.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from gr2.config import GR2Config
from gr2.train.inputs import StageInputs
from gr2.train.rl import RLArtifacts, run_rl

if TYPE_CHECKING:
    from gr2.models.bundle import ServingManifest


def chosen_score_prompt(metrics_file: Path) -> str:
    """``next_item`` when it ranked better than the answer-only prompt on validation, else ``rerank``."""
    if not metrics_file.exists():
        return "rerank"
    validation = json.loads(metrics_file.read_text()).get("metrics", {}).get("validation", {})
    rerank = (validation.get("likelihood") or {}).get("R@1")
    next_item = (validation.get("likelihood_next_item") or {}).get("R@1")
    return "next_item" if rerank is not None and next_item is not None and next_item > rerank else "rerank"


def serving_manifest(cfg: GR2Config, stage_dir: Path) -> ServingManifest:
    """The manifest of the internalized model in ``stage_dir`` (``model/`` and ``metrics.json``)."""
    from gr2.models.bundle import ServingManifest

    model = stage_dir / "model"
    digest = hashlib.sha256((model / "model.safetensors").read_bytes()).hexdigest()[:12]
    return ServingManifest(model_version=f"{cfg.profile}-{digest}", num_candidates=cfg.rerank.num_candidates,
                           history_length=cfg.rerank.history_length, source_checkpoint=str(model),
                           score_prompt=chosen_score_prompt(stage_dir / "metrics.json"),
                           extra={"seed": cfg.seed, "stage": "internalize"})


def run_internalize(cfg: GR2Config, inputs: StageInputs | None = None, init_model: str | Path | None = None,
                    out_dir: str | Path | None = None) -> RLArtifacts:
    """Answer-only GRPO (``train.internalize``), then the serving files next to the model."""
    from gr2.models.bundle import write_serving_bundle

    inputs = inputs or StageInputs.of_run(cfg.run_dir)
    art = run_rl(cfg, inputs, init_model, out_dir, stage="internalize")
    write_serving_bundle(art.model, inputs.sid_map, inputs.load_dataset().items, art.model,
                         serving_manifest(cfg, art.model.parent))
    return art
