"""`gr2 demo ...` subcommands."""

from __future__ import annotations

import click


@click.group(name="demo")
def group() -> None:
    """demo stage commands."""
