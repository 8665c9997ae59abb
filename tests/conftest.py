"""Shared fixtures: a prepared run on real ML-100K when ../shared has it, else on a generated catalog."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from gr2.config import GR2Config, load_config
from gr2.data.fetch import shared_candidates
from gr2.data.movielens import detect_layout
from gr2.data.split import split_dataset
from gr2.data.synthetic import make_synthetic
from gr2.paths import RunPaths

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_ml100k() -> Path | None:
    """The read-only ML-100K copy in ../shared, if this checkout has one."""
    return next((p for p in shared_candidates() if detect_layout(p)), None)


requires_ml100k = pytest.mark.skipif(shared_ml100k() is None, reason="../shared/data/ml-100k is not present")


def _prepare(run_dir: Path, real: bool) -> GR2Config:
    cfg = load_config("smoke", overrides=[f"run_dir={run_dir}"])
    paths = RunPaths.of(run_dir)
    if real:
        from gr2.data.fetch import fetch

        fetch("movielens-100k", paths.raw, from_path=shared_ml100k())
    else:
        make_synthetic(n_users=200, n_items=300, seed=0).save(paths.raw)
    split_dataset(paths.raw, paths.split, cfg.rerank, cfg.data.kcore)
    return cfg


@pytest.fixture(scope="session")
def prepared_run(tmp_path_factory: pytest.TempPathFactory) -> GR2Config:
    """Raw data + split (ML-100K when available, else synthetic), smoke profile. Treat as read-only."""
    return _prepare(tmp_path_factory.mktemp("prepared_run"), real=shared_ml100k() is not None)


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> GR2Config:
    """Raw data + split on the generated catalog, smoke profile. Treat as read-only."""
    return _prepare(tmp_path_factory.mktemp("synthetic_run"), real=False)


def copy_run(cfg: GR2Config, target: Path) -> GR2Config:
    """A writable copy of a prepared run's data folder under ``target``."""
    shutil.copytree(RunPaths.of(cfg.run_dir).root / "data", target / "data")
    return cfg.model_copy(update={"run_dir": str(target)})


@pytest.fixture(scope="session")
def serving_run(prepared_run: GR2Config, tmp_path_factory: pytest.TempPathFactory):
    """SIDs, samples, a materialized Feast store and a smoke serving bundle (tests/serving_helpers.py)."""
    from serving_helpers import build_serving_run

    return build_serving_run(prepared_run, tmp_path_factory.mktemp("serving_run"))


def run_with_random_sids(prepared_run: GR2Config, root: Path):
    """A copy of the prepared smoke run with a random 3-level SID map, its re-ranking samples and an untrained
    offline model whose tokenizer saw re-ranking prompts: the starting point of the RL and OPD stage tests.
    Returns the config and the loaded model."""
    import numpy as np
    import pandas as pd

    from gr2.models.factory import build_offline_checkpoint, load_model
    from gr2.rerank.format import build_messages
    from gr2.rerank.samples import build_samples
    from gr2.sid.sidmap import SIDMap

    cfg = copy_run(prepared_run, root)
    paths = RunPaths.of(cfg.run_dir)
    items = pd.read_parquet(paths.raw / "items.parquet")
    ids = items["item_id"].to_numpy()
    flat = np.random.default_rng(0).choice(16 ** 3, size=len(ids), replace=False)
    sid_map = SIDMap(ids, np.stack([flat // 256, (flat // 16) % 16, flat % 16], axis=1), 16)
    sid_map.save(paths.sid / "sid_map.parquet")
    build_samples(cfg)
    rows = pd.read_parquet(paths.samples / "train.parquet").head(20).to_dict("records")
    corpus = [m["content"] for r in rows for m in build_messages(r, items, sid_map, ranking=r["candidates"])]
    base = build_offline_checkpoint(cfg.train.model, corpus, paths.train / "base", seed=0)
    return cfg, load_model(base, sid_map.all_tokens())
