"""Leave-one-out runs the whole chain on the generated catalog: samples, baselines, SIDs, Feast, training.

The temporal protocol (the default) runs the same chain in ``test_demo.py`` and ``test_train.py``.
"""

from __future__ import annotations

import json

import pytest

from conftest import copy_run
from gr2.data.split import split_dataset
from gr2.data.validate import validate_dataset
from gr2.features.store import apply_and_materialize
from gr2.paths import RunPaths
from gr2.rerank.baselines import run_baselines
from gr2.rerank.samples import build_samples
from gr2.sid.train import train_sid
from gr2.train.midtrain import run_midtrain
from gr2.train.reasoning import run_reasoning
from gr2.train.stages import run_stage_table
from gr2.train.traces import run_traces

pytestmark = pytest.mark.slow
FAST = ["train.midtrain.optim.max_steps=6", "train.midtrain.optim.save_steps=6", "train.reasoning.optim.max_steps=2",
        "train.reasoning.optim.save_steps=2", "train.eval.max_generate=2", "rerank.sasrec_epochs=1"]


@pytest.mark.parametrize("protocol", ["leave_one_out"])
def test_whole_chain_under_the_protocol(synthetic_run, tmp_path, protocol) -> None:
    from gr2.config import load_config

    base = copy_run(synthetic_run, tmp_path)
    cfg = load_config("smoke", overrides=[f"run_dir={base.run_dir}", f"rerank.protocol={protocol}", *FAST])
    paths = RunPaths.of(cfg.run_dir)
    assert validate_dataset(paths.raw, cfg.data, paths.validation).success
    split = json.loads(split_dataset(paths.raw, paths.split, cfg.rerank).summary.read_text())
    assert split["protocol"]["kind"] == protocol
    assert train_sid(cfg).metrics["uniqueness_final"] == 1.0
    apply_and_materialize(cfg)
    summary = json.loads(build_samples(cfg).summary.read_text())["metrics"]
    assert summary["protocol"]["kind"] == protocol and all(s["samples"] > 0 for s in summary["splits"].values())
    baselines = json.loads(run_baselines(cfg).json.read_text())["metrics"]
    assert set(baselines["results"]["test"]["legacy"]["methods"]) == {"incoming", "popularity", "random", "sasrec"}
    assert run_midtrain(cfg).model.joinpath("config.json").exists()
    traces = json.loads(run_traces(cfg).metrics.read_text())["metrics"]
    assert traces["accepted"] > 0
    assert run_reasoning(cfg).model.joinpath("config.json").exists()
    rows = run_stage_table(cfg).rows
    assert rows[0]["stage"] == "incoming" and rows[0]["identity_rate"] == 1.0
    assert {"midtrain", "reasoning", "popularity", "sasrec"} <= {r["stage"] for r in rows}
    assert sum(r["serving"] for r in rows) == 1
    assert all("strict R@1" in r and r["strict R@1"] <= r["R@1"] + 1e-12 for r in rows)
