"""``gr2 sid train``: item texts -> embeddings -> RQ-VAE -> unique SIDs, codebooks and a report.

Reads the run's canonical catalog (``data/raw/items.parquet``) and train split (co-engagement pairs
for the contrastive loss; validation/test for the downstream proxy) and writes into ``<run>/sid/``:
``sid_map.parquet``, ``codebooks.pt``, ``sid_config.json``, ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from gr2.config import GR2Config
from gr2.data.schema import DataError, coerce_interactions, coerce_items, read_table
from gr2.paths import RunPaths
from gr2.provenance import write_metrics
from gr2.sid.assign import MAP_FILE, Assignment, Tokenizer
from gr2.sid.config import SIDConfig
from gr2.sid.embed import ItemEmbeddings, check_embeddings, embed_items
from gr2.sid.errors import EmptyCatalogError
from gr2.sid.rqvae import RQVAE
from gr2.sid.sidmap import SIDMap, token_string

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


@dataclass
class SIDArtifacts:
    """What ``train_sid`` produced: the map, its metrics and the files written."""

    sid_map: SIDMap
    metrics: dict[str, Any]
    directory: Path
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class FitResult:
    """A trained tokenizer and its codes for the catalog it was trained on."""

    tokenizer: Tokenizer
    assignment: Assignment
    metrics: dict[str, Any]
    history: list[dict[str, float]]


# -- inputs ------------------------------------------------------------------------------------------
def load_catalog(paths: RunPaths) -> pd.DataFrame:
    """The run's item table in the canonical schema."""
    frame = read_table(paths.raw, "items", required=False)
    if frame is None:
        raise DataError(f"{paths.raw}/items.parquet not found: run `gr2 data fetch` (and `gr2 data split`) first")
    items = coerce_items(frame, source=paths.raw / "items")
    if len(items) == 0:
        raise EmptyCatalogError(f"{paths.raw}/items.parquet holds no item: nothing to tokenize")
    return items


