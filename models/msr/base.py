"""Pieces every multi-scenario model shares: routing rows to their scenario, expert mixtures, the
two interfaces (backbone, enhancement) and the plain enhancement.

A multi-scenario model (``models.msr.model.MultiScenarioModel``) is

    embeddings [B, F, D]  ->  enhancement  ->  backbone(x [B, d], scenario [B])  ->  logit [B]

* A **backbone** (``shared_bottom.py`` ... ``aitm.py``) maps a flat input and the scenario index of
  every row (0 .. S-1) to one logit per row, computed by that row's scenario path.
* An **enhancement** (plain, ``dynamic_network.py``, ``epnet.py``, ``llm4msr.py``) owns everything
  between the embeddings and the logit: it prepares the backbone's input (and may add a parallel
  path), then calls the backbone. Its ``output_dim`` is the width of the input it hands the backbone.

Scenario-specific modules only ever see the rows of their own scenario (:func:`route`): a row's
logit cannot depend on another scenario's parameters unless the architecture says so (AITM).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from models.layers import MLP


def route(fn: Callable[..., torch.Tensor], scenario: torch.Tensor, *tensors: torch.Tensor) -> torch.Tensor:
    """Apply ``fn(k, *rows_of_k)`` to the rows of each scenario ``k`` present and reassemble in row order.

    ``tensors`` share their first dimension with ``scenario`` ([B] int64). Rows of one scenario are
    processed together (one matmul per scenario, not one per row); the out-of-place ``index_copy``
    keeps autograd intact.
    """
    if len(scenario) == 1:  # a one-row request: no unique, no gather, no scatter
        return fn(int(scenario[0]), *tensors)
    present = torch.unique(scenario).tolist()
    if len(present) == 1:  # one scenario in the batch: no gather, no scatter
        return fn(present[0], *tensors)
    out: torch.Tensor | None = None
    for k in present:
        rows = (scenario == k).nonzero(as_tuple=True)[0]
        part = fn(k, *(t.index_select(0, rows) for t in tensors))
        if out is None:
            out = part.new_zeros((len(scenario), *part.shape[1:]))
        out = out.index_copy(0, rows, part)
    if out is None:  # an empty batch
        return tensors[0].new_zeros(0)
    return out


class Experts(nn.Module):
    """``n`` expert MLPs over the same input; output [B, n, d] (d = the last hidden width)."""

    def __init__(self, input_dim: int, n: int, units: list[int], dropout: float = 0.0):
        super().__init__()
        self.experts = nn.ModuleList(MLP(input_dim, list(units), dropout=dropout) for _ in range(n))
        self.output_dim = self.experts[0].output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([expert(x) for expert in self.experts], dim=1)


def mix(gate_logits: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """Softmax-gated sum of expert outputs: gate_logits [B, n], experts [B, n, d] -> [B, d]."""
    return (torch.softmax(gate_logits, dim=-1).unsqueeze(-1) * experts).sum(dim=1)


def towers(input_dim: int, num_scenarios: int, units: list[int], dropout: float = 0.0) -> nn.ModuleList:
    """One MLP tower ending in a single logit per scenario."""
    return nn.ModuleList(MLP(input_dim, list(units), output_dim=1, dropout=dropout) for _ in range(num_scenarios))


class Backbone(nn.Module):
    """A multi-scenario network: ``forward(x [B, input_dim], scenario [B]) -> logit [B]``.

    Subclasses take ``(input_dim, num_scenarios, **hyper-parameters)``.
    """

    def __init__(self, input_dim: int, num_scenarios: int):
        super().__init__()
        self.input_dim = input_dim
        self.num_scenarios = num_scenarios


class Enhancement(nn.Module):
    """What sits between the embeddings and the backbone.

    Subclasses take ``(vocab_sizes, embedding_dim, num_scenarios, **hyper-parameters)``, set
    ``output_dim`` (the backbone's input width) and implement
    ``forward(emb [B, F, D], batch, scenario [B], backbone) -> logit [B]``.
    """

    output_dim: int

    def __init__(self, vocab_sizes: dict[str, int], embedding_dim: int, num_scenarios: int):
        super().__init__()
        self.input_dim = len(vocab_sizes) * embedding_dim
        self.num_scenarios = num_scenarios


class Plain(Enhancement):
    """No enhancement: the backbone reads the concatenated field embeddings."""

    def __init__(self, vocab_sizes: dict[str, int], embedding_dim: int, num_scenarios: int):
        super().__init__(vocab_sizes, embedding_dim, num_scenarios)
        self.output_dim = self.input_dim

    def forward(self, emb, batch, scenario, backbone):
        return backbone(emb.flatten(1), scenario)
