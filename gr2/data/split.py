"""``gr2 data split``: the evaluation protocol's split, the only notion of split in the project.

The protocol (``rerank.protocol``: ``temporal`` or ``leave_one_out``, see ``gr2.rerank.protocol``)
gives every interaction a period. ``train.parquet`` holds the *learnable* interactions (everything
any stage may learn from: SIDs, Feast features, the legacy ranker, SASRec, the LM), ``validation`` and
``test`` the evaluated periods. ``split_summary.json`` has the counts, the cuts and the protocol's
warnings. The result is deterministic for a given input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gr2.data.schema import Dataset
from gr2.rerank.config import RerankConfig
from gr2.rerank.protocol import SPLITS, ProtocolSplit, protocol_from_config


@dataclass(frozen=True)
class SplitArtifacts:
    """Paths of the three splits and the summary."""

    train: Path
    validation: Path
    test: Path
    summary: Path
    warnings: tuple[str, ...] = ()


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


def split_parts(protocol: ProtocolSplit) -> dict[str, pd.DataFrame]:
    """train (learnable), validation and test interactions, in protocol order, original columns."""
    columns = [c for c in protocol.ordered.columns if c not in ("position", "period")]
    learnable = protocol.learnable_mask
    parts = {"train": protocol.ordered[learnable],
             "validation": protocol.positions("validation"), "test": protocol.positions("test")}
    return {name: part[columns].reset_index(drop=True) for name, part in parts.items()}


def load_split_interactions(split_dir: str | Path) -> pd.DataFrame:
    """All interactions of a split directory (train + validation + test), as the protocol saw them."""
    root = Path(split_dir)
    missing = [n for n in SPLITS if not (root / f"{n}.parquet").exists()]
    if missing:
        raise FileNotFoundError(f"{root}: missing {[f'{n}.parquet' for n in missing]}; run `gr2 data split` first")
    return pd.concat([pd.read_parquet(root / f"{n}.parquet") for n in SPLITS], ignore_index=True)


def split_dataset(data_dir: str | Path, out_dir: str | Path, rerank: RerankConfig, k: int = 0) -> SplitArtifacts:
    """Split the canonical dataset in ``data_dir`` by the protocol; write Parquet files and the summary."""
    data = Dataset.load(data_dir)
    interactions = kcore(data.interactions, k)
    protocol = protocol_from_config(interactions, rerank)
    parts = split_parts(protocol)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, object] = {
        "protocol": protocol.describe(),
        "kcore": k,
        "users": int(interactions["user_id"].nunique()),
        "items": int(data.items["item_id"].nunique()),
        "items_with_interactions": int(interactions["item_id"].nunique()),
        "interactions": len(interactions),
        "dropped_by_kcore": len(data.interactions) - len(interactions),
        "warnings": list(protocol.warnings),
    }
    for name, part in parts.items():
        part.to_parquet(out / f"{name}.parquet", index=False)
        summary[name] = {"users": int(part["user_id"].nunique()), "items": int(part["item_id"].nunique()),
                         "interactions": len(part)}
    (out / "split_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return SplitArtifacts(*(out / f"{n}.parquet" for n in SPLITS), summary=out / "split_summary.json",
                          warnings=tuple(protocol.warnings))
