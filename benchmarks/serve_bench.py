"""Load test of the KServe re-ranker: N concurrent clients for a bounded time, per mode, side by side.

    python benchmarks/serve_bench.py --build /tmp/bench-run            # builds the smoke bundle + Feast store first
    python benchmarks/serve_bench.py --model B --feature-repo F [--duration 60 --clients 8]

One server (``python -m serving``) on loopback; for each mode (``score``, ``generate``, ``reason``, chosen per
request with the v2 ``mode`` parameter or the ``x-gr2-mode`` header, and ``score`` once more with the model in
a real tritonserver behind the server, ``serve.backend: triton``) half the clients call it with
``tritonclient.grpc`` and half with plain HTTP v1 JSON, each sending one request at a time for ``duration``
seconds. A request counts as an error unless it returns 200 with every row a permutation of its
candidates. Requests: K=10 candidates drawn from the catalog, users drawn from the store (history from Feast).
Writes benchmarks/results/serve.json (with config, versions, commit) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from serving_helpers import kserve_server  # noqa: E402

from gr2.contract import MODEL_NAME  # noqa: E402
from gr2.provenance import git_commit, package_versions  # noqa: E402

MODES = ("score", "generate", "reason")


def grpc_client(grpc_url: str, mode: str):
    """A callable sending one gRPC request (candidates [1, K], user_id [1]); returns the ranking rows."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)

    def call(cands: np.ndarray, user: int) -> list[list[int]]:
        inputs = [grpcclient.InferInput("candidates", list(cands.shape), "INT64"),
                  grpcclient.InferInput("user_id", [len(cands)], "INT64")]
        inputs[0].set_data_from_numpy(cands)
        inputs[1].set_data_from_numpy(np.full(len(cands), user, dtype=np.int64))
        return client.infer(MODEL_NAME, inputs, parameters={"mode": mode}).as_numpy("ranking").tolist()

    return call


def http_client(url: str, mode: str):
    """A callable sending one plain HTTP v1 request; returns the ranking rows (raises on a non-200)."""
    import requests

    session = requests.Session()

    def call(cands: np.ndarray, user: int) -> list[list[int]]:
        body = {"instances": [{"user_id": user, "candidates": row.tolist()} for row in cands]}
        res = session.post(f"{url}/v1/models/{MODEL_NAME}:predict", json=body, headers={"x-gr2-mode": mode},
                           timeout=120)
        res.raise_for_status()
        return [p["ranking"] for p in res.json()["predictions"]]

    return call


def run_mode(url: str, grpc_url: str, mode: str, clients: int, duration: float, items: np.ndarray,
             users: np.ndarray, k: int, seed: int) -> dict:
    """``clients`` threads (half gRPC, half HTTP) for ``duration`` s; latency percentiles and errors."""
    records: list[tuple[str, float, bool]] = []
    lock = threading.Lock()
    stop = time.perf_counter() + duration

    def worker(index: int) -> None:
        protocol = "grpc" if index % 2 == 0 else "http"
        call = grpc_client(grpc_url, mode) if protocol == "grpc" else http_client(url, mode)
        rng = np.random.default_rng(seed + index)
        while time.perf_counter() < stop:
            cands = rng.choice(items, size=(1, k), replace=False).astype(np.int64)
            start = time.perf_counter()
            try:
                ranking = call(cands, int(rng.choice(users)))
                ok = sorted(ranking[0]) == sorted(cands[0].tolist())
            except Exception:
                ok = False
            with lock:
                records.append((protocol, time.perf_counter() - start, ok))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return summarize(records, wall)


def summarize(records: list[tuple[str, float, bool]], wall: float) -> dict:
    lat = np.asarray([r[1] for r in records]) * 1000
    out = {"requests": len(records), "errors": int(sum(not r[2] for r in records)), "wall_s": wall,
           "throughput_rps": len(records) / wall if wall else 0.0,
           "mean_ms": float(lat.mean()) if len(lat) else None}
    for q in (50, 95, 99):
        out[f"p{q}_ms"] = float(np.percentile(lat, q)) if len(lat) else None
    out["by_protocol"] = {p: int(sum(r[0] == p for r in records)) for p in ("grpc", "http")}
    return out


