"""Model factory, corpus tokenizer, SID tokens, chat template and likelihood scoring (gr2/models/)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config

from gr2.models.config import ModelConfig
from gr2.models.factory import ModelLoadError, build_offline_checkpoint, count_parameters, load_model
from gr2.models.scoring import (
    SIDTrie,
    beam_search_items,
    continuation_logprobs,
    generate_texts,
    render_prompt,
)
from gr2.models.tokenizer import (
    SID_BEGIN,
    SID_END,
    TokenizerError,
    add_sid_tokens,
    strip_sid_tokens,
    train_corpus_tokenizer,
)

torch.set_num_threads(2)
SID_TOKENS = [f"<s_{lvl}_{c}>" for lvl in "abc" for c in range(8)]
CORPUS = [f"The Golden Orbit {i} (1995). Genres: Space, Drama. A user watched it." for i in range(60)] + [
    "You are a recommender. History (oldest to newest): Predict the next item."] * 20
TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=300)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    return build_offline_checkpoint(TINY, CORPUS, tmp_path_factory.mktemp("ckpt") / "base", seed=3)


def test_tokenizer_keeps_sid_tokens_whole_and_chat_prompt_is_a_prefix() -> None:
    tok = train_corpus_tokenizer(CORPUS, vocab_size=300)
    assert add_sid_tokens(tok, SID_TOKENS) == len(SID_TOKENS) + 2
    assert add_sid_tokens(tok, SID_TOKENS) == 0  # idempotent
    text = f"watched {SID_BEGIN}<s_a_1><s_b_7><s_c_0>{SID_END} next"
    pieces = tok.convert_ids_to_tokens(tok(text, add_special_tokens=False)["input_ids"])
    assert pieces[pieces.index(SID_BEGIN):][:5] == [SID_BEGIN, "<s_a_1>", "<s_b_7>", "<s_c_0>", SID_END]
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    prompt = [{"role": "system", "content": "sys"}, {"role": "user", "content": text}]
    head = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template([*prompt, {"role": "assistant", "content": "<s_a_2>"}], tokenize=False)
    assert full.startswith(head) and full.endswith("<|im_end|>\n")


def test_tokenizer_rejects_empty_corpus() -> None:
    with pytest.raises(TokenizerError, match="empty corpus"):
        train_corpus_tokenizer(["", "   "])
    assert strip_sid_tokens("a <s_a_3> b") == "a   b"


def test_offline_checkpoint_loads_like_a_hub_checkpoint(checkpoint) -> None:
    files = {p.name for p in checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert json.loads((checkpoint / "config.json").read_text())["model_type"] == "qwen3"
    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert tok.chat_template and tok.pad_token == "<|endoftext|>" and tok.eos_token == "<|im_end|>"
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    lm = load_model(checkpoint, SID_TOKENS)
    assert lm.added_tokens == len(SID_TOKENS) + 2
    assert lm.model.get_input_embeddings().weight.shape[0] == len(lm.tokenizer)
    assert lm.num_parameters == count_parameters(lm.model) < 1_000_000
    ids = torch.tensor([lm.tokenizer.convert_tokens_to_ids(SID_TOKENS[:3])])
    assert torch.isfinite(lm.model(input_ids=ids).logits).all()


def test_offline_checkpoint_is_deterministic(checkpoint, tmp_path) -> None:
    again = build_offline_checkpoint(TINY, CORPUS, tmp_path / "again", seed=3)
    a, b = AutoModelForCausalLM.from_pretrained(checkpoint), AutoModelForCausalLM.from_pretrained(again)
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(p, q), name


def test_foreign_checkpoint_without_chat_template_or_pad_gets_both(tmp_path) -> None:
    """A hub-style base model (plain BPE tokenizer, Qwen2 weights) goes through the same loader."""
    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import trainers

    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=280, special_tokens=["</s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="</s>")
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    lm = load_model(tmp_path, SID_TOKENS)
    assert lm.tokenizer.pad_token is not None and lm.tokenizer.chat_template
    assert "<|im_end|>" in lm.tokenizer.get_vocab()
    assert lm.model.get_input_embeddings().weight.shape[0] == len(lm.tokenizer)
    assert render_prompt(lm.tokenizer, [{"role": "user", "content": "hi"}])


def test_load_model_names_a_missing_path(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="cannot load a causal LM"):
        load_model(tmp_path / "nothing-here")


def test_cached_continuation_scores_match_full_forward_and_beam_search_is_exact(checkpoint) -> None:
    lm = load_model(checkpoint, SID_TOKENS)
    tok = lm.tokenizer
    prompt = render_prompt(tok, [{"role": "user", "content": "History: Predict the next item."}], prefix=SID_BEGIN)
    seqs = [tok.convert_tokens_to_ids([f"<s_a_{i % 3}>", f"<s_b_{i % 5}>", f"<s_c_{i % 8}>"]) for i in range(12)]
    conts = [*seqs, seqs[0][:1]]
    cached = continuation_logprobs(lm.model, prompt, conts)
    with torch.no_grad():
        for cont, score in zip(conts, cached, strict=True):
            logp = torch.log_softmax(lm.model(torch.tensor([prompt + cont])).logits[0], -1)
            full = sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(cont))
            assert score == pytest.approx(full, abs=1e-4)
    trie = SIDTrie(list(range(100, 112)), seqs)
    found = beam_search_items(lm.model, prompt, trie, beams=12)  # beams >= items: exhaustive
    brute = dict(zip(range(100, 112), cached[:12].tolist(), strict=True))  # an untrained model ties often:
    assert [s for _, s in found][:5] == pytest.approx(sorted(brute.values(), reverse=True)[:5], abs=1e-4)
    assert all(brute[item] == pytest.approx(score, abs=1e-4) for item, score in found)  # compare scores
    assert len(beam_search_items(lm.model, prompt, trie, beams=3)) == 3


def test_sid_trie_rejects_ragged_sids() -> None:
    with pytest.raises(ValueError, match="same number of tokens"):
        SIDTrie([1, 2], [[1, 2], [3]])


def test_generate_texts_returns_one_text_per_prompt(checkpoint) -> None:
    lm = load_model(checkpoint, SID_TOKENS)
    prompts = [render_prompt(lm.tokenizer, [{"role": "user", "content": t}]) for t in ("a", "a longer prompt")]
    texts = generate_texts(lm.model, lm.tokenizer, prompts, max_new_tokens=5, batch_size=2)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert np.isfinite(continuation_logprobs(lm.model, prompts[0], [[1], [2, 3]], mean=True)).all()


def test_left_padded_batches_score_like_single_prompts(checkpoint) -> None:
    from gr2.models.scoring import batch_beam_search_items, batch_continuation_logprobs

    lm = load_model(checkpoint, SID_TOKENS)
    tok = lm.tokenizer
    prompts = [render_prompt(tok, [{"role": "user", "content": text}], prefix=SID_BEGIN)
               for text in ("short", "a much longer prompt about The Golden Orbit 12 and Drama")]
    seqs = [tok.convert_tokens_to_ids([f"<s_a_{i % 2}>", f"<s_b_{i % 3}>", f"<s_c_{i}>"]) for i in range(6)]
    conts = [seqs[:4], [seqs[5], seqs[0][:2]]]
    batched = batch_continuation_logprobs(lm.model, prompts, conts)
    for prompt, cont, got in zip(prompts, conts, batched, strict=True):
        assert got == pytest.approx(continuation_logprobs(lm.model, prompt, cont), abs=1e-4)
    trie = SIDTrie(list(range(6)), seqs)
    together = batch_beam_search_items(lm.model, prompts, trie, beams=4)
    for prompt, found in zip(prompts, together, strict=True):
        alone = beam_search_items(lm.model, prompt, trie, beams=4)
        assert [s for _, s in found] == pytest.approx([s for _, s in alone], abs=1e-4)
        exact = continuation_logprobs(lm.model, prompt, seqs)  # items may swap only where scores tie
        assert all(exact[item] == pytest.approx(score, abs=1e-4) for item, score in found)
