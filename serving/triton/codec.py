"""Contract tensors <-> re-ranker arguments, shared by the Triton model and its client (numpy only).

The Triton Python model checks what Triton itself cannot (Triton already checks names, dtypes and ranks):
row counts that disagree, empty or oversized rows, duplicate or negative candidate ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HISTORY_PAD = -1  # `history` padding value (contract: most recent last, -1 = padding)


class RequestError(ValueError):
    """A request whose tensors break the contract; the message names the problem."""


def read_request(candidates: np.ndarray, user_id: np.ndarray, history: np.ndarray | None,
                 max_candidates: int) -> tuple[np.ndarray, list[list[int]]]:
    """Validate the contract inputs and return ``candidates [B, K]`` and each row's history (oldest first)."""
    cands = np.asarray(candidates)
    if cands.ndim != 2:
        raise RequestError(f"candidates must have shape [B, K], got {list(cands.shape)}")
    b, k = cands.shape
    if b == 0 or k == 0:
        raise RequestError(f"candidates must have at least one row and one column, got {list(cands.shape)}")
    if k > max_candidates:
        raise RequestError(f"candidates rows have {k} items, more than the maximum of {max_candidates}")
    users = np.asarray(user_id).reshape(-1)
    if len(users) != b:
        raise RequestError(f"user_id has {len(users)} entries but candidates has {b} rows")
    for r, row in enumerate(cands.tolist()):
        if min(row) < 0:
            raise RequestError(f"candidates row {r} has a negative item id: {min(row)}")
        if len(set(row)) != k:
            dupes = sorted({c for c in row if row.count(c) > 1})
            raise RequestError(f"candidates row {r} has duplicate item ids: {dupes}")
    if (users < 0).any():
        raise RequestError(f"user_id has a negative id: {int(users.min())}")
    if history is None:
        return cands.astype(np.int64), [[] for _ in range(b)]
    hist = np.asarray(history)
    if hist.ndim != 2 or hist.shape[0] != b:
        raise RequestError(f"history must have shape [B, H] with B = {b}, got {list(hist.shape)}")
    if (hist < HISTORY_PAD).any():
        raise RequestError(f"history has an id below the padding value {HISTORY_PAD}: {int(hist.min())}")
    return cands.astype(np.int64), [[int(h) for h in row if h != HISTORY_PAD] for row in hist.tolist()]


def pad_histories(histories: Sequence[Sequence[int]]) -> np.ndarray:
    """Histories of any lengths as one ``[B, H]`` int64 array, left-padded with -1 (most recent last)."""
    width = max((len(h) for h in histories), default=0)
    out = np.full((len(histories), max(width, 1)), HISTORY_PAD, dtype=np.int64)
    for r, h in enumerate(histories):
        if len(h):
            out[r, width - len(h):] = np.asarray(h, dtype=np.int64)
    return out
