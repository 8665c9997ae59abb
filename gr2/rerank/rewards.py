"""Verifiable rewards for re-ranking, with TRL's reward-function signature.

Each function is ``f(completions, **kwargs) -> list[float | None]``: ``completions`` are strings or
chat messages (``[{"role": "assistant", "content": ...}]``) and ``kwargs`` carry the dataset columns
per completion (``candidates``, ``target``, optional ``target_position``, ``labels``, ``positives``,
``sample_id``). Without a ``labels`` column the short labels ``[A]``, ``[B]``, ... are assumed.

Notation: K candidates, ``p_in`` the target's 0-based incoming position, ``p_out`` its position in
the parsed answer, "valid" = the answer is a well-formed, complete permutation
(``ParsedRanking.valid and .complete``), ``alpha = 0.2`` the format bonus.

Two hacks are closed by construction (and tested): copying the incoming order earns no bonus unless
the target is already first, and an invalid permutation earns no ranking credit (it gets the floor).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gr2.rerank.format import ParsedRanking, answer_part, candidate_labels, parse_ranking
from gr2.rerank.metrics import auc, graded_ndcg, relevance_of

ALPHA = 0.2
INVALID = -1.0  # floor of the promotion-based rewards: below any valid answer's (p_in - p_out) / K


def completion_text(completion: Any) -> str:
    """The assistant text of a completion given as a string or as chat messages.

    >>> completion_text([{"role": "assistant", "content": "[A] > [B]"}])
    '[A] > [B]'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, Sequence) and completion:
        content = completion[-1].get("content", "") if isinstance(completion[-1], dict) else completion[-1]
        if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
            return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return "" if content is None else str(content)
    return ""


def _column(kwargs: dict[str, Any], name: str, n: int) -> list[Any]:
    if name not in kwargs or kwargs[name] is None:
        raise KeyError(f"reward needs the dataset column {name!r} (one value per completion)")
    values = list(kwargs[name])
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


def _parsed(completions: Sequence[Any], kwargs: dict[str, Any]) -> tuple[list[ParsedRanking], list[list[int]]]:
    n = len(completions)
    candidates = [[int(c) for c in cands] for cands in _column(kwargs, "candidates", n)]
    labels = (_column(kwargs, "labels", n) if kwargs.get("labels") is not None
              else [candidate_labels(c) for c in candidates])
    parsed = [parse_ranking(completion_text(text), cands, [str(x) for x in labs])
              for text, cands, labs in zip(completions, candidates, labels, strict=True)]
    return parsed, candidates


def _positions_in(candidates: list[list[int]], kwargs: dict[str, Any]) -> list[int]:
    targets = [int(t) for t in _column(kwargs, "target", len(candidates))]
    return [cands.index(t) if t in cands else -1 for cands, t in zip(candidates, targets, strict=True)]


def _ok(p: ParsedRanking) -> bool:
    return p.valid and p.complete


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """``1`` if the answer is a valid permutation (think block, if any, well formed), else ``0``.

    >>> format_reward(["[B] > [A]", "[B] > [B]"], candidates=[[1, 2], [1, 2]])
    [1.0, 0.0]
    """
    parsed, _ = _parsed(completions, kwargs)
    return [float(_ok(p)) for p in parsed]


def reasoning_format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """``1`` if the answer is ``<think>...</think>`` followed by a valid permutation, else ``0``.

    >>> reasoning_format_reward(["<think>x</think>[B] > [A]", "[B] > [A]"], candidates=[[1, 2], [1, 2]])
    [1.0, 0.0]
    """
    parsed, _ = _parsed(completions, kwargs)
    return [float(_ok(p) and "</think>" in completion_text(c) and answer_part(completion_text(c))[1])
            for p, c in zip(parsed, completions, strict=True)]


def rank_promotion_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """``(p_in - p_out) / K`` for a valid answer, ``INVALID = -1`` otherwise; in ``[-1, 1)``.

    ``None`` when the target is not among the candidates (nothing to grade).

    >>> rank_promotion_reward(["[B] > [A]", "[A] > [B]"], candidates=[[1, 2]] * 2, target=[2, 2])
    [0.5, 0.0]
    """
    parsed, candidates = _parsed(completions, kwargs)
    out: list[float | None] = []
    for p, cands, p_in in zip(parsed, candidates, _positions_in(candidates, kwargs), strict=True):
        if p_in < 0:
            out.append(None)
        elif not _ok(p):
            out.append(INVALID)
        else:
            out.append((p_in - p.ranking.index(cands[p_in])) / len(cands))
    return out


def conditional_reward(completions: Sequence[Any], alpha: float = ALPHA, **kwargs: Any) -> list[float | None]:
    """GR2's conditional combination of promotion and format.

    ``R = (p_in - p_out)/K + alpha * [p_out < p_in or p_out = 0]`` for a valid answer, ``R = -1``
    otherwise; in ``[-1, 1 + alpha)``. Copying the incoming order gives ``p_out = p_in``: 0, plus
    the bonus only when the target was already first.

    >>> conditional_reward(["[A] > [B]", "[B] > [A]"], candidates=[[1, 2]] * 2, target=[2, 2])
    [0.0, 0.7]
    """
    parsed, candidates = _parsed(completions, kwargs)
    out: list[float | None] = []
    for p, cands, p_in in zip(parsed, candidates, _positions_in(candidates, kwargs), strict=True):
        if p_in < 0:
            out.append(None)
            continue
        if not _ok(p):
            out.append(INVALID)
            continue
        p_out = p.ranking.index(cands[p_in])
        bonus = alpha if (p_out < p_in or p_out == 0) else 0.0
        out.append((p_in - p_out) / len(cands) + bonus)
    return out


