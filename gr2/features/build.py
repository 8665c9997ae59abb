"""Feature tables for the Feast sources, from a run's learnable interactions (the protocol's train split).

Catalog features (text, SIDs) are valid from the first learnable interaction on. Engagement features
are *time-stamped*: every (item, time) and (user, time) with an interaction gets a row whose values
count interactions strictly before ``event_timestamp`` (the row is valid from one second after the
interaction). A point-in-time join (``get_historical_features``) as of a sample's own timestamp
therefore sees only the past, and ``materialize`` loads the latest row of each entity for serving.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SID_SCHEMA = pa.schema([("item_id", pa.int64()), ("sid", pa.string()), ("sid_codes", pa.list_(pa.int64())),
                        ("event_timestamp", pa.timestamp("us", tz="UTC"))])
VALID_AFTER_S = 1  # a row built from interactions at time t is valid from t + 1 s (strictly after them)


def utc(seconds: pd.Series | np.ndarray | int) -> pd.Series | pd.Timestamp:
    """Unix seconds -> tz-aware UTC timestamps."""
    if np.isscalar(seconds):
        return pd.Timestamp(int(seconds), unit="s", tz="UTC")
    return pd.to_datetime(pd.Series(seconds).astype("int64"), unit="s", utc=True)


def valid_from(train: pd.DataFrame) -> pd.Timestamp:
    """Event time of the catalog rows: the first learnable interaction."""
    return utc(int(train["timestamp"].min()))


def item_text_table(items: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """title, categories, year per item."""
    out = pd.DataFrame({"item_id": items["item_id"].astype("int64"), "title": items["title"].fillna("").astype(str)})
    out["categories"] = items["categories"].astype(str) if "categories" in items else ""
    out["year"] = (items["year"] if "year" in items else pd.Series(pd.NA, index=items.index)).astype("Int64")
    out["event_timestamp"] = as_of
    return out


def item_stats_table(train: pd.DataFrame) -> pd.DataFrame:
    """Per (item, interaction time): popularity, mean rating and last-seen time up to and including it.

    Values are cumulative over the learnable interactions; ``event_timestamp`` is the interaction
    time + 1 s, so a lookup as of time t sees only interactions before t.
    """
    frame = train[["item_id", "timestamp"]].copy()
    frame["rating"] = train["rating"].astype("float64") if "rating" in train else np.nan
    per_time = frame.groupby(["item_id", "timestamp"], sort=True).agg(
        count=("rating", "size"), rating_sum=("rating", "sum"), rated=("rating", "count")).reset_index()
    grouped = per_time.groupby("item_id", sort=False)
    popularity = grouped["count"].cumsum()
    rated = grouped["rated"].cumsum()
    mean_rating = (grouped["rating_sum"].cumsum() / rated.where(rated > 0)).astype("float64")
    return pd.DataFrame({
        "item_id": per_time["item_id"].astype("int64"),
        "popularity": popularity.astype("int64"),
        "mean_rating": mean_rating,
        "last_seen_ts": per_time["timestamp"].astype("int64"),
        "event_timestamp": utc(per_time["timestamp"] + VALID_AFTER_S),
    })


def user_history_table(train: pd.DataFrame, history_length: int) -> pd.DataFrame:
    """Per (user, interaction): the last ``history_length`` items up to and including it, oldest first."""
    ordered = train.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
    rows_user, rows_items, rows_ts = [], [], []
    for user, group in ordered.groupby("user_id", sort=True):
        items = group["item_id"].to_numpy(np.int64)
        stamps = group["timestamp"].to_numpy(np.int64)
        last_of_time = np.append(stamps[1:] != stamps[:-1], True)  # one row per distinct time
        for end in np.flatnonzero(last_of_time):
            rows_user.append(int(user))
            rows_items.append(items[max(0, end + 1 - history_length): end + 1].tolist())
            rows_ts.append(int(stamps[end]))
    out = pd.DataFrame({"user_id": pd.Series(rows_user, dtype="int64"), "recent_items": rows_items})
    out["history_length"] = out["recent_items"].map(len).astype("int64")
    out["event_timestamp"] = utc(np.asarray(rows_ts, dtype=np.int64) + VALID_AFTER_S)
    return out


def item_sid_table(sid_map_path: Path | None, as_of: pd.Timestamp) -> pa.Table:
    """SID string and codes per item from ``sid_map.parquet`` (an empty, typed table when absent)."""
    if sid_map_path is None or not sid_map_path.exists():
        return SID_SCHEMA.empty_table()
    sids = pd.read_parquet(sid_map_path)
    frame = pd.DataFrame({
        "item_id": sids["item_id"].astype("int64"),
        "sid": sids["sid"].astype(str),
        "sid_codes": sids["codes"].map(lambda c: [int(x) for x in c]),
        "event_timestamp": as_of,
    })
    return pa.Table.from_pandas(frame, schema=SID_SCHEMA, preserve_index=False)


def write_feature_tables(items: pd.DataFrame, train: pd.DataFrame, out_dir: Path, history_length: int,
                         sid_map_path: Path | None = None) -> dict[str, int]:
    """Write the four source Parquet files into ``out_dir``; returns rows per table."""
    if train.empty:
        raise ValueError("no learnable interactions to build features from")
    out_dir.mkdir(parents=True, exist_ok=True)
    as_of = valid_from(train)
    tables = {
        "item_text": item_text_table(items, as_of),
        "item_stats": item_stats_table(train),
        "user_history": user_history_table(train, history_length),
    }
    for name, frame in tables.items():
        frame.to_parquet(out_dir / f"{name}.parquet", index=False)
    sid = item_sid_table(sid_map_path, as_of)
    pq.write_table(sid, out_dir / "item_sid.parquet")
    return {**{k: len(v) for k, v in tables.items()}, "item_sid": sid.num_rows}
