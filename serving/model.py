"""The KServe predictor: features from Feast, then the shared re-ranker (in-process torch or Triton)."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from gr2.models.bundle import read_manifest
from gr2.models.reranker import UNSCORED, RerankResult
from gr2.models.serve_config import ServeConfig
from serving import metrics
from serving.ab import EVENT_TIME_HEADER, ResponseLog
from serving.backends import make_backend
from serving.features import OnlineFeatures
from serving.request import RerankRequest, from_v1, from_v2

log = logging.getLogger(__name__)


class GR2Reranker(kserve.Model):
    """``gr2-reranker``: re-ranks each row of ``candidates`` for its user (v1 and v2 protocols)."""

    def __init__(self, bundle_dir: str | Path, cfg: ServeConfig) -> None:
        super().__init__(cfg.model_name)
        self.bundle_dir, self.cfg = Path(bundle_dir), cfg
        self.ready = False
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gr2-model")  # one model call at a time

    def load(self) -> bool:
        """Load the model and open the feature store; ready only when both work."""
        manifest = read_manifest(self.bundle_dir)
        self.version = manifest.model_version
        self.labels = {"model_name": self.name, "model_version": self.version}
        self.backend = make_backend(self.cfg, self.bundle_dir)
        self.features = None
        if self.cfg.feature_repo:
            self.features = OnlineFeatures(self.cfg.feature_repo, self.cfg.feature_store_yaml, manifest.with_sids)
            self.features.probe()
        self.response_log = ResponseLog(self.cfg.response_log, self.cfg.variant) if self.cfg.response_log else None
        self.ready = True
        return self.ready

    async def predict(self, payload: dict | InferRequest, headers: dict[str, str] | None = None,
                      response_headers: dict[str, str] | None = None) -> dict | InferResponse:
        start, headers = time.perf_counter(), {k.lower(): v for k, v in (headers or {}).items()}
        metrics.REQUESTS.labels(**self.labels).inc()
        v2 = isinstance(payload, InferRequest)
        req = from_v2(payload, self.cfg, headers) if v2 else from_v1(payload, self.cfg, headers)
        with metrics.PHASE_SECONDS.labels(**self.labels, phase="feature_fetch").time():
            histories, catalog = self._features(req)
        result = await self._rerank(req, histories, catalog)
        for phase, seconds in result.timings.items():
            metrics.PHASE_SECONDS.labels(**self.labels, phase=phase).observe(seconds)
        self._count(result)
        if self.response_log is not None:
            event_time = float(headers[EVENT_TIME_HEADER]) if EVENT_TIME_HEADER in headers else None
            self.response_log.write(req.request_id or headers.get("x-request-id", ""), req.user_ids.tolist(),
                                    req.candidates, result.ranking, result.fallback.tolist(), self.version,
                                    event_time)
        metrics.REQUEST_SECONDS.labels(**self.labels).observe(time.perf_counter() - start)
        return self._v2_response(payload, result) if v2 else self._v1_response(req, result)

    def _features(self, req: RerankRequest) -> tuple[list[list[int]], Any]:
        """The request's histories (sent, else from Feast, else empty) and the item catalog to prompt with."""
        if self.features is None:
            return req.histories or [[] for _ in req.user_ids], None
        histories = req.histories if req.histories is not None else self.features.histories(req.user_ids.tolist())
        items = set(req.candidates.ravel().tolist()).union(*map(set, histories))
        return histories, self.features.catalog(sorted(items))

    async def _rerank(self, req: RerankRequest, histories: list[list[int]], catalog: Any) -> RerankResult:
        """The backend's answer, or the incoming order (fallback) after a timeout or a backend error."""
        mode = req.mode or self.cfg.mode
        call = self._pool.submit(self.backend.rerank, req.candidates, histories, mode, catalog)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(call), timeout=self.cfg.timeout_s)
        except TimeoutError:
            log.warning("request %s: model timed out after %.1f s; incoming order returned", req.request_id,
                        self.cfg.timeout_s)
        except InvalidInput:
            raise
        except Exception:
            log.exception("request %s: backend error; incoming order returned", req.request_id)
        b, k = req.candidates.shape
        return RerankResult(req.candidates.copy(), np.full((b, k), UNSCORED, np.float32), np.ones(b, bool),
                            np.zeros(b, np.int64), np.zeros(b, bool), np.ones(b, bool))

    def _count(self, result: RerankResult) -> None:
        for counter, value in ((metrics.FALLBACKS, result.fallback.sum()), (metrics.INVALID_OUTPUTS,
                               result.invalid.sum()), (metrics.IDENTITY_OUTPUTS, result.identity.sum()),
                               (metrics.UNKNOWN_ITEMS, result.unknown_items.sum())):
            counter.labels(**self.labels).inc(float(value))

    def _v2_response(self, request: InferRequest, result: RerankResult) -> InferResponse:
        b = len(result.ranking)
        tensors = {"ranking": (result.ranking.astype(np.int64), "INT64"),
                   "scores": (result.scores.astype(np.float32), "FP32"),
                   "fallback": (result.fallback.astype(bool), "BOOL"),
                   "model_version": (np.array([self.version.encode()] * b, dtype=np.object_), "BYTES")}
        outputs = []
        for name, (array, dtype) in tensors.items():
            out = InferOutput(name=name, shape=list(array.shape), datatype=dtype)
            out.set_data_from_numpy(array, binary_data=bool(request.from_grpc))
            outputs.append(out)
        return InferResponse(response_id=request.id or "", model_name=self.name, infer_outputs=outputs,
                             model_version=self.version, use_binary_outputs=request.use_binary_outputs)

    def _v1_response(self, req: RerankRequest, result: RerankResult) -> dict:
        predictions = [{"ranking": r.tolist(), "scores": [float(s) for s in sc], "fallback": bool(fb),
                        "model_version": self.version}
                       for r, sc, fb in zip(result.ranking, result.scores, result.fallback, strict=True)]
        return {"id": req.request_id, "predictions": predictions} if req.request_id else {"predictions": predictions}
