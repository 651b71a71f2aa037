"""DeepFM (Guo et al. 2017): FM and a DNN sharing the same embeddings, logits summed."""

from __future__ import annotations

import torch
from torch import nn

from models.ctr.base import CTRModel
from models.layers import MLP, FMInteraction, LinearTerm


class DeepFM(CTRModel):
    """logit = linear + sum(bi-interaction) + w . MLP(flat emb); q = [bi-interaction, MLP output]."""

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
        self.linear = LinearTerm(vocab_sizes, dense_dim)
        self.fm = FMInteraction()
        self.mlp = MLP(self.num_fields * embedding_dim, list(hidden_units), dropout=dropout, batch_norm=batch_norm)
        self.out = nn.Linear(self.mlp.output_dim, 1)
        self.q_dim = embedding_dim + self.mlp.output_dim

    def forward(self, batch):
        emb = self.embedding(batch)
        fm, deep = self.fm(emb), self.mlp(emb.flatten(1))
        logit = self.linear(batch) + fm.sum(dim=-1) + self.out(deep).squeeze(-1)
        return {"logit": logit, "q": torch.cat([fm, deep], dim=-1)}
