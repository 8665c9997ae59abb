"""Great Expectations validation: clean data passes, each corruption is named, bad files never crash."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from gr2.cli import main
from gr2.data.schema import DataError, Dataset
from gr2.data.validate import validate_dataset
from gr2.paths import RunPaths


@pytest.fixture(scope="module")
def clean(prepared_run) -> Dataset:
    return Dataset.load(RunPaths.of(prepared_run.run_dir).raw)


def _write(tmp_path, interactions: pd.DataFrame, items: pd.DataFrame, fmt: str = "parquet"):
    for name, frame in (("interactions", interactions), ("items", items)):
        if fmt == "csv":
            frame.to_csv(tmp_path / f"{name}.csv", index=False)
        else:
            frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    return tmp_path


def _failed(report) -> set[tuple[str, str, str | None]]:
    return {(o.table, o.expectation, o.column) for o in report.failures}


def test_clean_data_passes(clean, tmp_path) -> None:
    report = validate_dataset(_write(tmp_path, clean.interactions, clean.items), out_dir=tmp_path / "v")
    assert report.success, report.failures
    assert json.loads((tmp_path / "v" / "validation.json").read_text())["success"] is True
    assert "PASSED" in (tmp_path / "v" / "validation.md").read_text()


def test_dropped_column_is_named(clean, tmp_path) -> None:
    report = validate_dataset(_write(tmp_path, clean.interactions.drop(columns=["timestamp"]), clean.items))
    assert ("interactions", "expect_column_to_exist", "timestamp") in _failed(report)


def test_null_id_is_named_with_offending_rows(clean, tmp_path) -> None:
    inter = clean.interactions.astype({"user_id": "float64"})
    inter.loc[3, "user_id"] = None
    report = validate_dataset(_write(tmp_path, inter, clean.items, fmt="csv"))
    failure = next(o for o in report.failures if o.expectation == "expect_column_values_to_not_be_null")
    assert failure.column == "user_id" and failure.unexpected_count == 1
    assert failure.examples[0]["item_id"] == int(clean.interactions.loc[3, "item_id"])


def test_unknown_item_is_named(clean, tmp_path) -> None:
    inter = clean.interactions.copy()
    inter.loc[0, "item_id"] = 10**9
    report = validate_dataset(_write(tmp_path, inter, clean.items))
    failure = next(o for o in report.failures if o.expectation == "expect_column_values_to_be_in_set")
    assert failure.column == "item_id" and failure.examples[0]["item_id"] == 10**9


def test_string_timestamp_is_named(clean, tmp_path) -> None:
    inter = clean.interactions.astype({"timestamp": "object"})
    inter.loc[5, "timestamp"] = "yesterday"
    report = validate_dataset(_write(tmp_path, inter, clean.items, fmt="csv"))
    assert ("interactions", "expect_column_values_to_be_in_type_list", "timestamp") in _failed(report)


def test_duplicates_short_histories_and_item_ids(clean, tmp_path) -> None:
    inter = pd.concat([clean.interactions, clean.interactions.iloc[[0]]], ignore_index=True)
    inter = pd.concat([inter, pd.DataFrame({"user_id": [10**6], "item_id": [int(clean.items.item_id[0])],
                                            "timestamp": [inter.timestamp.max()]})], ignore_index=True)
    items = pd.concat([clean.items, clean.items.iloc[[0]]], ignore_index=True)
    failed = _failed(validate_dataset(_write(tmp_path, inter, items)))
    assert ("interactions", "expect_compound_columns_to_be_unique", "user_id,item_id,timestamp") in failed
    assert ("user_history", "expect_column_values_to_be_between", "n_interactions") in failed
    assert ("items", "expect_column_values_to_be_unique", "item_id") in failed


def test_empty_or_missing_file_is_a_one_line_error(clean, tmp_path) -> None:
    (tmp_path / "interactions.csv").write_text("")
    clean.items.to_parquet(tmp_path / "items.parquet")
    with pytest.raises(DataError, match=r"interactions\.csv: file is empty"):
        validate_dataset(tmp_path)
    result = CliRunner().invoke(main, ["data", "validate", "--data", str(tmp_path / "nowhere"),
                                       "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1 and "interactions.parquet: file not found" in result.output
    assert "Traceback" not in result.output


def test_cli_exits_1_and_lists_failures(clean, tmp_path) -> None:
    inter = clean.interactions.astype({"timestamp": "object"})
    inter.loc[0, "timestamp"] = "not-a-time"
    inter.loc[1, "item_id"] = -7
    data = _write(tmp_path / "d" if (tmp_path / "d").mkdir() is None else tmp_path, inter, clean.items, fmt="csv")
    result = CliRunner().invoke(main, ["data", "validate", "--data", str(data), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    assert "FAILED interactions: expect_column_values_to_be_in_type_list(timestamp)" in result.output
    assert "FAILED interactions: expect_column_values_to_be_in_set(item_id)" in result.output


def test_null_and_empty_titles_are_reported_with_item_ids(clean, tmp_path) -> None:
    items = clean.items.copy()
    items["title"] = items["title"].astype(object)
    first, second = int(items.loc[0, "item_id"]), int(items.loc[1, "item_id"])
    items.loc[0, "title"] = None
    items.loc[1, "title"] = "  "
    report = validate_dataset(_write(tmp_path, clean.interactions, items))
    by_check = {o.expectation: o for o in report.failures if o.table == "items"}
    assert by_check["expect_column_values_to_not_be_null"].ids == [first]
    assert by_check["expect_column_values_to_not_match_regex"].ids == [second]
    assert f"ids [{second}]" in by_check["expect_column_values_to_not_match_regex"].message


def test_bounds_are_config_values_and_messages_show_observed_values(clean, tmp_path) -> None:
    from gr2.config import load_config

    items = clean.items.copy()
    items.loc[0, "year"] = 1850
    data_dir = _write(tmp_path, clean.interactions, items)
    report = validate_dataset(data_dir, load_config("smoke", overrides=["data.year_min=1900"]).data)
    failure = next(o for o in report.failures if o.column == "year")
    assert failure.observed == [1850] and "observed [1850]" in failure.message
    assert validate_dataset(data_dir, load_config("smoke", overrides=["data.year_min=1800"]).data).success


def test_failed_validation_stops_learning_stages_unless_forced(clean, tmp_path) -> None:
    """samples build, sid train and the training stages exit 1 naming the report; --force overrides."""
    run = RunPaths.of(tmp_path / "run")
    items = clean.items.copy()
    items.loc[0, "year"] = 1000
    Dataset(clean.interactions, items).save(run.raw)
    runner = CliRunner()
    base = ["--profile", "smoke", "--run-dir", str(run.root)]
    assert runner.invoke(main, ["data", "validate", *base]).exit_code == 1
    for command in (["samples", "build"], ["sid", "train"], ["train", "midtrain"], ["train", "traces"],
                    ["train", "reasoning"]):
        result = runner.invoke(main, [*command, *base])
        assert result.exit_code == 1, command
        assert "failed validation" in result.output and "validation.md" in result.output, command
    forced = runner.invoke(main, ["samples", "build", *base, "--force"])
    assert "failed validation" not in forced.output  # it went on (and fails later: no split was written)
    assert "gr2 data split" in forced.output
