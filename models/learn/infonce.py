"""InfoNCE with in-batch negatives, as LEARN trains its twin tower.

User b's positives are its own target items; every other target slot of the batch is a candidate
negative, EXCEPT slots holding an item that is one of b's own targets: another user's copy of the
same item (a false negative) and b's other positives are masked out. Padding slots (item 0) are
neither positives nor negatives. For each positive (b, p):

    loss(b, p) = -log( exp(s_bp / tau) / (exp(s_bp / tau) + sum_{j in neg(b)} exp(s_bj / tau)) )

with s the dot product of the (L2-normalised) embeddings; the loss is the mean over all positives.

(ours, optional) ``log_q``: the sampling log-probability of each target slot's item. In-batch
negatives are drawn in proportion to item frequency, so plain in-batch softmax learns roughly
log p(i | u) - log p(i) and ranks popular items too low; subtracting log q_j from every logit
(the "logQ correction" of sampled softmax, Yi et al. 2019) makes the learned score estimate
log p(i | u) again. Scores at inference stay the plain dot products.
"""

from __future__ import annotations

import torch


def info_nce(
    user: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """user [B, D], items [B, T, D] (embeddings of ``targets``), targets [B, T] item ids (0 = padding),
    log_q [B, T] (optional) the log sampling probability of each target slot's item."""
    batch, slots = targets.shape
    flat_items = items.reshape(batch * slots, -1)
    flat_ids = targets.reshape(-1)
    logits = user @ flat_items.T / temperature  # [B, B*T]
    if log_q is not None:
        logits = logits - log_q.reshape(1, -1)
    own = (targets.unsqueeze(2) == flat_ids.view(1, 1, -1)) & (targets.unsqueeze(2) != 0)
    negative = (flat_ids != 0).unsqueeze(0) & ~own.any(dim=1)  # [B, B*T]
    negative_lse = torch.logsumexp(logits.masked_fill(~negative, float("-inf")), dim=1)  # -inf: no negatives
    positive = logits.view(batch, batch, slots)[torch.arange(batch), torch.arange(batch)]  # [B, T]: own slots
    per_positive = torch.logaddexp(positive, negative_lse.unsqueeze(1)) - positive
    real = targets != 0
    if not real.any():
        raise ValueError("info_nce: the batch holds no target items")
    return per_positive[real].mean()
