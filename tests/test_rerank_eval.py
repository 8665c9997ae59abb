"""Scoring predictions (nothing rejected silently), the `gr2 eval` CLI and the classical baselines."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import copy_run
from gr2.cli import main
from gr2.paths import RunPaths
from gr2.rerank.baselines import run_baselines
from gr2.rerank.evaluate import PredictionsError, score_predictions, shuffled_view
from gr2.rerank.samples import build_samples, load_samples

SAMPLES = pd.DataFrame({
    "sample_id": ["a", "b", "c", "d"],
    "user_id": [1, 1, 2, 3],
    "candidates": [[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 5, 9]],
    "target": [2, 4, 9, 1],
    "target_position": [1, 0, 2, 0],
    "positives": [[2], [4], [9], [1]],
})


def test_scores_rankings_and_reports_every_bad_row():
    preds = pd.DataFrame({
        "sample_id": ["a", "b", "zz", "c", "a", "d"],
        "ranking": [[2, 1, 3], [4, 5, 6], [1, 2, 3], [7, 8, 8], [1, 2, 3], [1, 5, 42]],
    })
    report = score_predictions(SAMPLES, preds, n_boot=50)
    assert report.n_scored == 2 and report.missing == 0 and not report.ok  # c, d answered but rejected
    text = "\n".join(report.problems)
    assert "zz: not in the samples" in text and "a: duplicate" in text
    assert "c: ranking is not a permutation" in text and "repeated [8]" in text and "missing [9]" in text
    assert "d: ranking is not a permutation" in text and "unknown item(s) [42]" in text
    assert report.metrics["R@1"]["mean"] == 1.0
    assert report.lifts["R@1"]["abs"] == pytest.approx(0.5)  # incoming R@1 on a, b is 0.5


def test_scores_text_answers_with_flags():
    preds = pd.DataFrame({"sample_id": ["a", "b", "c"], "text": ["[B] > [A] > [C]", "[A] > [B] > [C]", "garbage"]})
    report = score_predictions(SAMPLES, preds, n_boot=50)
    assert report.ok and report.n_scored == 3 and report.missing == 1
    assert report.metrics["invalid"]["mean"] == pytest.approx(1 / 3)
    assert report.metrics["identity"]["mean"] == pytest.approx(2 / 3)  # b copies; garbage falls back to incoming
    # the garbage answer on c was repaired to the incoming order, whose first item (7) misses the target 9;
    # a repaired hit would count in R@1 but never in strict R@1
    assert report.metrics["strict R@1"]["mean"] <= report.metrics["R@1"]["mean"]


def test_strict_metrics_count_an_invalid_answer_as_a_miss():
    preds = pd.DataFrame({"sample_id": ["a", "b"], "text": ["[B] > [A] > [C]", "not a ranking"]})
    report = score_predictions(SAMPLES, preds, n_boot=50)
    assert report.metrics["R@1"]["mean"] == pytest.approx(1.0)  # b repaired to the incoming order: a hit
    assert report.metrics["strict R@1"]["mean"] == pytest.approx(0.5)  # strictly, b is a miss
    assert report.metrics["invalid"]["mean"] == pytest.approx(0.5)


def test_unreadable_predictions_raise():
    with pytest.raises(PredictionsError, match="sample_id"):
        score_predictions(SAMPLES, pd.DataFrame({"ranking": [[1, 2, 3]]}))
    with pytest.raises(PredictionsError, match="ranking"):
        score_predictions(SAMPLES, pd.DataFrame({"sample_id": ["a"]}))


def test_shuffled_view_keeps_targets_consistent():
    view = shuffled_view(SAMPLES, seed=3)
    for row in view.itertuples():
        assert row.candidates[row.target_position] == row.target
    assert sorted(map(sorted, view["candidates"])) == sorted(map(sorted, SAMPLES["candidates"]))


@pytest.fixture(scope="module")
def baseline_run(synthetic_run, tmp_path_factory):
    cfg = copy_run(synthetic_run, tmp_path_factory.mktemp("rerank_eval"))
    build_samples(cfg)
    return cfg, run_baselines(cfg)


@pytest.mark.slow
def test_baselines_table_chart_and_json(baseline_run):
    cfg, art = baseline_run
    record = json.loads(art.json.read_text())
    assert record["config"]["rerank"]["sasrec_epochs"] == cfg.rerank.sasrec_epochs
    test = record["metrics"]["results"]["test"]["legacy"]["methods"]
    assert set(test) == {"incoming", "popularity", "random", "sasrec"}
    for row in test.values():
        for stat in row["metrics"].values():
            assert stat["lo"] <= stat["mean"] <= stat["hi"]
    incoming = test["incoming"]["metrics"]
    assert incoming["identity"]["mean"] == 1.0
    assert incoming["R@1"]["mean"] == pytest.approx(incoming["keep_first"]["mean"])
    # keeping the presented order collapses when the presentation is shuffled; SASRec does not care
    assert test["incoming"]["position_bias_r1"] > 0.05
    assert abs(test["sasrec"]["position_bias_r1"]) < 0.02
    md = art.markdown.read_text()
    assert "| sasrec |" in md and "Lift over the incoming order" in md and "coverage" in md
    assert art.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = record["metrics"]["sasrec_training"]
    assert history[-1]["loss"] < history[0]["loss"] and all(h["loss"] > 0 for h in history)


@pytest.mark.slow
def test_cli_scores_a_baseline_file_and_rejects_bad_ones(baseline_run, tmp_path):
    cfg, art = baseline_run
    runner = CliRunner()
    base = ["--profile", "smoke", "--run-dir", cfg.run_dir]
    good = art.predictions / "sasrec_test_legacy.parquet"
    result = runner.invoke(main, ["eval", "--predictions", str(good), *base])
    assert result.exit_code == 0, result.output
    assert "scored" in result.output and "R@1" in result.output

    samples = load_samples(cfg.run_dir, "test")
    bad = pd.DataFrame({"sample_id": [*samples["sample_id"][:3], "nope"],
                        "ranking": [samples["candidates"][0], samples["candidates"][1][:-1],
                                    [*samples["candidates"][2][:-1], 10**9], [1]]})
    path = tmp_path / "bad.jsonl"
    bad.to_json(path, orient="records", lines=True)
    result = runner.invoke(main, ["eval", "score", "--predictions", str(path), *base])
    assert result.exit_code == 1
    assert "3 of 4 predictions rejected" in result.output and "nope: not in the samples" in result.output
    assert "Traceback" not in result.output
    scores = json.loads((RunPaths.of(cfg.run_dir).eval / "bad_scores.json").read_text())["metrics"]
    assert scores["n_scored"] == 1 and len(scores["problems"]) == 3

    result = runner.invoke(main, ["eval", "score", "--predictions", str(tmp_path / "missing.parquet"), *base])
    assert result.exit_code == 1 and "not found" in result.output

    partial = tmp_path / "partial.parquet"
    pd.read_parquet(good).iloc[:-2].to_parquet(partial)
    result = runner.invoke(main, ["eval", "--predictions", str(partial), *base])
    assert result.exit_code == 1 and "2 of" in result.output and "have no prediction" in result.output
    assert "| model |" in result.output  # scored the rest first


@pytest.mark.slow
def test_group_options_reach_the_subcommand(baseline_run, tmp_path):
    """`gr2 eval --run-dir R baselines` runs on R, not on the profile's run dir."""
    cfg, _ = baseline_run
    run = copy_run(cfg, tmp_path)
    for name in ("samples",):
        import shutil
        shutil.copytree(RunPaths.of(cfg.run_dir).root / name, RunPaths.of(run.run_dir).root / name)
    result = CliRunner().invoke(main, ["eval", "--profile", "smoke", "--run-dir", run.run_dir, "baselines"])
    assert result.exit_code == 0, result.output
    assert (RunPaths.of(run.run_dir).eval / "baselines.json").exists()
