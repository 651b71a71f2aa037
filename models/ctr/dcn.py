"""DCN (Wang et al. 2017): a cross network of rank-1 crosses in parallel with a DNN."""

from __future__ import annotations

import torch
from torch import nn

from models.ctr.base import CTRModel
from models.layers import MLP, CrossNet


class DCN(CTRModel):
    """q = [CrossNet(x0), MLP(x0)] (the MLP is left out when ``hidden_units`` is empty)."""

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        embedding_dim: int = 16,
        dense_dim: int = 0,
        num_cross_layers: int = 3,
        hidden_units: tuple[int, ...] = (256, 128),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__(vocab_sizes, embedding_dim, dense_dim)
        input_dim = self.num_fields * embedding_dim
        self.cross = CrossNet(input_dim, num_cross_layers)
        self.mlp = MLP(input_dim, list(hidden_units), dropout=dropout, batch_norm=batch_norm) if hidden_units else None
        self.q_dim = input_dim + (self.mlp.output_dim if self.mlp else 0)
        self.out = nn.Linear(self.q_dim, 1)

    def forward(self, batch):
        x0 = self.embedding(batch).flatten(1)
        parts = [self.cross(x0)] + ([self.mlp(x0)] if self.mlp else [])
        q = torch.cat(parts, dim=-1)
        return {"logit": self.out(q).squeeze(-1), "q": q}
