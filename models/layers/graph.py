"""FiGNN's graph layers: fields are nodes of a fully connected graph with learned edge weights.

The edge weights come from attention over node pairs; node states are propagated with per-node
input/output transforms and updated by a GRU cell (or residually); a per-node attentional read-out
turns the final states into a logit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GraphLayer(nn.Module):
    """One propagation step: a_i = W_in_i * sum_j A_ij (W_out_j h_j) + b, [B, F, D] -> [B, F, D]."""

    def __init__(self, num_fields: int, embedding_dim: int):
        super().__init__()
        self.w_out = nn.Parameter(torch.empty(num_fields, embedding_dim, embedding_dim))
        self.w_in = nn.Parameter(torch.empty(num_fields, embedding_dim, embedding_dim))
        self.bias = nn.Parameter(torch.zeros(embedding_dim))
        nn.init.xavier_normal_(self.w_out)
        nn.init.xavier_normal_(self.w_in)

    def forward(self, graph: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        messages = torch.einsum("fij,bfj->bfi", self.w_out, h)
        aggregated = torch.bmm(graph, messages)
        return torch.einsum("fij,bfj->bfi", self.w_in, aggregated) + self.bias


class FiGNNBlock(nn.Module):
    """Attention-weighted field graph + ``num_layers`` propagation steps: [B, F, D] -> [B, F, D]."""

    def __init__(
        self,
        num_fields: int,
        embedding_dim: int,
        num_layers: int = 3,
        use_gru: bool = True,
        use_residual: bool = True,
        reuse_graph_layer: bool = False,
    ):
        super().__init__()
        self.num_layers = num_layers
        # attention score of edge (i, j) = w_src . h_i + w_dst . h_j, i.e. a linear map of [h_i; h_j]
        self.edge = nn.Linear(embedding_dim, 2, bias=False)
        self.layers = nn.ModuleList(
            GraphLayer(num_fields, embedding_dim) for _ in range(1 if reuse_graph_layer else num_layers)
        )
        self.gru = nn.GRUCell(embedding_dim, embedding_dim) if use_gru else None
        self.use_residual = use_residual
        self.register_buffer("self_loops", torch.eye(num_fields, dtype=torch.bool), persistent=False)

    def attention_graph(self, h: torch.Tensor) -> torch.Tensor:
        """Row-normalised edge weights [B, F, F] without self loops."""
        scores = self.edge(h)  # [B, F, 2]
        scores = F.leaky_relu(scores[..., :1] + scores[..., 1].unsqueeze(1))
        return torch.softmax(scores.masked_fill(self.self_loops, float("-inf")), dim=-1)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        graph = self.attention_graph(emb)
        h = emb
        for step in range(self.num_layers):
            a = self.layers[step % len(self.layers)](graph, h)
            if self.gru is not None:
                h = self.gru(a.reshape(-1, a.shape[-1]), h.reshape(-1, h.shape[-1])).view_as(h)
            else:
                h = a + h
            if self.use_residual:
                h = h + emb
        return h


class AttentionalReadout(nn.Module):
    """logit = sum_i sigmoid-weight_i * score_i: per-node scores weighted by a gate over all nodes."""

    def __init__(self, num_fields: int, embedding_dim: int):
        super().__init__()
        self.score = nn.Linear(embedding_dim, 1, bias=False)
        self.gate = nn.Sequential(nn.Linear(num_fields * embedding_dim, num_fields, bias=False), nn.Sigmoid())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (self.score(h).squeeze(-1) * self.gate(h.flatten(1))).sum(dim=-1)
