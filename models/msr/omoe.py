"""OMoE: the one-gate mixture of experts (the baseline of the MMoE paper) with per-scenario towers.

All scenarios share the experts AND the gate; only the towers are scenario-specific. Compared with
MMoE it isolates what per-scenario gating adds.
"""

from __future__ import annotations

from torch import nn

from models.msr.base import Backbone, Experts, mix, route, towers


class OMoE(Backbone):
    """logit = tower_s(sum_e softmax(gate(x))_e * expert_e(x)) for a row of scenario s."""

    def __init__(
        self,
        input_dim: int,
        num_scenarios: int,
        num_experts: int = 4,
        expert_units: tuple[int, ...] = (128, 64),
        tower_units: tuple[int, ...] = (32,),
        dropout: float = 0.0,
    ):
        super().__init__(input_dim, num_scenarios)
        self.experts = Experts(input_dim, num_experts, list(expert_units), dropout)
        self.gate = nn.Linear(input_dim, num_experts)
        self.towers = towers(self.experts.output_dim, num_scenarios, list(tower_units), dropout)

    def forward(self, x, scenario):
        shared = mix(self.gate(x), self.experts(x))
        return route(lambda k, h: self.towers[k](h).squeeze(-1), scenario, shared)
