"""Listwise metrics from the rank of each list's one relevant item (HR, NDCG at several cut-offs, MRR)."""

from __future__ import annotations

import numpy as np

from models.learn.retrieval import recall_ndcg

CUTOFFS = (1, 5, 10, 20)


def target_ranks(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """0-based rank of ``scores[i, target[i]]`` in row i (higher score first); a tie goes to the item
    earlier in the list, which is shuffled, so ties break at random. ``target[i] < 0``: the relevant
    item is not in the list, rank +inf (a miss at every cut-off)."""
    scores = np.asarray(scores, dtype=np.float64)
    target = np.asarray(target, dtype=np.int64)
    ranks = np.full(len(target), np.inf)
    inside = np.flatnonzero(target >= 0)
    own = scores[inside, target[inside]][:, None]
    before = np.arange(scores.shape[1])[None, :] < target[inside][:, None]
    rows = scores[inside]
    ranks[inside] = (rows > own).sum(1) + ((rows == own) & before).sum(1)
    return ranks


def rank_metrics(ranks: np.ndarray, cutoffs: tuple[int, ...] = CUTOFFS) -> dict[str, float]:
    """HR@k and NDCG@k for each cut-off, and MRR (means over lists); ``lists``: how many."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {"lists": int(ranks.size)}
    for k in cutoffs:
        figures = recall_ndcg(ranks, k)
        out[f"hr@{k}"] = round(figures[f"recall@{k}"], 6)
        out[f"ndcg@{k}"] = round(figures[f"ndcg@{k}"], 6)
    out["mrr"] = round(float(np.mean(1.0 / (ranks + 1.0))) if ranks.size else float("nan"), 6)
    return out
