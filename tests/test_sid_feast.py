"""The SIDs reach Feast: after `gr2 sid train`, the online store serves each item's SID."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import copy_run, shared_ml100k
from gr2.cli.sid import refresh_feature_store
from gr2.features import store
from gr2.paths import RunPaths
from gr2.sid.sidmap import SIDMap
from gr2.sid.train import train_sid

EMBED_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "sid-embeddings"  # shared with test_sid.py


@pytest.mark.slow
def test_sid_train_refreshes_the_online_store(prepared_run, tmp_path_factory) -> None:
    cfg = copy_run(prepared_run, tmp_path_factory.mktemp("sid_feast"))
    cfg = cfg.model_copy(update={"sid": cfg.sid.model_copy(update={"cache_dir": str(EMBED_CACHE)})})
    assert "no feature repo" in refresh_feature_store(cfg)  # before `gr2 features apply`: a hint, no error
    store.apply(cfg)
    store.materialize(cfg)
    before = store.get_online_features(cfg, item_ids=[1])["items"][0]
    assert before.get("sid") is None
    train_sid(cfg)
    assert "item_sid rows" in refresh_feature_store(cfg)
    got = store.get_online_features(cfg, item_ids=[1, 2])["items"]
    sid_map = SIDMap.load(RunPaths.of(cfg.run_dir).sid / "sid_map.parquet")
    assert [r["sid"] for r in got] == [sid_map.token_string(1), sid_map.token_string(2)]
    assert got[0]["sid_codes"] == list(sid_map.codes(1))
    if shared_ml100k() is not None:
        assert got[0]["title"] == "Toy Story"
