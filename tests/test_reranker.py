"""The shared re-ranker core (gr2/models/reranker.py) and constrained decoding (gr2/models/constrained.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gr2.models.bundle import BundleError, ServingManifest, write_serving_bundle
from gr2.models.constrained import ConstraintError, RankingAutomaton, RankingLogitsProcessor, ThinkSpec
from gr2.models.factory import build_offline_checkpoint
from gr2.models.reranker import UNSCORED, ItemCatalog, Reranker, RerankError
from gr2.rerank.format import build_messages
from gr2.sid.sidmap import SIDMap
from gr2.train.config import ModelConfig
from gr2.train.evaluate import rerank_likelihood_rankings

torch.set_num_threads(2)
TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64, vocab_size=400)
ITEMS = pd.DataFrame({"item_id": np.arange(1, 41, dtype="int64"), "title": [f"Film {i}" for i in range(1, 41)],
                      "categories": ["Drama|War", "Comedy", "Horror", "Drama"] * 10})


def _sid_map(item_ids: np.ndarray, size: int = 8, seed: int = 0) -> SIDMap:
    flat = np.random.default_rng(seed).choice(size ** 3, size=len(item_ids), replace=False)
    return SIDMap(item_ids, np.stack([flat // size ** 2, (flat // size) % size, flat % size], axis=1), size)


SIDS = _sid_map(ITEMS["item_id"].to_numpy())


@pytest.fixture(scope="module")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> Reranker:
    root = tmp_path_factory.mktemp("reranker")
    corpus = [m["content"] for i in range(30) for m in build_messages(
        {"history": [1 + i % 40, 2 + i % 30], "candidates": list(range(1 + i % 20, 11 + i % 20))}, ITEMS, SIDS,
        style="reasoning", reasoning="likes drama", ranking=list(range(10 + i % 20, i % 20, -1)))]
    base = build_offline_checkpoint(TINY, corpus, root / "base", seed=1)
    SIDS.save(root / "sid_map.parquet")
    bundle = write_serving_bundle(base, root / "sid_map.parquet", ITEMS, root / "bundle",
                                  ServingManifest(model_version="test-1", history_length=5))
    return Reranker.from_bundle(bundle, think_tokens=6)


def _is_permutation(ranking: np.ndarray, candidates: np.ndarray) -> bool:
    return all(sorted(r) == sorted(c) for r, c in zip(ranking.tolist(), candidates.tolist(), strict=True))


def test_score_mode_ranks_like_the_training_evaluation(reranker: Reranker) -> None:
    cands = np.array([[5, 9, 2, 14, 33, 7, 1, 20, 11, 3], [40, 39, 38, 37, 36, 35, 34, 1, 2, 3]], dtype=np.int64)
    hist = [[1, 2, 3, 4, 5, 6, 7], []]
    out = reranker.rerank(cands, hist, "score")
    assert _is_permutation(out.ranking, cands) and out.ranking.dtype == np.int64
    assert not out.fallback.any() and out.unknown_items.tolist() == [0, 0] and not out.invalid.any()
    assert (np.diff(out.scores, axis=1) <= 0).all() and (out.scores < 0).all()
    assert set(out.timings) == {"prompt_build", "model", "parse"} and out.timings["model"] > 0
    samples = pd.DataFrame({"history": [h[-5:] for h in hist], "candidates": list(cands)})
    assert out.ranking.tolist() == rerank_likelihood_rankings(reranker.lm, SIDS, samples, ITEMS)


def test_item_token_bundle_scores_in_the_next_item_prompt_chosen_by_its_manifest(tmp_path) -> None:
    """A model trained with item tokens, shipped with score_prompt next_item: serving ranks exactly as the
    training evaluation's next-item likelihood, and the names a feature store serves (plain SIDs) are replaced
    by the model's own item tokens."""
    from gr2.models.bundle import read_manifest
    from gr2.models.factory import load_model
    from gr2.train.evaluate import next_item_rankings

    names = SIDS.with_item_tokens("item")
    base = build_offline_checkpoint(TINY, [f"Film {i}" for i in range(40)], tmp_path / "base", seed=1)
    lm = load_model(base, names.all_tokens())
    lm.model.save_pretrained(tmp_path / "model")
    lm.tokenizer.save_pretrained(tmp_path / "model")
    names.save(tmp_path / "model" / "sid_map.parquet")  # what every training stage writes next to its model
    SIDS.save(tmp_path / "run_sid_map.parquet")
    bundle = write_serving_bundle(tmp_path / "model", tmp_path / "run_sid_map.parquet", ITEMS, tmp_path / "bundle",
                                  ServingManifest(model_version="t", history_length=5, score_prompt="next_item"))
    served = Reranker.from_bundle(bundle)
    assert SIDMap.load(bundle / "sid_map.parquet").item_tokens == "item"
    cands = np.array([[5, 9, 2, 14, 33, 7, 1, 20, 11, 3]], dtype=np.int64)
    hist = [[1, 2, 3, 4, 5, 6, 7]]
    out = served.rerank(cands, hist, "score")
    samples = pd.DataFrame({"history": [hist[0][-5:]], "candidates": list(cands)})
    expected = next_item_rankings(served.lm, names, samples, 5)
    assert out.ranking.tolist() == expected and not out.fallback.any()
    feast_like = ItemCatalog(ITEMS, {i: SIDS.token_string(i) for i in SIDS.item_ids})  # plain SIDs, as Feast serves
    assert served.rerank(cands, hist, "score", catalog=feast_like).ranking.tolist() == expected
    (bundle / "gr2_serving.json").write_text((bundle / "gr2_serving.json").read_text().replace("next_item", "nxt"))
    with pytest.raises(BundleError, match="score_prompt"):
        read_manifest(bundle)


