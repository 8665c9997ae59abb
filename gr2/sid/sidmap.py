"""The SID map: item id <-> code tuple <-> token string (``<s_a_12><s_b_201><s_c_7>``).

``item_tokens`` chooses how the LM names items: ``sid`` (the code tokens), ``item`` (one ``<i_N>`` token
per item id, no sharing between items) or ``sid+item`` (the code tokens followed by the item token).
Stored as ``sid_map.parquet`` with columns ``item_id`` (int64), ``codes`` (list<int64>) and ``sid``
(string); ``levels`` and ``codebook_size`` travel in the Parquet schema metadata.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

LEVEL_LETTERS = string.ascii_lowercase
ITEM_TOKEN_MODES = ("sid", "item", "sid+item")
_META_KEY = b"gr2.sid"
_TOKEN = re.compile(r"<s_([a-z])_(\d+)>")
_ITEM_TOKEN = re.compile(r"<i_(\d+)>$")


def item_token(item_id: int) -> str:
    """The vocabulary token of one item id.

    >>> item_token(42)
    '<i_42>'
    """
    return f"<i_{int(item_id)}>"


def token(level: int, code: int) -> str:
    """The vocabulary token of ``code`` at ``level`` (0-based).

    >>> token(0, 12), token(2, 7)
    ('<s_a_12>', '<s_c_7>')
    """
    return f"<s_{LEVEL_LETTERS[level]}_{int(code)}>"


def token_string(codes: Iterable[int]) -> str:
    """``<s_a_12><s_b_201><s_c_7>`` for codes ``(12, 201, 7)``."""
    return "".join(token(level, code) for level, code in enumerate(codes))


def parse_token_string(text: str) -> tuple[int, ...] | None:
    """Codes of a well-formed token string (levels a, b, c... in order), else None.

    >>> parse_token_string("<s_a_12><s_b_201><s_c_7>"), parse_token_string("<s_b_1>")
    ((12, 201, 7), None)
    """
    text = text.strip()
    matches = list(_TOKEN.finditer(text))
    if not matches or "".join(m.group(0) for m in matches) != text:
        return None
    if [m.group(1) for m in matches] != list(LEVEL_LETTERS[: len(matches)]):
        return None
    return tuple(int(m.group(2)) for m in matches)


class SIDMap:
    """Item ids and their code tuples (one row each; every tuple distinct once resolved)."""

    def __init__(self, item_ids: Iterable[int], codes: np.ndarray, codebook_size: int, item_tokens: str = "sid"):
        if item_tokens not in ITEM_TOKEN_MODES:
            raise ValueError(f"SIDMap: item_tokens must be one of {list(ITEM_TOKEN_MODES)}, got {item_tokens!r}")
        self.item_tokens = item_tokens
        self._ids = np.asarray(list(item_ids) if not isinstance(item_ids, np.ndarray) else item_ids, dtype=np.int64)
        codes = np.asarray(codes, dtype=np.int64)
        self._codes = codes if codes.ndim == 2 else codes.reshape(len(self._ids), -1)
        if len(self._codes) != len(self._ids):
            raise ValueError(f"SIDMap: {len(self._ids)} item ids but {len(self._codes)} code rows")
        if len(np.unique(self._ids)) != len(self._ids):
            raise ValueError("SIDMap: item ids must be unique")
        if self._codes.size and (self._codes.min() < 0 or self._codes.max() >= codebook_size):
            raise ValueError(f"SIDMap: codes must lie in [0, {codebook_size})")
        if self._codes.shape[1] > len(LEVEL_LETTERS):
            raise ValueError(f"SIDMap: at most {len(LEVEL_LETTERS)} levels")
        self.codebook_size = int(codebook_size)
        self.levels = int(self._codes.shape[1])
        self._row = {int(i): r for r, i in enumerate(self._ids.tolist())}
        self._by_codes: dict[tuple[int, ...], int] = {}
        for r, row in enumerate(self._codes.tolist()):
            self._by_codes.setdefault(tuple(row), int(self._ids[r]))

    # -- lookups -------------------------------------------------------------------------------------
    @property
    def item_ids(self) -> list[int]:
        return self._ids.tolist()

    @property
    def codes_array(self) -> np.ndarray:
        """All code tuples, (n_items, levels), rows in ``item_ids`` order (read-only view)."""
        view = self._codes.view()
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: object) -> bool:
        return int(item_id) in self._row  # type: ignore[call-overload]

    def codes(self, item_id: int) -> tuple[int, ...]:
        """Code tuple of ``item_id`` (KeyError when unknown)."""
        return tuple(int(c) for c in self._codes[self._row[int(item_id)]])

    def token_string(self, item_id: int) -> str:
        """e.g. ``<s_a_12><s_b_201><s_c_7>`` (``item``: ``<i_42>``; ``sid+item``: the SID then ``<i_42>``)."""
        return "".join(self.tokens(item_id))

    def tokens(self, item_id: int) -> list[str]:
        """e.g. ``['<s_a_12>', '<s_b_201>', '<s_c_7>']`` in the map's ``item_tokens`` mode."""
        codes = self.codes(item_id)  # KeyError for unknown items in every mode
        sid = [token(level, c) for level, c in enumerate(codes)] if "sid" in self.item_tokens else []
        return sid + ([item_token(item_id)] if "item" in self.item_tokens else [])

    def item_for(self, sid: str | Iterable[int]) -> int | None:
        """The item with this token string (or code tuple); None when malformed or unused."""
        if not isinstance(sid, str):
            return self._by_codes.get(tuple(int(c) for c in sid))
        text = sid.strip()
        named = _ITEM_TOKEN.search(text) if "item" in self.item_tokens else None
        if named is not None:
            item = int(named.group(1))
            rest = text[: named.start()]
            if item not in self._row or (rest and self.item_for(tuple(parse_token_string(rest) or ())) != item):
                return None
            return item
        codes = parse_token_string(text)
        return None if codes is None else self._by_codes.get(codes)

    def all_tokens(self) -> list[str]:
        """Every token the map's items use: level x code tokens (level-major: a_0..a_{K-1}, b_0, ...) and/or
        one item token per item."""
        sid = ([token(level, c) for level in range(self.levels) for c in range(self.codebook_size)]
               if "sid" in self.item_tokens else [])
        return sid + ([item_token(i) for i in self.item_ids] if "item" in self.item_tokens else [])

    def with_item_tokens(self, mode: str) -> SIDMap:
        """The same map naming items in another ``item_tokens`` mode."""
        return SIDMap(self._ids, self._codes, self.codebook_size, item_tokens=mode)

    def uniqueness(self) -> float:
        return len(self._by_codes) / len(self) if len(self) else 1.0

    # -- storage -------------------------------------------------------------------------------------
    def to_table(self) -> pa.Table:
        table = pa.table({
            "item_id": pa.array(self._ids, type=pa.int64()),
            "codes": pa.array(self._codes.tolist(), type=pa.list_(pa.int64())),
            "sid": pa.array([token_string(row) for row in self._codes.tolist()], type=pa.string()),
        })
        meta = {"levels": self.levels, "codebook_size": self.codebook_size, "item_tokens": self.item_tokens}
        return table.replace_schema_metadata({_META_KEY: json.dumps(meta).encode()})

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.to_table(), path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> SIDMap:
        path = Path(path)
        if path.is_dir():
            path = path / "sid_map.parquet"
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(_META_KEY, b"{}"))
        ids = table.column("item_id").to_numpy().astype(np.int64)
        codes_col = table.column("codes").to_pylist()
        codes = np.array(codes_col, dtype=np.int64).reshape(len(ids), -1)
        size = meta.get("codebook_size")
        if size is None:  # a hand-made file: take sid_config.json beside it, else the largest code + 1
            side = path.parent / "sid_config.json"
            size = json.loads(side.read_text())["codebook_size"] if side.exists() else int(codes.max(initial=0)) + 1
        return cls(ids, codes, int(size), item_tokens=meta.get("item_tokens", "sid"))

    def merged(self, other: SIDMap) -> SIDMap:
        """This map plus the items of ``other`` that it lacks (same levels and codebook size)."""
        if (other.levels, other.codebook_size) != (self.levels, self.codebook_size):
            raise ValueError("SIDMap.merged: maps differ in levels or codebook size")
        new = ~np.isin(other._ids, self._ids)
        return SIDMap(np.concatenate([self._ids, other._ids[new]]),
                      np.concatenate([self._codes, other._codes[new]]), self.codebook_size, self.item_tokens)

    def __repr__(self) -> str:
        mode = "" if self.item_tokens == "sid" else f", item_tokens={self.item_tokens!r}"
        return f"SIDMap(items={len(self)}, levels={self.levels}, codebook_size={self.codebook_size}{mode})"
