"""CTR metrics: AUC, LogLoss, RelaImpr and the long-tail segment AUCs of ClickPrompt's Table 6.

All functions take plain arrays (numpy, lists, pandas); none needs torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

EPS = 1e-7
SEGMENTS = {  # name -> (long-tail user?, long-tail item?)
    "lt_user&lt_item": (True, True),
    "head_user&lt_item": (False, True),
    "lt_user&head_item": (True, False),
    "head_user&head_item": (False, False),
}
SEGMENT_TITLES = {  # SEGMENTS' names for tables and figures, in the paper's Table 6 order
    "lt_user&lt_item": "LT user & LT item",
    "head_user&lt_item": "head user & LT item",
    "lt_user&head_item": "LT user & head item",
    "head_user&head_item": "head user & head item",
}


def auc(y_true, y_score) -> float:
    """Area under the ROC curve; NaN when ``y_true`` holds a single class (AUC is undefined)."""
    y_true = np.asarray(y_true)
    if y_true.size == 0 or np.unique(y_true).size < 2:
        return float("nan")
    return float(roc_auc_score(y_true, np.asarray(y_score, dtype=np.float64)))


def logloss(y_true, y_prob, eps: float = EPS) -> float:
    """Mean binary cross-entropy, probabilities clipped to [eps, 1 - eps]."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(y_prob, dtype=np.float64), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def relaimpr(auc_model: float, auc_base: float) -> float:
    """Relative improvement as in ClickPrompt's tables: (AUC_model - AUC_base) / AUC_base (a fraction)."""
    return (auc_model - auc_base) / auc_base


def longtail_mask(train_counts: Mapping, entities, share: float = 0.2) -> np.ndarray:
    """True for each of ``entities`` that is long-tail.

    Long-tail = the least frequent entities whose training interactions together are at most
    ``share`` of all training interactions. The cut is a count threshold (every entity with a count
    <= t, t the largest such that those entities hold <= share of interactions), so entities with
    equal counts are always on the same side. Entities absent from ``train_counts`` (never seen in
    training) are long-tail.
    """
    counts = pd.Series(dict(train_counts.items()), dtype="int64")
    head = counts.index[counts > _longtail_threshold(counts.to_numpy(), share)]
    return ~pd.Index(pd.Series(entities, dtype=object)).isin(head)


def _longtail_threshold(counts: np.ndarray, share: float) -> float:
    """Largest count t such that entities with count <= t hold at most ``share`` of the total (-inf: none)."""
    values, per_value = np.unique(counts, return_counts=True)
    cumulative = np.cumsum(values * per_value)  # interactions held by entities with count <= value
    within = values[cumulative <= share * counts.sum()]
    return float(within[-1]) if within.size else float("-inf")


def segment_aucs(y_true, y_score, longtail_user, longtail_item) -> dict[str, dict[str, float]]:
    """AUC and row count per (long-tail user?) x (long-tail item?) segment, keyed as in ``SEGMENTS``."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)
    user, item = np.asarray(longtail_user, dtype=bool), np.asarray(longtail_item, dtype=bool)
    result = {}
    for name, (lt_user, lt_item) in SEGMENTS.items():
        rows = (user == lt_user) & (item == lt_item)
        result[name] = {"auc": auc(y_true[rows], y_score[rows]), "n": int(rows.sum())}
    return result


def _groups(y_true, y_score, groups):
    """(labels, scores) per group, in first-appearance order."""
    frame = pd.DataFrame({"y": np.asarray(y_true), "p": np.asarray(y_score, dtype=np.float64), "g": np.asarray(groups)})
    return [(part["y"].to_numpy(), part["p"].to_numpy()) for _, part in frame.groupby("g", sort=False)]


def grouped_auc(y_true, y_score, groups) -> float:
    """Mean AUC over the groups (users) holding both labels, each group counted once (the MIND-style
    "AUC per impression" of news recommendation); NaN when no group has both labels.

    All groups at once by the rank-sum (Mann-Whitney) form: AUC = (R+ - n+(n+ + 1)/2) / (n+ n-), R+ the
    sum of the positives' ranks within the group, tied scores sharing their mean rank (as roc_auc_score).
    """
    y = np.asarray(y_true, dtype=np.float64)
    score = np.asarray(y_score, dtype=np.float64)
    codes = pd.factorize(np.asarray(groups))[0]
    order = np.lexsort((score, codes))
    g, s, y = codes[order], score[order], y[order]
    sizes = np.bincount(g)
    position = np.arange(len(g)) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # 0-based rank in the group
    starts = np.r_[True, (g[1:] != g[:-1]) | (s[1:] != s[:-1])]  # a new run of tied scores
    run = np.cumsum(starts) - 1
    rank = position[starts][run] + (np.bincount(run)[run] - 1) / 2 + 1
    positives = np.bincount(g, weights=y)
    negatives = sizes - positives
    both = (positives > 0) & (negatives > 0)
    if not both.any():
        return float("nan")
    rank_sum = np.bincount(g, weights=rank * y)
    values = (rank_sum[both] - positives[both] * (positives[both] + 1) / 2) / (positives[both] * negatives[both])
    return float(values.mean())


def grouped_ndcg(y_true, y_score, groups, k: int = 10) -> float:
    """Mean nDCG@k over the groups with at least one positive: each group's rows ranked by score,
    binary gains, ties broken by row order."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for y, p in _groups(y_true, y_score, groups):
        if y.sum() == 0:
            continue
        ranked = y[np.argsort(-p, kind="stable")][:k]
        ideal = np.sort(y)[::-1][:k]
        values.append(float((ranked * discounts[: len(ranked)]).sum() / (ideal * discounts[: len(ideal)]).sum()))
    return float(np.mean(values)) if values else float("nan")
