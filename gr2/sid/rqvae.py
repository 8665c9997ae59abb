"""RQ-VAE: MLP encoder -> residual vector quantization over L levels -> MLP decoder (torch).

Each level quantizes what the previous levels left over (the residual) with its own codebook. The
codebooks are trained either by EMA (``ema=True``: k-means-style running averages of the residuals
assigned to each code) or by the VQ-VAE codebook loss; gradients reach the encoder through the
straight-through estimator ``z + (z_q - z).detach()``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def squared_distances(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """``||x_i - c_k||^2`` for every row of ``x`` (n, d) and code of ``codebook`` (K, d) -> (n, K)."""
    return (x.pow(2).sum(1, keepdim=True) - 2 * x @ codebook.t() + codebook.pow(2).sum(1)).clamp_min(0)


def ema_update(
    cluster_size: torch.Tensor, embed_sum: torch.Tensor, residuals: torch.Tensor, codes: torch.Tensor,
    decay: float, eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One EMA codebook step (VQ-VAE-2 / Sonnet ``VectorQuantizerEMA``), returned as new tensors.

    ``N_k <- decay*N_k + (1-decay)*n_k`` and ``m_k <- decay*m_k + (1-decay)*sum_{i: code_i=k} r_i``, where
    ``n_k`` counts this batch's residuals on code ``k``; the codebook is ``m_k / N~_k`` with the
    Laplace-smoothed size ``N~_k = (N_k + eps) / (sum N + K*eps) * sum N``.

    >>> size, sums, book = ema_update(torch.ones(2), torch.zeros(2, 1), torch.tensor([[2.0], [4.0]]),
    ...                               torch.tensor([0, 0]), decay=0.5, eps=0.0)
    >>> size.tolist(), sums.flatten().tolist(), book.flatten().tolist()
    ([1.5, 0.5], [3.0, 0.0], [2.0, 0.0])
    """
    k = cluster_size.shape[0]
    onehot = F.one_hot(codes, k).to(residuals.dtype)  # (n, K)
    counts = onehot.sum(0)
    sums = onehot.t() @ residuals
    new_size = cluster_size * decay + counts * (1 - decay)
    new_sum = embed_sum * decay + sums * (1 - decay)
    total = new_size.sum()
    smoothed = (new_size + eps) / (total + k * eps) * total
    return new_size, new_sum, new_sum / smoothed.clamp_min(1e-12).unsqueeze(1)


