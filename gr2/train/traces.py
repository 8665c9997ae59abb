"""``gr2 train traces``: rejection sampling of reasoning traces, with the acceptance statistics in view.

Per sample, up to M traces are drawn from the teacher; the first whose top-1 is the target is accepted.
Samples that fail all M can get one targeted trace with the answer revealed (configurable). The
statistics (acceptance rate, mean tries, share from the fallback, acceptance by incoming target position)
show the selection bias that rejection sampling introduces: accepted samples are the ones the teacher
already finds easy, and fallback traces are rationalisations written with the answer known.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from gr2.config import GR2Config
from gr2.paths import RunPaths
from gr2.provenance import write_metrics
from gr2.train.inputs import StageInputs
from gr2.train.teachers import OpenAITeacher, Teacher, TeacherError

TRACE_COLUMNS = ("sample_id", "target", "target_position", "accepted", "source", "tries", "reasoning",
                 "ranking", "text")


@dataclass(frozen=True)
class TracesArtifacts:
    """Files written by :func:`run_traces`."""

    traces: Path
    metrics: Path
    summary: Path


def make_teacher(cfg: GR2Config, items: pd.DataFrame, sid_map: Any, samples: pd.DataFrame | None = None) -> Teacher:
    """The configured teacher (``train.traces.teacher``); the feature teacher reads ``samples``' features
    as of each sample's timestamp."""
    if cfg.train.traces.teacher == "openai":
        return OpenAITeacher(cfg.train.traces.openai, items, sid_map)
    from gr2.train.feature_teacher import feature_teacher_from_run

    return feature_teacher_from_run(cfg, sid_map, samples)


def trace_sample(teacher: Teacher, sample: Mapping[str, Any], max_tries: int, temperature: float,
                 targeted_fallback: bool) -> tuple[dict[str, Any], Counter[str]]:
    """Draw up to ``max_tries`` traces; accept the first whose top-1 is the target (else maybe fall back)."""
    events: Counter[str] = Counter()
    target = int(sample["target"])
    row = {"sample_id": str(sample["sample_id"]), "target": target,
           "target_position": int(sample["target_position"]), "accepted": False, "source": "rejected",
           "tries": 0, "reasoning": "", "ranking": [], "text": ""}
    for attempt in range(max_tries):
        row["tries"] = attempt + 1
        try:
            trace = teacher.propose(sample, temperature, reveal_target=False, attempt=attempt)
        except TeacherError:
            events["teacher_errors"] += 1
            continue
        if not trace.valid:
            events["invalid_traces"] += 1
            continue
        if trace.ranking and trace.ranking[0] == target:
            row.update(accepted=True, source="sampled", reasoning=trace.reasoning, ranking=trace.ranking,
                       text=trace.text)
            return row, events
    if targeted_fallback:
        try:
            trace = teacher.propose(sample, temperature, reveal_target=True, attempt=max_tries)
        except TeacherError:
            events["teacher_errors"] += 1
            return row, events
        if trace.valid and trace.ranking and trace.ranking[0] == target:
            row.update(accepted=True, source="fallback", reasoning=trace.reasoning, ranking=trace.ranking,
                       text=trace.text)
        else:
            events["fallback_failed"] += 1
    return row, events


def acceptance_stats(rows: pd.DataFrame, events: Counter[str]) -> dict[str, Any]:
    """Acceptance rate, mean tries, fallback share and the selection bias by incoming target position.

    >>> rows = pd.DataFrame({"accepted": [True, True, False], "source": ["sampled", "fallback", "rejected"],
    ...                      "tries": [2, 4, 4], "target_position": [0, 5, 9]})
    >>> s = acceptance_stats(rows, Counter())
    >>> s["acceptance_rate"], s["fallback_share"], s["mean_tries_accepted"]
    (0.3333333333333333, 0.5, 2.0)
    """
    n = len(rows)
    sampled = rows["source"] == "sampled"
    accepted = rows["accepted"]
    by_pos = rows.groupby("target_position").apply(lambda g: float((g["source"] == "sampled").mean()),
                                                   include_groups=False)
    return {
        "samples": n,
        "accepted": int(accepted.sum()),
        "acceptance_rate": float(sampled.mean()) if n else 0.0,
        "accepted_with_fallback_rate": float(accepted.mean()) if n else 0.0,
        "mean_tries_accepted": float(rows.loc[sampled, "tries"].mean()) if sampled.any() else None,
        "fallback_share": float((rows["source"] == "fallback").sum() / accepted.sum()) if accepted.any() else 0.0,
        "rejected": int((~accepted).sum()),
        "mean_target_position": {
            "all": float(rows["target_position"].mean()) if n else None,
            "sampled": float(rows.loc[sampled, "target_position"].mean()) if sampled.any() else None,
            "fallback": float(rows.loc[rows["source"] == "fallback", "target_position"].mean())
            if (rows["source"] == "fallback").any() else None,
        },
        "acceptance_by_target_position": {int(k): v for k, v in by_pos.items()},
        **{k: int(v) for k, v in events.items()},
    }


