"""Batches of similar-length token sequences, capped by padded tokens: what a forward pass costs.

A batch of right-padded rows costs (rows x its longest row) tokens of compute and memory. Sorting by
length keeps the padding small; capping the padded tokens (rather than the row count) lets many short
texts share a pass and keeps a batch of long ones within memory. Used by the hidden-state passes
(``hidden_states.batch_tokens``) and PALR's verbalizer (``palr.batch_tokens``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence


def token_batches(
    lengths: Sequence[int],
    batch_tokens: int,
    max_rows: int | None = None,
    tiebreak: Callable[[int], Hashable] | None = None,
) -> list[list[int]]:
    """Indices ``0..n-1``, longest first (equal lengths by ``tiebreak(i)``, else by index), in batches of
    at most ``batch_tokens`` padded tokens and ``max_rows`` rows; a row longer than the budget is a batch
    of its own. The longest batch comes first, so a budget too large for the device fails at once."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], tiebreak(i) if tiebreak else i))
    out: list[list[int]] = []
    for i in order:
        last = out[-1] if out else None
        if last and (len(last) + 1) * lengths[last[0]] <= batch_tokens and (max_rows is None or len(last) < max_rows):
            last.append(i)
        else:
            out.append([i])
    return out
