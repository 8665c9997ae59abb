"""The evaluation protocol: one object that decides, for every stage, what may be learned from.

Every interaction is a *position* (the user's next item given the earlier ones), ordered per user by
``(timestamp, item_id)``. The protocol gives each position a *period*:

``context``
    learnable history that is not a train position (statistics for fitting the legacy scorer);
``train``
    train positions: the legacy scorer is fit on them and the train samples are built from them;
``validation`` / ``test``
    evaluated positions.

Two kinds (``rerank.protocol``):

``temporal``
    a global time cut: the latest ``test_fraction`` of interactions are test, the
    ``validation_fraction`` before them validation, the latest ``fit_fraction`` of the rest train.
``leave_one_out``
    per user (as GR2's public experiments): last item test, second to last validation, the latest
    ``fit_fraction`` of the rest train (at least one). Users with fewer than 3 interactions are context.

Either way the *learnable* interactions (``context`` + ``train``) are a prefix of every user's
sequence, and everything a model learns (SIDs, Feast statistics, legacy ranker, SASRec, the LM, the
teacher's statistics, train-sample positives) comes from them only. ``gr2 data split`` writes exactly
this split; every later stage reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

SPLITS = ("train", "validation", "test")
PERIODS = ("context", *SPLITS)
PROTOCOLS = ("temporal", "leave_one_out")
DAY = 86_400
ProtocolKind = Literal["temporal", "leave_one_out"]


class ProtocolError(ValueError):
    """The interactions cannot be cut as configured (too few, or all at one time)."""


@dataclass(frozen=True)
class Cuts:
    """Timestamps (same unit as the data) that separate the temporal protocol's periods."""

    fit_start: int
    validation_start: int
    test_start: int

    def as_dict(self) -> dict[str, int | str]:
        out: dict[str, int | str] = dict(asdict(self))
        for key, value in asdict(self).items():
            out[f"{key}_utc"] = pd.Timestamp(value, unit="s").isoformat()
        return out


def order_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """Sort by (user, timestamp, item_id) and add ``position``: the 0-based index in the user's sequence."""
    ordered = interactions.sort_values(["user_id", "timestamp", "item_id"], kind="mergesort").reset_index(drop=True)
    ordered["position"] = ordered.groupby("user_id").cumcount().astype("int64")
    return ordered


def _quantile_time(sorted_ts: np.ndarray, share_after: float) -> int:
    index = len(sorted_ts) - max(1, round(len(sorted_ts) * share_after))
    return int(sorted_ts[index])


def compute_cuts(
    interactions: pd.DataFrame, test_fraction: float, validation_fraction: float, fit_fraction: float
) -> Cuts:
    """Cut times so that the latest ``test_fraction`` of interactions are test positions, and so on.

    >>> frame = pd.DataFrame({"timestamp": range(100)})
    >>> compute_cuts(frame, 0.1, 0.1, 0.25)
    Cuts(fit_start=60, validation_start=80, test_start=90)
    """
    ts = np.sort(interactions["timestamp"].to_numpy())
    if len(ts) < 20:
        raise ProtocolError(f"need at least 20 interactions to cut time, got {len(ts)}")
    test_start = _quantile_time(ts, test_fraction)
    validation_start = _quantile_time(ts, test_fraction + validation_fraction)
    before = ts[ts < validation_start]
    if len(before) == 0:
        raise ProtocolError("no interaction lies before the validation cut; timestamps are too concentrated")
    fit_start = _quantile_time(before, fit_fraction)
    if not before[0] < fit_start < validation_start < test_start:
        raise ProtocolError(
            f"cuts are not increasing (first={before[0]}, fit={fit_start}, validation={validation_start}, "
            f"test={test_start}); timestamps have too many ties for these fractions"
        )
    return Cuts(fit_start=fit_start, validation_start=validation_start, test_start=test_start)


