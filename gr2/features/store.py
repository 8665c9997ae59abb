"""The run's Feast store: copy the repo, write sources, ``apply``, ``materialize``, read online features."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from gr2.config import GR2Config
from gr2.data.schema import DataError, Dataset
from gr2.features.build import write_feature_tables
from gr2.paths import RunPaths

SOURCE_REPO = Path(__file__).resolve().parents[2] / "feature_store" / "feature_repo"
REPO_FILES = ("feature_store.yaml", "feature_store.production.yaml", "features.py")
ITEM_VIEWS = ("item_text", "item_stats", "item_sid")
USER_VIEWS = ("user_history",)


class FeatureStoreError(RuntimeError):
    """The feature repo or its inputs are missing or unusable."""


@dataclass(frozen=True)
class FeatureArtifacts:
    """Where the run's feature repo lives and what was materialized."""

    repo: Path
    rows: dict[str, int]


ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")


@contextlib.contextmanager
def plain_output() -> Iterator[None]:
    """Feast prints coloured progress with colorama; keep colours on a terminal, strip them elsewhere."""
    if sys.stdout.isatty():
        yield
        return
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        text = ANSI_CODES.sub("", buffer.getvalue()).strip()
        if text:
            print(text)


def source_repo(cfg: GR2Config) -> Path:
    """The feature repo to copy into runs (``features.repo_path`` or the one shipped in feature_store/)."""
    repo = Path(cfg.features.repo_path) if cfg.features.repo_path else SOURCE_REPO
    if not (repo / "feature_store.yaml").exists():
        raise FeatureStoreError(f"{repo}: no feature_store.yaml (set features.repo_path)")
    return repo


def _load_definitions(repo: Path) -> list[Any]:
    """Import ``features.py`` from ``repo`` and return every Feast object it defines."""
    from feast import Entity, FeatureService, FeatureView

    spec = importlib.util.spec_from_file_location(f"gr2_feature_repo_{abs(hash(repo))}", repo / "features.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return [v for v in vars(module).values() if isinstance(v, Entity | FeatureView | FeatureService)]


def open_store(repo: Path, yaml_file: str = "feature_store.yaml"):
    """A ``feast.FeatureStore`` over ``repo`` with the given config file."""
    from feast import FeatureStore

    logging.getLogger("feast").setLevel(logging.WARNING)
    if not (repo / yaml_file).exists():
        raise FeatureStoreError(f"{repo / yaml_file}: not found; run `gr2 features apply` first")
    return FeatureStore(repo_path=str(repo), fs_yaml_file=repo / yaml_file)


def prepare_repo(cfg: GR2Config) -> Path:
    """Copy the repo definition into the run and write its Parquet sources from the run's data."""
    paths = RunPaths.of(cfg.run_dir)
    train_file = paths.split / "train.parquet"
    if not train_file.exists():
        raise FeatureStoreError(f"{train_file}: not found; run `gr2 data split` first")
    repo = paths.feature_repo
    repo.mkdir(parents=True, exist_ok=True)
    for name in REPO_FILES:
        src = source_repo(cfg) / name
        if src.exists():
            shutil.copy2(src, repo / name)
    items = Dataset.load(paths.raw).items
    write_feature_tables(items, pd.read_parquet(train_file), repo / "data", cfg.features.history_length,
                         paths.sid / "sid_map.parquet")
    return repo


def apply(cfg: GR2Config, yaml_file: str = "feature_store.yaml") -> FeatureArtifacts:
    """``feast apply`` the definitions of the run's repo (after writing its sources)."""
    repo = prepare_repo(cfg)
    store = open_store(repo, yaml_file)
    with plain_output():
        store.apply(_load_definitions(repo))
    rows = {p.stem: len(pd.read_parquet(p)) for p in sorted((repo / "data").glob("*.parquet"))}
    return FeatureArtifacts(repo=repo, rows=rows)


def materialize(cfg: GR2Config, yaml_file: str = "feature_store.yaml") -> FeatureArtifacts:
    """Load every feature view into the online store (all history up to now)."""
    repo = RunPaths.of(cfg.run_dir).feature_repo
    store = open_store(repo, yaml_file)
    stamps = pd.read_parquet(repo / "data" / "item_text.parquet", columns=["event_timestamp"])["event_timestamp"]
    start = stamps.min().to_pydatetime() - timedelta(days=1)
    with plain_output():
        store.materialize(start_date=start, end_date=datetime.now(UTC))
    rows = {p.stem: len(pd.read_parquet(p)) for p in sorted((repo / "data").glob("*.parquet"))}
    return FeatureArtifacts(repo=repo, rows=rows)


def apply_and_materialize(cfg: GR2Config, yaml_file: str = "feature_store.yaml") -> dict[str, int]:
    """Refresh the run's store from its current data (used after the SID stage too)."""
    apply(cfg, yaml_file)
    return materialize(cfg, yaml_file).rows


def _features(views: tuple[str, ...], repo: Path) -> list[str]:
    from feast.repo_config import RepoConfig  # noqa: F401  (import check only)

    names = {"item_text": ["title", "categories", "year"], "item_stats": ["popularity", "mean_rating", "last_seen_ts"],
             "item_sid": ["sid", "sid_codes"], "user_history": ["recent_items", "history_length"]}
    return [f"{view}:{feature}" for view in views for feature in names[view]]


def get_online_features(cfg: GR2Config, item_ids: list[int] = (), user_ids: list[int] = (),
                        yaml_file: str = "feature_store.yaml") -> dict[str, list[dict[str, Any]]]:
    """Online features per item and per user, as JSON-ready records."""
    repo = RunPaths.of(cfg.run_dir).feature_repo
    store = open_store(repo, yaml_file)
    result: dict[str, list[dict[str, Any]]] = {}
    for key, ids, views in (("items", item_ids, ITEM_VIEWS), ("users", user_ids, USER_VIEWS)):
        if not ids:
            continue
        join_key = "item_id" if key == "items" else "user_id"
        rows = [{join_key: int(i)} for i in ids]
        table = store.get_online_features(features=_features(views, repo), entity_rows=rows).to_dict()
        records = [{name: table[name][i] for name in table} for i in range(len(rows))]
        result[key] = records
    return result


def get_historical_item_stats(cfg: GR2Config, item_ids: list[int], as_of_seconds: list[int],
                              yaml_file: str = "feature_store.yaml") -> pd.DataFrame:
    """Point-in-time ``item_stats`` (Feast ``get_historical_features``): one row per (item, time) asked,
    with the values of the latest source row at or before that time (NaN when the item had none)."""
    repo = RunPaths.of(cfg.run_dir).feature_repo
    store = open_store(repo, yaml_file)
    entity_df = pd.DataFrame({"item_id": pd.Series(item_ids, dtype="int64"),
                              "event_timestamp": pd.to_datetime(pd.Series(as_of_seconds, dtype="int64"),
                                                                unit="s", utc=True)})
    job = store.get_historical_features(entity_df=entity_df, features=_features(("item_stats",), repo))
    frame = job.to_df()
    stamps = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["as_of"] = ((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype("int64")
    return frame[["item_id", "as_of", "popularity", "mean_rating", "last_seen_ts"]].reset_index(drop=True)


__all__ = ["DataError", "FeatureArtifacts", "FeatureStoreError", "apply", "apply_and_materialize",
           "get_historical_item_stats", "get_online_features", "materialize"]
