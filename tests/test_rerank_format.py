"""Prompt builder, answer format and the never-failing ranking parser (with hypothesis properties)."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gr2.rerank.format import (
    FormatError,
    build_messages,
    candidate_labels,
    format_answer,
    parse_ranking,
)

CANDS = [101, 205, 33, 47, 58, 61, 72, 88, 90, 12]
LABELS = candidate_labels(CANDS)


class TinySIDs:
    """Stand-in with the one method the formatter uses from gr2.sid.sidmap.SIDMap."""

    def token_string(self, item_id: int) -> str:
        return f"<a_{item_id % 7}><b_{item_id // 7 % 11}><c_{item_id}>"


ITEMS = pd.DataFrame({
    "item_id": [*CANDS, 1, 2],
    "title": [f"Movie {i}" for i in [*CANDS, 1, 2]],
    "categories": ["Drama|Comedy"] * 12,
    "year": pd.array([1995] * 11 + [None], dtype="Int64"),
})
SAMPLE = {"sample_id": "s", "history": [1, 2], "candidates": CANDS, "target": 33, "target_position": 2}


def test_labels_are_unique_short_or_sid():
    assert LABELS[:3] == ["[A]", "[B]", "[C]"] and len(set(LABELS)) == 10
    sids = candidate_labels(CANDS, TinySIDs())
    assert sids[0] == TinySIDs().token_string(101) and len(set(sids)) == 10


def test_duplicate_sids_are_refused():
    class Same:
        def token_string(self, item_id: int) -> str:
            return "<a_1>"

    with pytest.raises(FormatError, match="unique"):
        candidate_labels([1, 2], Same())


@pytest.mark.parametrize("style", ["reasoning", "answer"])
def test_messages_show_history_and_labelled_candidates(style):
    msgs = build_messages(SAMPLE, ITEMS, style=style, reasoning="because", ranking=list(reversed(CANDS)))
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    user = msgs[1]["content"]
    assert "Movie 1 (1995) | Drama, Comedy" in user and "[C] Movie 33 (1995)" in user
    assert user.index("Movie 1") < user.index("Movie 2") < user.index("[A] Movie 101")
    answer = msgs[2]["content"]
    assert answer.startswith("<think>") == (style == "reasoning")
    parsed = parse_ranking(answer, CANDS, LABELS)
    assert parsed.ranking == list(reversed(CANDS)) and parsed.valid and parsed.complete


def test_messages_with_sids_name_candidates_by_sid():
    sid = TinySIDs()
    msgs = build_messages(SAMPLE, ITEMS, sid_map=sid, style="answer", ranking=CANDS)
    assert sid.token_string(205) in msgs[1]["content"] and sid.token_string(1) in msgs[1]["content"]
    parsed = parse_ranking(msgs[2]["content"], CANDS, candidate_labels(CANDS, sid))
    assert parsed.identity and parsed.valid


def test_messages_reject_a_ranking_that_is_not_a_permutation():
    with pytest.raises(FormatError, match="permutation"):
        build_messages(SAMPLE, ITEMS, ranking=CANDS[:-1])


def test_parser_repairs_and_flags():
    p = parse_ranking("[C] > [A] > [C] > [Q]", CANDS, LABELS)
    assert p.ranking[:2] == [33, 101] and sorted(p.ranking) == sorted(CANDS)
    assert not p.valid and not p.complete and not p.identity
    assert parse_ranking(format_answer(CANDS, dict(zip(CANDS, LABELS, strict=True))), CANDS, LABELS).identity
    unclosed = parse_ranking("<think>I would say [B] > [A]", CANDS, LABELS)
    assert not unclosed.valid and unclosed.ranking == CANDS
    chatty = parse_ranking(" > ".join(LABELS) + " because I like them", CANDS, LABELS)
    assert not chatty.valid and chatty.complete


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_parser_never_fails_and_returns_a_permutation(text):
    p = parse_ranking(text, CANDS, LABELS)
    assert sorted(p.ranking) == sorted(CANDS)
    assert p.identity == (p.ranking == CANDS)


@given(st.lists(st.sampled_from([*LABELS, "[K]", "<think>", "</think>", " > ", ", ", "1.", "foo", "\n"]),
                max_size=25))
@settings(max_examples=300, deadline=None)
def test_parser_on_label_soup(parts):
    p = parse_ranking("".join(parts), CANDS, LABELS)
    assert sorted(p.ranking) == sorted(CANDS)
    if p.valid and p.complete:
        assert len(set(p.ranking)) == len(CANDS)


@given(st.permutations(CANDS), st.one_of(st.none(), st.text(alphabet=st.characters(blacklist_characters="<>"))))
@settings(max_examples=200, deadline=None)
def test_formatted_answers_round_trip(perm, reasoning):
    text = format_answer(perm, dict(zip(CANDS, LABELS, strict=True)), reasoning)
    p = parse_ranking(text, CANDS, LABELS)
    assert p.ranking == list(perm) and p.valid and p.complete
