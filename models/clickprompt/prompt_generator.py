"""ClickPrompt's prompt generator: a CTR model's representation ``q`` -> soft prompts for a PLM.

One 2-layer MLP with tanh (Linear(q_dim, H) -> Tanh -> Linear(H, out)), H the PLM hidden size, as in
the paper; like the official code it produces every prompt of every layer at once (the per-(l, k)
networks g_{l,k} of the paper share the hidden layer, which costs one matrix product instead of L*K).

Two shapes, matching the two fusion modes of :mod:`models.clickprompt.fusion`:

* ``layerwise``: per PLM layer l and prompt k a key AND a value vector (prefix tuning), returned as
  ``[B, L, 2, heads, K, head_dim]`` -- exactly what an attention layer's cache holds;
* ``input``: K prompt vectors inserted at the input layer only (the "w/o layer-wise" ablation),
  returned as ``[B, K, H]``.
"""

from __future__ import annotations

import torch
from torch import nn

from models.layers import MLP

MODES = ("layerwise", "input")


class PromptGenerator(nn.Module):
    """``q`` [B, q_dim] -> prompts (see the module docstring for the two shapes)."""

    def __init__(
        self, q_dim: int, hidden_size: int, num_layers: int, num_heads: int, num_prompts: int, mode: str = "layerwise"
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"prompt mode must be one of {MODES}, got {mode!r}")
        if num_prompts < 1:
            raise ValueError(
                f"num_prompts must be >= 1 (a model without prompts needs no generator), got {num_prompts}"
            )
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        self.mode = mode
        self.num_prompts = num_prompts
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.hidden_size = hidden_size
        per_prompt = num_layers * 2 * hidden_size if mode == "layerwise" else hidden_size
        self.net = MLP(q_dim, [hidden_size], output_dim=num_prompts * per_prompt, activation="tanh")

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        out = self.net(q)
        batch = q.shape[0]
        if self.mode == "input":
            return out.view(batch, self.num_prompts, self.hidden_size)
        out = out.view(batch, self.num_prompts, self.num_layers, 2, self.num_heads, self.head_dim)
        return out.permute(0, 2, 3, 4, 1, 5)  # [B, L, 2, heads, K, head_dim]
