"""Map items to SIDs with trained codebooks (no retraining): the same code path as training's final pass.

``gr2 sid assign`` uses it for items added to the catalog after training: their embeddings go through
the saved encoder and codebooks, the random last level (if on) hashes their item id, and collisions
with the existing map are resolved without moving any existing item.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from gr2.sid.collisions import CodebookPreferences, random_codes, resolve_collisions, uniqueness
from gr2.sid.embed import check_embeddings, embed_items, load_embedding_file
from gr2.sid.errors import EmptyCatalogError, SIDError
from gr2.sid.rqvae import RQVAE
from gr2.sid.sidmap import SIDMap

CODEBOOKS_FILE = "codebooks.pt"
CONFIG_FILE = "sid_config.json"
MAP_FILE = "sid_map.parquet"


@dataclass
class Assignment:
    """Codes of a batch of items, before and after collision resolution."""

    item_ids: np.ndarray
    codes_before: np.ndarray
    codes: np.ndarray
    moved: np.ndarray  # bool per item: its code changed during resolution
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def uniqueness_before(self) -> float:
        return uniqueness(self.codes_before)

    def to_map(self, codebook_size: int) -> SIDMap:
        return SIDMap(self.item_ids, self.codes, codebook_size)


class Tokenizer:
    """A trained RQ-VAE plus what turns its output into full SIDs (levels, random last level, seed)."""

    def __init__(self, model: RQVAE, meta: dict[str, Any]):
        self.model = model.eval()
        self.meta = meta
        self.levels: int = int(meta["levels"])
        self.codebook_size: int = int(meta["codebook_size"])
        self.random_last_level: bool = bool(meta["random_last_level"])
        self.seed: int = int(meta["seed"])

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> tuple[Path, Path]:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": self.model.state_dict(), "meta": self.meta}, directory / CODEBOOKS_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(self.meta, indent=2) + "\n")
        return directory / CODEBOOKS_FILE, directory / CONFIG_FILE

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        directory = Path(directory)
        if not (directory / CODEBOOKS_FILE).exists():
            raise FileNotFoundError(f"{directory / CODEBOOKS_FILE}: no trained tokenizer; run `gr2 sid train` first")
        blob = torch.load(directory / CODEBOOKS_FILE, map_location="cpu", weights_only=True)
        meta = blob["meta"]
        model = RQVAE(meta["input_dim"], meta["latent_dim"], list(meta["hidden_dims"]), meta["learned_levels"],
                      meta["codebook_size"], ema=meta["ema"])
        model.load_state_dict(blob["state_dict"])
        return cls(model, meta)

    # -- assignment ----------------------------------------------------------------------------------
    def raw_codes(self, item_ids: np.ndarray, vectors: np.ndarray,
                  keep_latent: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Codes before resolution (n, levels), quantization error, and the latents if asked."""
        if vectors.shape[1] != self.model.input_dim:
            raise SIDError(f"embeddings have {vectors.shape[1]} dims; the tokenizer was trained on "
                           f"{self.model.input_dim} (encoder {self.meta.get('encoder_id')})")
        learned, errors, latent = self.model.encode_codes(vectors, keep_latent=keep_latent)
        if self.random_last_level:
            last = random_codes(item_ids, self.codebook_size, self.seed)[:, None]
            learned = np.concatenate([learned, last], axis=1)
        return learned, errors, latent

    def _preferences(self, latent: np.ndarray, item_ids: np.ndarray) -> CodebookPreferences:
        books = [lvl.codebook.detach().numpy() for lvl in self.model.levels]
        return CodebookPreferences(latent, books, self.codebook_size, item_ids, self.seed)

    def assign(self, item_ids: np.ndarray, vectors: np.ndarray, existing: SIDMap | None = None) -> Assignment:
        """SIDs for ``item_ids``: quantize, then resolve collisions (existing items keep theirs)."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        if len(item_ids) == 0:
            raise EmptyCatalogError("no items to assign")
        vectors = check_embeddings(item_ids, vectors)
        t0 = time.perf_counter()
        codes, errors, latent = self.raw_codes(item_ids, vectors, keep_latent=True)
        t1 = time.perf_counter()
        order = np.lexsort((item_ids, errors))  # best-fitting first, then smallest item id
        if existing is not None and len(existing):
            if (existing.levels, existing.codebook_size) != (self.levels, self.codebook_size):
                raise SIDError("the existing SID map does not match the tokenizer's levels/codebook size")
            old = existing.codes_array
            all_codes = np.concatenate([old, codes])
            all_ids = np.concatenate([np.asarray(existing.item_ids, dtype=np.int64), item_ids])
            fixed = np.zeros(len(all_codes), dtype=bool)
            fixed[: len(old)] = True
            all_latent = np.concatenate([np.zeros((len(old), latent.shape[1]), latent.dtype), latent])
            full_order = np.concatenate([np.arange(len(old)), len(old) + order])
            res = resolve_collisions(all_codes, full_order, self.codebook_size,
                                     self._preferences(all_latent, all_ids), fixed=fixed)
            final, moved = res.codes[len(old):], res.moved[len(old):]
        else:
            res = resolve_collisions(codes, order, self.codebook_size, self._preferences(latent, item_ids))
            final, moved = res.codes, res.moved
        t2 = time.perf_counter()
        return Assignment(item_ids, codes, final, moved, {"quantize_s": t1 - t0, "resolve_s": t2 - t1})


def assign_new_items(sid_dir: str | Path, items: pd.DataFrame | None = None, embeddings: str | Path | None = None,
                     encoder: str | None = None, cache_dir: str | Path | None = None,
                     allow_empty_text: bool = False) -> tuple[SIDMap, Assignment]:
    """SIDs for catalog items missing from ``sid_dir``'s map (items already mapped keep their SID).

    Give ``items`` (canonical item table, encoded with the training encoder) or ``embeddings`` (a
    ``.parquet`` with item_id + embedding, or ``.npy`` rows in ascending item id of ``items``).
    Returns the map of the new items only and the assignment details.
    """
    tokenizer = Tokenizer.load(sid_dir)
    existing = SIDMap.load(Path(sid_dir) / MAP_FILE) if (Path(sid_dir) / MAP_FILE).exists() else None
    if embeddings is not None:
        ids = None if items is None else np.sort(items["item_id"].to_numpy(dtype=np.int64))
        ids, vectors = load_embedding_file(embeddings, ids)
    else:
        if items is None:
            raise EmptyCatalogError("give items or an embeddings file to assign")
        emb = embed_items(items, encoder or tokenizer.meta["encoder"], cache_dir,
                          max_tokens=int(tokenizer.meta.get("max_text_tokens", 128)),
                          allow_empty_text=allow_empty_text)
        ids, vectors = emb.item_ids, emb.vectors
    if existing is not None:
        new = ~np.isin(ids, np.asarray(existing.item_ids, dtype=np.int64))
        ids, vectors = ids[new], vectors[new]
    if len(ids) == 0:
        empty = SIDMap(np.zeros(0, dtype=np.int64), np.zeros((0, tokenizer.levels), dtype=np.int64),
                       tokenizer.codebook_size)
        return empty, Assignment(ids, np.zeros((0, tokenizer.levels), np.int64),
                                 np.zeros((0, tokenizer.levels), np.int64), np.zeros(0, bool))
    result = tokenizer.assign(ids, vectors, existing)
    return result.to_map(tokenizer.codebook_size), result
