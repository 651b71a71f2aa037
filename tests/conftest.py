"""Shared test setup: telemetry off, offline hub, and a generator of normalized MovieLens-like tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from assets.schema import columns_for
from llm4ctr.env import apply_defaults

apply_defaults()


def make_interactions(n_users: int = 60, n_items: int = 40, per_user: int = 20, seed: int = 0) -> pd.DataFrame:
    """A valid normalized ml-100k-schema table: each user rates ``per_user`` distinct items."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        age = int(rng.integers(15, 60))
        gender = "MF"[u % 2]
        scenario = "age<25" if age < 25 else ("age25-34" if age < 35 else "age>=35")
        for i in rng.choice(np.arange(1, n_items + 1), size=per_user, replace=False):
            rating = float(rng.integers(1, 6))
            rows.append(
                {
                    "user_id": str(u), "item_id": str(i), "rating": rating, "label": int(rating > 3),
                    "timestamp": int(8.8e8 + rng.integers(0, 10**7)), "scenario": scenario,
                    "gender": gender, "age": age, "occupation": ["student", "engineer", "writer"][u % 3],
                    "zip": f"{10000 + u}", "title": f"Movie {i}", "genres": "Comedy|Drama" if i % 2 else "Action",
                    "year": 1990 + int(i) % 10,
                }
            )
    df = pd.DataFrame(rows)
    dtypes = columns_for("ml-100k")
    df = df[list(dtypes)].astype(dtypes)
    return df.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)


@pytest.fixture
def interactions() -> pd.DataFrame:
    return make_interactions()
