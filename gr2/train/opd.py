"""``gr2 train opd``: distil the re-ranker into a student with at most a quarter of its parameters.

The student is the teacher's architecture, narrower and shallower (``train.opd.student``), on the teacher's
tokenizer (same SID/item tokens, same vocabulary, which TRL's divergence needs); its token embeddings start
from the teacher's projected onto their top principal directions, the rest is fresh.

``method: opd`` trains it with TRL's ``DistillationTrainer``: the student samples an answer-only ranking per
prompt and is pulled towards the frozen teacher's next-token distribution on its own tokens (``beta=1``: the
reverse KL, mode-seeking). Rollouts are constrained like the RL stages' (:class:`ConstrainedDistillationTrainer`
overrides TRL's ``_generate_single_turn`` and samples each row under its :class:`RankingAutomaton`), so every
rollout is a permutation; the divergence still compares the full, unmasked distributions. TRL's
distillation has no task-reward term, so none is added. ``method: sft`` trains the same student on the
teacher's greedy constrained answers to the same prompts (``train/opd_sft``), the comparison.

Both write ``{model,metrics.json,summary.md}`` with validation likelihood R@1, decoded strict R@1 and
invalid rate for student and teacher on the same samples, and the share of the teacher's R@1 gain over the
incoming order that the student keeps.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, set_seed
from trl import DistillationConfig, DistillationTrainer

from gr2.config import GR2Config
from gr2.models.constrained import DecodingTokens
from gr2.models.factory import count_parameters
from gr2.paths import RunPaths
from gr2.provenance import write_metrics
from gr2.train.config import OPDConfig, StudentConfig
from gr2.train.grpo import rollout_stats, sample_constrained
from gr2.train.inputs import StageInputs
from gr2.train.rl import RLInputError


@dataclass(frozen=True)
class OPDArtifacts:
    """Files written by :func:`run_opd`."""

    model: Path
    metrics: Path
    summary: Path


def resolve_teacher(cfg: GR2Config, teacher: str) -> Path:
    """``auto`` = ``train/internalize/model``, else ``train/rl/model``; or a checkpoint path."""
    train = RunPaths.of(cfg.run_dir).train
    found = [train / s / "model" for s in ("internalize", "rl")] if teacher == "auto" else [Path(teacher)]
    for path in found:
        if (path / "config.json").exists():
            return path
    raise RLInputError(f"no teacher model at {[str(p) for p in found]}; run `gr2 train internalize` first"
                       if teacher == "auto" else f"{teacher}: no config.json; not a checkpoint directory")


def retained_share(student: float | None, teacher: float | None, incoming: float | None) -> float | None:
    """The share of the teacher's gain over the incoming order the student keeps (None when undefined).

    >>> retained_share(0.3, 0.4, 0.2), retained_share(0.3, 0.2, 0.2)
    (0.5, None)
    """
    if student is None or teacher is None or incoming is None or abs(teacher - incoming) < 1e-12:
        return None
    return round((student - incoming) / (teacher - incoming), 6)


def build_student(teacher: PreTrainedModel, sc: StudentConfig, seed: int) -> PreTrainedModel:
    """The teacher's architecture at the student's size, on the same vocabulary.

    The token embeddings (tied to the output head) start from the teacher's, projected onto their top
    ``hidden_size`` principal directions and rescaled to the teacher's spread: similar items start close.
    """
    config = copy.deepcopy(teacher.config)
    config.hidden_size, config.num_hidden_layers = sc.hidden_size, sc.num_layers
    config.num_attention_heads, config.num_key_value_heads = sc.num_heads, sc.num_kv_heads
    config.intermediate_size = sc.intermediate_size
    config.head_dim = sc.hidden_size // sc.num_heads
    if hasattr(config, "layer_types"):
        config.layer_types = config.layer_types[: sc.num_layers]
    if hasattr(config, "max_window_layers"):
        config.max_window_layers = min(config.max_window_layers, sc.num_layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        emb = teacher.get_input_embeddings().weight.detach().float()
        centred = emb - emb.mean(dim=0)
        u, s, _ = torch.svd_lowrank(centred, q=min(sc.hidden_size, *emb.shape))
        proj = u * s
        proj = proj * (emb.std() / proj.std().clamp(min=1e-8))
        width = proj.shape[1]
        with torch.no_grad():
            student.get_input_embeddings().weight[:, :width] = proj
    student.generation_config = copy.deepcopy(teacher.generation_config)
    return student


def distillation_args(oc: OPDConfig, output_dir: Path, seed: int) -> DistillationConfig:
    """TRL's ``DistillationConfig``: one on-policy rollout per prompt, reverse KL by default, CPU-friendly."""
    import os

    optim = oc.optim
    kwargs: dict[str, Any] = {
        "output_dir": str(output_dir), "max_steps": optim.max_steps,
        "per_device_train_batch_size": optim.batch_size, "gradient_accumulation_steps": 1,
        "learning_rate": optim.learning_rate, "lr_scheduler_type": "constant_with_warmup",
        "warmup_steps": max(0, round(optim.warmup_ratio * optim.max_steps)), "weight_decay": optim.weight_decay,
        "beta": oc.beta, "temperature": oc.temperature, "max_completion_length": oc.max_completion_length,
        "top_p": 1.0, "top_k": 0,  # the ranking mask is the only filter
        "logging_steps": optim.logging_steps, "save_strategy": "steps", "save_steps": optim.save_steps,
        "save_total_limit": optim.save_total_limit, "seed": seed, "data_seed": seed,
        "bf16": False, "fp16": False, "gradient_checkpointing": False, "activation_checkpointing": False,
        "use_cpu": not torch.cuda.is_available(), "report_to": [], "dataloader_num_workers": 0,
        "eval_strategy": "no",
    }
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        kwargs["ddp_backend"] = "gloo"
    return DistillationConfig(**kwargs)


