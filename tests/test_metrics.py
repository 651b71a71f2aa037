"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.metrics import auc, grouped_auc, grouped_ndcg, logloss, longtail_mask, relaimpr, segment_aucs


def test_auc_on_a_tiny_example():
    # positives 0.35, 0.8; negatives 0.1, 0.4: 3 of the 4 (pos, neg) pairs are ordered right
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([1, 0], [0.9, 0.1]) == 1.0


def test_auc_is_nan_for_a_single_class():
    assert math.isnan(auc([1, 1, 1], [0.2, 0.5, 0.9]))
    assert math.isnan(auc([], []))


def test_logloss_hand_value_and_clipping():
    expected = -(math.log(0.9) + math.log(0.8)) / 2
    assert logloss([1, 0], [0.9, 0.2]) == pytest.approx(expected)
    assert math.isfinite(logloss([1, 0], [0.0, 1.0]))  # clipped, not inf
    assert logloss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-7))


def test_relaimpr_matches_clickprompt_table():
    assert round(100 * relaimpr(0.8499, 0.8371), 2) == 1.53
    assert relaimpr(0.8371, 0.8371) == 0.0


def test_longtail_mask_on_a_hand_made_table():
    counts = {"a": 1, "b": 1, "c": 2, "d": 6, "e": 10}  # 20 interactions; bottom 20% = 4
    mask = longtail_mask(counts, ["a", "b", "c", "d", "e", "never-seen"], share=0.2)
    assert mask.tolist() == [True, True, True, False, False, True]
    # share 0.1 (2 interactions): a and b hold exactly 2
    assert longtail_mask(counts, ["a", "b", "c"], share=0.1).tolist() == [True, True, False]
    # pandas value_counts works the same way
    assert longtail_mask(pd.Series(counts), ["c", "d"], share=0.2).tolist() == [True, False]


def test_longtail_mask_keeps_ties_together():
    counts = {"a": 2, "b": 2, "c": 16}  # 20 interactions
    assert longtail_mask(counts, ["a", "b", "c"], share=0.2).tolist() == [True, True, False]
    # 3 interactions allowed: a alone would fit, but b has the same count, so neither is long-tail
    assert longtail_mask(counts, ["a", "b", "c", "x"], share=0.15).tolist() == [False, False, False, True]


def test_segment_aucs_split_rows_into_the_2x2_table():
    y = np.array([0, 1, 0, 1, 0, 1, 1, 1])
    p = np.array([0.2, 0.8, 0.9, 0.1, 0.3, 0.6, 0.5, 0.7])
    lt_user = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    lt_item = np.array([1, 1, 0, 0, 1, 1, 0, 0], dtype=bool)
    result = segment_aucs(y, p, lt_user, lt_item)
    assert result["lt_user&lt_item"] == {"auc": 1.0, "n": 2}
    assert result["lt_user&head_item"] == {"auc": 0.0, "n": 2}
    assert result["head_user&lt_item"] == {"auc": 1.0, "n": 2}
    assert result["head_user&head_item"]["n"] == 2 and math.isnan(result["head_user&head_item"]["auc"])


def test_grouped_auc_is_the_mean_of_each_groups_auc_ties_included():
    """Groups with one label are left out; tied scores count one half, as roc_auc_score."""
    y = [1, 0, 0, 1, 1, 0, 1, 1]
    p = [0.9, 0.4, 0.4, 0.4, 0.2, 0.8, 0.5, 0.6]
    users = ["a", "a", "a", "a", "b", "b", "c", "c"]
    # a: positives 0.9 and 0.4 vs negatives 0.4, 0.4 -> (1 + 1 + 0.5 + 0.5) / 4 = 0.75; b: 0.0; c: one label
    assert grouped_auc(y, p, users) == pytest.approx((0.75 + 0.0) / 2)
    rng = np.random.default_rng(3)
    y, p, users = rng.integers(0, 2, 500), rng.integers(0, 5, 500) / 4, rng.integers(0, 30, 500)
    frame = pd.DataFrame({"y": y, "p": p, "u": users})
    expected = [auc(g["y"], g["p"]) for _, g in frame.groupby("u") if g["y"].nunique() == 2]
    assert grouped_auc(y, p, users) == pytest.approx(np.mean(expected), abs=1e-12)
    assert math.isnan(grouped_auc([1, 1, 0], [0.1, 0.2, 0.3], ["a", "a", "b"]))


def test_grouped_ndcg_on_a_hand_made_ranking():
    """User a ranks its one positive second: 1/log2(3); user b's positive first: 1; c has no positive."""
    y = [0, 1, 1, 0, 0]
    p = [0.9, 0.5, 0.7, 0.1, 0.3]
    users = ["a", "a", "b", "b", "c"]
    assert grouped_ndcg(y, p, users, k=10) == pytest.approx((1 / math.log2(3) + 1.0) / 2)
    assert grouped_ndcg(y, p, users, k=1) == pytest.approx(0.5)
