"""The contract every CTR model keeps, so the trainer, ClickPrompt and LEARN can use any of them.

``forward(batch)`` takes a dict of tensors (one [B] or [B, L] int64 tensor per field, optionally
``"dense"`` [B, dense_dim] float) and returns ``{"logit": [B], "q": [B, q_dim]}``: ``q`` is the
model's feature-interaction representation right before its output layer (ClickPrompt's prompt
generator reads it; LEARN and ClickPrompt w/o PLM put a new head on it). Models with a first-order
part add that to the logit on top of the head over ``q``.
"""

from __future__ import annotations

import torch
from torch import nn

from models.layers import FeatureEmbedding


class CTRModel(nn.Module):
    """Base of the zoo: owns the field embeddings; subclasses add interactions and set ``q_dim``."""

    q_dim: int

    def __init__(self, vocab_sizes: dict[str, int], embedding_dim: int, dense_dim: int):
        super().__init__()
        self.vocab_sizes = dict(vocab_sizes)
        self.embedding = FeatureEmbedding(vocab_sizes, embedding_dim, dense_dim)

    @property
    def num_fields(self) -> int:
        """Fields after embedding (the dense vector counts as one)."""
        return self.embedding.num_fields

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError
