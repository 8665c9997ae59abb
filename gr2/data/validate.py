"""``gr2 data validate``: Great Expectations 1.x suites for interactions and the item catalog.

Tables are read as they are on disk (no type coercion), so a broken file shows up as failed
expectations rather than a crash. Output: ``validation.json`` (``success`` and, per failed
expectation, its name, column, observed value and a few offending rows) and ``validation.md``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from gr2.data.config import DataConfig
from gr2.data.schema import ITEM_COLUMNS, DataError, read_table

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
MAX_EXAMPLES = 5
MAX_IDS = 20  # offending ids listed per failed expectation
ID_COLUMNS = {"interactions": ("user_id",), "items": ("item_id",), "user_history": ("user_id",)}


def _plain(value: Any) -> Any:
    """A JSON-friendly scalar (numpy and pandas values become Python ones)."""
    return value.item() if hasattr(value, "item") else value


@dataclass
class ExpectationOutcome:
    """One expectation's verdict, in words a data owner can act on."""

    table: str
    expectation: str
    column: str | None
    success: bool
    observed: Any = None
    unexpected_count: int | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)  # item/user ids of offending rows (first ones)

    @property
    def message(self) -> str:
        """One line naming the check, the column, how many rows failed, the observed values and ids."""
        text = f"{self.table}: {self.expectation}({self.column or ''})"
        if self.unexpected_count:
            text += f": {self.unexpected_count} row(s) fail"
        if self.observed not in (None, "", []):
            text += f"; observed {self.observed}"
        if self.ids:
            text += f"; ids {self.ids}"
        return text


@dataclass
class ValidationReport:
    """All outcomes plus where the JSON and Markdown reports were written."""

    success: bool
    outcomes: list[ExpectationOutcome]
    json_path: Path | None = None
    markdown_path: Path | None = None

    @property
    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]


def _interaction_expectations(frame: pd.DataFrame, items: pd.DataFrame | None, cfg: DataConfig) -> list:
    import great_expectations.expectations as gxe

    exps: list = [gxe.ExpectTableRowCountToBeBetween(min_value=1)]
    exps += [gxe.ExpectColumnToExist(column=c) for c in ("user_id", "item_id", "timestamp")]
    present = set(frame.columns)
    for column in ("user_id", "item_id", "timestamp"):
        if column in present:
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=column))
            exps.append(gxe.ExpectColumnValuesToBeInTypeList(column=column, type_list=["int64", "int32"]))
    if "timestamp" in present and pd.api.types.is_numeric_dtype(frame["timestamp"]):
        exps.append(gxe.ExpectColumnValuesToBeBetween(
            column="timestamp", min_value=cfg.timestamp_min, max_value=cfg.timestamp_max))
    if "rating" in present and pd.api.types.is_numeric_dtype(frame["rating"]):
        exps.append(gxe.ExpectColumnValuesToBeBetween(
            column="rating", min_value=cfg.rating_min, max_value=cfg.rating_max))
    if {"user_id", "item_id", "timestamp"} <= present:
        exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id", "timestamp"]))
    if "item_id" in present and items is not None and "item_id" in items:
        catalog = pd.to_numeric(items["item_id"], errors="coerce").dropna().astype("int64").unique().tolist()
        exps.append(gxe.ExpectColumnValuesToBeInSet(column="item_id", value_set=catalog))
    return exps


def _item_expectations(frame: pd.DataFrame, cfg: DataConfig) -> list:
    import great_expectations.expectations as gxe

    exps: list = [gxe.ExpectTableRowCountToBeBetween(min_value=1)]
    exps += [gxe.ExpectColumnToExist(column=c) for c in ITEM_COLUMNS]
    if "item_id" in frame:
        exps += [gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
                 gxe.ExpectColumnValuesToBeUnique(column="item_id"),
                 gxe.ExpectColumnValuesToBeInTypeList(column="item_id", type_list=["int64", "int32"])]
    if "title" in frame:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column="title"))
        exps.append(gxe.ExpectColumnValuesToNotMatchRegex(column="title", regex=r"^\s*$"))  # empty or blank
    if "year" in frame and pd.api.types.is_numeric_dtype(frame["year"]):
        exps.append(gxe.ExpectColumnValuesToBeBetween(column="year", min_value=cfg.year_min, max_value=cfg.year_max))
    return exps


def _history_expectations(cfg: DataConfig) -> list:
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnValuesToBeBetween(column="n_interactions", min_value=cfg.min_history)]


