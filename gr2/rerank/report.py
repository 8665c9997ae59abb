"""Markdown tables and a bar chart (matplotlib, Agg) for evaluation results."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

TABLE_METRICS = ("R@1", "strict R@1", "R@3", "R@5", "N@3", "strict N@3", "N@5", "MRR", "AUC", "gNDCG")
RATE_COLUMNS = {"identity": "identity", "invalid": "invalid", "keep_first": "keep-1st R@1"}
LIFT_COLUMNS = ("R@1", "R@3", "N@3", "MRR")
CHART_METRICS = ("R@1", "R@3", "N@3", "MRR")


def ci_cell(stat: dict[str, float] | None, digits: int = 3) -> str:
    """``mean [lo, hi]``.

    >>> ci_cell({"mean": 0.25, "lo": 0.2, "hi": 0.3})
    '0.250 [0.200, 0.300]'
    """
    if not stat or stat.get("mean") is None or math.isnan(stat["mean"]):
        return "n/a"
    return f"{stat['mean']:.{digits}f} [{stat['lo']:.{digits}f}, {stat['hi']:.{digits}f}]"


def lift_cell(lift: dict[str, float] | None) -> str:
    """Relative lift in percent with its CI.

    >>> lift_cell({"rel": 0.187, "rel_lo": 0.05, "rel_hi": 0.3})
    '+18.7% [+5.0%, +30.0%]'
    """
    if not lift or lift.get("rel") is None or math.isnan(lift["rel"]):
        return "n/a"
    return f"{lift['rel']:+.1%} [{lift['rel_lo']:+.1%}, {lift['rel_hi']:+.1%}]"


def metrics_table(rows: dict[str, dict[str, Any]]) -> str:
    """One row per method: metrics with CIs and the rates (``rows[name] = {"metrics": ..., ...}``)."""
    head = ["method", *TABLE_METRICS, *RATE_COLUMNS.values(), "R@1 shuffled", "pos. bias R@1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        m = row["metrics"]
        cells = [name, *(ci_cell(m.get(k)) for k in TABLE_METRICS),
                 *(f"{m[k]['mean']:.3f}" if k in m else "n/a" for k in RATE_COLUMNS)]
        shuffled = row.get("shuffled", {}).get("R@1")
        cells.append(ci_cell(shuffled) if shuffled else "n/a")
        bias = row.get("position_bias_r1")
        cells.append(f"{bias:+.3f}" if bias is not None else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lifts_table(rows: dict[str, dict[str, Any]], base: str = "incoming") -> str:
    """Relative lift over ``base`` per method with paired bootstrap CIs."""
    head = ["method", *(f"{k} lift" for k in LIFT_COLUMNS), "R@1 abs. diff"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        if name == base:
            continue
        lifts = row["lifts"]
        r1 = lifts.get("R@1", {})
        diff = (f"{r1['abs']:+.3f} [{r1['abs_lo']:+.3f}, {r1['abs_hi']:+.3f}]" if r1 else "n/a")
        lines.append("| " + " | ".join([name, *(lift_cell(lifts.get(k)) for k in LIFT_COLUMNS), diff]) + " |")
    return "\n".join(lines)


def samples_table(splits: dict[str, dict[str, Any]]) -> str:
    """Positions, samples, coverage and drops per split."""
    head = ["split", "positions", "legacy samples", "coverage", "retrieval recall", "users (samples)",
            "dropped: target not in top K", "dropped: short history", "random samples"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in splits.items():
        lines.append("| " + " | ".join(map(str, [
            name, s["positions"], s["samples"], f"{s['coverage']:.3f}", f"{s['retrieval_recall']:.3f}",
            s["sample_users"], s["dropped_target_not_in_top_k"], s["dropped_short_history"], s["random_samples"],
        ])) + " |")
    return "\n".join(lines)


def protocol_line(proto: dict[str, Any]) -> str:
    """One sentence on the protocol, its periods and its warnings."""
    if proto["kind"] == "temporal":
        text = (f"Protocol: temporal; scorer statistics before {proto['fit_start_utc']}, train positions until "
                f"{proto['validation_start_utc']}, validation until {proto['test_start_utc']}, test after.")
    else:
        text = ("Protocol: leave-one-out; per user the last item is test, the second to last validation, the "
                "latest share of the rest train positions.")
    text += " Every model learns only from the protocol's learnable interactions (the train split)."
    for warning in proto.get("warnings", []):
        text += f"\n\n> warning: {warning}"
    return text


def render_markdown(record: dict[str, Any]) -> str:
    """The full baselines report."""
    proto = record["protocol"]
    boot = record["bootstrap"]
    unit = "users" if boot["by_user"] else "samples"
    out = [
        "# Re-ranking baselines",
        "",
        protocol_line(proto),
        f"95% CIs: percentile bootstrap over {unit} ({boot['resamples']} resamples); lifts are paired "
        "(same resamples for method and incoming order).",
        "",
        "## Samples",
        "",
        samples_table(record["samples"]),
    ]
    for split, protocols in record["results"].items():
        for protocol, block in protocols.items():
            label = "legacy candidates" if protocol == "legacy" else "random negatives (shuffled)"
            out += ["", f"## {split}, {label} (n={block['n']}, users={block['users']})", "",
                    metrics_table(block["methods"]), "", "Lift over the incoming order:", "",
                    lifts_table(block["methods"])]
    return "\n".join(out) + "\n"


def bar_chart(record: dict[str, Any], path: Path, protocol: str = "legacy") -> Path:
    """Grouped bars (methods) per metric with 95% CI error bars, one panel per split."""
    splits = [s for s in record["results"] if protocol in record["results"][s]]
    fig, axes = plt.subplots(1, max(1, len(splits)), figsize=(6 * max(1, len(splits)), 4), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=False):
        methods = record["results"][split][protocol]["methods"]
        width = 0.8 / max(1, len(methods))
        for i, (name, row) in enumerate(methods.items()):
            means = [row["metrics"][k]["mean"] for k in CHART_METRICS]
            err = [[m - row["metrics"][k]["lo"] for m, k in zip(means, CHART_METRICS, strict=True)],
                   [row["metrics"][k]["hi"] - m for m, k in zip(means, CHART_METRICS, strict=True)]]
            ax.bar([j + i * width for j in range(len(CHART_METRICS))], means, width, yerr=err, capsize=3,
                   label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(CHART_METRICS))], CHART_METRICS)
        ax.set_title(f"{split} ({protocol} candidates, n={record['results'][split][protocol]['n']})")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(record: dict[str, Any], md_path: Path, png_path: Path) -> tuple[Path, Path]:
    """Write the Markdown report and the bar chart."""
    md_path.write_text(render_markdown(record))
    return md_path, bar_chart(record, png_path)
