"""Stage metrics of a trained LM: next-item Recall@k, SID -> title accuracy, and candidate rankings.

Rankings are produced two ways: by likelihood (each candidate's log-probability as the next item, or as
the first item of the answer inside the re-ranking prompt) and by decoding an answer and parsing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gr2.models.factory import LoadedModel
from gr2.models.scoring import (
    SIDTrie,
    batch_beam_search_items,
    batch_continuation_logprobs,
    encode_plain,
    render_prompt,
)
from gr2.models.tokenizer import SID_BEGIN
from gr2.train.tasks import Catalog, next_item_prompt, sid_to_text_prompt

BATCH = 16  # prompts scored together (left-padded)


def sid_token_ids(lm: LoadedModel, sid_map: Any, item_id: int) -> list[int]:
    """Token ids of an item's SID codes (without begin/end tokens)."""
    return lm.tokenizer.convert_tokens_to_ids(sid_map.tokens(int(item_id)))


def catalog_trie(lm: LoadedModel, sid_map: Any) -> SIDTrie:
    """The SID trie of every item in the map."""
    ids = sid_map.item_ids
    return SIDTrie(ids, [sid_token_ids(lm, sid_map, i) for i in ids])


def next_item_recall(
    lm: LoadedModel, sid_map: Any, positions: Sequence[tuple[Sequence[int], int]], k: int = 10
) -> dict[str, float]:
    """Recall@1 and Recall@k of the next item over the whole catalog (SID-constrained beam search)."""
    trie = catalog_trie(lm, sid_map)
    hits1 = hitsk = 0
    for start in tqdm(range(0, len(positions), BATCH), desc="next-item recall", leave=False):
        batch = positions[start: start + BATCH]
        prompts = [render_prompt(lm.tokenizer, next_item_prompt(sid_map, h), prefix=SID_BEGIN) for h, _ in batch]
        for (_, target), found in zip(batch, batch_beam_search_items(lm.model, prompts, trie, beams=k),
                                      strict=True):
            top = [item for item, _ in found]
            hits1 += bool(top) and top[0] == target
            hitsk += target in top
    n = max(len(positions), 1)
    return {f"recall@{k}": hitsk / n, "recall@1": hits1 / n, "positions": len(positions)}


def sid_title_accuracy(
    lm: LoadedModel, sid_map: Any, catalog: Catalog, n_items: int, n_choices: int, seed: int
) -> dict[str, float]:
    """Share of items whose own text is the most likely (mean token log-prob) of ``n_choices`` texts
    given the prompt "Describe item <SID>"; the distractors are other catalog items (chance = 1/n_choices)."""
    rng = np.random.default_rng(seed)
    ids = np.asarray(sorted(catalog.texts))
    if len(ids) < n_choices:
        raise ValueError(f"SID -> title accuracy needs >= {n_choices} items, the catalog has {len(ids)}")
    chosen = rng.choice(ids, size=min(n_items, len(ids)), replace=False)
    questions = []
    for item in chosen:
        others = rng.choice(ids[ids != item], size=n_choices - 1, replace=False)
        texts = [catalog.texts[int(item)], *(catalog.texts[int(o)] for o in others)]
        questions.append((render_prompt(lm.tokenizer, sid_to_text_prompt(sid_map, int(item))),
                          [encode_plain(lm.tokenizer, t) for t in texts]))
    correct = 0
    for start in tqdm(range(0, len(questions), BATCH), desc="sid->title", leave=False):
        batch = questions[start: start + BATCH]
        scores = batch_continuation_logprobs(lm.model, [q[0] for q in batch], [q[1] for q in batch], mean=True)
        correct += sum(int(np.argmax(s) == 0) for s in scores)
    return {"accuracy": correct / len(chosen), "chance": 1 / n_choices, "items": len(chosen)}


def _order(candidates: Sequence[int], scores: np.ndarray) -> list[int]:
    """Candidates by descending score; ties keep the incoming order (stable sort)."""
    idx = np.argsort(-np.asarray(scores), kind="stable")
    return [int(candidates[i]) for i in idx]


