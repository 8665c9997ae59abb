"""``gr2 eval stages``: the stage-by-stage table on the re-ranking samples (``gr2 eval`` style).

Rows, in the order the method runs:

* ``incoming`` (the legacy order), ``popularity`` and ``sasrec`` (the baselines' predictions of
  ``gr2 eval baselines`` for the same samples, when they exist);
* per trained stage (``midtrain``, ``reasoning``, ``rl_naive``, ``rl``, ``internalize``): candidates scored by
  likelihood in one forward pass (in the next-item prompt and in the answer-only re-ranking prompt), and a
  constrained decode in the stage's own format on the first ``max_generate`` samples (next to the incoming
  order on that subset);
* exactly one row is the serving path (``serving: true``): the internalized model scored the way
  ``serve.mode: score`` serves it, else the latest stage's re-ranking-prompt likelihood.

Columns: R@1/3/5, N@3/5, MRR with 95% bootstrap intervals (users resampled), the paired R@1 ratio to the
incoming order with its interval, identity and (strict) invalid rates, prompt and generated tokens per
request and milliseconds per request (prompts batched 16 at a time on ``train.threads`` threads). Written to
``RunPaths.eval / train_stages.{json,md,png}`` (copied to ``RunPaths.train / stages.md``);
:func:`results_record` is the compact ``benchmarks/results/stages.json`` form.
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

CI_METRICS = ("R@1", "R@3", "R@5", "N@3", "N@5", "MRR")
COLUMNS = ("strict R@1", "N@3", "MRR", "identity_rate", "invalid_rate", "prompt_tokens", "generated_tokens",
           "ms_per_request")
STAGE_DIRS = {"midtrain": "midtrain", "reasoning": "reasoning", "rl_naive": "rl_naive", "rl": "rl",
              "internalize": "internalize"}
BASELINES = ("popularity", "sasrec")
DECODE_STYLE = {"reasoning": "reasoning", "rl_naive": "rl", "rl": "rl", "internalize": "answer"}
LIKELIHOOD = "likelihood, re-ranking prompt"
NEXT_ITEM = "likelihood, next-item prompt"


@dataclass(frozen=True)
class StageTableArtifacts:
    """Files written by :func:`run_stage_table`."""

    json: Path
    markdown: Path
    rows: list[dict[str, Any]]


@dataclass
class Scored:
    """One method's output on a set of samples."""

    rankings: list[list[int]]
    valid: list[bool] | None = None
    prompt_tokens: float | None = None
    generated_tokens: float = 0.0
    seconds: float = 0.0


