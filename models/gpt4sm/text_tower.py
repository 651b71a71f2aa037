"""One text's vector under each GPT4SM strategy: where the teacher's embedding enters the student.

From the student's token states e_1..e_T of a text (and its unit teacher vector u):

- ``[c; p]`` (vanilla, EaaR, EaaP): p = AddAttn(e), c = normalize(MLP(e_1)) in the teacher's space;
  EaaR and EaaP pull c toward u (model.py), vanilla leaves c free;
- ``feature`` (EaaF): h = AddAttn(LayerNorm([e_i ; P(u)])), P an MLP into the student's width, so the
  teacher vector is needed for every text at inference;
- ``copy_feature`` (EaaP copy-as-feature): the same with P(c), c copied from the teacher in
  pre-training, so no teacher call at inference.

The pooled vector then goes through Linear -> Tanh -> Linear to ``dim`` (the public code's news
vector), the width the user pooler and the relevance head read.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.gpt4sm.additive_attention import AdditiveAttention
from models.layers import MLP

FUSIONS = ("copy", "feature", "copy_feature")


class TextTower(nn.Module):
    """``forward(tokens, mask, teacher)`` -> (h [n, dim], c [n, teacher_dim] or None)."""

    def __init__(
        self, hidden: int, teacher_dim: int, dim: int, attention_dim: int, copy_hidden: int, fusion: str = "copy"
    ):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.fusion = fusion
        self.copy = MLP(hidden, [copy_hidden], output_dim=teacher_dim) if fusion != "feature" else None
        if fusion == "copy":
            width = teacher_dim + hidden
            self.pool = AdditiveAttention(hidden, attention_dim)
        else:
            width = 2 * hidden
            self.project = MLP(teacher_dim, [copy_hidden], output_dim=hidden)
            self.norm = nn.LayerNorm(width)
            self.pool = AdditiveAttention(width, attention_dim)
        self.out = nn.Sequential(nn.Linear(width, width // 2), nn.Tanh(), nn.Linear(width // 2, dim))

    def copied(self, tokens: torch.Tensor) -> torch.Tensor:
        """c: the unit vector the first token's state maps to in the teacher's space."""
        return F.normalize(self.copy(tokens[:, 0]), dim=-1)

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, teacher: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        c = self.copied(tokens) if self.copy is not None else None
        if self.fusion == "copy":
            h = torch.cat([c, self.pool(tokens, mask)], dim=-1)
        else:
            side = self.project(teacher if self.fusion == "feature" else c)
            joined = self.norm(torch.cat([tokens, side.unsqueeze(1).expand(-1, tokens.shape[1], -1)], dim=-1))
            h = self.pool(joined, mask)
        return self.out(h), c