class ConstrainedDistillationTrainer(DistillationTrainer):
    """``DistillationTrainer`` whose student rollouts are decoded under the ranking constraint.

    Each dataset row needs ``labels``, ``candidates`` and ``target``; logs ``rollout/{invalid_rate,
    identity_rate,r1}`` per step and keeps them in ``rollout_history``.
    """

    def __init__(self, *args: Any, constrained: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._constrained = constrained
        self._decoding = DecodingTokens.of(self._tokenizer, 0)
        self._rows: list[dict[str, Any]] = []
        self.rollout_history: list[dict[str, float]] = []

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        self._rows = inputs
        output = super()._generate_and_score_completions(inputs)
        mask = output["completion_mask"].bool()
        texts = self._tokenizer.batch_decode([ids[m].tolist() for ids, m in zip(output["completion_ids"], mask,
                                                                               strict=True)],
                                             skip_special_tokens=True)
        stats = rollout_stats(texts, inputs)
        mode = "train" if self.model.training else "eval"
        for name, value in stats.items():
            self._metrics[mode][f"rollout/{name}"].append(value)
        if mode == "train":
            self.rollout_history.append({"step": self.state.global_step + 1, **stats})
        return output

    def _generate_single_turn(self, prompt_ids: list[list[int]], images: Any, multimodal_fields: Any,
                              has_tool_images: bool = False) -> list[list[int]]:
        if not self._constrained:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, has_tool_images)
        if self.use_vllm or images is not None:
            raise NotImplementedError("constrained rollouts use the transformers generation path only")
        return sample_constrained(self, prompt_ids, self._rows, reasoning=False)


