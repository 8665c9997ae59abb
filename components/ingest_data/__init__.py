from components.ingest_data.component import ingest_data

__all__ = ["ingest_data"]
