"""``gr2 train rl``: GRPO on the re-ranking samples with GR2's conditional reward (or the naive one).

Rollouts are sampled under the ranking constraint and groups whose rewards all tie are masked out of the
loss (:mod:`gr2.train.grpo`). The stage starts from the best earlier model (``train.rl.init``), writes
``train/rl/{model,metrics.json,summary.md}`` (``train/rl_naive`` with ``reward=naive``, so both coexist)
and measures likelihood R@1 and constrained decoding (strict R@1/N@3, identity and invalid rate) on
validation samples.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset as HFDataset
from transformers import PreTrainedTokenizerBase, set_seed

from gr2.config import GR2Config
from gr2.paths import RunPaths
from gr2.provenance import write_metrics
from gr2.train.config import RLConfig
from gr2.train.inputs import StageInputs

STAGES = ("midtrain", "reasoning", "rl", "internalize")


class RLInputError(ValueError):
    """No model to start from; the message names the command that makes one."""


@dataclass(frozen=True)
class RLArtifacts:
    """Files written by :func:`run_rl`."""

    model: Path
    metrics: Path
    summary: Path


def validation_r1(metrics_file: Path) -> float | None:
    """The validation likelihood R@1 a stage recorded in its ``metrics.json`` (None when absent).

    The answer-only re-ranking prompt, the format RL trains, for every stage: mid-training keeps it under
    ``validation_after.rerank_prompt_likelihood`` (its ``rerank_likelihood`` is the next-item prompt), the later
    stages under ``validation.likelihood``.
    """
    if not metrics_file.exists():
        return None
    m = json.loads(metrics_file.read_text()).get("metrics", {})
    block = m.get("validation_after", {}).get("rerank_prompt_likelihood") or m.get("validation", {}).get("likelihood")
    value = (block or {}).get("R@1")
    return float(value) if value is not None else None


def pick_init(cfg: GR2Config, init: str, candidates: Sequence[str]) -> tuple[Path, str]:
    """The starting checkpoint and why: a path, a stage name, or ``auto`` = the candidate stage with the higher
    validation likelihood R@1 (ties and missing metrics go to the earlier entry of ``candidates``)."""
    train = RunPaths.of(cfg.run_dir).train
    if init != "auto":
        path = train / init / "model" if init in STAGES else Path(init)
        if not (path / "config.json").exists():
            raise RLInputError(f"{path}: no model to start from; run `gr2 train {init}` first"
                               if init in STAGES else f"{path}: no config.json; not a checkpoint directory")
        return path, f"init={init}"
    found = [s for s in candidates if (train / s / "model" / "config.json").exists()]
    if not found:
        raise RLInputError(f"{train}: none of {list(candidates)} has a model; run `gr2 train {candidates[-1]}` first")
    scores = {s: validation_r1(train / s / "metrics.json") for s in found}
    best = max(found, key=lambda s: -1.0 if scores[s] is None else scores[s])
    return train / best / "model", f"auto: validation likelihood R@1 {scores}"


def rl_dataset(samples: pd.DataFrame, items: pd.DataFrame, sid_map: Any, style: str,
               tokenizer: PreTrainedTokenizerBase, max_length: int) -> tuple[HFDataset, int]:
    """Conversational prompts plus the reward columns; samples whose prompt exceeds ``max_length`` are left out."""
    from gr2.models.scoring import render_prompt
    from gr2.rerank.format import build_messages, candidate_labels

    rows, dropped = [], 0
    for r in samples.to_dict("records"):
        cands = [int(c) for c in r["candidates"]]
        prompt = build_messages(r, items, sid_map, style=style)
        if len(render_prompt(tokenizer, prompt)) > max_length:
            dropped += 1
            continue
        target = int(r["target"])
        rows.append({"prompt": prompt, "candidates": cands, "target": target,
                     "target_position": cands.index(target) if target in cands else -1,
                     "labels": candidate_labels(cands, sid_map), "sample_id": str(r["sample_id"])})
    if not rows:
        raise RLInputError(f"no training sample has a prompt of at most {max_length} tokens")
    return HFDataset.from_list(rows), dropped


def _named(fn: Callable[..., list[float | None]], name: str, **fixed: Any) -> Callable[..., list[float | None]]:
    """``fn`` with fixed keyword arguments, under the name TRL logs it as (``rewards/<name>/mean``)."""

    def reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        return fn(completions, **fixed, **kwargs)

    reward.__name__ = name
    return reward


def reward_functions(rc: RLConfig) -> tuple[list[Callable[..., list[float | None]]], list[float]]:
    """The trained reward (``conditional`` or ``naive``) at weight 1, and its parts logged at weight 0."""
    from gr2.rerank.rewards import REWARDS, format_reward, rank_promotion_reward

    funcs = [_named(REWARDS[rc.reward], rc.reward, alpha=rc.alpha), _named(rank_promotion_reward, "rank_promotion"),
             _named(format_reward, "format")]
    return funcs, [1.0, 0.0, 0.0]


def step_curve(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per logged step: reward and its parts, rollout statistics, zero-variance share, loss."""
    keep = ("loss", "reward", "reward_std", "frac_reward_zero_std", "kl", "entropy")
    return [{"step": int(e["step"]), **{k: float(v) for k, v in e.items()
                                        if v is not None and (k in keep or k.startswith(("rewards/", "rollout/")))}}
            for e in log_history if "reward" in e and "step" in e]


