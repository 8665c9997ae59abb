"""Shared by the serving tests: a smoke-size serving bundle with a materialized Feast store, and a real
KServe server on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import requests

from gr2.config import GR2Config, load_config
from gr2.contract import MODEL_NAME, SERVER_READY_PATH
from gr2.models.bundle import ServingManifest, write_serving_bundle
from gr2.paths import RunPaths

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ServingRun:
    """A run with SIDs, samples and a materialized Feast store, and a serving bundle built from it."""

    cfg: GR2Config
    bundle: Path
    feature_repo: Path


def build_serving_run(prepared: GR2Config, root: Path) -> ServingRun:
    """SIDs (`gr2 sid train`, smoke), samples, Feast apply + materialize, an offline smoke checkpoint, bundle."""
    from gr2.features.store import apply_and_materialize
    from gr2.models.factory import build_offline_checkpoint
    from gr2.rerank.format import build_messages
    from gr2.rerank.samples import build_samples, load_samples
    from gr2.sid.train import train_sid

    shutil.copytree(RunPaths.of(prepared.run_dir).root / "data", root / "data")
    cfg = load_config("smoke", overrides=[f"run_dir={root}"])
    paths = RunPaths.of(root)
    sid = train_sid(cfg)
    build_samples(cfg)
    apply_and_materialize(cfg)
    items = pd.read_parquet(paths.raw / "items.parquet")
    samples = load_samples(root, "train").head(100)
    corpus = [str(t) for t in items["title"]] + [
        m["content"] for row in samples.to_dict("records")
        for m in build_messages(row, items, sid.sid_map, style="reasoning", reasoning="likes these genres",
                                ranking=row["candidates"][::-1])]
    base = build_offline_checkpoint(cfg.train.model, corpus, paths.train / "base", seed=cfg.seed)
    bundle = write_serving_bundle(base, paths.sid / "sid_map.parquet", items, root / "bundle",
                                  ServingManifest(model_version="smoke-1", history_length=cfg.features.history_length))
    return ServingRun(cfg, bundle, paths.feature_repo)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def kserve_server(bundle: Path, *args: str, timeout_s: float = 120.0) -> Iterator[tuple[str, str, subprocess.Popen]]:
    """``python -m serving`` on free loopback ports; yields (http base URL, grpc host:port, process).

    The output goes to ``server-<port>.log`` beside the bundle (a pipe nobody reads would fill and block it).
    """
    http, grpc = free_port(), free_port()
    log_path = bundle.parent / f"server-{http}.log"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "serving", "--model", str(bundle), "--http_port", str(http), "--grpc_port", str(grpc),
           "--profile", "smoke", *args]
    log_file = log_path.open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(url + SERVER_READY_PATH, timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {timeout_s} s")
            time.sleep(0.3)
        yield url, f"127.0.0.1:{grpc}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()


__all__ = ["MODEL_NAME", "ServingRun", "build_serving_run", "free_port", "kserve_server"]