def naive_reward(completions: Sequence[Any], alpha: float = ALPHA, **kwargs: Any) -> list[float | None]:
    """The unconditional sum that LLMs hack (kept for ablations): ``(p_in - p_out)/K + alpha * format``.

    ``p_out`` is read from the repaired ranking even when the answer is invalid, and the bonus is
    paid for any valid answer, so copying the incoming order and naming only the favourite both pay.

    >>> naive_reward(["[A] > [B]", "[B]"], candidates=[[1, 2]] * 2, target=[2, 2])
    [0.2, 0.5]
    """
    parsed, candidates = _parsed(completions, kwargs)
    out: list[float | None] = []
    for p, cands, p_in in zip(parsed, candidates, _positions_in(candidates, kwargs), strict=True):
        if p_in < 0:
            out.append(None)
            continue
        out.append((p_in - p.ranking.index(cands[p_in])) / len(cands) + alpha * float(_ok(p)))
    return out


def auc_ndcg_reward(completions: Sequence[Any], alpha: float = ALPHA, **kwargs: Any) -> list[float | None]:
    """Multi-positive reward, gated to format only when the answer is invalid or copies a weak order.

    With ``positives`` (the target graded 2, other positives 1; see ``metrics.relevance_of``):
    ``R = alpha * F + (1 - alpha) * (AUC + gNDCG) / 2`` for a valid answer that is not the incoming
    order, or is the incoming order when that order is already ideal (gNDCG = 1);
    ``R = alpha * F`` otherwise (``F`` = format reward). AUC falls back to gNDCG when undefined.
    In ``[0, 1]``.

    >>> auc_ndcg_reward(["[A] > [B] > [C]", "[B] > [C] > [A]"], candidates=[[1, 2, 3]] * 2,
    ...                 target=[2, 2], positives=[[2, 3], [2, 3]])
    [0.2, 1.0]
    """
    parsed, candidates = _parsed(completions, kwargs)
    n = len(completions)
    targets = [int(t) for t in _column(kwargs, "target", n)]
    positives = _column(kwargs, "positives", n) if kwargs.get("positives") is not None else [[t] for t in targets]
    out: list[float | None] = []
    for p, cands, target, pos in zip(parsed, candidates, targets, positives, strict=True):
        if target not in cands:
            out.append(None)
            continue
        fmt = float(_ok(p))
        relevance = relevance_of(target, [int(x) for x in pos if int(x) in cands])
        incoming_ideal = (graded_ndcg(cands, relevance) or 0.0) >= 1.0 - 1e-12
        if not _ok(p) or (p.identity and not incoming_ideal):
            out.append(alpha * fmt)
            continue
        ndcg = graded_ndcg(p.ranking, relevance) or 0.0
        area = auc(p.ranking, list(relevance))
        quality = (ndcg + (ndcg if area is None else area)) / 2
        out.append(alpha * fmt + (1 - alpha) * quality)
    return out


def kendall_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """``(tau + 1) / 2`` for two rankings of the same items: 1 identical, 0 reversed.

    >>> kendall_agreement([1, 2, 3], [1, 2, 3]), kendall_agreement([1, 2, 3], [3, 2, 1])
    (1.0, 0.0)
    """
    if sorted(a) != sorted(b):
        raise ValueError("kendall_agreement needs two rankings of the same items")
    if len(a) < 2:
        return 1.0
    pos_b = {item: i for i, item in enumerate(b)}
    ranks = np.array([pos_b[item] for item in a])
    upper = np.triu_indices(len(a), k=1)
    concordant = (ranks[upper[0]] < ranks[upper[1]]).mean()
    return float(concordant)


def shuffle_consistency_reward(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """Agreement of a ranking with the rankings of the same sample presented in another order.

    For completion ``i`` of sample ``s`` (column ``sample_id``), partners are the valid completions
    of ``s`` whose ``candidates`` come in a different order; ``R_i = mean_j (tau(i, j) + 1) / 2``
    over item-id rankings (0 for an invalid answer, ``None`` without a valid partner). In ``[0, 1]``.
    A ranking that follows the presented positions (position bias) disagrees across shuffles.
    Use it as an auxiliary term next to a promotion reward (a fixed order is consistent too).

    >>> shuffle_consistency_reward(["[A] > [B]", "[B] > [A]", "[A] > [B]"],
    ...     candidates=[[1, 2], [2, 1], [2, 1]], sample_id=["s", "s", "s"])
    [0.5, 1.0, 0.0]
    """
    parsed, candidates = _parsed(completions, kwargs)
    groups = [str(g) for g in _column(kwargs, "sample_id", len(completions))]
    out: list[float | None] = []
    for p, cands, group in zip(parsed, candidates, groups, strict=True):
        partners = [j for j in range(len(parsed)) if groups[j] == group and candidates[j] != cands
                    and _ok(parsed[j])]
        if not partners:
            out.append(None)
        elif not _ok(p):
            out.append(0.0)
        else:
            out.append(float(np.mean([kendall_agreement(p.ranking, parsed[j].ranking) for j in partners])))
    return out


REWARDS = {
    "format": format_reward,
    "reasoning_format": reasoning_format_reward,
    "rank_promotion": rank_promotion_reward,
    "conditional": conditional_reward,
    "naive": naive_reward,
    "auc_ndcg": auc_ndcg_reward,
    "shuffle_consistency": shuffle_consistency_reward,
}
