"""A/B testing: sticky per-user routing, the JSON-lines response log, and the report joining it with later
interactions (a replay of the test period stands in for live traffic).

>>> route(42, {"champion": 0.5, "challenger": 0.5}) == route(42, {"champion": 0.5, "challenger": 0.5})
True
>>> route(42, {"champion": 1.0, "challenger": 0.0})
'champion'
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gr2.rerank.metrics import Bootstrap, ndcg_at_k, recall_at_k

VARIANT_HEADER = "x-gr2-variant"  # a client pins its variant with this header
EVENT_TIME_HEADER = "x-gr2-event-time"  # unix s of the request; a replay sends the logged position's time
REPORT_METRICS = {"R@1": lambda r, t: recall_at_k(r, t, 1), "N@3": lambda r, t: ndcg_at_k(r, t, 3)}


def route(user_id: int, weights: Mapping[str, float], salt: str = "gr2-ab") -> str:
    """The variant of ``user_id``: a hash of (salt, user) in [0, 1) against cumulative weights (sticky)."""
    total = sum(weights.values())
    if not weights or total <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError(f"variant weights must be non-negative with a positive sum, got {dict(weights)}")
    digest = hashlib.sha256(f"{salt}:{int(user_id)}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2 ** 64 * total
    edge = 0.0
    for name, weight in weights.items():
        edge += weight
        if point < edge:
            return name
    return next(reversed(list(weights)))


def choose_variant(headers: Mapping[str, str], user_id: int, weights: Mapping[str, float]) -> str:
    """The ``x-gr2-variant`` header when it names a variant, else the sticky hash route."""
    pinned = {k.lower(): v for k, v in headers.items()}.get(VARIANT_HEADER)
    if pinned is not None and pinned not in weights:
        raise ValueError(f"header {VARIANT_HEADER}={pinned!r} names no variant; choose one of {sorted(weights)}")
    return pinned or route(user_id, weights)


class ResponseLog:
    """Appends one JSON line per answered row (thread-safe): variant, request id, user, candidates, ranking."""

    def __init__(self, path: str | Path, variant: str) -> None:
        self.path, self.variant = Path(path), variant
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, request_id: str, user_ids: Sequence[int], candidates: np.ndarray, ranking: np.ndarray,
              fallback: Sequence[bool], model_version: str, event_time: float | None = None) -> None:
        stamp = time.time() if event_time is None else float(event_time)
        lines = [json.dumps({"ts": stamp, "variant": self.variant, "request_id": request_id, "user_id": int(u),
                             "candidates": [int(c) for c in cands], "ranking": [int(i) for i in rank],
                             "fallback": bool(fb), "model_version": model_version})
                 for u, cands, rank, fb in zip(user_ids, candidates, ranking, fallback, strict=True)]
        with self._lock, self.path.open("a") as out:
            out.write("\n".join(lines) + "\n")


def read_logs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Every logged row of the given files."""
    frames = [pd.read_json(p, lines=True) for p in paths if Path(p).stat().st_size]
    if not frames:
        raise ValueError("the response logs are empty")
    return pd.concat(frames, ignore_index=True)


def join_next_interaction(log: pd.DataFrame, interactions: pd.DataFrame) -> pd.DataFrame:
    """Each logged row with the user's first interaction at or after its time (``target``); rows without a
    later interaction are dropped, ``covered`` says whether the target was among the candidates."""
    inter = interactions.sort_values(["timestamp", "item_id"], kind="stable")
    by_user = {int(u): (g["timestamp"].to_numpy(), g["item_id"].to_numpy()) for u, g in inter.groupby("user_id")}
    targets = []
    for user, ts in zip(log["user_id"], log["ts"], strict=True):
        times, items = by_user.get(int(user), (np.zeros(0), np.zeros(0)))
        pos = int(np.searchsorted(times, ts, side="left"))
        targets.append(int(items[pos]) if pos < len(items) else None)
    out = log.assign(target=targets).dropna(subset=["target"])
    out["target"] = out["target"].astype(np.int64)
    out["covered"] = [t in c for t, c in zip(out["target"], out["candidates"], strict=True)]
    return out


