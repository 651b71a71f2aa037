"""The ID-only twin tower: LEARN's structure and training, with learned item-ID embeddings as inputs.

The baseline LEARN is compared against in retrieval: the same causal PCH tower, shared item tower
(variant 1) and InfoNCE, but each item's input vector is a trainable ID embedding instead of the
frozen LLM's content embedding. Items never seen in training keep their random initial embedding,
which is exactly the cold-start weakness content embeddings are meant to fix.
"""

from __future__ import annotations

import torch
from torch import nn

from models.learn.pch_tower import TwinTower


class IDTwoTower(TwinTower):
    """Twin tower over a learned [num_items + 1, embedding_dim] ID table (row 0 = padding)."""

    def __init__(
        self,
        num_items: int,
        embedding_dim: int = 64,
        model_dim: int = 128,
        output_dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        dropout: float = 0.1,
        max_len: int = 64,
        temperature: float = 0.05,
    ):
        table = nn.Embedding(num_items + 1, embedding_dim, padding_idx=0)
        nn.init.normal_(table.weight, std=0.02)
        with torch.no_grad():
            table.weight[0].zero_()
        super().__init__(table, 1, model_dim, output_dim, num_layers, num_heads, dropout, max_len, temperature)
        self.build_config = {
            "name": "id_two_tower",
            "hparams": dict(
                num_items=num_items,
                embedding_dim=embedding_dim,
                model_dim=model_dim,
                output_dim=output_dim,
                num_layers=num_layers,
                num_heads=num_heads,
                dropout=dropout,
                max_len=max_len,
                temperature=temperature,
            ),
        }
