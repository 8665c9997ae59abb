"""The mid-training task mixture: chat examples that teach a causal LM the catalog's SIDs and user sequences.

Tasks (any catalog in the canonical schema; ``persona`` needs ``categories`` and is skipped without them):

``next_item``    history of SIDs -> the SID of the next item
``sid_to_text``  a SID -> the item's text (title, year, categories, free text)
``text_to_sid``  the item's text -> its SID
``persona``      history of SIDs -> a short profile of the user's favourite categories
``item_text``    plain text about an item, to keep the language ability
``sequence``     a sliding window of a user's items (:func:`sequence_examples`): with the loss on the
                 whole sequence every item of the window is a next-item target

Each example is a TRL conversational prompt-completion record: ``{"prompt": [...], "completion": [...]}``.
User sequences come from interactions strictly before the validation cut of the evaluation protocol,
so nothing the model learns here comes from a validated or tested position.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gr2.data.schema import CATEGORY_SEPARATOR, item_text
from gr2.models.tokenizer import SID_BEGIN, SID_END
from gr2.train.config import MIDTRAIN_TASKS, MidtrainConfig

SYSTEM_PROMPT = "You are a recommender. Items are named by semantic IDs (SIDs)."
NEXT_ITEM_ASK = "Predict the next item."
PERSONA_ASK = "Describe this user's taste."
PLAIN_ASK = "Tell me about an item of the catalog."


class TaskError(ValueError):
    """Inputs from which no mid-training example can be built."""


def sid_text(sid_map: Any, item_id: int) -> str:
    """An item's SID wrapped in begin/end tokens, e.g. ``<|sid_begin|><s_a_1><s_b_2><|sid_end|>``."""
    return f"{SID_BEGIN}{sid_map.token_string(int(item_id))}{SID_END}"


def history_block(sid_map: Any, history: Sequence[int]) -> str:
    """The user history as one line of item names (SID codes or item tokens, self-delimiting, no separators:
    one token per item in ``item`` mode), oldest to newest."""
    return "History (oldest to newest): " + "".join(sid_map.token_string(int(i)) for i in history)


