"""``gr2 train reasoning``: SFT on accepted traces with separate weights for reasoning and ranking tokens.

Every target token is weighted in the loss (:class:`gr2.train.sft.WeightedSFTTrainer`): tokens inside
``<think>...</think>`` by ``lambda_r``; the tags, the ranking after them and the end-of-turn token by
``lambda_o``, with ``lambda_r <= lambda_o`` so the format and the ranking dominate what the model copies
from a heuristic or noisy teacher. To keep what mid-training learned (the report's finding is that plain SFT on
the re-ranking format washes it out) the batch also mixes:

* answer-only copies of the traces (the ranking with no reasoning), so the model can score candidates
  by likelihood right inside the re-ranking prompt, and
* fresh mid-training task examples (next-item, SID <-> text, persona, plain text) at weight 1.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import Dataset as HFDataset
from transformers import PreTrainedTokenizerBase, set_seed

from gr2.config import GR2Config
from gr2.models.factory import load_model
from gr2.models.tokenizer import THINK_CLOSE, THINK_OPEN
from gr2.paths import RunPaths
from gr2.provenance import write_metrics
from gr2.train.inputs import StageInputs
from gr2.train.sft import (
    WEIGHTS,
    WeightedCollator,
    WeightedSFTTrainer,
    loss_curve,
    resume_checkpoint,
    sft_args,
    stage_fingerprint,
)


class ReasoningInputError(ValueError):
    """Missing traces or mid-trained model; the message names the command that makes them."""


@dataclass(frozen=True)
class ReasoningArtifacts:
    """Files written by :func:`run_reasoning`."""

    model: Path
    metrics: Path
    summary: Path


def weighted_example(
    tokenizer: PreTrainedTokenizerBase,
    prompt: list[dict[str, str]],
    completion: str,
    lambda_r: float,
    lambda_o: float,
    full_sequence: bool = False,
    max_length: int | None = None,
) -> dict[str, list]:
    """Tokenize prompt + completion with the chat template; weight completion tokens by span.

    Tokens between ``<think>`` and ``</think>`` get ``lambda_r``; the tags themselves (the answer format)
    and the rest of the completion get ``lambda_o``; prompt tokens get label -100 (or weight 1 when
    ``full_sequence``).
    """
    prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": completion}],
                                              tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template renders the prompt differently with and without the answer")
    start = len(prompt_text)
    opened, close = completion.find(THINK_OPEN), completion.find(THINK_CLOSE)
    # [reasoning_start, reasoning_end): the characters of the reasoning, tags excluded
    reasoning_start = start + opened + len(THINK_OPEN) if 0 <= opened < close else start
    reasoning_end = start + close if 0 <= opened < close else start
    enc = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    ids, labels, weights = [], [], []
    for token, (begin, _end) in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        ids.append(token)
        if begin < start:
            labels.append(token if full_sequence else -100)
            weights.append(1.0 if full_sequence else 0.0)
        else:
            labels.append(token)
            weights.append(lambda_r if reasoning_start <= begin < reasoning_end else lambda_o)
    if max_length is not None:
        ids, labels, weights = ids[:max_length], labels[:max_length], weights[:max_length]
    return {"input_ids": ids, "labels": labels, WEIGHTS: weights}


def trace_examples(traces: pd.DataFrame, samples: pd.DataFrame, items: pd.DataFrame, sid_map: Any,
                   tokenizer: PreTrainedTokenizerBase, cfg: GR2Config) -> list[dict[str, Any]]:
    """Reasoning-style examples of the accepted traces, plus answer-only copies (``answer_only_share``)."""
    from gr2.rerank.format import build_messages, candidate_labels, format_answer

    rc = cfg.train.reasoning
    rng = np.random.default_rng(cfg.seed)
    by_id = {str(r["sample_id"]): r for r in samples.to_dict("records")}
    out = []
    for trace in traces[traces["accepted"]].to_dict("records"):
        sample = by_id.get(str(trace["sample_id"]))
        if sample is None:
            continue
        ranking = [int(i) for i in trace["ranking"]]
        cands = [int(c) for c in sample["candidates"]]
        labels = dict(zip(cands, candidate_labels(cands, sid_map), strict=True))
        prompt = build_messages(sample, items, sid_map, style="reasoning")
        example = weighted_example(tokenizer, prompt, format_answer(ranking, labels, trace["reasoning"]),
                                   rc.lambda_r, rc.lambda_o, max_length=rc.optim.max_length)
        out.append({**example, "kind": "reasoning"})
        copies = int(rc.answer_only_share) + int(rng.random() < rc.answer_only_share % 1)
        for _ in range(copies):
            prompt = build_messages(sample, items, sid_map, style="answer")
            example = weighted_example(tokenizer, prompt, format_answer(ranking, labels, None), rc.lambda_r,
                                       rc.lambda_o, max_length=rc.optim.max_length)
            out.append({**example, "kind": "answer_only"})
    return out


def midtrain_mix(cfg: GR2Config, sid_map: Any, tokenizer: PreTrainedTokenizerBase, n: int,
                 inputs: StageInputs | None = None) -> list[dict[str, Any]]:
    """``n`` fresh mid-training examples (another seed than mid-training), tokenized at weight 1."""
    from gr2.train.inputs import learnable_sequences
    from gr2.train.tasks import Catalog, build_examples

    if n <= 0:
        return []
    inputs = inputs or StageInputs.of_run(cfg.run_dir)
    data = inputs.load_dataset()
    examples = build_examples(learnable_sequences(inputs.load_protocol(cfg)), Catalog.build(data.items, sid_map),
                              sid_map, cfg.train.midtrain, cfg.seed + 1, total=n)
    full = not cfg.train.midtrain.completion_only_loss
    return [{**weighted_example(tokenizer, e["prompt"], e["completion"][0]["content"], 1.0, 1.0, full_sequence=full,
                                max_length=cfg.train.reasoning.optim.max_length), "kind": f"mid:{e['task']}"}
            for e in examples]


def validation_metrics(cfg: GR2Config, lm: Any, sid_map: Any, items: pd.DataFrame,
                       inputs: StageInputs | None = None) -> dict[str, Any]:
    """Likelihood ranking in the re-ranking prompt and decoded rankings on validation samples."""
    from gr2.rerank.metrics import evaluate_rankings
    from gr2.train.evaluate import generated_rankings, rerank_likelihood_rankings
    from gr2.train.inputs import subsample

    rc = cfg.train.reasoning
    samples = (inputs or StageInputs.of_run(cfg.run_dir)).load_samples("validation")
    out: dict[str, Any] = {}
    if rc.eval_samples:
        sub = subsample(samples, rc.eval_samples, cfg.seed)
        out["likelihood"] = {**evaluate_rankings(sub, rerank_likelihood_rankings(lm, sid_map, sub, items)),
                             "samples": len(sub)}
    if rc.eval_generate:
        sub = subsample(samples, rc.eval_generate, cfg.seed)
        rankings, flags = generated_rankings(lm, sid_map, sub, items, "reasoning", rc.max_new_tokens,
                                             cfg.train.eval.batch_size)
        out["generated"] = {**evaluate_rankings(sub, rankings, valid=[f["valid"] for f in flags]),
                            "samples": len(sub),
                            "parse_valid_rate": float(np.mean([f["valid"] for f in flags])),
                            "example_output": flags[0]["text"] if flags else ""}
    return out


def run_reasoning(cfg: GR2Config, inputs: StageInputs | None = None, midtrain_model: str | Path | None = None,
                  traces_file: str | Path | None = None, out_dir: str | Path | None = None) -> ReasoningArtifacts:
    """SFT the mid-trained model on accepted traces; write ``{model,metrics.json,summary.md}`` to ``out_dir``.

    Every path defaults to the run directory (``train/midtrain/model``, ``train/traces/traces.parquet``,
    ``train/reasoning``).
    """
    started = time.time()
    torch.set_num_threads(cfg.train.threads)
    set_seed(cfg.seed)
    rc = cfg.train.reasoning
    paths = RunPaths.of(cfg.run_dir)
    inputs = inputs or StageInputs.of_run(cfg.run_dir)
    out = Path(out_dir) if out_dir is not None else paths.train / "reasoning"
    traces_file = Path(traces_file) if traces_file is not None else paths.train / "traces" / "traces.parquet"
    mid_model = Path(midtrain_model) if midtrain_model is not None else paths.train / "midtrain" / "model"
    if not traces_file.exists():
        raise ReasoningInputError(f"{traces_file}: not found; run `gr2 train traces` first")
    if not (mid_model / "config.json").exists():
        raise ReasoningInputError(f"{mid_model}: no model; run `gr2 train midtrain` first")
    traces = pd.read_parquet(traces_file)
    if not traces["accepted"].any():
        raise ReasoningInputError(f"{traces_file}: no accepted trace to train on")
    sid_map = inputs.load_sid_map(cfg.train.model.item_tokens)
    items = inputs.load_dataset().items
    lm = load_model(mid_model, sid_map.all_tokens(), seed=cfg.seed)
    samples = inputs.load_samples(cfg.train.traces.split)

    examples = trace_examples(traces, samples, items, sid_map, lm.tokenizer, cfg)
    n_traces = sum(e["kind"] == "reasoning" for e in examples)
    examples += midtrain_mix(cfg, sid_map, lm.tokenizer, round(rc.midtrain_mix * n_traces), inputs)
    kept = [e for e in examples if any(w > 0 for w in e[WEIGHTS])]  # cut so short that no target is left
    dropped, examples = len(examples) - len(kept), kept
    order = np.random.default_rng(cfg.seed).permutation(len(examples))
    dataset = HFDataset.from_list([{k: examples[i][k] for k in ("input_ids", "labels", WEIGHTS)} for i in order])
    args = sft_args(rc.optim, out / "checkpoints", cfg.seed, max_length=None,
                    dataset_kwargs={"skip_prepare_dataset": True})
    trainer = WeightedSFTTrainer(model=lm.model, args=args, train_dataset=dataset, processing_class=lm.tokenizer,
                                 data_collator=WeightedCollator(pad_token_id=lm.tokenizer.pad_token_id))
    checkpoint = resume_checkpoint(out / "checkpoints", rc.optim.resume, stage_fingerprint(cfg, "reasoning"))
    trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out / "model"))
    if trainer.is_world_process_zero():
        sid_map.save(out / "model" / "sid_map.parquet")

    curve = loss_curve(trainer.state.log_history)
    metrics = {
        "init_model": str(mid_model),
        "lambda_r": rc.lambda_r, "lambda_o": rc.lambda_o,
        "examples": len(examples), "examples_per_kind": dict(Counter(e["kind"].split(":")[0] for e in examples)),
        "dropped_too_long": dropped,
        "weighted_tokens": _token_weight_totals(examples),
        "steps": trainer.state.global_step,
        "final_loss": curve[-1]["loss"] if curve else None,
        "loss_curve": curve,
        "validation": validation_metrics(cfg, lm, sid_map, items, inputs),
        "wall_time_s": round(time.time() - started, 1),
        "world_size": args.world_size,
    }
    metrics_path, summary = out / "metrics.json", out / "summary.md"
    if trainer.is_world_process_zero():
        write_metrics(metrics_path, metrics, cfg, [traces_file, inputs.sid_map])
        summary.write_text(_summary(metrics))
    return ReasoningArtifacts(model=out / "model", metrics=metrics_path, summary=summary)


def _token_weight_totals(examples: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Number of target tokens at each weight value (lambda_r, lambda_o, 1 for the mid-training mix)."""
    totals: Counter[str] = Counter()
    for e in examples:
        for w in e[WEIGHTS]:
            if w:
                totals[f"{w:g}"] += 1
    return dict(totals)


def _summary(m: dict[str, Any]) -> str:
    loss = "n/a" if m["final_loss"] is None else f"{m['final_loss']:.3f}"
    lines = ["# Reasoning SFT", "",
             f"From `{m['init_model']}`; lambda_r={m['lambda_r']}, lambda_o={m['lambda_o']}; {m['examples']} "
             f"examples {m['examples_per_kind']}; {m['steps']} steps, final loss {loss}.", "",
             "| validation | samples | R@1 | R@3 | N@3 |", "| --- | --- | --- | --- | --- |"]
    for name, v in m["validation"].items():
        lines.append(f"| {name} | {v['samples']} | " + " | ".join(
            f"{v[k]:.3f}" if isinstance(v.get(k), float) else "n/a" for k in ("R@1", "R@3", "N@3")) + " |")
    return "\n".join(lines) + "\n"
