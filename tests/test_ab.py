"""A/B report (serving/ab.py): joining response logs with later interactions, per-variant metrics and lift."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from serving.ab import ab_report, join_next_interaction, render_report

INTERACTIONS = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 3, 4], "item_id": [10, 11, 12, 20, 21, 30, 40],
                             "timestamp": [100, 200, 300, 100, 250, 50, 500]})


def _log(rows: list[tuple[str, int, float, list[int], list[int]]]) -> pd.DataFrame:
    return pd.DataFrame([{"variant": v, "user_id": u, "ts": ts, "candidates": c, "ranking": r, "fallback": False}
                         for v, u, ts, c, r in rows])


def test_each_row_joins_the_users_first_interaction_at_or_after_it() -> None:
    log = _log([("a", 1, 150, [11, 12], [12, 11]), ("a", 1, 300, [12, 5], [5, 12]), ("a", 2, 260, [1, 2], [2, 1]),
                ("a", 3, 10, [7, 8], [8, 7]), ("a", 9, 10, [1, 2], [1, 2])])
    joined = join_next_interaction(log, INTERACTIONS)
    assert joined["target"].tolist() == [11, 12, 30]  # user 2 has nothing after 260, user 9 nothing at all
    assert joined["covered"].tolist() == [True, True, False]


def test_report_measures_each_variant_and_the_lift() -> None:
    rows = []
    for user in range(1, 5):
        target = {1: 10, 2: 20, 3: 30, 4: 40}[user]
        cands = [target, 99, 98]
        rows.append(("champion", user, 0, cands, [99, target, 98] if user % 2 else cands))  # R@1 = 0.5, target 1st or 2nd
        rows.append(("challenger", user, 0, cands, cands))  # R@1 = 1
    report = ab_report(_log(rows), INTERACTIONS, champion="champion", n_boot=200)
    assert report["variants"]["champion"]["R@1"]["mean"] == 0.5
    assert report["variants"]["challenger"]["R@1"]["mean"] == 1.0
    n3_champion = (1 + 1 / math.log2(3)) / 2
    assert report["variants"]["champion"]["N@3"]["mean"] == pytest.approx(n3_champion)
    lift = report["lifts"]["challenger"]["R@1"]
    assert lift["rel"] == pytest.approx(1.0) and lift["abs"] == pytest.approx(0.5)
    assert lift["lo"] <= lift["rel"] <= lift["hi"]
    assert lift["abs_lo"] <= lift["abs"] <= lift["abs_hi"]
    assert "| challenger |" in render_report(report)
    with pytest.raises(ValueError, match="champion variant 'nobody'"):
        ab_report(_log(rows), INTERACTIONS, champion="nobody")


@pytest.mark.parametrize("name", ["serving.ab", "gr2.models.constrained"])
def test_docstring_examples(name: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
