"""``gr2 sid ablate``: each tokenizer trick flipped on/off against the configured tokenizer.

For every variant (the config itself, one row per flipped trick, and a plain RQ-VAE with every trick
off) it trains on the same cached embeddings, over ``sid.ablation_seeds`` seeds, and records the
uniqueness before collision resolution and a downstream proxy: how often a user's next held-out item
shares the first-level code of the item before it (with the chance rate and the lift over it).
Writes ``<run>/sid/ablation/ablation.md`` and ``ablation.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gr2.config import GR2Config
from gr2.paths import RunPaths
from gr2.provenance import write_metrics
from gr2.sid.config import TRICKS, SIDConfig
from gr2.sid.train import (
    co_engagement_pairs,
    embed_catalog,
    fit_and_assign,
    load_catalog,
    load_interactions,
    next_item_pairs,
)

ABLATION_DIR = "ablation"


@dataclass
class Variant:
    name: str
    changes: dict[str, bool]


def variants(cfg: SIDConfig, tricks: list[str] | None = None) -> list[Variant]:
    """The config, each trick flipped, and every trick off ("plain RQ-VAE")."""
    tricks = list(tricks or cfg.ablation_tricks)
    rows = [Variant("config", {})]
    for trick in tricks:
        state = bool(getattr(cfg, trick))
        rows.append(Variant(f"{trick} {'off' if state else 'on'}", {trick: not state}))
    rows.append(Variant("plain RQ-VAE (all off)", {t: False for t in TRICKS}))
    return rows


def _mean(values: list[float]) -> float:
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else float("nan")


def run_ablation(cfg: GR2Config, tricks: list[str] | None = None, seeds: int | None = None) -> dict[str, Any]:
    """Train every variant and write the Markdown + JSON table; returns the JSON record."""
    start = time.perf_counter()
    paths = RunPaths.of(cfg.run_dir)
    items = load_catalog(paths)
    embeddings = embed_catalog(cfg, items)
    train, held_out = load_interactions(paths)
    pairs = co_engagement_pairs(train, embeddings.item_ids)
    proxy_pairs = next_item_pairs(train, held_out)
    n_seeds = seeds or cfg.sid.ablation_seeds
    rows: list[dict[str, Any]] = []
    for variant in variants(cfg.sid, tricks):
        sid_cfg = cfg.sid.model_copy(update=variant.changes)
        per_seed = []
        t0 = time.perf_counter()
        for k in range(n_seeds):
            metrics = fit_and_assign(embeddings, sid_cfg, cfg.seed + k, pairs, proxy_pairs).metrics
            proxy = metrics.get("next_item_same_first_level", {})
            per_seed.append({
                "seed": cfg.seed + k,
                "uniqueness_before_resolution": metrics["uniqueness_before_resolution"],
                "uniqueness_final": metrics["uniqueness_final"],
                "same_first_level": proxy.get("same_first_level", float("nan")),
                "chance": proxy.get("chance", float("nan")),
                "lift": proxy.get("lift", float("nan")),
                "reconstruction_mse": metrics["reconstruction_mse"],
                "perplexity": metrics["perplexity"],
            })
        row = {
            "variant": variant.name, "changes": variant.changes,
            "tricks": {t: bool(getattr(sid_cfg, t)) for t in TRICKS},
            "seeds": n_seeds, "wall_time_s": (time.perf_counter() - t0) / n_seeds,
            **{key: _mean([s[key] for s in per_seed]) for key in (
                "uniqueness_before_resolution", "uniqueness_final", "same_first_level", "chance", "lift",
                "reconstruction_mse")},
            "uniqueness_before_min": min(s["uniqueness_before_resolution"] for s in per_seed),
            "uniqueness_before_max": max(s["uniqueness_before_resolution"] for s in per_seed),
            "per_seed": per_seed,
        }
        rows.append(row)
    base = rows[0]["uniqueness_before_resolution"]
    for row in rows:
        row["delta_uniqueness_points"] = 100 * (row["uniqueness_before_resolution"] - base)
    record_metrics = {
        "n_items": len(embeddings.item_ids),
        "codebook_size": cfg.sid.resolve_codebook_size(len(embeddings.item_ids)),
        "levels": cfg.sid.levels, "epochs": cfg.sid.epochs, "seeds": n_seeds,
        "proxy_pairs": len(proxy_pairs), "co_engagement_pairs": len(pairs),
        "rows": rows, "wall_time_s": time.perf_counter() - start,
    }
    out = paths.sid / ABLATION_DIR
    write_metrics(out / "ablation.json", record_metrics, config=cfg.sid,
                  inputs=[p for p in (paths.raw / "items.parquet", paths.split / "train.parquet") if p.exists()])
    (out / "ablation.md").write_text(render_table(record_metrics))
    return record_metrics


def render_table(record: dict[str, Any]) -> str:
    """The ablation as a Markdown table (uniqueness in %, deltas in points)."""
    lines = [
        "# SID tokenizer ablation", "",
        f"{record['n_items']} items, {record['levels']} levels x {record['codebook_size']} codes, "
        f"{record['epochs']} epochs, mean of {record['seeds']} seed(s). Proxy: share of {record['proxy_pairs']} "
        "(previous item -> held-out next item) pairs whose first-level codes agree; chance = same rate for "
        "independent codes; lift = proxy / chance.", "",
        "| variant | uniqueness before resolution | Δ vs config (points) | min-max over seeds | final | "
        "next item same 1st code | chance | lift | recon MSE | train+assign s/seed |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in record["rows"]:
        lines.append(
            f"| {row['variant']} | {100 * row['uniqueness_before_resolution']:.2f}% | "
            f"{row['delta_uniqueness_points']:+.2f} | {100 * row['uniqueness_before_min']:.2f}-"
            f"{100 * row['uniqueness_before_max']:.2f}% | {100 * row['uniqueness_final']:.1f}% | "
            f"{row['same_first_level']:.4f} | {row['chance']:.4f} | {row['lift']:.2f} | "
            f"{row['reconstruction_mse']:.2e} | {row['wall_time_s']:.1f} |")
    lines += ["", f"Total wall time: {record['wall_time_s']:.0f} s.", ""]
    return "\n".join(lines)


def ablation_paths(cfg: GR2Config) -> tuple[Path, Path]:
    out = RunPaths.of(cfg.run_dir).sid / ABLATION_DIR
    return out / "ablation.md", out / "ablation.json"
