"""The layout of a run directory, shared by every stage (data flows top to bottom)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    """Folders of one run; each stage reads the ones above it and writes its own."""

    root: Path

    @classmethod
    def of(cls, run_dir: str | Path) -> RunPaths:
        return cls(Path(run_dir))

    @property
    def raw(self) -> Path:
        """Canonical dataset as fetched/imported (interactions, items, users)."""
        return self.root / "data" / "raw"

    @property
    def validation(self) -> Path:
        """Great Expectations results (validation.json, validation.md)."""
        return self.root / "data" / "validation"

    @property
    def split(self) -> Path:
        """train/validation/test Parquet and split_summary.json."""
        return self.root / "data" / "split"

    @property
    def feature_repo(self) -> Path:
        """The run's copy of the Feast repo, its data sources and SQLite stores."""
        return self.root / "features" / "feature_repo"

    @property
    def sid(self) -> Path:
        """Semantic-ID tokenizer: sid_map.parquet, codebooks, report.json."""
        return self.root / "sid"

    @property
    def samples(self) -> Path:
        """Re-ranking samples per split and the legacy pre-ranker."""
        return self.root / "samples"

    @property
    def eval(self) -> Path:
        """Evaluation tables, plots and prediction files."""
        return self.root / "eval"

    @property
    def train(self) -> Path:
        """One sub-folder per training stage (midtrain, traces, reasoning, ...)."""
        return self.root / "train"
