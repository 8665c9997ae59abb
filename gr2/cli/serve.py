"""``gr2 serve``: the KServe re-ranker on a serving bundle (REST v1/v2, gRPC v2, /metrics)."""

from __future__ import annotations

import click

from gr2.cli.common import GR2Config, config_options, fail
from gr2.contract import GRPC_PORT, HTTP_PORT


@click.command(name="serve")
@click.option("--model", "bundle", required=True, type=click.Path(file_okay=False), help="Serving bundle directory.")
@click.option("--http-port", default=HTTP_PORT, show_default=True, help="REST port (v1, v2, /metrics).")
@click.option("--grpc-port", default=GRPC_PORT, show_default=True, help="gRPC port (v2).")
@click.option("--mode", type=click.Choice(["score", "generate", "reason"]), help="Override serve.mode.")
@click.option("--feature-repo", type=click.Path(file_okay=False), help="Feast repo (override serve.feature_repo).")
@config_options
def group(cfg: GR2Config, bundle: str, http_port: int, grpc_port: int, mode: str | None,
          feature_repo: str | None) -> None:
    """Serve the re-ranker until interrupted; ready once the model and the feature store are loaded."""
    from gr2.features.store import FeatureStoreError
    from gr2.models.bundle import BundleError
    from serving.server import serve

    update = {k: v for k, v in (("mode", mode), ("feature_repo", feature_repo)) if v}
    serve_cfg = cfg.serve.model_copy(update=update)
    try:
        serve(bundle, serve_cfg, http_port, grpc_port)
    except (BundleError, FeatureStoreError) as err:
        fail(str(err))
