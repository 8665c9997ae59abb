"""SID tokenizer benchmark: training wall time on ML-100K and assignment throughput for 1M items.

    python benchmarks/sid_bench.py [--profile default] [--n-items 1000000] [--out benchmarks/results/sid_bench.json]

1. Training: ``train_sid`` on ML-100K (from ../shared/data/ml-100k, else the generated catalog), timed
   with the text embeddings computed (cold) and then from the cache (warm: RQ-VAE + assignment only).
2. Assignment: ``n_items`` random unit vectors (the encoder's width) get SIDs from the trained
   tokenizer, collisions with each other and with the catalog's map resolved: items/s, with the
   quantization and resolution times apart. The embeddings are generated before the clock starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gr2.config import load_config  # noqa: E402
from gr2.data.movielens import detect_layout  # noqa: E402
from gr2.paths import RunPaths  # noqa: E402
from gr2.provenance import git_commit, package_versions  # noqa: E402
from gr2.sid.assign import Tokenizer  # noqa: E402
from gr2.sid.collisions import uniqueness  # noqa: E402
from gr2.sid.sidmap import SIDMap  # noqa: E402
from gr2.sid.train import train_sid  # noqa: E402

SHARED_ML100K = ROOT.parent / "shared" / "data" / "ml-100k"


def prepare_run(run_dir: Path, profile: str) -> str:
    """Raw data + split in ``run_dir``; returns the dataset name."""
    from gr2.data.split import split_dataset

    cfg = load_config(profile, overrides=[f"run_dir={run_dir}"])
    paths = RunPaths.of(run_dir)
    if not (paths.raw / "items.parquet").exists():
        if detect_layout(SHARED_ML100K):
            from gr2.data.fetch import fetch

            fetch("movielens-100k", paths.raw, from_path=SHARED_ML100K)
        else:
            from gr2.data.synthetic import make_synthetic

            make_synthetic(n_users=943, n_items=1682, seed=0).save(paths.raw)
    if not (paths.split / "train.parquet").exists():
        split_dataset(paths.raw, paths.split, cfg.data.kcore)
    return "ml-100k" if detect_layout(SHARED_ML100K) else "synthetic"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="default")
    parser.add_argument("--run-dir", default=None, help="Run to train in (default: a temporary folder).")
    parser.add_argument("--n-items", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random embeddings.")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sid_bench.json"))
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory() if args.run_dir is None else None
    run_dir = Path(args.run_dir or tmp.name)
    dataset = prepare_run(run_dir, args.profile)
    cfg = load_config(args.profile, overrides=[f"run_dir={run_dir}"])

    # 1. training on the catalog: cold (text encoder runs) then warm (embeddings cached)
    t0 = time.perf_counter()
    cold = train_sid(cfg)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = train_sid(cfg)
    warm_s = time.perf_counter() - t0
    assert np.array_equal(cold.sid_map.codes_array, warm.sid_map.codes_array), "same seed, different map"

    # 2. assignment of n random items with the trained codebooks (no retraining)
    tokenizer = Tokenizer.load(RunPaths.of(run_dir).sid)
    existing = SIDMap.load(RunPaths.of(run_dir).sid / "sid_map.parquet")
    rng = np.random.default_rng(args.seed)
    vectors = rng.standard_normal((args.n_items, tokenizer.model.input_dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1, args.n_items + 1, dtype=np.int64) + 10_000_000
    t0 = time.perf_counter()
    result = tokenizer.assign(ids, vectors, existing)
    assign_s = time.perf_counter() - t0
    all_codes = np.concatenate([existing.codes_array, result.codes])
    assert uniqueness(all_codes) == 1.0, "assignment left duplicate SIDs"

    m = cold.metrics
    record = {
        "dataset": dataset, "profile": args.profile, "n_catalog_items": m["n_items"],
        "levels": m["levels"], "codebook_size": m["codebook_size"],
        "train": {
            "cold_wall_s": cold_s, "warm_wall_s": warm_s, "embed_s": m["embed_wall_time_s"],
            "rqvae_train_s": warm.metrics["train_wall_time_s"],
            "uniqueness_before_resolution": m["uniqueness_before_resolution"],
            "uniqueness_final": m["uniqueness_final"], "epochs": cfg.sid.epochs,
        },
        "assign": {
            "n_items": args.n_items, "wall_s": assign_s, "items_per_s": args.n_items / assign_s,
            "quantize_s": result.timings["quantize_s"], "resolve_s": result.timings["resolve_s"],
            "uniqueness_before_resolution": result.uniqueness_before, "moved": int(result.moved.sum()),
            "unique_with_catalog": True,
        },
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "versions": package_versions(), "git_commit": git_commit(), "created_unix": int(time.time()),
    }
    rows = [
        ("train on catalog, cold (embed + RQ-VAE + assign)", f"{cold_s:.1f} s", f"{m['n_items']} items"),
        ("  of which text embedding", f"{m['embed_wall_time_s']:.1f} s", cfg.sid.encoder),
        ("train on catalog, warm (cached embeddings)", f"{warm_s:.1f} s", f"{cfg.sid.epochs} epochs"),
        ("uniqueness before / after resolution", f"{m['uniqueness_before_resolution']:.4f} / "
         f"{m['uniqueness_final']:.4f}", f"{m['levels']} x {m['codebook_size']} codes"),
        (f"assign {args.n_items:,} random items", f"{assign_s:.1f} s", f"{args.n_items / assign_s:,.0f} items/s"),
        ("  quantize / resolve", f"{result.timings['quantize_s']:.1f} s / {result.timings['resolve_s']:.1f} s",
         f"{int(result.moved.sum()):,} moved, {result.uniqueness_before:.3f} unique before"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"SID benchmark ({dataset}, profile {args.profile}, {os.cpu_count()} CPUs)")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>18}  {note}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
