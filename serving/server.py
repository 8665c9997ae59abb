"""Start a KServe ``ModelServer`` (REST v1/v2 + gRPC v2 + /metrics) with the gr2 re-ranker."""

from __future__ import annotations

from pathlib import Path

from gr2.models.bundle import read_manifest
from gr2.models.serve_config import ServeConfig


def serve(bundle_dir: str | Path, cfg: ServeConfig, http_port: int, grpc_port: int) -> None:
    """Load the model and the feature store, then serve until SIGTERM/SIGINT."""
    read_manifest(bundle_dir)  # a wrong path fails here, before kserve starts
    import kserve

    from serving.model import GR2Reranker

    model = GR2Reranker(bundle_dir, cfg)
    model.load()
    kserve.ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1).start([model])
