"""AutoInt (Song et al. 2019): stacked multi-head self-attention over fields.

With ``hidden_units`` non-empty a parallel MLP is added (FuxiCTR's AutoInt+); the default is the
plain AutoInt of the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from models.ctr.base import CTRModel
from models.layers import MLP, MultiHeadSelfAttention


class AutoInt(CTRModel):
    """q = [flattened attention output, MLP(flat emb) if any]; logit = w . q + b."""

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        embedding_dim: int = 16,
        dense_dim: int = 0,
        attention_layers: int = 3,
        num_heads: int = 2,
        attention_dim: int = 32,
        use_residual: bool = True,
        use_scale: bool = False,
        attention_dropout: float = 0.0,
        hidden_units: tuple[int, ...] = (),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__(vocab_sizes, embedding_dim, dense_dim)
        self.attention = nn.Sequential(
            *(
                MultiHeadSelfAttention(
                    embedding_dim if i == 0 else attention_dim,
                    attention_dim,
                    num_heads,
                    use_residual,
                    use_scale,
                    attention_dropout,
                )
                for i in range(attention_layers)
            )
        )
        input_dim = self.num_fields * embedding_dim
        self.mlp = MLP(input_dim, list(hidden_units), dropout=dropout, batch_norm=batch_norm) if hidden_units else None
        self.q_dim = self.num_fields * attention_dim + (self.mlp.output_dim if self.mlp else 0)
        self.out = nn.Linear(self.q_dim, 1)

    def forward(self, batch):
        emb = self.embedding(batch)
        parts = [self.attention(emb).flatten(1)] + ([self.mlp(emb.flatten(1))] if self.mlp else [])
        q = torch.cat(parts, dim=-1)
        return {"logit": self.out(q).squeeze(-1), "q": q}
