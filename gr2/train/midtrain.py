"""``gr2 train midtrain``: teach the LM the catalog's SIDs and user sequences with TRL's ``SFTTrainer``.

Steps: build (or load) the base model, add SID tokens, draw the task mixture from interactions before the
validation cut, measure on validation (next-item Recall@k over the catalog, SID -> title accuracy,
candidate ranking by likelihood), train, measure again, write the model, metrics and a summary.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset as HFDataset
from transformers import set_seed
from trl import SFTTrainer

from gr2.config import GR2Config
from gr2.models.factory import LoadedModel, build_offline_checkpoint, load_model
from gr2.paths import RunPaths
from gr2.provenance import write_metrics
from gr2.train.corpus import corpus_texts
from gr2.train.evaluate import (
    next_item_rankings,
    next_item_recall,
    rerank_likelihood_rankings,
    sid_title_accuracy,
)
from gr2.train.inputs import StageInputs, learnable_sequences, validation_positions
from gr2.train.sft import loss_curve, resume_checkpoint, sft_args, stage_fingerprint
from gr2.train.tasks import Catalog, build_examples, sequence_examples


@dataclass(frozen=True)
class MidtrainArtifacts:
    """Files written by :func:`run_midtrain`."""

    model: Path
    base_model: str
    metrics: Path
    summary: Path


def stage_dir(cfg: GR2Config, stage: str) -> Path:
    return RunPaths.of(cfg.run_dir).train / stage


def prepare_base_model(cfg: GR2Config, corpus: list[str], base: Path | None = None) -> str:
    """``train.model.base_model`` when set, else the offline checkpoint in ``base`` (built once, reused after)."""
    mc = cfg.train.model
    if mc.base_model:
        return mc.base_model
    base = base or stage_dir(cfg, "base")
    card = base / "gr2_model.json"
    wanted = {"config": mc.model_dump(), "seed": cfg.seed}
    if card.exists() and (base / "model.safetensors").exists():
        old = json.loads(card.read_text())
        if {"config": old.get("config"), "seed": old.get("seed")} == wanted:
            return str(base)
    build_offline_checkpoint(mc, corpus, base, seed=cfg.seed)
    record = json.loads(card.read_text())
    card.write_text(json.dumps({**record, **wanted}, indent=2) + "\n")
    return str(base)


def _length_args(mc: Any) -> dict[str, Any]:
    """How long the stage trains and how examples are batched: ``optim.max_steps`` steps, or one pass over
    windows + mixture when sequence epochs are on; packed rows when ``packing``."""
    args: dict[str, Any] = {"completion_only_loss": mc.completion_only_loss}
    if mc.sequence_epochs:
        args.update(max_steps=-1, num_train_epochs=1, warmup_steps=min(mc.optim.warmup_ratio, 0.5))
    if mc.packing:
        args.update(packing=True, packing_strategy="bfd")
    return args


def _shuffled(examples: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    order = np.random.default_rng(seed).permutation(len(examples))
    return [examples[i] for i in order]


def validation_metrics(cfg: GR2Config, lm: LoadedModel, sid_map: Any, catalog: Catalog,
                       positions: list[tuple[list[int], int]], items: Any,
                       inputs: StageInputs | None = None) -> dict[str, Any]:
    """Next-item Recall@k, SID -> title accuracy and (with samples) candidate ranking by likelihood."""
    mc = cfg.train.midtrain
    out: dict[str, Any] = {
        "next_item": next_item_recall(lm, sid_map, positions, k=mc.recall_k),
        "sid_to_title": sid_title_accuracy(lm, sid_map, catalog, mc.eval_titles, mc.title_choices, cfg.seed),
    }
    samples = _validation_samples(cfg, inputs or StageInputs.of_run(cfg.run_dir), mc.eval_users)
    if samples is not None:
        from gr2.rerank.metrics import evaluate_rankings

        rankings = next_item_rankings(lm, sid_map, samples, mc.history_length)
        out["rerank_likelihood"] = {**evaluate_rankings(samples, rankings), "samples": len(samples)}
        rankings = rerank_likelihood_rankings(lm, sid_map, samples, items)
        out["rerank_prompt_likelihood"] = {**evaluate_rankings(samples, rankings), "samples": len(samples)}
    return out


def _validation_samples(cfg: GR2Config, inputs: StageInputs, limit: int) -> Any:
    try:
        from gr2.rerank.samples import SamplesError
    except ImportError:
        return None
    try:
        frame = inputs.load_samples("validation")
    except SamplesError:
        return None
    from gr2.train.inputs import subsample

    return subsample(frame, limit, cfg.seed)


def run_midtrain(cfg: GR2Config, inputs: StageInputs | None = None, out_dir: str | Path | None = None
                 ) -> MidtrainArtifacts:
    """Mid-train the base model on the SID task mixture; write ``{model,metrics.json,summary.md}`` to ``out_dir``.

    ``inputs`` and ``out_dir`` default to the run directory (``train/midtrain``). Under ``torchrun`` every rank
    runs this function: rank 0 builds the offline base model first, and only rank 0 writes files.
    """
    started = time.time()
    torch.set_num_threads(cfg.train.threads)
    set_seed(cfg.seed)
    mc = cfg.train.midtrain
    inputs = inputs or StageInputs.of_run(cfg.run_dir)
    out = Path(out_dir) if out_dir is not None else stage_dir(cfg, "midtrain")
    sid_map = inputs.load_sid_map(cfg.train.model.item_tokens)
    data = inputs.load_dataset()
    protocol = inputs.load_protocol(cfg)
    catalog = Catalog.build(data.items, sid_map)
    sequences = learnable_sequences(protocol)
    mixture = build_examples(sequences, catalog, sid_map, mc, cfg.seed)
    examples = mixture
    if mc.sequence_epochs:
        examples = _shuffled(mixture + sequence_examples(sequences, catalog, sid_map, mc, cfg.seed), cfg.seed)
    args = sft_args(mc.optim, out / "checkpoints", cfg.seed, **_length_args(mc))
    with args.main_process_first(desc="offline base model"):
        base_dir = out / "base" if out_dir is not None else stage_dir(cfg, "base")
        base = prepare_base_model(cfg, corpus_texts(cfg, mixture, catalog, inputs), base_dir)
    lm = load_model(base, sid_map.all_tokens(), seed=cfg.seed)
    positions = validation_positions(protocol, mc.history_length, mc.eval_users, cfg.seed)

    before = validation_metrics(cfg, lm, sid_map, catalog, positions, data.items, inputs)
    dataset = HFDataset.from_list([{"prompt": e["prompt"], "completion": e["completion"]} for e in examples])
    trainer = SFTTrainer(model=lm.model, args=args, train_dataset=dataset, processing_class=lm.tokenizer)
    checkpoint = resume_checkpoint(out / "checkpoints", mc.optim.resume, stage_fingerprint(cfg, "midtrain"))
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out / "model"))
    if trainer.is_world_process_zero():
        sid_map.save(out / "model" / "sid_map.parquet")  # the item-token mode the model was trained with
    after = validation_metrics(cfg, lm, sid_map, catalog, positions, data.items, inputs)

    curve = loss_curve(trainer.state.log_history)
    metrics = {
        "base_model": base,
        "parameters": lm.num_parameters,
        "sid_tokens_added": lm.added_tokens,
        "examples": len(examples),
        "examples_per_task": dict(Counter(e["task"] for e in examples)),
        "protocol": protocol.kind,
        "learnable_interactions": int(protocol.learnable_mask.sum()),
        "steps": trainer.state.global_step,
        "final_loss": curve[-1]["loss"] if curve else None,
        "loss_curve": curve,
        "validation_before": before,
        "validation_after": after,
        "wall_time_s": round(time.time() - started, 1),
        "world_size": args.world_size,
    }
    metrics_path, summary = out / "metrics.json", out / "summary.md"
    if trainer.is_world_process_zero():
        write_metrics(metrics_path, metrics, cfg, [inputs.dataset, inputs.sid_map])
        summary.write_text(_summary(metrics, mc.recall_k))
    return MidtrainArtifacts(model=out / "model", base_model=base, metrics=metrics_path, summary=summary)


def _summary(m: dict[str, Any], k: int) -> str:
    b, a = m["validation_before"], m["validation_after"]
    loss = "n/a" if m["final_loss"] is None else f"{m['final_loss']:.3f}"
    lines = [
        "# Mid-training", "",
        f"Base model `{m['base_model']}` ({m['parameters']:,} parameters, {m['sid_tokens_added']} SID tokens "
        f"added); {m['examples']} examples {m['examples_per_task']}; {m['steps']} steps, final loss {loss}.", "",
        "| validation metric | before | after |", "| --- | --- | --- |",
        f"| next-item Recall@{k} ({b['next_item']['positions']} positions) | {b['next_item'][f'recall@{k}']:.3f} "
        f"| {a['next_item'][f'recall@{k}']:.3f} |",
        f"| next-item Recall@1 | {b['next_item']['recall@1']:.3f} | {a['next_item']['recall@1']:.3f} |",
        f"| SID -> title accuracy (chance {b['sid_to_title']['chance']:.2f}) | {b['sid_to_title']['accuracy']:.3f} "
        f"| {a['sid_to_title']['accuracy']:.3f} |",
    ]
    for key, prompt in (("rerank_likelihood", "next-item prompt"), ("rerank_prompt_likelihood", "re-ranking prompt")):
        if key in a:
            n = a[key]["samples"]
            lines += [f"| candidates by likelihood, {prompt}, {m} ({n} samples) | {b[key][m]:.3f} | {a[key][m]:.3f} |"
                      for m in ("R@1", "R@3", "N@3")]
    return "\n".join(lines) + "\n"
