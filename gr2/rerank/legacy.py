"""The legacy pre-ranker: co-occurrence + popularity retrieval and a pointwise scikit-learn scorer.

It is the "incoming order" the re-ranker must improve on, built the way production funnels are:

1. *Statistics* from interactions before a cut: popularity (all time and recent), first/last time an
   item was seen, shrunk mean rating, item-item co-occurrence (users x items binary matrix ``X``,
   ``C = XᵀX``) and its cosine form ``S_ij = C_ij / sqrt(pop_i pop_j)``, and item categories.
2. *Retrieval* per (user, time): ``score_j = Σ_h decay^age(h) S_hj`` over the latest history items,
   top ``retrieval_size`` by score plus the ``popular_candidates`` most recently popular items,
   never an item the user already has (``exclude_seen``).
3. *Pointwise scoring* on CTR-style features (``FEATURES``) with logistic regression or
   gradient-boosted trees, trained on (target vs sampled retrieved non-target) rows; the top K by
   score, in score order, are the incoming candidates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from gr2.data.schema import CATEGORY_SEPARATOR
from gr2.rerank.config import RerankConfig

DAY = 86_400.0
RATING_PRIOR = 5.0  # pseudo-ratings that shrink an item's mean towards the global mean
FEATURES = (
    "log_popularity", "log_recent_popularity", "cooc_score", "cooc_max", "log_cooc_count",
    "category_match", "log_days_since_seen", "log_item_age_days", "mean_rating",
)


@dataclass(frozen=True)
class Catalog:
    """Item ids (sorted) and their dense indices; the union of the item table and the interactions."""

    ids: np.ndarray
    categories: sp.csr_matrix  # items x categories, rows sum to 1 (or 0 without categories)

    @classmethod
    def build(cls, items: pd.DataFrame, interactions: pd.DataFrame) -> Catalog:
        ids = np.union1d(items["item_id"].to_numpy(np.int64), interactions["item_id"].to_numpy(np.int64))
        rows, cols, names = [], [], {}
        if "categories" in items:
            idx = np.searchsorted(ids, items["item_id"].to_numpy(np.int64))
            for row, text in zip(idx, items["categories"].fillna("").astype(str), strict=True):
                for name in filter(None, (c.strip() for c in text.split(CATEGORY_SEPARATOR))):
                    rows.append(row)
                    cols.append(names.setdefault(name, len(names)))
        matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(ids), max(1, len(names))))
        sums = np.asarray(matrix.sum(axis=1)).ravel()
        matrix = sp.diags(np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)) @ matrix
        return cls(ids=ids, categories=sp.csr_matrix(matrix))

    def index(self, item_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """Dense indices of ``item_ids`` (all must be in the catalog)."""
        arr = np.asarray(item_ids, dtype=np.int64)
        idx = np.searchsorted(self.ids, arr)
        if arr.size and (idx.max() >= len(self.ids) or not np.array_equal(self.ids[idx], arr)):
            raise KeyError("item id not in catalog")
        return idx

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class ItemStats:
    """Item statistics from the interactions before ``cut`` (nothing at or after it)."""

    cut: int
    start: int
    popularity: np.ndarray
    recent_popularity: np.ndarray
    first_seen: np.ndarray
    last_seen: np.ndarray
    mean_rating: np.ndarray
    similarity: sp.csr_matrix
    cooccurrence: sp.csr_matrix
    popular_order: np.ndarray = field(repr=False)

    @classmethod
    def build(cls, catalog: Catalog, interactions: pd.DataFrame, cut: int, recent_window_days: float) -> ItemStats:
        before = interactions[interactions["timestamp"] < cut]
        if before.empty:
            raise ValueError(f"no interaction before the statistics cut {cut}")
        n = len(catalog)
        item = catalog.index(before["item_id"].to_numpy())
        ts = before["timestamp"].to_numpy(np.float64)
        popularity = np.bincount(item, minlength=n).astype(np.float64)
        recent = ts >= cut - recent_window_days * DAY
        recent_popularity = np.bincount(item[recent], minlength=n).astype(np.float64)
        first_seen = np.full(n, np.nan)
        last_seen = np.full(n, np.nan)
        np.fmin.at(first_seen, item, ts)
        np.fmax.at(last_seen, item, ts)
        if "rating" in before and before["rating"].notna().any():
            rating = before["rating"].fillna(before["rating"].mean()).to_numpy(np.float64)
            prior = rating.mean()
            total = np.bincount(item, weights=rating, minlength=n)
            mean_rating = (total + RATING_PRIOR * prior) / (popularity + RATING_PRIOR)
        else:
            mean_rating = np.zeros(n)
        users = pd.factorize(before["user_id"])[0]
        x = sp.csr_matrix((np.ones(len(item)), (users, item)), shape=(users.max() + 1, n))
        x.data[:] = 1.0  # repeated (user, item) pairs count once
        cooc = sp.csr_matrix(x.T @ x)
        cooc.setdiag(0)
        cooc.eliminate_zeros()
        inv = np.divide(1.0, np.sqrt(popularity), out=np.zeros(n), where=popularity > 0)
        similarity = sp.csr_matrix(sp.diags(inv) @ cooc @ sp.diags(inv))
        popular_order = np.lexsort((np.arange(n), -popularity, -recent_popularity))
        return cls(cut=int(cut), start=int(ts.min()), popularity=popularity, recent_popularity=recent_popularity,
                   first_seen=first_seen, last_seen=last_seen, mean_rating=mean_rating, similarity=similarity,
                   cooccurrence=cooc, popular_order=popular_order)


@dataclass
class Slate:
    """Retrieved candidates of one position with their features (rows align with ``candidates``)."""

    candidates: np.ndarray  # catalog indices
    retrieval_score: np.ndarray
    features: np.ndarray


def _signals(stats: ItemStats, catalog: Catalog, history: np.ndarray, cfg: RerankConfig
             ) -> tuple[np.ndarray, sp.csr_matrix, np.ndarray, np.ndarray]:
    recent = history[-cfg.recent_items:]
    weights = cfg.recency_decay ** np.arange(len(recent))[::-1]
    sim_rows = stats.similarity[recent]
    score = np.asarray(sim_rows.T @ weights).ravel()
    profile = np.asarray(catalog.categories[recent].T @ weights).ravel() / max(weights.sum(), 1e-12)
    return score, sim_rows, stats.cooccurrence[recent], profile


def _features(stats: ItemStats, catalog: Catalog, cand: np.ndarray, t: int, score: np.ndarray,
              sim_rows: sp.csr_matrix, cooc_rows: sp.csr_matrix, profile: np.ndarray) -> np.ndarray:
    since = np.where(np.isnan(stats.last_seen[cand]), t - stats.start, t - stats.last_seen[cand]) / DAY
    age = np.where(np.isnan(stats.first_seen[cand]), 0.0, t - stats.first_seen[cand]) / DAY
    cooc_max = sim_rows[:, cand].max(axis=0).toarray().ravel() if sim_rows.shape[0] else np.zeros(len(cand))
    cooc_count = np.asarray(cooc_rows[:, cand].sum(axis=0)).ravel()
    return np.column_stack([
        np.log1p(stats.popularity[cand]),
        np.log1p(stats.recent_popularity[cand]),
        score[cand],
        cooc_max,
        np.log1p(cooc_count),
        catalog.categories[cand] @ profile,
        np.log1p(np.clip(since, 0, None)),
        np.log1p(np.clip(age, 0, None)),
        stats.mean_rating[cand],
    ])


def retrieve(stats: ItemStats, catalog: Catalog, history: np.ndarray, t: int, cfg: RerankConfig,
             extra: np.ndarray | None = None) -> Slate:
    """Candidates for a user with ``history`` (catalog indices, oldest first) at time ``t``.

    ``extra`` (catalog indices) are appended when missing, e.g. the target when fitting the scorer.
    """
    score, sim_rows, cooc_rows, profile = _signals(stats, catalog, history, cfg)
    blocked = np.zeros(len(catalog), dtype=bool)
    if cfg.exclude_seen:
        blocked[history] = True
    ranked = np.where(~blocked & (score > 0), score, -np.inf)
    k = min(cfg.retrieval_size, int(np.isfinite(ranked).sum()))
    top = np.argpartition(-ranked, k - 1)[:k] if k else np.empty(0, dtype=np.int64)
    top = top[np.lexsort((top, -ranked[top]))]
    blocked[top] = True
    popular = stats.popular_order[~blocked[stats.popular_order]][: cfg.popular_candidates]
    cand = np.concatenate([top, popular]).astype(np.int64)
    if extra is not None:
        cand = np.concatenate([cand, np.setdiff1d(extra, cand)])
    return Slate(cand, score[cand], _features(stats, catalog, cand, t, score, sim_rows, cooc_rows, profile))


def make_scorer(kind: str, seed: int) -> Pipeline | HistGradientBoostingClassifier:
    """The pointwise model: standardised logistic regression or gradient-boosted trees."""
    if kind == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    if kind == "gbdt":
        return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, early_stopping=True,
                                              random_state=seed)
    raise ValueError(f"unknown legacy_model {kind!r}; choose 'logreg' or 'gbdt'")


@dataclass(frozen=True)
class Position:
    """One (user, time) to rank: catalog indices of the history (oldest first) and of the target."""

    user_id: int
    position: int
    timestamp: int
    history: np.ndarray
    target: int


@dataclass
class LegacyRanker:
    """A fitted pointwise scorer plus the statistics it reads; ``rank`` gives the top-K incoming order."""

    cfg: RerankConfig
    catalog: Catalog
    model: object
    fit_report: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, cfg: RerankConfig, catalog: Catalog, stats: ItemStats, positions: list[Position],
            seed: int) -> LegacyRanker:
        """Fit on ``positions`` (all after ``stats.cut``): the target vs sampled retrieved non-targets.

        Only positions whose target was retrieved count, so that the rows look like what the scorer
        ranks at serving time (adding unretrieved targets would teach it that obscure items win).
        """
        if not positions:
            raise ValueError("no positions to fit the legacy scorer on; lower rerank.min_history or fit_fraction")
        rng = np.random.default_rng(seed)
        xs, ys = [], []
        for pos in tqdm(positions, desc="legacy fit features", leave=False):
            slate = retrieve(stats, catalog, pos.history, pos.timestamp, cfg)
            is_target = slate.candidates == pos.target
            if not is_target.any():
                continue
            negatives = np.flatnonzero(~is_target)
            take = rng.choice(negatives, size=min(cfg.fit_negatives, len(negatives)), replace=False)
            rows = np.concatenate([np.flatnonzero(is_target), take])
            xs.append(slate.features[rows])
            ys.append(is_target[rows])
        if not xs:
            raise ValueError("the retrieval never found a fit target; raise rerank.retrieval_size")
        x, y = np.vstack(xs), np.concatenate(ys).astype(int)
        model = make_scorer(cfg.legacy_model, seed)
        model.fit(x, y)
        report: dict = {"model": cfg.legacy_model, "fit_positions": len(positions),
                        "fit_positions_retrieved": len(xs), "fit_rows": len(y),
                        "fit_auc": float(roc_auc_score(y, model.predict_proba(x)[:, 1])),
                        "features": list(FEATURES)}
        if cfg.legacy_model == "logreg":
            report["coefficients"] = dict(zip(FEATURES, map(float, model[-1].coef_[0]), strict=True))
        return cls(cfg=cfg, catalog=catalog, model=model, fit_report=report)

    def rank(self, stats: ItemStats, positions: list[Position], desc: str = "legacy ranking",
             chunk: int = 1000) -> Iterator[tuple[Position, np.ndarray, bool]]:
        """Yield (position, top-K item ids in incoming order, target was retrieved) per position."""
        k = self.cfg.num_candidates
        bar = tqdm(total=len(positions), desc=desc, leave=False)
        for start in range(0, len(positions), chunk):
            batch = positions[start:start + chunk]
            slates = [retrieve(stats, self.catalog, p.history, p.timestamp, self.cfg) for p in batch]
            sizes = [len(s.candidates) for s in slates]
            if sum(sizes):
                probs = self.model.predict_proba(np.vstack([s.features for s in slates]))[:, 1]
            else:
                probs = np.empty(0)
            offsets = np.cumsum([0, *sizes])
            for pos, slate, lo, hi in zip(batch, slates, offsets[:-1], offsets[1:], strict=True):
                order = np.lexsort((slate.candidates, -slate.retrieval_score, -probs[lo:hi]))[:k]
                yield pos, self.catalog.ids[slate.candidates[order]], bool((slate.candidates == pos.target).any())
            bar.update(len(batch))
        bar.close()
