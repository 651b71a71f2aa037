"""Tiny model configs and the encoded default table of the CTR tests (tests/fixtures_tables.py's generator).

A plain module (not a conftest): import it as ``from tests.fixtures_ctr import ...``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from models.features import FeatureEncoder, default_spec
from tests.fixtures_tables import make_interactions, split

torch.set_num_threads(1)  # 2-core machines shared with other work: one thread avoids oversubscription stalls

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
    "fgcnn": {
        "embedding_dim": 8,
        "channels": [4, 4],
        "kernel_heights": [3, 3],
        "pooling_sizes": [2, 2],
        "recombined_channels": [2, 2],
        "hidden_units": [32, 16],
    },
}


@lru_cache(maxsize=1)
def encoded():
    """(encoder, train, valid, test arrays) on the default fixture; cached, so never mutate the arrays."""
    train_df, valid_df, test_df = split(make_interactions())
    encoder = FeatureEncoder.fit(train_df, default_spec(train_df.columns))
    return encoder, encoder.transform(train_df), encoder.transform(valid_df), encoder.transform(test_df)


def head(arrays: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first ``n`` rows of every array."""
    return {k: v[:n] for k, v in arrays.items()}
