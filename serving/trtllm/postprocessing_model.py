"""Triton Python model ``postprocessing`` of the TensorRT-LLM ensemble (copied to ``postprocessing/1/model.py``).

The engine's generated tokens in (``TOKENS_BATCH``, ``SEQUENCE_LENGTH``) with the request's ``candidates``;
the contract outputs out (``ranking``, ``scores``, ``fallback``, ``model_version``), parsed by the gr2 parser.
"""

from __future__ import annotations

import sys

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Triton Python backend stub


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import json

        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        if params.get("gr2_source") and params["gr2_source"] not in sys.path:
            sys.path.insert(0, params["gr2_source"])
        from serving.trtllm.pipeline import RerankText

        self.text = RerankText.from_dir(params["tokenizer_dir"])
        self.version = np.asarray([self.text.manifest.model_version.encode()], dtype=np.object_)

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            def tensor(name: str, request=request) -> np.ndarray:
                return pb_utils.get_input_tensor_by_name(request, name).as_numpy()

            cands = tensor("candidates")
            out = self.text.read(cands, tensor("TOKENS_BATCH"), tensor("SEQUENCE_LENGTH"))
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("ranking", out.ranking), pb_utils.Tensor("scores", out.scores),
                pb_utils.Tensor("fallback", out.fallback), pb_utils.Tensor("model_version", np.repeat(self.version, len(cands))),
                pb_utils.Tensor("unknown_items", out.unknown_items), pb_utils.Tensor("invalid", out.invalid)]))
        return responses
