"""Prometheus metrics of the re-ranker (names fixed: the Helm chart's dashboard reads them)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LABELS = ("model_name", "model_version")
PHASES = ("feature_fetch", "prompt_build", "model", "parse")
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter("gr2_requests_total", "Inference requests received (bad ones included).", LABELS)
FALLBACKS = Counter("gr2_fallbacks_total", "Rows answered (partly) in incoming order: unknown items, "
                                           "timeout or backend error.", LABELS)
INVALID_OUTPUTS = Counter("gr2_invalid_outputs_total", "Rows whose decoded reply did not parse as a valid "
                                                       "ranking.", LABELS)
IDENTITY_OUTPUTS = Counter("gr2_identity_outputs_total", "Rows whose ranking equals the incoming order.", LABELS)
UNKNOWN_ITEMS = Counter("gr2_unknown_items_total", "Candidates the catalog or the model does not know.", LABELS)
PHASE_SECONDS = Histogram("gr2_phase_seconds", "Time per request phase.", (*LABELS, "phase"), buckets=_BUCKETS)
REQUEST_SECONDS = Histogram("gr2_request_seconds", "Time per answered request.", LABELS, buckets=_BUCKETS)
