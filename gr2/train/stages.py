"""``gr2 train table``: the stage-by-stage table on the re-ranking samples (``gr2 eval`` style).

Rows: the incoming (legacy) order; the mid-trained model scoring candidates by likelihood, in its own
next-item prompt and inside the re-ranking prompt; the reasoning-SFT model scoring by likelihood (both
prompts) and decoding an answer with reasoning (on the first ``max_generate`` samples, next to the
incoming order on the same subset). Written as JSON + Markdown to ``RunPaths.eval`` and copied to
``RunPaths.train``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from gr2.config import GR2Config
from gr2.paths import RunPaths
from gr2.provenance import write_metrics
from gr2.train.inputs import StageInputs

COLUMNS = ("strict R@1", "R@3", "N@3", "strict N@3", "MRR", "identity_rate", "invalid_rate")


@dataclass(frozen=True)
class StageTableArtifacts:
    """Files written by :func:`run_stage_table`."""

    json: Path
    markdown: Path
    rows: list[dict[str, Any]]


def stage_row(name: str, model: str, method: str, samples: pd.DataFrame, rankings: list[list[int]],
         valid: list[bool] | None = None, base: pd.DataFrame | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics of one method, its R@1 bootstrap CI (users resampled) and its paired R@1 lift over ``base``."""
    from gr2.rerank.metrics import bootstrap_ci, evaluate_rankings, paired_lift, per_sample_metrics

    frame = per_sample_metrics(samples, rankings, valid)
    groups = samples["user_id"].to_numpy() if "user_id" in samples else None
    row = {"stage": name, "model": model, "method": method, "samples": len(samples),
           **evaluate_rankings(samples, rankings, valid),
           "R@1_ci95": list(bootstrap_ci(frame["R@1"].to_numpy(), seed=0, groups=groups))}
    if base is not None:
        row["R@1_lift_vs_incoming"] = paired_lift(frame["R@1"].to_numpy(), base["R@1"].to_numpy(), seed=0,
                                                  groups=groups)
    return row, frame


def run_stage_table(cfg: GR2Config, inputs: StageInputs | None = None, models: Mapping[str, Path] | None = None,
                    out_dir: str | Path | None = None) -> StageTableArtifacts:
    """Score every available stage on ``train.eval.split`` and write the table.

    ``models`` maps stage name (``mid-training``, ``reasoning SFT``) to a checkpoint folder; it, ``inputs`` and
    ``out_dir`` default to the run directory (``train/<stage>/model``, ``eval/``).
    """
    from gr2.models.factory import load_model
    from gr2.train.evaluate import generated_rankings, next_item_rankings, rerank_likelihood_rankings
    from gr2.train.inputs import TrainInputError, subsample

    started = time.time()
    torch.set_num_threads(cfg.train.threads)
    ec = cfg.train.eval
    paths = RunPaths.of(cfg.run_dir)
    inputs = inputs or StageInputs.of_run(cfg.run_dir)
    out = Path(out_dir) if out_dir is not None else paths.eval
    samples = subsample(inputs.load_samples(ec.split), ec.max_samples, cfg.seed)
    gen = subsample(samples, ec.max_generate, cfg.seed)
    incoming = [[int(c) for c in cands] for cands in samples["candidates"]]
    first, base = stage_row("incoming order", "legacy pre-ranker", "as given", samples, incoming)
    rows = [first]
    models = models or {"mid-training": paths.train / "midtrain" / "model",
                        "reasoning SFT": paths.train / "reasoning" / "model"}
    stages = [(name, Path(d)) for name, d in models.items()]
    if not any((d / "config.json").exists() for _, d in stages):
        raise TrainInputError(f"{[str(d) for _, d in stages]}: no trained stage; run `gr2 train midtrain` first")
    sid_map = inputs.load_sid_map(cfg.train.model.item_tokens)
    items = inputs.load_dataset().items
    history = cfg.train.midtrain.history_length
    for stage, model_dir in stages:
        if not (model_dir / "config.json").exists():
            continue
        lm = load_model(model_dir, sid_map.all_tokens())
        scorers: list[tuple[str, Callable[[], list[list[int]]]]] = [
            ("likelihood, next-item prompt", lambda lm=lm: next_item_rankings(lm, sid_map, samples, history)),
            ("likelihood, re-ranking prompt", lambda lm=lm: rerank_likelihood_rankings(lm, sid_map, samples, items)),
        ]
        for method, score in scorers:
            rows.append(stage_row(stage, str(model_dir), method, samples, score(), base=base)[0])
        if stage == "reasoning SFT" and len(gen):
            rankings, flags = generated_rankings(lm, sid_map, gen, items, "reasoning", ec.max_new_tokens,
                                                 ec.batch_size)
            gen_incoming = [[int(c) for c in cands] for cands in gen["candidates"]]
            gen_row, gen_base = stage_row("incoming order", "legacy pre-ranker", "as given (decoding subset)", gen,
                                     gen_incoming)
            rows.append(gen_row)
            rows.append(stage_row(stage, str(model_dir), "decoded with reasoning", gen, rankings,
                             valid=[f["valid"] for f in flags], base=gen_base)[0])
    record = {"split": ec.split, "rows": rows, "wall_time_s": round(time.time() - started, 1)}
    json_path = out / "train_stages.json"
    write_metrics(json_path, record, cfg, [inputs.samples / f"{ec.split}.parquet", inputs.sid_map])
    md = stage_table_markdown(rows, ec.split)
    md_path = out / "train_stages.md"
    md_path.write_text(md)
    if out_dir is None:
        paths.train.mkdir(parents=True, exist_ok=True)
        (paths.train / "stages.md").write_text(md)
    return StageTableArtifacts(json=json_path, markdown=md_path, rows=rows)


def _cell(value: Any) -> str:
    if isinstance(value, dict) and "value" in value:
        value = value["value"]
    if isinstance(value, float | np.floating):
        return f"{float(value):.3f}"
    return "n/a" if value is None else str(value)


def stage_table_markdown(rows: list[dict[str, Any]], split: str) -> str:
    """The table as Markdown (one row per stage and scoring method).

    >>> print(stage_table_markdown([{"stage": "s", "method": "m", "samples": 2, "R@1": 0.5}], "test"))
    ... # doctest: +ELLIPSIS
    # Stage-by-stage re-ranking quality (test)
    ...
    | s | m | 2 | 0.500 | - | n/a | n/a | n/a | n/a | n/a | n/a | n/a |
    <BLANKLINE>
    """
    lines = [f"# Stage-by-stage re-ranking quality ({split})", "",
             "R@1 with a 95% bootstrap interval (users resampled); lift = paired R@1 difference to the incoming "
             "order on the same samples.", "",
             "| stage | method | samples | R@1 [95% CI] | R@1 lift [95% CI] | " + " | ".join(COLUMNS) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |"]
    for r in rows:
        ci = r.get("R@1_ci95")
        r1 = _cell(r.get("R@1")) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        lift = r.get("R@1_lift_vs_incoming")
        lift_text = f"{lift['abs']:+.3f} [{lift['abs_lo']:+.3f}, {lift['abs_hi']:+.3f}]" if lift else "-"
        lines.append(f"| {r['stage']} | {r['method']} | {r['samples']} | {r1} | {lift_text} | "
                     + " | ".join(_cell(r.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"
