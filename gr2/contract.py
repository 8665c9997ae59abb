"""Names shared by the pipeline, the KServe server, the Triton export and the Helm chart.

One place for them, so that a test can read both sides (what the code serves and what the chart
renders) and fail when they drift apart.
"""

from __future__ import annotations

from gr2 import __version__

# Parameters that control the container image every component and server runs
IMAGE_REPOSITORY = "ghcr.io/gr2-mlops/gr2"  # built from the root Dockerfile
IMAGE_TAG = __version__
IMAGE = f"{IMAGE_REPOSITORY}:{IMAGE_TAG}"

# Parameters that control the inference contract (Open Inference Protocol v2 + KServe v1)
MODEL_NAME = "gr2-reranker"
HTTP_PORT = 8080  # KServe REST (v1, v2) and /metrics
GRPC_PORT = 8081  # KServe / Triton gRPC (v2)
TRITON_HTTP_PORT = 8000
TRITON_GRPC_PORT = 8001
TRITON_METRICS_PORT = 8002
INPUTS: dict[str, tuple[str, list[int]]] = {  # name -> (datatype, shape); -1 = variable
    "candidates": ("INT64", [-1, -1]),  # [B, K] incoming order
    "user_id": ("INT64", [-1]),  # [B]
    "history": ("INT64", [-1, -1]),  # [B, H], optional, most recent last, -1 = padding
}
OPTIONAL_INPUTS = frozenset({"history"})
OUTPUTS: dict[str, tuple[str, list[int]]] = {
    "ranking": ("INT64", [-1, -1]),  # [B, K] a permutation of each row's candidates
    "scores": ("FP32", [-1, -1]),  # [B, K] aligned with ranking
    "fallback": ("BOOL", [-1]),  # [B] incoming order returned (timeout, backend error, unknown items)
    "model_version": ("BYTES", [-1]),  # [B]
}
DIAGNOSTIC_OUTPUTS: dict[str, tuple[str, list[int]]] = {  # Triton backend extras, for the server's counters
    "unknown_items": ("INT64", [-1]),  # [B] candidates the catalog or the vocabulary does not know
    "invalid": ("BOOL", [-1]),  # [B] the decoded reply did not parse as a valid ranking
}
READY_PATH = f"/v2/models/{MODEL_NAME}/ready"
SERVER_READY_PATH = "/v2/health/ready"

# Parameters that control the feature store and the pipeline
FEAST_SERVER_PORT = 6566  # `feast serve` default
REDIS_PORT = 6379
PIPELINE_NAME = "gr2"

# Parameters that control the serving metrics (prometheus-client, labels model_name and model_version);
# the Helm chart's Grafana dashboard and PodMonitor read exactly these names
METRIC_REQUESTS = "gr2_requests_total"  # counter
METRIC_FALLBACKS = "gr2_fallbacks_total"  # counter: incoming order returned
METRIC_INVALID_OUTPUTS = "gr2_invalid_outputs_total"  # counter: model output not a permutation
METRIC_IDENTITY_OUTPUTS = "gr2_identity_outputs_total"  # counter: model returned the incoming order
METRIC_UNKNOWN_ITEMS = "gr2_unknown_items_total"  # counter: candidates missing from the SID map
METRIC_REQUEST_SECONDS = "gr2_request_seconds"  # histogram
METRIC_PHASE_SECONDS = "gr2_phase_seconds"  # histogram with label phase in METRIC_PHASES
METRIC_PHASES = ("feature_fetch", "prompt_build", "model", "parse")
