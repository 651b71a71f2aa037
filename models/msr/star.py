"""STAR (Sheng et al., CIKM 2021): the star-topology network for multi-domain CTR.

* Partitioned normalization (PN): the input is normalized with the statistics of its own scenario
  (batch statistics while training, that scenario's running statistics at inference), then scaled by
  gamma * gamma_s and shifted by beta + beta_s (shared and scenario-specific).
* Star topology FCN: every layer's weight is the element-wise product of a shared and a
  scenario-specific matrix, W = W_shared * W_s, its bias the sum b_shared + b_s. (ours) W_s starts at
  ones and b_s at zeros, so training starts from one shared network and specializes from there.
* Auxiliary network: a small MLP over [scenario embedding, x] whose logit is added to the FCN's, the
  paper's direct path for scenario-specific behaviour.

Defaults follow the LLM4MSR authors' lineage (Scenario-Wise-Rec): hidden [128, 64, 32].
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.layers import MLP
from models.msr.base import Backbone, route


class PartitionedNorm(nn.Module):
    """Per-scenario normalization with shared x scenario-specific scale and shared + specific shift."""

    def __init__(self, dim: int, num_scenarios: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.scenario_gamma = nn.Parameter(torch.ones(num_scenarios, dim))
        self.scenario_beta = nn.Parameter(torch.zeros(num_scenarios, dim))
        self.register_buffer("running_mean", torch.zeros(num_scenarios, dim))
        self.register_buffer("running_var", torch.ones(num_scenarios, dim))

    def forward(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Normalize rows ``x`` that all belong to scenario ``k``."""
        if self.training and len(x) > 1:
            mean, var = x.mean(dim=0), x.var(dim=0, unbiased=False)
            with torch.no_grad():
                self.running_mean[k].lerp_(mean, self.momentum)
                self.running_var[k].lerp_(var * len(x) / (len(x) - 1), self.momentum)
        else:
            mean, var = self.running_mean[k], self.running_var[k]
        normed = (x - mean) * torch.rsqrt(var + self.eps)
        return self.gamma * self.scenario_gamma[k] * normed + self.beta + self.scenario_beta[k]


class STAR(Backbone):
    """logit = FCN_{shared * s}(PN_s(x)) + aux([e_s, x]) for a row of scenario s."""

    def __init__(
        self,
        input_dim: int,
        num_scenarios: int,
        hidden_units: tuple[int, ...] = (128, 64, 32),
        aux_units: tuple[int, ...] = (32,),
        aux_embedding_dim: int = 8,
    ):
        super().__init__(input_dim, num_scenarios)
        dims = [input_dim, *hidden_units, 1]
        self.norm = PartitionedNorm(input_dim, num_scenarios)
        self.shared_weights = nn.ParameterList()
        self.shared_biases = nn.ParameterList()
        self.scenario_weights = nn.ParameterList()
        self.scenario_biases = nn.ParameterList()
        for n_in, n_out in zip(dims[:-1], dims[1:]):
            bound = 1 / math.sqrt(n_in)  # nn.Linear's default initialization
            self.shared_weights.append(nn.Parameter(torch.empty(n_in, n_out).uniform_(-bound, bound)))
            self.shared_biases.append(nn.Parameter(torch.empty(n_out).uniform_(-bound, bound)))
            self.scenario_weights.append(nn.Parameter(torch.ones(num_scenarios, n_in, n_out)))
            self.scenario_biases.append(nn.Parameter(torch.zeros(num_scenarios, n_out)))
        self.aux_embedding = nn.Embedding(num_scenarios, aux_embedding_dim)
        self.aux = MLP(input_dim + aux_embedding_dim, list(aux_units), output_dim=1)

    def _star(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """The FCN logits of rows of scenario ``k``."""
        h = self.norm(k, x)
        last = len(self.shared_weights) - 1
        for i, (w, b, ws, bs) in enumerate(
            zip(self.shared_weights, self.shared_biases, self.scenario_weights, self.scenario_biases)
        ):
            h = h @ (w * ws[k]) + (b + bs[k])
            if i < last:
                h = torch.relu(h)
        return h.squeeze(-1)

    def forward(self, x, scenario):
        aux = self.aux(torch.cat([self.aux_embedding(scenario), x], dim=1)).squeeze(-1)
        return route(self._star, scenario, x) + aux