def kmeans_plus_plus(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding followed by ``iters`` Lloyd steps (empty clusters re-seeded at the worst-fit points).

    With fewer distinct points than ``k``, the remaining centroids are copies of data points plus a small
    seeded jitter, so every code is a usable starting point.
    """
    n = x.shape[0]
    centroids = torch.empty(k, x.shape[1], dtype=x.dtype)
    first = int(torch.randint(n, (1,), generator=generator))
    centroids[0] = x[first]
    closest = squared_distances(x, centroids[:1]).squeeze(1)
    for j in range(1, k):
        total = closest.sum()
        if total <= 0:  # every point already is a centroid: jitter copies
            pick = int(torch.randint(n, (1,), generator=generator))
            scale = x.std().clamp_min(1e-3) * 1e-2
            centroids[j] = x[pick] + scale * torch.randn(x.shape[1], generator=generator, dtype=x.dtype)
        else:
            pick = int(torch.multinomial(closest / total, 1, generator=generator))
            centroids[j] = x[pick]
        closest = torch.minimum(closest, squared_distances(x, centroids[j:j + 1]).squeeze(1))
    for _ in range(iters):
        dist = squared_distances(x, centroids)
        codes = dist.argmin(1)
        counts = torch.bincount(codes, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, codes, x)
        used = counts > 0
        centroids[used] = sums[used] / counts[used].unsqueeze(1).to(x.dtype)
        empty = (~used).nonzero().flatten()
        if len(empty) and n > 1:
            worst = dist.gather(1, codes.unsqueeze(1)).squeeze(1).argsort(descending=True)[: len(empty)]
            centroids[empty[: len(worst)]] = x[worst]
    return centroids


class QuantizerLevel(nn.Module):
    """One residual level: a ``(K, d)`` codebook, learned by EMA or by gradient."""

    def __init__(self, codebook_size: int, dim: int, ema: bool, decay: float = 0.95, eps: float = 1e-5):
        super().__init__()
        self.codebook_size, self.dim, self.ema, self.decay, self.eps = codebook_size, dim, ema, decay, eps
        init = torch.empty(codebook_size, dim).uniform_(-1 / codebook_size, 1 / codebook_size)  # VQ-VAE default
        if ema:
            self.register_buffer("codebook", init)
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("cluster_size", torch.ones(codebook_size))
        self.register_buffer("embed_sum", init.clone())
        self.register_buffer("usage", torch.zeros(codebook_size))  # assignments since the last reset check

    def set_codebook(self, codebook: torch.Tensor) -> None:
        with torch.no_grad():
            self.codebook.copy_(codebook)
            self.cluster_size.fill_(1.0)
            self.embed_sum.copy_(codebook)

    def assign(self, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest code per row and the distance matrix (n, K)."""
        dist = squared_distances(residual, self.codebook)
        return dist.argmin(1), dist

    @torch.no_grad()
    def ema_step(self, residual: torch.Tensor, codes: torch.Tensor) -> None:
        size, sums, book = ema_update(self.cluster_size, self.embed_sum, residual, codes, self.decay, self.eps)
        self.cluster_size.copy_(size)
        self.embed_sum.copy_(sums)
        self.codebook.copy_(book)

    @torch.no_grad()
    def reset_dead(self, residual: torch.Tensor, threshold: float, generator: torch.Generator) -> int:
        """Re-seed codes used fewer than ``threshold`` times since the last call from random residuals."""
        dead = (self.usage < threshold).nonzero().flatten()
        self.usage.zero_()
        if len(dead) == 0 or len(residual) == 0:
            return 0
        pick = torch.randint(len(residual), (len(dead),), generator=generator)
        noise = torch.randn(len(dead), self.dim, generator=generator) * residual.std().clamp_min(1e-6) * 1e-2
        fresh = residual[pick] + noise
        self.codebook[dead] = fresh
        self.cluster_size[dead] = 1.0
        self.embed_sum[dead] = fresh
        return len(dead)


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


@dataclass
class RQOutput:
    """What one forward pass returns (losses are scalars, means over the batch)."""

    recon: torch.Tensor  # (n, input_dim)
    z: torch.Tensor  # encoder output (n, latent)
    z_q: torch.Tensor  # straight-through quantized latent (n, latent)
    codes: torch.Tensor  # (n, learned levels) int64
    residuals: list[torch.Tensor]  # input of each level, detached
    commitment: torch.Tensor
    codebook_loss: torch.Tensor
    diversity: torch.Tensor


class RQVAE(nn.Module):
    """MLP encoder -> ``n_levels`` residual quantizers -> MLP decoder."""

    def __init__(self, input_dim: int, latent_dim: int, hidden_dims: list[int], n_levels: int,
                 codebook_size: int, ema: bool = True, ema_decay: float = 0.95, ema_eps: float = 1e-5):
        super().__init__()
        self.input_dim, self.latent_dim, self.codebook_size = input_dim, latent_dim, codebook_size
        self.encoder = mlp([input_dim, *hidden_dims, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), input_dim])
        self.levels = nn.ModuleList(
            QuantizerLevel(codebook_size, latent_dim, ema, ema_decay, ema_eps) for _ in range(n_levels))
        # inputs are centred and scaled to unit variance per dimension before the encoder
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_scale", torch.ones(()))

    @torch.no_grad()
    def fit_input_stats(self, x: torch.Tensor) -> None:
        """Centre on the catalog mean and scale to unit variance per dimension (stored in the state dict)."""
        self.input_mean.copy_(x.mean(0))
        self.input_scale.copy_((x - self.input_mean).pow(2).mean().sqrt().clamp_min(1e-8))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.input_mean) / self.input_scale

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent of raw embeddings ``x``."""
        return self.encoder(self.normalize(x))

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    def quantize(self, z: torch.Tensor, diversity_temperature: float | None = None):
        """Residual quantization of ``z``: codes, quantized sum, per-level residuals and losses."""
        residual = z
        z_q = torch.zeros_like(z)
        codes, residuals = [], []
        commitment = z.new_zeros(())
        codebook_loss = z.new_zeros(())
        diversity = z.new_zeros(())
        for level in self.levels:
            with torch.set_grad_enabled(diversity_temperature is not None and torch.is_grad_enabled()):
                d = squared_distances(residual, level.codebook)
            code = d.detach().argmin(1)
            chosen = level.codebook[code]
            commitment = commitment + F.mse_loss(residual, chosen.detach())
            if not level.ema:
                codebook_loss = codebook_loss + F.mse_loss(chosen, residual.detach())
            if diversity_temperature is not None:
                probs = F.softmax(-d / (d.mean().detach().clamp_min(1e-12) * diversity_temperature), dim=1)
                mean = probs.mean(0)
                diversity = diversity + (mean * (mean + 1e-10).log()).sum() + math.log(level.codebook_size)
            codes.append(code)
            residuals.append(residual.detach())
            z_q = z_q + chosen
            residual = residual - chosen.detach()
        return torch.stack(codes, 1), z_q, residuals, commitment, codebook_loss, diversity

    def forward(self, x: torch.Tensor, diversity_temperature: float | None = None) -> RQOutput:
        """``recon`` is in the normalised space: compare it with ``self.normalize(x)``."""
        z = self.encode(x)
        codes, z_q, residuals, commitment, codebook_loss, diversity = self.quantize(z, diversity_temperature)
        z_st = z + (z_q - z).detach()  # straight-through: the decoder sees z_q, the encoder gets its gradient
        return RQOutput(self.decoder(z_st), z, z_st, codes, residuals, commitment, codebook_loss, diversity)

    @torch.no_grad()
    def init_kmeans(self, x: torch.Tensor, iters: int, generator: torch.Generator) -> None:
        """RQ-KMeans initialisation: k-means++ on each level's residuals of the current encoder output."""
        residual = self.encode(x)
        for level in self.levels:
            level.set_codebook(kmeans_plus_plus(residual, level.codebook_size, iters, generator))
            code, _ = level.assign(residual)
            residual = residual - level.codebook[code]

    @torch.no_grad()
    def _inference_encoder(self) -> nn.Sequential:
        """The encoder with the input normalisation folded into its first layer (one pass less)."""
        first = self.encoder[0]
        fused = nn.Linear(first.in_features, first.out_features)
        fused.weight.copy_(first.weight / self.input_scale)
        fused.bias.copy_(first.bias - fused.weight @ self.input_mean)
        return nn.Sequential(fused, *list(self.encoder)[1:]).eval()

    @torch.no_grad()
    def encode_codes(self, x: np.ndarray | torch.Tensor, chunk: int = 32768,
                     keep_latent: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Codes (n, levels) int64, squared quantization error per item and (optionally) the latents."""
        codes_out = np.empty((len(x), self.n_levels), dtype=np.int64)
        error_out = np.empty(len(x), dtype=np.float32)
        latent_out = np.empty((len(x), self.latent_dim), dtype=np.float32) if keep_latent else None
        encoder = self._inference_encoder()
        books = [level.codebook for level in self.levels]
        norms = [book.pow(2).sum(1) for book in books]
        for start in range(0, len(x), chunk):
            xb = torch.as_tensor(np.asarray(x[start:start + chunk], dtype=np.float32))
            residual = encoder(xb)
            if latent_out is not None:
                latent_out[start:start + len(xb)] = residual.numpy()
            for j, (book, norm) in enumerate(zip(books, norms, strict=True)):
                code = torch.addmm(norm, residual, book.t(), alpha=-2).argmin(1)  # ||r||^2 is constant per row
                residual = residual - book[code]
                codes_out[start:start + len(xb), j] = code.numpy()
            error_out[start:start + len(xb)] = residual.pow(2).sum(1).numpy()
        return codes_out, error_out, latent_out

    @torch.no_grad()
    def reconstruct(self, x: np.ndarray, chunk: int = 65536) -> np.ndarray:
        out = []
        for start in range(0, len(x), chunk):
            xb = torch.as_tensor(np.asarray(x[start:start + chunk], dtype=np.float32))
            out.append((self.forward(xb).recon * self.input_scale + self.input_mean).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.input_dim), dtype=np.float32)
