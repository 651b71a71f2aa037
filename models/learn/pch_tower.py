"""LEARN's preference-comprehension (PCH) tower and the twin-tower model built from it.

The PCH tower reads a user's history as a sequence of item *input vectors* (LEARN: the frozen LLM's
content embeddings; the ID baseline: learned ID embeddings): adaptor in (Linear input_dim ->
model_dim) plus learned positions, a pre-norm Transformer encoder with CAUSAL attention, adaptor out
(Linear model_dim -> output_dim), L2-normalised. Position t only sees positions <= t, so the output
at the last real position is a user embedding that never looks past the history it summarises.
Sequences are right-padded with item index 0; the causal mask alone keeps real positions from
attending to padding (padding always comes after them), so no key-padding mask is needed and an
all-padding row cannot produce NaN.

:class:`TwinTower` pairs the user tower with an item tower chosen by ``variant`` (the paper's
three item towers; (ours) where the paper leaves details open):

1. ``shared`` (the paper's adopted variant): the item tower IS the user tower (same weights). In
   training it reads the user's target sequence causally, so the embedding of target j may use the
   targets before it; an item on its own (export, retrieval, ranking) is a length-1 sequence, i.e.
   exactly what the first target position sees.
2. ``single``: self-attention on single items: a separate tower of the same shape reads every item
   alone (no context in training either).
3. ``content``: the item embedding is the raw content embedding itself (L2-normalised); the user
   tower's adaptor out maps back to the content width so the two live in one space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.learn.infonce import info_nce

VARIANTS = {1: "shared", 2: "single", 3: "content"}


class PCHTower(nn.Module):
    """Causal Transformer: inputs [B, L, input_dim] -> L2-normalised outputs [B, L, output_dim]."""

    def __init__(
        self,
        input_dim: int,
        model_dim: int = 128,
        output_dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        dropout: float = 0.1,
        max_len: int = 64,
    ):
        super().__init__()
        self.max_len = max_len
        self.adaptor_in = nn.Linear(input_dim, model_dim)
        self.position = nn.Embedding(max_len, model_dim)
        layer = nn.TransformerEncoderLayer(
            model_dim, num_heads, 4 * model_dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(model_dim), enable_nested_tensor=False
        )
        self.adaptor_out = nn.Linear(model_dim, output_dim)
        nn.init.normal_(self.position.weight, std=0.02)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        length = inputs.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds the tower's max_len {self.max_len}")
        positions = torch.arange(length, device=inputs.device)
        x = self.adaptor_in(inputs) + self.position(positions)
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=inputs.device, dtype=x.dtype)
        x = self.encoder(x, mask=causal, is_causal=True)
        return F.normalize(self.adaptor_out(x), dim=-1)


def last_real(outputs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The output at each row's last non-padding position ([B, L, D] -> [B, D]); zeros for empty rows."""
    lengths = (ids != 0).sum(dim=1)
    picked = outputs[torch.arange(len(ids), device=ids.device), (lengths - 1).clamp(min=0)]
    return picked * (lengths > 0).unsqueeze(-1).to(picked.dtype)


class TwinTower(nn.Module):
    """User tower over history item inputs, item tower per ``variant``; trained with InfoNCE.

    ``item_inputs`` maps item indices (0 = padding) to input vectors: a frozen table of content
    embeddings for LEARN (:class:`LearnTower`), a learned table for the ID baseline. ``forward``
    takes ``{"history": [B, H], "targets": [B, T]}`` item indices (right-padded with 0) and returns
    ``{"user": [B, D], "items": [B, T, D], "loss": InfoNCE}``; an optional ``batch["log_q"]`` [B, T]
    applies the logQ correction (:mod:`models.learn.infonce`).
    """

    def __init__(
        self,
        item_inputs: nn.Embedding,
        variant: int = 1,
        model_dim: int = 128,
        output_dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        dropout: float = 0.1,
        max_len: int = 64,
        temperature: float = 0.05,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)} ({VARIANTS}), got {variant!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.variant = variant
        self.temperature = temperature
        self.item_inputs = item_inputs
        input_dim = item_inputs.embedding_dim
        if variant == 3:
            output_dim = input_dim  # the user must land in the content space
        shape = dict(
            input_dim=input_dim,
            model_dim=model_dim,
            output_dim=output_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            dropout=dropout,
            max_len=max_len,
        )
        self.user_tower = PCHTower(**shape)
        self.item_tower = PCHTower(**shape) if variant == 2 else None
        self.output_dim = output_dim

    def user_embedding(self, history: torch.Tensor) -> torch.Tensor:
        """[B, H] item indices (right-padded) -> [B, D]; an empty history gives the zero vector."""
        return last_real(self.user_tower(self.item_inputs(history)), history)

    def item_embedding(self, items: torch.Tensor) -> torch.Tensor:
        """[N] item indices -> [N, D], each item on its own (what export, retrieval and ranking use)."""
        return self._encode_targets(items.unsqueeze(1)).squeeze(1)

    def _encode_targets(self, targets: torch.Tensor) -> torch.Tensor:
        inputs = self.item_inputs(targets)
        if self.variant == 1:
            return self.user_tower(inputs)  # shared weights, causal over the target sequence
        if self.variant == 2:
            batch, length, dim = inputs.shape
            return self.item_tower(inputs.reshape(batch * length, 1, dim)).reshape(batch, length, -1)
        return F.normalize(inputs, dim=-1)

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(user [B, D], target items [B, T, D]) of ``{"history": [B, H], "targets": [B, T]}``."""
        return self.user_embedding(batch["history"]), self._encode_targets(batch["targets"])

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        user, items = self.encode(batch)
        loss = info_nce(user, items, batch["targets"], self.temperature, batch.get("log_q"))
        return {"user": user, "items": items, "loss": loss}


class LearnTower(TwinTower):
    """LEARN: the twin tower over the frozen LLM's item content embeddings.

    ``content`` is [num_items + 1, content_dim] with row 0 the padding item (zeros); every item,
    seen in training or not, has its row, which is why cold items still get an embedding.
    """

    def __init__(
        self,
        content: torch.Tensor,
        variant: int = 1,
        model_dim: int = 128,
        output_dim: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        dropout: float = 0.1,
        max_len: int = 64,
        temperature: float = 0.05,
    ):
        table = nn.Embedding.from_pretrained(content.float(), freeze=True, padding_idx=0)
        super().__init__(table, variant, model_dim, output_dim, num_layers, num_heads, dropout, max_len, temperature)
        # how to rebuild it (models.learn.train_tower.load_tower): the table's shape; its values are weights
        self.build_config = {
            "name": "learn_tower",
            "content_shape": list(content.shape),
            "hparams": dict(
                variant=variant,
                model_dim=model_dim,
                output_dim=output_dim,
                num_layers=num_layers,
                num_heads=num_heads,
                dropout=dropout,
                max_len=max_len,
                temperature=temperature,
            ),
        }
