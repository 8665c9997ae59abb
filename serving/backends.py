"""Where the model runs: in the server process (``serve.backend: torch``) or in Triton (``triton``).

Both take the same call as :meth:`gr2.models.reranker.Reranker.rerank`, so the predictor cannot tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from gr2.contract import OUTPUTS
from gr2.models.reranker import ItemCatalog, Reranker, RerankResult
from gr2.models.serve_config import ServeConfig

PADDING = -1


class Backend(Protocol):
    def rerank(self, candidates: np.ndarray, histories: Sequence[Sequence[int]], mode: str = "score",
               catalog: ItemCatalog | None = None) -> RerankResult: ...


class TritonBackend:
    """Forwards each request to the ``gr2-reranker`` model of a Triton server over gRPC.

    The Triton model reads item features from its own bundle (``catalog`` is not sent) and runs the mode
    it was exported with; histories travel in the ``history`` input, padded with -1.
    """

    def __init__(self, url: str, model_name: str, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.client = grpcclient.InferenceServerClient(url=url)
        self.model_name, self.timeout_s = model_name, timeout_s

    def rerank(self, candidates: np.ndarray, histories: Sequence[Sequence[int]], mode: str = "score",
               catalog: ItemCatalog | None = None) -> RerankResult:
        b = len(candidates)
        width = max([len(h) for h in histories] + [1])
        history = np.full((b, width), PADDING, dtype=np.int64)
        for r, h in enumerate(histories):
            if len(h):
                history[r, width - len(h):] = h
        inputs = []
        for name, array in (("candidates", candidates.astype(np.int64)), ("user_id", np.zeros(b, np.int64)),
                            ("history", history)):
            tensor = self._grpc.InferInput(name, list(array.shape), "INT64")
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        outputs = [self._grpc.InferRequestedOutput(name) for name in OUTPUTS]
        res = self.client.infer(self.model_name, inputs, outputs=outputs, client_timeout=self.timeout_s)
        ranking = res.as_numpy("ranking")
        fallback = res.as_numpy("fallback").astype(bool)
        return RerankResult(ranking, res.as_numpy("scores"), fallback, np.zeros(b, np.int64), np.zeros(b, bool),
                            (ranking == candidates).all(axis=1))


def make_backend(cfg: ServeConfig, bundle_dir: str | Path) -> Backend:
    """The backend ``serve.backend`` names."""
    if cfg.backend == "triton":
        return TritonBackend(cfg.triton_url, cfg.model_name, cfg.timeout_s)
    return Reranker.from_bundle(bundle_dir, think_tokens=cfg.think_tokens)
