"""``gr2 train compress``: shrink the long part of the re-ranking prompt (history and item metadata) to a budget.

A :class:`BudgetCompressor` is the ``compress`` hook of :func:`gr2.rerank.format.build_messages` at one budget
(a share of the sample's original prompt tokens). It first shortens every item line (titles cut to
``title_words`` words, then no year and no categories) and, when that is not enough, drops the lowest-scored
history items until the estimated prompt fits. Two scorers side by side:

* ``rule``: the ``keep_recent`` most recent items always stay, then the items whose categories overlap the
  candidates' most.
* ``learned``: a logistic selector over per-item features (recency, category overlap with the candidates, ...)
  trained on the report's reward shape, per history item: a judge term (how much the re-ranker's own
  log-probability of the target being ranked first falls when the item is left out, a leave-one-out
  linearisation of "is the ranking still solvable") minus ``lambda_compress`` x the item's share of the
  history tokens (the compression term). The expected reward of a keep-probability policy, ``sum_i r_i p_i``,
  is maximised by gradient ascent (with a small L2 penalty): no sampling, seconds on CPU.

Writes ``train/compress/{curve.json,selector.json,metrics.json,summary.md}``: prompt tokens (share of the
original) vs likelihood R@1 and N@3 per method and budget on validation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from gr2.config import GR2Config
from gr2.data.schema import CATEGORY_SEPARATOR
from gr2.paths import RunPaths
from gr2.provenance import write_metrics
from gr2.rerank.format import FULL, LineDetail, build_messages
from gr2.train.config import CompressorConfig
from gr2.train.inputs import StageInputs

FEATURES = ("recency", "recent3", "category_overlap", "max_jaccard", "is_candidate")


@dataclass(frozen=True)
class CompressorArtifacts:
    """Files written by :func:`run_compressor`."""

    curve: Path
    metrics: Path
    summary: Path


def _categories(items: pd.DataFrame) -> dict[int, set[str]]:
    table = items if items.index.name == "item_id" else items.set_index("item_id")
    cats = table["categories"] if "categories" in table else pd.Series("", index=table.index)
    return {int(i): {c for c in str(v or "").split(CATEGORY_SEPARATOR) if c} for i, v in cats.items()}


def item_features(history: Sequence[int], candidates: Sequence[int], cats: Mapping[int, set[str]]) -> np.ndarray:
    """Per history item (oldest first), the :data:`FEATURES` row.

    >>> item_features([1, 2], [2], {1: {"a"}, 2: {"b"}}).tolist()
    [[0.5, 1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]]
    """
    pool = set().union(*(cats.get(int(c), set()) for c in candidates)) if candidates else set()
    n, rows = len(history), []
    for pos, h in enumerate(history):
        own = cats.get(int(h), set())
        jac = max((len(own & cats.get(int(c), set())) / max(len(own | cats.get(int(c), set())), 1)
                   for c in candidates), default=0.0)
        rows.append([(pos + 1) / n, float(n - pos <= 3), len(own & pool) / max(len(own), 1), jac,
                     float(int(h) in {int(c) for c in candidates})])
    return np.asarray(rows, dtype=float).reshape(n, len(FEATURES))


@dataclass
class Selector:
    """Logistic keep-probability over standardised :data:`FEATURES`."""

    weights: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def keep_probability(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(((x - self.mean) / self.std) @ self.weights[1:] + self.weights[0])))

    def to_json(self) -> dict[str, Any]:
        return {"features": list(FEATURES), "weights": self.weights.tolist(), "mean": self.mean.tolist(),
                "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Selector:
        return cls(*(np.asarray(data[k], dtype=float) for k in ("weights", "mean", "std")))


def fit_selector(x: np.ndarray, reward: np.ndarray, epochs: int, lr: float, l2: float = 1e-2) -> Selector:
    """Maximise ``mean_i reward_i * p_i - l2 |w|^2`` (the expected reward of keeping item i with probability p_i).

    >>> s = fit_selector(np.array([[0.0], [1.0]] * 4), np.array([-1.0, 1.0] * 4), 200, 0.5)
    >>> bool(s.keep_probability(np.array([[1.0]]))[0] > 0.5 > s.keep_probability(np.array([[0.0]]))[0])
    True
    """
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / std])
    w = np.zeros(z.shape[1])
    for _ in range(epochs):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        w += lr * ((reward * p * (1 - p)) @ z / len(z) - 2 * l2 * w)
    return Selector(w, mean, std)


class BudgetCompressor:
    """The ``compress`` hook at one budget (share of the original prompt tokens) with one history scorer."""

    def __init__(self, tokenizer: Any, items: pd.DataFrame, sid_map: Any, budget: float,
                 method: Literal["rule", "learned"], cc: CompressorConfig, selector: Selector | None = None) -> None:
        self.tokenizer, self.items, self.sid_map, self.budget, self.method = tokenizer, items, sid_map, budget, method
        self.cc, self.selector, self.cats = cc, selector, _categories(items)
        short = LineDetail(title_words=cc.title_words)
        self.levels = [FULL, short, LineDetail(title_words=cc.title_words, year=False, categories=False)]

    def tokens(self, sample: Mapping[str, Any], history: Sequence[int], detail: LineDetail) -> int:
        from gr2.models.scoring import render_prompt

        row = {**sample, "history": list(history)}
        return len(render_prompt(self.tokenizer, build_messages(row, self.items, self.sid_map, "answer",
                                                                compress=lambda r: (r["history"], detail))))

    def scores(self, sample: Mapping[str, Any]) -> np.ndarray:
        """Higher = kept longer."""
        history, cands = [int(h) for h in sample["history"]], [int(c) for c in sample["candidates"]]
        x = item_features(history, cands, self.cats)
        if self.method == "learned":
            assert self.selector is not None, "the learned compressor needs a fitted selector"
            return self.selector.keep_probability(x)
        recent = np.arange(len(history)) >= len(history) - self.cc.keep_recent
        return recent * 10.0 + x[:, FEATURES.index("category_overlap")] + 0.01 * x[:, FEATURES.index("recency")]

    def __call__(self, sample: Mapping[str, Any]) -> tuple[list[int], LineDetail]:
        history = [int(h) for h in sample["history"]]
        if self.budget >= 1.0:
            return history, FULL
        target = self.budget * self.tokens(sample, history, FULL)
        for detail in self.levels:
            total = self.tokens(sample, history, detail)
            if total <= target:
                return history, detail
        empty = self.tokens(sample, [], detail)
        per_item = (total - empty) / max(len(history), 1)  # history tokens per line, on average
        keep = max(0, int((target - empty) // max(per_item, 1e-9)))
        order = np.argsort(-self.scores(sample), kind="stable")[:keep]
        return [history[i] for i in sorted(order)], detail


def judge_rewards(lm: Any, sid_map: Any, items: pd.DataFrame, samples: pd.DataFrame, cc: CompressorConfig,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per history item of each sample: features and reward = judge drop when left out - lambda x token share."""
    from gr2.train.evaluate import rerank_likelihood_scores

    cats = _categories(items)
    lightest = LineDetail(title_words=cc.title_words, year=False, categories=False)
    xs, rewards = [], []
    for row in samples.to_dict("records"):
        history, cands, target = [int(h) for h in row["history"]], [int(c) for c in row["candidates"]], row["target"]
        if not history or int(target) not in cands:
            continue
        variants = [history] + [history[:i] + history[i + 1:] for i in range(len(history))]
        rows = [{**row, "history": v} for v in variants]
        scores = rerank_likelihood_scores(lm, sid_map, rows, items, compress=lambda r: (r["history"], lightest))
        t = cands.index(int(target))
        judge = np.array([s[t] - np.logaddexp.reduce(s) for s in scores])  # log p(target first) among candidates
        xs.append(item_features(history, cands, cats))
        rewards.append((judge[0] - judge[1:]) - cc.lambda_compress / len(history))
    if not xs:
        raise ValueError("no train sample with a history and its target among the candidates")
    return np.vstack(xs), np.concatenate(rewards)


