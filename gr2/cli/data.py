"""``gr2 data fetch|import|validate|split``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gr2.cli.common import GR2Config, config_options, fail, warn
from gr2.data.schema import DataError
from gr2.paths import RunPaths


@click.group(name="data")
def group() -> None:
    """Get a catalog into the canonical schema, validate it (Great Expectations) and split it."""


@group.command("fetch")
@click.argument("dataset", default="movielens-100k")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: <run-dir>/data/raw).")
@click.option("--from", "from_path", type=click.Path(), help="Existing local copy (GroupLens or RecBole layout).")
@config_options
def fetch_cmd(cfg: GR2Config, dataset: str, out: str | None, from_path: str | None) -> None:
    """Fetch DATASET (movielens-100k) and write it in the canonical schema."""
    from gr2.data.fetch import fetch

    try:
        result = fetch(dataset, out or RunPaths.of(cfg.run_dir).raw, from_path or cfg.data.source_path,
                       cfg.data.max_users)
    except DataError as err:
        fail(str(err))
    click.echo(f"source: {result.source} ({result.location})")
    click.echo(f"wrote {result.out_dir}: {result.n_interactions} interactions, {result.n_items} items, "
               f"{result.n_users} users")


@group.command("import")
@click.option("--interactions", required=True, type=click.Path(dir_okay=False), help="CSV/TSV/Parquet file.")
@click.option("--items", required=True, type=click.Path(dir_okay=False), help="CSV/TSV/Parquet file.")
@click.option("--column", "columns", multiple=True, metavar="CANONICAL=SOURCE",
              help="Column mapping, e.g. --column user_id=userId --column title=name.")
@click.option("--category-separator", default=None, help="Separator used in the source categories column.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: <run-dir>/data/raw).")
@config_options
def import_cmd(cfg: GR2Config, interactions: str, items: str, columns: tuple[str, ...],
               category_separator: str | None, out: str | None) -> None:
    """Import any catalog into the canonical schema (string ids are mapped to integers)."""
    from gr2.data.importer import import_catalog, parse_mapping

    target = Path(out) if out else RunPaths.of(cfg.run_dir).raw
    try:
        data = import_catalog(interactions, items, parse_mapping(columns), target, category_separator)
    except DataError as err:
        fail(str(err))
    click.echo(f"wrote {target}: {len(data.interactions)} interactions, {len(data.items)} items")


@group.command("validate")
@click.option("--data", "data_dir", type=click.Path(), help="Dataset folder (default: <run-dir>/data/raw).")
@click.option("--out", type=click.Path(file_okay=False), help="Report folder (default: <run-dir>/data/validation).")
@config_options
def validate_cmd(cfg: GR2Config, data_dir: str | None, out: str | None) -> None:
    """Run the Great Expectations suites; exit 1 and list the failures when the data is invalid."""
    from gr2.data.validate import validate_dataset

    paths = RunPaths.of(cfg.run_dir)
    try:
        report = validate_dataset(data_dir or paths.raw, cfg.data, out or paths.validation)
    except DataError as err:
        fail(str(err))
    click.echo(f"{len(report.outcomes)} expectations, {len(report.failures)} failed "
               f"(report: {report.markdown_path})")
    for o in report.failures:
        example = f"; e.g. {json.dumps(o.examples[0], default=str)}" if o.examples else ""
        click.echo(f"FAILED {o.message}{example}")
    if not report.success:
        raise SystemExit(1)
    click.echo("data is valid")


@group.command("split")
@click.option("--data", "data_dir", type=click.Path(), help="Dataset folder (default: <run-dir>/data/raw).")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: <run-dir>/data/split).")
@click.option("--kcore", type=int, default=None, help="k-core filter (default: data.kcore).")
@config_options
def split_cmd(cfg: GR2Config, data_dir: str | None, out: str | None, kcore: int | None) -> None:
    """The evaluation protocol's split (rerank.protocol: temporal or leave_one_out): train = what may be learned."""
    from gr2.data.split import split_dataset
    from gr2.rerank.protocol import ProtocolError

    paths = RunPaths.of(cfg.run_dir)
    try:
        art = split_dataset(data_dir or paths.raw, out or paths.split, cfg.rerank,
                            cfg.data.kcore if kcore is None else kcore)
    except (DataError, ProtocolError) as err:
        fail(str(err))
    click.echo(art.summary.read_text())
    warn(art.warnings)
