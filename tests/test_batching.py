"""Token-capped batches: padded cost within the budget, longest first, deterministic."""

from __future__ import annotations

import sys

from models.batching import token_batches


def padded(batch: list[int], lengths: list[int]) -> int:
    return len(batch) * max(lengths[i] for i in batch)


def test_batches_stay_within_the_padded_token_budget_longest_first():
    lengths = [5, 40, 3, 3, 12, 40, 7, 1, 100, 9]
    batches = token_batches(lengths, 48)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every index once
    assert batches[0] == [8]  # longer than the budget: a batch of its own, and first
    assert all(padded(b, lengths) <= 48 for b in batches[1:])
    longest = [max(lengths[i] for i in b) for b in batches]
    assert longest == sorted(longest, reverse=True)
    assert batches == [[8], [1], [5], [4, 9, 6, 0], [2, 3, 7]]  # 4 x 12 = 48 fits; equal lengths by index


def test_row_cap_and_tiebreak():
    lengths = [2] * 7
    assert token_batches(lengths, 1000, max_rows=3) == [[0, 1, 2], [3, 4, 5], [6]]
    keys = ["g", "f", "e", "d", "c", "b", "a"]
    assert token_batches(lengths, 1000, max_rows=3, tiebreak=keys.__getitem__) == [[6, 5, 4], [3, 2, 1], [0]]


def test_without_a_token_budget_the_row_cap_gives_fixed_size_batches():
    lengths = [9, 1, 5, 5, 3, 8, 2]
    assert token_batches(lengths, sys.maxsize, max_rows=3) == [[0, 5, 2], [3, 4, 6], [1]]
