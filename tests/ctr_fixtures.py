"""A small synthetic MovieLens-like table with a learnable click signal, and tiny model configs.

Clicks follow a logistic model of user bias + item bias + "the item has the user's favourite genre"
+ a gender x release-era interaction, so every CTR model can beat AUC 0.5 within a few epochs.
Imported by the CTR test modules (not a conftest: each test module stays self-contained).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from models.features import FeatureEncoder, default_spec

torch.set_num_threads(1)  # 2-core machines shared with other work: one thread avoids oversubscription stalls

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "Thriller", "War"]

# Tiny hyper-parameters per model: fast on CPU, still exercising every layer.
TINY = {
    "fm": {"embedding_dim": 8},
    "dnn": {"embedding_dim": 8, "hidden_units": [32, 16]},
    "deepfm": {"embedding_dim": 8, "hidden_units": [32, 16]},
    "xdeepfm": {"embedding_dim": 8, "cin_units": [8, 8], "hidden_units": [32, 16]},
    "ipnn": {"embedding_dim": 8, "hidden_units": [32, 16]},
    "dcn": {"embedding_dim": 8, "num_cross_layers": 2, "hidden_units": [32, 16]},
    "dcnv2": {"embedding_dim": 8, "num_cross_layers": 2, "hidden_units": [32, 16]},
    "autoint": {"embedding_dim": 8, "attention_layers": 2, "num_heads": 2, "attention_dim": 8},
    "fignn": {"embedding_dim": 8, "gnn_layers": 2},
    "fgcnn": {"embedding_dim": 8, "channels": [4, 4], "kernel_heights": [3, 3], "pooling_sizes": [2, 2],
              "recombined_channels": [2, 2], "hidden_units": [32, 16]},
}


def make_interactions(n_rows: int = 4000, n_users: int = 120, n_items: int = 150, seed: int = 0) -> pd.DataFrame:
    """A normalized-table-shaped frame (assets/schema.py MovieLens columns) with labels from a known model."""
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

    users = rng.integers(0, n_users, n_rows)
    items = rng.integers(0, n_items, n_rows)
    likes_genre = np.array([user_favourite[u] in item_genres[i] for u, i in zip(users, items)])
    era = np.where(item_year[items] >= 1980, 1.0, -1.0)
    gender = np.where(user_gender[users] == "M", 1.0, -1.0)
    logit = 1.5 * user_bias[users] + 1.5 * item_bias[items] + 2.0 * likes_genre + 0.8 * era * gender - 0.8
    label = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)

    return pd.DataFrame({
        "user_id": pd.array([str(u + 1) for u in users], dtype="string"),
        "item_id": pd.array([str(i + 1) for i in items], dtype="string"),
        "rating": np.where(label == 1, 4.0 + rng.integers(0, 2, n_rows), 1.0 + rng.integers(0, 3, n_rows)),
        "label": label,
        "timestamp": np.arange(n_rows, dtype=np.int64) + 978_300_000,
        "scenario": pd.array(["ml"] * n_rows, dtype="string"),
        "gender": pd.array(user_gender[users], dtype="string"),
        "age": pd.array(user_age[users], dtype="Int64"),
        "occupation": pd.array(user_occupation[users].astype(str), dtype="string"),
        "zip": pd.array(user_zip[users], dtype="string"),
        "title": pd.array([f"Movie {i + 1} ({item_year[i]})" for i in items], dtype="string"),
        "genres": pd.array(["|".join(GENRES[g] for g in item_genres[i]) for i in items], dtype="string"),
        "year": pd.array(item_year[items], dtype="Int64"),
    })


def split(frame: pd.DataFrame, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Random 80/10/10 split."""
    order = np.random.default_rng(seed).permutation(len(frame))
    a, b = int(0.8 * len(frame)), int(0.9 * len(frame))
    return tuple(frame.iloc[order[s]].reset_index(drop=True) for s in (slice(0, a), slice(a, b), slice(b, None)))


@lru_cache(maxsize=1)
def encoded():
    """(encoder, train, valid, test arrays) on the default fixture; cached, so never mutate the arrays."""
    train_df, valid_df, test_df = split(make_interactions())
    encoder = FeatureEncoder.fit(train_df, default_spec(train_df.columns))
    return encoder, encoder.transform(train_df), encoder.transform(valid_df), encoder.transform(test_df)


def head(arrays: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first ``n`` rows of every array."""
    return {k: v[:n] for k, v in arrays.items()}
