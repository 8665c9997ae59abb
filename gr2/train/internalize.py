"""``gr2 train internalize``: a second GRPO pass in the answer-only format; its model is the serving checkpoint.

The pass starts from the better of the RL and reasoning-SFT models (``train.internalize.init``), drops the
``<think>`` block so the ranking is answered directly, and turns ``train/internalize/model`` into a serving
bundle in place (:func:`gr2.models.bundle.write_serving_bundle`): the HF checkpoint with its tokenizer and
chat template, plus ``sid_map.parquet``, ``items.parquet`` and the ``gr2_serving.json`` manifest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from gr2.config import GR2Config
from gr2.train.inputs import StageInputs
from gr2.train.rl import RLArtifacts, run_rl


def run_internalize(cfg: GR2Config, inputs: StageInputs | None = None, init_model: str | Path | None = None,
                    out_dir: str | Path | None = None) -> RLArtifacts:
    """Answer-only GRPO (``train.internalize``), then the serving files next to the model."""
    from gr2.models.bundle import ServingManifest, write_serving_bundle

    inputs = inputs or StageInputs.of_run(cfg.run_dir)
    art = run_rl(cfg, inputs, init_model, out_dir, stage="internalize")
    digest = hashlib.sha256((art.model / "model.safetensors").read_bytes()).hexdigest()[:12]
    manifest = ServingManifest(model_version=f"{cfg.profile}-{digest}", num_candidates=cfg.rerank.num_candidates,
                               history_length=cfg.rerank.history_length, source_checkpoint=str(art.model),
                               extra={"seed": cfg.seed, "stage": "internalize"})
    write_serving_bundle(art.model, inputs.sid_map, inputs.load_dataset().items, art.model, manifest)
    return art
