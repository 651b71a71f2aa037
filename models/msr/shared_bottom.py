"""Shared Bottom: one MLP shared by every scenario, then one tower per scenario.

The simplest multi-scenario network (Caruana's hard parameter sharing): the bottom learns what all
scenarios share, each tower only its own scenario's mapping. A row's logit depends on the bottom and
on its own scenario's tower alone.
"""

from __future__ import annotations

from models.layers import MLP
from models.msr.base import Backbone, route, towers


class SharedBottom(Backbone):
    """logit = tower_s(bottom(x)) for a row of scenario s."""

    def __init__(
        self,
        input_dim: int,
        num_scenarios: int,
        bottom_units: tuple[int, ...] = (128, 64),
        tower_units: tuple[int, ...] = (32,),
        dropout: float = 0.0,
    ):
        super().__init__(input_dim, num_scenarios)
        self.bottom = MLP(input_dim, list(bottom_units), dropout=dropout)
        self.towers = towers(self.bottom.output_dim, num_scenarios, list(tower_units), dropout)

    def forward(self, x, scenario):
        shared = self.bottom(x)
        return route(lambda k, h: self.towers[k](h).squeeze(-1), scenario, shared)