def validation_metrics(cfg: GR2Config, rc: RLConfig, lm: Any, sid_map: Any, items: pd.DataFrame,
                       inputs: StageInputs) -> dict[str, Any]:
    """Likelihood ranking and constrained decoding (``rc.style``) on validation samples."""
    from gr2.rerank.metrics import evaluate_rankings
    from gr2.train.evaluate import generated_rankings, next_item_rankings, rerank_likelihood_rankings
    from gr2.train.inputs import subsample

    samples = inputs.load_samples("validation")
    out: dict[str, Any] = {}
    lm.model.eval()
    if rc.eval_samples:
        sub = subsample(samples, rc.eval_samples, cfg.seed)
        out["likelihood"] = {**evaluate_rankings(sub, rerank_likelihood_rankings(lm, sid_map, sub, items)),
                             "samples": len(sub)}
        history = cfg.rerank.history_length
        out["likelihood_next_item"] = {**evaluate_rankings(sub, next_item_rankings(lm, sid_map, sub, history)),
                                       "samples": len(sub)}
    if rc.eval_generate:
        sub = subsample(samples, rc.eval_generate, cfg.seed)
        rankings, flags = generated_rankings(lm, sid_map, sub, items, rc.style, rc.max_completion_length,
                                             cfg.train.eval.batch_size)
        out["generated"] = {**evaluate_rankings(sub, rankings, valid=[f["valid"] and f["complete"] for f in flags]),
                            "samples": len(sub), "example_output": flags[0]["text"] if flags else ""}
    return out


def stage_out(cfg: GR2Config, stage: str) -> Path:
    """``train/<stage>``, or ``train/<stage>_naive`` for the naive-reward ablation."""
    naive = getattr(cfg.train, stage).reward == "naive"
    return RunPaths.of(cfg.run_dir).train / (f"{stage}_naive" if naive else stage)