def _fingerprint(cfg: GR2Config, split: str) -> str:
    blob = json.dumps({"traces": cfg.train.traces.model_dump(), "seed": cfg.seed, "split": split}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_partial(path: Path, fingerprint: str) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Rows traced by an interrupted run with the same settings (a JSON-lines checkpoint)."""
    rows: list[dict[str, Any]] = []
    events: Counter[str] = Counter()
    if not path.exists():
        return rows, events
    lines = path.read_text().splitlines()
    if not lines or json.loads(lines[0]).get("fingerprint") != fingerprint:
        return rows, events
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the interruption
            break
        rows.append(record["row"])
        events.update(record["events"])
    return rows, events


def run_traces(cfg: GR2Config, inputs: StageInputs | None = None, out_dir: str | Path | None = None
               ) -> TracesArtifacts:
    """Trace the configured samples; write ``{traces.parquet,metrics.json,summary.md}`` to ``out_dir``.

    ``inputs`` and ``out_dir`` default to the run directory (``train/traces``). The feature-grounded teacher
    reads its Feast features from the run directory (``cfg.run_dir``).
    """
    from gr2.train.inputs import subsample

    tc = cfg.train.traces
    inputs = inputs or StageInputs.of_run(cfg.run_dir)
    out = Path(out_dir) if out_dir is not None else RunPaths.of(cfg.run_dir).train / "traces"
    out.mkdir(parents=True, exist_ok=True)
    samples = subsample(inputs.load_samples(tc.split), tc.max_samples, cfg.seed)
    sid_map = inputs.load_sid_map(cfg.train.model.item_tokens)
    teacher = make_teacher(cfg, inputs.load_dataset().items, sid_map, samples)

    partial = out / "traces.partial.jsonl"
    fingerprint = _fingerprint(cfg, tc.split)
    rows, events = _read_partial(partial, fingerprint)
    done = {r["sample_id"] for r in rows}
    if not rows:
        partial.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
    with partial.open("a") as fh:
        for sample in tqdm(samples.to_dict("records"), desc="rejection sampling", initial=len(done)):
            if str(sample["sample_id"]) in done:
                continue
            row, ev = trace_sample(teacher, sample, tc.max_tries, tc.temperature, tc.targeted_fallback)
            rows.append(row)
            events.update(ev)
            fh.write(json.dumps({"row": row, "events": dict(ev)}) + "\n")
            fh.flush()
    frame = pd.DataFrame(rows, columns=list(TRACE_COLUMNS))
    frame["ranking"] = frame["ranking"].map(lambda r: [int(i) for i in r])
    traces_path = out / "traces.parquet"
    frame.to_parquet(traces_path, index=False)
    partial.unlink(missing_ok=True)

    stats = acceptance_stats(frame, events)
    stats["teacher"] = teacher.name
    stats["feature_source"] = getattr(getattr(teacher, "features", None), "source", None)
    stats["teacher_client"] = dict(getattr(teacher, "stats", {}))
    stats["reasoning_chars_mean"] = float(np.mean([len(t) for t in frame.loc[frame["accepted"], "reasoning"]])) \
        if frame["accepted"].any() else None
    metrics_path = out / "metrics.json"
    write_metrics(metrics_path, stats, cfg, [inputs.samples / f"{tc.split}.parquet", inputs.sid_map])
    summary = out / "summary.md"
    summary.write_text(_summary(stats, tc.max_tries))
    return TracesArtifacts(traces=traces_path, metrics=metrics_path, summary=summary)


def _summary(s: dict[str, Any], m: int) -> str:
    mt = s["mean_tries_accepted"]
    pos = s["mean_target_position"]
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    return "\n".join([
        "# Reasoning traces (rejection sampling)", "",
        f"Teacher `{s['teacher']}`" + (f" (features: {s['feature_source']})" if s.get("feature_source") else "")
        + f"; up to M={m} draws per sample.", "",
        "| statistic | value |", "| --- | --- |",
        f"| samples | {s['samples']} |",
        f"| acceptance rate (top-1 = target within M draws) | {s['acceptance_rate']:.3f} |",
        f"| accepted incl. targeted fallback | {s['accepted_with_fallback_rate']:.3f} |",
        f"| mean tries of accepted | {fmt(mt)} |",
        f"| share of accepted traces from the fallback | {s['fallback_share']:.3f} |",
        f"| teacher errors / invalid traces | {s.get('teacher_errors', 0)} / {s.get('invalid_traces', 0)} |",
        f"| mean incoming target position: all / sampled / fallback | {fmt(pos['all'])} / "
        f"{fmt(pos['sampled'])} / {fmt(pos['fallback'])} |",
        "",
        "Selection bias: samples accepted by sampling are those the teacher already ranks right; compare their "
        "mean incoming target position with all samples.", "",
    ])
