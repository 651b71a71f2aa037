"""Multi-head self-attention over fields: AutoInt's interaction layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MultiHeadSelfAttention(nn.Module):
    """Fields attend to fields: [B, F, input_dim] -> [B, F, attention_dim].

    ``attention_dim`` is the total width over all heads (each head gets attention_dim // num_heads).
    With ``use_residual`` the input, linearly projected, is added before the ReLU (AutoInt);
    ``use_scale`` divides scores by sqrt(head dim) (the original AutoInt does not).
    """

    def __init__(
        self,
        input_dim: int,
        attention_dim: int,
        num_heads: int = 2,
        use_residual: bool = True,
        use_scale: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        if attention_dim % num_heads:
            raise ValueError(f"attention_dim {attention_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.qkv = nn.Linear(input_dim, 3 * attention_dim, bias=False)
        self.residual = nn.Linear(input_dim, attention_dim, bias=False) if use_residual else None
        self.scale = None if use_scale else 1.0  # None: SDPA's default 1/sqrt(head_dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, fields, _ = x.shape
        q, k, v = self.qkv(x).view(batch, fields, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, scale=self.scale
        )
        out = out.transpose(1, 2).reshape(batch, fields, -1)
        if self.residual is not None:
            out = out + self.residual(x)
        return torch.relu(out)
