"""Likelihood scoring and SID-constrained search with a causal LM (KV cache shared across continuations).

Candidates are scored by the log-probability the model gives to their token sequence after a prompt;
each prompt is run once (prompts batched with left padding) and its cache is copied to every
continuation row. Beam search over the catalog's SID trie gives next-item top-k lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from gr2.models.tokenizer import IM_END


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], prefix: str = "") -> list[int]:
    """Token ids of the chat prompt with the assistant turn opened, followed by ``prefix`` text."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prefix
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_plain(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of ``text`` with no special tokens added."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids, mask


@torch.no_grad()
def _prompt_cache(model: PreTrainedModel, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, object, torch.Tensor]:
    """Run left-padded prompts once: next-token log-probs (B, V), the KV cache and the attention mask.

    Left padding shifts every real position of a row by the same amount, which rotary position
    embeddings (relative) do not see, and the padding itself is masked out.
    """
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    ids, mask = _left_pad(prompts, int(model.config.pad_token_id or 0))
    out = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), use_cache=True)
    return torch.log_softmax(out.logits[:, -1].float(), dim=-1), out.cache, mask.to(model.device)


@torch.no_grad()
def batch_continuation_logprobs(
    model: PreTrainedModel, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[Sequence[int]]],
    mean: bool = False,
) -> list[np.ndarray]:
    """For each prompt, the sum (or mean) of log p(continuation | prompt) of each of its continuations.

    The prompts are run once (left-padded batch); their cache is copied to every continuation row,
    and the continuations are right-padded (padding after the real tokens cannot change them).
    """
    model.eval()
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuation lists")
    rows = [i for i, conts in enumerate(continuations) for _ in conts]
    flat = [list(c) for conts in continuations for c in conts]
    if not flat:
        return [np.zeros(0) for _ in prompts]
    if any(len(c) == 0 for c in flat):
        raise ValueError("every continuation needs at least one token")
    first_logp, cache, mask = _prompt_cache(model, prompts)
    index = torch.tensor(rows, device=model.device)
    n, width = len(flat), max(len(c) for c in flat)
    ids = torch.zeros((n, width), dtype=torch.long, device=model.device)
    valid = torch.zeros((n, width), dtype=torch.bool, device=model.device)
    for i, cont in enumerate(flat):
        ids[i, : len(cont)] = torch.tensor(cont)
        valid[i, : len(cont)] = True
    token_logp = torch.zeros((n, width), device=model.device)
    token_logp[:, 0] = first_logp[index, ids[:, 0]]
    if width > 1:
        cache.reorder_cache(index)
        attn = torch.cat([mask[index], torch.ones((n, width - 1), dtype=mask.dtype, device=model.device)], dim=1)
        out = model(input_ids=ids[:, :-1], attention_mask=attn, cache=cache, use_cache=True)
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        token_logp[:, 1:] = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)
    totals = (token_logp * valid).sum(dim=1)
    if mean:
        totals = totals / valid.sum(dim=1)
    totals_np = totals.cpu().numpy()
    out_lists, start = [], 0
    for conts in continuations:
        out_lists.append(totals_np[start: start + len(conts)])
        start += len(conts)
    return out_lists


def continuation_logprobs(
    model: PreTrainedModel, prompt: Sequence[int], continuations: Sequence[Sequence[int]], mean: bool = False
) -> np.ndarray:
    """Sum (or mean) of log p(continuation tokens | prompt) for each continuation of one prompt."""
    if not continuations:
        return np.zeros(0)
    return batch_continuation_logprobs(model, [prompt], [continuations], mean=mean)[0]


