"""MMoE (Ma et al., KDD 2018) with scenarios as tasks: shared experts, one softmax gate and one
tower per scenario.

Every scenario mixes the same experts with its own input-dependent weights, so scenarios share
capacity where it helps and separate where they conflict. A row uses its own scenario's gate and tower.
"""

from __future__ import annotations

from torch import nn

from models.msr.base import Backbone, Experts, mix, route, towers


class MMoE(Backbone):
    """logit = tower_s(sum_e softmax(gate_s(x))_e * expert_e(x)) for a row of scenario s."""

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
        self.gates = nn.ModuleList(nn.Linear(input_dim, num_experts) for _ in range(num_scenarios))
        self.towers = towers(self.experts.output_dim, num_scenarios, list(tower_units), dropout)

    def forward(self, x, scenario):
        experts = self.experts(x)
        return route(lambda k, xk, ek: self.towers[k](mix(self.gates[k](xk), ek)).squeeze(-1), scenario, x, experts)
