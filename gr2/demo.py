"""The main job, in-process: every stage that exists, in the order data flows, on one run directory.

Each step reads the previous steps' artefacts from the run directory, so a failed run can be
resumed with ``--from-step``. The Kubeflow pipeline chains the same stage functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from gr2.config import GR2Config
from gr2.paths import RunPaths


@dataclass(frozen=True)
class Step:
    """One stage of the main job."""

    name: str
    run: Callable[[GR2Config], str]


def _fetch(cfg: GR2Config) -> str:
    from gr2.data.fetch import fetch

    r = fetch(cfg.data.dataset, RunPaths.of(cfg.run_dir).raw, cfg.data.source_path, cfg.data.max_users)
    return f"{r.n_interactions} interactions, {r.n_items} items from {r.source} ({r.location})"


def _validate(cfg: GR2Config) -> str:
    from gr2.data.validate import validate_dataset

    paths = RunPaths.of(cfg.run_dir)
    report = validate_dataset(paths.raw, cfg.data, paths.validation)
    if not report.success:
        names = "; ".join(o.message for o in report.failures)
        raise RuntimeError(f"data validation failed ({names}); see {report.markdown_path}")
    return f"{len(report.outcomes)} expectations passed"


def _split(cfg: GR2Config) -> str:
    import json

    from gr2.data.split import split_dataset

    paths = RunPaths.of(cfg.run_dir)
    summary = json.loads(split_dataset(paths.raw, paths.split, cfg.rerank, cfg.data.kcore).summary.read_text())
    warnings = "".join(f"; warning: {w}" for w in summary["warnings"])
    return f"{summary['protocol']['kind']} protocol: {summary['users']} users, {summary['items']} items{warnings}"


def _sid(cfg: GR2Config) -> str:
    from gr2.sid.train import train_sid

    m = train_sid(cfg).metrics
    return (f"{m['n_items']} items, uniqueness {m['uniqueness_before_resolution']:.4f} before / "
            f"{m['uniqueness_final']:.4f} after resolution")


def _features(cfg: GR2Config) -> str:
    from gr2.features.store import apply_and_materialize

    return f"materialized rows {apply_and_materialize(cfg)}"


def _samples(cfg: GR2Config) -> str:
    import pandas as pd

    from gr2.rerank.samples import build_samples

    art = build_samples(cfg)
    counts = {split: len(pd.read_parquet(path)) for split, path in art.splits.items()}
    return f"samples per split {counts}"


def _baselines(cfg: GR2Config) -> str:
    from gr2.rerank.baselines import run_baselines

    return f"baseline table {run_baselines(cfg).markdown}"


def _midtrain(cfg: GR2Config) -> str:
    from gr2.train.midtrain import run_midtrain

    art = run_midtrain(cfg)
    return f"checkpoint {art.model}; summary {art.summary}"


def _traces(cfg: GR2Config) -> str:
    from gr2.train.traces import run_traces

    return f"traces {run_traces(cfg).summary}"


def _reasoning(cfg: GR2Config) -> str:
    from gr2.train.reasoning import run_reasoning

    art = run_reasoning(cfg)
    return f"checkpoint {art.model}; summary {art.summary}"


def _stage_table(cfg: GR2Config) -> str:
    from gr2.train.stages import run_stage_table

    return f"stage table {run_stage_table(cfg).markdown}"


STEPS: list[Step] = [
    Step("fetch", _fetch),
    Step("validate", _validate),
    Step("split", _split),
    Step("sid", _sid),
    Step("features", _features),
    Step("samples", _samples),
    Step("baselines", _baselines),
    Step("midtrain", _midtrain),
    Step("traces", _traces),
    Step("reasoning", _reasoning),
    Step("stage_table", _stage_table),
]


def run_demo(cfg: GR2Config, from_step: str | None = None, echo: Callable[[str], None] = print) -> dict[str, float]:
    """Run the steps (from ``from_step`` on); returns the wall time of each, in seconds."""
    names = [s.name for s in STEPS]
    if from_step is not None and from_step not in names:
        raise ValueError(f"unknown step {from_step!r}; steps are {names}")
    start = names.index(from_step) if from_step else 0
    timings: dict[str, float] = {}
    for i, step in enumerate(STEPS[start:], start=start + 1):
        echo(f"[{i}/{len(STEPS)}] {step.name} ...")
        t0 = time.perf_counter()
        detail = step.run(cfg)
        timings[step.name] = round(time.perf_counter() - t0, 2)
        echo(f"[{i}/{len(STEPS)}] {step.name}: {detail} ({timings[step.name]:.1f} s)")
    return timings
