"""`gr2 samples ...` subcommands."""

from __future__ import annotations

import click


@click.group(name="samples")
def group() -> None:
    """samples stage commands."""
