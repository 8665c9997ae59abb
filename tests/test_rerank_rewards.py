"""Verifiable rewards: bounds, TRL call shapes, and the two hacks shown not to pay."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gr2.rerank.format import candidate_labels, format_answer
from gr2.rerank.rewards import (
    ALPHA,
    INVALID,
    auc_ndcg_reward,
    conditional_reward,
    format_reward,
    naive_reward,
    rank_promotion_reward,
    reasoning_format_reward,
    shuffle_consistency_reward,
)

CANDS = [11, 22, 33, 44, 55]
LABELS = candidate_labels(CANDS)
LAB = dict(zip(CANDS, LABELS, strict=True))
K = len(CANDS)


def answer(ranking, reasoning=None):
    return format_answer(ranking, LAB, reasoning)


def kw(n, target=33, **extra):
    return {"candidates": [CANDS] * n, "target": [target] * n, **{k: [v] * n for k, v in extra.items()}}


def test_copying_the_incoming_order_earns_no_bonus_unless_target_first():
    copy = [answer(CANDS)]
    assert conditional_reward(copy, **kw(1, target=33)) == [0.0]
    assert conditional_reward(copy, **kw(1, target=11)) == [pytest.approx(ALPHA)]
    # under the naive sum the same copy is paid the format bonus: the hack the condition closes
    assert naive_reward(copy, **kw(1, target=33)) == [pytest.approx(ALPHA)]
    promote = [answer([33, 11, 22, 44, 55])]
    promoted = conditional_reward(promote, **kw(1))[0]
    assert promoted == pytest.approx(2 / K + ALPHA) and promoted > naive_reward(copy, **kw(1))[0]


def test_an_invalid_permutation_earns_no_ranking_credit():
    bad = ["[C]", "[C] > [C] > [A] > [B] > [D] > [E]", "[C] > [A] > [B] > [D] > [E] > [Z]", "<think>[C] > [A]", ""]
    for reward in (rank_promotion_reward, conditional_reward):
        assert reward(bad, **kw(len(bad))) == [INVALID] * len(bad)
    assert auc_ndcg_reward(bad, **kw(len(bad), positives=[33])) == [0.0] * len(bad)
    assert format_reward(bad, **kw(len(bad))) == [0.0] * len(bad)
    # the naive reward pays "[C]" alone as if the target had been promoted (what the gate prevents)
    assert naive_reward(["[C]"], **kw(1))[0] == pytest.approx(2 / K)


def test_invalid_is_below_every_valid_answer():
    valid = [answer(list(p)) for p in itertools.permutations(CANDS)]
    worst_valid = min(conditional_reward(valid, **kw(len(valid))))
    assert worst_valid > INVALID
    assert min(auc_ndcg_reward(valid, **kw(len(valid), positives=[33, 55]))) >= 0.0


def test_chat_completions_and_label_columns():
    chat = [[{"role": "assistant", "content": answer([33, 11, 22, 44, 55], "think")}]]
    assert reasoning_format_reward(chat, **kw(1)) == [1.0]
    assert reasoning_format_reward([answer([33, 11, 22, 44, 55])], **kw(1)) == [0.0]
    sids = [f"<s_{c}>" for c in CANDS]
    text = "<s_33> > <s_11> > <s_22> > <s_44> > <s_55>"
    assert rank_promotion_reward([text], labels=[sids], **kw(1)) == [pytest.approx(2 / K)]
    assert rank_promotion_reward([text], **kw(1)) == [INVALID]  # labels default to [A].. and do not match
    with pytest.raises(KeyError, match="target"):
        rank_promotion_reward([text], candidates=[CANDS])


def test_auc_ndcg_gate_on_copying_a_weak_order():
    copy = answer(CANDS)
    assert auc_ndcg_reward([copy], **kw(1, positives=[33, 44])) == [pytest.approx(ALPHA)]
    assert auc_ndcg_reward([copy], **kw(1, target=11, positives=[11, 22])) == [pytest.approx(1.0)]
    better = answer([33, 44, 11, 22, 55])
    assert auc_ndcg_reward([better], **kw(1, positives=[33, 44])) == [pytest.approx(1.0)]


def test_shuffle_consistency_penalises_position_bias():
    shuffled = [55, 44, 33, 22, 11]
    lab2 = candidate_labels(shuffled)
    # position-biased policy: always answer the presented order
    biased = [answer(CANDS), format_answer(shuffled, dict(zip(shuffled, lab2, strict=True)))]
    content = [answer([33, 11, 22, 44, 55]), format_answer([33, 11, 22, 44, 55], dict(zip(shuffled, lab2,
                                                                                           strict=True)))]
    cols = {"candidates": [CANDS, shuffled], "sample_id": ["s", "s"]}
    assert shuffle_consistency_reward(biased, **cols) == [0.0, 0.0]
    assert shuffle_consistency_reward(content, **cols) == [1.0, 1.0]
    assert shuffle_consistency_reward(content[:1], candidates=[CANDS], sample_id=["s"]) == [None]


REWARDS_AND_RANGES = [
    (rank_promotion_reward, -1.0, 1.0),
    (conditional_reward, -1.0, 1.0 + ALPHA),
    (naive_reward, -1.0, 1.0 + ALPHA),
    (auc_ndcg_reward, 0.0, 1.0),
    (format_reward, 0.0, 1.0),
    (reasoning_format_reward, 0.0, 1.0),
]


@given(st.lists(st.one_of(st.text(max_size=60), st.permutations(CANDS).map(answer),
                          st.lists(st.sampled_from(LABELS), max_size=7).map(" > ".join)), min_size=1, max_size=6),
       st.sampled_from(CANDS))
@settings(max_examples=150, deadline=None)
def test_rewards_are_bounded_on_any_text(texts, target):
    n = len(texts)
    for reward, lo, hi in REWARDS_AND_RANGES:
        for value in reward(texts, **kw(n, target=target, positives=[target, 55], sample_id="s")):
            assert value is not None and lo <= value <= hi, reward.__name__
    values = shuffle_consistency_reward(texts, candidates=[CANDS] * n, sample_id=["s"] * n)
    assert all(v is None for v in values)  # one presentation only: nothing to compare
