"""LoRA finetuning of the causal LM on verbalizer examples (peft).

An example is a prompt and the index of its right answer among the verbalizer's tokens (Yes/No for
pointwise, the list's label letters for listwise). The loss is the cross-entropy of the logits of
those tokens after the prompt: the model learns exactly the quantity it is later scored by. Only the
low-rank adapters train; the base weights stay frozen.

Under torchrun every rank draws the same global batches; each runs its strided share, and the adapters'
gradients are averaged over the ranks with each share's loss scaled to its part of the batch mean, so
a step is the one-process step (to float tolerance; LoRA dropout masks are drawn per rank).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llm4ctr.settings import Settings
from models.distributed import Processes
from models.palr.causal_lm import CausalLM
from models.palr.prompts import Prompt
from models.palr.verbalizer import last_logits


@dataclass(frozen=True)
class LoraConfig(Settings):
    """Adapter shape and training budget (params.yaml ``palr.finetune.lora``); ``steps`` = max(min_steps,
    epochs x batches per epoch)."""

    SECTION = "palr.finetune.lora"

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lr: float = 5e-4
    weight_decay: float = 0.0
    epochs: int = 2
    min_steps: int = 20
    batch_size: int = 8
    max_grad_norm: float = 1.0

    def __post_init__(self):
        self.require_positive("r", "batch_size")

    def steps(self, examples: int) -> int:
        return max(self.min_steps, self.epochs * math.ceil(examples / self.batch_size))


def attach(lm: CausalLM, config: LoraConfig) -> None:
    """Wrap ``lm.model`` with fresh LoRA adapters (base weights frozen)."""
    from peft import LoraConfig as PeftConfig
    from peft import get_peft_model

    peft_config = PeftConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    lm.model = get_peft_model(lm.model, peft_config)


def finetune(
    lm: CausalLM,
    examples: Sequence[tuple[Prompt, int]],
    token_ids: Sequence[int],
    config: LoraConfig,
    seed: int,
    log=None,
    processes: Processes | None = None,
) -> list[float]:
    """Attach adapters to ``lm`` and train them on ``examples``; the model is left in eval mode with the
    adapters active. Returns the loss of every step (the global batch's mean). Batches are drawn from
    seeded epochs' permutations; ``processes`` share each batch (default: torchrun's environment)."""
    if not examples:
        raise ValueError("no finetuning examples")
    processes = processes or Processes.from_env()
    processes.check_batch(config.batch_size, f"{LoraConfig.SECTION}.batch_size")
    torch.manual_seed(seed)
    attach(lm, config)
    params = [p for p in lm.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(seed)
    order: list[int] = []
    losses = []
    steps = config.steps(len(examples))
    lm.model.train()
    for step in range(steps):
        while len(order) < config.batch_size:
            order += rng.permutation(len(examples)).tolist()
        batch, order = order[: config.batch_size], order[config.batch_size :]
        share = processes.part(batch)
        logits = last_logits(lm, [examples[i][0].ids for i in share], token_ids)
        target = torch.as_tensor([examples[i][1] for i in share], device=logits.device)
        loss = torch.nn.functional.cross_entropy(logits, target, reduction="sum") / len(batch)
        optimizer.zero_grad(set_to_none=True)
        (loss * processes.world).backward()  # averaged over the ranks: the gradient of the batch mean
        processes.average_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        losses.append(processes.total(loss.item(), logits.device))
        if log is not None and (step + 1) % 10 == 0:
            log(f"step {step + 1}/{steps}: loss {np.mean(losses[-10:]):.4f}")
    lm.model.eval()
    return losses


def adapter_state(lm: CausalLM) -> dict[str, torch.Tensor]:
    """The trained adapter weights (what a finetuned variant saves)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(lm.model).items()}
