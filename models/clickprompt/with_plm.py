"""Finetuning WITH the PLM: the CTR model and the prompted PLM predict together.

y_ctr = the CTR model's own output over q (its ``logit``), y_plm = MLP(pool(text hidden states)),
prediction sigmoid(alpha * y_ctr + (1 - alpha) * y_plm) with alpha learnable, initialised at 0.5
(as the official code). Pooling: ``cls`` (first token) or ``mean`` (over the attention mask).

Learning rates: the CTR side (CTR model, generator, PLM head, alpha) learns at the trainer's rate, the
PLM encoder at ``plm_lr``; ``plm_lr = 0`` freezes the encoder (its weights take no gradient, but the
gradient still flows through it into the prompts and so into the CTR model). :meth:`param_groups`
gives an optimizer the two rates.
"""

from __future__ import annotations

import torch
from torch import nn

from models.clickprompt.network import ClickPromptNet
from models.layers import MLP

POOLINGS = ("cls", "mean")


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, T, H] -> [B, H]: the first token's state, or the mean over the real tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


class ClickPromptWithPLM(nn.Module):
    """``forward(batch)`` -> ``logit`` (the fused one), ``q``, and the two parts ``ctr_logit``, ``plm_logit``."""

    def __init__(
        self,
        net: ClickPromptNet,
        pooling: str = "cls",
        head_units: tuple[int, ...] = (128,),
        alpha: float = 0.5,
        plm_lr: float = 0.0,
        dropout: float = 0.0,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if plm_lr < 0:
            raise ValueError(f"plm_lr must be >= 0, got {plm_lr}")
        self.net = net
        self.pooling = pooling
        self.plm_lr = plm_lr
        self.head = MLP(net.hidden_size, list(head_units), output_dim=1, dropout=dropout)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        net.encoder.requires_grad_(plm_lr > 0)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.net(batch)
        y_plm = self.head(pool(out["hidden"], out["attention_mask"], self.pooling)).squeeze(-1)
        logit = self.alpha * out["logit"] + (1 - self.alpha) * y_plm
        return {"logit": logit, "q": out["q"], "ctr_logit": out["logit"], "plm_logit": y_plm}

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups: everything at ``lr`` except the PLM encoder at ``plm_lr`` (absent when frozen)."""
        encoder = {id(p) for p in self.net.encoder.parameters()}
        groups = [{"params": [p for p in self.parameters() if id(p) not in encoder and p.requires_grad], "lr": lr}]
        if self.plm_lr > 0:
            groups.append({"params": list(self.net.encoder.parameters()), "lr": self.plm_lr})
        return groups
