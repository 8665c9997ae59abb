"""The offline default teacher: feature-grounded rationales and a ranking sampled from feature scores.

This is a *heuristic stand-in for an LLM teacher*, not a language model: it scores each candidate from
features (category overlap with the history, co-occurrence with the recent items, how recently the item
was seen, popularity), samples a ranking from those scores with a temperature (Plackett-Luce via the
Gumbel trick), and fills fixed templates that cite items by SID. It lets the trace and reasoning stages
run end to end without a GPU or an endpoint; swap in :class:`gr2.train.teachers.OpenAITeacher` for real
LLM traces.

Item text is read from the run's Feast online store; popularity and last-seen time are read *as of
each traced sample's own timestamp* with Feast's point-in-time join (``get_historical_features`` on
the time-stamped ``item_stats`` source), so a trace never cites an interaction at or after its sample.
When the store is absent the same point-in-time values are computed from the protocol's train split
(``feature_source`` says so). Co-occurrence counts come from the protocol's learnable interactions only.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from gr2.config import GR2Config
from gr2.data.schema import CATEGORY_SEPARATOR
from gr2.paths import RunPaths
from gr2.train.config import TracesConfig
from gr2.train.teachers import Trace

FEATURES = ("category", "cooccurrence", "recency", "popularity")
REASON_WORDS = {
    "category": "it matches the categories of the history",
    "cooccurrence": "it is often consumed right after the recent items",
    "recency": "it is currently in demand",
    "popularity": "it is widely popular",
}
TEMPLATE_PHRASES = (
    "Step 1 - taste: recent items", "favourite categories:", "no categories recorded",
    "Step 2 - evidence:", "categories", "overlap with history", "co-occurs", "times with recent items",
    "popularity", "Step 3 - decision:", "first because", "then", "it is the best overall fit",
    *REASON_WORDS.values(),
)
RECENT_ITEMS = 5  # most recent history items that drive co-occurrence evidence
RECENT_DECAY = 0.8  # weight of the n-th most recent of them is decay**n


@dataclass
class ItemFeatures:
    """Per-item features the teacher reasons over, and where they came from.

    ``frame`` (index item_id; title, categories, popularity, last_seen_ts) holds static values;
    ``point_in_time`` maps (item_id, unix time) to (popularity, last_seen_ts) as of that time and wins
    over the static columns for samples whose timestamp was looked up.
    """

    frame: pd.DataFrame
    source: str
    point_in_time: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)

    def stats(self, item: int, timestamp: int | None) -> tuple[float, float]:
        """(popularity, last_seen_ts) of ``item`` as of ``timestamp`` (NaN last-seen: never seen)."""
        if timestamp is not None and (int(item), int(timestamp)) in self.point_in_time:
            return self.point_in_time[(int(item), int(timestamp))]
        if self.point_in_time or item not in self.frame.index:
            return 0.0, float("nan")
        row = self.frame.loc[item]
        return float(row["popularity"]), float(row["last_seen_ts"])

    @classmethod
    def from_feast(cls, cfg: GR2Config, item_ids: Sequence[int],
                   requests: Sequence[tuple[int, int]] = ()) -> ItemFeatures:
        """Text from the online store, statistics as of each (item, time) in ``requests`` (point-in-time
        join); falls back to the split Parquet (and says so) when the store is absent."""
        try:
            from gr2.features.store import get_historical_item_stats, get_online_features

            records = get_online_features(cfg, item_ids=[int(i) for i in item_ids]).get("items", [])
            frame = pd.DataFrame(records)
            if frame.empty or frame["title"].isna().all():
                raise LookupError("online store holds no item_text (not materialized)")
            pit: dict[tuple[int, int], tuple[float, float]] = {}
            if requests:
                items, stamps = zip(*sorted(set(requests)), strict=True)
                hist = get_historical_item_stats(cfg, list(items), list(stamps))
                pit = _point_in_time_dict(hist)
            features = cls(frame=cls._clean(frame.set_index("item_id")), source="feast (point-in-time item_stats)",
                           point_in_time=pit)
            return features
        except Exception as err:  # feast raises many error types for a missing/unapplied repo
            return cls.from_split(cfg, requests, reason=f"{type(err).__name__}: {err}")

    @classmethod
    def from_split(cls, cfg: GR2Config, requests: Sequence[tuple[int, int]] = (), reason: str = "") -> ItemFeatures:
        """The same point-in-time values from ``data/split/train.parquet``; text from the catalog."""
        from gr2.features.build import item_stats_table

        paths = RunPaths.of(cfg.run_dir)
        train = pd.read_parquet(paths.split / "train.parquet")
        items = pd.read_parquet(paths.raw / "items.parquet").set_index("item_id")
        source = "split parquet, point-in-time (Feast store absent" + (f": {reason})" if reason else ")")
        return cls(frame=cls._clean(items), source=source,
                   point_in_time=point_in_time_stats(item_stats_table(train), requests))

    @staticmethod
    def _clean(frame: pd.DataFrame) -> pd.DataFrame:
        out = pd.DataFrame(index=frame.index.astype("int64"))
        out["title"] = frame["title"].fillna("").astype(str) if "title" in frame else ""
        out["categories"] = frame["categories"].fillna("").astype(str) if "categories" in frame else ""
        out["popularity"] = pd.to_numeric(frame.get("popularity"), errors="coerce").fillna(0.0).astype(float)
        last = pd.to_numeric(frame.get("last_seen_ts"), errors="coerce").astype(float)
        out["last_seen_ts"] = last.fillna(last.min() if last.notna().any() else 0.0)
        return out


def _point_in_time_dict(frame: pd.DataFrame) -> dict[tuple[int, int], tuple[float, float]]:
    pop = pd.to_numeric(frame["popularity"], errors="coerce").fillna(0.0).to_numpy(float)
    last = pd.to_numeric(frame["last_seen_ts"], errors="coerce").to_numpy(float)
    return {(int(i), int(t)): (float(p), float(s)) for i, t, p, s in
            zip(frame["item_id"], frame["as_of"], pop, last, strict=True)}


def point_in_time_stats(stats: pd.DataFrame, requests: Sequence[tuple[int, int]]
                        ) -> dict[tuple[int, int], tuple[float, float]]:
    """The point-in-time join of Feast, in pandas: per (item, time) the latest ``item_stats`` row whose
    ``event_timestamp`` is at or before that time."""
    if not requests:
        return {}
    asked = pd.DataFrame(sorted(set(requests)), columns=["item_id", "as_of"]).astype("int64")
    asked["event_timestamp"] = pd.to_datetime(asked["as_of"], unit="s", utc=True)
    rows = stats.assign(event_timestamp=pd.to_datetime(stats["event_timestamp"], utc=True))
    joined = pd.merge_asof(asked.sort_values("event_timestamp"), rows.sort_values("event_timestamp"),
                           on="event_timestamp", by="item_id", direction="backward")
    return _point_in_time_dict(joined)


class Cooccurrence:
    """How often item b follows item a within ``window`` steps in the users' sequences."""

    def __init__(self, sequences: Mapping[int, Sequence[int]], window: int) -> None:
        ids = sorted({int(i) for s in sequences.values() for i in s})
        self.index = {i: n for n, i in enumerate(ids)}
        rows, cols = [], []
        for seq in sequences.values():
            idx = [self.index[int(i)] for i in seq]
            for lag in range(1, window + 1):
                rows += idx[:-lag]
                cols += idx[lag:]
        n = len(ids)
        data = np.ones(len(rows), dtype=np.float32)
        self.matrix = sparse.csr_matrix((data, (rows, cols)), shape=(n, n)) if n else sparse.csr_matrix((0, 0))

    def count(self, a: int, b: int) -> float:
        ia, ib = self.index.get(int(a)), self.index.get(int(b))
        return 0.0 if ia is None or ib is None else float(self.matrix[ia, ib])


