"""Samples from the legacy pre-ranker: the file contract, honest (leak-free) protocol, summary counts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import copy_run
from gr2.data.schema import Dataset
from gr2.data.split import split_dataset
from gr2.paths import RunPaths
from gr2.rerank.protocol import ProtocolError, compute_cuts, order_interactions
from gr2.rerank.samples import SAMPLE_COLUMNS, SCHEMA, SamplesError, build_samples, load_samples

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(synthetic_run, tmp_path_factory):
    cfg = copy_run(synthetic_run, tmp_path_factory.mktemp("rerank_samples"))
    return cfg, build_samples(cfg)


def _all_samples(cfg) -> pd.DataFrame:
    frames = [load_samples(cfg.run_dir, s, p) for s in ("train", "validation", "test") for p in ("legacy", "random")]
    return pd.concat(frames, ignore_index=True)


def test_files_follow_the_contract(built):
    cfg, art = built
    for path in [*art.splits.values(), *art.random_splits.values()]:
        assert pq.read_schema(path).equals(SCHEMA, check_metadata=False), path
    frame = _all_samples(cfg)
    assert frame["sample_id"].is_unique and set(frame["protocol"]) == {"legacy", "random"}
    k = cfg.rerank.num_candidates
    for row in frame.itertuples():
        assert len(row.candidates) == k == len(set(row.candidates))
        assert row.candidates[row.target_position] == row.target
        assert 0 < len(row.history) <= cfg.rerank.history_length and row.target not in row.history
        assert row.positives[0] == row.target and set(row.positives) <= set(row.candidates)
    assert list(load_samples(cfg.run_dir, "test").columns[: len(SAMPLE_COLUMNS)]) == list(SAMPLE_COLUMNS)


def test_history_is_the_users_past_before_the_target(built):
    cfg, _ = built
    ordered = order_interactions(Dataset.load(RunPaths.of(cfg.run_dir).raw).interactions)
    seqs = {u: g["item_id"].tolist() for u, g in ordered.groupby("user_id")}
    times = {u: g["timestamp"].tolist() for u, g in ordered.groupby("user_id")}
    for row in load_samples(cfg.run_dir, "test").itertuples():
        pos = int(row.sample_id.rsplit("-p", 1)[1])
        seq = seqs[row.user_id]
        assert seq[pos] == row.target and times[row.user_id][pos] == row.timestamp
        assert row.history == seq[max(0, pos - cfg.rerank.history_length):pos]


def test_splits_follow_the_temporal_cuts(built):
    cfg, art = built
    proto = json.loads(art.summary.read_text())["metrics"]["protocol"]
    ts = {s: load_samples(cfg.run_dir, s)["timestamp"] for s in ("train", "validation", "test")}
    assert ts["train"].min() >= proto["fit_start"] and ts["train"].max() < proto["validation_start"]
    assert ts["validation"].min() >= proto["validation_start"] and ts["validation"].max() < proto["test_start"]
    assert ts["test"].min() >= proto["test_start"]


def test_summary_counts_add_up_and_the_ranker_is_informative(built):
    cfg, art = built
    summary = json.loads(art.summary.read_text())
    assert summary["config"]["rerank"]["num_candidates"] == cfg.rerank.num_candidates and summary["data_hash"]
    for name, s in summary["metrics"]["splits"].items():
        assert s["samples"] + s["dropped_target_not_in_top_k"] == s["positions"] > 0, name
        assert s["samples"] == len(load_samples(cfg.run_dir, name))
        assert 0 < s["coverage"] <= s["retrieval_recall"] <= 1
    # a random top-10 out of 300 items would cover ~3%; co-occurrence + scorer must do far better
    assert summary["metrics"]["splits"]["test"]["coverage"] > 0.2
    assert summary["metrics"]["legacy_ranker"]["fit_auc"] > 0.6


def test_random_protocol_offers_unseen_items_with_the_target(built):
    cfg, _ = built
    frame = load_samples(cfg.run_dir, "validation", "random")
    positions = frame["target_position"].to_numpy()
    assert len(np.unique(positions)) > 3  # shuffled, not always in one slot
    for row in frame.itertuples():
        assert not set(row.candidates) & set(row.history)


def test_clear_errors(tmp_path):
    with pytest.raises(SamplesError, match="gr2 samples build"):
        load_samples(tmp_path, "test")
    with pytest.raises(SamplesError, match="unknown split"):
        load_samples(tmp_path, "dev")
    with pytest.raises(ProtocolError, match="at least 20"):
        compute_cuts(pd.DataFrame({"timestamp": range(5)}), 0.1, 0.1, 0.3)
    with pytest.raises(ProtocolError, match="concentrated"):
        compute_cuts(pd.DataFrame({"timestamp": [7] * 100}), 0.1, 0.1, 0.3)


def test_prepared_run_builds_samples(prepared_run, tmp_path):
    """Same code on the prepared run (real ML-100K when ../shared has it), smoke sizes."""
    cfg = copy_run(prepared_run, tmp_path)
    art = build_samples(cfg)
    splits = json.loads(art.summary.read_text())["metrics"]["splits"]
    assert all(s["samples"] > 0 and s["random_samples"] == s["positions"] for s in splits.values())
    assert splits["test"]["coverage"] > 0.05  # a random top-10 of ~1,600 films would cover ~0.6%


def test_minimal_catalog_without_optional_columns(tmp_path):
    """Only the required columns (no rating, categories or year): the task still builds."""
    from gr2.config import load_config
    from gr2.data.synthetic import make_synthetic
    from gr2.rerank.format import build_messages

    data = make_synthetic(n_users=80, n_items=120, seed=3)
    data.interactions = data.interactions.drop(columns="rating")
    data.items = data.items[["item_id", "title"]]
    data.save(RunPaths.of(tmp_path).raw)
    cfg = load_config("smoke", overrides=[f"run_dir={tmp_path}"])
    split_dataset(RunPaths.of(tmp_path).raw, RunPaths.of(tmp_path).split, cfg.rerank)
    art = build_samples(cfg)
    sample = load_samples(tmp_path, "test").iloc[0]
    messages = build_messages(sample, data.items, style="answer")
    assert "Rank all 10 candidates" in messages[1]["content"]
    assert json.loads(art.summary.read_text())["metrics"]["splits"]["test"]["samples"] > 0


def test_leave_one_out_samples(synthetic_run, tmp_path):
    """One test and one validation position per user: the last and second to last items."""
    cfg = copy_run(synthetic_run, tmp_path)
    cfg.rerank.protocol = "leave_one_out"
    paths = RunPaths.of(cfg.run_dir)
    split_dataset(paths.raw, paths.split, cfg.rerank)
    art = build_samples(cfg)
    ordered = order_interactions(Dataset.load(paths.raw).interactions)
    size = ordered.groupby("user_id").size()
    for split, from_end in (("test", 1), ("validation", 2)):
        frame = load_samples(cfg.run_dir, split, "random")
        assert frame["user_id"].is_unique
        positions = frame["sample_id"].str.rsplit("-p", n=1).str[1].astype(int)
        assert (positions.to_numpy() == size.loc[frame["user_id"]].to_numpy() - from_end).all()
    validation = load_samples(cfg.run_dir, "validation")
    test_targets = dict(zip(ordered.groupby("user_id").tail(1)["user_id"], ordered.groupby("user_id").tail(1)["item_id"],
                            strict=True))
    for row in validation.itertuples():  # a validation label never comes from the test item
        assert test_targets[row.user_id] not in row.positives[1:] or test_targets[row.user_id] == row.target
    summary = json.loads(art.summary.read_text())["metrics"]
    assert summary["protocol"]["kind"] == "leave_one_out"
    assert any(w.startswith("test: only") for w in summary["warnings"])  # a small synthetic catalog
