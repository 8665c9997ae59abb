"""Pipeline benchmark: wall time per component and in total for ``gr2 pipeline run --local`` on ML-100K.

    python benchmarks/pipeline_bench.py [--profile smoke] [--run-dir DIR] [--out benchmarks/results/...json]

Two passes on a fresh run directory: the first runs every component (kfp.local SubprocessRunner, each
component a subprocess, so the times include the process start and imports), the second is the
unchanged rerun that kfp.local's cache serves. Data: ../shared/data/ml-100k when present, else what
``data.dataset`` fetches. Writes JSON (steps, totals, machine, commit) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gr2.config import load_config  # noqa: E402
from gr2.provenance import git_commit, package_versions  # noqa: E402
from pipelines.local import run_local  # noqa: E402

SHARED_ML100K = ROOT.parent / "shared" / "data" / "ml-100k"


def markdown(record: dict) -> str:
    """The per-component table of one benchmark record."""
    first, again = record["passes"]
    cached = {s["task"]: s for s in again["steps"]}
    lines = ["| component | seconds (first run) | rerun |", "|---|---|---|"]
    for s in first["steps"]:
        rerun = cached.get(s["task"])
        rerun_text = (
            "cached" if rerun and rerun["cached"] else (f"{rerun['seconds']:.1f} s" if rerun else "-")
        )
        lines.append(f"| {s['task']} | {s['seconds']:.1f} | {rerun_text} |")
    lines.append(
        f"| **total (pipeline wall time)** | **{first['seconds']:.1f}** | **{again['seconds']:.1f} s** |"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--run-dir", default=None, help="Fresh run directory (default: a temporary one).")
    parser.add_argument(
        "--out", default=None, help="JSON output (default: benchmarks/results/pipeline_bench_<profile>.json)"
    )
    args = parser.parse_args()
    cfg = load_config(args.profile)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix=f"gr2-pipeline-bench-{args.profile}-"))
    source = str(SHARED_ML100K) if SHARED_ML100K.exists() else ""
    passes = []
    for _ in range(2):
        result = run_local(cfg, run_dir, source_path=source, echo=lambda _: None)
        if not result.succeeded:
            raise SystemExit(f"pipeline failed: {result.error}")
        passes.append(
            {
                "seconds": result.seconds,
                "steps": [{"task": s.task, "seconds": s.seconds, "cached": s.cached} for s in result.steps],
            }
        )
    gate = json.loads((run_dir / "promotion-gate" / "gate" / "gate.json").read_text())
    record = {
        "profile": args.profile,
        "data": source or cfg.data.dataset,
        "run_dir": str(run_dir),
        "passes": passes,
        "gate": gate,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_1m_after": os.getloadavg()[0],
        },
        "git_commit": git_commit(),
        "versions": package_versions(),
    }
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"pipeline_bench_{args.profile}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(markdown(record))
    print(f"gate: lift {gate['lift']:+.4f} ({gate['decision']}); wrote {out}")


if __name__ == "__main__":
    main()
