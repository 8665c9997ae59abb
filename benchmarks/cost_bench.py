"""Serving cost of every re-ranking path a run has trained, side by side on the same N test requests.

    python benchmarks/cost_bench.py --profile smoke --run-dir runs/smoke --n 500 --out benchmarks/results/cost.json
    python benchmarks/cost_bench.py --run-dir runs/smoke --limit 4            # a quick look on a smoke run

Paths (each only when its model exists): ``reasoning`` (the rl, else reasoning model decoding ``<think>`` then
the ranking), ``answer`` (the internalized model decoding the ranking only), ``opd`` / ``opd_sft`` (the
students, answer-only), ``score`` (one forward pass: the internalized model's likelihood of each candidate
first). Each runs with the full prompt and with the compressor (``--compressor`` at ``--budget``). Per path:
prompt and generated tokens per request, ms per request at batch 1 and batch 16, requests/s (batch 16),
process peak RSS so far (monotone, so read it in order) and the model's parameter megabytes, R@1/N@3 (batch 16
outputs), and ``x_cheaper`` = the reasoning path's ms per request (batch 16) over this path's. Decoding is
greedy under the ranking constraint (:func:`gr2.train.evaluate.generated_rankings`).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gr2.config import GR2Config, load_config  # noqa: E402
from gr2.paths import RunPaths  # noqa: E402
from gr2.provenance import git_commit, package_versions  # noqa: E402

BATCHES = (1, 16)


def available_paths(cfg: GR2Config) -> list[tuple[str, Path, str]]:
    """(name, model dir, how it answers) of each path whose model the run has."""
    train = RunPaths.of(cfg.run_dir).train
    has = {s: train / s / "model" for s in ("rl", "reasoning", "internalize", "opd", "opd_sft")
           if (train / s / "model" / "config.json").exists()}
    out = []
    reasoner = has.get("rl") or has.get("reasoning")
    if reasoner:
        out.append(("reasoning", reasoner, "reasoning"))
    if "internalize" in has:
        out.append(("answer", has["internalize"], "answer"))
    out += [(s, has[s], "answer") for s in ("opd", "opd_sft") if s in has]
    if "internalize" in has:
        out.append(("score", has["internalize"], "score"))
    return out


def make_compressor(cfg: GR2Config, lm: Any, items: Any, sid_map: Any, method: str, budget: float) -> Any:
    """The prompt compressor of the bench (the learned one needs ``gr2 train compress`` to have run)."""
    from gr2.train.compressor import BudgetCompressor, load_selector

    selector = None
    if method == "learned":
        selector = load_selector(RunPaths.of(cfg.run_dir).train / "compress" / "selector.json")
    return BudgetCompressor(lm.tokenizer, items, sid_map, budget, method, cfg.train.compress, selector)


def run_path(lm: Any, sid_map: Any, samples: Any, items: Any, how: str, max_new_tokens: int,
             compress: Any) -> dict[str, Any]:
    """Cost and quality of one path on ``samples`` (every request at batch 1, then at batch 16)."""
    from gr2.models.scoring import render_prompt
    from gr2.rerank.format import build_messages
    from gr2.rerank.metrics import evaluate_rankings
    from gr2.train.evaluate import generated_rankings, rerank_likelihood_rankings

    style = "reasoning" if how == "reasoning" else "answer"
    prompt_tokens = np.mean([len(render_prompt(lm.tokenizer, build_messages(r, items, sid_map, style,
                                                                            compress=compress)))
                             for r in samples.to_dict("records")])
    timings, rankings, flags = {}, [], []
    for batch in BATCHES:
        started = time.perf_counter()
        if how == "score":
            rankings = []
            for start in range(0, len(samples), batch):
                part = samples.iloc[start: start + batch]
                rankings += rerank_likelihood_rankings(lm, sid_map, part, items, compress=compress)
        else:
            rankings, flags = generated_rankings(lm, sid_map, samples, items, style, max_new_tokens, batch,
                                                 compress=compress)
        timings[batch] = (time.perf_counter() - started) / len(samples)
    valid = [f["valid"] and f["complete"] for f in flags] if flags else None
    m = evaluate_rankings(samples, rankings, valid=valid)
    params = sum(p.numel() for p in lm.model.parameters())
    return {"prompt_tokens": round(float(prompt_tokens), 1),
            "generated_tokens": round(float(np.mean([f["generated_tokens"] for f in flags])), 1) if flags else 0.0,
            **{f"ms_b{b}": round(1000 * t, 2) for b, t in timings.items()},
            "requests_per_s": round(1.0 / timings[BATCHES[-1]], 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "params_mb": round(params * 4 / 2 ** 20, 2), "R@1": m["R@1"], "N@3": m["N@3"],
            "invalid_rate": m["invalid_rate"]}


def bench(cfg: GR2Config, n: int, compressor: str, budget: float) -> list[dict[str, Any]]:
    """Every available path, with and without the compressor, on the same first ``n`` test requests."""
    from gr2.models.factory import load_model
    from gr2.train.inputs import StageInputs, subsample

    inputs = StageInputs.of_run(cfg.run_dir)
    sid_map = inputs.load_sid_map(cfg.train.model.item_tokens)
    items = inputs.load_dataset().items
    samples = subsample(inputs.load_samples("test"), n, cfg.seed)
    rows = []
    for name, model, how in available_paths(cfg):
        lm = load_model(model, sid_map.all_tokens(), seed=cfg.seed)
        lm.model.eval()
        budget_tokens = cfg.train.rl.max_completion_length if how == "reasoning" else cfg.train.opd.max_completion_length
        for label, comp in (("full", None), (compressor, make_compressor(cfg, lm, items, sid_map, compressor, budget))):
            with torch.no_grad():
                result = run_path(lm, sid_map, samples, items, how, budget_tokens, comp)
            rows.append({"path": name, "model": str(model), "prompt": label, "requests": len(samples), **result})
    base = next((r["ms_b16"] for r in rows if r["path"] == "reasoning" and r["prompt"] == "full"), None)
    for r in rows:
        r["x_cheaper"] = round(base / r["ms_b16"], 2) if base and r["ms_b16"] else None
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    cols = ("path", "prompt", "prompt_tokens", "generated_tokens", "ms_b1", "ms_b16", "requests_per_s",
            "peak_rss_mb", "params_mb", "R@1", "N@3", "x_cheaper")
    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) and c in ("R@1", "N@3")
                                       else str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--n", type=int, default=500, help="Test requests, the same for every path.")
    parser.add_argument("--limit", type=int, default=0, help="Cap on the requests (a quick run); 0 = --n.")
    parser.add_argument("--compressor", choices=("rule", "learned"), default="rule")
    parser.add_argument("--budget", type=float, default=0.5, help="Prompt-token budget of the compressor (share).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cost.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = load_config(args.profile, overrides=[f"run_dir={args.run_dir}"])
    n = min(args.n, args.limit) if args.limit else args.n
    rows = bench(cfg, n, args.compressor, args.budget)
    if not rows:
        print(f"{args.run_dir}: no trained model to bench; run `gr2 train internalize` first", file=sys.stderr)
        return 1
    print(table(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "requests": n, "compressor": args.compressor, "budget": args.budget,
                               "device": "cuda" if torch.cuda.is_available() else "cpu", "threads": args.threads,
                               "profile": args.profile, "commit": git_commit(), "versions": package_versions()},
                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
