"""EPNet ("_EP"), the embedding personalization network of PEPNet (Chang et al., KDD 2023).

A gate neural unit reads the scenario's own embedding next to the general feature embeddings (with
their gradient stopped, so the gate cannot reshape them) and rescales every embedding element:
delta = gamma * sigmoid(MLP([e_s, stop_grad(E)])), E' = delta * E, gamma = 2 so a gate can amplify
as well as damp (delta = 1 is the neutral value). The backbone reads E'.
"""

from __future__ import annotations

import torch
from torch import nn

from models.layers import MLP
from models.msr.base import Enhancement


class EPNet(Enhancement):
    """E' = gamma * sigmoid(MLP([e_s, sg(E)])) * E, element-wise, then the backbone."""

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        embedding_dim: int,
        num_scenarios: int,
        hidden_units: tuple[int, ...] = (64,),
        scenario_dim: int = 16,
        gamma: float = 2.0,
    ):
        super().__init__(vocab_sizes, embedding_dim, num_scenarios)
        self.scenario_embedding = nn.Embedding(num_scenarios, scenario_dim)
        self.gate = MLP(scenario_dim + self.input_dim, list(hidden_units), output_dim=self.input_dim)
        self.gamma = gamma
        self.output_dim = self.input_dim

    def forward(self, emb, batch, scenario, backbone):
        x = emb.flatten(1)
        delta = self.gamma * torch.sigmoid(self.gate(torch.cat([self.scenario_embedding(scenario), x.detach()], dim=1)))
        return backbone(delta * x, scenario)
