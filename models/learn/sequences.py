"""User sequences for LEARN: training histories in time order, training windows and causal histories.

Only TRAINING-split interactions ever enter a sequence (the caller builds :class:`UserSequences` from
the training split alone); validation and test interactions are only ever the *targets* of
evaluation queries or the rows a ranker scores, never inputs the tower learned from or read.

* :func:`sample_windows`: the self-supervised training samples of an epoch. Each user's sequence is
  cut after its first item and at every ``target_len``-th position from a random offset (new each
  epoch): history = the up to ``history_len`` items before a cut, targets = the items up to the next
  cut (at most ``target_len``). A user of n items thus gives about n / target_len samples per epoch,
  and every item but the first is a target exactly once.
* :func:`histories_before`: for rows (user, timestamp), the user's last ``history_len`` training items
  strictly before that time: the user side of retrieval queries and of the ranker's features. No row
  ever sees its own or a later interaction.

Item indices start at 1; 0 is padding (sequences are right-padded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class UserSequences:
    """user -> item indices and timestamps of that user's training interactions, in time order."""

    items: dict[str, np.ndarray]
    times: dict[str, np.ndarray]

    @classmethod
    def build(cls, users, items, times) -> UserSequences:
        """From parallel arrays of training rows; ties in time keep the input order (stable sort)."""
        users = np.asarray(users, dtype=object)
        items, times = np.asarray(items, dtype=np.int64), np.asarray(times, dtype=np.int64)
        if (items < 1).any():
            raise ValueError("item indices must be >= 1 (0 is padding)")
        order = np.lexsort((np.arange(len(users)), times, users))  # by user, then time, then input order
        users, items, times = users[order], items[order], times[order]
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], dtype=int)
        bounds = np.r_[starts, len(users)]
        seq_items, seq_times = {}, {}
        for a, b in zip(bounds[:-1], bounds[1:]):
            seq_items[users[a]] = items[a:b]
            seq_times[users[a]] = times[a:b]
        return cls(seq_items, seq_times)


def _pad_rows(rows: list[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def sample_windows(
    seqs: UserSequences, history_len: int, target_len: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of (history [N, history_len], targets [N, target_len]) windows; users in sorted order."""
    histories, targets = [], []
    for user in sorted(seqs.items):
        seq = seqs.items[user]
        if len(seq) < 2:
            continue
        cuts = sorted({1, *range(int(rng.integers(1, target_len + 1)), len(seq), target_len)}) + [len(seq)]
        for cut, end in zip(cuts[:-1], cuts[1:]):
            histories.append(seq[max(0, cut - history_len) : cut])
            targets.append(seq[cut:end])
    return _pad_rows(histories, history_len), _pad_rows(targets, target_len)


def histories_before(seqs: UserSequences, users, times, history_len: int) -> np.ndarray:
    """[N, history_len]: each row's user's last training items strictly before the row's time."""
    times = np.asarray(times, dtype=np.int64)
    out = np.zeros((len(times), history_len), dtype=np.int64)
    groups = pd.Series(np.arange(len(times))).groupby(np.asarray(users, dtype=object)).indices
    for user, rows in groups.items():
        if user not in seqs.items:
            continue
        seq, seq_times = seqs.items[user], seqs.times[user]
        cuts = np.searchsorted(seq_times, times[rows], side="left")
        for row, cut in zip(rows, cuts):
            window = seq[max(0, cut - history_len) : cut]
            out[row, : len(window)] = window
    return out