def _temporal_periods(ordered: pd.DataFrame, cuts: Cuts) -> np.ndarray:
    ts = ordered["timestamp"].to_numpy()
    period = np.full(len(ts), "context", dtype=object)
    period[(ts >= cuts.fit_start) & (ts < cuts.validation_start)] = "train"
    period[(ts >= cuts.validation_start) & (ts < cuts.test_start)] = "validation"
    period[ts >= cuts.test_start] = "test"
    return period


def _leave_one_out_periods(ordered: pd.DataFrame, fit_fraction: float) -> np.ndarray:
    from_end = ordered.groupby("user_id").cumcount(ascending=False).to_numpy()
    size = ordered["user_id"].map(ordered["user_id"].value_counts()).to_numpy()
    n_fit = np.maximum(1, np.round((size - 2) * fit_fraction)).astype(np.int64)
    splittable = size >= 3
    period = np.full(len(ordered), "context", dtype=object)
    period[splittable & (from_end >= 2) & (from_end < 2 + n_fit)] = "train"
    period[splittable & (from_end == 1)] = "validation"
    period[splittable & (from_end == 0)] = "test"
    return period


@dataclass
class ProtocolSplit:
    """Interactions in protocol order with the period of each position, and what follows from it."""

    kind: ProtocolKind
    ordered: pd.DataFrame  # order_interactions(...) plus a ``period`` column
    cuts: Cuts | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def period(self) -> pd.Series:
        return self.ordered["period"]

    @property
    def learnable_mask(self) -> np.ndarray:
        """Interactions any model, statistic or teacher may learn from."""
        return self.period.isin(("context", "train")).to_numpy()

    def learnable(self) -> pd.DataFrame:
        return self.ordered[self.learnable_mask]

    def fit_context(self) -> pd.DataFrame:
        """Interactions the legacy scorer's fit statistics come from (before every train position)."""
        return self.ordered[(self.period == "context").to_numpy()]

    def positions(self, split: str) -> pd.DataFrame:
        if split not in SPLITS:
            raise ProtocolError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
        return self.ordered[(self.period == split).to_numpy()]

    def visible_length(self, split: str) -> dict[int, int]:
        """Per user, how many items (a prefix) samples of ``split`` may look at for labels.

        Train samples see the learnable prefix only, validation samples everything but the test
        period, test samples everything; so no label of a sample comes from a later period.
        """
        hidden = {"train": ("validation", "test"), "validation": ("test",), "test": ()}[split]
        visible = ~self.period.isin(hidden).to_numpy()
        return {int(u): int(n) for u, n in
                pd.Series(visible, index=self.ordered.index).groupby(self.ordered["user_id"]).sum().items()}

    def stats_time(self, which: Literal["fit", "eval"]) -> int:
        """The as-of time of statistics: fit (before train positions) or eval (all learnable)."""
        if self.cuts is not None:
            return self.cuts.fit_start if which == "fit" else self.cuts.validation_start
        frame = self.fit_context() if which == "fit" else self.learnable()
        return int(frame["timestamp"].max()) + 1

    def sequences(self, learnable_only: bool = True) -> dict[int, list[int]]:
        """Item ids per user in protocol order (the learnable prefix by default)."""
        frame = self.learnable() if learnable_only else self.ordered
        return {int(u): g.tolist() for u, g in frame.groupby("user_id", sort=True)["item_id"]}

    def describe(self) -> dict:
        """Kind, cuts, per-period counts and warnings, for summaries."""
        counts = {p: int((self.period == p).sum()) for p in PERIODS}
        out: dict = {"kind": self.kind, "interactions": len(self.ordered), "periods": counts,
                     "learnable_interactions": int(self.learnable_mask.sum()), "warnings": list(self.warnings)}
        if self.cuts is not None:
            out.update(self.cuts.as_dict())
        return out


def _tie_warnings(ordered: pd.DataFrame, period: np.ndarray, test_fraction: float,
                  validation_fraction: float, tolerance: float) -> list[str]:
    n = len(ordered)
    out = []
    for name, wanted in (("test", test_fraction), ("validation", validation_fraction)):
        got = float((period == name).sum()) / n
        if abs(got - wanted) > tolerance:
            out.append(f"timestamp ties moved the {name} cut: {got:.1%} of interactions are {name} positions "
                       f"instead of {wanted:.0%} (many interactions share one timestamp; consider "
                       f"rerank.protocol=leave_one_out)")
    return out


