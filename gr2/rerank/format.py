"""Prompt and answer format of the re-ranker, and a parser that never fails.

A prompt is chat messages: a system turn stating the task and the answer format, a user turn with
the history (oldest -> newest) and the K candidates in incoming order, each named by its label (the
item's SID token string when a SID map is given, else a short label ``[A]``, ``[B]``, ...), and an
optional assistant turn. Answers name candidates by label, most likely first, joined by ``" > "``;
the reasoning style puts ``<think>...</think>`` before the ranking.

>>> labels = candidate_labels([7, 3, 9])
>>> labels
['[A]', '[B]', '[C]']
>>> answer = format_answer([9, 7, 3], dict(zip([7, 3, 9], labels)), reasoning="likes sci-fi")
>>> answer
'<think>\\nlikes sci-fi\\n</think>\\n[C] > [A] > [B]'
>>> parse_ranking(answer, [7, 3, 9], labels)
ParsedRanking(ranking=[9, 7, 3], valid=True, complete=True, identity=False)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import pandas as pd

from gr2.data.schema import CATEGORY_SEPARATOR

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SEPARATOR = " > "
# Text allowed around labels in an answer: separators, list numbering, whitespace, a "Ranking:" prefix.
_FILLER = re.compile(r"(?:ranking\s*:|[\s>,;|.\-:()\d])*", re.IGNORECASE)


class FormatError(ValueError):
    """Inputs to the prompt builder that cannot make a prompt (not raised for model outputs)."""


class SIDLookup(Protocol):
    """What the formatter needs from ``gr2.sid.sidmap.SIDMap``."""

    def token_string(self, item_id: int) -> str: ...


def _short_label(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("A") + rem) + letters
    return f"[{letters}]"


def candidate_labels(candidates: Sequence[int], sid_map: SIDLookup | None = None) -> list[str]:
    """One unique label per candidate: its SID token string, or ``[A]``, ``[B]``, ... ``[Z]``, ``[AA]``.

    >>> candidate_labels([5, 6], None)
    ['[A]', '[B]']
    >>> len(set(candidate_labels(list(range(30)))))
    30
    """
    if sid_map is None:
        return [_short_label(i) for i in range(len(candidates))]
    labels = [sid_map.token_string(int(c)) for c in candidates]
    if len(set(labels)) != len(labels) or not all(labels):
        dup = [c for c, label in zip(candidates, labels, strict=True) if labels.count(label) > 1 or not label]
        raise FormatError(f"SID labels must be unique and non-empty; items {dup} share or lack a SID")
    return labels


@dataclass(frozen=True)
class LineDetail:
    """How much metadata an item line carries: ``title_words`` (0 = the whole title), year, categories."""

    title_words: int = 0
    year: bool = True
    categories: bool = True


FULL = LineDetail()
# The prompt-compression hook of :func:`build_messages`: sample -> (history items kept, line detail).
Compressor = Callable[[Mapping[str, Any]], tuple[Sequence[int], LineDetail]]


def _item_line(item_id: int, items: pd.DataFrame, label: str | None, detail: LineDetail = FULL) -> str:
    if item_id in items.index:
        row = items.loc[item_id]
        raw_title = row.get("title", "")
        title = ("" if raw_title is None or pd.isna(raw_title) else str(raw_title)) or f"item {item_id}"
        if detail.title_words:
            title = " ".join(title.split()[: detail.title_words])
        year = row.get("year")
        if detail.year and year is not None and not pd.isna(year):
            title += f" ({int(year)})"
        cats = str(row.get("categories", "") or "").replace(CATEGORY_SEPARATOR, ", ") if detail.categories else ""
    else:
        title, cats = f"item {item_id}", ""
    text = f"{label} {title}" if label else title
    return f"{text} | {cats}" if cats else text


def _indexed(items: pd.DataFrame) -> pd.DataFrame:
    if items.index.name == "item_id":
        return items
    if "item_id" not in items:
        raise FormatError("items table needs an item_id column (or index)")
    return items.drop_duplicates("item_id").set_index("item_id")


def format_answer(ranking: Sequence[int], labels: Mapping[int, str], reasoning: str | None = None) -> str:
    """The assistant text: ``<think>`` block when ``reasoning`` is given, then labels joined by ``" > "``.

    >>> format_answer([2, 1], {1: "[A]", 2: "[B]"}, None)
    '[B] > [A]'
    """
    try:
        answer = SEPARATOR.join(labels[int(i)] for i in ranking)
    except KeyError as err:
        raise FormatError(f"ranking names item {err.args[0]} that has no label") from err
    if reasoning is None:
        return answer
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n{answer}"


def system_prompt(k: int, style: Literal["reasoning", "answer"], with_sids: bool) -> str:
    """The task statement and the exact answer format."""
    naming = "its semantic ID" if with_sids else "its label in square brackets"
    lines = [
        "You are a recommender re-ranker. Given a user's history and candidate items ordered by an "
        "upstream ranker, order the candidates by how likely the user is to pick each one next.",
        f"Name every one of the {k} candidates exactly once by {naming}, most likely first, "
        f"separated by '{SEPARATOR.strip()}'.",
    ]
    if style == "reasoning":
        lines.append(f"First reason briefly inside {THINK_OPEN}...{THINK_CLOSE}, then write only the ranking.")
    else:
        lines.append("Write only the ranking, nothing else.")
    return "\n".join(lines)


def build_messages(
    sample: Mapping[str, Any],
    items: pd.DataFrame,
    sid_map: SIDLookup | None = None,
    style: Literal["reasoning", "answer"] = "reasoning",
    reasoning: str | None = None,
    ranking: Sequence[int] | None = None,
    compress: Compressor | None = None,
) -> list[dict[str, str]]:
    """Chat messages for one sample (system, user, and assistant when ``ranking`` is given).

    ``compress`` (optional) shortens the long part: it returns the history items to keep and the metadata
    of every item line (:mod:`gr2.train.compressor`).
    """
    if style not in ("reasoning", "answer"):
        raise FormatError(f"style must be 'reasoning' or 'answer', got {style!r}")
    for key in ("history", "candidates"):
        if key not in sample:
            raise FormatError(f"sample has no {key!r} field")
    table = _indexed(items)
    candidates = [int(c) for c in sample["candidates"]]
    labels = candidate_labels(candidates, sid_map)
    history, detail = [int(h) for h in sample["history"]], FULL
    if compress is not None:
        kept, detail = compress(sample)
        history = [int(h) for h in kept]
    hist_labels = [sid_map.token_string(h) for h in history] if sid_map is not None else [None] * len(history)
    history_text = "\n".join(
        f"{n}. {_item_line(h, table, lab, detail)}"
        for n, (h, lab) in enumerate(zip(history, hist_labels, strict=True), 1)
    ) or "(no history)"
    cand_text = "\n".join(_item_line(c, table, lab, detail) for c, lab in zip(candidates, labels, strict=True))
    user = (f"History, oldest to newest:\n{history_text}\n\n"
            f"Candidates in incoming order:\n{cand_text}\n\n"
            f"Rank all {len(candidates)} candidates.")
    messages = [
        {"role": "system", "content": system_prompt(len(candidates), style, sid_map is not None)},
        {"role": "user", "content": user},
    ]
    if ranking is not None:
        if sorted(int(i) for i in ranking) != sorted(candidates):
            raise FormatError("ranking must be a permutation of the sample's candidates")
        text = format_answer(ranking, dict(zip(candidates, labels, strict=True)),
                             reasoning if style == "reasoning" else None)
        messages.append({"role": "assistant", "content": text})
    return messages


@dataclass(frozen=True)
class ParsedRanking:
    """A model answer read as a ranking.

    ``ranking`` is always a permutation of the candidates (named ones first, duplicates and unknown
    names dropped, unnamed ones appended in incoming order). ``valid``: the answer is well formed
    (closed think block, only known labels, no duplicate, nothing else but separators).
    ``complete``: every candidate was named. ``identity``: ``ranking`` equals the incoming order.
    """

    ranking: list[int]
    valid: bool
    complete: bool
    identity: bool


def answer_part(text: str) -> tuple[str, bool]:
    """The text after the think block, and whether the think markup is well formed.

    >>> answer_part("<think>x</think> [A]")
    (' [A]', True)
    >>> answer_part("<think>never closed [A]")
    ('', False)
    """
    opens, closes = text.count(THINK_OPEN), text.count(THINK_CLOSE)
    if closes == 0:
        return ("", False) if opens else (text, True)
    head, _, tail = text.rpartition(THINK_CLOSE)
    well_formed = opens == 1 and closes == 1 and head.lstrip().startswith(THINK_OPEN)
    return tail, well_formed


def parse_ranking(text: str, candidates: Sequence[int], labels: Sequence[str]) -> ParsedRanking:
    """Read ``text`` as a ranking of ``candidates`` (named by ``labels``); never raises on any text.

    >>> parse_ranking("[B] > [B] > [Z]", [10, 20, 30], ["[A]", "[B]", "[C]"])
    ParsedRanking(ranking=[20, 10, 30], valid=False, complete=False, identity=False)
    """
    cands = [int(c) for c in candidates]
    if len(cands) != len(labels):
        raise FormatError(f"{len(cands)} candidates but {len(labels)} labels")
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    answer, well_formed = answer_part(text)
    by_label = dict(zip(labels, cands, strict=True))
    named: list[int] = []
    duplicate = False
    pattern = "|".join(re.escape(lab) for lab in sorted(by_label, key=len, reverse=True) if lab)
    leftover = answer
    if pattern and answer:
        for match in re.finditer(pattern, answer):
            item = by_label[match.group(0)]
            if item in named:
                duplicate = True
            else:
                named.append(item)
        leftover = re.sub(pattern, " ", answer)
    clean = _FILLER.fullmatch(leftover) is not None
    complete = len(named) == len(cands)
    ranking = named + [c for c in cands if c not in named]
    valid = bool(well_formed and clean and not duplicate and named)
    return ParsedRanking(ranking=ranking, valid=valid, complete=complete, identity=ranking == cands)
