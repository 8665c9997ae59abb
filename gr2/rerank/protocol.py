"""The evaluation protocol: a global temporal cut with many evaluated positions.

Every interaction is a *position* (the user's next item given the earlier ones). Interactions are
ordered per user by ``(timestamp, item_id)``, as in ``gr2 data split``. Three timestamps cut time:

``fit_start <= t < validation_start``
    train positions: the legacy scorer is fit on them (with statistics from ``t < fit_start`` only)
    and the train samples are built from them;
``validation_start <= t < test_start``
    validation positions;
``t >= test_start``
    test positions.

Everything a model learns (co-occurrence, popularity, scorer weights, SASRec weights) comes from
interactions before ``validation_start``, so strictly before every evaluated position. A sample's
history is the user's items before the target in this order (the request-time input).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

SPLITS = ("train", "validation", "test")


class ProtocolError(ValueError):
    """The interactions cannot be cut as configured (too few, or all at one time)."""


@dataclass(frozen=True)
class Cuts:
    """Timestamps (same unit as the data) that separate the protocol's periods."""

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


def assign_splits(ordered: pd.DataFrame, cuts: Cuts) -> pd.Series:
    """The protocol split of each position ("train", "validation", "test" or "" for statistics only)."""
    ts = ordered["timestamp"].to_numpy()
    split = np.full(len(ts), "", dtype=object)
    split[(ts >= cuts.fit_start) & (ts < cuts.validation_start)] = "train"
    split[(ts >= cuts.validation_start) & (ts < cuts.test_start)] = "validation"
    split[ts >= cuts.test_start] = "test"
    return pd.Series(split, index=ordered.index, name="split")


def user_sequences(ordered: pd.DataFrame) -> dict[int, np.ndarray]:
    """Item ids per user in protocol order."""
    return {int(u): g.to_numpy() for u, g in ordered.groupby("user_id", sort=True)["item_id"]}