class SIDTrie:
    """The valid SID token sequences of a catalog, for constrained beam search.

    ``sequences[i]`` is the token-id tuple of item ``item_ids[i]`` (same length for every item).
    """

    def __init__(self, item_ids: Sequence[int], sequences: Sequence[Sequence[int]]) -> None:
        if len(item_ids) != len(sequences) or not sequences:
            raise ValueError("SIDTrie needs one non-empty token sequence per item")
        lengths = {len(s) for s in sequences}
        if len(lengths) != 1:
            raise ValueError(f"SIDTrie: every SID must have the same number of tokens, got {sorted(lengths)}")
        self.depth = lengths.pop()
        self.item_ids = list(item_ids)
        self.children: dict[tuple[int, ...], list[int]] = {}
        self.leaf: dict[tuple[int, ...], int] = {}
        for item, seq in zip(self.item_ids, sequences, strict=True):
            seq = tuple(int(t) for t in seq)
            for level in range(self.depth):
                kids = self.children.setdefault(seq[:level], [])
                if seq[level] not in kids:
                    kids.append(seq[level])
            self.leaf[seq] = item


@torch.no_grad()
def batch_beam_search_items(
    model: PreTrainedModel, prompts: Sequence[Sequence[int]], trie: SIDTrie, beams: int = 10
) -> list[list[tuple[int, float]]]:
    """For each prompt, the top ``beams`` catalog items (item_id, log-prob) by beam search over valid SIDs."""
    model.eval()
    logp, cache, mask = _prompt_cache(model, prompts)
    # one entry per live row: (prompt index, prefix, score); rows of a prompt are contiguous
    rows: list[tuple[int, tuple[int, ...], float]] = [(b, (), 0.0) for b in range(len(prompts))]
    for level in range(trie.depth):
        logp_cpu = logp.cpu()
        new_rows: list[tuple[int, tuple[int, ...], float]] = []
        parents: list[int] = []
        start = 0
        while start < len(rows):
            b = rows[start][0]
            end = start
            while end < len(rows) and rows[end][0] == b:
                end += 1
            cand_row, cand_tok, cand_score = [], [], []
            for r in range(start, end):
                kids = trie.children[rows[r][1]]
                cand_row += [r] * len(kids)
                cand_tok += kids
                cand_score.append(rows[r][2] + logp_cpu[r, kids])
            scores = torch.cat(cand_score)
            for i in torch.topk(scores, k=min(beams, len(scores))).indices.tolist():
                r = cand_row[i]
                new_rows.append((b, (*rows[r][1], cand_tok[i]), float(scores[i])))
                parents.append(r)
            start = end
        rows = new_rows
        if level + 1 < trie.depth:
            index = torch.tensor(parents, device=model.device)
            cache.reorder_cache(index)
            mask = torch.cat([mask[index], torch.ones((len(rows), 1), dtype=mask.dtype, device=model.device)], 1)
            tokens = torch.tensor([[prefix[-1]] for _, prefix, _ in rows], device=model.device)
            out = model(input_ids=tokens, attention_mask=mask, cache=cache, use_cache=True)
            logp = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
    results: list[list[tuple[int, float]]] = [[] for _ in prompts]
    for b, prefix, score in rows:
        results[b].append((trie.leaf[prefix], score))
    return results


def beam_search_items(
    model: PreTrainedModel, prompt: Sequence[int], trie: SIDTrie, beams: int = 10
) -> list[tuple[int, float]]:
    """Top ``beams`` catalog items (item_id, log-prob) by beam search restricted to valid SIDs."""
    return batch_beam_search_items(model, [prompt], trie, beams)[0]


@torch.no_grad()
def generate_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 256,
    batch_size: int = 16,
) -> list[str]:
    """Greedy decoding of each prompt until ``<|im_end|>`` (left-padded batches)."""
    model.eval()
    stop = [i for i in {tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id} if i is not None]
    texts: list[str] = []
    for start in range(0, len(prompts), batch_size):
        ids, attn = _left_pad(prompts[start: start + batch_size], tokenizer.pad_token_id)
        width = ids.shape[1]
        out = model.generate(
            input_ids=ids.to(model.device), attention_mask=attn.to(model.device), max_new_tokens=max_new_tokens,
            do_sample=False, eos_token_id=stop, pad_token_id=tokenizer.pad_token_id,
        )
        for row in out[:, width:]:
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
    return texts
