"""``gr2 data import``: any catalog in CSV/Parquet, with a column mapping, into the canonical schema."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gr2.data.schema import CATEGORY_SEPARATOR, DataError, Dataset, coerce_interactions, coerce_items


def read_any(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV or Parquet file."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    try:
        if p.suffix == ".parquet":
            return pd.read_parquet(p)
        return pd.read_csv(p, sep="\t" if p.suffix in {".tsv", ".tab"} else ",")
    except pd.errors.EmptyDataError as err:
        raise DataError(f"{p}: file is empty") from err


def parse_mapping(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["user_id=userId", ...]`` -> ``{"userId": "user_id"}`` (source column -> canonical column)."""
    mapping = {}
    for pair in pairs:
        canonical, sep, source = pair.partition("=")
        if not sep or not canonical or not source:
            raise DataError(f"column mapping {pair!r} must look like canonical=source, e.g. user_id=userId")
        mapping[source] = canonical
    return mapping


def _integer_ids(frame: pd.DataFrame, column: str) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Map non-integer ids to 1..n (sorted), returning the frame and the id map (None when not needed)."""
    numeric = pd.to_numeric(frame[column], errors="coerce")
    if numeric.notna().all() and (numeric == numeric.round()).all():
        return frame, None
    originals = sorted(frame[column].dropna().astype(str).unique())
    id_map = pd.DataFrame({column: range(1, len(originals) + 1), "original_id": originals})
    lookup = dict(zip(id_map["original_id"], id_map[column], strict=True))
    out = frame.copy()
    out[column] = out[column].astype(str).map(lookup)
    return out, id_map


SEPARATORS = ("|", ", ", ";")  # category separators recognised without --category-separator


def detect_category_separator(categories: pd.Series) -> str | None:
    """The one common separator the values use (None when every value is a single category).

    >>> detect_category_separator(pd.Series(["Drama|Comedy", "Horror"]))
    '|'
    """
    text = categories.dropna().astype(str)
    used = [sep for sep in SEPARATORS if text.str.contains(sep, regex=False).any()]
    if len(used) > 1:
        counts = {sep: int(text.str.contains(sep, regex=False).sum()) for sep in used}
        raise DataError(f"categories use several separators {counts} (values containing each); pass "
                        f"--category-separator to say which one splits categories")
    return used[0] if used else None


def _check_mapping(mapping: dict[str, str], inter: pd.DataFrame, catalog: pd.DataFrame,
                   interactions: str | Path, items: str | Path) -> None:
    """Every mapped source column must exist in one of the files (a same-named canonical one does not count)."""
    missing = [f"{canonical}={source}" for source, canonical in mapping.items()
               if source not in inter.columns and source not in catalog.columns]
    if missing:
        raise DataError(f"column mapping {missing}: source column(s) not found in {interactions} "
                        f"(columns {list(inter.columns)}) nor in {items} (columns {list(catalog.columns)})")


def import_catalog(interactions: str | Path, items: str | Path, mapping: dict[str, str],
                   out_dir: str | Path, category_separator: str | None = None,
                   timestamp_unit: str = "s") -> Dataset:
    """Read, rename and type the two tables, map string ids to integers, and save canonically."""
    inter, catalog = read_any(interactions), read_any(items)
    _check_mapping(mapping, inter, catalog, interactions, items)
    inter = inter.drop(columns=[c for c in mapping.values() if c in inter and c not in mapping]).rename(columns=mapping)
    catalog = catalog.drop(columns=[c for c in mapping.values() if c in catalog and c not in mapping]
                           ).rename(columns=mapping)
    if "timestamp" in inter and not pd.api.types.is_numeric_dtype(inter["timestamp"]):
        parsed = pd.to_datetime(inter["timestamp"], errors="coerce", utc=True)
        if parsed.notna().all():
            inter["timestamp"] = parsed.astype("int64") // 10**9
    elif "timestamp" in inter and timestamp_unit == "ms":
        inter["timestamp"] = inter["timestamp"] // 1000
    if "categories" in catalog:
        separator = category_separator or detect_category_separator(catalog["categories"])
        if separator and separator != CATEGORY_SEPARATOR:
            catalog["categories"] = catalog["categories"].fillna("").astype(str).str.replace(
                separator, CATEGORY_SEPARATOR, regex=False)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for column in ("item_id", "user_id"):
        if column not in (catalog if column == "item_id" else inter):
            continue
        if column == "item_id":
            catalog, id_map = _integer_ids(catalog, "item_id")
            if id_map is not None:
                lookup = dict(zip(id_map["original_id"], id_map["item_id"], strict=True))
                inter["item_id"] = inter["item_id"].astype(str).map(lookup)
                id_map.to_parquet(out / "item_id_map.parquet", index=False)
        else:
            inter, id_map = _integer_ids(inter, "user_id")
            if id_map is not None:
                id_map.to_parquet(out / "user_id_map.parquet", index=False)
    if "item_id" in inter and inter["item_id"].isna().any():
        raise DataError(f"{interactions}: {int(inter['item_id'].isna().sum())} interaction(s) name items not in {items}")
    data = Dataset(coerce_interactions(inter, Path(interactions)), coerce_items(catalog, Path(items)))
    data.save(out)
    return data
