"""Constrained decoding of a ranking: every decoded answer is a permutation of the candidates by construction.

A :class:`RankingAutomaton` per row walks the generated tokens: an optional ``<think>`` block (free text up
to a budget, then the closing tokens are forced), then ``label > label > ... > label`` where each label is
one not-yet-emitted candidate (a prefix tree over their label tokens, like :class:`SIDTrie` over a
catalog), then EOS. :class:`RankingLogitsProcessor` masks every other token at each step.

>>> auto = RankingAutomaton([(7, 8), (7, 9)], separator=(1,), eos=(0,))
>>> auto.allowed(), auto.feed(7), auto.allowed(), auto.feed(9), auto.allowed()
([7], None, [8, 9], 1, [1])
>>> auto.feed(1), auto.allowed(), auto.feed(7), auto.allowed(), auto.feed(8), auto.allowed(), auto.order
(None, [7], None, [8], 0, [0], [1, 0])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedModel

from gr2.models.scoring import SIDTrie, _left_pad, encode_plain
from gr2.models.tokenizer import IM_END, THINK_CLOSE, THINK_OPEN


class ConstraintError(ValueError):
    """Label token sequences that cannot be decoded unambiguously."""


@dataclass(frozen=True)
class ThinkSpec:
    """Token ids of the reasoning block: forced ``open``, free text up to ``budget`` tokens, then ``close``.

    ``close_token`` is the ``</think>`` id: when the model emits it on its own, the rest of ``close``
    after it is forced. ``open_token`` (the ``<think>`` id) may not appear inside the block: a second
    opening tag makes the answer unparsable.
    """

    open: tuple[int, ...]
    close: tuple[int, ...]
    close_token: int
    budget: int
    open_token: int = -1


class RankingAutomaton:
    """Which tokens may come next so that the answer names every candidate exactly once.

    ``labels[i]`` are the token ids of candidate ``i``'s label; no label may be a prefix of another.
    ``feed`` returns the candidate index whose label a token completed (else None); ``order`` lists the
    completed candidates in decoding order.
    """

    def __init__(self, labels: Sequence[Sequence[int]], separator: Sequence[int], eos: Sequence[int],
                 think: ThinkSpec | None = None) -> None:
        self.labels = [tuple(int(t) for t in lab) for lab in labels]
        if not self.labels or any(not lab for lab in self.labels):
            raise ConstraintError("every candidate needs a non-empty label")
        for i, a in enumerate(self.labels):
            for j, b in enumerate(self.labels):
                if i != j and b[: len(a)] == a:
                    raise ConstraintError(f"label of candidate {i} is a prefix of (or equal to) candidate {j}'s")
        lengths = {len(lab) for lab in self.labels}
        # equal-length labels (SIDs): the trie of the candidates; else a plain scan over the labels
        self.trie = SIDTrie(range(len(self.labels)), self.labels) if len(lengths) == 1 else None
        self.separator, self.eos, self.think = tuple(separator), sorted(set(eos)), think
        self.order: list[int] = []
        self._prefix: tuple[int, ...] = ()
        self._forced: list[int] = []  # tokens that must come next, in order
        self._phase = "answer"  # opening -> thinking -> closing -> answer
        self._think_used = 0
        if think is not None:
            self._phase, self._forced = "opening", list(think.open)
            if not self._forced:
                self._after_forced()

    @property
    def answering(self) -> bool:
        """True once the reasoning block (if any) is closed."""
        return self._phase == "answer"

    @property
    def done(self) -> bool:
        return len(self.order) == len(self.labels) and not self._forced

    def allowed(self) -> list[int] | None:
        """Token ids allowed next (None: any token but :meth:`banned`, inside the reasoning block)."""
        if self._forced:
            return [self._forced[0]]
        if self._phase == "thinking":
            return None
        if self.done:
            return self.eos
        remaining = [i for i in range(len(self.labels)) if i not in self.order]
        depth = len(self._prefix)
        if self.trie is not None and depth == 0 and len(remaining) == len(self.labels):
            return sorted(self.trie.children[()])
        return sorted({self.labels[i][depth] for i in remaining if self.labels[i][:depth] == self._prefix})

    def _after_forced(self) -> None:
        """Move to the next phase once the forced tokens of the current one are out."""
        assert self.think is not None or self._phase == "answer"
        if self._phase == "opening":
            self._phase = "thinking"
            if self.think.budget <= 0:
                self._close(self.think.close)
        elif self._phase == "closing":
            self._phase = "answer"

    def _close(self, tokens: Sequence[int]) -> None:
        self._phase, self._forced = "closing", list(tokens)
        if not self._forced:
            self._phase = "answer"

    def feed(self, token: int) -> int | None:
        """Advance by one generated token (which must be allowed); returns the candidate it completed."""
        token = int(token)
        if self._forced:
            self._forced.pop(0)
            if not self._forced:
                self._after_forced()
            return None
        if self._phase == "thinking":
            assert self.think is not None
            self._think_used += 1
            close = self.think.close
            if token == self.think.close_token:
                self._close(close[close.index(token) + 1:] if token in close else ())
            elif self._think_used >= self.think.budget:
                self._close(close)
            return None
        if self.done:
            return None
        self._prefix = (*self._prefix, token)
        matches = [i for i in range(len(self.labels)) if i not in self.order and self.labels[i] == self._prefix]
        if not matches:
            return None
        self.order.append(matches[0])
        self._prefix = ()
        if len(self.order) < len(self.labels):
            self._forced = list(self.separator)
        return matches[0]

    def banned(self) -> list[int]:
        """Tokens the free reasoning text may not hold: EOS and a second ``<think>``."""
        reopen = [self.think.open_token] if self.think is not None and self.think.open_token >= 0 else []
        return [*self.eos, *reopen]

    def max_tokens(self) -> int:
        """An upper bound of the tokens this automaton can emit (EOS included)."""
        think = len(self.think.open) + self.think.budget + len(self.think.close) if self.think else 0
        answer = sum(len(lab) for lab in self.labels) + (len(self.labels) - 1) * len(self.separator)
        return think + answer + 1


class RankingLogitsProcessor(LogitsProcessor):
    """Masks every token an automaton does not allow (one automaton per row of a left-padded batch)."""

    def __init__(self, automata: Sequence[RankingAutomaton], prompt_width: int) -> None:
        self.automata = list(automata)
        self.prompt_width = prompt_width
        self._consumed = [0] * len(self.automata)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_width:].tolist()
        mask = torch.full_like(scores, float("-inf"))
        for row, (auto, tokens) in enumerate(zip(self.automata, generated, strict=True)):
            for token in tokens[self._consumed[row]:]:
                auto.feed(token)
            self._consumed[row] = len(tokens)
            allowed = auto.allowed()
            if allowed is None:
                mask[row] = 0.0
                mask[row, auto.banned()] = float("-inf")
            else:
                mask[row, allowed] = 0.0
        return scores + mask


@torch.no_grad()
def constrained_generate(model: PreTrainedModel, prompts: Sequence[Sequence[int]],
                         automata: Sequence[RankingAutomaton], pad_id: int, eos: Sequence[int],
                         ) -> list[tuple[list[int], dict[int, float], int]]:
    """Greedy decoding of each prompt under its automaton (left-padded batch).

    Returns per row the generated tokens; per candidate index, the cumulative constrained log-prob of the
    answer up to and including that candidate's label (so it falls along the decoded ranking); and where the
    answer starts in the tokens (after the reasoning block, whose free text may spell anything).
    """
    ids, mask = _left_pad(prompts, pad_id)
    width = ids.shape[1]
    processor = RankingLogitsProcessor(automata, width)
    out = model.generate(
        input_ids=ids.to(model.device), attention_mask=mask.to(model.device), do_sample=False,
        max_new_tokens=max(a.max_tokens() for a in automata), logits_processor=LogitsProcessorList([processor]),
        eos_token_id=list(eos), pad_token_id=pad_id, return_dict_in_generate=True, output_scores=True,
    )
    logps = torch.stack([torch.log_softmax(step.float(), dim=-1) for step in out.scores], dim=1)  # B, T, V
    results = []
    for row, template in enumerate(automata):
        replay = RankingAutomaton(template.labels, template.separator, template.eos, template.think)
        tokens: list[int] = []
        total, item_logp, answer_from = 0.0, {}, None
        for step, token in enumerate(out.sequences[row, width:].tolist()):
            if replay.done:
                break
            if replay.answering:
                answer_from = len(tokens) if answer_from is None else answer_from
                total += float(logps[row, step, token])
            tokens.append(token)
            completed = replay.feed(token)
            if completed is not None:
                item_logp[completed] = total
        results.append((tokens, item_logp, len(tokens) if answer_from is None else answer_from))
    return results


@dataclass(frozen=True)
class DecodingTokens:
    """The separator, end and reasoning-block token ids of a tokenizer, for :class:`RankingAutomaton`."""

    separator: tuple[int, ...]
    eos: tuple[int, ...]
    think: ThinkSpec

    @classmethod
    def of(cls, tokenizer: Any, think_tokens: int) -> DecodingTokens:
        from gr2.rerank.format import SEPARATOR

        eos = tuple(i for i in {tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id} if i is not None)
        think = ThinkSpec(open=tuple(encode_plain(tokenizer, THINK_OPEN + "\n")),
                          close=tuple(encode_plain(tokenizer, "\n" + THINK_CLOSE + "\n")),
                          close_token=tokenizer.get_vocab().get(THINK_CLOSE, -1), budget=think_tokens,
                          open_token=tokenizer.get_vocab().get(THINK_OPEN, -1))
        return cls(separator=tuple(encode_plain(tokenizer, SEPARATOR)), eos=eos, think=think)

    def automaton(self, tokenizer: Any, labels: Sequence[str], reasoning: bool) -> RankingAutomaton:
        """The automaton of one request: its candidate labels, with or without a reasoning block."""
        return RankingAutomaton([encode_plain(tokenizer, lab) for lab in labels], self.separator, self.eos,
                                self.think if reasoning else None)
