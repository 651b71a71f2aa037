"""IPNN (Qu et al. 2016): an MLP over the embeddings and all their pairwise inner products."""

from __future__ import annotations

import torch
from torch import nn

from models.ctr.base import CTRModel
from models.layers import MLP, InnerProduct


class IPNN(CTRModel):
    """q = MLP([flat emb, inner products]); logit = w . q + b."""

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        embedding_dim: int = 16,
        dense_dim: int = 0,
        hidden_units: tuple[int, ...] = (256, 128),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__(vocab_sizes, embedding_dim, dense_dim)
        self.product = InnerProduct(self.num_fields)
        self.mlp = MLP(
            self.num_fields * embedding_dim + self.product.output_dim,
            list(hidden_units),
            dropout=dropout,
            batch_norm=batch_norm,
        )
        self.out = nn.Linear(self.mlp.output_dim, 1)
        self.q_dim = self.mlp.output_dim

    def forward(self, batch):
        emb = self.embedding(batch)
        q = self.mlp(torch.cat([emb.flatten(1), self.product(emb)], dim=-1))
        return {"logit": self.out(q).squeeze(-1), "q": q}
