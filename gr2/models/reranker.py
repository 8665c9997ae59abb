"""The backend-independent re-ranker that KServe and Triton both call: a serving bundle in, rankings out.

Modes: ``score`` (each candidate's log-probability of being the first item of the answer-only reply, or of
being the next item in the next-item prompt when the manifest's ``score_prompt`` says so; one forward pass),
``generate`` (answer-only reply, decoded under :mod:`gr2.models.constrained`), ``reason``
(``<think>`` block, then the constrained ranking). Prompts come from :func:`gr2.rerank.format.build_messages`
and replies are read by :func:`gr2.rerank.format.parse_ranking`, exactly as in training.

Items the catalog (or the model's vocabulary) does not know keep their incoming position; the other
candidates are re-ranked in the remaining slots, and the row is flagged (``fallback``, ``unknown_items``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from gr2.models.bundle import ServingManifest, read_manifest
from gr2.models.constrained import DecodingTokens, constrained_generate
from gr2.models.factory import LoadedModel, load_model
from gr2.models.scoring import render_prompt
from gr2.rerank.format import build_messages, candidate_labels, parse_ranking
from gr2.train.evaluate import next_item_questions, rerank_likelihood_questions, score_questions

Mode = Literal["score", "generate", "reason"]
MODES: tuple[str, ...] = ("score", "generate", "reason")
UNSCORED = -1e9  # score of an item the model did not rank (unknown item, fallback row)
_SID_TOKEN = re.compile(r"<s_[a-z]+_\d+>|<i_\d+>")


class RerankError(ValueError):
    """Inputs the re-ranker cannot take (bad shapes, unknown mode)."""


class ItemCatalog:
    """What prompts say about items: a table (title, categories, year) and each item's SID token string."""

    def __init__(self, items: pd.DataFrame, sids: Mapping[int, str] | None) -> None:
        table = items if items.index.name == "item_id" else items.drop_duplicates("item_id").set_index("item_id")
        self.items = table
        self.sids = {int(k): str(v) for k, v in sids.items() if v} if sids is not None else None

    def token_string(self, item_id: int) -> str:
        assert self.sids is not None
        return self.sids[int(item_id)]

    def knows(self, item_id: int) -> bool:
        return item_id in self.items.index and (self.sids is None or item_id in self.sids)


@dataclass(frozen=True)
class RerankResult:
    """One row per request row; ``ranking`` and ``scores`` are aligned (best first)."""

    ranking: np.ndarray  # [B, K] int64, a permutation of each row's candidates
    scores: np.ndarray  # [B, K] float32, higher is better; UNSCORED for unranked items
    fallback: np.ndarray  # [B] bool: incoming order kept for some items (unknown items)
    unknown_items: np.ndarray  # [B] int64: candidates the catalog or the vocabulary does not know
    invalid: np.ndarray  # [B] bool: the decoded reply did not parse as a valid ranking
    identity: np.ndarray  # [B] bool: the ranking equals the incoming order
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase: prompt_build, model, parse