def _run_suite(context: Any, table: str, frame: pd.DataFrame, expectations: list) -> list[ExpectationOutcome]:
    import great_expectations as gx

    source = context.data_sources.add_pandas(f"gr2_{table}")
    batch_def = source.add_dataframe_asset(name=table).add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name=f"gr2_{table}"))
    for exp in expectations:
        suite.add_expectation(exp)
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    result = batch.validate(suite, result_format="SUMMARY")
    outcomes = []
    for res in result.results:
        config = res.expectation_config
        kwargs = config.kwargs
        column = kwargs.get("column") or (",".join(kwargs["column_list"]) if "column_list" in kwargs else None)
        detail = res.result or {}
        observed = detail.get("observed_value")
        if observed is None and detail.get("partial_unexpected_list"):
            observed = [_plain(v) for v in detail["partial_unexpected_list"][:MAX_EXAMPLES]]
        if res.exception_info and res.exception_info.get("raised_exception"):
            observed = f"could not evaluate: {res.exception_info.get('exception_message')}"
        rows = [int(i) for i in detail.get("partial_unexpected_index_list") or [] if isinstance(i, int | float)]
        examples = json.loads(frame.loc[frame.index.intersection(rows[:MAX_EXAMPLES])].to_json(orient="records"))
        key = next((k for k in ID_COLUMNS[table] if k in frame), None)
        ids = [_plain(v) for v in frame.loc[frame.index.intersection(rows[:MAX_IDS]), key]] if key else []
        outcomes.append(ExpectationOutcome(
            table=table, expectation=config.type, column=column, success=bool(res.success),
            observed=observed, unexpected_count=detail.get("unexpected_count"), examples=examples, ids=ids))
    return outcomes


def validate_dataset(data_dir: str | Path, cfg: DataConfig | None = None,
                     out_dir: str | Path | None = None) -> ValidationReport:
    """Run the interaction, item and user-history suites on the tables in ``data_dir``.

    Raises :class:`DataError` only when a table cannot be read at all (missing or empty file).
    """
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    cfg = cfg or DataConfig()
    interactions = read_table(data_dir, "interactions")
    items = read_table(data_dir, "items")
    context = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except (ImportError, AttributeError):
        pass
    outcomes = _run_suite(context, "interactions", interactions, _interaction_expectations(interactions, items, cfg))
    outcomes += _run_suite(context, "items", items, _item_expectations(items, cfg))
    if "user_id" in interactions and len(interactions):
        history = interactions.groupby("user_id", dropna=True).size().rename("n_interactions").reset_index()
        outcomes += _run_suite(context, "user_history", history, _history_expectations(cfg))
    report = ValidationReport(success=all(o.success for o in outcomes), outcomes=outcomes)
    if out_dir is not None:
        write_reports(report, Path(out_dir), Path(data_dir))
    return report


def write_reports(report: ValidationReport, out_dir: Path, data_dir: Path) -> None:
    """Write ``validation.json`` and ``validation.md`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "success": report.success,
        "data_dir": str(data_dir),
        "expectations": len(report.outcomes),
        "failed": [o.__dict__ for o in report.failures],
        "passed": [f"{o.table}: {o.expectation}({o.column or ''})" for o in report.outcomes if o.success],
    }
    report.json_path = out_dir / "validation.json"
    report.json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    lines = [f"# Data validation: {'PASSED' if report.success else 'FAILED'}", "",
             f"Data: `{data_dir}`; {len(report.outcomes)} expectations, {len(report.failures)} failed.", ""]
    if report.failures:
        lines += ["| table | expectation | column | unexpected | observed | ids | example rows |",
                  "|---|---|---|---|---|---|---|"]
        for o in report.failures:
            ex = "; ".join(json.dumps(e, default=str) for e in o.examples[:3]).replace("|", "\\|")
            observed = str(o.observed)[:120].replace("|", "\\|")
            lines.append(f"| {o.table} | {o.expectation} | {o.column or ''} | {o.unexpected_count or ''} "
                         f"| {observed} | {', '.join(map(str, o.ids))} | {ex} |")
    lines += ["", "## Passed", ""] + [f"- {p}" for p in payload["passed"]]
    report.markdown_path = out_dir / "validation.md"
    report.markdown_path.write_text("\n".join(lines) + "\n")


__all__ = ["DataError", "ExpectationOutcome", "ValidationReport", "validate_dataset"]
