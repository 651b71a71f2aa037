"""The generated interactions tables of the tests: one MovieLens-like generator with a learnable click signal.

Clicks follow a logistic model of user bias + item bias + "the item has the user's favourite genre"
+ a gender x release-era interaction, so every CTR model can beat AUC 0.5 within a few epochs.
A plain module (not a conftest): import it as ``from tests.fixtures_tables import ...``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from assets.schema import columns_for

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "War"]
SCENARIOS = ("single", "age")


def scenario_of(age: pd.Series) -> pd.Series:
    """ML-100K's scenario of each age (its age groups, the multi-scenario split of the LLM4MSR lineage)."""
    group = np.where(age < 25, "age<25", np.where(age < 35, "age25-34", "age>=35"))
    return pd.Series(group, index=age.index, dtype="string")


def make_interactions(
    n_rows: int = 4000,
    n_users: int = 120,
    n_items: int = 150,
    seed: int = 0,
    *,
    per_user: int | None = None,
    scenarios: str = "single",
) -> pd.DataFrame:
    """A normalized ml-100k table (assets/schema.py columns and dtypes) with labels from a known model.

    Rows: ``n_rows`` random (user, item) draws in time order (a pair may repeat), or, with ``per_user``,
    every user rates ``per_user`` distinct items (``n_users * per_user`` rows, users interleaved in time;
    ``n_rows`` is then ignored). ``scenarios``: ``single`` (one scenario, ``ml``) or ``age`` (ML-100K's
    three age groups, :func:`scenario_of`). The same arguments always give the same table.
    """
    if scenarios not in SCENARIOS:
        raise ValueError(f"scenarios must be one of {SCENARIOS}, got {scenarios!r}")
    rng = np.random.default_rng(seed)
    user_gender = rng.choice(["F", "M"], n_users)
    user_age = rng.integers(18, 65, n_users)
    user_occupation = rng.integers(0, 21, n_users)
    user_zip = rng.choice([f"{z:05d}" for z in rng.integers(0, 99999, 30)], n_users)
    user_favourite = rng.integers(0, len(GENRES), n_users)
    user_bias = rng.normal(0, 1, n_users)

    item_genres = [sorted(rng.choice(len(GENRES), rng.integers(1, 4), replace=False)) for _ in range(n_items)]
    item_year = rng.integers(1950, 2001, n_items)
    item_bias = rng.normal(0, 1, n_items)

    if per_user is None:
        users = rng.integers(0, n_users, n_rows)
        items = rng.integers(0, n_items, n_rows)
    else:
        users = np.repeat(np.arange(n_users), per_user)
        items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
        order = rng.permutation(len(users))
        users, items = users[order], items[order]
        n_rows = len(users)
    likes_genre = np.array([user_favourite[u] in item_genres[i] for u, i in zip(users, items)])
    era = np.where(item_year[items] >= 1980, 1.0, -1.0)
    gender = np.where(user_gender[users] == "M", 1.0, -1.0)
    logit = 1.5 * user_bias[users] + 1.5 * item_bias[items] + 2.0 * likes_genre + 0.8 * era * gender - 0.8
    label = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)

    frame = pd.DataFrame(
        {
            "user_id": [str(u + 1) for u in users],
            "item_id": [str(i + 1) for i in items],
            "rating": np.where(label == 1, 4.0 + rng.integers(0, 2, n_rows), 1.0 + rng.integers(0, 3, n_rows)),
            "label": label,
            "timestamp": np.arange(n_rows, dtype=np.int64) + 978_300_000,
            "scenario": "ml",
            "gender": user_gender[users],
            "age": user_age[users],
            "occupation": user_occupation[users].astype(str),
            "zip": user_zip[users],
            "title": [f"Movie {i + 1} ({item_year[i]})" for i in items],
            "genres": ["|".join(GENRES[g] for g in item_genres[i]) for i in items],
            "year": item_year[items],
        }
    )
    if scenarios == "age":
        frame["scenario"] = scenario_of(frame["age"])
    dtypes = columns_for("ml-100k")
    return frame[list(dtypes)].astype(dtypes)


def split(frame: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Random 80/10/10 split."""
    order = np.random.default_rng(seed).permutation(len(frame))
    a, b = int(0.8 * len(frame)), int(0.9 * len(frame))
    return tuple(frame.iloc[order[s]].reset_index(drop=True) for s in (slice(0, a), slice(a, b), slice(b, None)))


def write_split_files(root: Path, splits: dict[str, pd.DataFrame], method: str = "random") -> Path:
    """The split stage's output layout for ``splits`` under project ``root``: one parquet file per split
    and the summary.json naming the split method (what later stages read). Returns the folder."""
    from assets.tables import write_table

    folder = Path(root) / "artifacts" / "split" / "ml-100k"
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in splits.items():
        write_table(frame, folder / f"{name}.parquet")
    (folder / "summary.json").write_text(json.dumps({"dataset": "ml-100k", "method": method}))
    return folder
