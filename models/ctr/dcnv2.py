"""DCNv2 (Wang et al. 2021): full-rank cross network, in parallel with or stacked under a DNN.

ClickPrompt's default backbone: its ``q`` feeds the prompt generator.
"""

from __future__ import annotations

import torch
from torch import nn

from models.ctr.base import CTRModel
from models.layers import MLP, CrossNetV2

STRUCTURES = ("parallel", "stacked")


class DCNv2(CTRModel):
    """parallel: q = [CrossV2(x0), MLP(x0)]; stacked: q = MLP(CrossV2(x0)); logit = w . q + b."""

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        embedding_dim: int = 16,
        dense_dim: int = 0,
        num_cross_layers: int = 3,
        structure: str = "parallel",
        hidden_units: tuple[int, ...] = (256, 128),
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__(vocab_sizes, embedding_dim, dense_dim)
        if structure not in STRUCTURES:
            raise ValueError(f"DCNv2 structure must be one of {STRUCTURES}, got {structure!r}")
        input_dim = self.num_fields * embedding_dim
        self.parallel = structure == "parallel"
        self.cross = CrossNetV2(input_dim, num_cross_layers)
        self.mlp = MLP(input_dim, list(hidden_units), dropout=dropout, batch_norm=batch_norm)
        self.q_dim = input_dim + self.mlp.output_dim if self.parallel else self.mlp.output_dim
        self.out = nn.Linear(self.q_dim, 1)

    def forward(self, batch):
        x0 = self.embedding(batch).flatten(1)
        crossed = self.cross(x0)
        q = torch.cat([crossed, self.mlp(x0)], dim=-1) if self.parallel else self.mlp(crossed)
        return {"logit": self.out(q).squeeze(-1), "q": q}
