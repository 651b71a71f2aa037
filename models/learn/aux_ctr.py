"""LEARN in the ranker: an auxiliary CTR task whose middle vector becomes a feature of a zoo CTR model.

The part of LEARN that shipped: next to the ranking model, an auxiliary task reads
[user_emb, item_emb] (the twin tower's outputs) through an MLP and predicts the click; the output of
its middle layer, together with user_emb and item_emb, is fed to the ranking model as extra dense
features. Both are trained jointly: the ranker's BCE plus ``aux_weight`` x the auxiliary BCE.

(ours) ``detach_middle``: the ranker reads the middle vector without back-propagating into the
auxiliary MLP, so the middle vector stays what the auxiliary task learned (a feature, not extra
ranker capacity). The ranker receives everything through the zoo's ``batch["dense"]`` field.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.checkpoint import build_record, restore
from models.ctr import build_model
from models.layers import MLP

MODEL_NAME = "learn_ranker"


class AuxCTR(nn.Module):
    """[B, input_dim] -> {"middle": [B, hidden_units[-1]], "logit": [B]} via MLP(hidden) then MLP(head) -> 1."""

    def __init__(
        self,
        input_dim: int,
        hidden_units: tuple[int, ...] = (128, 32),
        head_units: tuple[int, ...] = (16,),
        dropout: float = 0.0,
    ):
        super().__init__()
        if not hidden_units:
            raise ValueError("AuxCTR needs at least one hidden layer (its last one is the middle vector)")
        self.bottom = MLP(input_dim, list(hidden_units), dropout=dropout)
        self.head = MLP(self.bottom.output_dim, list(head_units), output_dim=1, dropout=dropout)
        self.middle_dim = self.bottom.output_dim

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        middle = self.bottom(x)
        return {"middle": middle, "logit": self.head(middle).squeeze(-1)}


class LearnRanker(nn.Module):
    """A zoo CTR model (``backbone``, e.g. dcnv2) with dense input [user_emb, item_emb, aux middle].

    ``batch["dense"]`` holds [user_emb, item_emb] ([B, user_dim + item_dim]); the output is the
    backbone's ``{"logit", "q"}`` plus ``aux_logit`` and, in training with labels, ``aux_loss``
    (which :class:`models.trainer.Trainer` adds to the ranker's BCE).
    """

    def __init__(
        self,
        vocab_sizes: dict[str, int],
        backbone: str = "dcnv2",
        backbone_hparams: dict | None = None,
        learn_dim: int = 128,
        aux_hidden_units: tuple[int, ...] = (128, 32),
        aux_head_units: tuple[int, ...] = (16,),
        aux_weight: float = 1.0,
        detach_middle: bool = True,
    ):
        super().__init__()
        self.aux = AuxCTR(learn_dim, aux_hidden_units, aux_head_units)
        self.backbone = build_model(
            backbone, vocab_sizes, dense_dim=learn_dim + self.aux.middle_dim, **(backbone_hparams or {})
        )
        self.aux_weight = aux_weight
        self.detach_middle = detach_middle
        hparams = dict(
            backbone=backbone,
            backbone_hparams=backbone_hparams or {},
            learn_dim=learn_dim,
            aux_hidden_units=aux_hidden_units,
            aux_head_units=aux_head_units,
            aux_weight=aux_weight,
            detach_middle=detach_middle,
        )
        # what Trainer checkpoints record (model.json) and compare on resume; load_ranker rebuilds from it
        self.build_config = build_record(MODEL_NAME, vocab_sizes, hparams)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        learn = batch["dense"].float()
        aux = self.aux(learn)
        middle = aux["middle"].detach() if self.detach_middle else aux["middle"]
        out = dict(self.backbone({**batch, "dense": torch.cat([learn, middle], dim=-1)}))
        out["aux_logit"] = aux["logit"]
        if self.training and "label" in batch:
            out["aux_loss"] = self.aux_weight * F.binary_cross_entropy_with_logits(aux["logit"], batch["label"])
        return out


def load_ranker(directory: str | Path, map_location: str = "cpu") -> LearnRanker:
    """Rebuild a :class:`LearnRanker` from a Trainer checkpoint folder (model.json + model.safetensors)."""
    return restore(
        directory, lambda rec: LearnRanker(rec["vocab_sizes"], **rec["hparams"]), map_location, expect_name=MODEL_NAME
    )
