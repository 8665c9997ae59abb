"""Training III: OPD and SFT students (`gr2 train opd`), the prompt compressor (`gr2 train compress`), the cost bench."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from conftest import run_with_random_sids
from gr2.cli import main
from gr2.config import GR2Config
from gr2.models.factory import count_parameters, load_model
from gr2.paths import RunPaths
from gr2.rerank.format import LineDetail, build_messages
from gr2.sid.sidmap import SIDMap
from gr2.train.opd import build_student, retained_share

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def opd_run(prepared_run: GR2Config, tmp_path_factory: pytest.TempPathFactory) -> GR2Config:
    """The prepared smoke run with a random SID map, samples and (untrained) rl and internalized models."""
    cfg, lm = run_with_random_sids(prepared_run, tmp_path_factory.mktemp("opd_run"))
    paths = RunPaths.of(cfg.run_dir)
    for stage in ("rl", "internalize"):
        lm.model.save_pretrained(paths.train / stage / "model")
        lm.tokenizer.save_pretrained(paths.train / stage / "model")
    return cfg


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _metrics(cfg: GR2Config, stage: str) -> dict:
    return json.loads((RunPaths.of(cfg.run_dir).train / stage / "metrics.json").read_text())["metrics"]


def test_student_is_small_and_shares_the_vocabulary(opd_run: GR2Config) -> None:
    teacher = load_model(RunPaths.of(opd_run.run_dir).train / "internalize" / "model")
    student = build_student(teacher.model, opd_run.train.opd.student, seed=0)
    assert count_parameters(student) <= 0.25 * count_parameters(teacher.model)
    assert student.config.vocab_size == teacher.model.config.vocab_size
    assert student.get_input_embeddings().weight.abs().sum() > 0
    assert retained_share(0.3, 0.4, 0.2) == 0.5 and retained_share(0.3, 0.2, 0.2) is None


def test_opd_and_sft_students(opd_run: GR2Config) -> None:
    run = ["--profile", "smoke", "--run-dir", opd_run.run_dir]
    train = RunPaths.of(opd_run.run_dir).train
    code, out = _cli("train", "opd", *run)
    assert code == 0, out
    m = _metrics(opd_run, "opd")
    assert m["method"] == "opd" and m["teacher_model"] == str(train / "internalize" / "model")
    assert m["parameter_ratio"] <= 0.25 and m["steps"] == 2 and m["beta"] == 1.0
    assert m["rollouts"]["batches"] == 2 and m["rollouts"]["max_invalid_rate"] == 0.0  # constrained rollouts
    assert all(np.isfinite(p["loss"]) and "rollout/invalid_rate" in p for p in m["curve"])
    for who in ("student", "teacher"):
        assert "R@1" in m["validation"][who]["likelihood"]
        assert m["validation"][who]["generated"]["invalid_rate"] == 0.0
    assert set(m["retained_gain"]) == {"likelihood", "generated"}
    assert "| student | likelihood |" in (train / "opd" / "summary.md").read_text()
    teacher = load_model(train / "internalize" / "model")
    fresh = build_student(teacher.model, opd_run.train.opd.student, seed=opd_run.seed).state_dict()
    trained = load_model(train / "opd" / "model").model.state_dict()
    assert any(not torch.equal(fresh[k], trained[k]) for k in fresh)  # the student moved

    code, out = _cli("train", "opd", *run, "--method", "sft")
    assert code == 0, out
    s = _metrics(opd_run, "opd_sft")
    assert s["method"] == "sft" and s["steps"] == 2 and s["examples"] == m["examples"]
    assert s["curve"] and all(np.isfinite(p["loss"]) for p in s["curve"])
    assert (train / "opd" / "model" / "config.json").exists()  # the OPD student is kept


def test_compression_hook_and_budgets(opd_run: GR2Config) -> None:
    from gr2.train.compressor import BudgetCompressor

    paths = RunPaths.of(opd_run.run_dir)
    lm = load_model(paths.train / "internalize" / "model")
    items = pd.read_parquet(paths.raw / "items.parquet")
    sid_map = SIDMap.load(paths.sid / "sid_map.parquet")
    row = pd.read_parquet(paths.samples / "validation.parquet").iloc[0].to_dict()
    full = build_messages(row, items, sid_map, "answer")
    assert build_messages(row, items, sid_map, "answer", compress=lambda r: (list(r["history"]), LineDetail())) == full
    rule = BudgetCompressor(lm.tokenizer, items, sid_map, 0.4, "rule", opd_run.train.compress)
    kept, detail = rule(row)
    history = [int(h) for h in row["history"]]
    assert not detail.categories and len(kept) < len(history) and set(kept) <= set(history)
    assert history[-1] in kept  # the rule always keeps the most recent items
    assert rule.tokens(row, kept, detail) < rule.tokens(row, history, LineDetail())


def test_compress_stage_writes_the_curve(opd_run: GR2Config) -> None:
    code, out = _cli("train", "compress", "--profile", "smoke", "--run-dir", opd_run.run_dir)
    assert code == 0, out
    stage = RunPaths.of(opd_run.run_dir).train / "compress"
    curve = json.loads((stage / "curve.json").read_text())
    assert {(p["method"], p["budget"]) for p in curve} == {(m, b) for m in ("rule", "learned") for b in (1.0, 0.5)}
    for p in curve:
        assert (p["token_share"] == 1.0) if p["budget"] == 1.0 else (p["token_share"] <= 0.55)
        assert 0.0 <= p["R@1"] <= 1.0 and 0.0 <= p["N@3"] <= 1.0
    weights = json.loads((stage / "selector.json").read_text())["weights"]
    assert len(weights) == 6 and any(w != 0.0 for w in weights)  # the selector was fitted
    assert "| learned | 0.50 |" in (stage / "summary.md").read_text()


def test_cost_bench_on_the_smoke_run(opd_run: GR2Config, tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cost_bench.py"), "--run-dir", opd_run.run_dir,
                           "--limit", "2", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    paths = {r["path"] for r in rows}
    assert {"reasoning", "answer", "score"} <= paths and len(rows) == 2 * len(paths)
    by = {(r["path"], r["prompt"]): r for r in rows}
    assert by[("reasoning", "full")]["x_cheaper"] == 1.0
    assert by[("answer", "rule")]["prompt_tokens"] < by[("answer", "full")]["prompt_tokens"]
    assert by[("score", "full")]["generated_tokens"] == 0.0 < by[("answer", "full")]["generated_tokens"]
    assert all(r["requests"] == 2 and r["ms_b1"] > 0 and r["invalid_rate"] == 0.0 for r in rows)
    assert "| reasoning | full |" in done.stdout
