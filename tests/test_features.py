"""Feast repo workflow: apply -> historical -> materialize -> online, via the API and the CLI."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import copy_run, shared_ml100k
from gr2.cli import main
from gr2.features import store
from gr2.paths import RunPaths


@pytest.fixture(scope="module")
def feature_run(prepared_run, tmp_path_factory):
    cfg = copy_run(prepared_run, tmp_path_factory.mktemp("features"))
    store.apply(cfg)
    return cfg


def test_historical_features_come_from_the_offline_source(feature_run) -> None:
    repo = RunPaths.of(feature_run.run_dir).feature_repo
    fs = store.open_store(repo)
    assert {fv.name for fv in fs.list_feature_views()} == {"item_text", "item_stats", "user_history", "item_sid"}
    entity_df = pd.DataFrame({"item_id": [1, 2], "event_timestamp": [pd.Timestamp("2030-01-01", tz="UTC")] * 2})
    hist = fs.get_historical_features(
        entity_df=entity_df, features=["item_text:title", "item_stats:popularity"]).to_df()
    train = pd.read_parquet(RunPaths.of(feature_run.run_dir).split / "train.parquet")
    expected = train[train.item_id == 1].shape[0]
    assert hist.set_index("item_id").loc[1, "popularity"] == expected
    assert hist["title"].notna().all()


def test_materialize_then_online_features(feature_run) -> None:
    store.materialize(feature_run)
    got = store.get_online_features(feature_run, item_ids=[1, 2], user_ids=[1])
    paths = RunPaths.of(feature_run.run_dir)
    items = pd.read_parquet(paths.raw / "items.parquet").set_index("item_id")
    assert [r["title"] for r in got["items"]] == [items.loc[1, "title"], items.loc[2, "title"]]
    train = pd.read_parquet(paths.split / "train.parquet")
    user1 = train[train.user_id == 1].sort_values(["timestamp", "item_id"], kind="mergesort")
    expected = user1["item_id"].tail(feature_run.features.history_length).tolist()
    assert got["users"][0]["recent_items"] == expected
    assert got["items"][0]["popularity"] == int((train.item_id == 1).sum())


def test_item_stats_are_time_stamped_and_cover_learnable_interactions_only(feature_run) -> None:
    """Each item's last row counts every learnable interaction; nothing from validation or test."""
    paths = RunPaths.of(feature_run.run_dir)
    stats = pd.read_parquet(paths.feature_repo / "data" / "item_stats.parquet")
    train = pd.read_parquet(paths.split / "train.parquet")
    latest = stats.sort_values("event_timestamp").groupby("item_id").tail(1)
    assert latest["popularity"].sum() == len(train)
    held_out = pd.concat([pd.read_parquet(paths.split / f"{s}.parquet") for s in ("validation", "test")])
    assert stats["last_seen_ts"].max() == train["timestamp"].max() < held_out["timestamp"].min()


def test_point_in_time_join_sees_only_interactions_before_the_sample(feature_run) -> None:
    """get_historical_features as of t == statistics recomputed from interactions strictly before t."""
    train = pd.read_parquet(RunPaths.of(feature_run.run_dir).split / "train.parquet")
    busy = train["item_id"].value_counts().index[:3].tolist()
    moments = [int(train["timestamp"].quantile(q)) for q in (0.2, 0.5, 0.9)]
    moments.append(int(train[train.item_id == busy[0]]["timestamp"].iloc[0]))  # at an interaction of the item
    asked = [(i, t) for i in busy for t in moments]
    got = store.get_historical_item_stats(feature_run, [i for i, _ in asked], [t for _, t in asked])
    for row in got.itertuples():
        before = train[(train.item_id == row.item_id) & (train.timestamp < row.as_of)]
        assert (0 if pd.isna(row.popularity) else row.popularity) == len(before), (row.item_id, row.as_of)
        if len(before):
            assert row.last_seen_ts == before["timestamp"].max()


def test_cli_end_to_end_fetch_validate_split_features(tmp_path) -> None:
    run = ["--profile", "smoke", "--run-dir", str(tmp_path)]
    runner = CliRunner()
    if shared_ml100k() is not None:
        fetch = runner.invoke(main, ["data", "fetch", "movielens-100k", "--from", str(shared_ml100k()), *run])
        assert fetch.exit_code == 0, fetch.output
        assert "source: local" in fetch.output
    else:
        from gr2.data.synthetic import make_synthetic
        make_synthetic(n_users=40, n_items=60).save(RunPaths.of(tmp_path).raw)
    for cmd in (["data", "validate"], ["data", "split"], ["features", "apply"], ["features", "materialize"]):
        result = runner.invoke(main, [*cmd, *run])
        assert result.exit_code == 0, (cmd, result.output)
    got = runner.invoke(main, ["features", "get", "--item", "1", "--user", "1", *run])
    assert got.exit_code == 0, got.output
    record = json.loads(got.output)["items"][0]
    if shared_ml100k() is not None:
        assert record["title"] == "Toy Story" and record["popularity"] > 0
    assert set(record) >= {"title", "categories", "year", "popularity", "mean_rating", "last_seen_ts", "sid"}


def test_cli_get_before_apply_is_a_clear_error(tmp_path) -> None:
    result = CliRunner().invoke(main, ["features", "get", "--item", "1", "--run-dir", str(tmp_path)])
    assert result.exit_code == 1 and "run `gr2 features apply` first" in result.output
