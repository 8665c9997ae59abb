"""Triton Python model ``preprocessing`` of the TensorRT-LLM ensemble (copied to ``preprocessing/1/model.py``).

Contract tensors in (``candidates``, ``user_id``, optional ``history``), the engine's inputs out (the names of
TensorRT-LLM's ``inflight_batcher_llm/preprocessing``): prompts built by the gr2 training code.
"""

from __future__ import annotations

import sys

import triton_python_backend_utils as pb_utils  # provided by the Triton Python backend stub


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        import json

        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        if params.get("gr2_source") and params["gr2_source"] not in sys.path:
            sys.path.insert(0, params["gr2_source"])
        from serving.triton.codec import RequestError, read_request
        from serving.trtllm.pipeline import RerankText

        self.text = RerankText.from_dir(params["tokenizer_dir"])
        self.max_candidates = int(params.get("max_candidates", "50"))
        self.read_request, self.bad_input = read_request, RequestError

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            def tensor(name: str, request=request):
                found = pb_utils.get_input_tensor_by_name(request, name)
                return None if found is None else found.as_numpy()

            try:
                cands, histories = self.read_request(tensor("candidates"), tensor("user_id"), tensor("history"),
                                                     self.max_candidates)
            except self.bad_input as err:
                error = pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            encoded = self.text.encode(cands, histories)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, a) for n, a in encoded.items()]))
        return responses
