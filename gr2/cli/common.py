"""Options shared by every ``gr2`` subcommand: profile, config file, overrides, run dir."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from gr2.config import ConfigError, GR2Config, load_config


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--profile/--config/--set/--run-dir`` and pass the resolved ``cfg`` instead."""

    @click.option("--profile", default="default", show_default=True, help="Named profile (smoke, default).")
    @click.option("--config", "config_file", type=click.Path(dir_okay=False), help="YAML overriding the profile.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override one field, e.g. seed=7.")
    @click.option("--run-dir", default=None, help="Run directory (default: the profile's run_dir).")
    @functools.wraps(func)
    def wrapper(profile: str, config_file: str | None, overrides: tuple[str, ...], run_dir: str | None,
                **kwargs: Any) -> Any:
        profile, config_file, overrides, run_dir = _with_group_options(profile, config_file, overrides, run_dir)
        extra = [*overrides, *([f"run_dir={run_dir}"] if run_dir else [])]
        try:
            cfg = load_config(profile, config_file, extra)
        except ConfigError as err:
            raise click.UsageError(str(err)) from err
        return func(cfg=cfg, **kwargs)

    return wrapper


def _with_group_options(profile: str, config_file: str | None, overrides: tuple[str, ...], run_dir: str | None
                        ) -> tuple[str, str | None, tuple[str, ...], str | None]:
    """Options given to a parent group (``gr2 eval --run-dir R baselines``) apply unless the command sets them."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    parent = ctx.parent
    if parent is None or "profile" not in parent.params:
        return profile, config_file, overrides, run_dir

    def given(c: click.Context, name: str) -> bool:
        return c.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)

    values = {"profile": profile, "config_file": config_file, "overrides": overrides, "run_dir": run_dir}
    for name in values:
        if not given(ctx, name) and given(parent, name):
            values[name] = parent.params[name]
    if given(ctx, "overrides") and given(parent, "overrides"):
        values["overrides"] = (*parent.params["overrides"], *overrides)
    return values["profile"], values["config_file"], tuple(values["overrides"]), values["run_dir"]


def requires_valid_data(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--force`` and refuse (exit 1, naming the report) data whose last validation failed."""

    @click.option("--force", is_flag=True, help="Use the data even though its last validation failed.")
    @functools.wraps(func)
    def wrapper(cfg: GR2Config, force: bool, **kwargs: Any) -> Any:
        from gr2.data.gate import require_valid_data
        from gr2.data.schema import DataError

        try:
            require_valid_data(cfg.run_dir, force)
        except DataError as err:
            fail(str(err))
        return func(cfg=cfg, **kwargs)

    return wrapper


def warn(messages: list[str] | tuple[str, ...]) -> None:
    """Print each warning on its own line to stderr."""
    for message in messages:
        click.echo(f"warning: {message}", err=True)


def fail(message: str, code: int = 1) -> None:
    """Print a one-line error and exit with ``code`` (no traceback)."""
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


__all__ = ["GR2Config", "config_options", "fail", "requires_valid_data", "warn"]
