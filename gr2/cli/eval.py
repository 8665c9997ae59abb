"""``gr2 eval score|baselines`` (``gr2 eval --predictions FILE`` is ``gr2 eval score``)."""

from __future__ import annotations

from pathlib import Path

import click

from gr2.cli.common import GR2Config, config_options, fail

_predictions = click.option("--predictions", type=click.Path(dir_okay=False),
                            help="Parquet/JSONL/JSON with sample_id and ranking (item ids) or text (model answer).")
_split = click.option("--split", type=click.Choice(["train", "validation", "test"]), default="test",
                      show_default=True, help="Samples the predictions refer to.")
_protocol = click.option("--protocol", type=click.Choice(["legacy", "random"]), default="legacy",
                         show_default=True, help="Candidate protocol of those samples.")
_out = click.option("--out", type=click.Path(dir_okay=False),
                    help="Scores JSON (default: <run-dir>/eval/<predictions name>_scores.json).")
_show = 10  # problems printed before "... and N more"


def _score(cfg: GR2Config, predictions: str | None, split: str, protocol: str, out: str | None) -> None:
    from gr2.paths import RunPaths
    from gr2.provenance import write_metrics
    from gr2.rerank.evaluate import PredictionsError, read_predictions, score_predictions
    from gr2.rerank.report import lifts_table, metrics_table
    from gr2.rerank.samples import SamplesError, load_samples, sample_path

    if not predictions:
        fail("missing --predictions FILE", code=2)
    try:
        samples = load_samples(cfg.run_dir, split, protocol)
        report = score_predictions(samples, read_predictions(predictions), n_boot=cfg.rerank.bootstrap_samples,
                                   seed=cfg.seed, by_user=cfg.rerank.bootstrap_by_user)
    except (PredictionsError, SamplesError) as err:
        fail(str(err))
    target = Path(out) if out else RunPaths.of(cfg.run_dir).eval / f"{Path(predictions).stem}_scores.json"
    write_metrics(target, report.to_dict(), cfg, [predictions, sample_path(cfg.run_dir, split, protocol)])
    click.echo(f"scored {report.n_scored} of {report.n_predictions} predictions on {report.n_samples} "
               f"{split} samples ({protocol}); {report.missing} samples have no prediction")
    if report.n_scored:
        rows = {"model": {"metrics": report.metrics, "lifts": report.lifts}}
        click.echo(metrics_table(rows))
        click.echo(lifts_table(rows))
    click.echo(f"wrote {target}")
    if report.problems:
        for line in report.problems[:_show]:
            click.echo(f"rejected: {line}", err=True)
        if len(report.problems) > _show:
            click.echo(f"... and {len(report.problems) - _show} more (all in {target})", err=True)
        fail(f"{len(report.problems)} of {report.n_predictions} predictions rejected; first: {report.problems[0]}")
    if not report.n_scored:
        fail("no prediction could be scored")
    if report.missing:
        fail(f"{report.missing} of {report.n_samples} {split} samples have no prediction (scores above cover the "
             f"others only)")


@click.group(name="eval", invoke_without_command=True)
@_predictions
@_split
@_protocol
@_out
@config_options
def group(cfg: GR2Config, predictions: str | None, split: str, protocol: str, out: str | None) -> None:
    """Score re-rankers on the samples: `gr2 eval --predictions FILE`, `gr2 eval score`, `gr2 eval baselines`."""
    ctx = click.get_current_context()
    if ctx.invoked_subcommand is None:
        if predictions is None:
            click.echo(ctx.get_help())
            ctx.exit(2)
        _score(cfg, predictions, split, protocol, out)


@group.command("score")
@_predictions
@_split
@_protocol
@_out
@config_options
def score_cmd(cfg: GR2Config, predictions: str | None, split: str, protocol: str, out: str | None) -> None:
    """Score a predictions file; rejected rows are listed and make the command exit 1."""
    _score(cfg, predictions, split, protocol, out)


@group.command("baselines")
@config_options
def baselines_cmd(cfg: GR2Config) -> None:
    """Incoming order, popularity, random and SASRec on validation/test: Markdown, JSON and PNG."""
    from gr2.data.schema import DataError
    from gr2.rerank.baselines import run_baselines
    from gr2.rerank.samples import SamplesError

    try:
        art = run_baselines(cfg)
    except (SamplesError, DataError) as err:
        fail(str(err))
    click.echo(art.markdown.read_text())
    click.echo(f"wrote {art.json}, {art.markdown}, {art.png}")


@group.command("stages")
@click.option("--results", "results_dir", type=click.Path(file_okay=False), default=None,
              help="Also write the compact table there: stages.json (temporal) or stages_loo.json (leave-one-out).")
@config_options
def stages_cmd(cfg: GR2Config, results_dir: str | None) -> None:
    """Stage-by-stage table (baselines, every trained stage, the serving path); same as `gr2 train table`."""
    from gr2.cli.train import write_stage_table

    write_stage_table(cfg, results_dir)