def run_rl(cfg: GR2Config, inputs: StageInputs | None = None, init_model: str | Path | None = None,
           out_dir: str | Path | None = None, stage: str = "rl") -> RLArtifacts:
    """GRPO from the chosen model; write ``{model,metrics.json,summary.md}`` to ``out_dir``.

    ``stage`` names the config section (``rl`` or ``internalize``); ``init_model`` overrides its ``init``.
    """
    from gr2.models.factory import load_model
    from gr2.train.grpo import ConstrainedGRPOTrainer, grpo_args
    from gr2.train.sft import resume_checkpoint, stage_fingerprint

    started = time.time()
    torch.set_num_threads(cfg.train.threads)
    set_seed(cfg.seed)
    rc: RLConfig = getattr(cfg.train, stage)
    inputs = inputs or StageInputs.of_run(cfg.run_dir)
    out = Path(out_dir) if out_dir is not None else stage_out(cfg, stage)
    candidates = ("reasoning", "midtrain") if stage == "rl" else ("rl", "reasoning")
    init, why = (Path(init_model), "init_model argument") if init_model is not None else \
        pick_init(cfg, rc.init, candidates)
    sid_map = inputs.load_sid_map(cfg.train.model.item_tokens)
    items = inputs.load_dataset().items
    lm = load_model(init, sid_map.all_tokens(), seed=cfg.seed)
    dataset, dropped = rl_dataset(inputs.load_samples("train"), items, sid_map, rc.style, lm.tokenizer,
                                  rc.optim.max_length)
    funcs, weights = reward_functions(rc)
    args = grpo_args(rc, out / "checkpoints", cfg.seed, reward_weights=weights)
    trainer = ConstrainedGRPOTrainer(model=lm.model, reward_funcs=funcs, args=args, train_dataset=dataset,
                                     processing_class=lm.tokenizer, reasoning=rc.style == "reasoning",
                                     dynamic_sampling=rc.dynamic_sampling)
    checkpoint = resume_checkpoint(out / "checkpoints", rc.optim.resume, stage_fingerprint(cfg, stage))
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out / "model"))
    if trainer.is_world_process_zero():
        sid_map.save(out / "model" / "sid_map.parquet")

    rollouts = trainer.rollout_history
    metrics = {
        "init_model": str(init), "init_choice": why, "style": rc.style, "reward": rc.reward,
        "examples": len(dataset), "dropped_long_prompt": dropped, "steps": trainer.state.global_step,
        "rollouts": {"batches": len(rollouts), "rollouts_per_batch": rc.optim.batch_size * rc.num_generations,
                     "max_invalid_rate": max((r["invalid_rate"] for r in rollouts), default=None),
                     "mean_zero_variance_share": float(np.mean([r["zero_variance_share"] for r in rollouts]))
                     if rollouts else None,
                     "per_step": rollouts},
        "curve": step_curve(trainer.state.log_history),
        "validation": validation_metrics(cfg, rc, lm, sid_map, items, inputs),
        "wall_time_s": round(time.time() - started, 1),
        "world_size": args.world_size,
    }
    metrics_path, summary = out / "metrics.json", out / "summary.md"
    if trainer.is_world_process_zero():
        write_metrics(metrics_path, metrics, cfg, [inputs.samples / "train.parquet", inputs.sid_map])
        summary.write_text(_summary(stage, metrics))
    return RLArtifacts(model=out / "model", metrics=metrics_path, summary=summary)


def _summary(stage: str, m: dict[str, Any]) -> str:
    last = m["curve"][-1] if m["curve"] else {}
    reward = f"{last['reward']:.3f}" if "reward" in last else "n/a"
    r = m["rollouts"]
    lines = [f"# {'RL (GRPO)' if stage == 'rl' else 'Internalization (GRPO, answer-only)'}", "",
             f"From `{m['init_model']}` ({m['init_choice']}); {m['reward']} reward, {m['style']} format; "
             f"{m['examples']} prompts, {m['steps']} steps; last logged reward {reward}; max rollout invalid rate "
             f"{r['max_invalid_rate']}, mean zero-variance share {r['mean_zero_variance_share']}.", "",
             "| validation | samples | R@1 | strict R@1 | N@3 | strict N@3 | identity | invalid |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, v in m["validation"].items():
        lines.append(f"| {name} | {v['samples']} | " + " | ".join(
            f"{v[k]:.3f}" if isinstance(v.get(k), float) else "n/a"
            for k in ("R@1", "strict R@1", "N@3", "strict N@3", "identity_rate", "invalid_rate")) + " |")
    return "\n".join(lines) + "\n"
