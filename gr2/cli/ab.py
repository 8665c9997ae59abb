"""``gr2 ab replay|report``: an A/B test of two served variants, replayed on the test period."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gr2.cli.common import GR2Config, config_options, fail
from gr2.paths import RunPaths


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise click.BadParameter(f"{value!r}: expected NAME=VALUE", param_hint=option)
        out[name] = rest
    return out


@click.group(name="ab")
def group() -> None:
    """Champion vs challenger: sticky per-user routing, response logs, report with bootstrap CIs."""


@group.command("replay")
@click.option("--endpoint", "endpoints", multiple=True, required=True, metavar="VARIANT=URL",
              help="Base URL of each variant's server, e.g. champion=http://localhost:8080.")
@click.option("--weight", "weights", multiple=True, metavar="VARIANT=W", help="Traffic share (default: equal).")
@click.option("--split", default="test", show_default=True, help="Sample split replayed as traffic.")
@click.option("--limit", type=int, default=None, help="Replay at most this many samples.")
@config_options
def replay_cmd(cfg: GR2Config, endpoints: tuple[str, ...], weights: tuple[str, ...], split: str,
               limit: int | None) -> None:
    """Send the split's samples to the variants (user-hash routing); each server logs its responses."""
    from gr2.rerank.samples import SamplesError, load_samples
    from serving.ab import replay

    urls = _pairs(endpoints, "--endpoint")
    shares = {k: float(v) for k, v in _pairs(weights, "--weight").items()} or dict.fromkeys(urls, 1.0)
    if set(shares) != set(urls):
        fail(f"--weight names {sorted(shares)} but --endpoint names {sorted(urls)}")
    try:
        samples = load_samples(cfg.run_dir, split)
    except SamplesError as err:
        fail(str(err))
    sent = replay(samples.head(limit) if limit else samples, urls, shares, cfg.serve.model_name)
    click.echo(f"replayed {sum(sent.values())} samples: {sent}")


@group.command("report")
@click.option("--log", "logs", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="JSON-lines response log (serve.response_log) of a variant; repeat per variant.")
@click.option("--interactions", type=click.Path(exists=True, dir_okay=False),
              help="Interactions joined to the logs (default: the run's data/raw/interactions.parquet).")
@click.option("--champion", default="champion", show_default=True, help="Variant the lifts are measured against.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Where ab_report.{json,md} go "
                                                                            "(default: <run-dir>/eval/ab).")
@config_options
def report_cmd(cfg: GR2Config, logs: tuple[str, ...], interactions: str | None, champion: str,
               out_dir: str | None) -> None:
    """Per-variant R@1/N@3 against each user's next interaction, and the lift over the champion."""
    import pandas as pd

    from serving.ab import ab_report, read_logs, render_report

    source = Path(interactions) if interactions else RunPaths.of(cfg.run_dir).raw / "interactions.parquet"
    if not source.exists():
        fail(f"{source}: not found; pass --interactions or run `gr2 data fetch`")
    table = pd.read_parquet(source) if source.suffix == ".parquet" else pd.read_csv(source)
    try:
        report = ab_report(read_logs(logs), table, champion, cfg.rerank.bootstrap_samples, cfg.seed)
    except ValueError as err:
        fail(str(err))
    out = Path(out_dir) if out_dir else RunPaths.of(cfg.run_dir).eval / "ab"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ab_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "ab_report.md").write_text(render_report(report))
    click.echo(render_report(report) + f"written to {out}")