def _loo_tie_warnings(ordered: pd.DataFrame, period: np.ndarray, tolerance: float) -> list[str]:
    """Warn when a user's test and validation items share one timestamp (item id then decides the order)."""
    frame = ordered.assign(period=period)
    test = frame[frame["period"] == "test"].set_index("user_id")["timestamp"]
    validation = frame[frame["period"] == "validation"].set_index("user_id")["timestamp"]
    share = float((test == validation.reindex(test.index)).mean()) if len(test) else 0.0
    if share > tolerance:
        return [f"timestamp ties decide the leave-one-out order for {share:.1%} of users (their last two items "
                f"share one timestamp, so the test item is the one with the larger item id)"]
    return []


def _gap_warning(ordered: pd.DataFrame, period: np.ndarray, max_gap_days: float) -> list[str]:
    """Warn when the learnable data ends long before the test positions (median over test users)."""
    frame = ordered.assign(period=period)
    last_learn = frame[frame["period"].isin(("context", "train"))].groupby("user_id")["timestamp"].max()
    first_test = frame[frame["period"] == "test"].groupby("user_id")["timestamp"].min()
    gap = (first_test - last_learn.reindex(first_test.index)).dropna() / DAY
    if gap.empty:
        return []
    median = float(gap.median())
    if median > max_gap_days:
        return [f"the training period ends long before the test period: median {median:.0f} days between a "
                f"test user's last learnable interaction and their first test interaction "
                f"(> {max_gap_days:.0f}); models learn from stale data"]
    return []


def apply_protocol(interactions: pd.DataFrame, kind: ProtocolKind, test_fraction: float,
                   validation_fraction: float, fit_fraction: float, tie_tolerance: float = 0.01,
                   max_gap_days: float = 365.0, cut_times: tuple[int, int, int] | None = None) -> ProtocolSplit:
    """Order the interactions and give every position its period under ``kind``.

    ``cut_times`` (fit_start, validation_start, test_start) pins the temporal cuts to dates instead of
    interaction shares, so that adding data after a cut moves nothing before it.
    """
    if kind not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {kind!r}; choose one of {list(PROTOCOLS)}")
    ordered = order_interactions(interactions)
    cuts = None
    if kind == "temporal" and cut_times is not None:
        if not cut_times[0] < cut_times[1] < cut_times[2]:
            raise ProtocolError(f"rerank.cut_times {list(cut_times)} must be increasing (fit < validation < test)")
        cuts = Cuts(*map(int, cut_times))
        period = _temporal_periods(ordered, cuts)
        warnings = []
    elif kind == "temporal":
        cuts = compute_cuts(ordered, test_fraction, validation_fraction, fit_fraction)
        period = _temporal_periods(ordered, cuts)
        warnings = _tie_warnings(ordered, period, test_fraction, validation_fraction, tie_tolerance)
    else:
        period = _leave_one_out_periods(ordered, fit_fraction)
        if not (period == "test").any():
            raise ProtocolError("no user has 3 or more interactions; leave-one-out has nothing to evaluate")
        warnings = _loo_tie_warnings(ordered, period, tie_tolerance)
    warnings += _gap_warning(ordered, period, max_gap_days)
    ordered["period"] = period
    return ProtocolSplit(kind=kind, ordered=ordered, cuts=cuts, warnings=warnings)


def protocol_from_config(interactions: pd.DataFrame, rerank) -> ProtocolSplit:
    """:func:`apply_protocol` with the settings of a ``RerankConfig``."""
    return apply_protocol(interactions, rerank.protocol, rerank.test_fraction, rerank.validation_fraction,
                          rerank.fit_fraction, rerank.warn_tie_share, rerank.warn_gap_days,
                          tuple(rerank.cut_times) if rerank.cut_times else None)
