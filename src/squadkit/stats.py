"""Counts, length distributions and problems of a SQuAD file (``squadkit data stats``)."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .data import MAX_PROBLEMS_SHOWN, Problem, SquadDataset, iter_contexts
from .errors import SquadkitError, first_line

# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------


@dataclass
class LengthStats:
    count: int
    min: int
    mean: float
    median: float
    p95: float
    max: int

    @classmethod
    def of(cls, values: Sequence[int]) -> "LengthStats":
        if not values:
            return cls(0, 0, 0.0, 0.0, 0.0, 0)
        s = sorted(values)
        return cls(len(s), s[0], sum(s) / len(s), _percentile(s, 50), _percentile(s, 95), s[-1])

    def to_dict(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _percentile(sorted_values: Sequence[int], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


@dataclass
class DatasetStats:
    path: str | None
    format: str
    version: str | None
    articles: int
    paragraphs: int
    questions: int
    answerable: int
    unanswerable: int
    context_chars: LengthStats
    question_chars: LengthStats
    answer_chars: LengthStats
    tokenizer: str | None = None
    context_tokens: LengthStats | None = None
    question_tokens: LengthStats | None = None
    problem_counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self, max_problems: int = MAX_PROBLEMS_SHOWN) -> dict:
        return {
            "path": self.path,
            "format": self.format,
            "version": self.version,
            "articles": self.articles,
            "paragraphs": self.paragraphs,
            "questions": self.questions,
            "answerable": self.answerable,
            "unanswerable": self.unanswerable,
            "context_chars": self.context_chars.to_dict(),
            "question_chars": self.question_chars.to_dict(),
            "answer_chars": self.answer_chars.to_dict(),
            "tokenizer": self.tokenizer,
            "context_tokens": self.context_tokens.to_dict() if self.context_tokens else None,
            "question_tokens": self.question_tokens.to_dict() if self.question_tokens else None,
            "problem_counts": dict(self.problem_counts),
            "problems": [asdict(p) for p in self.problems[:max_problems]],
        }


def _load_tokenizer(name: str | os.PathLike):
    name = str(name)
    local = Path(name).expanduser()
    if not local.exists() and (os.path.isabs(name) or name.startswith((".", "~")) or os.sep + os.sep in name):
        raise SquadkitError(f"{name}: tokenizer folder not found")
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a dependency
        raise SquadkitError(f"--tokenizer needs transformers: {exc}") from None
    try:
        return AutoTokenizer.from_pretrained(str(local) if local.exists() else name)
    except (OSError, ValueError, KeyError) as exc:
        msg = first_line(exc)
        if len(msg) > 200:
            msg = msg[:200].rsplit(" ", 1)[0] + " ..."
        raise SquadkitError(f"{name}: cannot load tokenizer: {msg}") from None


def _token_lengths(tokenizer, texts: list[str], batch_size: int = 1000) -> list[int]:
    lengths: list[int] = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], add_special_tokens=False, truncation=False)
        lengths.extend(len(ids) for ids in enc["input_ids"])
    return lengths


def dataset_stats(dataset: SquadDataset, tokenizer: Any = None) -> DatasetStats:
    """Counts and length distributions. Context lengths are per paragraph, question lengths per question.

    ``tokenizer``: a tokenizer object, or a local folder / hub id loaded with
    ``AutoTokenizer.from_pretrained``; token counts exclude special tokens and are computed by
    batch tokenization of the unique contexts and questions.
    """
    contexts = [c for _, _, _, c in iter_contexts(dataset)]
    examples = dataset.examples
    answerable = sum(1 for ex in examples if ex.answers)
    counts: dict[str, int] = {}
    for p in dataset.problems:
        counts[p.kind] = counts.get(p.kind, 0) + 1
    stats = DatasetStats(
        path=str(dataset.path) if dataset.path is not None else None,
        format=dataset.format,
        version=dataset.version,
        articles=dataset.num_articles,
        paragraphs=len(contexts),
        questions=len(examples),
        answerable=answerable,
        unanswerable=len(examples) - answerable,
        context_chars=LengthStats.of([len(c) for c in contexts]),
        question_chars=LengthStats.of([len(ex.question) for ex in examples]),
        answer_chars=LengthStats.of([len(ex.answers[0].text) for ex in examples if ex.answers]),
        problem_counts=counts,
        problems=list(dataset.problems),
    )
    if tokenizer is not None:
        name = None
        if isinstance(tokenizer, (str, os.PathLike)):
            name = str(tokenizer)
            tokenizer = _load_tokenizer(tokenizer)
        stats.tokenizer = name or getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        # Tokenize each distinct text once, then map back (paragraphs may repeat in flat files).
        unique_ctx = list(dict.fromkeys(contexts))
        ctx_len = dict(zip(unique_ctx, _token_lengths(tokenizer, unique_ctx)))
        questions = [ex.question for ex in examples]
        unique_q = list(dict.fromkeys(questions))
        q_len = dict(zip(unique_q, _token_lengths(tokenizer, unique_q)))
        stats.context_tokens = LengthStats.of([ctx_len[c] for c in contexts])
        stats.question_tokens = LengthStats.of([q_len[q] for q in questions])
    return stats
