"""Leakage: change (or add) interactions after the protocol's cut; nothing trained may change.

For each protocol the same chain runs twice, on the data and on a copy whose held-out interactions
were rewritten (and, for the temporal protocol with pinned cuts, extended): split -> samples (legacy
ranker) -> SIDs -> Feast sources -> teacher traces. Everything learned must be byte-for-byte equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from gr2.config import GR2Config
from gr2.data.schema import Dataset
from gr2.data.split import split_dataset
from gr2.features.store import apply_and_materialize
from gr2.paths import RunPaths
from gr2.rerank.samples import build_samples, load_samples
from gr2.sid.train import train_sid
from gr2.train.traces import run_traces

pytestmark = pytest.mark.slow
SIDE_FILES = ("item_text", "item_stats", "user_history", "item_sid")


def _chain(cfg: GR2Config) -> None:
    paths = RunPaths.of(cfg.run_dir)
    split_dataset(paths.raw, paths.split, cfg.rerank, cfg.data.kcore)
    build_samples(cfg)
    train_sid(cfg)
    apply_and_materialize(cfg)
    run_traces(cfg)


def _rewrite_held_out(data: Dataset, held_out: pd.Series, seed: int) -> Dataset:
    """Every held-out interaction now names another (random) catalog item."""
    inter = data.interactions.copy()
    rng = np.random.default_rng(seed)
    inter.loc[held_out.to_numpy(), "item_id"] = rng.choice(data.items["item_id"].to_numpy(), int(held_out.sum()))
    return Dataset(inter.drop_duplicates(["user_id", "item_id", "timestamp"]), data.items)


def _held_out_mask(cfg: GR2Config, data: Dataset, periods: tuple[str, ...]) -> pd.Series:
    from gr2.rerank.protocol import protocol_from_config

    protocol = protocol_from_config(data.interactions, cfg.rerank)
    key = protocol.ordered.set_index(["user_id", "item_id", "timestamp"])["period"]
    index = pd.MultiIndex.from_frame(data.interactions[["user_id", "item_id", "timestamp"]])
    return pd.Series(key.reindex(index).isin(periods).to_numpy(), index=data.interactions.index)


@pytest.fixture(scope="module", params=["temporal", "leave_one_out"])
def twin_runs(request, synthetic_run, tmp_path_factory) -> tuple[GR2Config, GR2Config, str]:
    """(original run, run with every validation/test interaction rewritten, protocol)."""
    kind = request.param
    root = tmp_path_factory.mktemp(f"leak_{kind}")
    data = Dataset.load(RunPaths.of(synthetic_run.run_dir).raw)
    base = synthetic_run.model_copy(update={"run_dir": str(root / "base")}, deep=True)
    base.rerank.protocol = kind
    if kind == "temporal":  # pin the cuts so that added interactions cannot move them
        from gr2.rerank.protocol import compute_cuts

        rc = base.rerank
        cuts = compute_cuts(data.interactions, rc.test_fraction, rc.validation_fraction, rc.fit_fraction)
        base.rerank.cut_times = [cuts.fit_start, cuts.validation_start, cuts.test_start]
    other = base.model_copy(update={"run_dir": str(root / "other")}, deep=True)
    data.save(RunPaths.of(base.run_dir).raw)
    changed = _rewrite_held_out(data, _held_out_mask(base, data, ("validation", "test")), seed=1)
    if kind == "temporal":  # and add a late interaction for a tenth of the users
        users = changed.interactions["user_id"].unique()[::10]
        late = pd.DataFrame({"user_id": users, "item_id": changed.items["item_id"].iloc[0],
                             "timestamp": int(changed.interactions["timestamp"].max()) + 3600})
        changed = Dataset(pd.concat([changed.interactions, late], ignore_index=True), changed.items)
    changed.save(RunPaths.of(other.run_dir).raw)
    for cfg in (base, other):
        _chain(cfg)
    return base, other, kind


def _read(run: GR2Config, relative: str) -> pd.DataFrame:
    return pd.read_parquet(Path(run.run_dir) / relative)


def test_the_perturbation_is_real(twin_runs) -> None:
    base, other, _ = twin_runs
    assert not _read(base, "data/split/test.parquet").equals(_read(other, "data/split/test.parquet"))
    assert not load_samples(base.run_dir, "test", "random").equals(load_samples(other.run_dir, "test", "random"))


def test_learnable_split_and_train_samples_do_not_change(twin_runs) -> None:
    base, other, _ = twin_runs
    pd.testing.assert_frame_equal(_read(base, "data/split/train.parquet"), _read(other, "data/split/train.parquet"))
    for protocol in ("legacy", "random"):  # positives included: no label of a train sample is held out
        pd.testing.assert_frame_equal(load_samples(base.run_dir, "train", protocol),
                                      load_samples(other.run_dir, "train", protocol))


def test_legacy_ranker_does_not_change(twin_runs) -> None:
    base, other, _ = twin_runs
    a, b = (joblib.load(RunPaths.of(r.run_dir).samples / "legacy_ranker.joblib")["model"] for r in (base, other))
    assert np.array_equal(a[-1].coef_, b[-1].coef_) and np.array_equal(a[-1].intercept_, b[-1].intercept_)


def test_sid_map_does_not_change(twin_runs) -> None:
    base, other, _ = twin_runs
    pd.testing.assert_frame_equal(_read(base, "sid/sid_map.parquet"), _read(other, "sid/sid_map.parquet"))


def test_feast_sources_do_not_change(twin_runs) -> None:
    base, other, _ = twin_runs
    for name in SIDE_FILES:
        relative = f"features/feature_repo/data/{name}.parquet"
        pd.testing.assert_frame_equal(_read(base, relative), _read(other, relative), obj=name)


def test_teacher_traces_do_not_change(twin_runs) -> None:
    base, other, _ = twin_runs
    a, b = (_read(r, "train/traces/traces.parquet") for r in (base, other))
    assert len(a) and a["accepted"].any()
    pd.testing.assert_frame_equal(a, b)
    source = json.loads((Path(base.run_dir) / "train/traces/metrics.json").read_text())["metrics"]["feature_source"]
    assert "point-in-time" in source


def test_validation_samples_ignore_the_test_period(synthetic_run, tmp_path) -> None:
    """Rewriting only the test period leaves validation samples, positives included, unchanged."""
    for kind in ("temporal", "leave_one_out"):
        data = Dataset.load(RunPaths.of(synthetic_run.run_dir).raw)
        runs = []
        for name, frame in (("a", data), ("b", None)):
            cfg = synthetic_run.model_copy(update={"run_dir": str(tmp_path / kind / name)}, deep=True)
            cfg.rerank.protocol = kind
            frame = frame if frame is not None else _rewrite_held_out(data, _held_out_mask(cfg, data, ("test",)), 2)
            frame.save(RunPaths.of(cfg.run_dir).raw)
            paths = RunPaths.of(cfg.run_dir)
            split_dataset(paths.raw, paths.split, cfg.rerank)
            build_samples(cfg)
            runs.append(cfg)
        for protocol in ("legacy", "random"):
            pd.testing.assert_frame_equal(load_samples(runs[0].run_dir, "validation", protocol),
                                          load_samples(runs[1].run_dir, "validation", protocol))