def compression_curve(lm: Any, sid_map: Any, items: pd.DataFrame, samples: pd.DataFrame, cc: CompressorConfig,
                      selector: Selector) -> list[dict[str, Any]]:
    """Per method and budget: mean prompt tokens (and share of the original), likelihood R@1 and N@3."""
    from gr2.models.scoring import render_prompt
    from gr2.rerank.metrics import evaluate_rankings
    from gr2.train.evaluate import rerank_likelihood_rankings

    rows = samples.to_dict("records")
    original = np.mean([len(render_prompt(lm.tokenizer, build_messages(r, items, sid_map, "answer"))) for r in rows])
    curve = []
    for method in ("rule", "learned"):
        for budget in sorted(cc.budgets, reverse=True):
            comp = BudgetCompressor(lm.tokenizer, items, sid_map, budget, method, cc, selector)
            tokens = np.mean([len(render_prompt(lm.tokenizer, build_messages(r, items, sid_map, "answer",
                                                                             compress=comp))) for r in rows])
            m = evaluate_rankings(samples, rerank_likelihood_rankings(lm, sid_map, samples, items, compress=comp))
            curve.append({"method": method, "budget": budget, "prompt_tokens": round(float(tokens), 1),
                          "token_share": round(float(tokens / original), 4), "R@1": m["R@1"], "N@3": m["N@3"],
                          "samples": len(rows)})
    return curve