def render(results: dict) -> str:
    lines = ["| mode | requests | errors | throughput (req/s) | mean (ms) | p50 (ms) | p95 (ms) | p99 (ms) | gRPC / HTTP |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode, r in results.items():
        lines.append(f"| {mode} | {r['requests']} | {r['errors']} | {r['throughput_rps']:.1f} | {r['mean_ms']:.1f} | "
                     f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
                     f"{r['by_protocol']['grpc']} / {r['by_protocol']['http']} |")
    return "\n".join(lines)


def run_triton_backend(args: argparse.Namespace, items: np.ndarray, users: np.ndarray) -> dict:
    """The same clients against the KServe server with ``serve.backend: triton`` (score mode): the bundle
    exported with ``gr2 export triton`` and served by a real tritonserver (serving/triton/) on loopback."""
    import tempfile

    from serving.triton.export import TritonExportConfig, export_triton
    from serving.triton.server import TritonServer

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "triton_repo"
        export_triton(args.model, repo, TritonExportConfig(copy_bundle=False, torch_threads=1))
        with TritonServer(repo) as triton, kserve_server(
                args.model, "--feature_repo", str(args.feature_repo), "--set", "serve.backend=triton",
                "--set", f"serve.triton_url={triton.http_url}", "--set", "serve.timeout_s=60") as (url, grpc, _):
            return run_mode(url, grpc, "score", args.clients, args.duration, items, users, args.k, seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="Serving bundle directory.")
    parser.add_argument("--feature-repo", type=Path, help="Feast repo with a materialized online store.")
    parser.add_argument("--build", type=Path, help="Build a smoke bundle + Feast store in this directory first.")
    parser.add_argument("--duration", type=float, default=60.0, help="Seconds per mode.")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent clients (half gRPC, half HTTP).")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--think-tokens", type=int, default=64, help="serve.think_tokens (reason mode).")
    parser.add_argument("--k", type=int, default=10, help="Candidates per request.")
    parser.add_argument("--no-triton", dest="triton", action="store_false",
                        help="Skip the Triton backend row (serve.backend: triton, score mode).")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    args = parser.parse_args()
    if args.build:
        from serving_helpers import build_serving_run

        from conftest import _prepare, shared_ml100k

        run = build_serving_run(_prepare(args.build / "prepared", real=shared_ml100k() is not None), args.build / "run")
        args.model, args.feature_repo = run.bundle, run.feature_repo
    if not args.model or not args.feature_repo:
        parser.error("give --model and --feature-repo, or --build DIR")
    items = pd.read_parquet(args.model / "items.parquet")["item_id"].to_numpy()
    users = pd.read_parquet(args.feature_repo / "data" / "user_history.parquet")["user_id"].to_numpy()
    results = {}
    with kserve_server(args.model, "--feature_repo", str(args.feature_repo),
                       "--set", f"serve.think_tokens={args.think_tokens}", "--set", "serve.timeout_s=60") as (url, grpc, _):
        for mode in args.modes:
            results[mode] = run_mode(url, grpc, mode, args.clients, args.duration, items, users, args.k, seed=0)
            print(f"{mode}: {results[mode]}", flush=True)
    if args.triton:
        results["score (triton backend)"] = run_triton_backend(args, items, users)
        print(f"score (triton backend): {results['score (triton backend)']}", flush=True)
    ratio = latency_ratio = None
    if "score" in results and "reason" in results:
        ratio = results["score"]["throughput_rps"] / max(results["reason"]["throughput_rps"], 1e-9)
        latency_ratio = results["reason"]["mean_ms"] / results["score"]["mean_ms"]
    record = {"results": results, "score_vs_reason_throughput": ratio, "reason_vs_score_mean_latency": latency_ratio,
              "config": {k: str(v) for k, v in vars(args).items()}, "versions": package_versions(),
              "git_commit": git_commit(), "created_unix": int(time.time())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(render(results))
    if ratio is not None:
        print(f"score: {ratio:.1f}x the throughput and 1/{latency_ratio:.1f} the mean latency of reason "
              "(same server, same clients, one run)")


if __name__ == "__main__":
    main()
