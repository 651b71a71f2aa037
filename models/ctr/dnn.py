"""DNN: an MLP over the concatenated field embeddings (implicit interactions only)."""

from __future__ import annotations

from torch import nn

from models.ctr.base import CTRModel
from models.layers import MLP


class DNN(CTRModel):
    """q = MLP(flat embeddings); logit = w . q + b."""

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
        self.mlp = MLP(self.num_fields * embedding_dim, list(hidden_units), dropout=dropout, batch_norm=batch_norm)
        self.out = nn.Linear(self.mlp.output_dim, 1)
        self.q_dim = self.mlp.output_dim

    def forward(self, batch):
        q = self.mlp(self.embedding(batch).flatten(1))
        return {"logit": self.out(q).squeeze(-1), "q": q}
