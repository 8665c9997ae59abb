"""``gr2 data split``: chronological leave-one-out per user, optionally after k-core filtering.

For each user ordered by (timestamp, item_id): the last interaction is the test target, the second
to last the validation target, the rest is training history. Users with fewer than 3 interactions
stay entirely in train. The result is deterministic for a given input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gr2.data.schema import Dataset

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitArtifacts:
    """Paths of the three splits and the summary."""

    train: Path
    validation: Path
    test: Path
    summary: Path


def kcore(interactions: pd.DataFrame, k: int) -> pd.DataFrame:
    """Drop users and items with fewer than ``k`` interactions until none is left (k <= 1: no-op)."""
    frame = interactions
    while k > 1:
        users = frame["user_id"].map(frame["user_id"].value_counts())
        items = frame["item_id"].map(frame["item_id"].value_counts())
        keep = (users >= k) & (items >= k)
        if keep.all():
            break
        frame = frame[keep]
    return frame.reset_index(drop=True)


def leave_one_out(interactions: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Chronological leave-one-out: last -> test, second to last -> validation, rest -> train."""
    ordered = interactions.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
    from_end = ordered.groupby("user_id").cumcount(ascending=False)
    size = ordered["user_id"].map(ordered["user_id"].value_counts())
    splittable = size >= 3
    test = ordered[splittable & (from_end == 0)]
    validation = ordered[splittable & (from_end == 1)]
    train = ordered[~splittable | (from_end >= 2)]
    return {name: part.reset_index(drop=True) for name, part in
            zip(SPLITS, (train, validation, test), strict=True)}


def split_dataset(data_dir: str | Path, out_dir: str | Path, k: int = 0) -> SplitArtifacts:
    """Split the canonical dataset in ``data_dir`` and write Parquet files plus ``split_summary.json``."""
    data = Dataset.load(data_dir)
    interactions = kcore(data.interactions, k)
    parts = leave_one_out(interactions)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, object] = {
        "kcore": k,
        "users": int(interactions["user_id"].nunique()),
        "items": int(data.items["item_id"].nunique()),
        "items_with_interactions": int(interactions["item_id"].nunique()),
        "interactions": len(interactions),
        "dropped_by_kcore": len(data.interactions) - len(interactions),
    }
    for name, part in parts.items():
        part.to_parquet(out / f"{name}.parquet", index=False)
        summary[name] = {"users": int(part["user_id"].nunique()), "items": int(part["item_id"].nunique()),
                         "interactions": len(part)}
    (out / "split_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return SplitArtifacts(*(out / f"{n}.parquet" for n in SPLITS), summary=out / "split_summary.json")