def _zscore(values: np.ndarray) -> np.ndarray:
    """Standardise within the candidate set (all zeros when the values do not vary).

    >>> _zscore(np.array([1.0, 1.0])).tolist(), _zscore(np.array([0.0, 2.0])).tolist()
    ([0.0, 0.0], [-1.0, 1.0])
    """
    std = values.std()
    return np.zeros_like(values) if std == 0 else (values - values.mean()) / std


class FeatureTeacher:
    """Heuristic stand-in for an LLM teacher (see the module docstring)."""

    name = "feature"

    def __init__(self, features: ItemFeatures, cooccurrence: Cooccurrence, cfg: TracesConfig, sid_map: Any = None,
                 seed: int = 0) -> None:
        self.features, self.cooc, self.cfg, self.sid_map, self.seed = features, cooccurrence, cfg, sid_map, seed
        self.weights = np.array([cfg.w_category, cfg.w_cooccurrence, cfg.w_recency, cfg.w_popularity])
        frame = features.frame
        self._cats = {int(i): str(c) for i, c in frame["categories"].items()}
        self._titles = {int(i): str(t) for i, t in frame["title"].items()}

    def _label(self, item: int, labels: Mapping[int, str]) -> str:
        if item in labels:
            return labels[item]
        if self.sid_map is not None and item in self.sid_map:
            return self.sid_map.token_string(item)
        return f'"{self._titles.get(item, item)}"'

    def evidence(self, sample: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray], Counter[str]]:
        """Weighted scores per candidate, the raw feature values, and the history's category counts."""
        history = [int(i) for i in sample["history"]]
        cands = [int(c) for c in sample["candidates"]]
        hist_cats = [set(filter(None, self._cats.get(h, "").split(CATEGORY_SEPARATOR))) for h in history]
        counts = Counter(c for cats in hist_cats for c in cats)
        raw = {name: np.zeros(len(cands)) for name in FEATURES}
        recent = history[::-1][:RECENT_ITEMS]
        for n, c in enumerate(cands):
            cats = set(filter(None, self._cats.get(c, "").split(CATEGORY_SEPARATOR)))
            raw["category"][n] = np.mean([bool(cats & h) for h in hist_cats]) if hist_cats else 0.0
            raw["cooccurrence"][n] = sum(RECENT_DECAY ** k * self.cooc.count(h, c) for k, h in enumerate(recent))
            raw["popularity"][n], raw["recency"][n] = self.features.stats(c, sample.get("timestamp"))
        seen = ~np.isnan(raw["recency"])
        raw["recency"][~seen] = raw["recency"][seen].min() if seen.any() else 0.0  # never seen: the stalest
        z = np.stack([_zscore(raw["category"]), _zscore(np.log1p(raw["cooccurrence"])),
                      _zscore(raw["recency"]), _zscore(np.log1p(raw["popularity"]))], axis=1)
        return z * self.weights, raw, counts

    def _rng(self, sample: Mapping[str, Any], attempt: int) -> np.random.Generator:
        key = zlib.crc32(str(sample.get("sample_id", "")).encode())
        return np.random.default_rng([self.seed, key, attempt])

    def propose(self, sample: Mapping[str, Any], temperature: float, reveal_target: bool = False,
                attempt: int = 0) -> Trace:
        """Sample a ranking from the feature scores (target first when revealed) and explain it."""
        from gr2.rerank.format import candidate_labels, format_answer

        cands = [int(c) for c in sample["candidates"]]
        labels = dict(zip(cands, candidate_labels(cands, self.sid_map), strict=True))
        contrib, raw, counts = self.evidence(sample)
        keys = contrib.sum(axis=1) / temperature + self._rng(sample, attempt).gumbel(size=len(cands))
        if reveal_target:
            keys[cands.index(int(sample["target"]))] = np.inf
        order = np.argsort(-keys, kind="stable")
        ranking = [cands[i] for i in order]
        reasoning = self._rationale(sample, ranking, order, contrib, raw, counts, labels)
        return Trace(reasoning=reasoning, ranking=ranking, text=format_answer(ranking, labels, reasoning))

    def _rationale(self, sample: Mapping[str, Any], ranking: list[int], order: np.ndarray, contrib: np.ndarray,
                   raw: dict[str, np.ndarray], counts: Counter[str], labels: Mapping[int, str]) -> str:
        history = [int(i) for i in sample["history"]]
        recent = ", ".join(self._label(h, labels) for h in history[::-1][:3])
        total = sum(counts.values())
        taste = ", ".join(f"{c} ({100 * n / total:.0f}%)" for c, n in counts.most_common(3)) if total else \
            "no categories recorded"
        lines = [f"Step 1 - taste: recent items {recent}; favourite categories: {taste}.", "Step 2 - evidence:"]
        for k in range(min(3, len(ranking))):
            i, item = int(order[k]), ranking[k]
            cats = self._cats.get(item, "") or "none"
            lines.append(
                f"{labels[item]}: categories {cats.replace(CATEGORY_SEPARATOR, ', ')}; overlap with history "
                f"{raw['category'][i]:.2f}; co-occurs {raw['cooccurrence'][i]:.1f} times with recent items; "
                f"popularity {raw['popularity'][i]:.0f}.")
        top = int(order[0])
        best = int(np.argmax(contrib[top]))
        reason = REASON_WORDS[FEATURES[best]] if contrib[top, best] > 0 else "it is the best overall fit"
        rest = ", ".join(labels[i] for i in ranking[1:3])
        lines.append(f"Step 3 - decision: {labels[ranking[0]]} first because {reason}; then {rest}.")
        return "\n".join(lines)


def feature_teacher_from_run(cfg: GR2Config, sid_map: Any = None, samples: pd.DataFrame | None = None
                             ) -> FeatureTeacher:
    """A feature teacher over the run's Feast features (point-in-time for ``samples``) and the
    co-occurrences of the protocol's learnable interactions."""
    from gr2.train.inputs import learnable_sequences, load_dataset, run_protocol

    data = load_dataset(cfg)
    protocol = run_protocol(cfg)
    requests: list[tuple[int, int]] = []
    if samples is not None and "timestamp" in samples:
        requests = [(int(c), int(ts)) for cands, ts in zip(samples["candidates"], samples["timestamp"], strict=True)
                    for c in cands]
    features = ItemFeatures.from_feast(cfg, data.items["item_id"].tolist(), requests)
    cooc = Cooccurrence(learnable_sequences(protocol), cfg.train.traces.cooccurrence_window)
    return FeatureTeacher(features, cooc, cfg.train.traces, sid_map=sid_map, seed=cfg.seed)
