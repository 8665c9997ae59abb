"""Feature tables for the Feast sources, computed from a run's train split (and SID map, if any)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

SID_SCHEMA = pa.schema([("item_id", pa.int64()), ("sid", pa.string()), ("sid_codes", pa.list_(pa.int64())),
                        ("event_timestamp", pa.timestamp("us", tz="UTC"))])


def as_of_timestamp(train: pd.DataFrame) -> pd.Timestamp:
    """Event time of all feature rows: the last train interaction (features are valid from then on)."""
    return pd.Timestamp(int(train["timestamp"].max()), unit="s", tz="UTC")


def item_text_table(items: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """title, categories, year per item."""
    out = pd.DataFrame({"item_id": items["item_id"].astype("int64"), "title": items["title"].astype(str)})
    out["categories"] = items["categories"].astype(str) if "categories" in items else ""
    out["year"] = (items["year"] if "year" in items else pd.Series(pd.NA, index=items.index)).astype("Int64")
    out["event_timestamp"] = as_of
    return out


def item_stats_table(items: pd.DataFrame, train: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """popularity, mean rating and last-seen time per item, from the train split only."""
    grouped = train.groupby("item_id")
    stats = pd.DataFrame({"popularity": grouped.size(), "last_seen_ts": grouped["timestamp"].max()})
    stats["mean_rating"] = grouped["rating"].mean() if "rating" in train else float("nan")
    out = items[["item_id"]].merge(stats, left_on="item_id", right_index=True, how="left")
    out["popularity"] = out["popularity"].fillna(0).astype("int64")
    out["last_seen_ts"] = out["last_seen_ts"].fillna(0).astype("int64")
    out["mean_rating"] = out["mean_rating"].astype("float64")
    out["event_timestamp"] = as_of
    return out.reset_index(drop=True)


def user_history_table(train: pd.DataFrame, history_length: int, as_of: pd.Timestamp) -> pd.DataFrame:
    """The last ``history_length`` train items per user, oldest first."""
    ordered = train.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")
    recent = ordered.groupby("user_id")["item_id"].apply(lambda s: [int(x) for x in s.tail(history_length)])
    out = recent.rename("recent_items").reset_index()
    out["history_length"] = out["recent_items"].map(len).astype("int64")
    out["event_timestamp"] = as_of
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
    out_dir.mkdir(parents=True, exist_ok=True)
    as_of = as_of_timestamp(train)
    tables = {
        "item_text": item_text_table(items, as_of),
        "item_stats": item_stats_table(items, train, as_of),
        "user_history": user_history_table(train, history_length, as_of),
    }
    for name, frame in tables.items():
        frame.to_parquet(out_dir / f"{name}.parquet", index=False)
    sid = item_sid_table(sid_map_path, as_of)
    pq.write_table(sid, out_dir / "item_sid.parquet")
    return {**{k: len(v) for k, v in tables.items()}, "item_sid": sid.num_rows}
