"""AITM (Xi et al., KDD 2021) with scenarios as the chain of tasks.

Every scenario has a tower over the shared input. Information flows along the scenarios in index
order: scenario k's representation z_k is an attention-weighted combination of its own tower output
q_k and p_k = transfer(z_{k-1}), the information passed on from scenario k-1 (the Adaptive
Information Transfer module: weight of u in {p_k, q_k} = softmax(<h1(u), h2(u)> / sqrt(d)), value
h3(u)); z_0 = q_0. A row of scenario k is predicted from z_k, so by design it depends on the towers
of scenarios 0..k and on nothing after k. The paper's behavioural-expectation calibrator encodes a
click -> conversion funnel; scenarios form no funnel, so it is left out.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.layers import MLP
from models.msr.base import Backbone, route


class InformationTransfer(nn.Module):
    """AIT: attention over the own representation and the transferred one -> [B, d]."""

    def __init__(self, dim: int):
        super().__init__()
        self.h1, self.h2, self.h3 = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.scale = 1 / math.sqrt(dim)

    def forward(self, own: torch.Tensor, transferred: torch.Tensor) -> torch.Tensor:
        u = torch.stack([transferred, own], dim=1)  # [B, 2, d]
        weights = torch.softmax((self.h1(u) * self.h2(u)).sum(-1) * self.scale, dim=1)
        return (weights.unsqueeze(-1) * self.h3(u)).sum(dim=1)


class AITM(Backbone):
    """logit = head_k(z_k) for a row of scenario k, z_k built along the scenario chain."""

    def __init__(
        self, input_dim: int, num_scenarios: int, tower_units: tuple[int, ...] = (128, 64, 32), dropout: float = 0.0
    ):
        super().__init__(input_dim, num_scenarios)
        self.towers = nn.ModuleList(MLP(input_dim, list(tower_units), dropout=dropout) for _ in range(num_scenarios))
        dim = self.towers[0].output_dim
        self.transfers = nn.ModuleList(MLP(dim, [dim]) for _ in range(num_scenarios - 1))
        self.attention = nn.ModuleList(InformationTransfer(dim) for _ in range(num_scenarios - 1))
        self.heads = nn.ModuleList(nn.Linear(dim, 1) for _ in range(num_scenarios))

    def _chain(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """The logits of rows of scenario ``k``: walk the chain from scenario 0 to k."""
        z = self.towers[0](x)
        for j in range(1, k + 1):
            z = self.attention[j - 1](self.towers[j](x), self.transfers[j - 1](z))
        return self.heads[k](z).squeeze(-1)

    def forward(self, x, scenario):
        return route(self._chain, scenario, x)
