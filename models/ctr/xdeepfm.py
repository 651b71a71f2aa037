"""xDeepFM (Lian et al. 2018): linear + compressed interaction network (CIN) + DNN."""

from __future__ import annotations

import torch
from torch import nn

from models.ctr.base import CTRModel
from models.layers import CIN, MLP, LinearTerm


class XDeepFM(CTRModel):
    """q = [CIN sum-pooled maps, MLP output]; logit = linear + w . q + b."""

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        embedding_dim: int = 16,
        dense_dim: int = 0,
        cin_units: tuple[int, ...] = (16, 16, 16),
        hidden_units: tuple[int, ...] = (256, 128),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__(vocab_sizes, embedding_dim, dense_dim)
        self.linear = LinearTerm(vocab_sizes, dense_dim)
        self.cin = CIN(self.num_fields, list(cin_units))
        self.mlp = MLP(self.num_fields * embedding_dim, list(hidden_units), dropout=dropout, batch_norm=batch_norm)
        self.q_dim = self.cin.output_dim + self.mlp.output_dim
        self.out = nn.Linear(self.q_dim, 1)

    def forward(self, batch):
        emb = self.embedding(batch)
        q = torch.cat([self.cin(emb), self.mlp(emb.flatten(1))], dim=-1)
        return {"logit": self.linear(batch) + self.out(q).squeeze(-1), "q": q}
