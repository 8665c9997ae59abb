"""The main job (`gr2 demo`) end to end at smoke size: every step runs and leaves its artefacts."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gr2.cli import main
from gr2.config import load_config
from gr2.demo import STEPS, run_demo
from gr2.paths import RunPaths

pytestmark = pytest.mark.slow


def test_smoke_demo_runs_every_step(tmp_path) -> None:
    result = CliRunner().invoke(main, ["demo", "--profile", "smoke", "--run-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for i, step in enumerate(STEPS, start=1):
        assert f"[{i}/{len(STEPS)}] {step.name}:" in result.output
    paths = RunPaths.of(tmp_path)
    assert json.loads((paths.validation / "validation.json").read_text())["success"] is True
    sid = json.loads((paths.sid / "report.json").read_text())["metrics"]
    assert sid["uniqueness_final"] == 1.0
    assert (paths.eval / "baselines.md").exists() and (paths.eval / "train_stages.md").exists()
    assert (paths.train / "reasoning" / "model" / "config.json").exists()


def test_unknown_step_is_named() -> None:
    with pytest.raises(ValueError, match="unknown step 'nope'"):
        run_demo(load_config("smoke"), from_step="nope")
