"""The text side of the TensorRT-LLM ensemble: contract tensors -> prompt tokens, engine tokens -> rankings.

``preprocessing`` and ``postprocessing`` (Triton Python models) call :meth:`RerankText.encode` and
:meth:`RerankText.read`; both build prompts, labels and parse answers with the training code
(:func:`gr2.rerank.format.build_messages`, :func:`gr2.models.scoring.render_prompt`,
:func:`gr2.rerank.format.parse_ranking`), as :class:`gr2.models.reranker.Reranker` does. The engine
decodes the answer-only reply greedily (``generate`` mode without the logits constraint), so the parser's
``valid`` flag is reported as ``invalid`` and a broken answer still yields a permutation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gr2.models.bundle import ServingManifest, read_manifest
from gr2.models.reranker import UNSCORED, ItemCatalog, RerankResult
from gr2.models.scoring import encode_plain, render_prompt
from gr2.models.tokenizer import IM_END
from gr2.rerank.format import SEPARATOR, build_messages, candidate_labels, parse_ranking

_SID_TOKEN = re.compile(r"<s_[a-z]+_\d+>")
ANSWER_MARGIN = 4  # tokens allowed beyond the longest well-formed answer (closing tokens, whitespace)


@dataclass(frozen=True)
class RowPlan:
    """One request row: which slots the model ranks, their labels, and the prompt tokens."""

    known: list[int]  # slot indices of candidates the catalog and vocabulary know
    labels: list[str]
    prompt: list[int]
    max_new_tokens: int


class RerankText:
    """Tokenizer (SID tokens included), catalog and manifest of an exported TensorRT-LLM repository."""

    def __init__(self, tokenizer, catalog: ItemCatalog, manifest: ServingManifest) -> None:
        self.tokenizer, self.catalog, self.manifest = tokenizer, catalog, manifest
        self._vocab = tokenizer.get_vocab()
        self._separator = len(encode_plain(tokenizer, SEPARATOR))
        self.end_id = int(tokenizer.convert_tokens_to_ids(IM_END) or tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_id)

    @classmethod
    def from_dir(cls, path: str | Path) -> RerankText:
        """Load the ``tokenizer/`` folder written by ``gr2 export trtllm`` (a bundle without weights)."""
        from transformers import AutoTokenizer

        from gr2.sid.sidmap import SIDMap

        root = Path(path)
        manifest = read_manifest(root)
        tokenizer = AutoTokenizer.from_pretrained(root)
        sid_map = SIDMap.load(root / "sid_map.parquet")
        sids = {i: sid_map.token_string(i) for i in sid_map.item_ids} if manifest.with_sids else None
        return cls(tokenizer, ItemCatalog(pd.read_parquet(root / "items.parquet"), sids), manifest)

    def _known(self, item_id: int) -> bool:
        if not self.catalog.knows(item_id):
            return False
        return self.catalog.sids is None or all(
            t in self._vocab for t in _SID_TOKEN.findall(self.catalog.sids[item_id]))

    def plan(self, row: Sequence[int], history: Sequence[int]) -> RowPlan:
        """The prompt of one row (known candidates only); rows with fewer than two known get no prompt."""
        cands = [int(c) for c in row]
        known = [i for i, c in enumerate(cands) if self._known(c)]
        if len(known) < 2:
            return RowPlan(known, [], [self.end_id], 1)
        sid_lookup = self.catalog if self.catalog.sids is not None else None
        ranked = [cands[i] for i in known]
        labels = candidate_labels(ranked, sid_lookup)
        hist = [int(h) for h in history if int(h) >= 0 and self._known(int(h))]
        hist = hist[-self.manifest.history_length:] if self.manifest.history_length else []
        prompt = render_prompt(self.tokenizer, build_messages({"history": hist, "candidates": ranked},
                                                              self.catalog.items, sid_lookup, style="answer"))
        longest = sum(len(encode_plain(self.tokenizer, lab)) + self._separator for lab in labels)
        return RowPlan(known, labels, prompt, longest + ANSWER_MARGIN)

    def encode(self, candidates: np.ndarray, histories: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        """The engine inputs of TensorRT-LLM's ``preprocessing`` contract (INT32, padded with ``pad_id``)."""
        plans = [self.plan(row, hist) for row, hist in zip(candidates.tolist(), histories, strict=True)]
        width = max(len(p.prompt) for p in plans)
        ids = np.full((len(plans), width), self.pad_id, dtype=np.int32)
        for r, p in enumerate(plans):
            ids[r, :len(p.prompt)] = p.prompt
        column = np.ones((len(plans), 1), dtype=np.int32)
        return {"INPUT_ID": ids,
                "REQUEST_INPUT_LEN": np.array([[len(p.prompt)] for p in plans], dtype=np.int32),
                "REQUEST_OUTPUT_LEN": np.array([[p.max_new_tokens] for p in plans], dtype=np.int32),
                "OUT_END_ID": column * self.end_id, "OUT_PAD_ID": column * self.pad_id}

    def read(self, candidates: np.ndarray, output_ids: np.ndarray, sequence_length: np.ndarray) -> RerankResult:
        """Rankings from the engine's generated tokens ``[B, beams, T]`` (input excluded) and lengths ``[B, beams]``."""
        cands = np.asarray(candidates, dtype=np.int64)
        b, k = cands.shape
        ranking, scores = cands.copy(), np.full((b, k), UNSCORED, dtype=np.float32)
        unknown, invalid = np.zeros(b, dtype=np.int64), np.zeros(b, dtype=bool)
        for r, row in enumerate(cands.tolist()):
            known = [i for i, c in enumerate(row) if self._known(c)]
            unknown[r] = k - len(known)
            if len(known) == 1:
                scores[r, known[0]] = 0.0
            if len(known) < 2:
                continue
            ranked = [row[i] for i in known]
            labels = candidate_labels(ranked, self.catalog if self.catalog.sids is not None else None)
            tokens = output_ids[r, 0, :int(sequence_length[r, 0])].tolist()
            parsed = parse_ranking(self.tokenizer.decode(tokens, skip_special_tokens=True), ranked, labels)
            invalid[r] = not parsed.valid
            for position, (slot, item) in enumerate(zip(known, parsed.ranking, strict=True)):
                ranking[r, slot] = item
                scores[r, slot] = -float(position)  # rank-based: the greedy engine returns no per-item scores
        identity = (ranking == cands).all(axis=1)
        return RerankResult(ranking, scores, unknown > 0, unknown, invalid, identity)
