"""gr2 feature definitions: one object per concept (entities, sources, views, services).

The Parquet sources live in ``data/`` next to this file (``GR2_FEATURE_DATA`` overrides it);
``gr2 features apply`` writes them from a run's train split and SID map before ``feast apply``.
"""

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource
from feast.types import Array, Float64, Int64, String
from feast.value_type import ValueType

DATA_DIR = Path(os.environ.get("GR2_FEATURE_DATA", Path(__file__).resolve().parent / "data"))
NO_EXPIRY = timedelta(0)  # catalog and profile features stay valid until overwritten


def _source(name: str) -> FileSource:
    return FileSource(name=f"{name}_source", path=str(DATA_DIR / f"{name}.parquet"),
                      timestamp_field="event_timestamp")


# An item of the catalog (movie, product, ...), keyed by the canonical integer item_id.
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64, description="Catalog item")

# A user, keyed by the canonical integer user_id.
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="User")

# Item text as shown to the LLM and the text encoder.
item_text_fv = FeatureView(
    name="item_text",
    entities=[item],
    ttl=NO_EXPIRY,
    schema=[Field(name="title", dtype=String), Field(name="categories", dtype=String),
            Field(name="year", dtype=Int64)],
    source=_source("item_text"),
    online=True,
    tags={"stage": "data"},
)

# Engagement statistics computed from the train split only (no leakage into evaluation).
item_stats_fv = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=NO_EXPIRY,
    schema=[Field(name="popularity", dtype=Int64, description="interactions in train"),
            Field(name="mean_rating", dtype=Float64, description="mean rating in train (NaN: none)"),
            Field(name="last_seen_ts", dtype=Int64, description="latest train timestamp, unix s")],
    source=_source("item_stats"),
    online=True,
    tags={"stage": "data"},
)

# A user's most recent items in train, oldest first.
user_history_fv = FeatureView(
    name="user_history",
    entities=[user],
    ttl=NO_EXPIRY,
    schema=[Field(name="recent_items", dtype=Array(Int64)), Field(name="history_length", dtype=Int64)],
    source=_source("user_history"),
    online=True,
    tags={"stage": "data"},
)

# Semantic IDs from the RQ-VAE tokenizer (`gr2 sid train`); empty until SIDs exist.
item_sid_fv = FeatureView(
    name="item_sid",
    entities=[item],
    ttl=NO_EXPIRY,
    schema=[Field(name="sid", dtype=String, description="token string, e.g. <s_a_12><s_b_201><s_c_7>"),
            Field(name="sid_codes", dtype=Array(Int64))],
    source=_source("item_sid"),
    online=True,
    tags={"stage": "sid"},
)

# Everything the re-ranker's prompt builder reads at serving time.
reranker_v1 = FeatureService(
    name="reranker_v1",
    features=[item_text_fv, item_stats_fv, item_sid_fv, user_history_fv],
)