@pytest.mark.parametrize("mode", ["generate", "reason"])
def test_decoding_modes_return_valid_permutations(reranker: Reranker, mode: str) -> None:
    cands = np.array([[5, 9, 2, 14, 33, 7, 1, 20, 11, 3], [12, 13, 14, 15, 16, 17, 18, 19, 21, 22]])
    out = reranker.rerank(cands, [[1, 2], [3, 4, 5]], mode)
    assert _is_permutation(out.ranking, cands)
    assert not out.invalid.any() and not out.fallback.any()
    assert (np.diff(out.scores, axis=1) <= 1e-6).all() and (out.scores <= 1e-6).all()


def test_unknown_items_keep_their_position_and_flag_the_row(reranker: Reranker) -> None:
    cands = np.array([[5, 999, 2, 14, -3, 7], [1000, 1001, 6, 7, 8, 9], [1000, 1001, 1002, 4, 1003, 1004]])
    out = reranker.rerank(cands, [[1], [999], []], "score")
    assert _is_permutation(out.ranking, cands)
    assert out.ranking[0, 1] == 999 and out.ranking[0, 4] == -3 and out.ranking[1, :2].tolist() == [1000, 1001]
    assert out.fallback.tolist() == [True, True, True] and out.unknown_items.tolist() == [2, 2, 5]
    assert out.scores[0, 1] == UNSCORED and out.ranking[2].tolist() == cands[2].tolist()
    assert out.identity[2]


def test_bad_inputs_are_named(reranker: Reranker, tmp_path) -> None:
    with pytest.raises(RerankError, match="shape"):
        reranker.rerank(np.array([1, 2, 3]), [[]], "score")
    with pytest.raises(RerankError, match="histories"):
        reranker.rerank(np.array([[1, 2]]), [], "score")
    with pytest.raises(RerankError, match="mode"):
        reranker.rerank(np.array([[1, 2]]), [[]], "sample")
    with pytest.raises(BundleError, match="not a gr2 serving bundle"):
        Reranker.from_bundle(tmp_path)
    with pytest.raises(ConstraintError, match="prefix"):
        RankingAutomaton([(1, 2), (1,)], separator=(3,), eos=(0,))


def test_reasoning_block_cannot_open_twice() -> None:
    """Free reasoning text may hold anything but EOS and a second ``<think>`` (which would make it unparsable)."""
    think = ThinkSpec(open=(5, 6), close=(6, 7, 6), close_token=7, budget=3, open_token=5)
    auto = RankingAutomaton([(1,), (2,)], separator=(3,), eos=(0,), think=think)
    auto.feed(5), auto.feed(6)
    assert auto.allowed() is None and auto.banned() == [0, 5]
    scores = RankingLogitsProcessor([auto], prompt_width=1)(torch.tensor([[9, 5, 6]]), torch.zeros(1, 10))
    assert torch.isinf(scores[0, [0, 5]]).all() and torch.isfinite(scores[0, [1, 2, 3, 4, 6, 7, 8, 9]]).all()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 31 - 1), k=st.integers(2, 10), mode=st.sampled_from(["generate", "reason"]),
       scale=st.floats(0.02, 3.0))
def test_random_weights_still_decode_permutations(reranker: Reranker, seed: int, k: int, mode: str,
                                                  scale: float) -> None:
    """Whatever the weights, constrained decoding names every candidate exactly once."""
    model = reranker.lm.model
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(seed)
    try:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
        rng = np.random.default_rng(seed)
        cands = np.stack([rng.choice(np.arange(1, 41), size=k, replace=False) for _ in range(2)])
        out = reranker.rerank(cands, [list(rng.integers(1, 41, size=3)), []], mode)
        assert _is_permutation(out.ranking, cands) and not out.invalid.any()
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(saved[n])


@pytest.mark.parametrize("mode", ["score", "generate", "reason"])
def test_short_labels_without_sids_also_decode_permutations(reranker: Reranker, mode: str) -> None:
    """A bundle with ``with_sids: false`` names candidates [A], [B], ...: multi-token, same guarantees."""
    plain = Reranker(reranker.lm, ItemCatalog(ITEMS, None), ServingManifest(model_version="t", with_sids=False),
                     think_tokens=4)
    cands = np.array([[3, 1, 4, 15, 9, 2, 6, 5, 35, 8]])
    out = plain.rerank(cands, [[7, 1]], mode)
    assert _is_permutation(out.ranking, cands) and not out.invalid.any() and not out.fallback.any()
