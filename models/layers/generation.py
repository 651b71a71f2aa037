"""FGCNN's feature generation: convolutions over the field axis recombined into new fields.

Stage k convolves the [B, C, H, D] map along the field axis (kernel (h_k, 1), same padding), applies
tanh and max-pools along fields (ceil mode, so short field lists never shrink to zero); a dense
recombination layer turns the pooled maps into ``recombined_channels[k] * H_k`` new D-dim fields.
All stages' new fields are concatenated: [B, F, D] -> [B, num_new_fields, D].
"""

from __future__ import annotations

import math

import torch
from torch import nn


class FeatureGeneration(nn.Module):
    def __init__(
        self,
        num_fields: int,
        embedding_dim: int,
        channels: list[int],
        kernel_heights: list[int],
        pooling_sizes: list[int],
        recombined_channels: list[int],
    ):
        super().__init__()
        if not len(channels) == len(kernel_heights) == len(pooling_sizes) == len(recombined_channels):
            raise ValueError("channels, kernel_heights, pooling_sizes and recombined_channels need equal lengths")
        self.convs, self.recombine = nn.ModuleList(), nn.ModuleList()
        self.new_fields: list[int] = []
        height, in_channels = num_fields, 1
        for out_channels, kernel, pool, recombined in zip(channels, kernel_heights, pooling_sizes, recombined_channels):
            self.convs.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, (kernel, 1), padding="same"),
                    nn.Tanh(),
                    nn.MaxPool2d((pool, 1), ceil_mode=True),
                )
            )
            height = math.ceil(height / pool)
            self.recombine.append(
                nn.Sequential(
                    nn.Linear(out_channels * height * embedding_dim, recombined * height * embedding_dim),
                    nn.Tanh(),
                )
            )
            self.new_fields.append(recombined * height)
            in_channels = out_channels
        self.num_new_fields = sum(self.new_fields)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        batch, _, dim = emb.shape
        x, generated = emb.unsqueeze(1), []
        for conv, recombine, fields in zip(self.convs, self.recombine, self.new_fields):
            x = conv(x)
            generated.append(recombine(x.flatten(1)).view(batch, fields, dim))
        return torch.cat(generated, dim=1)
