"""Additive-attention pooling (the NRMS / GPT4SM pooler): a learned query scores every position."""

from __future__ import annotations

import torch
from torch import nn


class AdditiveAttention(nn.Module):
    """[N, L, D] -> [N, D]: the sum of the positions weighted by softmax_i(q . tanh(W x_i + b)).

    Masked positions (``mask`` False) get no weight; every row must keep at least one position.
    """

    def __init__(self, dim: int, query_dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, query_dim)
        self.query = nn.Linear(query_dim, 1, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        scores = self.query(torch.tanh(self.proj(x))).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask.bool(), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return torch.bmm(weights.unsqueeze(1), x).squeeze(1)
