"""``gr2 eval baselines``: classical re-rankers on the same candidates as the LLM.

Methods: the incoming (legacy) order, popularity over the learnable interactions, a seeded random
order, and a SASRec-style transformer trained on the learnable interactions (the protocol's train split). Each is
scored on the validation and test samples of both protocols, once as presented and once with the
candidates shuffled (position bias = R@1 as presented - R@1 shuffled).

Writes ``RunPaths.eval / baselines.{json,md,png}``, ``sasrec.pt`` and one predictions file per
(method, split, protocol) under ``RunPaths.eval / "predictions"`` that ``gr2 eval score`` accepts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from gr2.config import GR2Config
from gr2.data.schema import Dataset
from gr2.paths import RunPaths
from gr2.provenance import write_metrics
from gr2.rerank.evaluate import shuffled_view, summarize
from gr2.rerank.report import write_report
from gr2.rerank.samples import PROTOCOLS, SamplesError, load_samples
from gr2.rerank.sasrec import SASRecScorer, train_sasrec

EVAL_SPLITS = ("validation", "test")
SASREC_EARLY_STOP_SAMPLES = 2000  # validation samples scored after each epoch (bounds epoch time)


@dataclass(frozen=True)
class BaselineArtifacts:
    """Files written by :func:`run_baselines`."""

    json: Path
    markdown: Path
    png: Path
    sasrec: Path
    predictions: Path


def incoming_rankings(samples: pd.DataFrame) -> list[list[int]]:
    """The candidates as presented.

    >>> incoming_rankings(pd.DataFrame({"candidates": [[3, 1, 2]]}))
    [[3, 1, 2]]
    """
    return [[int(c) for c in cands] for cands in samples["candidates"]]


def popularity_rankings(samples: pd.DataFrame, popularity: Mapping[int, float]) -> list[list[int]]:
    """Most popular first; ties keep the presented order.

    >>> popularity_rankings(pd.DataFrame({"candidates": [[3, 1, 2]]}), {1: 5.0, 2: 5.0, 3: 1.0})
    [[1, 2, 3]]
    """
    out = []
    for cands in samples["candidates"]:
        cands = [int(c) for c in cands]
        scores = np.array([popularity.get(c, 0.0) for c in cands])
        out.append([cands[i] for i in np.lexsort((np.arange(len(cands)), -scores))])
    return out


def random_rankings(samples: pd.DataFrame, seed: int) -> list[list[int]]:
    """A seeded random permutation per sample (the chance level)."""
    rng = np.random.default_rng(seed)
    return [[int(c) for c in np.asarray(cands)[rng.permutation(len(cands))]] for cands in samples["candidates"]]


def _summary_metrics(run: RunPaths) -> dict:
    path = run.samples / "samples_summary.json"
    if not path.exists():
        raise SamplesError(f"{path}: not found; run `gr2 samples build` first")
    return json.loads(path.read_text())["metrics"]


def _train_sasrec(cfg: GR2Config, run: RunPaths, validation: pd.DataFrame) -> SASRecScorer:
    from gr2.rerank.samples import load_protocol

    data = Dataset.load(run.raw)
    protocol = load_protocol(cfg)
    item_ids = np.union1d(data.items["item_id"].to_numpy(np.int64), protocol.ordered["item_id"].to_numpy(np.int64))
    early = validation
    if len(early) > SASREC_EARLY_STOP_SAMPLES:
        early = early.sample(SASREC_EARLY_STOP_SAMPLES, random_state=cfg.seed)
    return train_sasrec(protocol.learnable(), item_ids, cfg.rerank, early, cfg.seed)


def run_baselines(cfg: GR2Config) -> BaselineArtifacts:
    """Train SASRec, score every baseline on validation/test of both protocols, write table, chart, JSON."""
    rc = cfg.rerank
    torch.set_num_threads(rc.num_threads)
    run = RunPaths.of(cfg.run_dir)
    summary = _summary_metrics(run)
    stats = pd.read_parquet(run.samples / "item_stats.parquet")
    popularity = dict(zip(stats["item_id"].astype(int), stats["popularity"].astype(float), strict=True))
    samples = {(s, p): load_samples(cfg.run_dir, s, p) for s in EVAL_SPLITS for p in PROTOCOLS}
    if samples[("validation", "legacy")].empty or samples[("test", "legacy")].empty:
        raise SamplesError("no validation or test samples: the legacy ranker covered no target; see samples_summary")

    scorer = _train_sasrec(cfg, run, samples[("validation", "legacy")])
    out = run.eval
    pred_dir = out / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    sasrec_path = out / "sasrec.pt"
    torch.save({"state_dict": scorer.model.state_dict(), "item_ids": scorer.item_ids.tolist(),
                "config": rc.model_dump(), "history": scorer.history}, sasrec_path)

    methods = {
        "incoming": incoming_rankings,
        "popularity": lambda s: popularity_rankings(s, popularity),
        "random": lambda s: random_rankings(s, cfg.seed),
        "sasrec": lambda s: scorer.rank(list(s["history"]), list(s["candidates"])),
    }
    results: dict = {}
    for (split, protocol), frame in samples.items():
        if frame.empty:
            continue
        shuffled = shuffled_view(frame, cfg.seed + 1)
        block = results.setdefault(split, {}).setdefault(protocol, {"n": len(frame),
                                                                    "users": int(frame["user_id"].nunique()),
                                                                    "methods": {}})
        for name, fn in methods.items():
            rankings = fn(frame)
            metrics, lifts, _ = summarize(frame, rankings, n_boot=rc.bootstrap_samples, seed=cfg.seed,
                                          by_user=rc.bootstrap_by_user)
            shuffled_metrics, _, _ = summarize(shuffled, fn(shuffled), n_boot=rc.bootstrap_samples, seed=cfg.seed,
                                               by_user=rc.bootstrap_by_user)
            block["methods"][name] = {"metrics": metrics, "lifts": lifts,
                                      "shuffled": {"R@1": shuffled_metrics["R@1"], "N@3": shuffled_metrics["N@3"]},
                                      "position_bias_r1": metrics["R@1"]["mean"] - shuffled_metrics["R@1"]["mean"]}
            pd.DataFrame({"sample_id": frame["sample_id"], "ranking": rankings}).to_parquet(
                pred_dir / f"{name}_{split}_{protocol}.parquet", index=False)

    record = {"results": results, "samples": summary["splits"], "protocol": summary["protocol"],
              "legacy_ranker": summary.get("legacy_ranker", {}), "sasrec_training": scorer.history,
              "bootstrap": {"resamples": rc.bootstrap_samples, "by_user": rc.bootstrap_by_user, "level": 0.95}}
    json_path = out / "baselines.json"
    write_metrics(json_path, record, cfg, sorted(run.samples.glob("*.parquet")))
    md_path, png_path = write_report(record, out / "baselines.md", out / "baselines.png")
    return BaselineArtifacts(json=json_path, markdown=md_path, png=png_path, sasrec=sasrec_path,
                             predictions=pred_dir)
