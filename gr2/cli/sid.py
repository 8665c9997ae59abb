"""``gr2 sid train|assign|ablate|show``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from gr2.cli.common import GR2Config, config_options, fail, requires_valid_data
from gr2.data.schema import DataError
from gr2.paths import RunPaths
from gr2.sid.errors import SIDError


@click.group(name="sid")
def group() -> None:
    """Semantic IDs: an RQ-VAE over item text gives each item a unique short code tuple."""


def refresh_feature_store(cfg: GR2Config) -> str:
    """Push the new SIDs into the run's Feast store (``item_sid``) when the run has one."""
    repo = RunPaths.of(cfg.run_dir).feature_repo
    if not (repo / "feature_store.yaml").exists():
        return f"no feature repo at {repo}; run `gr2 features apply` to publish the SIDs"
    try:
        from gr2.features.store import apply_and_materialize
    except ImportError as err:  # the features stage is older than this one
        return f"feature store not refreshed ({err})"
    rows = apply_and_materialize(cfg)
    return f"feature store refreshed: item_sid rows {rows.get('item_sid', '?')}"


@group.command("train")
@click.option("--no-feature-store", is_flag=True, help="Do not refresh the run's Feast store afterwards.")
@config_options
@requires_valid_data
def train_cmd(cfg: GR2Config, no_feature_store: bool) -> None:
    """Embed the catalog, train the RQ-VAE and write the SID map, codebooks and report to <run-dir>/sid."""
    from gr2.sid.train import train_sid

    try:
        art = train_sid(cfg)
    except (SIDError, DataError, FileNotFoundError) as err:
        fail(str(err))
    m = art.metrics
    click.echo(f"{m['n_items']} items, {m['levels']} levels x {m['codebook_size']} codes: uniqueness "
               f"{m['uniqueness_before_resolution']:.4f} before resolution, {m['uniqueness_final']:.4f} final "
               f"({m['collisions_resolved']} collisions resolved) in {m['wall_time_s']:.1f} s")
    click.echo(f"utilization per level {[round(u, 3) for u in m['utilization']]}, "
               f"perplexity {[round(p, 1) for p in m['perplexity']]}, recon MSE {m['reconstruction_mse']:.2e}")
    click.echo(f"wrote {art.directory} ({', '.join(p.name for p in art.files.values())})")
    if not no_feature_store:
        try:
            click.echo(refresh_feature_store(cfg))
        except Exception as err:  # the SIDs are written; a store problem must not hide that
            fail(f"SIDs written to {art.directory}, but the feature store refresh failed: {err}")


@group.command("assign")
@click.option("--items", "items_path", type=click.Path(dir_okay=False, exists=True),
              help="Items (canonical schema, .parquet/.csv) to map; default: the run's catalog.")
@click.option("--embeddings", type=click.Path(dir_okay=False, exists=True),
              help="Precomputed embeddings (.parquet with item_id + embedding, or .npy) instead of text.")
@click.option("--out", type=click.Path(dir_okay=False), help="Where to write the new items' SIDs "
              "(default: <run-dir>/sid/assigned.parquet).")
@click.option("--merge", is_flag=True, help="Also add the new items to <run-dir>/sid/sid_map.parquet.")
@click.option("--no-feature-store", is_flag=True, help="With --merge: do not refresh the Feast store.")
@config_options
def assign_cmd(cfg: GR2Config, items_path: str | None, embeddings: str | None, out: str | None, merge: bool,
               no_feature_store: bool) -> None:
    """Give SIDs to items missing from the map with the trained codebooks (no retraining)."""
    import pandas as pd

    from gr2.data.schema import coerce_items
    from gr2.sid.assign import MAP_FILE, assign_new_items
    from gr2.sid.sidmap import SIDMap
    from gr2.sid.train import load_catalog

    paths = RunPaths.of(cfg.run_dir)
    try:
        if items_path:
            path = Path(items_path)
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
            items = coerce_items(frame, source=path)
        else:
            items = load_catalog(paths) if embeddings is None else None  # .npy rows need --items
        cache = Path(cfg.sid.cache_dir) if cfg.sid.cache_dir else paths.sid / "cache"
        new_map, result = assign_new_items(paths.sid, items, embeddings, cache_dir=cache,
                                           allow_empty_text=cfg.sid.allow_empty_text)
    except (SIDError, DataError, FileNotFoundError) as err:
        fail(str(err))
    if not len(new_map):
        click.echo("every item already has a SID")
        return
    target = Path(out) if out else paths.sid / "assigned.parquet"
    new_map.save(target)
    click.echo(f"{len(new_map)} new item(s) -> {target} ({int(result.moved.sum())} moved to resolve collisions, "
               f"uniqueness before resolution {result.uniqueness_before:.4f})")
    for item_id in new_map.item_ids[:5]:
        click.echo(f"  {item_id}: {new_map.token_string(item_id)}")
    if merge:
        merged = SIDMap.load(paths.sid / MAP_FILE).merged(new_map)
        merged.save(paths.sid / MAP_FILE)
        click.echo(f"merged into {paths.sid / MAP_FILE} ({len(merged)} items)")
        if not no_feature_store:
            click.echo(refresh_feature_store(cfg))


@group.command("ablate")
@click.option("--trick", "tricks", multiple=True, help="Trick to flip (repeatable; default sid.ablation_tricks).")
@click.option("--seeds", type=int, default=None, help="Seeds per variant (default sid.ablation_seeds).")
@config_options
def ablate_cmd(cfg: GR2Config, tricks: tuple[str, ...], seeds: int | None) -> None:
    """Flip each trick on/off and tabulate uniqueness and a next-item proxy (Markdown + JSON in the run dir)."""
    from gr2.sid.ablate import ablation_paths, render_table, run_ablation
    from gr2.sid.config import TRICKS

    unknown = [t for t in tricks if t not in TRICKS]
    if unknown:
        fail(f"unknown trick(s) {unknown}; choose from {list(TRICKS)}", code=2)
    try:
        record = run_ablation(cfg, list(tricks) or None, seeds)
    except (SIDError, DataError, FileNotFoundError) as err:
        fail(str(err))
    click.echo(render_table(record))
    md, js = ablation_paths(cfg)
    click.echo(f"wrote {md} and {js}")


@group.command("show")
@click.option("--item", "items", multiple=True, type=int, help="Item id (repeatable).")
@click.option("--sid", "sids", multiple=True, help="Token string to look up (repeatable).")
@config_options
def show_cmd(cfg: GR2Config, items: tuple[int, ...], sids: tuple[str, ...]) -> None:
    """Print the SID of items, or the item of SIDs, from the run's map."""
    from gr2.sid.sidmap import SIDMap

    path = RunPaths.of(cfg.run_dir).sid / "sid_map.parquet"
    if not path.exists():
        fail(f"{path} not found: run `gr2 sid train` first")
    sid_map = SIDMap.load(path)
    out = {"items": {i: (sid_map.token_string(i) if i in sid_map else None) for i in items},
           "sids": {s: sid_map.item_for(s) for s in sids}}
    click.echo(json.dumps(out, indent=2))
    unknown = [str(i) for i, s in out["items"].items() if s is None] + [s for s, i in out["sids"].items() if i is None]
    if unknown:
        fail(f"not in the SID map {path}: {', '.join(unknown)}")
