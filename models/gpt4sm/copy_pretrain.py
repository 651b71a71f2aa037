"""EaaP's first phase: train only what c depends on to copy the teacher, over every text, no labels.

Every item text and every profile is a training example (the copy task needs no click); each epoch
visits them in a seeded order. The student's trainable layers and the copy MLP learn; everything
else in the model is left untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llm4ctr.errors import ParamsError
from llm4ctr.settings import Settings
from models.gpt4sm.model import GPT4SM


@dataclass
class CopyConfig(Settings):
    """The ``gpt4sm.pretrain`` section: epochs N_ep, learning rate, texts per step."""

    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 256
    seed: int = 2024

    SECTION = "gpt4sm.pretrain"

    def __post_init__(self):
        self.require_positive("epochs", "batch_size")
        if self.lr <= 0:
            raise ParamsError(f"{self.SECTION}.lr must be > 0, got {self.lr}")


def copy_pretrain(model: GPT4SM, texts: torch.Tensor, config: CopyConfig) -> list[float]:
    """Minimise ``model.copy_loss`` over ``texts`` for ``config.epochs``; the mean loss of each epoch."""
    state = model.copy_state()
    params = [p for name, p in model.named_parameters() if name in state and p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    losses = []
    for _ in range(config.epochs):
        order = texts[torch.randperm(len(texts), generator=generator)]
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            loss = model.copy_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(order))
    return [round(x, 6) for x in losses]
