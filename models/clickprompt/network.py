"""The ClickPrompt network: a zoo CTR model, its prompt generator and a PLM encoder, wired together.

``forward(batch)`` runs the CTR model on the ID fields, turns its ``q`` into prompts and runs the PLM
on the sample's text (``batch["input_ids"]``, ``batch["attention_mask"]``, see :func:`tokenize`)
with the prompts fused in (:mod:`models.clickprompt.fusion`). It returns the CTR model's outputs
plus the text hidden states; the PA-MLM objective and the finetuning model put their heads on top.
``num_prompts=0`` leaves the generator out: the PLM then reads the text alone (the "w/o prompt"
ablation).

Checkpoint layout (:meth:`ClickPromptNet.save` / :meth:`ClickPromptNet.load`), chosen so each part is
usable on its own:

    ctr/                 an ordinary zoo checkpoint (models.trainer.save_model): the w/o-PLM starting point
    plm/                 a Hugging Face folder (save_pretrained) of the encoder, plus its tokenizer
    generator.safetensors
    clickprompt.json     num_prompts, mode
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from llm4ctr.atomic import write_text
from llm4ctr.errors import DataError
from models.checkpoint import save_weights
from models.clickprompt.fusion import prompted_states, takes_prefix
from models.clickprompt.prompt_generator import MODES, PromptGenerator
from models.ctr import CTRModel
from models.trainer import load_model, save_model

CTR_DIR = "ctr"
PLM_DIR = "plm"
GENERATOR = "generator.safetensors"
CONFIG = "clickprompt.json"
TEXT_KEYS = ("input_ids", "attention_mask")


def tokenize(texts: Sequence[str], tokenizer, max_length: int) -> dict[str, np.ndarray]:
    """Token ids and attention mask (int64, [N, T]) of ``texts``, padded to the longest (<= max_length)."""
    encoded = tokenizer(list(texts), padding="longest", truncation=True, max_length=max_length, return_tensors="np")
    return {key: encoded[key].astype(np.int64) for key in TEXT_KEYS}


def trim_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the columns that are padding in every row (texts are right-padded): less work per batch."""
    length = max(int(attention_mask.sum(dim=1).max()), 1)
    return input_ids[:, :length], attention_mask[:, :length]


class ClickPromptNet(nn.Module):
    """CTR model -> prompts -> prompted PLM; see the module docstring."""

    def __init__(self, ctr: CTRModel, encoder: nn.Module, num_prompts: int = 5, mode: str = "layerwise"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"prompt mode must be one of {MODES}, got {mode!r}")
        if num_prompts < 0:
            raise ValueError(f"num_prompts must be >= 0, got {num_prompts}")
        if num_prompts and mode == "layerwise" and not takes_prefix(encoder):
            raise ValueError(
                f"{type(encoder).__name__} does not accept past_key_values, so it cannot take "
                "layer-wise prefix prompts; use prompt mode 'input'"
            )
        config = encoder.config
        self.ctr = ctr
        self.encoder = encoder
        self.num_prompts = num_prompts
        self.mode = mode
        self.generator = (
            PromptGenerator(
                ctr.q_dim, config.hidden_size, config.num_hidden_layers, config.num_attention_heads, num_prompts, mode
            )
            if num_prompts
            else None
        )

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    def forward(self, batch: dict[str, torch.Tensor], input_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """CTR outputs (``logit``, ``q``) plus ``hidden`` [B, T, H] and the matching ``attention_mask``.

        ``input_ids`` replaces ``batch["input_ids"]`` (PA-MLM passes the masked ids).
        """
        ids, mask = trim_padding(batch["input_ids"] if input_ids is None else input_ids, batch["attention_mask"])
        out = self.ctr(batch)
        prompts = self.generator(out["q"]) if self.generator is not None else None
        hidden = prompted_states(self.encoder, ids, mask, prompts)
        return {**out, "hidden": hidden, "attention_mask": mask}

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory: str | Path, tokenizer=None) -> None:
        """Write the checkpoint layout of the module docstring into ``directory``."""
        directory = Path(directory)
        save_model(self.ctr, directory / CTR_DIR)
        self.encoder.save_pretrained(directory / PLM_DIR)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory / PLM_DIR)
        if self.generator is not None:
            save_weights(self.generator, directory / GENERATOR)
        write_text(directory / CONFIG, json.dumps({"num_prompts": self.num_prompts, "mode": self.mode}, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> ClickPromptNet:
        """Rebuild a network saved by :meth:`save` (training mode, on the CPU)."""
        from transformers import AutoModel

        directory = Path(directory)
        try:
            config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{directory}: not a ClickPrompt checkpoint ({CONFIG} missing)") from None
        ctr = load_model(directory / CTR_DIR).train()
        encoder = AutoModel.from_pretrained(directory / PLM_DIR)
        net = cls(ctr, encoder, config["num_prompts"], config["mode"])
        if net.generator is not None:
            net.generator.load_state_dict(load_file(directory / GENERATOR))
        return net.train()
