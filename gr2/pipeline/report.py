"""The run report: the stage table, a chart of R@1 per stage (inline PNG, so the KFP UI shows it in the
Markdown viewer), the promotion decision and the summaries of every step."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def r1_chart_png(rows: list[Mapping[str, Any]]) -> bytes:
    """Horizontal bars of R@1 with the 95% bootstrap interval, one per stage/method row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if isinstance(r.get("R@1"), int | float)]
    labels = [f"{r['stage']} ({r['method']})" for r in rows]
    values = [float(r["R@1"]) for r in rows]
    errors = [
        [v - (r.get("R@1_ci95") or [v, v])[0] for v, r in zip(values, rows, strict=True)],
        [(r.get("R@1_ci95") or [v, v])[1] - v for v, r in zip(values, rows, strict=True)],
    ]
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * max(1, len(rows))))
    ax.barh(range(len(rows)), values, xerr=errors, color="#4878a8", capsize=3)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("R@1 (95% bootstrap CI)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _section(title: str, path: str | Path | None) -> list[str]:
    if not path or not Path(path).exists():
        return []
    body = Path(path).read_text().strip().splitlines()
    body = [("#" + line) if line.startswith("#") else line for line in body]  # nest the step's headings
    return [f"## {title}", "", *body, ""]


def write_report(
    eval_dir: str | Path, gate_dir: str | Path, out: str | Path, sections: Mapping[str, str | Path | None]
) -> str:
    """The report from the evaluation and gate folders and the steps' Markdown files; returns its text."""
    record = json.loads((Path(eval_dir) / "train_stages.json").read_text())
    record = record.get("metrics", record)  # gr2 metrics files wrap the payload with config and provenance
    gate = json.loads((Path(gate_dir) / "gate.json").read_text())
    decision = gate["decision"]
    table = (Path(eval_dir) / "train_stages.md").read_text().strip().splitlines()
    chart = base64.b64encode(r1_chart_png(record["rows"])).decode()
    verdict = ("promoted" if decision == "promote" else "not promoted") + (
        f": serving model R@1 {gate['serving_R@1']:.3f} vs incoming order {gate['incoming_R@1']:.3f} on "
        f"{gate['samples']} validation samples, lift {gate['lift']:+.4f} "
        f"[{gate['lift_lo']:+.4f}, {gate['lift_hi']:+.4f}] against pipeline.min_lift {gate['min_lift']:+.4f}"
    )
    lines = [
        "# gr2 pipeline run",
        "",
        f"**Serving model {verdict}.**",
        "",
        "## Stage table",
        "",
        *[("#" + t) if t.startswith("#") else t for t in table[1:]],
        "",
        f"![R@1 per stage](data:image/png;base64,{chart})",
        "",
    ]
    for title, path in sections.items():
        lines += _section(title, path)
    text = "\n".join(lines) + "\n"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text)
    return text
