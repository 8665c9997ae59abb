"""TRL plumbing shared by the SFT stages: the ``SFTConfig`` of a stage, a per-token weighted trainer,
resumable checkpoints and the loss curve.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from gr2.train.config import OptimConfig

WEIGHTS = "token_weights"
logger = logging.getLogger(__name__)


def cpu_trainer_kwargs(optim: Any, output_dir: Path, seed: int) -> dict[str, Any]:
    """The ``TrainingArguments`` every training stage shares: length, optimiser, checkpoints, seed, and CPU
    settings (no bf16, no gradient checkpointing, no reporting; DDP over gloo under ``torchrun`` on CPU)."""
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir),
        "max_steps": optim.max_steps,
        "gradient_accumulation_steps": 1,
        "learning_rate": optim.learning_rate,
        "warmup_steps": max(0, round(optim.warmup_ratio * optim.max_steps)),
        "weight_decay": optim.weight_decay,
        "logging_steps": optim.logging_steps,
        "save_strategy": "steps",
        "save_steps": optim.save_steps,
        "save_total_limit": optim.save_total_limit,
        "seed": seed,
        "data_seed": seed,
        "bf16": False,
        "fp16": False,
        "activation_checkpointing": False,  # transformers 5 name of gradient_checkpointing (TRL default: on)
        "use_cpu": not torch.cuda.is_available(),
        "report_to": [],
        "dataloader_num_workers": 0,
        "eval_strategy": "no",
    }
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        kwargs["ddp_backend"] = "gloo"  # torchrun on CPU: NCCL needs GPUs
    return kwargs


def sft_args(optim: OptimConfig, output_dir: Path, seed: int, **overrides: Any) -> SFTConfig:
    """TRL's ``SFTConfig`` for a CPU stage (:func:`cpu_trainer_kwargs`, cosine schedule, ``max_length``).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) the same stage trains with DDP; on CPU over gloo.
    """
    kwargs = {**cpu_trainer_kwargs(optim, output_dir, seed), "per_device_train_batch_size": optim.batch_size,
              "lr_scheduler_type": "cosine", "max_length": optim.max_length, "disable_tqdm": False}
    kwargs.update(overrides)
    return SFTConfig(**kwargs)


RESUMABLE_FIELDS = {"max_steps", "save_steps", "logging_steps", "save_total_limit", "resume"}  # may change
FINGERPRINT_FILE = "gr2_fingerprint.json"


def stage_fingerprint(cfg: Any, stage: str) -> str:
    """A hash of everything that shapes a stage's training (not of how long it runs or how often it saves)."""
    section = getattr(cfg.train, stage).model_dump()
    section["optim"] = {k: v for k, v in section.get("optim", {}).items() if k not in RESUMABLE_FIELDS}
    blob = json.dumps({"stage": section, "model": cfg.train.model.model_dump(), "seed": cfg.seed,
                       "sid": cfg.sid.model_dump(), "rerank": cfg.rerank.model_dump()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resume_checkpoint(output_dir: Path, resume: bool, fingerprint: str | None = None) -> str | None:
    """The last ``checkpoint-N`` folder to resume from, when resuming is on and one exists.

    With a ``fingerprint``, checkpoints written under another configuration are removed instead of
    resumed (training starts over), and the fingerprint is recorded for the next run.
    """
    if fingerprint is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        marker = output_dir / FINGERPRINT_FILE
        previous = json.loads(marker.read_text()).get("fingerprint") if marker.exists() else None
        if previous != fingerprint:
            stale = [p for p in output_dir.glob("checkpoint-*") if p.is_dir()]
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)  # every DDP rank runs this
            if stale:
                logger.warning("removed %d checkpoint(s) of %s trained with another configuration", len(stale),
                               output_dir)
            marker.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
    if not resume or not output_dir.is_dir():
        return None
    return get_last_checkpoint(str(output_dir))


def loss_curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """(step, loss) points of the training log."""
    return [{"step": int(e["step"]), "loss": float(e["loss"])} for e in log_history if "loss" in e and "step" in e]


class WeightedCollator(DataCollatorForLanguageModeling):
    """TRL's language-modeling collator that also pads a per-token ``token_weights`` column (with 0)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        output = super().torch_call(examples)
        width = output["input_ids"].shape[1]
        weights = torch.zeros((len(examples), width), dtype=torch.float32)
        for row, example in enumerate(examples):
            w = torch.as_tensor(example[WEIGHTS], dtype=torch.float32)
            weights[row, : len(w)] = w
        output[WEIGHTS] = weights
        return output


class WeightedSFTTrainer(SFTTrainer):
    """``SFTTrainer`` whose loss weights each target token: ``sum_t w_t * nll_t / #target tokens``.

    The reasoning stage gives reasoning tokens ``lambda_r`` and ranking tokens ``lambda_o``; the weight of
    a token is read at its own position (the label it is trained to produce).
    """

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if self._signature_columns is not None and WEIGHTS not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, WEIGHTS]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        weights = inputs.pop(WEIGHTS, None)
        if weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)
        per_token_nll = -outputs.log_probs  # (batch, seq - 1), zero where the label is -100
        shifted = weights[:, 1:].to(per_token_nll.dtype)
        num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = (per_token_nll * shifted).sum() / torch.as_tensor(num_tokens).clamp(min=1)
        with torch.no_grad():
            valid = outputs.label_mask.sum().clamp(min=1)
            self._metrics[mode]["mean_token_accuracy"].append((outputs.is_top1.sum() / valid).item())
            self._metrics[mode]["weighted_tokens"].append(float(shifted.sum() / valid))
        return (loss, outputs) if return_outputs else loss
