"""Readers for MovieLens 100K in the GroupLens layout (``u.data``, ``u.item``) and RecBole's atomic layout."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from gr2.data.schema import CATEGORY_SEPARATOR, DataError, Dataset, coerce_interactions, coerce_items

GENRES_GROUPLENS = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
_YEAR_SUFFIX = re.compile(r"\s*\((\d{4})\)\s*$")


def detect_layout(directory: str | Path) -> str | None:
    """``"grouplens"``, ``"recbole"`` or None for a folder holding MovieLens 100K files."""
    root = Path(directory)
    if (root / "u.data").exists() and (root / "u.item").exists():
        return "grouplens"
    if (root / "ml-100k.inter").exists() and (root / "ml-100k.item").exists():
        return "recbole"
    return None


def read_movielens_100k(directory: str | Path) -> Dataset:
    """Read either layout into the canonical schema (titles without the year suffix, genres ``|``-joined)."""
    layout = detect_layout(directory)
    if layout == "grouplens":
        return _read_grouplens(Path(directory))
    if layout == "recbole":
        return _read_recbole(Path(directory))
    raise DataError(f"{directory}: no MovieLens 100K files (expected u.data+u.item or ml-100k.inter+ml-100k.item)")


def _split_title(raw: str) -> tuple[str, int | None]:
    match = _YEAR_SUFFIX.search(raw)
    if not match:
        return raw.strip(), None
    return raw[: match.start()].strip(), int(match.group(1))


def _read_grouplens(root: Path) -> Dataset:
    inter = pd.read_csv(root / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    cols = ["item_id", "raw_title", "release_date", "video_release", "url", *GENRES_GROUPLENS]
    raw = pd.read_csv(root / "u.item", sep="|", names=cols, encoding="latin-1")
    titles = raw["raw_title"].fillna("").map(_split_title)
    dates = pd.to_datetime(raw["release_date"], format="%d-%b-%Y", errors="coerce")
    years = [y if y is not None else (d.year if pd.notna(d) else None) for (_, y), d in zip(titles, dates, strict=True)]
    flags = raw[list(GENRES_GROUPLENS)].to_numpy()
    genres = [CATEGORY_SEPARATOR.join(g for g, f in zip(GENRES_GROUPLENS, row, strict=True) if f and g != "unknown")
              for row in flags]
    items = pd.DataFrame({
        "item_id": raw["item_id"], "title": [t for t, _ in titles], "categories": genres,
        "year": pd.array(years, dtype="Int64"),
    })
    users = None
    if (root / "u.user").exists():
        users = pd.read_csv(root / "u.user", sep="|", names=["user_id", "age", "gender", "occupation", "zip_code"])
    return Dataset(coerce_interactions(inter, root / "u.data"), coerce_items(items, root / "u.item"), users)


def _read_atomic(path: Path) -> pd.DataFrame:
    """RecBole atomic file: tab-separated, header ``name:type``."""
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [c.split(":", 1)[0] for c in frame.columns]
    return frame


def _read_recbole(root: Path) -> Dataset:
    inter = _read_atomic(root / "ml-100k.inter")
    raw = _read_atomic(root / "ml-100k.item")
    titles = raw["movie_title"].map(_split_title)
    year = pd.to_numeric(raw.get("release_year"), errors="coerce")
    items = pd.DataFrame({
        "item_id": raw["item_id"],
        "title": [t for t, _ in titles],
        "categories": raw.get("class", "").str.split().map(
            lambda g: CATEGORY_SEPARATOR.join(x for x in g if x != "unknown") if isinstance(g, list) else ""),
        "year": pd.array(year, dtype="Int64"),
    })
    users = None
    if (root / "ml-100k.user").exists():
        users = _read_atomic(root / "ml-100k.user")
        users["user_id"] = pd.to_numeric(users["user_id"]).astype("int64")
    return Dataset(coerce_interactions(inter, root / "ml-100k.inter"), coerce_items(items, root / "ml-100k.item"),
                   users)
