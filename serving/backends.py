"""Where the model runs: in the server process (``serve.backend: torch``) or in Triton (``triton``).

Both take the same call as :meth:`gr2.models.reranker.Reranker.rerank`, so the predictor cannot tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from gr2.models.reranker import ItemCatalog, Reranker, RerankResult
from gr2.models.serve_config import ServeConfig


class Backend(Protocol):
    def rerank(self, candidates: np.ndarray, histories: Sequence[Sequence[int]], mode: str = "score",
               catalog: ItemCatalog | None = None) -> RerankResult: ...


def make_backend(cfg: ServeConfig, bundle_dir: str | Path) -> Backend:
    """The backend ``serve.backend`` names."""
    if cfg.backend == "triton":  # serving/triton/client.py, tested with a real tritonserver (tests/test_triton.py)
        from serving.triton.client import TritonReranker

        return TritonReranker(cfg.triton_url, cfg.model_name, cfg.timeout_s, protocol="http")
    return Reranker.from_bundle(bundle_dir, think_tokens=cfg.think_tokens)
