"""What the training stages read from a run: the SID map, the catalog, and time-safe user sequences."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gr2.config import GR2Config
from gr2.data.schema import Dataset
from gr2.paths import RunPaths
from gr2.rerank.protocol import ProtocolSplit


class TrainInputError(ValueError):
    """A file a training stage needs is missing or unusable; the message says which command makes it."""


@dataclass(frozen=True)
class StageInputs:
    """The artefacts the training and evaluation stages read, as explicit paths.

    ``StageInputs.of_run(run_dir)`` is the run-directory layout (what the ``gr2 train`` commands use); the
    pipeline passes the paths of its input artefacts instead.
    """

    dataset: Path  # canonical dataset folder (interactions, items, users)
    sid_map: Path  # sid_map.parquet
    samples: Path  # folder with the re-ranking samples, {split}.parquet
    split: Path | None = None  # the protocol's split (train/validation/test.parquet); default: dataset/../split

    @classmethod
    def of_run(cls, run_dir: str | Path) -> StageInputs:
        paths = RunPaths.of(run_dir)
        return cls(dataset=paths.raw, sid_map=paths.sid / "sid_map.parquet", samples=paths.samples,
                   split=paths.split)

    def load_protocol(self, cfg: GR2Config) -> ProtocolSplit:
        """The evaluation protocol over the split: what every training stage may learn from."""
        from gr2.rerank.samples import SamplesError, load_protocol

        try:
            return load_protocol(cfg, self.split or self.dataset.parent / "split")
        except SamplesError as err:
            raise TrainInputError(str(err)) from err

    def load_sid_map(self, item_tokens: str = "sid") -> Any:
        """The SID map naming items in the ``item_tokens`` mode (``train.model.item_tokens``)."""
        from gr2.sid.sidmap import SIDMap

        if not self.sid_map.exists():
            raise TrainInputError(f"{self.sid_map}: not found; run `gr2 sid train` first")
        return SIDMap.load(self.sid_map).with_item_tokens(item_tokens)

    def load_dataset(self) -> Dataset:
        if not any((self.dataset / f"interactions.{ext}").exists() for ext in ("parquet", "csv")):
            raise TrainInputError(f"{self.dataset}: no dataset; run `gr2 data fetch` first")
        return Dataset.load(self.dataset)

    def load_samples(self, split: str) -> pd.DataFrame:
        """One split of the legacy-protocol samples (list columns as lists of ints)."""
        from gr2.rerank.samples import read_samples

        return read_samples(self.samples / f"{split}.parquet")


def sid_map_path(cfg: GR2Config) -> Path:
    return StageInputs.of_run(cfg.run_dir).sid_map


def load_sid_map(cfg: GR2Config) -> Any:
    """The run's SID map (``gr2 sid train`` writes it)."""
    return StageInputs.of_run(cfg.run_dir).load_sid_map(cfg.train.model.item_tokens)


def load_dataset(cfg: GR2Config) -> Dataset:
    return StageInputs.of_run(cfg.run_dir).load_dataset()


def run_protocol(cfg: GR2Config) -> ProtocolSplit:
    """The run's evaluation protocol (``gr2 data split``): what every training stage may learn from."""
    return StageInputs.of_run(cfg.run_dir).load_protocol(cfg)


def learnable_sequences(protocol: ProtocolSplit) -> dict[int, list[int]]:
    """Each user's learnable items (protocol order): nothing from the validation or test periods."""
    return protocol.sequences(learnable_only=True)


def validation_positions(
    protocol: ProtocolSplit, history_length: int, max_users: int, seed: int
) -> list[tuple[list[int], int]]:
    """One validation position per user, for at most ``max_users`` users: the user's earlier items
    (last ``history_length``) and the item consumed."""
    rng = np.random.default_rng(seed)
    ordered = protocol.ordered
    frame = ordered[(protocol.period == "validation").to_numpy() & (ordered["position"].to_numpy() > 0)]
    users = frame["user_id"].unique()
    if len(users) > max_users:
        users = np.sort(rng.choice(users, size=max_users, replace=False))
    seqs = {int(u): g.tolist() for u, g in ordered.groupby("user_id", sort=True)["item_id"]}
    out = []
    for user in users:
        rows = frame[frame["user_id"] == user]
        pos = int(rows["position"].iloc[int(rng.integers(len(rows)))])
        seq = seqs[int(user)]
        out.append((seq[max(0, pos - history_length): pos], int(seq[pos])))
    return out


def subsample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows drawn at random (seeded, spread over users), in ``sample_id`` order; 0 = all.

    >>> subsample(pd.DataFrame({"sample_id": ["c", "a", "b"]}), 0, 0)["sample_id"].tolist()
    ['a', 'b', 'c']
    """
    if n and len(frame) > n:
        frame = frame.sample(n=n, random_state=seed)
    return frame.sort_values("sample_id").reset_index(drop=True)
