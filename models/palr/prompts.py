"""Prompts as token ids, and fitting a history into the model's context.

A :class:`Prompt` is a shared ``prefix`` (the user's part) and a ``rest`` (the candidate's question,
the chat frame's tail and the answer lead); the model reads ``prefix + rest`` and the verbalizer
reads the logits after its last token. A history that does not fit is cut oldest-first
(:func:`fit_history`), and the prompt records how many items it lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # candidate labels (A)...(Z): at most 26 candidates per list


@dataclass(frozen=True)
class Prompt:
    """Token ids of one prompt: ``prefix`` (shareable) then ``rest``; ``dropped``: history items cut to fit."""

    prefix: list[int]
    rest: list[int]
    dropped: int = 0

    @property
    def ids(self) -> list[int]:
        return self.prefix + self.rest

    def __len__(self) -> int:
        return len(self.prefix) + len(self.rest)


def fit_history(history: Sequence[str], length: Callable[[list[str]], int], limit: int) -> tuple[list[str], int]:
    """The newest part of ``history`` (oldest first) whose prompt is at most ``limit`` tokens long, and
    how many items were dropped; ``length(items)`` measures the prompt built from ``items``. ValueError
    when even the empty history does not fit (the rest of the prompt alone is too long)."""
    kept = list(history)
    while length(kept) > limit:
        if not kept:
            raise ValueError(f"a prompt without any history is {length([])} tokens, over the limit of {limit}")
        kept = kept[max(1, (len(kept) + 7) // 8) :]  # an eighth (at least one) of the oldest at a time
    while len(kept) < len(history):  # put back the newest dropped items one by one while they fit
        trial = list(history[len(history) - len(kept) - 1 :])
        if length(trial) > limit:
            break
        kept = trial
    return kept, len(history) - len(kept)


def labelled(titles: Sequence[str], line: str = "({letter}) {title}") -> str:
    """The candidate block: one ``line`` per title, labelled A, B, C, ... in list order."""
    if len(titles) > len(LETTERS):
        raise ValueError(f"{len(titles)} candidates, but labels exist for at most {len(LETTERS)}")
    return "\n".join(line.format(letter=LETTERS[i], title=t) for i, t in enumerate(titles))