@contextmanager
def _timed(timings: dict[str, float], phase: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - start


class Reranker:
    """A loaded model, its catalog and prompt settings; :meth:`rerank` is the whole serving computation."""

    def __init__(self, lm: LoadedModel, catalog: ItemCatalog, manifest: ServingManifest,
                 think_tokens: int = 64, item_names: Mapping[int, str] | None = None) -> None:
        self.lm, self.catalog, self.manifest = lm, catalog, manifest
        # Item names of a model trained with item tokens (train.model.item_tokens != sid): they replace the
        # plain SIDs a feature store serves, since the model's vocabulary names items its own way.
        self.item_names = dict(item_names) if item_names is not None else None
        self.think_tokens = think_tokens
        self._vocab = lm.tokenizer.get_vocab()
        self._tokens = DecodingTokens.of(lm.tokenizer, think_tokens)

    @classmethod
    def from_bundle(cls, path: str | Path, think_tokens: int = 64) -> Reranker:
        """Load a serving bundle written by :func:`gr2.models.bundle.write_serving_bundle`."""
        from gr2.sid.sidmap import SIDMap

        root = Path(path)
        manifest = read_manifest(root)
        sid_map = SIDMap.load(root / "sid_map.parquet")
        lm = load_model(root, sid_map.all_tokens())
        lm.model.eval()
        sids = {i: sid_map.token_string(i) for i in sid_map.item_ids} if manifest.with_sids else None
        names = sids if sid_map.item_tokens != "sid" else None
        return cls(lm, ItemCatalog(pd.read_parquet(root / "items.parquet"), sids), manifest, think_tokens, names)

    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    def _known(self, item_id: int, catalog: ItemCatalog) -> bool:
        if not catalog.knows(item_id):
            return False
        if catalog.sids is None:
            return True
        return all(t in self._vocab for t in _SID_TOKEN.findall(catalog.sids[item_id]))

    def rerank(self, candidates: np.ndarray, histories: Sequence[Sequence[int]], mode: Mode = "score",
               catalog: ItemCatalog | None = None) -> RerankResult:
        """Re-rank each row of ``candidates`` [B, K] given each user's history (oldest first)."""
        cands = np.asarray(candidates)
        if cands.ndim != 2 or cands.shape[1] == 0:
            raise RerankError(f"candidates must have shape [B, K] with K >= 1, got {list(cands.shape)}")
        if len(histories) != len(cands):
            raise RerankError(f"{len(cands)} candidate rows but {len(histories)} histories")
        if mode not in MODES:
            raise RerankError(f"mode must be one of {list(MODES)}, got {mode!r}")
        catalog = catalog or self.catalog
        if self.item_names is not None and catalog.sids is not None and catalog is not self.catalog:
            names = self.item_names
            catalog = ItemCatalog(catalog.items, {i: names[i] for i in catalog.sids if i in names})
        b, k = cands.shape
        ranking, scores = cands.astype(np.int64).copy(), np.full((b, k), UNSCORED, dtype=np.float32)
        unknown = np.zeros(b, dtype=np.int64)
        invalid = np.zeros(b, dtype=bool)
        timings: dict[str, float] = {}
        rows, slots = [], []  # model inputs and the positions of their known candidates
        for r in range(b):
            row = [int(c) for c in cands[r]]
            known = [i for i, c in enumerate(row) if self._known(c, catalog)]
            unknown[r] = k - len(known)
            history = [int(h) for h in histories[r] if int(h) >= 0 and self._known(int(h), catalog)]
            history = history[-self.manifest.history_length:] if self.manifest.history_length else []
            if len(known) == 1:
                scores[r, known[0]] = 0.0
            if len(known) >= 2:
                rows.append({"history": history, "candidates": [row[i] for i in known]})
                slots.append((r, known))
        if rows:
            if mode == "score":
                orders, row_scores = self._score(rows, catalog, timings)
            else:
                orders, row_scores, bad = self._decode(rows, catalog, mode, timings)
                for (r, _), flag in zip(slots, bad, strict=True):
                    invalid[r] = flag
            with _timed(timings, "parse"):
                for (r, known), row, order, sc in zip(slots, rows, orders, row_scores, strict=True):
                    for slot, idx, value in zip(known, order, sc, strict=True):
                        ranking[r, slot] = row["candidates"][idx]
                        scores[r, slot] = value
        identity = (ranking == cands).all(axis=1)
        return RerankResult(ranking, scores, unknown > 0, unknown, invalid, identity, timings)

    def _score(self, rows: list[dict], catalog: ItemCatalog,
               timings: dict[str, float]) -> tuple[list[list[int]], list[np.ndarray]]:
        """Likelihood of each candidate opening the answer: per row the order (indices) and sorted scores."""
        sid_lookup = catalog if catalog.sids is not None else None
        with _timed(timings, "prompt_build"):
            if self.manifest.score_prompt == "next_item" and sid_lookup is not None:
                prompts, conts = next_item_questions(self.lm, sid_lookup, rows, self.manifest.history_length)
            else:
                prompts, conts = rerank_likelihood_questions(self.lm, sid_lookup, rows, catalog.items)
        with _timed(timings, "model"):
            found = score_questions(self.lm, prompts, conts)
        with _timed(timings, "parse"):
            orders = [list(np.argsort(-s, kind="stable")) for s in found]
            return orders, [s[o] for s, o in zip(found, orders, strict=True)]

    @torch.no_grad()
    def _decode(self, rows: list[dict], catalog: ItemCatalog, mode: Mode,
                timings: dict[str, float]) -> tuple[list[list[int]], list[np.ndarray], list[bool]]:
        """Constrained decoding: per row the candidate order (indices), cumulative log-probs, invalid flag."""
        tok = self.lm.tokenizer
        style = "reasoning" if mode == "reason" else "answer"
        sid_lookup = catalog if catalog.sids is not None else None
        with _timed(timings, "prompt_build"):
            prompts = [render_prompt(tok, build_messages(row, catalog.items, sid_lookup, style=style))
                       for row in rows]
            labels_of = [candidate_labels(row["candidates"], sid_lookup) for row in rows]
            automata = [self._tokens.automaton(tok, labels, reasoning=mode == "reason") for labels in labels_of]
        with _timed(timings, "model"):
            decoded = constrained_generate(self.lm.model, prompts, automata, int(tok.pad_token_id),
                                           self._tokens.eos)
        return self._read(rows, labels_of, decoded, timings)

    def _read(self, rows: list[dict], labels_of: list[list[str]],
              decoded: list[tuple[list[int], dict[int, float], int]],
              timings: dict[str, float]) -> tuple[list[list[int]], list[np.ndarray], list[bool]]:
        """Read each decoded answer (the reasoning block left out: its free text may spell labels or tags)
        with the training-time parser."""
        orders, row_scores, bad = [], [], []
        with _timed(timings, "parse"):
            for row, labels, (tokens, item_logp, answer_from) in zip(rows, labels_of, decoded, strict=True):
                text = self.lm.tokenizer.decode(tokens[answer_from:], skip_special_tokens=True)
                parsed = parse_ranking(text, row["candidates"], labels)
                index = {c: i for i, c in enumerate(row["candidates"])}
                order = [index[c] for c in parsed.ranking]
                orders.append(order)
                row_scores.append(np.asarray([item_logp.get(i, UNSCORED) for i in order], dtype=np.float32))
                bad.append(not parsed.valid)
        return orders, row_scores, bad
