from components.feature_store.component import feature_store

__all__ = ["feature_store"]
