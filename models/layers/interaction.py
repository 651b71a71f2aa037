"""Explicit feature-interaction layers over field embeddings [B, F, D].

FM's bi-interaction, IPNN's pairwise inner products, DCN's and DCNv2's cross networks and
xDeepFM's compressed interaction network (CIN).
"""

from __future__ import annotations

import torch
from torch import nn


class FMInteraction(nn.Module):
    """Bi-interaction pooling: 0.5 * ((sum_i v_i)^2 - sum_i v_i^2), [B, F, D] -> [B, D].

    Its sum over D is the classic FM second-order term; the vector itself is the representation.
    """

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return 0.5 * (emb.sum(dim=1).pow(2) - emb.pow(2).sum(dim=1))


class InnerProduct(nn.Module):
    """All pairwise inner products <v_i, v_j>, i < j: [B, F, D] -> [B, F(F-1)/2] (IPNN)."""

    def __init__(self, num_fields: int):
        super().__init__()
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.output_dim = num_fields * (num_fields - 1) // 2

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return (emb[:, self.rows] * emb[:, self.cols]).sum(dim=-1)


class CrossNet(nn.Module):
    """DCN cross network: x_{l+1} = x_0 * (x_l . w_l) + b_l + x_l, on the flat input [B, d]."""

    def __init__(self, input_dim: int, num_layers: int):
        super().__init__()
        self.weights = nn.ModuleList(nn.Linear(input_dim, 1, bias=False) for _ in range(num_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(input_dim)) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(self.weights, self.biases):
            x = x0 * w(x) + b + x
        return x


class CrossNetV2(nn.Module):
    """DCNv2 full-rank cross network: x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, on [B, d]."""

    def __init__(self, input_dim: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class CIN(nn.Module):
    """Compressed interaction network (xDeepFM): vector-wise interactions of growing order.

    Layer k: Z = x_0 (outer, per embedding dim) x_{k-1} -> [B, F*H_{k-1}, D], compressed to H_k
    feature maps by a 1x1 convolution; every layer's maps are sum-pooled over D and concatenated,
    giving [B, sum(layer_units)].
    """

    def __init__(self, num_fields: int, layer_units: list[int]):
        super().__init__()
        convs, prev = [], num_fields
        for units in layer_units:
            convs.append(nn.Conv1d(num_fields * prev, units, kernel_size=1))
            prev = units
        self.convs = nn.ModuleList(convs)
        self.output_dim = sum(layer_units)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        batch, _, dim = x0.shape
        pooled, x = [], x0
        for conv in self.convs:
            z = torch.einsum("bfd,bhd->bfhd", x0, x).reshape(batch, -1, dim)
            x = conv(z)
            pooled.append(x.sum(dim=-1))
        return torch.cat(pooled, dim=-1)
