"""The canonical schema every gr2 stage reads, and its Parquet/CSV storage.

A dataset directory holds:

``interactions.parquet``
    ``user_id`` (int64), ``item_id`` (int64), ``timestamp`` (int64, unix seconds); optional
    ``rating`` (float64) and ``label`` (int64, 1 = positive).
``items.parquet``
    ``item_id`` (int64, unique), ``title`` (string); optional ``categories`` (string, ``|``-separated),
    ``year`` (Int64, nullable) and ``text`` (string, free description).
``users.parquet`` (optional)
    ``user_id`` (int64) and any profile columns.

CSV files with the same names and columns are accepted everywhere a Parquet file is.
Catalogs with string ids are mapped to integers by ``gr2 data import`` (the originals are kept in
``item_id_map.parquet`` / ``user_id_map.parquet``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
INTERACTION_OPTIONAL = ("rating", "label")
ITEM_COLUMNS = ("item_id", "title")
ITEM_OPTIONAL = ("categories", "year", "text")
CATEGORY_SEPARATOR = "|"


class DataError(ValueError):
    """Input data that cannot be read as the canonical schema; the message names file and column."""


@dataclass
class Dataset:
    """Interactions, item catalog and optional user table in the canonical schema."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None

    def save(self, directory: str | Path) -> Path:
        """Write the tables as Parquet into ``directory`` (created if needed)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.interactions.to_parquet(out / "interactions.parquet", index=False)
        self.items.to_parquet(out / "items.parquet", index=False)
        if self.users is not None:
            self.users.to_parquet(out / "users.parquet", index=False)
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Dataset:
        """Read a dataset directory written by :meth:`save` (or hand-made CSVs) and coerce types."""
        root = Path(directory)
        interactions = coerce_interactions(read_table(root, "interactions"), source=root / "interactions")
        items = coerce_items(read_table(root, "items"), source=root / "items")
        users = read_table(root, "users", required=False)
        return cls(interactions=interactions, items=items, users=users)


def table_path(directory: str | Path, name: str) -> Path | None:
    """The Parquet or CSV file for table ``name`` in ``directory``, if any."""
    for suffix in (".parquet", ".csv"):
        candidate = Path(directory) / f"{name}{suffix}"
        if candidate.exists():
            return candidate
    return None


def read_table(directory: str | Path, name: str, required: bool = True) -> pd.DataFrame | None:
    """Read ``name``.parquet or ``name``.csv from ``directory`` without changing any type."""
    path = table_path(directory, name)
    if path is None:
        if required:
            raise DataError(f"{Path(directory) / name}.parquet: file not found (nor {name}.csv)")
        return None
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{path}: file is empty") from err
    except Exception as err:  # pyarrow/pandas raise many types for unreadable files
        raise DataError(f"{path}: cannot be read ({type(err).__name__}: {err})") from err


def _require(frame: pd.DataFrame, columns: tuple[str, ...], source: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing required column(s) {missing}; found {list(frame.columns)}")


def _to_int(frame: pd.DataFrame, column: str, source: Path) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        example = frame.loc[bad, column].iloc[0]
        raise DataError(f"{source}: column {column!r} has non-numeric values (e.g. {example!r})")
    if values.isna().any():
        raise DataError(f"{source}: column {column!r} has {int(values.isna().sum())} null value(s)")
    if (values != values.round()).any():
        raise DataError(f"{source}: column {column!r} must hold integers")
    return values.astype("int64")


def coerce_interactions(frame: pd.DataFrame, source: Path = Path("interactions")) -> pd.DataFrame:
    """Check required columns and cast them to the canonical types (strict: raises DataError)."""
    _require(frame, INTERACTION_COLUMNS, source)
    out = frame.copy()
    for column in INTERACTION_COLUMNS:
        out[column] = _to_int(out, column, source)
    if "rating" in out:
        out["rating"] = pd.to_numeric(out["rating"], errors="coerce").astype("float64")
    if "label" in out:
        out["label"] = _to_int(out, "label", source)
    keep = [c for c in (*INTERACTION_COLUMNS, *INTERACTION_OPTIONAL) if c in out]
    return out[keep].reset_index(drop=True)


def coerce_items(frame: pd.DataFrame, source: Path = Path("items")) -> pd.DataFrame:
    """Check required item columns and cast them to the canonical types (strict: raises DataError)."""
    _require(frame, ITEM_COLUMNS, source)
    out = frame.copy()
    out["item_id"] = _to_int(out, "item_id", source)
    out["title"] = out["title"].astype("string")  # missing titles stay null: validation reports them
    if "categories" in out:
        out["categories"] = out["categories"].fillna("").astype(str)
    if "year" in out:
        out["year"] = pd.to_numeric(out["year"], errors="coerce").astype("Int64")
    if "text" in out:
        out["text"] = out["text"].fillna("").astype(str)
    keep = [c for c in (*ITEM_COLUMNS, *ITEM_OPTIONAL) if c in out]
    return out[keep].reset_index(drop=True)


def item_text(items: pd.DataFrame) -> pd.Series:
    """One text per item for encoders and prompts: title, year, categories and free text."""
    parts = items["title"].fillna("").astype(str)
    if "year" in items:
        year = items["year"].astype("string").fillna("")
        parts = parts + year.map(lambda y: f" ({y})" if y else "")
    if "categories" in items:
        cats = items["categories"].fillna("").str.replace(CATEGORY_SEPARATOR, ", ", regex=False)
        parts = parts + cats.map(lambda c: f". Genres: {c}" if c else "")
    if "text" in items:
        parts = parts + items["text"].fillna("").map(lambda t: f". {t}" if t else "")
    return parts.str.strip()
