"""A byte-level BPE tokenizer trained on the run's own corpus, plus SID tokens and a chat template.

The offline model has no hub tokenizer, so one is trained with ``tokenizers`` on item texts and prompts
and wrapped as a ``PreTrainedTokenizerFast``; ``save_pretrained`` makes it load with ``AutoTokenizer``
like any hub tokenizer. SID tokens are added to *any* tokenizer (offline or hub) by :func:`add_sid_tokens`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD_TOKEN = "<|endoftext|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SID_BEGIN, SID_END = "<|sid_begin|>", "<|sid_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)

# ChatML, as Qwen uses it. The {% generation %} markers let TRL build assistant-only masks, and the prompt
# rendered with add_generation_prompt is a prefix of prompt + completion (TRL's prompt-completion contract).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_SID_PATTERN = re.compile(r"<\|sid_(?:begin|end)\|>|<s_[a-z]+_\d+>")


class TokenizerError(ValueError):
    """A corpus or tokenizer that cannot be used (empty corpus, missing pad token, ...)."""


def strip_sid_tokens(text: str) -> str:
    """Remove SID token strings (they become added tokens, so BPE should not learn them).

    >>> strip_sid_tokens("watched <|sid_begin|><s_a_1><|sid_end|> then").split()
    ['watched', 'then']
    """
    return _SID_PATTERN.sub(" ", text)


def train_corpus_tokenizer(
    texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers (ChatML template)."""
    corpus = [strip_sid_tokens(t) for t in texts if t and t.strip()]
    if not corpus:
        raise TokenizerError("cannot train a tokenizer on an empty corpus")
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START],
        padding_side="right",
        model_max_length=1_000_000,
    )
    wrapped.add_tokens([THINK_OPEN, THINK_CLOSE])
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def add_sid_tokens(tokenizer: PreTrainedTokenizerBase, sid_tokens: Iterable[str]) -> int:
    """Add ``<|sid_begin|>``, ``<|sid_end|>`` and every level x code token; returns how many were new.

    They are added as normal (non-special) tokens so that decoding keeps them and the parser can read
    the ranking; added tokens are never split by the BPE model.
    """
    wanted = [SID_BEGIN, SID_END, *sid_tokens]
    vocab = tokenizer.get_vocab()
    new = [t for t in dict.fromkeys(wanted) if t not in vocab]
    if new:
        tokenizer.add_tokens(new)
    return len(new)


def ensure_chat_ready(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer a pad token and a chat template when it has none (hub base models often lack them)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise TokenizerError("tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        for token in (IM_START, IM_END):
            if token not in tokenizer.get_vocab():
                tokenizer.add_special_tokens({"additional_special_tokens": [token]})
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
