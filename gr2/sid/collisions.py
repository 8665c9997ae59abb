"""Deterministic collision resolution, and the seeded hash behind the random last level.

After quantization several items may share a full code tuple (identical texts always do). Resolution
walks the levels top-down. At level ``l`` every code heads a subtree with room for ``K^(L-1-l)``
items; items keep their code while its subtree has room, served in priority order (best-fitting
first: smallest quantization error, then smallest item id; items of an existing map first of all).
An item that does not fit takes the next code in its own order of preference (nearest codeword of its
residual; a seeded permutation on the random level) whose subtree still has room, and its deeper
codes are re-derived under the new prefix. On the last level the room is one item, so the final map is
unique; an item moves only as far up as needed (almost always just its last code). Everything is
vectorised by rounds, so a million items resolve in seconds, and the result depends only on the
codes, the preferences and the priority order: a fixed seed gives a fixed map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on uint64 arrays (a fast, well-mixed, portable hash)."""
    with np.errstate(over="ignore"):
        z = (np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def item_hash(item_ids: np.ndarray, seed: int) -> np.ndarray:
    """A uint64 hash of each item id under ``seed`` (platform-independent)."""
    ids = np.asarray(item_ids, dtype=np.int64).view(np.uint64)
    return splitmix64(ids ^ splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF)))


def random_codes(item_ids: np.ndarray, codebook_size: int, seed: int) -> np.ndarray:
    """The random last level: a uniform code per item id, fixed by ``seed``.

    >>> random_codes(np.array([1, 2, 3]), 256, seed=0).tolist() == random_codes(np.array([1, 2, 3]), 256, 0).tolist()
    True
    """
    return (item_hash(item_ids, seed) % np.uint64(codebook_size)).astype(np.int64)


def random_preferences(item_ids: np.ndarray, codebook_size: int, seed: int, width: int | None = None) -> np.ndarray:
    """Per item, the first ``width`` codes of a seeded full cycle that starts at its random code.

    Row ``i`` is ``(start_i + step_i * j) mod K`` for ``j = 0..width-1`` with ``step_i`` coprime to ``K``,
    so a full row lists every code once and its first entry is :func:`random_codes`.

    >>> row = random_preferences(np.array([7]), 8, seed=1)[0]
    >>> sorted(row.tolist()) == list(range(8)), int(row[0]) == int(random_codes(np.array([7]), 8, 1)[0])
    (True, True)
    """
    k = codebook_size
    width = k if width is None else min(width, k)
    h = item_hash(np.asarray(item_ids, dtype=np.int64), seed)
    start = (h % np.uint64(k)).astype(np.int64)
    step = (1 + ((h >> np.uint64(32)) % np.uint64(max(k - 1, 1)))).astype(np.int64)
    if k & (k - 1) == 0:  # power of two: odd steps are coprime
        step |= 1
        step = np.where(step >= k, 1, step) if k > 1 else step
    else:
        step = np.array([_coprime(int(s), k) for s in step], dtype=np.int64)
    return (start[:, None] + step[:, None] * np.arange(width, dtype=np.int64)[None, :]) % k


def _coprime(step: int, k: int) -> int:
    while math.gcd(step, k) != 1:
        step += 1
    return step