def ab_report(log: pd.DataFrame, interactions: pd.DataFrame, champion: str = "champion", n_boot: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """Per-variant R@1/N@3 (covered rows, 95% bootstrap CI over users) and each variant's lift over ``champion``."""
    joined = join_next_interaction(log, interactions)
    if champion not in set(joined["variant"]):
        raise ValueError(f"no logged row of the champion variant {champion!r} has a later interaction")
    variants: dict[str, Any] = {}
    resampled: dict[str, dict[str, np.ndarray]] = {}
    for v, (name, rows) in enumerate(sorted(joined.groupby("variant"), key=lambda kv: kv[0] != champion)):
        covered = rows[rows["covered"]]
        boot = Bootstrap(len(covered), covered["user_id"].to_numpy(), n_boot, seed + v)
        stats, resampled[name] = {}, {}
        for metric, fn in REPORT_METRICS.items():
            values = np.asarray([fn(r, t) for r, t in zip(covered["ranking"], covered["target"], strict=True)])
            resampled[name][metric] = boot.means(values)
            lo, hi = boot.interval(resampled[name][metric])
            stats[metric] = {"mean": float(values.mean()) if len(values) else float("nan"), "lo": lo, "hi": hi}
        variants[name] = {"rows": len(rows), "covered": len(covered), "users": int(covered["user_id"].nunique()),
                          "fallback_rate": float(rows["fallback"].mean()), **stats}
    lifts = {}
    for name in variants:
        if name == champion:
            continue
        lifts[name] = {}
        for metric in REPORT_METRICS:
            base, other = variants[champion][metric]["mean"], variants[name][metric]["mean"]
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = resampled[name][metric] / resampled[champion][metric] - 1
            finite = rel[np.isfinite(rel)]
            lo, hi = (np.percentile(finite, [2.5, 97.5]).tolist() if finite.size else [float("nan")] * 2)
            diff = resampled[name][metric] - resampled[champion][metric]  # defined even when base is 0
            abs_lo, abs_hi = np.percentile(diff, [2.5, 97.5]).tolist()
            lifts[name][metric] = {"rel": other / base - 1 if base > 0 else float("nan"), "lo": lo, "hi": hi,
                                   "abs": other - base, "abs_lo": abs_lo, "abs_hi": abs_hi}
    return {"champion": champion, "variants": variants, "lifts": lifts, "bootstrap": n_boot}


def render_report(report: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    lines = ["| variant | rows | covered | users | fallback | R@1 [95% CI] | N@3 [95% CI] | lift R@1 (rel.; abs.) "
             "| lift N@3 (rel.; abs.) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, v in report["variants"].items():
        cells = [f"{v[m]['mean']:.3f} [{v[m]['lo']:.3f}, {v[m]['hi']:.3f}]" for m in REPORT_METRICS]
        lift = report["lifts"].get(name)
        lift_cells = [f"{lift[m]['rel']:+.1%} [{lift[m]['lo']:+.1%}, {lift[m]['hi']:+.1%}]; "
                      f"{lift[m]['abs']:+.3f} [{lift[m]['abs_lo']:+.3f}, {lift[m]['abs_hi']:+.3f}]" if lift
                      else "(champion)" for m in REPORT_METRICS]
        lines.append(f"| {name} | {v['rows']} | {v['covered']} | {v['users']} | {v['fallback_rate']:.1%} | "
                     + " | ".join(cells + lift_cells) + " |")
    return "\n".join(lines) + "\n"


def replay(samples: pd.DataFrame, endpoints: Mapping[str, str], weights: Mapping[str, float],
           model_name: str, timeout_s: float = 60.0) -> dict[str, int]:
    """Send each sample (user, history, candidates, timestamp) as a v1 request to its user's variant; the
    server logs the response with the sample's time, so later interactions can be joined to it."""
    import requests

    sent = dict.fromkeys(endpoints, 0)
    with requests.Session() as session:
        for row in samples.to_dict("records"):
            variant = route(int(row["user_id"]), weights)
            body = {"instances": [{"user_id": int(row["user_id"]), "candidates": [int(c) for c in row["candidates"]],
                                   "history": [int(h) for h in row["history"]]}]}
            headers = {EVENT_TIME_HEADER: str(int(row["timestamp"])), "x-request-id": f"replay-{row['sample_id']}"}
            resp = session.post(f"{endpoints[variant]}/v1/models/{model_name}:predict", json=body, headers=headers,
                                timeout=timeout_s)
            resp.raise_for_status()
            sent[variant] += 1
    return sent