def next_item_questions(lm: LoadedModel, names: Any, rows: Sequence[dict[str, Any]], history_length: int,
                        ) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Per row (``history``, ``candidates``): the next-item prompt (up to the answer's SID_BEGIN) and each
    candidate's name tokens; ``names`` is anything with ``token_string(item_id)`` (a SID map, a catalog)."""
    prompts, conts = [], []
    for row in rows:
        history = list(row["history"])[-history_length:] if history_length else []
        prompts.append(render_prompt(lm.tokenizer, next_item_prompt(names, history), SID_BEGIN))
        conts.append([encode_plain(lm.tokenizer, names.token_string(int(c))) for c in row["candidates"]])
    return prompts, conts


def next_item_rankings(lm: LoadedModel, sid_map: Any, samples: pd.DataFrame, history_length: int) -> list[list[int]]:
    """Rank each sample's candidates by log p(candidate's name | history) in the next-item prompt."""
    rows = samples.to_dict("records")
    prompts, conts = next_item_questions(lm, sid_map, rows, history_length)
    questions = [(p, [int(c) for c in r["candidates"]], c) for p, r, c in zip(prompts, rows, conts, strict=True)]
    return _score_batches(lm, questions, "likelihood (next-item prompt)")


def _score_batches(lm: LoadedModel, questions: list[tuple[list[int], list[int], list[list[int]]]],
                   desc: str) -> list[list[int]]:
    """Order each question's candidates by the log-prob of their token sequence after its prompt."""
    out = []
    for start in tqdm(range(0, len(questions), BATCH), desc=desc, leave=False):
        batch = questions[start: start + BATCH]
        scores = batch_continuation_logprobs(lm.model, [q[0] for q in batch], [q[2] for q in batch])
        out += [_order(q[1], s) for q, s in zip(batch, scores, strict=True)]
    return out


def first_label_continuations(lm: LoadedModel, candidates: Sequence[int], labels: dict[int, str]) -> list[list[int]]:
    """Per candidate c, the tokens of the answer-only reply ``format_answer([c, others...])`` cut right after
    c's label: every candidate shares the same prefix and differs only in its label tokens."""
    from gr2.rerank.format import format_answer

    conts = []
    for c in candidates:
        text = format_answer([c, *(o for o in candidates if o != c)], labels, None)
        conts.append(encode_plain(lm.tokenizer, text[: text.index(labels[c]) + len(labels[c])]))
    return conts


def rerank_likelihood_questions(lm: LoadedModel, sid_map: Any, rows: Sequence[dict[str, Any]], items: pd.DataFrame,
                                compress: Any = None) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Per row (``history``, ``candidates``): the answer-only prompt (shortened by ``compress``, a
    :data:`gr2.rerank.format.Compressor`) and each candidate's first-label tokens."""
    from gr2.rerank.format import build_messages, candidate_labels

    prompts, conts = [], []
    for row in rows:
        cands = [int(c) for c in row["candidates"]]
        labels = dict(zip(cands, candidate_labels(cands, sid_map), strict=True))
        conts.append(first_label_continuations(lm, cands, labels))
        prompts.append(render_prompt(lm.tokenizer, build_messages(row, items, sid_map, style="answer",
                                                                  compress=compress)))
    return prompts, conts


def score_questions(lm: LoadedModel, prompts: Sequence[Sequence[int]],
                    conts: Sequence[Sequence[Sequence[int]]]) -> list[np.ndarray]:
    """log p(continuation | prompt) for every continuation of every prompt, ``BATCH`` prompts at a time."""
    scores: list[np.ndarray] = []
    for start in range(0, len(prompts), BATCH):
        scores += batch_continuation_logprobs(lm.model, prompts[start: start + BATCH], conts[start: start + BATCH])
    return scores


def rerank_likelihood_scores(lm: LoadedModel, sid_map: Any, rows: Sequence[dict[str, Any]],
                             items: pd.DataFrame, compress: Any = None) -> list[np.ndarray]:
    """Per row (``history``, ``candidates``), log p(candidate is the first item of the answer-only reply)."""
    return score_questions(lm, *rerank_likelihood_questions(lm, sid_map, rows, items, compress))


def rerank_likelihood_rankings(
    lm: LoadedModel, sid_map: Any, samples: pd.DataFrame, items: pd.DataFrame, compress: Any = None
) -> list[list[int]]:
    """Rank candidates by the likelihood of each being the *first* item of the answer-only re-ranking reply."""
    rows = samples.to_dict("records")
    out = []
    for start in tqdm(range(0, len(rows), BATCH), desc="likelihood (re-ranking prompt)", leave=False):
        batch = rows[start: start + BATCH]
        for row, scores in zip(batch, rerank_likelihood_scores(lm, sid_map, batch, items, compress),
                               strict=True):
            out.append(_order([int(c) for c in row["candidates"]], scores))
    return out


def generated_rankings(
    lm: LoadedModel, sid_map: Any, samples: pd.DataFrame, items: pd.DataFrame, style: str = "reasoning",
    max_new_tokens: int = 256, batch_size: int = 16, compress: Any = None,
) -> tuple[list[list[int]], list[dict[str, Any]]]:
    """Decode a reply per sample under the ranking constraint (``gr2.models.constrained``: every answer
    names each candidate once; reasoning gets what ``max_new_tokens`` leaves after the answer) and parse
    the answer; returns rankings and per-sample parse flags."""
    from gr2.models.constrained import DecodingTokens, constrained_generate
    from gr2.rerank.format import build_messages, candidate_labels, parse_ranking

    rows = samples.to_dict("records")
    reasoning = style == "reasoning"
    prompts = [render_prompt(lm.tokenizer, build_messages(r, items, sid_map, style=style, compress=compress))
               for r in rows]
    labels_of = [candidate_labels([int(c) for c in r["candidates"]], sid_map) for r in rows]
    automata = []
    for labels in labels_of:
        answer = DecodingTokens.of(lm.tokenizer, 0).automaton(lm.tokenizer, labels, reasoning=False).max_tokens()
        tokens = DecodingTokens.of(lm.tokenizer, max(0, max_new_tokens - answer))
        automata.append(tokens.automaton(lm.tokenizer, labels, reasoning=reasoning))
    pad = int(lm.tokenizer.pad_token_id)
    decoded = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=f"decoding ({style})", leave=False):
        end = start + batch_size
        decoded += constrained_generate(lm.model, prompts[start:end], automata[start:end], pad,
                                        DecodingTokens.of(lm.tokenizer, 0).eos)
    rankings, flags = [], []
    for row, labels, (tokens, _, answer_from) in zip(rows, labels_of, decoded, strict=True):
        cands = [int(c) for c in row["candidates"]]
        answer = lm.tokenizer.decode(tokens[answer_from:], skip_special_tokens=True)
        parsed = parse_ranking(answer, cands, labels)
        rankings.append(list(parsed.ranking))
        flags.append({"valid": bool(parsed.valid), "complete": bool(parsed.complete),
                      "identity": bool(parsed.identity), "generated_tokens": len(tokens),
                      "text": lm.tokenizer.decode(tokens, skip_special_tokens=True)})
    return rankings, flags
