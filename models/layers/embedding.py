"""Per-field embeddings: the input of every CTR model.

Each categorical field gets its own table; a multi-valued field ([B, L] ids, 0 = padding) is
mean-pooled over its non-padding entries; an optional dense vector ``batch["dense"]`` ([B, dense_dim],
e.g. LEARN's user/item embeddings) is projected into one extra field. The output is [B, F, D] with
the fields in ``vocab_sizes`` order and the dense field last.
"""

from __future__ import annotations

import torch
from torch import nn

from models.features import PAD


class FeatureEmbedding(nn.Module):
    """Embed a batch dict into a [B, F, D] tensor (F = len(vocab_sizes) + (1 if dense_dim else 0))."""

    def __init__(self, vocab_sizes: dict[str, int], embedding_dim: int, dense_dim: int = 0, init_std: float = 1e-4):
        super().__init__()
        self.fields = list(vocab_sizes)
        self.tables = nn.ModuleDict(
            {name: nn.Embedding(size, embedding_dim, padding_idx=PAD) for name, size in vocab_sizes.items()}
        )
        self.dense = nn.Linear(dense_dim, embedding_dim) if dense_dim else None
        self.num_fields = len(self.fields) + (1 if dense_dim else 0)
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=init_std)
            with torch.no_grad():
                table.weight[PAD].zero_()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        embedded = [self._embed(self.tables[name], batch[name]) for name in self.fields]
        if self.dense is not None:
            embedded.append(self.dense(batch["dense"].float()))
        return torch.stack(embedded, dim=1)

    @staticmethod
    def _embed(table: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        """[B] ids -> [B, D]; [B, L] ids -> mean over the non-padding ids (all padding -> zeros).

        Lookups are index_select/index_add rather than ``table(ids)`` or ``embedding_bag``: their
        backward passes are 2-3x faster on CPU, which matters for the small CTR models. Single-valued
        fields never hold PAD, and multi-valued ones gather only real ids, so the PAD row gets no gradient.
        """
        weight = table.weight
        if ids.dim() == 1:
            return weight.index_select(0, ids)
        real = ids != PAD
        rows = torch.arange(len(ids), device=ids.device).unsqueeze(1).expand_as(ids)[real]
        summed = weight.new_zeros(len(ids), weight.shape[1]).index_add(0, rows, weight.index_select(0, ids[real]))
        return summed / real.sum(dim=1, keepdim=True).clamp(min=1)


class LinearTerm(nn.Module):
    """The first-order (logistic-regression) part: a scalar weight per feature value, summed + bias -> [B]."""

    def __init__(self, vocab_sizes: dict[str, int], dense_dim: int = 0):
        super().__init__()
        self.weights = FeatureEmbedding(vocab_sizes, 1, dense_dim)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.weights(batch).sum(dim=(1, 2)) + self.bias