def load_interactions(paths: RunPaths) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(train, held-out) interactions of the protocol's split; (None, None) without a split, so that
    nothing held out can reach the contrastive loss (the SIDs then come from item text alone)."""
    parts = {}
    for name in ("train", "validation", "test"):
        frame = read_table(paths.split, name, required=False)
        if frame is not None:
            parts[name] = coerce_interactions(frame, source=paths.split / name)
    if "train" in parts:
        held = [parts[n] for n in ("validation", "test") if n in parts]
        return parts["train"], (pd.concat(held, ignore_index=True) if held else None)
    return None, None


def _chronological(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort")


def co_engagement_pairs(train: pd.DataFrame | None, item_ids: np.ndarray) -> np.ndarray:
    """Row-index pairs (m, 2) of items consumed one after the other by a user (train split, deduplicated)."""
    if train is None or len(train) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    ordered = _chronological(train)
    row_of = pd.Series(np.arange(len(item_ids)), index=item_ids)
    rows = ordered["item_id"].map(row_of).to_numpy()
    users = ordered["user_id"].to_numpy()
    same_user = users[1:] == users[:-1]
    a, b = rows[:-1][same_user], rows[1:][same_user]
    ok = ~(np.isnan(a.astype(float)) | np.isnan(b.astype(float)))
    a, b = a[ok].astype(np.int64), b[ok].astype(np.int64)
    keep = a != b
    pairs = np.stack([np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])], 1)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def next_item_pairs(train: pd.DataFrame | None, held_out: pd.DataFrame | None) -> np.ndarray:
    """(previous item, next item) id pairs whose next item is a held-out (validation/test) interaction."""
    if train is None or held_out is None or len(held_out) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    both = pd.concat([train.assign(_held=False), held_out.assign(_held=True)], ignore_index=True)
    both = _chronological(both)
    users, items, held = (both[c].to_numpy() for c in ("user_id", "item_id", "_held"))
    take = (users[1:] == users[:-1]) & held[1:]
    return np.stack([items[:-1][take], items[1:][take]], 1).astype(np.int64)


# -- training ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def deterministic(seed: int, threads: int) -> Iterator[None]:
    """Seeded, single-algorithm torch for the duration (restores threads and the algorithm flag)."""
    previous_threads, previous_flag = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_flag)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between paired rows of ``a`` and ``b`` (in-batch negatives)."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.t() / temperature
    target = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def fit_rqvae(vectors: np.ndarray, cfg: SIDConfig, seed: int, codebook_size: int,
              pairs: np.ndarray | None = None) -> tuple[RQVAE, list[dict[str, float]]]:
    """Train an RQ-VAE on ``vectors`` (call inside :func:`deterministic`)."""
    x = torch.as_tensor(vectors, dtype=torch.float32)
    n = len(x)
    n_learned = cfg.levels - 1 if cfg.random_last_level else cfg.levels
    model = RQVAE(x.shape[1], cfg.latent_dim, list(cfg.hidden_dims), n_learned, codebook_size,
                  ema=cfg.ema, ema_decay=cfg.ema_decay, ema_eps=cfg.ema_eps)
    model.fit_input_stats(x)
    generator = torch.Generator().manual_seed(seed)
    if cfg.kmeans_init:
        model.init_kmeans(x, cfg.kmeans_iters, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    target = model.normalize(x)
    batch = min(cfg.batch_size, n)
    use_pairs = cfg.contrastive and cfg.contrastive_weight > 0 and pairs is not None and len(pairs) > 0
    pair_tensor = torch.as_tensor(pairs, dtype=torch.long) if use_pairs else None
    temperature = cfg.diversity_temperature if cfg.diversity and cfg.diversity_weight > 0 else None
    history: list[dict[str, float]] = []
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(n, generator=generator)
        sums = {"loss": 0.0, "recon": 0.0, "commitment": 0.0, "diversity": 0.0, "contrastive": 0.0}
        steps = 0
        for start in range(0, n, batch):
            idx = perm[start:start + batch]
            out = model(x[idx], temperature)
            recon = F.mse_loss(out.recon, target[idx])
            loss = recon + cfg.commitment_beta * out.commitment + out.codebook_loss
            if temperature is not None:
                loss = loss + cfg.diversity_weight * out.diversity
            contrast = torch.zeros(())
            if pair_tensor is not None:
                pick = torch.randint(len(pair_tensor), (min(cfg.contrastive_pairs, len(pair_tensor)),),
                                     generator=generator)
                a, b = pair_tensor[pick, 0], pair_tensor[pick, 1]
                contrast = info_nce(model.encode(x[a]), model.encode(x[b]), cfg.contrastive_temperature)
                loss = loss + cfg.contrastive_weight * contrast
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for j, level in enumerate(model.levels):
                codes = out.codes[:, j]
                if level.ema:
                    level.ema_step(out.residuals[j], codes)
                level.usage += torch.bincount(codes, minlength=level.codebook_size).to(level.usage.dtype)
            for name, value in (("loss", loss), ("recon", recon), ("commitment", out.commitment),
                                ("diversity", out.diversity), ("contrastive", contrast)):
                sums[name] += float(value.detach())
            steps += 1
        row = {"epoch": epoch, **{k: v / max(steps, 1) for k, v in sums.items()}}
        if cfg.dead_code_reset and epoch < cfg.epochs - 1:
            with torch.no_grad():
                z = model.encode(x)
                _, _, residuals, *_ = model.quantize(z)
            row["dead_reset"] = float(sum(
                level.reset_dead(residuals[j], cfg.dead_code_threshold, generator)
                for j, level in enumerate(model.levels)))
        else:
            for level in model.levels:
                level.usage.zero_()
        history.append(row)
    return model.eval(), history


def _level_stats(codes: np.ndarray, codebook_size: int) -> tuple[list[float], list[float]]:
    utilization, perplexity = [], []
    for j in range(codes.shape[1]):
        counts = np.bincount(codes[:, j], minlength=codebook_size)
        p = counts[counts > 0] / counts.sum()
        utilization.append(float((counts > 0).sum() / codebook_size))
        perplexity.append(float(math.exp(-(p * np.log(p)).sum())))
    return utilization, perplexity


def first_level_proxy(sid_map_codes: dict[int, tuple[int, ...]], pairs: np.ndarray) -> dict[str, float | int]:
    """How often a user's next (held-out) item shares the first-level code of the previous item.

    ``chance`` is the rate expected if first-level codes were independent of the sequence (product of
    the code shares of previous and next items), ``lift`` = rate / chance.
    """
    known = [(a, b) for a, b in pairs.tolist() if a in sid_map_codes and b in sid_map_codes]
    if not known:
        return {"pairs": 0, "same_first_level": float("nan"), "chance": float("nan"), "lift": float("nan")}
    prev = np.array([sid_map_codes[a][0] for a, _ in known])
    nxt = np.array([sid_map_codes[b][0] for _, b in known])
    rate = float((prev == nxt).mean())
    size = int(max(prev.max(), nxt.max())) + 1
    chance = float((np.bincount(prev, minlength=size) / len(prev) * np.bincount(nxt, minlength=size) / len(nxt)).sum())
    return {"pairs": len(known), "same_first_level": rate, "chance": chance,
            "lift": rate / chance if chance > 0 else float("nan")}


def fit_and_assign(embeddings: ItemEmbeddings, cfg: SIDConfig, seed: int, pairs: np.ndarray | None = None,
                   proxy_pairs: np.ndarray | None = None) -> FitResult:
    """Train on the catalog's embeddings and give every item a unique SID (no file written)."""
    start = time.perf_counter()
    ids = np.asarray(embeddings.item_ids, dtype=np.int64)
    if len(ids) == 0:
        raise EmptyCatalogError("the item catalog is empty: nothing to tokenize")
    vectors = check_embeddings(ids, embeddings.vectors)
    codebook_size = cfg.resolve_codebook_size(len(ids))
    if codebook_size ** cfg.levels < len(ids):
        raise ValueError(f"sid: {cfg.levels} levels x {codebook_size} codes cannot name {len(ids)} items uniquely; "
                         "raise sid.levels or sid.codebook_size")
    with deterministic(seed, cfg.num_threads):
        model, history = fit_rqvae(vectors, cfg, seed, codebook_size, pairs)
        train_s = time.perf_counter() - start
        meta = {
            "levels": cfg.levels, "codebook_size": codebook_size, "learned_levels": model.n_levels,
            "random_last_level": cfg.random_last_level, "seed": seed, "ema": cfg.ema,
            "input_dim": int(vectors.shape[1]), "latent_dim": cfg.latent_dim, "hidden_dims": list(cfg.hidden_dims),
            "encoder": cfg.encoder, "encoder_id": embeddings.encoder_id, "max_text_tokens": cfg.max_text_tokens,
            "token_format": "<s_{level letter}_{code}>", "collision_order": "quantization error, then item id",
        }
        tokenizer = Tokenizer(model, meta)
        assignment = tokenizer.assign(ids, vectors)
        with torch.no_grad():
            recon = model.reconstruct(vectors)
    utilization, perplexity = _level_stats(assignment.codes, codebook_size)
    util_before, _ = _level_stats(assignment.codes_before, codebook_size)
    final_unique = len(np.unique(assignment.codes, axis=0)) / len(ids)
    metrics: dict[str, Any] = {
        "n_items": len(ids),
        "levels": cfg.levels,
        "codebook_size": codebook_size,
        "uniqueness_before_resolution": assignment.uniqueness_before,
        "uniqueness_final": final_unique,
        "collisions_resolved": int(assignment.moved.sum()),
        "utilization": utilization,
        "utilization_before_resolution": util_before,
        "perplexity": perplexity,
        "reconstruction_mse": float(((recon - vectors) ** 2).mean()),
        "train_wall_time_s": train_s,
        "assign_wall_time_s": sum(assignment.timings.values()),
        "placeholder_texts": embeddings.placeholders,
    }
    if proxy_pairs is not None:
        lookup = {int(i): tuple(int(c) for c in row) for i, row in zip(ids, assignment.codes, strict=True)}
        metrics["next_item_same_first_level"] = first_level_proxy(lookup, proxy_pairs)
    metrics["wall_time_s"] = time.perf_counter() - start
    return FitResult(tokenizer, assignment, metrics, history)


