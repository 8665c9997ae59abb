"""`gr2 train ...` subcommands: midtrain -> traces -> reasoning -> rl -> internalize, then the stage table."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from gr2.cli.common import config_options, fail, requires_valid_data
from gr2.config import GR2Config
from gr2.train.config import with_stage_fields


def _run(step: Callable[[GR2Config], Any], cfg: GR2Config) -> Any:
    """Run a stage; input errors become one line and exit code 1 (no traceback)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not cfg.train.model.base_model:  # the offline model never needs the hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gr2.data.schema import DataError
    from gr2.models.factory import ModelLoadError
    from gr2.models.tokenizer import TokenizerError
    from gr2.rerank.format import FormatError
    from gr2.rerank.protocol import ProtocolError
    from gr2.rerank.samples import SamplesError
    from gr2.train.inputs import TrainInputError
    from gr2.train.reasoning import ReasoningInputError
    from gr2.train.rl import RLInputError
    from gr2.train.tasks import TaskError

    try:
        return step(cfg)
    except (TrainInputError, SamplesError, ReasoningInputError, RLInputError, ModelLoadError, TokenizerError, TaskError,
            FormatError, ProtocolError, DataError, FileNotFoundError) as err:
        fail(str(err))


@click.group(name="train")
def group() -> None:
    """Staged LLM training: mid-training, reasoning traces, reasoning SFT, RL, internalization, stage table."""


def _show(art: Any, output: str) -> None:
    """Print a stage's main output, metrics and summary paths, then the summary itself."""
    click.echo(f"{output}: {getattr(art, output)}\nmetrics: {art.metrics}\nsummary: {art.summary}")
    click.echo(art.summary.read_text())


@group.command("midtrain")
@config_options
@requires_valid_data
def midtrain(cfg: GR2Config) -> None:
    """Mid-train the LM (SID tokens added) on the task mixture with TRL's SFTTrainer."""
    from gr2.train.midtrain import run_midtrain

    _show(_run(run_midtrain, cfg), "model")


@group.command("traces")
@config_options
@requires_valid_data
def traces(cfg: GR2Config) -> None:
    """Rejection-sample reasoning traces from the teacher (train.traces.teacher)."""
    from gr2.train.traces import run_traces

    _show(_run(run_traces, cfg), "traces")


@group.command("reasoning")
@config_options
@requires_valid_data
def reasoning(cfg: GR2Config) -> None:
    """SFT on accepted traces with lambda_r (reasoning) < lambda_o (ranking) token weights."""
    from gr2.train.reasoning import run_reasoning

    _show(_run(run_reasoning, cfg), "model")


@group.command("rl")
@click.option("--reward", type=click.Choice(["conditional", "naive"]), default=None,
              help="Reward trained (default: train.rl.reward); naive writes train/rl_naive.")
@config_options
@requires_valid_data
def rl(cfg: GR2Config, reward: str | None) -> None:
    """GRPO (DAPO loss, clip-higher) with constrained rollouts from the best earlier model."""
    from gr2.train.rl import run_rl

    if reward is not None:
        cfg = with_stage_fields(cfg, "rl", reward=reward)
    _show(_run(run_rl, cfg), "model")


@group.command("internalize")
@config_options
@requires_valid_data
def internalize(cfg: GR2Config) -> None:
    """Answer-only GRPO from the best of rl/reasoning; writes the serving checkpoint train/internalize/model."""
    from gr2.train.internalize import run_internalize

    _show(_run(run_internalize, cfg), "model")


@group.command("opd")
@click.option("--method", type=click.Choice(["opd", "sft"]), default=None,
              help="opd = on-policy distillation (train/opd); sft = SFT on the teacher's answers (train/opd_sft).")
@config_options
@requires_valid_data
def opd(cfg: GR2Config, method: str | None) -> None:
    """Distil the re-ranker into a student with at most 1/4 of its parameters (TRL DistillationTrainer)."""
    from gr2.train.opd import run_opd

    if method is not None:
        cfg = with_stage_fields(cfg, "opd", method=method)
    _show(_run(run_opd, cfg), "model")


@group.command("compress")
@config_options
@requires_valid_data
def compress(cfg: GR2Config) -> None:
    """Prompt compression (rule vs learned selector): prompt tokens vs R@1/N@3 at several budgets."""
    from gr2.train.compressor import run_compressor

    _show(_run(run_compressor, cfg), "curve")


def write_stage_table(cfg: GR2Config, results_dir: str | None = None) -> None:
    """Write and print the stage-by-stage table (shared by `gr2 train table` and `gr2 eval stages`)."""
    import json
    from pathlib import Path

    from gr2.train.stages import results_record, run_stage_table

    art = _run(run_stage_table, cfg)
    click.echo(f"table: {art.markdown}\njson: {art.json}")
    if results_dir is not None:
        name = "stages.json" if cfg.rerank.protocol == "temporal" else "stages_loo.json"
        record = json.loads(art.json.read_text())
        out = Path(results_dir) / name
        out.parent.mkdir(parents=True, exist_ok=True)
        compact = results_record(record["metrics"])
        compact.update(git_commit=record.get("git_commit"), profile=cfg.profile)
        out.write_text(json.dumps(compact, indent=2) + "\n")
        click.echo(f"results: {out}")
    click.echo(art.markdown.read_text())


@group.command("table")
@config_options
def table(cfg: GR2Config) -> None:
    """Write the stage-by-stage table (incoming order, mid-training, reasoning SFT) to the eval folder."""
    write_stage_table(cfg)
