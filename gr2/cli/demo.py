"""``gr2 demo``: the main job, which is the Kubeflow pipeline run locally (= ``gr2 pipeline run --local``)."""

from __future__ import annotations

import click

from gr2.cli.common import GR2Config, config_options, fail


@click.command(name="demo")
@click.option("--from-step", default=None, hidden=True)
@click.option("--source", default="", help="Dataset folder (GroupLens/RecBole layout or canonical Parquet).")
@config_options
def group(cfg: GR2Config, from_step: str | None, source: str) -> None:
    """Run every stage end to end (the pipeline, with kfp.local); a rerun resumes from the cache."""
    from gr2.cli.pipeline import run_locally

    if from_step is not None:
        fail("--from-step is gone: `gr2 demo` runs the pipeline, and a rerun reuses every cached step, so it "
             "resumes at the first step whose inputs changed or that failed")
    run_locally(cfg, source, "gr2 demo (= gr2 pipeline run --local)")