def embed_catalog(cfg: GR2Config, items: pd.DataFrame) -> ItemEmbeddings:
    paths = RunPaths.of(cfg.run_dir)
    cache = Path(cfg.sid.cache_dir) if cfg.sid.cache_dir else paths.sid / "cache"
    return embed_items(items, cfg.sid.encoder, cache, cfg.sid.embed_batch_size, cfg.sid.max_text_tokens,
                       cfg.sid.allow_empty_text)


def train_sid(cfg: GR2Config) -> SIDArtifacts:
    """Embed the run's catalog, train the RQ-VAE, resolve collisions and write the SID artefacts."""
    start = time.perf_counter()
    paths = RunPaths.of(cfg.run_dir)
    items = load_catalog(paths)
    embed_start = time.perf_counter()
    embeddings = embed_catalog(cfg, items)
    embed_s = time.perf_counter() - embed_start
    train, held_out = load_interactions(paths)
    pairs = co_engagement_pairs(train, embeddings.item_ids)
    fit = fit_and_assign(embeddings, cfg.sid, cfg.seed, pairs, next_item_pairs(train, held_out))
    sid_map = fit.assignment.to_map(fit.tokenizer.codebook_size)

    out = paths.sid
    out.mkdir(parents=True, exist_ok=True)
    files = {"sid_map": sid_map.save(out / MAP_FILE)}
    files["codebooks"], files["config"] = fit.tokenizer.save(out)
    metrics = {**fit.metrics, "embed_wall_time_s": embed_s, "embedding_cache_hit": embeddings.cache_hit,
               "encoder_id": embeddings.encoder_id, "co_engagement_pairs": len(pairs),
               "final_loss": fit.history[-1] if fit.history else None}
    metrics["wall_time_s"] = time.perf_counter() - start
    inputs = [p for p in (paths.raw / "items.parquet", paths.split / "train.parquet") if p.exists()]
    files["report_json"] = out / REPORT_JSON
    write_metrics(files["report_json"], metrics, config=cfg.sid, inputs=inputs)
    files["report_md"] = out / REPORT_MD
    files["report_md"].write_text(render_report(metrics, sid_map, items, cfg.seed))
    return SIDArtifacts(sid_map, metrics, out, files)


