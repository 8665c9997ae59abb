"""Read a v1 (``instances``) or v2 (Open Inference Protocol) request into checked arrays.

Every problem raises ``kserve.errors.InvalidInput`` (HTTP 400, gRPC INVALID_ARGUMENT) with a message that
names the input and what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferRequest

from gr2.contract import INPUTS, OPTIONAL_INPUTS
from gr2.models.reranker import MODES
from gr2.models.serve_config import ServeConfig

PADDING = -1  # history padding value


@dataclass(frozen=True)
class RerankRequest:
    """A checked request: ``histories`` is None when the client sent none (the feature store fills it)."""

    candidates: np.ndarray  # [B, K] int64
    user_ids: np.ndarray  # [B] int64
    histories: list[list[int]] | None
    request_id: str
    mode: str | None  # per-request mode override (v2 parameter or header), else None


def _ints(name: str, value: Any, ndim: int) -> np.ndarray:
    """``value`` as an int64 array of ``ndim`` dimensions, or an InvalidInput naming the problem."""
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            array = np.asarray(value)
        except (ValueError, OverflowError) as err:  # ragged nested lists
            raise InvalidInput(f"'{name}': rows of different lengths ({err})") from err
    if array.dtype == object:
        raise InvalidInput(f"'{name}': rows of different lengths or mixed types")
    if array.size and (array.dtype == bool or not np.issubdtype(array.dtype, np.integer)):
        raise InvalidInput(f"'{name}' must hold integers, got {array.dtype.name} values")
    if array.ndim != ndim:
        raise InvalidInput(f"'{name}' must have {ndim} dimension(s), got shape {list(array.shape)}")
    return array.astype(np.int64)


def check(candidates: np.ndarray, user_ids: np.ndarray, history: np.ndarray | None, cfg: ServeConfig) -> None:
    """Contract checks shared by v1 and v2: sizes, duplicates, negative ids."""
    b, k = candidates.shape
    if b == 0:
        raise InvalidInput("'candidates' has no rows")
    if b > cfg.max_batch:
        raise InvalidInput(f"'candidates' has {b} rows, more than serve.max_batch={cfg.max_batch}")
    if k == 0:
        raise InvalidInput("'candidates' rows are empty; send at least one candidate per row")
    if k > cfg.max_candidates:
        raise InvalidInput(f"'candidates' rows have {k} items, more than serve.max_candidates={cfg.max_candidates}")
    if user_ids.shape != (b,):
        raise InvalidInput(f"'user_id' must have shape [{b}] (one per candidate row), got {list(user_ids.shape)}")
    for name, values in (("candidates", candidates), ("user_id", user_ids)):
        if (values < 0).any():
            raise InvalidInput(f"'{name}' holds negative ids {sorted(set(values[values < 0].tolist()))[:5]}")
    for r, row in enumerate(candidates):
        values, counts = np.unique(row, return_counts=True)
        if (counts > 1).any():
            raise InvalidInput(f"'candidates' row {r} has duplicate items {values[counts > 1].tolist()}")
    if history is not None:
        if history.shape[0] != b:
            raise InvalidInput(f"'history' must have {b} rows (one per candidate row), got {history.shape[0]}")
        if history.shape[1] > cfg.max_history:
            raise InvalidInput(f"'history' rows have {history.shape[1]} items, more than "
                               f"serve.max_history={cfg.max_history}")
        if (history < PADDING).any():
            raise InvalidInput(f"'history' holds negative ids other than the padding {PADDING}")


def _histories(history: np.ndarray | None) -> list[list[int]] | None:
    return None if history is None else [[int(h) for h in row if h != PADDING] for row in history]


def _mode(value: Any, source: str) -> str | None:
    if value is None:
        return None
    if value not in MODES:
        raise InvalidInput(f"{source} must be one of {list(MODES)}, got {value!r}")
    return str(value)


def from_v2(request: InferRequest, cfg: ServeConfig, headers: Mapping[str, str]) -> RerankRequest:
    """A v2 request (REST JSON, REST binary or gRPC)."""
    by_name = {}
    for tensor in request.inputs:
        if tensor.name not in INPUTS:
            raise InvalidInput(f"unknown input '{tensor.name}'; expected {sorted(INPUTS)}")
        want = INPUTS[tensor.name][0]
        if tensor.datatype != want:
            raise InvalidInput(f"input '{tensor.name}' must be {want}, got {tensor.datatype}")
        try:
            by_name[tensor.name] = tensor.as_numpy()
        except (ValueError, TypeError, OverflowError) as err:
            raise InvalidInput(f"input '{tensor.name}': data is not {want} or does not fit shape "
                               f"{tensor.shape}: {err}") from err
    missing = [n for n in INPUTS if n not in OPTIONAL_INPUTS and n not in by_name]
    if missing:
        raise InvalidInput(f"missing input(s) {missing}")
    candidates = _ints("candidates", by_name["candidates"], 2)
    user_ids = _ints("user_id", by_name["user_id"], 1)
    history = _ints("history", by_name["history"], 2) if "history" in by_name else None
    check(candidates, user_ids, history, cfg)
    params = request.parameters or {}
    mode = params.get("mode") if isinstance(params, Mapping) else None
    mode = getattr(mode, "string_param", mode)
    return RerankRequest(candidates, user_ids, _histories(history), str(request.id or ""),
                         _mode(mode, "parameter 'mode'") or _mode(headers.get("x-gr2-mode"), "header x-gr2-mode"))


def from_v1(body: Any, cfg: ServeConfig, headers: Mapping[str, str]) -> RerankRequest:
    """A v1 request: ``{"instances": [{"user_id": 1, "candidates": [...], "history": [...]}]}``."""
    if not isinstance(body, Mapping) or "instances" not in body:
        raise InvalidInput("v1 body must be a JSON object with an 'instances' list")
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise InvalidInput("'instances' must be a non-empty list")
    rows: dict[str, list[Any]] = {"candidates": [], "user_id": [], "history": []}
    for i, inst in enumerate(instances):
        if not isinstance(inst, Mapping):
            raise InvalidInput(f"instance {i} must be an object with 'user_id' and 'candidates'")
        unknown = sorted(set(inst) - set(INPUTS))
        if unknown:
            raise InvalidInput(f"instance {i} has unknown field(s) {unknown}; expected {sorted(INPUTS)}")
        for name in ("candidates", "user_id"):
            if name not in inst:
                raise InvalidInput(f"instance {i} is missing '{name}'")
        rows["candidates"].append(_ints(f"instances[{i}].candidates", inst["candidates"], 1))
        rows["user_id"].append(_ints(f"instances[{i}].user_id", inst["user_id"], 0))
        if "history" in inst:
            rows["history"].append(_ints(f"instances[{i}].history", inst["history"], 1))
    lengths = {len(c) for c in rows["candidates"]}
    if len(lengths) > 1:
        raise InvalidInput(f"'candidates' rows of different lengths {sorted(lengths)}; send one length per request")
    candidates = np.stack(rows["candidates"]) if lengths != {0} else np.zeros((len(instances), 0), np.int64)
    user_ids = np.asarray([int(u) for u in rows["user_id"]], dtype=np.int64)
    if rows["history"] and len(rows["history"]) != len(instances):
        raise InvalidInput("'history' must be given for every instance or for none")
    history = _pad(rows["history"]) if rows["history"] else None
    check(candidates, user_ids, history, cfg)
    return RerankRequest(candidates, user_ids, _histories(history), str(body.get("id", "")),
                         _mode(headers.get("x-gr2-mode"), "header x-gr2-mode"))


def _pad(rows: Sequence[np.ndarray]) -> np.ndarray:
    """Left-pad history rows with -1 (most recent last) to one width."""
    width = max(len(r) for r in rows)
    out = np.full((len(rows), width), PADDING, dtype=np.int64)
    for i, row in enumerate(rows):
        if len(row):
            out[i, width - len(row):] = row
    return out
