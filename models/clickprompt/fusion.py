"""Prompt fusion: run a Hugging Face encoder so that its text tokens attend to soft prompts.

Two modes, chosen by the shape of ``prompts`` (see :mod:`models.clickprompt.prompt_generator`):

* layer-wise (``[B, L, 2, heads, K, head_dim]``, the official implementation's choice): in every
  layer l the K prompts of that layer are extra keys and values (prefix tuning). They go in through
  a fresh ``DynamicCache`` filled with ``update(k, v, layer)`` -- the cache object is extended in
  place by the forward pass, so one is built per call. Two details keep the text part exact:
  the text keeps its own position ids (the embeddings would otherwise shift them by K, the cache
  length) and the attention mask covers prefix + text. Needs an encoder whose ``forward`` takes
  ``past_key_values`` (BERT, RoBERTa, XLM-R, ELECTRA, ... in transformers 5.23; not MPNet).
* input layer only (``[B, K, H]``, the "w/o layer-wise" ablation): the K vectors are prepended to the
  word embeddings and flow through every layer like tokens. Works with any encoder (MPNet too).
  Prompts take the position id of the first text token; the text keeps its own.

In both modes only the text positions are returned (``[B, T, H]``), so nothing downstream -- pooling,
the MLM loss -- ever sees a prompt position. ``prompts=None`` is the plain encoder.
"""

from __future__ import annotations

import inspect
import sys

import torch
from torch import nn
from transformers import DynamicCache


def takes_prefix(encoder: nn.Module) -> bool:
    """Whether ``encoder.forward`` accepts ``past_key_values`` (needed by layer-wise prompts)."""
    return "past_key_values" in inspect.signature(encoder.forward).parameters


def text_position_ids(encoder: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """The position ids the encoder's embeddings would give ``input_ids`` without any prefix.

    RoBERTa/MPNet-style embeddings count from ``padding_idx + 1`` over non-padding tokens (their
    ``create_position_ids_from_input_ids``, a method or a module function); BERT-style use 0..T-1.
    """
    embeddings = getattr(encoder, "embeddings", None)
    padding_idx = getattr(embeddings, "padding_idx", None)
    make = getattr(embeddings, "create_position_ids_from_input_ids", None) or getattr(
        sys.modules[type(embeddings).__module__], "create_position_ids_from_input_ids", None
    )
    if make is not None and padding_idx is not None:
        return make(input_ids, padding_idx)
    batch, length = input_ids.shape
    return torch.arange(length, device=input_ids.device).expand(batch, length)


def prompted_states(
    encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompts: torch.Tensor | None = None
) -> torch.Tensor:
    """Last-layer hidden states of the text tokens, [B, T, H], with ``prompts`` fused in."""
    positions = text_position_ids(encoder, input_ids)
    if prompts is None:
        return encoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions).last_hidden_state
    batch = input_ids.shape[0]
    if prompts.dim() == 6:
        if not takes_prefix(encoder):
            raise ValueError(
                f"{type(encoder).__name__} does not accept past_key_values, so it cannot take "
                "layer-wise prefix prompts; use prompt mode 'input'"
            )
        num_prompts = prompts.shape[4]
        cache = DynamicCache()
        for layer in range(prompts.shape[1]):
            cache.update(prompts[:, layer, 0], prompts[:, layer, 1], layer)
        mask = torch.cat([attention_mask.new_ones(batch, num_prompts), attention_mask], dim=1)
        return encoder(
            input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=False
        ).last_hidden_state
    if prompts.dim() != 3:
        raise ValueError(f"prompts must be [B, L, 2, heads, K, head_dim] or [B, K, H], got {tuple(prompts.shape)}")
    num_prompts = prompts.shape[1]
    words = encoder.get_input_embeddings()(input_ids)
    embeds = torch.cat([prompts.to(words.dtype), words], dim=1)
    positions = torch.cat([positions[:, :1].expand(batch, num_prompts), positions], dim=1)
    mask = torch.cat([attention_mask.new_ones(batch, num_prompts), attention_mask], dim=1)
    hidden = encoder(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state
    return hidden[:, num_prompts:]
