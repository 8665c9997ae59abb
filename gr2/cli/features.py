"""`gr2 features ...` subcommands."""

from __future__ import annotations

import click


@click.group(name="features")
def group() -> None:
    """features stage commands."""
