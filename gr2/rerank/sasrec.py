"""A SASRec-style sequential transformer that scores the K candidates of a sample.

Causal self-attention over the user's item sequence (Kang & McAuley, 2018), trained with next-item
cross-entropy (full softmax, or sampled softmax with ``sasrec_negatives``) on the interactions
before the validation cut only, early-stopped on validation MRR over the legacy candidates. A
candidate's score is the dot product of its embedding with the last hidden state.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from gr2.rerank.config import RerankConfig


class SASRec(nn.Module):
    """Item + position embeddings, pre-norm transformer blocks with a causal mask, final layer norm."""

    def __init__(self, n_items: int, dim: int, layers: int, heads: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.max_len = max_len
        self.heads = heads
        self.item = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.position = nn.Embedding(max_len, dim)
        block = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.item.weight, std=dim ** -0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, L, D) of left-padded item-index sequences (B, L); 0 is padding."""
        length = seq.shape[1]
        x = self.item(seq) * math.sqrt(self.item.embedding_dim) + self.position(
            torch.arange(self.max_len - length, self.max_len, device=seq.device))
        x = self.dropout(x)
        idx = torch.arange(length, device=seq.device)
        blocked = (idx[None, :] > idx[:, None])[None] | (seq == 0)[:, None, :]
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=seq.device)[None]  # self always visible
        mask = blocked.repeat_interleave(self.heads, dim=0)
        return self.norm(self.encoder(x, mask=mask))


def _left_pad(rows: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    out = np.zeros((len(rows), length), dtype=np.int64)
    for r, row in enumerate(rows):
        row = list(row)[-length:]
        if row:
            out[r, length - len(row):] = row
    return torch.from_numpy(out)


@dataclass
class SASRecScorer:
    """A trained model plus its item-id -> index vocabulary."""

    model: SASRec
    item_ids: np.ndarray  # sorted catalog ids; index = position + 1
    history: list[dict] = field(default_factory=list)

    def encode(self, ids: Sequence[int]) -> list[int]:
        arr = np.asarray(list(ids), dtype=np.int64)
        pos = np.searchsorted(self.item_ids, arr)
        pos = np.clip(pos, 0, len(self.item_ids) - 1)
        known = self.item_ids[pos] == arr if arr.size else np.zeros(0, dtype=bool)
        return [int(p) + 1 if k else 0 for p, k in zip(pos, known, strict=True)]

    @torch.no_grad()
    def rank(self, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]],
             batch_size: int = 512) -> list[list[int]]:
        """Candidates ordered by score (ties keep the presented order)."""
        self.model.eval()
        out: list[list[int]] = []
        for start in range(0, len(histories), batch_size):
            hist = [[i for i in self.encode(h) if i] for h in histories[start:start + batch_size]]
            seq = _left_pad(hist, self.model.max_len)
            last = self.model(seq)[:, -1]
            for row, cands in zip(last, candidates[start:start + batch_size], strict=True):
                cands = [int(c) for c in cands]
                emb = self.model.item(torch.tensor(self.encode(cands)))
                scores = (emb @ row).numpy()
                out.append([cands[i] for i in np.lexsort((np.arange(len(cands)), -scores))])
        return out


def training_windows(ordered: pd.DataFrame, item_ids: np.ndarray, max_len: int) -> list[np.ndarray]:
    """Each user's sequence cut from the end into windows of ``max_len + 1`` (input + shifted target)."""
    windows = []
    for _, items in ordered.groupby("user_id", sort=True)["item_id"]:
        idx = np.searchsorted(item_ids, items.to_numpy(np.int64)) + 1
        end = len(idx)
        while end >= 2:
            windows.append(idx[max(0, end - max_len - 1):end])
            end -= max_len
    return windows


def _mrr(scorer: SASRecScorer, samples: pd.DataFrame) -> float:
    ranked = scorer.rank(list(samples["history"]), list(samples["candidates"]))
    return float(np.mean([1.0 / (r.index(int(t)) + 1) for r, t in zip(ranked, samples["target"], strict=True)]))


def train_sasrec(
    train_interactions: pd.DataFrame, item_ids: np.ndarray, cfg: RerankConfig, validation: pd.DataFrame | None,
    seed: int,
) -> SASRecScorer:
    """Fit on ``train_interactions`` (already cut before the validation period) with early stopping."""
    torch.manual_seed(seed)
    torch.set_num_threads(cfg.num_threads)
    rng = np.random.default_rng(seed)
    item_ids = np.asarray(item_ids, dtype=np.int64)
    model = SASRec(len(item_ids), cfg.sasrec_dim, cfg.sasrec_layers, cfg.sasrec_heads, cfg.sasrec_max_len,
                   cfg.sasrec_dropout)
    scorer = SASRecScorer(model=model, item_ids=item_ids)
    windows = training_windows(train_interactions, item_ids, cfg.sasrec_max_len)
    if not windows:
        raise ValueError("no user has two interactions before the validation cut; cannot train SASRec")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.sasrec_lr)
    best, best_state, stale = -1.0, copy.deepcopy(model.state_dict()), 0
    bar = tqdm(range(cfg.sasrec_epochs), desc="SASRec epochs", leave=False)
    for epoch in bar:
        model.train()
        order = rng.permutation(len(windows))
        losses = []
        for start in range(0, len(order), cfg.sasrec_batch_size):
            batch = _left_pad([windows[i] for i in order[start:start + cfg.sasrec_batch_size]],
                              cfg.sasrec_max_len + 1)
            inputs, targets = batch[:, :-1], batch[:, 1:]
            hidden = model(inputs)
            keep = targets > 0
            h, t = hidden[keep], targets[keep]
            if cfg.sasrec_negatives:
                neg = torch.randint(1, len(item_ids) + 1, (len(t), cfg.sasrec_negatives))
                cand = torch.cat([t[:, None], neg], dim=1)
                logits = (model.item(cand) * h[:, None]).sum(-1)
                logits[:, 1:] = logits[:, 1:].masked_fill(neg == t[:, None], -1e9)
                loss = nn.functional.cross_entropy(logits, torch.zeros(len(t), dtype=torch.long))
            else:
                logits = h @ model.item.weight[1:].T
                loss = nn.functional.cross_entropy(logits, t - 1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        record = {"epoch": epoch + 1, "loss": float(np.mean(losses))}
        if validation is not None and len(validation):
            record["validation_mrr"] = _mrr(scorer, validation)
            if record["validation_mrr"] > best:
                best, best_state, stale = record["validation_mrr"], copy.deepcopy(model.state_dict()), 0
            else:
                stale += 1
        else:
            best_state = copy.deepcopy(model.state_dict())
        scorer.history.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"})
        if stale >= cfg.sasrec_patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return scorer
