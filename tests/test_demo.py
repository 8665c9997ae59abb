"""`gr2 demo` is the pipeline run locally (tests/test_pipeline.py runs it end to end)."""

from __future__ import annotations

from click.testing import CliRunner

from gr2.cli import main


def test_demo_is_the_local_pipeline_run() -> None:
    result = CliRunner().invoke(main, ["demo", "--help"])
    assert result.exit_code == 0 and "pipeline, with kfp.local" in result.output


def test_from_step_is_replaced_by_the_cache() -> None:
    result = CliRunner().invoke(main, ["demo", "--profile", "smoke", "--from-step", "midtrain"])
    assert result.exit_code == 1 and "reuses every cached step" in result.output