def pack(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """One integer per code tuple (row); int64 when it fits, Python ints (object) otherwise."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim == 1:
        codes = codes[:, None]
    if codebook_size ** codes.shape[1] < 2 ** 62:
        out = np.zeros(len(codes), dtype=np.int64)
        for j in range(codes.shape[1]):
            out = out * codebook_size + codes[:, j]
        return out
    out = np.zeros(len(codes), dtype=object)
    for j in range(codes.shape[1]):
        out = out * codebook_size + codes[:, j].astype(object)
    return out


def uniqueness(codes: np.ndarray) -> float:
    """Distinct code tuples / items (1.0 = every item has its own SID).

    >>> uniqueness(np.array([[0, 1], [0, 1], [2, 3], [4, 5]]))
    0.75
    """
    codes = np.asarray(codes)
    if len(codes) == 0:
        return 1.0
    return len(np.unique(codes, axis=0)) / len(codes)


class PreferenceSource(Protocol):
    """``prefs(rows, level, prefix, width) -> (m, width)``: each row's codes at ``level`` under ``prefix``
    (its codes on levels ``0..level-1``, shape ``(m, level)``), best first."""

    def __call__(self, rows: np.ndarray, level: int, prefix: np.ndarray, width: int) -> np.ndarray: ...


class CodebookPreferences:
    """Preferences from residual quantization: nearest codewords of the residual left by the prefix.

    Levels at or beyond ``len(codebooks)`` are random levels (seeded permutations of the item ids).
    """

    def __init__(self, latent: np.ndarray, codebooks: list[np.ndarray], codebook_size: int,
                 item_ids: np.ndarray | None = None, seed: int = 0, chunk: int = 65536):
        self.latent = latent
        self.codebooks = [np.asarray(b, dtype=np.float32) for b in codebooks]
        self.norms = [(b.astype(np.float64) ** 2).sum(1).astype(np.float32) for b in self.codebooks]
        self.k, self.item_ids, self.seed, self.chunk = codebook_size, item_ids, seed, chunk

    def __call__(self, rows: np.ndarray, level: int, prefix: np.ndarray, width: int) -> np.ndarray:
        import torch

        width = min(width, self.k)
        if level >= len(self.codebooks):
            assert self.item_ids is not None, "random levels need item ids"
            return random_preferences(self.item_ids[rows], self.k, self.seed, width)
        out = np.empty((len(rows), width), dtype=np.int64)
        book, norm = torch.from_numpy(self.codebooks[level]), torch.from_numpy(self.norms[level])
        for s in range(0, len(rows), self.chunk):
            r = self.latent[rows[s:s + self.chunk]].astype(np.float32, copy=True)
            for j in range(level):
                r -= self.codebooks[j][prefix[s:s + self.chunk, j]]
            dist = norm[None, :] - 2 * torch.from_numpy(r) @ book.T  # ||r||^2 is constant per row
            if width >= self.k:
                out[s:s + len(r)] = np.argsort(dist.numpy(), axis=1)  # introsort: 4x torch.sort here
            else:
                out[s:s + len(r)] = torch.topk(dist, width, dim=1, largest=False, sorted=True).indices.numpy()
        return out


class _Occupancy:
    """How many rows sit under each packed prefix key: a dense counter when the key space is small
    enough (fast indexing), else sorted arrays (vectorised searchsorted)."""

    DENSE_LIMIT = 1 << 25

    def __init__(self, key_space: int) -> None:
        self.dense = np.zeros(key_space, dtype=np.int32) if key_space <= self.DENSE_LIMIT else None
        self.keys = np.empty(0, dtype=np.int64)
        self.counts = np.empty(0, dtype=np.int64)

    def get(self, keys: np.ndarray) -> np.ndarray:
        if self.dense is not None:
            return self.dense[keys]
        if len(self.keys) == 0 or len(keys) == 0:
            return np.zeros(len(keys), dtype=np.int64)
        pos = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
        return np.where(self.keys[pos] == keys, self.counts[pos], 0)

    def add(self, keys: np.ndarray) -> None:
        if len(keys) == 0:
            return
        if self.dense is not None:
            self.dense += np.bincount(keys, minlength=len(self.dense)).astype(np.int32)
            return
        merged = np.concatenate([self.keys, keys])
        weights = np.concatenate([self.counts, np.ones(len(keys), dtype=np.int64)])
        self.keys, inverse = np.unique(merged, return_inverse=True)
        self.counts = np.bincount(inverse.ravel(), weights=weights, minlength=len(self.keys)).astype(np.int64)


def _preference_matrix(prefs: PreferenceSource, rows: np.ndarray, level: int, prefix: np.ndarray, k: int,
                       chunk: int = 65536) -> np.ndarray:
    """All ``k`` codes per row in preference order, in the smallest integer type that holds them."""
    dtype = np.uint8 if k <= 256 else (np.uint16 if k <= 65536 else np.int64)
    out = np.empty((len(rows), k), dtype=dtype)
    for s in range(0, len(rows), chunk):
        out[s:s + chunk] = prefs(rows[s:s + chunk], level, prefix[s:s + chunk], k)
    return out


def _first_free(options: np.ndarray, pointer: np.ndarray, slot: np.ndarray, parent: np.ndarray,
                occupancy: _Occupancy, room: int, k: int, window: int) -> np.ndarray:
    """For each pending row (``slot`` into ``options``), its first preferred code with room left.

    Scans forward from the row's cursor ``pointer`` in windows; codes found full stay full (rooms only
    fill up), so cursors only move forward.
    """
    choice = np.full(len(slot), -1, dtype=np.int64)
    todo = np.arange(len(slot))
    while len(todo):
        rows = slot[todo]
        start = pointer[rows]
        cols = np.minimum(start[:, None] + np.arange(window)[None, :], k - 1)
        codes = options[rows[:, None], cols].astype(np.int64)
        has = (room - occupancy.get((parent[todo, None] * k + codes).ravel()).reshape(codes.shape)) > 0
        first = has.argmax(1)
        ok = has[np.arange(len(todo)), first]
        if (~ok & (start + window >= k)).any():  # cannot happen: the parent subtree had room for its rows
            raise RuntimeError("collision resolution found no free code")
        pointer[rows[ok]] = start[ok] + first[ok]
        choice[todo[ok]] = codes[np.arange(len(todo)), first][ok]
        pointer[rows[~ok]] = start[~ok] + window
        todo = todo[~ok]
    return choice


@dataclass
class Resolution:
    """Codes after resolution and which rows moved."""

    codes: np.ndarray
    moved: np.ndarray  # bool (n,)
    rounds: int = 0

    @property
    def n_moved(self) -> int:
        return int(self.moved.sum())


def resolve_collisions(codes: np.ndarray, order: np.ndarray, codebook_size: int, prefs: PreferenceSource,
                       fixed: np.ndarray | None = None, window: int = 16) -> Resolution:
    """Make every row's code tuple unique (see the module docstring for the rule).

    ``order`` ranks rows (a permutation; earlier = served first). Rows flagged in ``fixed`` (e.g. items
    of an existing map) never move. Raises ValueError when the code space is smaller than the number of
    rows or two fixed rows collide.
    """
    original = np.asarray(codes, dtype=np.int64)
    n, levels = original.shape
    k = codebook_size
    if n > k ** levels:
        raise ValueError(f"{n} items cannot be unique with {levels} levels of {k} codes")
    fixed = np.zeros(n, dtype=bool) if fixed is None else np.asarray(fixed, dtype=bool)
    full = pack(original, k)
    if len(np.unique(full)) == n:
        return Resolution(original.copy(), np.zeros(n, dtype=bool))
    if len(np.unique(full[fixed])) != int(fixed.sum()):
        raise ValueError("two fixed (existing) items share a SID; the existing map is not unique")
    if k ** levels >= 2 ** 62:
        raise ValueError(f"codebook_size^levels = {k}^{levels} is too large to pack (use fewer levels)")
    final = original.copy()
    changed = np.zeros(n, dtype=bool)  # a code above the current level differs from the original
    order = np.asarray(order)
    queue = order[~fixed[order]]  # free rows in priority order
    rounds = 0
    for level in range(levels):
        room = k ** (levels - 1 - level)
        parent = pack(final[:, :level], k) if level else np.zeros(n, dtype=np.int64)
        occupancy = _Occupancy(k ** (level + 1))
        occupancy.add(parent[fixed] * k + final[fixed, level])
        redo = queue[changed[queue]]
        if len(redo):  # a new prefix: the nearest code under it
            final[redo, level] = prefs(redo, level, final[redo, :level], 1)[:, 0]
        pending, candidate = queue, final[queue, level]
        options = pointer = None  # preference matrix of the rows rejected in the first round, and their cursor
        slot = np.empty(0, dtype=np.int64)  # row of ``options`` for each pending row
        while len(pending):
            rounds += 1
            keys = parent[pending] * k + candidate
            by_key = np.argsort(keys, kind="stable")  # pending is in priority order: stable keeps it per key
            sorted_keys = keys[by_key]
            head = np.ones(len(sorted_keys), dtype=bool)
            head[1:] = sorted_keys[1:] != sorted_keys[:-1]
            starts = np.maximum.accumulate(np.where(head, np.arange(len(head)), 0))
            fits = (np.arange(len(head)) - starts) < (room - occupancy.get(sorted_keys))
            accepted = by_key[fits]
            final[pending[accepted], level] = candidate[accepted]
            occupancy.add(sorted_keys[fits])
            rejected = np.sort(by_key[~fits])
            if not len(rejected):
                break
            if options is None:  # first rejection at this level: every code in preference order, once
                pending = pending[rejected]
                options = _preference_matrix(prefs, pending, level, final[pending, :level], k)
                pointer = np.zeros(len(pending), dtype=np.int64)
                slot = np.arange(len(pending))
            else:
                pending, slot = pending[rejected], slot[rejected]
            changed[pending] = True
            candidate = _first_free(options, pointer, slot, parent[pending], occupancy, room, k, window)
    # every row now has a unique full tuple
    moved = (final != original).any(1)
    return Resolution(final, moved, rounds)
