"""A real KServe model server with fixed-rule rankers, to run the chart's `helm test` client against.

Not the gr2 predictor: ``gr2-reranker`` answers with the candidates reversed (a valid permutation)
and ``broken-reranker`` repeats the first candidate K times, so that the client's pass and fail paths
both meet KServe's own v2 REST routes and tensor encoding.

    python tests/helm/kserve_ranker.py --http_port 8080
"""

from __future__ import annotations

import argparse
import uuid

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

from gr2.contract import MODEL_NAME

BROKEN_MODEL_NAME = "broken-reranker"


class FixedRuleRanker(Model):
    """Reverses each row of ``candidates`` (or, when broken, repeats its first item)."""

    def __init__(self, name: str, broken: bool) -> None:
        super().__init__(name)
        self.broken = broken
        self.ready = True  # nothing to load

    async def predict(self, payload: InferRequest, headers: dict | None = None,
                      response_headers: dict | None = None) -> InferResponse:
        candidates = payload.get_input_by_name("candidates").as_numpy()
        ranking = np.repeat(candidates[:, :1], candidates.shape[1], axis=1) if self.broken else candidates[:, ::-1]
        output = InferOutput(name="ranking", shape=list(ranking.shape), datatype="INT64",
                             data=np.ascontiguousarray(ranking, dtype=np.int64))
        return InferResponse(response_id=payload.id or str(uuid.uuid4()), model_name=self.name, infer_outputs=[output])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http_port", type=int, required=True)
    args = parser.parse_args()
    ModelServer(http_port=args.http_port, enable_grpc=False, workers=1).start(
        [FixedRuleRanker(MODEL_NAME, broken=False), FixedRuleRanker(BROKEN_MODEL_NAME, broken=True)])
