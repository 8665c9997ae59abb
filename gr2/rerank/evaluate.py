"""Score any re-ranker's output against the samples, with bootstrap CIs and lifts over the incoming order.

A predictions table has ``sample_id`` and either ``ranking`` (item ids, best first) or ``text`` (a raw
model answer, parsed with ``format.parse_ranking``; optional ``labels`` per row, else ``[A]``...).
Nothing is dropped silently: unknown or duplicate sample ids, rankings that are not permutations of
the sample's candidates and rows without an answer are listed in ``EvalReport.problems`` and left
out of the scores; samples without a prediction are counted in ``missing``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gr2.rerank.format import SIDLookup, candidate_labels, parse_ranking
from gr2.rerank.metrics import METRIC_NAMES, STRICT_NAMES, Bootstrap, paired_lift, per_sample_metrics

RATE_NAMES = ("identity", "invalid", "keep_first")
LIFT_METRICS = ("R@1", "R@3", "R@5", "N@3", "N@5", "MRR")


class PredictionsError(ValueError):
    """A predictions file that cannot be read at all (missing file, columns or format)."""


@dataclass
class EvalReport:
    """Scores of the accepted predictions and everything that was not scored, with reasons."""

    n_samples: int
    n_predictions: int
    n_scored: int
    metrics: dict[str, dict[str, float]]
    lifts: dict[str, dict[str, float]]
    problems: list[str] = field(default_factory=list)
    missing: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and self.n_scored > 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a ``.parquet``, ``.jsonl`` or ``.json`` (records) predictions file."""
    path = Path(path)
    if not path.exists():
        raise PredictionsError(f"{path}: predictions file not found")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix == ".jsonl":
            frame = pd.read_json(path, lines=True, dtype=False)
        elif path.suffix == ".json":
            frame = pd.DataFrame(json.loads(path.read_text()))
        else:
            raise PredictionsError(f"{path}: use .parquet, .jsonl or .json (got {path.suffix or 'no suffix'})")
    except PredictionsError:
        raise
    except Exception as err:  # pandas/pyarrow/json raise many types
        raise PredictionsError(f"{path}: cannot be read ({type(err).__name__}: {err})") from err
    return frame


def _as_ids(value: Any) -> list[int] | None:
    if isinstance(value, str | bytes) or not hasattr(value, "__iter__"):
        return None
    try:
        out = [int(v) for v in value]
    except (TypeError, ValueError):
        return None
    if any(float(v) != o for v, o in zip(value, out, strict=True)):
        return None
    return out


def _check_permutation(ranking: list[int], candidates: list[int]) -> str | None:
    if sorted(ranking) == sorted(candidates):
        return None
    cand_set = set(candidates)
    unknown = sorted({i for i in ranking if i not in cand_set})
    missing = [c for c in candidates if c not in ranking]
    repeated = sorted({i for i in ranking if ranking.count(i) > 1})
    parts = [f"unknown item(s) {unknown}" if unknown else "", f"missing {missing}" if missing else "",
             f"repeated {repeated}" if repeated else ""]
    return (f"ranking is not a permutation of the {len(candidates)} candidates: "
            + ", ".join(p for p in parts if p))


def summarize(
    samples: pd.DataFrame, rankings: Sequence[Sequence[int]], valid: Sequence[bool] | None = None,
    n_boot: int = 1000, seed: int = 0, by_user: bool = True,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], pd.DataFrame]:
    """Mean and 95% CI of every metric and rate, and the paired lift over the incoming order."""
    frame = per_sample_metrics(samples, rankings, valid)
    incoming = per_sample_metrics(samples, [list(c) for c in samples["candidates"]])
    groups = samples["user_id"].to_numpy() if by_user and "user_id" in samples else None
    boot = Bootstrap(len(frame), groups, n_boot, seed)
    metrics: dict[str, dict[str, float]] = {}
    for name in (*METRIC_NAMES, *STRICT_NAMES, *RATE_NAMES):
        values = frame[name].to_numpy(float)
        lo, hi = boot.interval(boot.means(values))
        mean = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        metrics[name] = {"mean": mean, "lo": lo, "hi": hi}
    lifts = {name: paired_lift(frame[name].to_numpy(float), incoming[name].to_numpy(float), boot=boot)
             for name in LIFT_METRICS}
    return metrics, lifts, frame


