"""RL stages: GRPO with constrained rollouts (`gr2 train rl`) and the answer-only serving pass (`gr2 train internalize`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import copy_run, run_with_random_sids
from gr2.cli import main
from gr2.config import GR2Config
from gr2.paths import RunPaths
from gr2.sid.sidmap import SIDMap
from gr2.train.grpo import rollout_stats, zero_variance_rows
from gr2.train.rl import pick_init, reward_functions

torch.set_num_threads(1)


def _stage_model(lm, out: Path, r1: float) -> None:
    """A stage folder as the earlier stages leave it: model and a metrics.json with a validation R@1."""
    lm.model.save_pretrained(out / "model")
    lm.tokenizer.save_pretrained(out / "model")
    (out / "metrics.json").write_text(json.dumps({"metrics": {"validation": {"likelihood": {"R@1": r1}}}}))


@pytest.fixture(scope="module")
def rl_run(prepared_run: GR2Config, tmp_path_factory: pytest.TempPathFactory) -> GR2Config:
    """The prepared smoke run with a random SID map, re-ranking samples and two candidate starting models."""
    cfg, lm = run_with_random_sids(prepared_run, tmp_path_factory.mktemp("rl_run"))
    paths = RunPaths.of(cfg.run_dir)
    _stage_model(lm, paths.train / "midtrain", r1=0.1)
    _stage_model(lm, paths.train / "reasoning", r1=0.3)
    return cfg


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _metrics(cfg: GR2Config, stage: str) -> dict:
    return json.loads((RunPaths.of(cfg.run_dir).train / stage / "metrics.json").read_text())["metrics"]


def test_auto_init_takes_the_higher_validation_r1(rl_run: GR2Config) -> None:
    train = RunPaths.of(rl_run.run_dir).train
    assert pick_init(rl_run, "auto", ("reasoning", "midtrain"))[0] == train / "reasoning" / "model"
    assert pick_init(rl_run, "midtrain", ("reasoning", "midtrain"))[0] == train / "midtrain" / "model"
    assert pick_init(rl_run, "auto", ("rl", "midtrain"))[0] == train / "midtrain" / "model"  # no rl model yet


def test_reward_switch_and_rollout_statistics(rl_run: GR2Config) -> None:
    rows = [{"candidates": [1, 2], "target": 2, "labels": ["[A]", "[B]"]}] * 2
    copy = ["[A] > [B]"] * 2
    for reward, expected in (("conditional", 0.0), ("naive", 0.2)):  # copying the order pays only when naive
        funcs, weights = reward_functions(rl_run.train.rl.model_copy(update={"reward": reward}))
        assert funcs[0].__name__ == reward and weights[0] == 1.0 and sum(weights) == 1.0
        assert funcs[0](copy, candidates=[[1, 2]] * 2, target=[2, 2]) == [expected] * 2
    assert rollout_stats(["[B] > [A]", "[B] > [B]"], rows) == {"invalid_rate": 0.5, "identity_rate": 0.0, "r1": 1.0}
    assert zero_variance_rows(torch.tensor([0.0, 0.0, 0.7, -0.7]), 2).tolist() == [True, True, False, False]


def test_rl_and_internalize_stages(rl_run: GR2Config) -> None:
    run = ["--profile", "smoke", "--run-dir", rl_run.run_dir]
    paths = RunPaths.of(rl_run.run_dir)

    code, out = _cli("train", "rl", *run)
    assert code == 0, out
    m = _metrics(rl_run, "rl")
    assert m["init_model"] == str(paths.train / "reasoning" / "model") and m["reward"] == "conditional"
    assert m["steps"] == 2 and len(m["curve"]) == 2
    for key in ("reward", "rewards/conditional/mean", "rewards/rank_promotion/mean", "rewards/format/mean",
                "rollout/identity_rate", "rollout/invalid_rate", "rollout/r1", "rollout/zero_variance_share",
                "frac_reward_zero_std"):
        assert all(key in point for point in m["curve"]), key
    assert m["rollouts"]["batches"] == 2 and m["rollouts"]["max_invalid_rate"] == 0.0
    assert all(p["rewards/format/mean"] == 1.0 for p in m["curve"])  # every rollout is a permutation
    decoded = m["validation"]["generated"]
    assert decoded["invalid_rate"] == 0.0 and decoded["strict R@1"] == decoded["R@1"]
    assert decoded["example_output"].startswith("<think>")
    assert "R@1" in m["validation"]["likelihood"] and "| generated |" in (paths.train / "rl" / "summary.md").read_text()

    code, out = _cli("train", "rl", *run, "--reward", "naive")
    assert code == 0, out
    naive = _metrics(rl_run, "rl_naive")
    assert naive["reward"] == "naive" and "rewards/naive/mean" in naive["curve"][0]
    assert (paths.train / "rl" / "model" / "config.json").exists()  # the conditional run is kept

    code, out = _cli("train", "internalize", *run, "--set", "train.internalize.init=rl")
    assert code == 0, out
    i = _metrics(rl_run, "internalize")
    assert i["style"] == "answer" and i["init_model"] == str(paths.train / "rl" / "model")
    assert i["rollouts"]["max_invalid_rate"] == 0.0 and i["validation"]["generated"]["invalid_rate"] == 0.0
    assert "<think>" not in i["validation"]["generated"]["example_output"]
    model_dir = paths.train / "internalize" / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    sid_map = SIDMap.load(model_dir / "sid_map.parquet")
    assert tokenizer.chat_template and (model_dir / "gr2_serving.json").exists()
    assert model.get_input_embeddings().weight.shape[0] >= len(tokenizer)
    assert all(t in tokenizer.get_vocab() for t in sid_map.all_tokens())


def test_rl_without_a_model_names_the_command(tmp_path: Path, prepared_run: GR2Config) -> None:
    cfg = copy_run(prepared_run, tmp_path)
    code, out = _cli("train", "rl", "--profile", "smoke", "--run-dir", cfg.run_dir, "--set", "train.rl.init=reasoning")
    assert code == 1 and "gr2 train reasoning" in out
