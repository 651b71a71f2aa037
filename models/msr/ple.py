"""PLE (Tang et al., RecSys 2020) with scenarios as tasks: stacked CGC levels of shared and
scenario-specific experts, one tower per scenario.

Each level keeps a scenario path and a shared path. The scenario gate mixes the scenario's own
experts with the shared ones; the shared gate (every level but the last) mixes the shared experts
with the specific experts of the row's scenario. In multi-task PLE the shared gate sees every task's
experts because every sample has every task; here a row belongs to one scenario, so (ours) it sees
only that scenario's — which keeps a row's logit independent of other scenarios' parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from models.msr.base import Backbone, Experts, mix, route, towers


class PLE(Backbone):
    """``num_levels`` CGC levels, then tower_s on the scenario path's output for a row of scenario s."""

    def __init__(
        self,
        input_dim: int,
        num_scenarios: int,
        num_levels: int = 2,
        shared_experts: int = 2,
        specific_experts: int = 1,
        expert_units: tuple[int, ...] = (64,),
        tower_units: tuple[int, ...] = (32,),
        dropout: float = 0.0,
    ):
        super().__init__(input_dim, num_scenarios)
        n = shared_experts + specific_experts
        self.levels = nn.ModuleList()
        dim = input_dim
        for level in range(num_levels):
            parts = nn.ModuleDict({
                "shared": Experts(dim, shared_experts, list(expert_units), dropout),
                "specific": nn.ModuleList(Experts(dim, specific_experts, list(expert_units), dropout)
                                          for _ in range(num_scenarios)),
                "gates": nn.ModuleList(nn.Linear(dim, n) for _ in range(num_scenarios)),
            })  # fmt: skip
            if level < num_levels - 1:
                parts["shared_gate"] = nn.Linear(dim, n)
            self.levels.append(parts)
            dim = parts["shared"].output_dim
        self.towers = towers(dim, num_scenarios, list(tower_units), dropout)

    def _path(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """The logits of rows of scenario ``k``."""
        own = shared = x
        for parts in self.levels:
            experts = torch.cat([parts["specific"][k](own), parts["shared"](shared)], dim=1)
            if "shared_gate" in parts:
                shared = mix(parts["shared_gate"](shared), experts)
            own = mix(parts["gates"][k](own), experts)
        return self.towers[k](own).squeeze(-1)

    def forward(self, x, scenario):
        return route(self._path, scenario, x)