def _fmt(value: float) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_report(metrics: dict[str, Any], sid_map: SIDMap, items: pd.DataFrame, seed: int) -> str:
    """A short Markdown report: the headline numbers, per-level usage and a few example SIDs."""
    lines = [
        "# Semantic-ID tokenizer report", "",
        f"{metrics['n_items']} items, {metrics['levels']} levels x {metrics['codebook_size']} codes "
        f"({metrics['levels'] * metrics['codebook_size']} new tokens), seed {seed}.", "",
        "| metric | value |", "| --- | --- |",
    ]
    for key in ("uniqueness_before_resolution", "uniqueness_final", "collisions_resolved", "reconstruction_mse",
                "wall_time_s", "embed_wall_time_s", "train_wall_time_s", "assign_wall_time_s"):
        if key in metrics:
            lines.append(f"| {key} | {_fmt(metrics[key])} |")
    proxy = metrics.get("next_item_same_first_level")
    if proxy and proxy.get("pairs"):
        lines.append(f"| next item shares first-level code | {proxy['same_first_level']:.4f} "
                     f"(chance {proxy['chance']:.4f}, lift {proxy['lift']:.2f}, {proxy['pairs']} pairs) |")
    lines += ["", "| level | utilization | perplexity |", "| --- | --- | --- |"]
    for j, (u, p) in enumerate(zip(metrics["utilization"], metrics["perplexity"], strict=True)):
        lines.append(f"| {chr(ord('a') + j)} | {u:.3f} | {p:.1f} |")
    titles = dict(zip(items["item_id"].astype(int), items["title"].fillna("").astype(str), strict=True))
    lines += ["", "Examples (items sharing the first-level code of each):", ""]
    first = {}
    for item_id in sid_map.item_ids:
        first.setdefault(sid_map.codes(item_id)[0], []).append(item_id)
    for item_id in sid_map.item_ids[:5]:
        peers = [p for p in first[sid_map.codes(item_id)[0]] if p != item_id][:4]
        lines.append(f"- {item_id} {titles.get(item_id, '')!s}: `{token_string(sid_map.codes(item_id))}`; "
                     f"peers: {', '.join(titles.get(p, str(p)) for p in peers) or '-'}")
    return "\n".join(lines) + "\n"
