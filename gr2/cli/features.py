"""``gr2 features apply|materialize|get``."""

from __future__ import annotations

import json

import click

from gr2.cli.common import GR2Config, config_options, fail
from gr2.data.schema import DataError
from gr2.features.store import FeatureStoreError

yaml_option = click.option("--feature-store-yaml", "yaml_file", default="feature_store.yaml", show_default=True,
                           help="Config file in the repo (feature_store.production.yaml for Redis + SQL registry).")


@click.group(name="features")
def group() -> None:
    """Item and user features in the Feast store (SQLite by default, Redis in production)."""


@group.command("apply")
@yaml_option
@config_options
def apply_cmd(cfg: GR2Config, yaml_file: str) -> None:
    """Write the feature sources from the run's split (and SIDs) and register the definitions."""
    from gr2.features.store import apply

    try:
        art = apply(cfg, yaml_file)
    except (FeatureStoreError, DataError) as err:
        fail(str(err))
    click.echo(f"applied {art.repo}: rows {art.rows}")


@group.command("materialize")
@yaml_option
@config_options
def materialize_cmd(cfg: GR2Config, yaml_file: str) -> None:
    """Load every feature view into the online store."""
    from gr2.features.store import materialize

    try:
        art = materialize(cfg, yaml_file)
    except (FeatureStoreError, DataError) as err:
        fail(str(err))
    click.echo(f"materialized {art.repo}: rows {art.rows}")


@group.command("get")
@click.option("--item", "items", multiple=True, type=int, help="Item id (repeatable).")
@click.option("--user", "users", multiple=True, type=int, help="User id (repeatable).")
@yaml_option
@config_options
def get_cmd(cfg: GR2Config, items: tuple[int, ...], users: tuple[int, ...], yaml_file: str) -> None:
    """Print the online features of items and users as JSON."""
    from gr2.features.store import get_online_features

    if not items and not users:
        fail("give at least one --item or --user", code=2)
    try:
        result = get_online_features(cfg, list(items), list(users), yaml_file)
    except FeatureStoreError as err:
        fail(str(err))
    click.echo(json.dumps(result, indent=2, default=str))
