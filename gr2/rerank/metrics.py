"""Ranking metrics, hacking diagnostics and bootstrap confidence intervals.

A ranking is a list of item ids, best first; positions are 0-based. Single-target metrics take the
target item; multi-positive metrics take the set of positives (or graded relevance).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

CUTOFFS = {"R@1": 1, "R@3": 3, "R@5": 5}
NDCG_CUTOFFS = {"N@3": 3, "N@5": 5}
TARGET_GRADE = 2.0  # graded relevance of the target; other positives get 1
METRIC_NAMES = ("R@1", "R@3", "R@5", "N@3", "N@5", "MRR", "AUC", "gNDCG")
STRICT_NAMES = ("strict R@1", "strict N@3")  # an invalid answer counts as a miss (not its repaired ranking)


def _position(ranking: Sequence[int], target: int) -> int | None:
    try:
        return list(ranking).index(target)
    except ValueError:
        return None


def recall_at_k(ranking: Sequence[int], target: int, k: int) -> float:
    """1 when ``target`` is among the first ``k`` items, else 0.

    >>> recall_at_k([4, 2, 9], 2, 1), recall_at_k([4, 2, 9], 2, 3)
    (0.0, 1.0)
    """
    pos = _position(ranking, target)
    return float(pos is not None and pos < k)


def ndcg_at_k(ranking: Sequence[int], target: int, k: int) -> float:
    """``1 / log2(pos + 2)`` when the target is at 0-based ``pos < k``, else 0 (one relevant item).

    >>> ndcg_at_k([4, 2, 9], 4, 3), round(ndcg_at_k([4, 2, 9], 2, 3), 4), ndcg_at_k([4, 2, 9], 9, 2)
    (1.0, 0.6309, 0.0)
    """
    pos = _position(ranking, target)
    return 1.0 / math.log2(pos + 2) if pos is not None and pos < k else 0.0


def mrr(ranking: Sequence[int], target: int) -> float:
    """Reciprocal rank ``1 / (pos + 1)`` of the target (0 when absent).

    >>> mrr([4, 2, 9], 9)
    0.3333333333333333
    """
    pos = _position(ranking, target)
    return 0.0 if pos is None else 1.0 / (pos + 1)


def auc(ranking: Sequence[int], positives: Sequence[int]) -> float | None:
    """Share of (positive, negative) pairs where the positive is ranked higher; None if undefined.

    >>> auc([1, 2, 3, 4], [1, 3])
    0.75
    >>> auc([1, 2], [1, 2]) is None
    True
    """
    pos_set = set(positives)
    is_pos = np.array([i in pos_set for i in ranking], dtype=bool)
    n_pos, n_neg = int(is_pos.sum()), int((~is_pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    negatives_below = np.cumsum((~is_pos)[::-1])[::-1]  # negatives at or after each position
    return float(negatives_below[is_pos].sum() / (n_pos * n_neg))


def graded_ndcg(ranking: Sequence[int], relevance: Mapping[int, float], k: int | None = None) -> float | None:
    """NDCG with gains ``2^rel - 1`` over the first ``k`` items; None when nothing is relevant.

    >>> graded_ndcg([1, 3, 2], {1: 2.0, 3: 1.0})
    1.0
    >>> round(graded_ndcg([3, 2, 1], {1: 2.0, 3: 1.0}), 4)
    0.6885
    """
    k = len(ranking) if k is None else k
    gains = np.array([2.0 ** relevance.get(i, 0.0) - 1 for i in ranking[:k]])
    ideal = np.sort(np.array([2.0 ** r - 1 for r in relevance.values() if r > 0]))[::-1][:k]
    if ideal.size == 0 or ideal.sum() <= 0:
        return None
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    return float((gains * discounts[: len(gains)]).sum() / (ideal * discounts[: len(ideal)]).sum())


def relevance_of(target: int, positives: Sequence[int] | None) -> dict[int, float]:
    """Graded relevance: the target ``TARGET_GRADE``, other positives 1.

    >>> relevance_of(5, [5, 8])
    {5: 2.0, 8: 1.0}
    """
    rel = {int(p): 1.0 for p in (positives or [])}
    rel[int(target)] = TARGET_GRADE
    return rel


def sample_metrics(ranking: Sequence[int], target: int, positives: Sequence[int] | None = None) -> dict[str, float]:
    """Every per-sample metric (``nan`` where undefined, e.g. AUC with all candidates positive).

    >>> sample_metrics([3, 1, 2], 1)["MRR"]
    0.5
    """
    out = {name: recall_at_k(ranking, target, k) for name, k in CUTOFFS.items()}
    out.update({name: ndcg_at_k(ranking, target, k) for name, k in NDCG_CUTOFFS.items()})
    out["MRR"] = mrr(ranking, target)
    pos = [int(target), *[int(p) for p in (positives or []) if int(p) != int(target)]]
    value = auc(ranking, pos)
    out["AUC"] = math.nan if value is None else value
    graded = graded_ndcg(list(ranking), relevance_of(target, pos))
    out["gNDCG"] = math.nan if graded is None else graded
    return out


def per_sample_metrics(
    samples: pd.DataFrame, rankings: Sequence[Sequence[int]], valid: Sequence[bool] | None = None
) -> pd.DataFrame:
    """One row per sample: the metrics plus ``identity``, ``invalid`` and ``keep_first`` (0/1)."""
    if len(rankings) != len(samples):
        raise ValueError(f"{len(rankings)} rankings for {len(samples)} samples")
    positives = samples["positives"] if "positives" in samples else [None] * len(samples)
    rows = []
    for ranking, cands, target, pos in zip(rankings, samples["candidates"], samples["target"], positives,
                                           strict=True):
        ranking, cands = [int(i) for i in ranking], [int(i) for i in cands]
        row = sample_metrics(ranking, int(target), pos)
        row["identity"] = float(ranking == cands)
        row["keep_first"] = float(cands[0] == int(target))
        rows.append(row)
    frame = pd.DataFrame(rows, index=samples.index)
    frame["invalid"] = 0.0 if valid is None else 1.0 - np.asarray(valid, dtype=float)
    for strict in STRICT_NAMES:
        frame[strict] = frame[strict.removeprefix("strict ")] * (1.0 - frame["invalid"])
    return frame


def evaluate_rankings(
    samples: pd.DataFrame, rankings: Sequence[Sequence[int]], valid: Sequence[bool] | None = None
) -> dict[str, float]:
    """Mean R@1/3/5, N@3/5, MRR, AUC, gNDCG, identity_rate, invalid_rate and keep_first_r1.

    ``keep_first_r1`` is the R@1 of always keeping the incoming first candidate (position-bias floor).

    >>> s = pd.DataFrame({"candidates": [[1, 2, 3], [4, 5, 6]], "target": [2, 4]})
    >>> m = evaluate_rankings(s, [[2, 1, 3], [4, 5, 6]])
    >>> m["R@1"], m["identity_rate"], m["keep_first_r1"]
    (1.0, 0.5, 0.5)
    """
    frame = per_sample_metrics(samples, rankings, valid)
    out = {name: float(frame[name].mean()) for name in (*METRIC_NAMES, *STRICT_NAMES)}
    out["identity_rate"] = float(frame["identity"].mean())
    out["invalid_rate"] = float(frame["invalid"].mean())
    out["keep_first_r1"] = float(frame["keep_first"].mean())
    out["n"] = len(frame)
    return out


class Bootstrap:
    """Resampling weights shared by every metric of one table (paired across methods).

    Each resample draws clusters (users when ``groups`` is given, else samples) with replacement;
    ``weights[b, g]`` counts how often cluster ``g`` was drawn, so a resampled mean is
    ``Σ_g w_bg · sum_g / Σ_g w_bg · count_g`` without materialising the resampled rows.
    """

    def __init__(self, n: int, groups: Sequence | np.ndarray | None = None, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> None:
        if groups is None:
            self.codes, n_groups = np.arange(n), n
        else:
            if len(groups) != n:
                raise ValueError(f"{len(groups)} groups for {n} values")
            codes, uniques = pd.factorize(np.asarray(groups))
            self.codes, n_groups = codes, len(uniques)
        rng = np.random.default_rng(seed)
        self.weights = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(np.float32) \
            if n_groups else np.zeros((n_boot, 0), dtype=np.float32)
        self.n_groups = n_groups
        self.tail = (1 - level) / 2 * 100

    def _sums(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        finite = np.isfinite(values)
        sums = np.bincount(self.codes, weights=np.where(finite, values, 0.0), minlength=self.n_groups)
        counts = np.bincount(self.codes, weights=finite.astype(float), minlength=self.n_groups)
        return sums, counts

    def means(self, values: Sequence[float] | np.ndarray) -> np.ndarray:
        """Resampled means (``nan`` values ignored), one per resample."""
        sums, counts = self._sums(np.asarray(values, dtype=float))
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.weights @ sums) / (self.weights @ counts)

    def interval(self, resampled: np.ndarray) -> tuple[float, float]:
        finite = resampled[np.isfinite(resampled)]
        if finite.size == 0:
            return (math.nan, math.nan)
        lo, hi = np.percentile(finite, [self.tail, 100 - self.tail])
        return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, n: int = 1000, seed: int = 0, groups: Sequence | None = None,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (``nan`` values ignored); ``groups`` resamples clusters.

    >>> lo, hi = bootstrap_ci([0.0, 1.0] * 50, n=200, seed=0)
    >>> lo < 0.5 < hi
    True
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0 or not np.isfinite(x).any():
        return (math.nan, math.nan)
    boot = Bootstrap(len(x), groups, n, seed, level)
    return boot.interval(boot.means(x))


def paired_lift(
    method: Sequence[float] | np.ndarray, base: Sequence[float] | np.ndarray, n: int = 1000, seed: int = 0,
    groups: Sequence | None = None, level: float = 0.95, boot: Bootstrap | None = None,
) -> dict[str, float]:
    """Absolute and relative lift of ``method`` over ``base`` on the same samples, with paired bootstrap CIs.

    >>> out = paired_lift([1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0], n=200, seed=0)
    >>> round(out["abs"], 2), round(out["rel"], 3)
    (0.25, 0.5)
    """
    a, b = np.asarray(method, dtype=float), np.asarray(base, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired lift needs equal lengths, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = np.where(keep, a, np.nan), np.where(keep, b, np.nan)
    if not keep.any():
        return {k: math.nan for k in ("abs", "abs_lo", "abs_hi", "rel", "rel_lo", "rel_hi")}
    boot = boot or Bootstrap(len(a), groups, n, seed, level)
    ma, mb = boot.means(a), boot.means(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        rels = ma / mb - 1
    mean_a, mean_b = float(np.nanmean(a)), float(np.nanmean(b))
    abs_lo, abs_hi = boot.interval(ma - mb)
    rel_lo, rel_hi = boot.interval(rels)
    return {"abs": mean_a - mean_b, "abs_lo": abs_lo, "abs_hi": abs_hi,
            "rel": mean_a / mean_b - 1 if mean_b > 0 else math.nan, "rel_lo": rel_lo, "rel_hi": rel_hi}
