"""FM (Rendle 2010): first-order weights + all pairwise embedding inner products."""

from __future__ import annotations

from models.ctr.base import CTRModel
from models.layers import FMInteraction, LinearTerm


class FM(CTRModel):
    """logit = linear + sum(bi-interaction); q = the bi-interaction vector [B, D]."""

    def __init__(self, vocab_sizes: dict[str, int], embedding_dim: int = 16, dense_dim: int = 0):
        super().__init__(vocab_sizes, embedding_dim, dense_dim)
        self.linear = LinearTerm(vocab_sizes, dense_dim)
        self.fm = FMInteraction()
        self.q_dim = embedding_dim

    def forward(self, batch):
        q = self.fm(self.embedding(batch))
        return {"logit": self.linear(batch) + q.sum(dim=-1), "q": q}