def run_compressor(cfg: GR2Config, inputs: StageInputs | None = None, out_dir: str | Path | None = None,
                   ) -> CompressorArtifacts:
    """Fit the learned selector on train samples, then the rule-vs-learned curve on validation samples."""
    from gr2.models.factory import load_model
    from gr2.train.inputs import subsample
    from gr2.train.opd import resolve_teacher

    started = time.time()
    cc = cfg.train.compress
    inputs = inputs or StageInputs.of_run(cfg.run_dir)
    out = Path(out_dir) if out_dir is not None else RunPaths.of(cfg.run_dir).train / "compress"
    model = resolve_teacher(cfg, cc.model)
    sid_map = inputs.load_sid_map(cfg.train.model.item_tokens)
    items = inputs.load_dataset().items
    lm = load_model(model, sid_map.all_tokens(), seed=cfg.seed)
    lm.model.eval()
    x, reward = judge_rewards(lm, sid_map, items, subsample(inputs.load_samples("train"), cc.train_samples,
                                                             cfg.seed), cc)
    selector = fit_selector(x, reward, cc.epochs, cc.learning_rate)
    curve = compression_curve(lm, sid_map, items, subsample(inputs.load_samples("validation"), cc.eval_samples,
                                                            cfg.seed), cc, selector)
    out.mkdir(parents=True, exist_ok=True)
    (out / "selector.json").write_text(json.dumps(selector.to_json(), indent=2) + "\n")
    curve_path, metrics_path, summary = out / "curve.json", out / "metrics.json", out / "summary.md"
    curve_path.write_text(json.dumps(curve, indent=2) + "\n")
    metrics = {"model": str(model), "selector": selector.to_json(), "judged_items": len(reward),
               "mean_reward": float(reward.mean()), "curve": curve, "wall_time_s": round(time.time() - started, 1)}
    write_metrics(metrics_path, metrics, cfg, [inputs.samples / "validation.parquet", inputs.sid_map])
    summary.write_text(_summary(metrics))
    return CompressorArtifacts(curve=curve_path, metrics=metrics_path, summary=summary)


def load_selector(path: str | Path) -> Selector:
    """The selector ``gr2 train compress`` wrote (``train/compress/selector.json``)."""
    return Selector.from_json(json.loads(Path(path).read_text()))


def _summary(m: dict[str, Any]) -> str:
    lines = ["# Prompt compression (history and item metadata)", "",
             f"Model `{m['model']}`; learned selector fitted on {m['judged_items']} judged history items.", "",
             "| method | budget | prompt tokens | share of original | R@1 | N@3 |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {p['method']} | {p['budget']:.2f} | {p['prompt_tokens']:.0f} | {p['token_share']:.2f} | "
              f"{p['R@1']:.3f} | {p['N@3']:.3f} |" for p in m["curve"]]
    return "\n".join(lines) + "\n"
