"""The production feature_store variant: Redis online store + SQL registry, against a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
import redis

from conftest import copy_run
from gr2.features import store

PRODUCTION_YAML = "feature_store.production.yaml"
pytestmark = [pytest.mark.redis,
              pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def redis_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"127.0.0.1:{port}", client
    proc.terminate()
    proc.wait(timeout=10)


def test_materialize_into_redis_reads_back_the_same_features(prepared_run, tmp_path, redis_server, monkeypatch):
    connection, client = redis_server
    monkeypatch.setenv("GR2_REDIS_CONNECTION", connection)
    monkeypatch.setenv("GR2_FEAST_REGISTRY_URL", f"sqlite:///{tmp_path / 'sql_registry.db'}")
    cfg = copy_run(prepared_run, tmp_path / "run")

    store.apply_and_materialize(cfg, PRODUCTION_YAML)
    assert client.dbsize() > 0, "nothing was written to Redis"
    from_redis = store.get_online_features(cfg, item_ids=[1, 3], user_ids=[2], yaml_file=PRODUCTION_YAML)

    store.apply_and_materialize(cfg)  # the embedded SQLite default over the same sources
    from_sqlite = store.get_online_features(cfg, item_ids=[1, 3], user_ids=[2])
    assert from_redis == from_sqlite
    assert from_redis["items"][0]["title"]
