"""Passage negatives: each training question paired with paragraphs that do not answer it.

Why it is built this way: docs/design.md (squadkit/train/negatives.py).
"""

from __future__ import annotations

import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import SquadkitError

NEGATIVE_RULE = "bm25-top2n-sample;skip-gold;skip-answer-text;fill-same-article;one-window-closest"
EXTRA_CANDIDATES = 10  # BM25 hits fetched beyond 2N, to survive the answer-text filter


@dataclass
class NegativeDraw:
    """For each question (in the order given), the indices of its negative paragraphs."""

    paragraphs: list[str]  # the distinct paragraphs (contexts), in first-seen order
    negatives: list[list[int]]  # per question: indices into ``paragraphs``, best BM25 rank first
    stats: dict = field(default_factory=dict)


def answer_texts(example) -> list[str]:
    """The gold answers' texts, lower-cased: a paragraph holding one of them may answer ``example``."""
    return [a.text.lower() for a in getattr(example, "answers", []) if a.text.strip()]


def check_enough_paragraphs(n_paragraphs: int, n: int, source: str) -> None:
    """Refuse a file too small to draw ``n`` negatives per question from (one line)."""
    if n_paragraphs < n + 1:
        raise SquadkitError(f"{source}: --passage-negatives {n} needs at least {n + 1} distinct paragraphs to draw "
                            f"from, the file has {n_paragraphs}", param="passage_negatives")


def _bm25_candidates(paragraphs: Sequence[str], questions: Sequence[str], depth: int) -> list[list[int]]:
    """For each question, paragraph indices in BM25 order (squadkit.retrieval, a throwaway index)."""
    from ..retrieval import Document, Index, IndexSettings, index_documents, search

    out: list[list[int]] = []
    with tempfile.TemporaryDirectory(prefix="squadkit-negatives-") as tmp:
        path = Path(tmp) / "paragraphs.sqlite"
        docs = [Document(f"p{i}", text) for i, text in enumerate(paragraphs)]
        # one passage per paragraph: passages as long as the longest paragraph (in words)
        longest = max(8, max(len(p.split()) for p in paragraphs) * 4)
        index_documents(docs, path, IndexSettings(max_tokens=longest, overlap=0), rebuild=True)
        with Index(path) as index:
            for q in questions:
                try:
                    hits = search(index, q, min(depth, len(paragraphs)))
                except SquadkitError:  # a question with no searchable word
                    hits = []
                ranked = []
                for h in hits:
                    i = int(h.document[1:])
                    if i not in ranked:
                        ranked.append(i)
                out.append(ranked)
    return out


def draw_negatives(examples: Sequence, n: int, seed: int, source: str = "training data") -> NegativeDraw:
    """``n`` negative paragraphs per question of ``examples`` (see the module docstring)."""
    position: dict[str, int] = {}
    paragraphs: list[str] = []
    by_article: dict[str, list[int]] = {}
    for ex in examples:
        if ex.context not in position:
            position[ex.context] = len(paragraphs)
            paragraphs.append(ex.context)
            by_article.setdefault(str(getattr(ex, "title", "")), []).append(position[ex.context])
    check_enough_paragraphs(len(paragraphs), n, source)
    lowered = [p.lower() for p in paragraphs]
    ranked = _bm25_candidates(paragraphs, [ex.question for ex in examples], 2 * n + EXTRA_CANDIDATES)
    negatives, short, dropped, from_bm25 = [], 0, 0, 0
    for ex, bm25 in zip(examples, ranked):
        gold = position[ex.context]
        answers = answer_texts(ex)

        def usable(i: int) -> bool:
            return i != gold and not any(a in lowered[i] for a in answers)

        rng = np.random.default_rng([seed, zlib.crc32(str(ex.id).encode())])
        pool = [i for i in bm25 if usable(i)]
        dropped += sum(1 for i in bm25 if i != gold and not usable(i))
        pool = pool[: 2 * n]
        from_bm25 += min(n, len(pool))
        if len(pool) < n:  # same article first, then anything, each in a seeded order
            for group in (by_article.get(str(getattr(ex, "title", "")), []), range(len(paragraphs))):
                extra = [i for i in rng.permutation(np.asarray(list(group), dtype=np.int64)).tolist()
                         if usable(i) and i not in pool]
                pool += extra[: n - len(pool)]
                if len(pool) >= n:
                    break
        chosen = sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False).tolist()) if pool else []
        picked = [pool[c] for c in chosen]
        short += len(picked) < n
        negatives.append(picked)
    stats = {"rule": NEGATIVE_RULE, "per_question": n, "paragraphs": len(paragraphs),
             "negatives": sum(len(x) for x in negatives), "from_bm25": from_bm25,
             "questions_short_of_negatives": short, "candidates_dropped_for_answer_text": dropped}
    return NegativeDraw(paragraphs, negatives, stats)
