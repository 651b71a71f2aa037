"""PA-MLM, ClickPrompt's pre-training task: masked language modelling helped by the CTR model's prompts.

Masking follows BERT: each maskable token is picked with probability 15%; a picked token becomes the
mask token (80%), a random token (10%) or stays unchanged (10%), and only picked tokens carry a loss.
Special tokens ([CLS], [SEP], padding, ...) are never picked, and prompts are not tokens of the
sequence at all (the fusion returns text positions only), so they carry no loss either.

The vocabulary projection (30k words x hidden) dominates the cost of an MLM step, so the head runs
on the picked positions only, never on the whole sequence.

The MLM head comes from ``AutoModelForMaskedLM``; a checkpoint without one (all-MiniLM-L6-v2) gets
its decoder tied to the word embeddings and a fresh transform and bias, which PA-MLM trains. The
names of such freshly initialised parameters are kept so that they can learn at the rate of the
other new parts (CTR model, generator) rather than at the PLM's small rate.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.clickprompt.network import ClickPromptNet, trim_padding

IGNORE = -100  # label of a position without MLM loss


def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    probability: float = 0.15,
    mask_share: float = 0.8,
    random_share: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: (model inputs, labels), labels = original id where picked, else ``IGNORE``."""
    pick = (torch.rand(input_ids.shape, generator=generator, device=input_ids.device) < probability) & maskable
    labels = torch.where(pick, input_ids, torch.full_like(input_ids, IGNORE))
    how = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=input_ids.device)
    inputs = torch.where(pick & (how < mask_share), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(pick & (how >= mask_share) & (how < mask_share + random_share), random_ids, inputs)
    return inputs, labels


def split_masked_lm(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(base encoder, MLM head) of an ``AutoModelForMaskedLM`` model; the head is its one other child."""
    base = model.base_model
    heads = [module for module in model.children() if module is not base]
    if len(heads) != 1:
        raise ValueError(f"{type(model).__name__}: expected one MLM head next to the encoder, found {len(heads)}")
    return base, heads[0]


def load_masked_lm(name_or_path: str) -> tuple[nn.Module, nn.Module, list[str]]:
    """(encoder, MLM head, names of head parameters initialised fresh because the checkpoint lacks them)."""
    from transformers import AutoModelForMaskedLM

    model, info = AutoModelForMaskedLM.from_pretrained(name_or_path, output_loading_info=True)
    encoder, head = split_masked_lm(model)
    head_prefix = next(name for name, module in model.named_children() if module is head) + "."
    head_names = {name for name, _ in head.named_parameters()}
    fresh = sorted(k[len(head_prefix) :] for k in info["missing_keys"] if k.startswith(head_prefix))
    return encoder, head, [name for name in fresh if name in head_names]


class PAMLM(nn.Module):
    """The PA-MLM objective over a :class:`ClickPromptNet`: ``forward(batch)`` -> loss and accuracy."""

    def __init__(
        self,
        net: ClickPromptNet,
        head: nn.Module,
        mask_token_id: int,
        special_token_ids: list[int],
        vocab_size: int,
        probability: float = 0.15,
        fresh_head_params: tuple[str, ...] = (),
    ):
        super().__init__()
        self.net = net
        self.head = head
        self.mask_token_id = mask_token_id
        self.vocab_size = vocab_size
        self.probability = probability
        self.fresh_head_params = tuple(fresh_head_params)
        self.register_buffer(
            "special_ids", torch.tensor(sorted(set(special_token_ids)), dtype=torch.long), persistent=False
        )

    def mask(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``batch`` with its padding trimmed, ``input_ids`` masked and the MLM ``labels`` added."""
        ids, mask = trim_padding(batch["input_ids"], batch["attention_mask"])
        maskable = mask.bool() & ~torch.isin(ids, self.special_ids)
        inputs, labels = mask_tokens(
            ids, maskable, self.mask_token_id, self.vocab_size, self.probability, generator=generator
        )
        return {**batch, "input_ids": inputs, "attention_mask": mask, "labels": labels}

    def forward(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None, per: float | None = None
    ) -> dict:
        """Loss and accuracy over the masked tokens of ``batch`` (masked here with ``generator`` unless it
        holds ``labels`` from :meth:`mask`). ``per``: divide the summed loss by this instead of the batch's
        masked count (a process's share of a global batch: the global count over the processes)."""
        batch = dict(batch if "labels" in batch else self.mask(batch, generator))
        labels = batch.pop("labels")
        # a process's share of a global batch may be shorter than the batch: trim it as the net will
        batch["input_ids"], batch["attention_mask"] = trim_padding(batch["input_ids"], batch["attention_mask"])
        labels = labels[:, : batch["input_ids"].shape[1]]
        hidden = self.net(batch)["hidden"]
        picked = labels != IGNORE
        # the head runs even on no picked position (a tiny batch, a process's share): every part keeps a gradient
        logits = self.head(hidden[picked]).float()  # [M, vocab]: the head on picked positions only
        target = labels[picked]
        masked = int(picked.sum())
        summed = F.cross_entropy(logits, target, reduction="sum") + hidden.sum() * 0.0
        correct = int((logits.argmax(dim=-1) == target).sum())
        return {
            "loss": summed / max(per if per is not None else masked, 1),
            "loss_sum": float(summed.detach()),
            "accuracy": torch.tensor(correct / masked if masked else float("nan")),
            "correct": correct,
            "masked": masked,
        }

    def param_groups(self, new_lr: float, plm_lr: float, weight_decay: float) -> list[dict]:
        """AdamW groups: pretrained PLM weights at ``plm_lr``; CTR model, generator and fresh head parts at
        ``new_lr``. Biases and LayerNorm weights take no weight decay (the BERT recipe)."""
        fresh = {id(p) for name, p in self.head.named_parameters() if name in self.fresh_head_params}
        new = {id(p) for p in self.net.ctr.parameters()} | fresh
        if self.net.generator is not None:
            new |= {id(p) for p in self.net.generator.parameters()}
        groups: dict[tuple[bool, bool], list] = {(n, d): [] for n in (True, False) for d in (True, False)}
        seen = set()
        for name, param in self.named_parameters():  # tied weights (decoder = word embeddings) come once
            if id(param) in seen or not param.requires_grad:
                continue
            seen.add(id(param))
            decay = param.dim() > 1 and "LayerNorm" not in name
            groups[(id(param) in new, decay)].append(param)
        return [
            {"params": params, "lr": new_lr if is_new else plm_lr, "weight_decay": weight_decay if decay else 0.0}
            for (is_new, decay), params in groups.items()
            if params
        ]
