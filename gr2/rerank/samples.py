"""``gr2 samples build``: re-ranking samples from the legacy pre-ranker, plus a random-negatives protocol.

Reads the protocol's split (``gr2 data split``). For every train/validation/test position (see
``gr2.rerank.protocol``) with at least ``min_history`` earlier items, the legacy pre-ranker proposes K candidates; a sample is kept when
the target is among them (as GR2 does) and the rest are counted as dropped. The random protocol
offers the target with K-1 items the user has not seen, sampled uniformly and shuffled.

Written to ``RunPaths.samples``: ``{split}.parquet`` and ``{split}_random.parquet`` (columns in
``SAMPLE_COLUMNS``), ``samples_summary.json``, ``item_stats.parquet`` (pre-validation popularity) and
``legacy_ranker.joblib``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from gr2.config import GR2Config
from gr2.data.schema import Dataset
from gr2.data.split import load_split_interactions
from gr2.paths import RunPaths
from gr2.provenance import write_metrics
from gr2.rerank.config import RerankConfig
from gr2.rerank.legacy import Catalog, ItemStats, LegacyRanker, Position
from gr2.rerank.protocol import SPLITS, ProtocolSplit, protocol_from_config

PROTOCOLS = ("legacy", "random")
SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("user_id", pa.int64()),
    ("timestamp", pa.int64()),
    ("history", pa.list_(pa.int64())),
    ("candidates", pa.list_(pa.int64())),
    ("target", pa.int64()),
    ("target_position", pa.int64()),
    ("protocol", pa.string()),
    ("positives", pa.list_(pa.int64())),
])
SAMPLE_COLUMNS = tuple(SCHEMA.names)
LIST_COLUMNS = ("history", "candidates", "positives")


class SamplesError(ValueError):
    """Missing or malformed sample files."""


@dataclass(frozen=True)
class SampleArtifacts:
    """Files written by :func:`build_samples`."""

    splits: dict[str, Path]
    random_splits: dict[str, Path]
    summary: Path
    item_stats: Path
    legacy_ranker: Path
    warnings: tuple[str, ...] = ()


def sample_path(run_dir: str | Path, split: str, protocol: str = "legacy") -> Path:
    """Where the samples of ``split`` under ``protocol`` live."""
    if split not in SPLITS:
        raise SamplesError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    if protocol not in PROTOCOLS:
        raise SamplesError(f"unknown protocol {protocol!r}; choose one of {list(PROTOCOLS)}")
    suffix = "" if protocol == "legacy" else "_random"
    return RunPaths.of(run_dir).samples / f"{split}{suffix}.parquet"


def load_samples(run_dir: str | Path, split: str, protocol: str = "legacy") -> pd.DataFrame:
    """Read one sample file of a run; list columns come back as Python lists of ints."""
    return read_samples(sample_path(run_dir, split, protocol))


def read_samples(path: Path) -> pd.DataFrame:
    """Read a sample file; list columns come back as Python lists of ints."""
    if not path.exists():
        raise SamplesError(f"{path}: not found; run `gr2 samples build` first")
    frame = pd.read_parquet(path)
    missing = [c for c in SAMPLE_COLUMNS if c not in frame]
    if missing:
        raise SamplesError(f"{path}: missing column(s) {missing}")
    for column in LIST_COLUMNS:
        frame[column] = [list(map(int, v)) for v in frame[column]]
    return frame


def _write(rows: list[dict], path: Path) -> None:
    columns = {name: [r[name] for r in rows] for name in SAMPLE_COLUMNS}
    pq.write_table(pa.Table.from_pydict(columns, schema=SCHEMA), path)


def _positives(seq: np.ndarray, pos: int, candidates: list[int], window: int, visible: int) -> list[int]:
    """The target plus candidates taken within ``window`` later items, never past ``visible`` (the
    end of what the sample's split may see: train samples never look into validation or test)."""
    future = set(seq[pos + 1: min(pos + 1 + window, visible)].tolist())
    return [int(seq[pos])] + [c for c in candidates if c in future and c != seq[pos]]


def _sample_row(split: str, protocol: str, user: int, pos: int, ts: int, seq: np.ndarray,
                candidates: list[int], cfg: RerankConfig, visible: int) -> dict:
    target = int(seq[pos])
    return {
        "sample_id": f"{split}-{protocol}-u{user}-p{pos}",
        "user_id": user,
        "timestamp": ts,
        "history": [int(i) for i in seq[max(0, pos - cfg.history_length):pos]],
        "candidates": candidates,
        "target": target,
        "target_position": candidates.index(target),
        "protocol": protocol,
        "positives": _positives(seq, pos, candidates, cfg.positive_window, visible),
    }


def _random_candidates(rng: np.random.Generator, catalog_ids: np.ndarray, seen: set[int], target: int,
                       k: int) -> list[int] | None:
    pool_size = len(catalog_ids) - len(seen | {target})
    if pool_size < k - 1:
        return None
    picked: list[int] = []
    while len(picked) < k - 1:
        for item in rng.choice(catalog_ids, size=2 * k, replace=True).tolist():
            if item not in seen and item != target and item not in picked:
                picked.append(item)
                if len(picked) == k - 1:
                    break
    candidates = [target, *picked]
    rng.shuffle(candidates)
    return [int(c) for c in candidates]


def _select_positions(protocol: ProtocolSplit, name: str, cfg: RerankConfig,
                      rng: np.random.Generator) -> tuple[pd.DataFrame, int]:
    in_split = protocol.positions(name)
    eligible = in_split[in_split["position"] >= cfg.min_history]
    short = len(in_split) - len(eligible)
    if cfg.max_samples_per_split is not None and len(eligible) > cfg.max_samples_per_split:
        keep = np.sort(rng.choice(len(eligible), size=cfg.max_samples_per_split, replace=False))
        eligible = eligible.iloc[keep]
    return eligible, short


def _positions(frame: pd.DataFrame, seq_idx: dict[int, np.ndarray], catalog: Catalog) -> list[Position]:
    out = []
    for user, pos, ts in zip(frame["user_id"], frame["position"], frame["timestamp"], strict=True):
        idx = seq_idx[int(user)]
        out.append(Position(int(user), int(pos), int(ts), idx[:pos], int(idx[pos])))
    return out


def load_protocol(cfg: GR2Config, split_dir: str | Path | None = None) -> ProtocolSplit:
    """The protocol split, recomputed from ``split_dir`` (default: the run's ``data/split``); its train
    part is all that may be learned."""
    split_dir = Path(split_dir) if split_dir is not None else RunPaths.of(cfg.run_dir).split
    try:
        interactions = load_split_interactions(split_dir)
    except FileNotFoundError as err:
        raise SamplesError(str(err)) from err
    protocol = protocol_from_config(interactions, cfg.rerank)
    learnable = int(protocol.learnable_mask.sum())
    written = len(pd.read_parquet(split_dir / "train.parquet", columns=["user_id"]))
    if learnable != written:
        raise SamplesError(f"{split_dir} was written with other protocol settings ({written} learnable "
                           f"interactions, {learnable} now); rerun `gr2 data split`")
    return protocol


def sample_warnings(splits: dict, cfg: RerankConfig) -> list[str]:
    """Warnings with numbers: low coverage and too few test samples."""
    out = []
    for name, s in splits.items():
        if s["positions"] and s["coverage"] < cfg.warn_min_coverage:
            out.append(f"{name}: coverage {s['coverage']:.1%} (target in the legacy top {cfg.num_candidates}) is "
                       f"under {cfg.warn_min_coverage:.0%}; most positions are dropped")
    if splits["test"]["samples"] < cfg.warn_min_test_samples:
        out.append(f"test: only {splits['test']['samples']} samples (< {cfg.warn_min_test_samples}); "
                   f"confidence intervals will be wide")
    return out


def build_samples(cfg: GR2Config) -> SampleArtifacts:
    """Fit the legacy pre-ranker, build samples for every split and protocol, write files and summary."""
    rc = cfg.rerank
    paths = RunPaths.of(cfg.run_dir)
    data = Dataset.load(paths.raw)
    protocol = load_protocol(cfg)
    ordered = protocol.ordered
    catalog = Catalog.build(data.items, ordered)
    seqs = {int(u): g.to_numpy(np.int64) for u, g in ordered.groupby("user_id", sort=True)["item_id"]}
    seq_idx = {u: catalog.index(s) for u, s in seqs.items()}
    rng = np.random.default_rng(cfg.seed)

    selected = {name: _select_positions(protocol, name, rc, rng) for name in SPLITS}
    fit_stats = ItemStats.build(catalog, protocol.fit_context(), protocol.stats_time("fit"), rc.recent_window_days)
    fit_frame = selected["train"][0]
    if len(fit_frame) > rc.fit_max_positions:
        fit_frame = fit_frame.iloc[np.sort(rng.choice(len(fit_frame), rc.fit_max_positions, replace=False))]
    ranker = LegacyRanker.fit(rc, catalog, fit_stats, _positions(fit_frame, seq_idx, catalog), cfg.seed)
    eval_stats = ItemStats.build(catalog, protocol.learnable(), protocol.stats_time("eval"), rc.recent_window_days)

    out = paths.samples
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"protocol": protocol.describe(), "splits": {}, "legacy_ranker": ranker.fit_report}
    written: dict[str, Path] = {}
    written_random: dict[str, Path] = {}
    for name in SPLITS:
        frame, short = selected[name]
        visible = protocol.visible_length(name)
        stats = fit_stats if name == "train" else eval_stats
        rows, retrieved = [], 0
        for pos, top, was_retrieved in ranker.rank(stats, _positions(frame, seq_idx, catalog), desc=f"{name} ranking"):
            retrieved += was_retrieved
            candidates = [int(i) for i in top]
            if seqs[pos.user_id][pos.position] in candidates:
                rows.append(_sample_row(name, "legacy", pos.user_id, pos.position, pos.timestamp,
                                        seqs[pos.user_id], candidates, rc, visible[pos.user_id]))
        written[name] = out / f"{name}.parquet"
        _write(rows, written[name])

        random_rows = []
        for user, p, ts in tqdm(zip(frame["user_id"], frame["position"], frame["timestamp"], strict=True),
                                total=len(frame), desc=f"{name} random", leave=False):
            seq = seqs[int(user)]
            seen = set(seq[:p].tolist()) if rc.exclude_seen else set()
            cands = _random_candidates(rng, catalog.ids, seen, int(seq[p]), rc.num_candidates)
            if cands is not None:
                random_rows.append(_sample_row(name, "random", int(user), int(p), int(ts), seq, cands, rc,
                                               visible[int(user)]))
        written_random[name] = out / f"{name}_random.parquet"
        _write(random_rows, written_random[name])

        n = len(frame)
        summary["splits"][name] = {
            "interactions_in_period": int((protocol.period == name).sum()),
            "dropped_short_history": short,
            "positions": n,
            "users": int(frame["user_id"].nunique()),
            "samples": len(rows),
            "dropped_target_not_in_top_k": n - len(rows),
            "coverage": len(rows) / n if n else 0.0,
            "retrieval_recall": retrieved / n if n else 0.0,
            "sample_users": len({r["user_id"] for r in rows}),
            "random_samples": len(random_rows),
            "mean_target_position": float(np.mean([r["target_position"] for r in rows])) if rows else None,
        }
    summary["warnings"] = [*protocol.warnings, *sample_warnings(summary["splits"], rc)]

    item_stats = pd.DataFrame({"item_id": catalog.ids, "popularity": eval_stats.popularity,
                               "recent_popularity": eval_stats.recent_popularity})
    item_stats_path = out / "item_stats.parquet"
    item_stats.to_parquet(item_stats_path, index=False)
    ranker_path = out / "legacy_ranker.joblib"
    joblib.dump({"model": ranker.model, "features": ranker.fit_report["features"], "protocol": protocol.describe(),
                 "config": rc.model_dump()}, ranker_path)
    summary_path = out / "samples_summary.json"
    write_metrics(summary_path, summary, cfg, [paths.raw, paths.split])
    return SampleArtifacts(splits=written, random_splits=written_random, summary=summary_path,
                           item_stats=item_stats_path, legacy_ranker=ranker_path, warnings=tuple(summary["warnings"]))