def _messages(user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def next_item_prompt(sid_map: Any, history: Sequence[int]) -> list[dict[str, str]]:
    """Prompt of the next-item task; the answer is ``sid_text`` of the next item."""
    return _messages(f"{history_block(sid_map, history)}\n{NEXT_ITEM_ASK}")


def sid_to_text_prompt(sid_map: Any, item_id: int) -> list[dict[str, str]]:
    """Prompt asking for the text of the item with this SID."""
    return _messages(f"Describe item {sid_text(sid_map, item_id)}.")


def text_to_sid_prompt(text: str) -> list[dict[str, str]]:
    """Prompt asking for the SID of the item with this text."""
    return _messages(f"Which item is this? {text}")


def persona_answer(categories: Sequence[str], top: int = 3) -> str | None:
    """The favourite categories of a history ('|'-separated category strings), most frequent first.

    >>> persona_answer(["Drama|Comedy", "Drama", "Horror"])
    'Favourite categories: Drama, Comedy, Horror.'
    >>> persona_answer(["", ""]) is None
    True
    """
    counts = Counter(c for cats in categories for c in str(cats).split(CATEGORY_SEPARATOR) if c)
    if not counts:
        return None
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return "Favourite categories: " + ", ".join(name for name, _ in ranked) + "."


@dataclass
class Catalog:
    """Item texts and categories by id, restricted to items that have a SID."""

    texts: dict[int, str]
    categories: dict[int, str]

    @classmethod
    def build(cls, items: pd.DataFrame, sid_map: Any) -> Catalog:
        known = {int(i) for i in sid_map.item_ids}
        frame = items[items["item_id"].isin(known)]
        texts = dict(zip(frame["item_id"].astype(int), item_text(frame), strict=True))
        cats = frame["categories"] if "categories" in frame else pd.Series("", index=frame.index)
        return cls(texts=texts, categories=dict(zip(frame["item_id"].astype(int), cats.fillna(""), strict=True)))


def task_counts(ratios: Mapping[str, float], total: int, available: set[str]) -> dict[str, int]:
    """Examples per task: ``total`` split by the ratios of the available tasks (largest remainders).

    >>> task_counts({"next_item": 0.5, "persona": 0.5}, 10, {"next_item"})
    {'next_item': 10}
    """
    usable = {t: r for t, r in ratios.items() if t in available and r > 0}
    if not usable:
        raise TaskError(f"none of the tasks {sorted(ratios)} can be built from this catalog")
    norm = sum(usable.values())
    raw = {t: total * r / norm for t, r in usable.items()}
    counts = {t: int(v) for t, v in raw.items()}
    for t in sorted(raw, key=lambda t: raw[t] - counts[t], reverse=True)[: total - sum(counts.values())]:
        counts[t] += 1
    return {t: c for t, c in counts.items() if c > 0}


def build_examples(
    sequences: Mapping[int, Sequence[int]],
    catalog: Catalog,
    sid_map: Any,
    cfg: MidtrainConfig,
    seed: int,
    total: int | None = None,
) -> list[dict[str, Any]]:
    """Draw the task mixture: ``total`` (default ``cfg.num_examples``) examples, shuffled, with a ``task`` field."""
    rng = np.random.default_rng(seed)
    seqs = [np.asarray([i for i in s if int(i) in catalog.texts], dtype=np.int64) for s in sequences.values()]
    seqs = [s for s in seqs if len(s) >= 2]
    items = np.asarray(sorted(catalog.texts), dtype=np.int64)
    if len(items) == 0:
        raise TaskError("no catalog item has a SID; run `gr2 sid train` on this catalog")
    available = {"sid_to_text", "text_to_sid", "item_text"}
    if seqs:
        available.add("next_item")
        if any(catalog.categories.values()):
            available.add("persona")
    counts = task_counts(cfg.task_ratios, total or cfg.num_examples, available & set(MIDTRAIN_TASKS))
    examples: list[dict[str, Any]] = []
    for task, n in counts.items():
        for _ in range(n):
            examples.append(_draw(task, rng, seqs, items, catalog, sid_map, cfg.history_length))
    order = rng.permutation(len(examples))
    return [examples[i] for i in order]


def sliding_windows(sequences: Sequence[Sequence[int]], window: int, stride: int,
                    rng: np.random.Generator) -> list[list[int]]:
    """Windows of at most ``window`` items every ``stride`` items of each sequence, from a random offset
    in ``[0, stride)``; the last window of a sequence always ends at its last item. Sequences shorter than
    two items give nothing.

    >>> sliding_windows([[1, 2, 3, 4, 5], [6]], window=3, stride=1, rng=np.random.default_rng(0))
    [[1, 2, 3], [2, 3, 4], [3, 4, 5]]
    """
    out: list[list[int]] = []
    for seq in sequences:
        seq = list(seq)
        if len(seq) < 2:
            continue
        if len(seq) <= window:
            out.append(seq)
            continue
        starts = list(range(int(rng.integers(stride)), len(seq) - window + 1, stride))
        if not starts or starts[-1] != len(seq) - window:
            starts.append(len(seq) - window)
        out += [seq[s: s + window] for s in starts]
    return out


def sequence_examples(
    sequences: Mapping[int, Sequence[int]], catalog: Catalog, sid_map: Any, cfg: MidtrainConfig, seed: int
) -> list[dict[str, Any]]:
    """``cfg.sequence_epochs`` passes of sliding windows over every sequence, as next-item examples whose
    history is the window's first items and completion its last (a new window offset each epoch)."""
    rng = np.random.default_rng(seed + 1)
    seqs = [[int(i) for i in s if int(i) in catalog.texts] for s in sequences.values()]
    examples = []
    for _ in range(cfg.sequence_epochs):
        for w in sliding_windows(seqs, cfg.sequence_window, cfg.sequence_stride, rng):
            examples.append({"prompt": next_item_prompt(sid_map, w[:-1]),
                             "completion": [{"role": "assistant", "content": sid_text(sid_map, w[-1])}],
                             "task": "sequence"})
    return examples


def _draw(task: str, rng: np.random.Generator, seqs: list[np.ndarray], items: np.ndarray, catalog: Catalog,
          sid_map: Any, history_length: int) -> dict[str, Any]:
    if task in ("next_item", "persona"):
        seq = seqs[rng.integers(len(seqs))]
        end = int(rng.integers(1, len(seq)))
        history = seq[max(0, end - history_length): end].tolist()
        if task == "next_item":
            prompt, answer = next_item_prompt(sid_map, history), sid_text(sid_map, int(seq[end]))
        else:
            answer = persona_answer([catalog.categories[i] for i in history])
            if answer is None:  # a history without categories: fall back to the plain next-item task
                prompt, answer, task = next_item_prompt(sid_map, history), sid_text(sid_map, int(seq[end])), "next_item"
            else:
                prompt = _messages(f"{history_block(sid_map, history)}\n{PERSONA_ASK}")
    else:
        item = int(items[rng.integers(len(items))])
        if task == "sid_to_text":
            prompt, answer = sid_to_text_prompt(sid_map, item), catalog.texts[item]
        elif task == "text_to_sid":
            prompt, answer = text_to_sid_prompt(catalog.texts[item]), sid_text(sid_map, item)
        else:
            prompt, answer = _messages(PLAIN_ASK), catalog.texts[item]
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": answer}], "task": task}