def teacher_answers(teacher: Any, sid_map: Any, samples: pd.DataFrame, items: pd.DataFrame, max_new_tokens: int,
                    batch_size: int) -> list[str]:
    """The teacher's greedy constrained answer-only ranking per sample, as answer text."""
    from gr2.rerank.format import candidate_labels, format_answer
    from gr2.train.evaluate import generated_rankings

    rankings, _ = generated_rankings(teacher, sid_map, samples, items, "answer", max_new_tokens, batch_size)
    answers = []
    for ranking, cands in zip(rankings, samples["candidates"], strict=True):
        cands = [int(c) for c in cands]
        answers.append(format_answer(ranking, dict(zip(cands, candidate_labels(cands, sid_map), strict=True))))
    return answers


def _train_sft(oc: OPDConfig, student: PreTrainedModel, tokenizer: Any, prompts: Sequence[Any], answers: Sequence[str],
               out: Path, seed: int) -> Any:
    """Plain SFT of the student on (prompt, teacher answer) pairs, loss on the answer tokens."""
    from datasets import Dataset as HFDataset

    from gr2.train.reasoning import weighted_example
    from gr2.train.sft import WEIGHTS, WeightedCollator, WeightedSFTTrainer, sft_args

    rows = [weighted_example(tokenizer, list(p), a, 1.0, 1.0) for p, a in zip(prompts, answers, strict=True)]
    dataset = HFDataset.from_list([{k: r[k] for k in ("input_ids", "labels", WEIGHTS)} for r in rows])
    args = sft_args(oc.optim, out / "checkpoints", seed, max_length=None, lr_scheduler_type="constant_with_warmup",
                    dataset_kwargs={"skip_prepare_dataset": True})
    trainer = WeightedSFTTrainer(model=student, args=args, train_dataset=dataset, processing_class=tokenizer,
                                 data_collator=WeightedCollator(pad_token_id=tokenizer.pad_token_id))
    trainer.train()
    return trainer


