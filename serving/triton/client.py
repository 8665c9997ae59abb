"""The Triton backend of the KServe server (``serve.backend: triton``): ``rerank`` over tritonclient.

:class:`TritonReranker` has the signature of :meth:`gr2.models.reranker.Reranker.rerank` and returns the
same :class:`~gr2.models.reranker.RerankResult`, so the server calls either without knowing which.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Literal

import numpy as np
from tritonclient.utils import InferenceServerException

from gr2.contract import DIAGNOSTIC_OUTPUTS, INPUTS, MODEL_NAME, OUTPUTS
from gr2.models.reranker import ItemCatalog, RerankResult
from serving.triton.codec import pad_histories

Protocol = Literal["grpc", "http"]


class TritonBackendError(RuntimeError):
    """Triton answered with an error or could not be reached; ``bad_request`` when the request was at fault."""

    def __init__(self, message: str, bad_request: bool = False) -> None:
        super().__init__(message)
        self.bad_request = bad_request


class TritonReranker:
    """A remote ``gr2-reranker`` on Triton, called with tritonclient over HTTP (default) or gRPC.

    HTTP by default: ``tritonclient.grpc`` and ``kserve`` register the same protobuf symbols, so the KServe
    server cannot import the gRPC client. The Triton model reads item features from its own bundle.
    """

    def __init__(self, url: str, model_name: str = MODEL_NAME, timeout_s: float = 30.0,
                 protocol: Protocol = "http") -> None:
        if protocol == "grpc":
            import tritonclient.grpc as client_lib
        elif protocol == "http":
            import tritonclient.http as client_lib
        else:
            raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        self.lib, self.protocol, self.model_name, self.timeout_s = client_lib, protocol, model_name, timeout_s
        self.url = url
        self.client = client_lib.InferenceServerClient(url, network_timeout=timeout_s) if protocol == "http" \
            else client_lib.InferenceServerClient(url)
        self._version: str | None = None

    def is_ready(self) -> bool:
        try:
            return bool(self.client.is_model_ready(self.model_name))
        except Exception:
            return False

    @property
    def model_version(self) -> str:
        """The bundle's model version, as the Triton model reports it in each response."""
        if self._version is None:
            self.rerank(np.array([[0]], dtype=np.int64), [[]])
        assert self._version is not None
        return self._version

    def _input(self, name: str, array: np.ndarray):
        tensor = self.lib.InferInput(name, list(array.shape), INPUTS[name][0])
        tensor.set_data_from_numpy(array)
        return tensor

    def rerank(self, candidates: np.ndarray, histories: Sequence[Sequence[int]], mode: str = "score",
               catalog: ItemCatalog | None = None, user_ids: Sequence[int] | None = None) -> RerankResult:
        """Re-rank ``candidates [B, K]`` given each row's history (oldest first), as ``Reranker.rerank``.

        ``catalog`` is accepted for the same signature and not sent: Triton prompts from its own bundle.
        """
        cands = np.ascontiguousarray(candidates, dtype=np.int64)
        users = np.zeros(len(cands), dtype=np.int64) if user_ids is None else np.asarray(user_ids, dtype=np.int64)
        inputs = [self._input("candidates", cands), self._input("user_id", users),
                  self._input("history", pad_histories(histories))]
        names = [*OUTPUTS, *DIAGNOSTIC_OUTPUTS]
        outputs = [self.lib.InferRequestedOutput(n) for n in names]
        start = time.perf_counter()
        try:
            kwargs = {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}
            result = self.client.infer(self.model_name, inputs, outputs=outputs, parameters={"mode": mode}, **kwargs)
        except InferenceServerException as err:
            status = str(err.status() or "")
            bad = status in {"400", "StatusCode.INVALID_ARGUMENT"}
            raise TritonBackendError(f"triton: {err.message()}", bad_request=bad) from err
        except Exception as err:  # transport errors: refused connection, timeout
            raise TritonBackendError(f"triton at {self.url} ({self.protocol}) failed: {err!r}") from err
        got = {n: result.as_numpy(n) for n in names}
        self._version = got["model_version"][0].decode() if len(got["model_version"]) else self._version
        ranking = got["ranking"].astype(np.int64)
        return RerankResult(ranking=ranking, scores=got["scores"].astype(np.float32),
                            fallback=got["fallback"].astype(bool), unknown_items=got["unknown_items"].astype(np.int64),
                            invalid=got["invalid"].astype(bool), identity=(ranking == cands).all(axis=1),
                            timings={"model": time.perf_counter() - start})