def stage_row(name: str, model: str, method: str, samples: pd.DataFrame, scored: Scored | list[list[int]],
              base: pd.DataFrame | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics of one method with bootstrap CIs (users resampled) and its paired R@1 lift over ``base``."""
    from gr2.rerank.metrics import Bootstrap, evaluate_rankings, paired_lift, per_sample_metrics

    scored = scored if isinstance(scored, Scored) else Scored(scored)
    frame = per_sample_metrics(samples, scored.rankings, scored.valid)
    groups = samples["user_id"].to_numpy() if "user_id" in samples else None
    boot = Bootstrap(len(frame), groups, seed=0)
    row: dict[str, Any] = {"stage": name, "model": model, "method": method, "samples": len(samples),
                           **evaluate_rankings(samples, scored.rankings, scored.valid)}
    for metric in CI_METRICS:
        row[f"{metric}_ci95"] = list(boot.interval(boot.means(frame[metric].to_numpy())))
    row["prompt_tokens"] = scored.prompt_tokens
    row["generated_tokens"] = scored.generated_tokens
    row["ms_per_request"] = 1000 * scored.seconds / max(len(samples), 1)
    if base is not None:
        row["R@1_lift_vs_incoming"] = paired_lift(frame["R@1"].to_numpy(), base["R@1"].to_numpy(), boot=boot)
    return row, frame


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def baseline_rankings(pred_dir: Path, name: str, split: str, samples: pd.DataFrame) -> list[list[int]] | None:
    """A baseline's rankings of ``samples`` from ``gr2 eval baselines`` (None when any sample is missing)."""
    path = pred_dir / f"{name}_{split}_legacy.parquet"
    if not path.exists():
        return None
    preds = pd.read_parquet(path).set_index("sample_id")["ranking"]
    if not samples["sample_id"].isin(preds.index).all():
        return None
    return [[int(i) for i in preds[s]] for s in samples["sample_id"]]


def _prompt_tokens(lm: Any, sid_map: Any, samples: pd.DataFrame, items: pd.DataFrame, style: str | None,
                   history: int) -> float:
    """Mean prompt length (tokens): the next-item prompt (``style`` None) or the re-ranking prompt."""
    from gr2.models.scoring import render_prompt
    from gr2.rerank.format import build_messages
    from gr2.train.tasks import next_item_prompt

    rows = samples.to_dict("records")
    if style is None:
        lengths = [len(render_prompt(lm.tokenizer, next_item_prompt(sid_map, list(r["history"])[-history:])))
                   for r in rows]
    else:
        lengths = [len(render_prompt(lm.tokenizer, build_messages(r, items, sid_map, style=style))) for r in rows]
    return float(np.mean(lengths)) if lengths else 0.0


def _likelihood_methods(stage: str, lm: Any, sid_map: Any, samples: pd.DataFrame, items: pd.DataFrame,
                        history: int) -> list[tuple[str, Callable[[], Scored]]]:
    from gr2.train.evaluate import next_item_rankings, rerank_likelihood_rankings

    def rerank() -> Scored:
        rankings, seconds = _timed(lambda: rerank_likelihood_rankings(lm, sid_map, samples, items))
        return Scored(rankings, None, _prompt_tokens(lm, sid_map, samples, items, "answer", history), 0.0, seconds)

    def next_item() -> Scored:
        rankings, seconds = _timed(lambda: next_item_rankings(lm, sid_map, samples, history))
        return Scored(rankings, None, _prompt_tokens(lm, sid_map, samples, items, None, history), 0.0, seconds)

    return [(NEXT_ITEM, next_item), (LIKELIHOOD, rerank)]


def _decoded(lm: Any, sid_map: Any, gen: pd.DataFrame, items: pd.DataFrame, style: str, ec: Any) -> Scored:
    from gr2.train.evaluate import generated_rankings

    (rankings, flags), seconds = _timed(lambda: generated_rankings(lm, sid_map, gen, items, style,
                                                                   ec.max_new_tokens, ec.batch_size))
    return Scored(rankings, [f["valid"] for f in flags], _prompt_tokens(lm, sid_map, gen, items, style, 0),
                  float(np.mean([f["generated_tokens"] for f in flags])) if flags else 0.0, seconds)


def run_stage_table(cfg: GR2Config, inputs: StageInputs | None = None, models: Mapping[str, Path] | None = None,
                    out_dir: str | Path | None = None, predictions: Path | None = None) -> StageTableArtifacts:
    """Score every available stage on ``train.eval.split`` and write the table.

    ``models`` maps stage name (keys of :data:`STAGE_DIRS`) to a checkpoint folder; it, ``inputs``, ``out_dir``
    and the baselines' ``predictions`` folder default to the run directory (``train/<stage>/model``, ``eval/``).
    """
    from gr2.models.factory import load_model
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
    first, base = stage_row("incoming", "legacy pre-ranker", "as given", samples, incoming)
    rows = [first]
    pred_dir = predictions if predictions is not None else paths.eval / "predictions"
    for name in BASELINES:
        rankings = baseline_rankings(pred_dir, name, ec.split, samples)
        if rankings is not None:
            rows.append(stage_row(name, "gr2 eval baselines", "baseline", samples, rankings, base=base)[0])
    models = models or {stage: paths.train / d / "model" for stage, d in STAGE_DIRS.items()}
    stages = [(name, Path(d)) for name, d in models.items() if (Path(d) / "config.json").exists()]
    if not stages:
        raise TrainInputError(f"{[str(d) for d in models.values()]}: no trained stage; run `gr2 train midtrain` "
                              "first")
    sid_map = inputs.load_sid_map(cfg.train.model.item_tokens)
    items = inputs.load_dataset().items
    history = cfg.train.midtrain.history_length
    gen_incoming = [[int(c) for c in cands] for cands in gen["candidates"]]
    gen_row, gen_base = stage_row("incoming (decoding subset)", "legacy pre-ranker", "as given", gen, gen_incoming)
    decoded_rows = []
    for stage, model_dir in stages:
        lm = load_model(model_dir, sid_map.all_tokens())
        for method, score in _likelihood_methods(stage, lm, sid_map, samples, items, history):
            rows.append(stage_row(stage, str(model_dir), method, samples, score(), base=base)[0])
        if stage in DECODE_STYLE and len(gen):
            style = cfg.train.rl.style if DECODE_STYLE[stage] == "rl" else DECODE_STYLE[stage]
            decoded = _decoded(lm, sid_map, gen, items, style, ec)
            decoded_rows.append(stage_row(stage, str(model_dir), f"decoded ({style})", gen, decoded,
                                          base=gen_base)[0])
    if decoded_rows:
        rows += [gen_row, *decoded_rows]
    _mark_serving(rows, stages)
    record = {"split": ec.split, "protocol": cfg.rerank.protocol, "n": len(samples), "rows": rows,
              "wall_time_s": round(time.time() - started, 1)}
    json_path = out / "train_stages.json"
    write_metrics(json_path, record, cfg, [inputs.samples / f"{ec.split}.parquet", inputs.sid_map])
    md = stage_table_markdown(rows, ec.split)
    md_path = out / "train_stages.md"
    md_path.write_text(md)
    stage_chart(rows, out / "train_stages.png")
    if out_dir is None:
        paths.train.mkdir(parents=True, exist_ok=True)
        (paths.train / "stages.md").write_text(md)
    return StageTableArtifacts(json=json_path, markdown=md_path, rows=rows)


def _mark_serving(rows: list[dict[str, Any]], stages: list[tuple[str, Path]]) -> None:
    """``serving: true`` on the one row the serving path reproduces: score mode of the internalized model (its
    manifest's prompt), else the re-ranking-prompt likelihood of the last stage trained."""
    from gr2.pipeline.gate import serving_method

    names = dict(stages)
    shipped = "internalize" if "internalize" in names else stages[-1][0]
    method = serving_method(names[shipped])
    for row in rows:
        row["serving"] = row["stage"] == shipped and row["method"] == method


def results_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The compact form of ``benchmarks/results/stages.json``: split, n and one entry per row."""
    out_rows = []
    for r in record["rows"]:
        lift = r.get("R@1_lift_vs_incoming")
        out_rows.append({
            "stage": r["stage"], "method": r["method"], "n": r["samples"],
            **{m: r[m] for m in CI_METRICS}, **{f"{m}_ci": r[f"{m}_ci95"] for m in CI_METRICS},
            "R@1_lift": 1 + lift["rel"] if lift else (1.0 if r["stage"] == "incoming" else None),
            "R@1_lift_ci": [1 + lift["rel_lo"], 1 + lift["rel_hi"]] if lift else None,
            "identity_rate": r["identity_rate"], "invalid_rate": r["invalid_rate"],
            "prompt_tokens": r.get("prompt_tokens"), "generated_tokens": r.get("generated_tokens"),
            "ms_per_request": r.get("ms_per_request"), "serving": bool(r.get("serving"))})
    return {"split": record["split"], "protocol": record.get("protocol"), "n": record["n"], "rows": out_rows}


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
    | s | m | 2 | 0.500 | n/a | n/a | - | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a |
    <BLANKLINE>
    """
    lines = [f"# Stage-by-stage re-ranking quality ({split})", "",
             "95% bootstrap intervals (users resampled); lift = R@1 ratio to the incoming order on the same "
             "samples (paired). **Bold**: the serving path.", "",
             "| stage | method | samples | R@1 [95% CI] | R@3 | R@5 | R@1 lift [95% CI] | " + " | ".join(COLUMNS) + " |",
             "| --- | --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |"]
    for r in rows:
        ci = r.get("R@1_ci95")
        r1 = _cell(r.get("R@1")) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        lift = r.get("R@1_lift_vs_incoming")
        lift_text = (f"{1 + lift['rel']:.3f}x [{1 + lift['rel_lo']:.3f}, {1 + lift['rel_hi']:.3f}]"
                     if lift and np.isfinite(lift["rel"]) else "-")
        stage = f"**{r['stage']}**" if r.get("serving") else r["stage"]
        lines.append(f"| {stage} | {r['method']} | {r['samples']} | {r1} | {_cell(r.get('R@3'))} | "
                     f"{_cell(r.get('R@5'))} | {lift_text} | " + " | ".join(_cell(r.get(c)) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def stage_chart(rows: list[dict[str, Any]], path: Path) -> Path:
    """R@1 per row with its 95% interval, as a PNG."""
    from gr2.pipeline.report import r1_chart_png

    path.write_bytes(r1_chart_png(rows))
    return path
