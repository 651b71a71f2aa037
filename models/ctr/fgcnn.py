"""FGCNN (Liu et al. 2019): CNN-generated fields added to the raw ones, then an IPNN on top."""

from __future__ import annotations

import torch
from torch import nn

from models.ctr.base import CTRModel
from models.layers import MLP, FeatureEmbedding, FeatureGeneration, InnerProduct


class FGCNN(CTRModel):
    """q = MLP([flat raw+new fields, their inner products]); logit = w . q + b.

    The generator reads its own embeddings unless ``share_embedding`` (the paper's default: separate).
    """

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        embedding_dim: int = 16,
        dense_dim: int = 0,
        channels: tuple[int, ...] = (14, 16, 18, 20),
        kernel_heights: tuple[int, ...] = (7, 7, 7, 7),
        pooling_sizes: tuple[int, ...] = (2, 2, 2, 2),
        recombined_channels: tuple[int, ...] = (3, 3, 3, 3),
        share_embedding: bool = False,
        hidden_units: tuple[int, ...] = (256, 128),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__(vocab_sizes, embedding_dim, dense_dim)
        self.generator_embedding = None if share_embedding else FeatureEmbedding(vocab_sizes, embedding_dim, dense_dim)
        self.generator = FeatureGeneration(
            self.num_fields,
            embedding_dim,
            list(channels),
            list(kernel_heights),
            list(pooling_sizes),
            list(recombined_channels),
        )
        total_fields = self.num_fields + self.generator.num_new_fields
        self.product = InnerProduct(total_fields)
        self.mlp = MLP(
            total_fields * embedding_dim + self.product.output_dim,
            list(hidden_units),
            dropout=dropout,
            batch_norm=batch_norm,
        )
        self.out = nn.Linear(self.mlp.output_dim, 1)
        self.q_dim = self.mlp.output_dim

    def forward(self, batch):
        emb = self.embedding(batch)
        source = emb if self.generator_embedding is None else self.generator_embedding(batch)
        fields = torch.cat([emb, self.generator(source)], dim=1)
        q = self.mlp(torch.cat([fields.flatten(1), self.product(fields)], dim=-1))
        return {"logit": self.out(q).squeeze(-1), "q": q}
