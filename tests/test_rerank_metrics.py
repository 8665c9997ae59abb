"""Ranking metrics, diagnostics and bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gr2.rerank.metrics import (
    Bootstrap,
    auc,
    bootstrap_ci,
    evaluate_rankings,
    graded_ndcg,
    mrr,
    ndcg_at_k,
    paired_lift,
    recall_at_k,
)


def test_single_target_metrics_by_hand():
    ranking = [5, 9, 2, 7]
    assert [recall_at_k(ranking, 2, k) for k in (1, 3)] == [0.0, 1.0]
    assert ndcg_at_k(ranking, 2, 3) == pytest.approx(0.5)
    assert ndcg_at_k(ranking, 7, 3) == 0.0
    assert mrr(ranking, 9) == 0.5


def test_multi_positive_metrics():
    assert auc([1, 2, 3, 4], [1, 2]) == 1.0 and auc([3, 4, 1, 2], [1, 2]) == 0.0
    assert graded_ndcg([2, 1], {1: 2.0, 2: 1.0}) < 1.0 == graded_ndcg([1, 2], {1: 2.0, 2: 1.0})
    assert graded_ndcg([1, 2], {}) is None


def test_evaluate_rankings_diagnostics():
    samples = pd.DataFrame({"candidates": [[1, 2, 3], [4, 5, 6], [7, 8, 9]], "target": [1, 6, 8],
                            "positives": [[1], [6, 4], [8]]})
    out = evaluate_rankings(samples, [[1, 2, 3], [6, 4, 5], [9, 7, 8]], valid=[True, True, False])
    assert out["R@1"] == pytest.approx(2 / 3) and out["identity_rate"] == pytest.approx(1 / 3)
    assert out["invalid_rate"] == pytest.approx(1 / 3) and out["keep_first_r1"] == pytest.approx(1 / 3)
    assert out["AUC"] == pytest.approx((1 + 1 + 0) / 3)
    with pytest.raises(ValueError, match="rankings"):
        evaluate_rankings(samples, [[1, 2, 3]])


@given(st.permutations(list(range(10))), st.integers(0, 9))
@settings(max_examples=100, deadline=None)
def test_metrics_are_bounded_and_consistent(ranking, target):
    assert 0 <= ndcg_at_k(ranking, target, 5) <= recall_at_k(ranking, target, 5) <= 1
    assert mrr(ranking, target) == pytest.approx(1 / (ranking.index(target) + 1))
    assert auc(ranking, [target]) == pytest.approx((9 - ranking.index(target)) / 9)


def test_bootstrap_covers_the_mean_and_clusters_widen_it():
    rng = np.random.default_rng(0)
    user_effect = np.repeat(rng.normal(0, 1, 40), 25)  # 40 users, 25 correlated samples each
    values = (user_effect + rng.normal(0, 0.1, 1000) > 0).astype(float)
    users = np.repeat(np.arange(40), 25)
    lo, hi = bootstrap_ci(values, n=500, seed=1)
    clo, chi = bootstrap_ci(values, n=500, seed=1, groups=users)
    assert lo < values.mean() < hi and clo < values.mean() < chi
    assert chi - clo > 2 * (hi - lo)
    assert math.isnan(bootstrap_ci([], n=10)[0])


def test_paired_lift_detects_a_real_gain_and_not_a_null_one():
    rng = np.random.default_rng(0)
    base = (rng.random(2000) < 0.2).astype(float)
    better = np.maximum(base, (rng.random(2000) < 0.1).astype(float))
    out = paired_lift(better, base, n=500, seed=0)
    assert out["abs_lo"] > 0 and out["rel"] > 0.2
    null = paired_lift(base, base, n=200, seed=0)
    assert null["abs"] == 0 and null["abs_lo"] == 0 == null["abs_hi"]


def test_bootstrap_ignores_nan_and_checks_groups():
    boot = Bootstrap(4, None, n_boot=50, seed=0)
    assert np.all(boot.means([1.0, np.nan, 1.0, 1.0]) == 1.0)
    with pytest.raises(ValueError, match="groups"):
        Bootstrap(3, [1, 2], n_boot=5)
