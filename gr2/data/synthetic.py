"""A generated catalog in the canonical schema, with structure models can learn.

Used by tests when MovieLens is absent and to check that nothing is special-cased to MovieLens:
items belong to latent genres, users prefer one or two genres, popularity is long-tailed and
consecutive items tend to follow each other within a genre (sequential signal).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gr2.data.schema import CATEGORY_SEPARATOR, Dataset

GENRES = ("Mystery", "Space", "Cooking", "Sports", "History", "Romance", "Robots", "Ocean")
_ADJECTIVES = ("Silent", "Crimson", "Golden", "Hidden", "Broken", "Electric", "Quiet", "Wild", "Lost", "Bright",
               "Frozen", "Hollow", "Iron", "Velvet", "Paper", "Distant")
_NOUNS = {
    "Mystery": ("Alibi", "Clue", "Detective", "Cipher"), "Space": ("Orbit", "Nebula", "Comet", "Station"),
    "Cooking": ("Kitchen", "Recipe", "Feast", "Oven"), "Sports": ("Goal", "Marathon", "Match", "Arena"),
    "History": ("Empire", "Dynasty", "Crown", "Treaty"), "Romance": ("Kiss", "Letter", "Heart", "Promise"),
    "Robots": ("Android", "Circuit", "Machine", "Drone"), "Ocean": ("Harbor", "Reef", "Tide", "Voyage"),
}


def make_synthetic(
    n_users: int = 200,
    n_items: int = 300,
    seed: int = 0,
    min_events: int = 20,
    max_events: int = 60,
) -> Dataset:
    """Generate users, a catalog and chronologically ordered interactions with ratings."""
    if n_users < 1 or n_items < len(GENRES):
        raise ValueError(f"need n_users >= 1 and n_items >= {len(GENRES)}, got {n_users}, {n_items}")
    rng = np.random.default_rng(seed)
    item_ids = np.arange(1, n_items + 1)
    genre_of = rng.integers(0, len(GENRES), size=n_items)
    second = rng.integers(0, len(GENRES), size=n_items)
    popularity = rng.zipf(1.6, size=n_items).clip(max=50).astype(float)

    titles, categories = [], []
    for idx in range(n_items):
        g = GENRES[genre_of[idx]]
        adj = _ADJECTIVES[rng.integers(len(_ADJECTIVES))]
        noun = _NOUNS[g][rng.integers(len(_NOUNS[g]))]
        titles.append(f"The {adj} {noun} {idx + 1}")
        cats = [g] if second[idx] == genre_of[idx] or rng.random() < 0.5 else [g, GENRES[second[idx]]]
        categories.append(CATEGORY_SEPARATOR.join(cats))
    items = pd.DataFrame({
        "item_id": item_ids.astype("int64"),
        "title": titles,
        "categories": categories,
        "year": pd.array(rng.integers(1950, 2024, size=n_items), dtype="Int64"),
    })

    by_genre = {g: np.flatnonzero(genre_of == g) for g in range(len(GENRES))}
    rows = []
    start = 880_000_000
    for user in range(1, n_users + 1):
        liked = rng.choice(len(GENRES), size=2, replace=False)
        n_events = int(rng.integers(min_events, max_events + 1))
        t = start + int(rng.integers(0, 10_000_000))
        seen: set[int] = set()
        current = int(rng.choice(by_genre[liked[0]]))
        for _ in range(n_events):
            if rng.random() < 0.5:  # sequential step inside the genre
                pool = by_genre[genre_of[current]]
                nxt = int(pool[(np.searchsorted(pool, current) + 1) % len(pool)])
            else:
                genre = liked[0] if rng.random() < 0.6 else (liked[1] if rng.random() < 0.7 else rng.integers(8))
                pool = by_genre[int(genre)]
                weights = popularity[pool] / popularity[pool].sum()
                nxt = int(rng.choice(pool, p=weights))
            if nxt in seen:
                unseen = [i for i in by_genre[genre_of[nxt]] if i not in seen] or [
                    i for i in range(n_items) if i not in seen]
                if not unseen:
                    break
                nxt = int(unseen[0])
            seen.add(nxt)
            current = nxt
            t += int(rng.integers(60, 86_400))
            rating = float(np.clip(round(3 + (genre_of[nxt] in liked) + rng.normal(0, 0.8)), 1, 5))
            rows.append((user, int(item_ids[nxt]), t, rating))
    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"]).astype(
        {"user_id": "int64", "item_id": "int64", "timestamp": "int64", "rating": "float64"}
    )
    users = pd.DataFrame({"user_id": np.arange(1, n_users + 1, dtype="int64")})
    return Dataset(interactions=interactions, items=items, users=users)
