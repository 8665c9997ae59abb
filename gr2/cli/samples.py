"""``gr2 samples build``."""

from __future__ import annotations

import click

from gr2.cli.common import GR2Config, config_options, fail, requires_valid_data, warn
from gr2.data.schema import DataError


@click.group(name="samples")
def group() -> None:
    """Re-ranking samples: the legacy pre-ranker's K candidates per position (and a random-negatives set)."""


@group.command("build")
@config_options
@requires_valid_data
def build_cmd(cfg: GR2Config) -> None:
    """Fit the legacy pre-ranker and write train/validation/test samples with a summary."""
    from gr2.rerank.protocol import ProtocolError
    from gr2.rerank.samples import SamplesError, build_samples

    try:
        art = build_samples(cfg)
    except (DataError, ProtocolError, SamplesError) as err:
        fail(str(err))
    except ValueError as err:  # scikit-learn / configuration problems, reported in one line
        fail(f"cannot build samples: {err}")
    import json

    summary = json.loads(art.summary.read_text())["metrics"]
    for name, s in summary["splits"].items():
        click.echo(f"{name}: {s['samples']} samples of {s['positions']} positions (coverage {s['coverage']:.3f}, "
                   f"{s['dropped_target_not_in_top_k']} dropped), {s['random_samples']} random-negative samples")
    click.echo(f"wrote {art.summary.parent}")
    warn(art.warnings)
