"""Online features for a request from the Feast store: user histories, item titles and SIDs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gr2.features.store import FeatureStoreError, open_store
from gr2.models.reranker import ItemCatalog

USER_FEATURES = ["user_history:recent_items"]
ITEM_FEATURES = ["item_text:title", "item_text:categories", "item_text:year"]
SID_FEATURE = "item_sid:sid"


class OnlineFeatures:
    """One open ``feast.FeatureStore`` (SQLite by default, Redis with the production YAML)."""

    def __init__(self, repo: str | Path, yaml_file: str = "feature_store.yaml", with_sids: bool = True) -> None:
        self.store = open_store(Path(repo), yaml_file)
        self.with_sids = with_sids

    def probe(self) -> None:
        """Read one row of every view used, so that a broken store fails at load time, not per request."""
        try:
            self.histories([0])
            self.catalog([0])
        except Exception as err:  # feast raises many types for a missing registry or table
            raise FeatureStoreError(f"feature store not usable: {err}") from err

    def histories(self, user_ids: Sequence[int]) -> list[list[int]]:
        """Each user's recent items, oldest first; an unknown user gets ``[]`` (cold start)."""
        table = self.store.get_online_features(
            features=USER_FEATURES, entity_rows=[{"user_id": int(u)} for u in user_ids]).to_dict()
        return [[int(i) for i in items] if items else [] for items in table["recent_items"]]

    def catalog(self, item_ids: Sequence[int]) -> ItemCatalog:
        """Title, categories, year (and SID) of the given items; items the store lacks are left out."""
        ids = sorted({int(i) for i in item_ids})
        features = ITEM_FEATURES + ([SID_FEATURE] if self.with_sids else [])
        table = self.store.get_online_features(features=features,
                                               entity_rows=[{"item_id": i} for i in ids]).to_dict()
        frame = pd.DataFrame(table)
        frame = frame[frame["title"].notna()]
        sids = dict(zip(frame["item_id"], frame["sid"], strict=True)) if self.with_sids else None
        return ItemCatalog(frame.drop(columns=["sid"], errors="ignore").set_index("item_id"), sids)