def run_opd(cfg: GR2Config, inputs: StageInputs | None = None, teacher: str | Path | None = None,
            out_dir: str | Path | None = None) -> OPDArtifacts:
    """Distil (``train.opd.method``) the teacher into a new student; write ``{model,metrics.json,summary.md}``."""
    from gr2.models.factory import load_model
    from gr2.rerank.metrics import evaluate_rankings
    from gr2.train.inputs import subsample
    from gr2.train.rl import rl_dataset, validation_metrics
    from gr2.train.sft import loss_curve

    started = time.time()
    torch.set_num_threads(cfg.train.threads)
    set_seed(cfg.seed)
    oc = cfg.train.opd
    inputs = inputs or StageInputs.of_run(cfg.run_dir)
    train = RunPaths.of(cfg.run_dir).train
    out = Path(out_dir) if out_dir is not None else train / ("opd" if oc.method == "opd" else "opd_sft")
    teacher_path = Path(teacher) if teacher is not None else resolve_teacher(cfg, oc.teacher)
    sid_map = inputs.load_sid_map(cfg.train.model.item_tokens)
    items = inputs.load_dataset().items
    teacher_lm = load_model(teacher_path, sid_map.all_tokens(), seed=cfg.seed)
    teacher_lm.model.eval()
    student = build_student(teacher_lm.model, oc.student, cfg.seed)
    sizes = {"teacher": count_parameters(teacher_lm.model), "student": count_parameters(student)}
    if sizes["student"] > oc.student.max_param_ratio * sizes["teacher"]:
        raise RLInputError(f"train.opd.student has {sizes['student']} parameters, more than "
                           f"{oc.student.max_param_ratio} x the teacher's {sizes['teacher']}; make it smaller")
    samples = subsample(inputs.load_samples("train"), oc.max_samples, cfg.seed)
    dataset, dropped = rl_dataset(samples, items, sid_map, "answer", teacher_lm.tokenizer, oc.optim.max_length)

    if oc.method == "opd":
        args = distillation_args(oc, out / "checkpoints", cfg.seed)
        trainer = ConstrainedDistillationTrainer(model=student, teacher_model=teacher_lm.model, args=args,
                                                 train_dataset=dataset, processing_class=teacher_lm.tokenizer)
        trainer.train()
        rollouts = trainer.rollout_history
        curve = [{"step": int(e["step"]), **{k: float(v) for k, v in e.items()
                                             if v is not None and (k in ("loss", "entropy") or k.startswith("rollout/"))}}
                 for e in trainer.state.log_history if "loss" in e and "step" in e]
    else:
        sft_rows = samples.set_index(samples["sample_id"].astype(str)).loc[dataset["sample_id"]].reset_index(drop=True)
        answers = teacher_answers(teacher_lm, sid_map, sft_rows, items, oc.max_completion_length,
                                  cfg.train.eval.batch_size)
        trainer = _train_sft(oc, student, teacher_lm.tokenizer, dataset["prompt"], answers, out, cfg.seed)
        rollouts, curve = [], loss_curve(trainer.state.log_history)
    trainer.save_model(str(out / "model"))
    teacher_lm.tokenizer.save_pretrained(out / "model")
    sid_map.save(out / "model" / "sid_map.parquet")

    student_lm = load_model(out / "model", sid_map.all_tokens(), seed=cfg.seed)
    validation = {"student": validation_metrics(cfg, oc, student_lm, sid_map, items, inputs),
                  "teacher": validation_metrics(cfg, oc, teacher_lm, sid_map, items, inputs)}
    sub = subsample(inputs.load_samples("validation"), oc.eval_samples, cfg.seed)
    incoming = evaluate_rankings(sub, [[int(c) for c in r] for r in sub["candidates"]])["R@1"] if len(sub) else None
    kept = {kind: retained_share((validation["student"].get(kind) or {}).get(key),
                                 (validation["teacher"].get(kind) or {}).get(key), incoming)
            for kind, key in (("likelihood", "R@1"), ("generated", "strict R@1"))}
    metrics = {
        "method": oc.method, "teacher_model": str(teacher_path), "parameters": sizes,
        "parameter_ratio": round(sizes["student"] / sizes["teacher"], 4), "beta": oc.beta,
        "examples": len(dataset), "dropped_long_prompt": dropped, "steps": trainer.state.global_step,
        "rollouts": {"batches": len(rollouts), "max_invalid_rate": max((r["invalid_rate"] for r in rollouts),
                                                                       default=None), "per_step": rollouts},
        "curve": curve, "validation": validation, "incoming_r1": incoming, "retained_gain": kept,
        "wall_time_s": round(time.time() - started, 1),
    }
    metrics_path, summary = out / "metrics.json", out / "summary.md"
    write_metrics(metrics_path, metrics, cfg, [inputs.samples / "train.parquet", inputs.sid_map])
    summary.write_text(_summary(metrics))
    return OPDArtifacts(model=out / "model", metrics=metrics_path, summary=summary)


def _summary(m: dict[str, Any]) -> str:
    title = "On-policy distillation (reverse KL)" if m["method"] == "opd" else "SFT student on the teacher's answers"
    lines = [f"# {title}", "", f"Teacher `{m['teacher_model']}` ({m['parameters']['teacher']} parameters), student "
             f"{m['parameters']['student']} ({m['parameter_ratio']:.2f}x); {m['examples']} prompts, {m['steps']} steps; "
             f"incoming R@1 {m['incoming_r1']}; share of the teacher's gain kept: {m['retained_gain']}.", "",
             "| model | validation | samples | R@1 | strict R@1 | N@3 | invalid |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for who, block in m["validation"].items():
        for name, v in block.items():
            lines.append(f"| {who} | {name} | {v['samples']} | " + " | ".join(
                f"{v[k]:.3f}" if isinstance(v.get(k), float) else "n/a"
                for k in ("R@1", "strict R@1", "N@3", "invalid_rate")) + " |")
    return "\n".join(lines) + "\n"
