"""The student: a small pretrained encoder whose frozen lower layers run once, whose top layers train.

The catalogue is small (ML-100K: 1,682 item texts and 943 profiles), so the frozen part of the encoder
is run once over every text (:func:`frozen_states`) and kept as a table of token states; a training
step then runs only the ``trainable_layers`` top layers, and only over the distinct texts of its batch.
With ``trainable_layers = 0`` the student's last-layer token states are fixed features and only the
poolers and heads on top learn (any Hugging Face encoder); with more, the top layers are copies of
the encoder's own (BERT-style encoders: ``model.encoder.layer``), initialised from its weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from llm4ctr.errors import ParamsError


def _layers(model: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ParamsError(
            f"{type(model).__name__} has no encoder.layer list: train its top layers only with a BERT-style "
            "encoder, or set gpt4sm.trainable_layers to 0"
        )
    return layers


@torch.inference_mode()
def frozen_states(
    model: nn.Module, tokenizer, texts: Sequence[str], trainable_layers: int, max_length: int, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, T, H] float32 states entering the first trainable layer, [N, T] bool mask) of ``texts``.

    Texts are encoded in length-sorted batches (little padding), then padded to the longest text.
    """
    depth = len(_layers(model)) if trainable_layers else 0
    if trainable_layers > depth and trainable_layers:
        raise ParamsError(f"gpt4sm.trainable_layers {trainable_layers} exceeds the student's {depth} layers")
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    width, hidden = max(lengths), model.config.hidden_size
    states = torch.zeros(len(texts), width, hidden)
    mask = torch.zeros(len(texts), width, dtype=torch.bool)
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    model.eval()
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [encoded["input_ids"][i] for i in rows]}, return_tensors="pt")
        out = model(**batch, output_hidden_states=bool(trainable_layers))
        layer = out.hidden_states[depth - trainable_layers] if trainable_layers else out.last_hidden_state
        length = layer.shape[1]
        states[rows, :length] = layer.float()
        mask[rows, :length] = batch["attention_mask"].bool()
    return states, mask


class Student(nn.Module):
    """``forward(texts)`` -> (token states [n, T, H], mask [n, T]) of the text indices ``texts``.

    ``states``/``mask`` (from :func:`frozen_states`) are non-persistent buffers: checkpoints hold only
    the trainable layers; the table is rebuilt from the texts when a model is loaded.
    """

    def __init__(self, states: torch.Tensor, mask: torch.Tensor, top_layers: Sequence[nn.Module] = (), config=None):
        super().__init__()
        self.register_buffer("states", states, persistent=False)
        self.register_buffer("mask", mask, persistent=False)
        self.register_buffer("lengths", mask.sum(dim=1), persistent=False)
        self.layers = nn.ModuleList(top_layers)
        self.config = config
        self.hidden_size = states.shape[-1]

    @classmethod
    def from_encoder(cls, model: nn.Module, states: torch.Tensor, mask: torch.Tensor, trainable_layers: int):
        """The student over :func:`frozen_states` of ``model``: its top ``trainable_layers`` layers on top."""
        top = list(_layers(model)[-trainable_layers:]) if trainable_layers else []
        for layer in top:
            layer.requires_grad_(True)
        return cls(states, mask, top, model.config)

    def forward(self, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.mask[texts]
        length = max(int(mask.sum(dim=1).max()), 1)
        states, mask = self.states[texts, :length], mask[:, :length]
        if len(self.layers):
            from transformers.masking_utils import create_bidirectional_mask

            attention = create_bidirectional_mask(config=self.config, inputs_embeds=states, attention_mask=mask)
            for layer in self.layers:
                out = layer(states, attention_mask=attention)
                states = out[0] if isinstance(out, tuple) else out
        return states, mask
