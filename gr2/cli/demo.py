"""``gr2 demo``: the main job, every stage in order on one run directory."""

from __future__ import annotations

import click

from gr2.cli.common import GR2Config, config_options, fail


@click.command(name="demo")
@click.option("--from-step", default=None, help="Resume from this step (earlier artefacts must exist).")
@config_options
def group(cfg: GR2Config, from_step: str | None) -> None:
    """Run every stage end to end on the profile's dataset (default: MovieLens 100K)."""
    from gr2.data.schema import DataError
    from gr2.demo import run_demo

    click.echo(f"gr2 demo: profile {cfg.profile}, run dir {cfg.run_dir}")
    try:
        timings = run_demo(cfg, from_step, echo=click.echo)
    except (DataError, ValueError, RuntimeError) as err:
        fail(str(err))
    click.echo(f"done in {sum(timings.values()):.1f} s; artefacts in {cfg.run_dir}")