def score_predictions(
    samples_df: pd.DataFrame, predictions_df: pd.DataFrame, sid_map: SIDLookup | None = None,
    n_boot: int = 1000, seed: int = 0, by_user: bool = True,
) -> EvalReport:
    """Score the predictions that can be scored; list every one that cannot, with the reason."""
    if "sample_id" not in predictions_df:
        raise PredictionsError(f"predictions need a 'sample_id' column; found {list(predictions_df.columns)}")
    if "ranking" not in predictions_df and "text" not in predictions_df:
        raise PredictionsError("predictions need a 'ranking' (item ids) or 'text' (model answer) column")
    index = {str(s): i for i, s in enumerate(samples_df["sample_id"])}
    problems: list[str] = []
    seen: set[str] = set()
    rows, rankings, valid = [], [], []
    for rec in predictions_df.to_dict("records"):
        sid = str(rec["sample_id"])
        if sid not in index:
            problems.append(f"sample_id {sid}: not in the samples (unknown id)")
            continue
        if sid in seen:
            problems.append(f"sample_id {sid}: duplicate prediction (the first one was scored)")
            continue
        seen.add(sid)
        sample = samples_df.iloc[index[sid]]
        candidates = [int(c) for c in sample["candidates"]]
        ranking_value = rec.get("ranking")
        has_ranking = ranking_value is not None and not (np.isscalar(ranking_value) and pd.isna(ranking_value))
        if has_ranking:
            ranking = _as_ids(ranking_value)
            if ranking is None:
                problems.append(f"sample_id {sid}: ranking is not a list of item ids (got {ranking_value!r:.60})")
                continue
            error = _check_permutation(ranking, candidates)
            if error:
                problems.append(f"sample_id {sid}: {error}")
                continue
            is_valid = True
        elif isinstance(rec.get("text"), str):
            labels = rec.get("labels")
            labels = ([str(x) for x in labels] if labels is not None and not np.isscalar(labels)
                      else candidate_labels(candidates, sid_map))
            if len(labels) != len(candidates):
                problems.append(f"sample_id {sid}: {len(labels)} labels for {len(candidates)} candidates")
                continue
            parsed = parse_ranking(rec["text"], candidates, labels)
            ranking, is_valid = parsed.ranking, parsed.valid and parsed.complete
        else:
            problems.append(f"sample_id {sid}: neither a ranking nor a text answer")
            continue
        rows.append(index[sid])
        rankings.append(ranking)
        valid.append(is_valid)
    scored = samples_df.iloc[rows].reset_index(drop=True)
    if rows:
        metrics, lifts, _ = summarize(scored, rankings, valid, n_boot=n_boot, seed=seed, by_user=by_user)
    else:
        metrics, lifts = {}, {}
    return EvalReport(n_samples=len(samples_df), n_predictions=len(predictions_df), n_scored=len(rows),
                      metrics=metrics, lifts=lifts, problems=problems, missing=len(samples_df) - len(seen))


def shuffled_view(samples: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The same samples with candidates presented in a random order (``target_position`` updated).

    Scoring a model on both views measures position bias: an order-blind model scores the same.
    """
    rng = np.random.default_rng(seed)
    out = samples.copy()
    shuffled = []
    for cands in samples["candidates"]:
        cands = [int(c) for c in cands]
        shuffled.append([cands[i] for i in rng.permutation(len(cands))])
    out["candidates"] = shuffled
    out["target_position"] = [c.index(int(t)) for c, t in zip(shuffled, samples["target"], strict=True)]
    return out
