"""Retrieval metrics for the twin towers: Recall@K and NDCG@K of held-out interactions.

A query is one held-out interaction (user, target item) with the user's embedding computed from the
training history before it (:func:`models.learn.sequences.histories_before`). Every item is a
candidate except padding (0) and the items the user already interacted with in training (``seen``),
which a recommender would not show again. With one target per query Recall@K is the hit rate and
NDCG@K = 1 / log2(rank + 2) when the target ranks within the top K (rank 0 = first), else 0.
Ties are broken in the target's favour (only strictly higher scores rank above it).
"""

from __future__ import annotations

import numpy as np
import torch


def target_ranks(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    targets: np.ndarray,
    seen: torch.Tensor,
    query_users: np.ndarray,
    chunk: int = 2048,
) -> np.ndarray:
    """0-based rank of each query's target among the candidates.

    user_emb [Q, D] (one row per query), item_emb [N + 1, D] (row 0 = padding), targets [Q] item
    indices, seen [U, N + 1] bool (items each user saw in training), query_users [Q] rows of ``seen``.
    """
    targets_t = torch.as_tensor(targets, dtype=torch.long)
    users_t = torch.as_tensor(query_users, dtype=torch.long)
    ranks = []
    for start in range(0, len(targets_t), chunk):
        scores = user_emb[start : start + chunk].float() @ item_emb.float().T
        rows = torch.arange(len(scores))
        target_score = scores[rows, targets_t[start : start + chunk]].unsqueeze(1)
        blocked = seen[users_t[start : start + chunk]].clone()
        blocked[:, 0] = True
        blocked[rows, targets_t[start : start + chunk]] = True  # the target does not outrank itself
        ranks.append(((scores > target_score) & ~blocked).sum(dim=1))
    return torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)


def recall_ndcg(ranks: np.ndarray, k: int = 10) -> dict[str, float]:
    """Recall@k and NDCG@k (means over queries) from 0-based target ranks."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        return {f"recall@{k}": float("nan"), f"ndcg@{k}": float("nan"), "queries": 0}
    hit = ranks < k
    ndcg = np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    return {f"recall@{k}": float(hit.mean()), f"ndcg@{k}": float(ndcg.mean()), "queries": int(ranks.size)}
