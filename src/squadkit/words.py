"""Whole-word answer spans: a span never starts or ends inside a word of its context.

A word is a maximal run of letters and digits (``str.isalnum``), so "880" inside "880s" widens to
"880s" and punctuation next to a word ("(1085)") is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WordBounds:
    """For every character of a context: whether it is a letter or digit, and the start and end
    (exclusive) of the word holding it (meaningless where it is not in a word)."""

    alnum: np.ndarray  # (n,) bool
    word_start: np.ndarray  # (n,) int64
    word_end: np.ndarray  # (n,) int64

    @classmethod
    def of(cls, context: str) -> "WordBounds":
        n = len(context)
        alnum = np.fromiter((c.isalnum() for c in context), dtype=bool, count=n)
        idx = np.arange(n, dtype=np.int64)
        before = np.concatenate(([False], alnum[:-1])) if n else alnum
        after = np.concatenate((alnum[1:], [False])) if n else alnum
        starts = np.where(alnum & ~before, idx, 0)
        ends = np.where(alnum & ~after, idx + 1, n)
        word_start = np.maximum.accumulate(starts) if n else idx
        word_end = np.minimum.accumulate(ends[::-1])[::-1] if n else idx
        return cls(alnum, word_start, word_end)

    def widen(self, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Character spans [start, end) widened to whole words; empty spans are left as they are."""
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        n = self.alnum.shape[0]
        if n == 0:
            return starts.copy(), ends.copy()
        nonempty = ends > starts
        s = np.clip(starts, 0, n - 1)
        cut_start = nonempty & (starts > 0) & (starts < n) & self.alnum[s] & self.alnum[np.maximum(s - 1, 0)]
        e = np.clip(ends, 1, n)
        cut_end = nonempty & (ends > 0) & (ends < n) & self.alnum[e - 1] & self.alnum[np.minimum(e, n - 1)]
        return (np.where(cut_start, self.word_start[s], starts),
                np.where(cut_end, self.word_end[e - 1], ends))


def inside_word(context: str, i: int) -> bool:
    """Whether the boundary before character ``i`` falls inside a word (a letter or digit on each side):
    where ``WordBounds.widen`` moves a span's start or end."""
    return 0 < i < len(context) and context[i - 1].isalnum() and context[i].isalnum()


def widen_to_words(context: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)`` of ``context`` widened so that it neither starts nor ends inside a word."""
    s, e = WordBounds.of(context).widen(np.array([start]), np.array([end]))
    return int(s[0]), int(e[0])
