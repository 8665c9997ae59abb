"""Triton Python-backend model ``gr2-reranker``; ``gr2 export triton`` copies this file to ``<repo>/<model>/1/model.py``.

``initialize`` reads ``model.yaml`` beside it, puts the gr2 source on ``sys.path`` and loads the serving
bundle with the shared core (:class:`gr2.models.reranker.Reranker`); ``execute`` converts tensors and
calls it. A request may choose the mode with the request parameter ``mode`` (score, generate, reason).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Triton Python backend stub
import yaml


class TritonPythonModel:
    """One loaded re-ranker per model instance."""

    def initialize(self, args: dict) -> None:
        here = Path(args["model_repository"]) / args["model_version"]
        self.settings = yaml.safe_load((here / "model.yaml").read_text())
        source = self.settings.get("gr2_source")
        if source and source not in sys.path:
            sys.path.insert(0, source)
        import torch

        from gr2.models.reranker import Reranker, RerankError
        from serving.triton.codec import RequestError, read_request

        torch.set_num_threads(int(self.settings.get("torch_threads", 1)))
        bundle = Path(self.settings["bundle"])
        self.reranker = Reranker.from_bundle(bundle if bundle.is_absolute() else here / bundle,
                                             think_tokens=int(self.settings.get("think_tokens", 64)))
        self.bad_input = (RequestError, RerankError)
        self.read_request = read_request
        self.version = np.asarray([self.reranker.model_version.encode()], dtype=np.object_)

    def execute(self, requests: list) -> list:
        return [self._answer(request) for request in requests]

    def _answer(self, request) -> pb_utils.InferenceResponse:
        def tensor(name: str) -> np.ndarray | None:
            found = pb_utils.get_input_tensor_by_name(request, name)
            return None if found is None else found.as_numpy()

        try:
            mode = json.loads(request.parameters() or "{}").get("mode", self.settings.get("mode", "score"))
            cands, histories = self.read_request(tensor("candidates"), tensor("user_id"), tensor("history"),
                                                 int(self.settings.get("max_candidates", 50)))
            out = self.reranker.rerank(cands, histories, mode)
        except self.bad_input as err:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG))
        rows = len(cands)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("ranking", out.ranking.astype(np.int64)),
            pb_utils.Tensor("scores", out.scores.astype(np.float32)),
            pb_utils.Tensor("fallback", out.fallback.astype(bool)),
            pb_utils.Tensor("model_version", np.repeat(self.version, rows)),
            pb_utils.Tensor("unknown_items", out.unknown_items.astype(np.int64)),
            pb_utils.Tensor("invalid", out.invalid.astype(bool)),
        ])
