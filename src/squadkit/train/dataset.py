"""Training features: every window with its start/end labels, tokenized once and cached on disk.

Windows are concatenated flat (no per-window Python objects in the loop) and padded per batch
by the same routine answering uses. The cache file ``squadkit-features-<hash>.npz`` is keyed by
the data file's bytes, the tokenizer's full definition and the window settings, and written
atomically; a damaged one is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import defaults
from ..errors import SquadkitError
from ..features import WindowSettings, attention_mask, build_windows, pad_rows, padded_width
from ..io import atomic_open
from .config import warn_main

FEATURES_VERSION = 1  # bump when the cached feature layout or labelling changes


@dataclass
class TrainFeatures:
    """All training windows, concatenated flat (no per-window Python objects in the loop)."""

    input_ids: np.ndarray  # (total_tokens,) int32, windows back to back
    token_type_ids: np.ndarray | None  # (total_tokens,) int8
    offsets: np.ndarray  # (n + 1,) int64: window k is [offsets[k], offsets[k + 1])
    start_positions: np.ndarray  # (n,) int64, 0 (CLS) for no answer in this window
    end_positions: np.ndarray
    stats: dict
    # with --passage-negatives / --shared-norm: question g's windows are [group_offsets[g], group_offsets[g + 1])
    # (its own paragraph's windows first, then its negatives'); None for the plain recipe
    group_offsets: np.ndarray | None = None
    negative: np.ndarray | None = None  # (n,) bool: the window comes from a negative paragraph

    def __len__(self) -> int:
        return len(self.start_positions)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per window (no padding)."""
        return np.diff(self.offsets)

    def batch(self, indices: np.ndarray, pad_id: int, multiple: int = 1, limit: int | None = None) -> dict[str, np.ndarray]:
        """Windows ``indices`` padded to the longest of them, rounded up to a ``multiple`` (but not
        past ``limit``, the window length the model was set up for): one array per model input,
        padded by the same routine and to the same width as answering batches (``features.pad_rows``,
        ``features.padded_width``, which says why rounding pays when training on a GPU)."""
        starts, sizes = self.offsets[indices], self.lengths[indices]
        width = padded_width(int(sizes.max()), multiple, limit)
        ids = pad_rows(self.input_ids, starts, sizes, pad_id, width)
        out = {"input_ids": ids, "attention_mask": attention_mask(sizes, width)}
        if self.token_type_ids is not None:
            out["token_type_ids"] = pad_rows(self.token_type_ids, starts, sizes, 0, width)
        out["start_positions"] = self.start_positions[indices]
        out["end_positions"] = self.end_positions[indices]
        return out

    def save(self, path: Path) -> None:
        """Written to a temporary file and renamed: a reader never sees half a cache."""
        with atomic_open(path, "wb") as handle:
            np.savez(
                handle, input_ids=self.input_ids, offsets=self.offsets, start_positions=self.start_positions,
                end_positions=self.end_positions,
                token_type_ids=self.token_type_ids if self.token_type_ids is not None else np.zeros(0, np.int8),
                has_types=np.array(self.token_type_ids is not None), stats=np.array(json.dumps(self.stats)),
                **({} if self.group_offsets is None else
                   {"group_offsets": self.group_offsets, "negative": self.negative}),
            )

    @classmethod
    def load(cls, path: Path) -> "TrainFeatures":
        with np.load(path, allow_pickle=False) as z:
            return cls(
                input_ids=z["input_ids"], token_type_ids=z["token_type_ids"] if bool(z["has_types"]) else None,
                offsets=z["offsets"], start_positions=z["start_positions"], end_positions=z["end_positions"],
                stats=json.loads(str(z["stats"])),
                group_offsets=z["group_offsets"] if "group_offsets" in z.files else None,
                negative=z["negative"] if "negative" in z.files else None,
            )


def tokenizer_fingerprint(tokenizer) -> str:
    """Everything about a fast tokenizer that changes its output: its full JSON definition."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    h.update(tokenizer.backend_tokenizer.to_str().encode())
    h.update(json.dumps(list(tokenizer.model_input_names)).encode())
    return h.hexdigest()


def features_cache_path(folder: str | os.PathLike, data_file: str | os.PathLike, tokenizer, settings: WindowSettings,
                        version_2_with_negative: bool, extra: dict | None = None) -> Path:
    """``<folder>/squadkit-features-<hash>.npz``; the hash covers data bytes, tokenizer and settings, and
    ``extra`` (passage negatives: N, the draw rule, the seed) when given; the plain recipe's key is unchanged."""
    h = hashlib.sha256(f"squadkit-features-v{FEATURES_VERSION}".encode())
    with open(data_file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    h.update(tokenizer_fingerprint(tokenizer).encode())
    h.update(json.dumps([asdict(settings), version_2_with_negative]).encode())
    if extra:
        h.update(json.dumps(extra, sort_keys=True).encode())
    return Path(folder) / f"squadkit-features-{h.hexdigest()[:24]}.npz"


def _usable_examples(examples: Sequence, version_2_with_negative: bool, source: str):
    """(the examples trained on, their answer's character span or None, ids whose answer is not at its offset,
    how many unanswerable questions were left out); an error when none is left."""
    kept, spans = [], []
    mismatched, unanswerable = [], 0
    for ex in examples:
        if ex.answers:
            a = ex.answers[0]
            if ex.context[a.answer_start:a.answer_start + len(a.text)] != a.text:
                mismatched.append(ex.id)
                continue
            spans.append((a.answer_start, a.answer_start + len(a.text)))
        elif version_2_with_negative:
            spans.append(None)
        else:
            unanswerable += 1
            continue
        kept.append(ex)
    if not kept:
        why = []
        if mismatched:
            why.append(f"{len(mismatched)} answer(s) not found in their context (first: {mismatched[0]})")
        if unanswerable:
            why.append(f"{unanswerable} unanswerable question(s) without --version-2-with-negative")
        raise SquadkitError(f"{source}: no usable training examples out of {len(examples)}"
                            + (f" ({'; '.join(why)})" if why else ""))
    return kept, spans, mismatched, unanswerable


def make_train_features(examples: Sequence, tokenizer, settings: WindowSettings, version_2_with_negative: bool,
                        source: str = "training data", chunk_size: int = 2000, passage_negatives: int = 0,
                        seed: int = 42, grouped: bool = False) -> TrainFeatures:
    """Windows with start/end labels for the first answer of each question (as run_squad).

    Answers whose text is not at their offset, and (without version_2_with_negative) questions
    with no answer, are skipped and counted; an error when nothing usable is left.

    ``passage_negatives`` N > 0 adds N negative paragraphs per question (train/negatives.py) as
    unanswerable windows; with N > 0 or ``grouped`` (shared normalization) the windows are ordered
    question by question and ``group_offsets`` says where each question's windows are.
    """
    kept, spans, mismatched, unanswerable = _usable_examples(examples, version_2_with_negative, source)
    pieces = []
    for lo in range(0, len(kept), chunk_size):
        chunk = kept[lo:lo + chunk_size]
        pieces.extend(build_windows(tokenizer, [e.question for e in chunk], [e.context for e in chunk], settings,
                                    first_example_index=lo, answers=spans[lo:lo + chunk_size]))
    groups = negative = None
    extra_stats: dict = {}
    if passage_negatives > 0 or grouped:
        pieces, groups, negative, extra_stats = _grouped_windows(pieces, kept, tokenizer, settings, passage_negatives,
                                                                 seed, source, chunk_size)
    lengths = np.fromiter((w.length for w in pieces), dtype=np.int64, count=len(pieces))
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    has_types = "token_type_ids" in tokenizer.model_input_names and all(w.token_type_ids is not None for w in pieces)
    starts = np.fromiter((w.start_position for w in pieces), dtype=np.int64, count=len(pieces))
    stats = {
        "examples": len(examples), "examples_used": len(kept), "windows": len(pieces),
        "windows_with_answer": int((starts > 0).sum()),
        "skipped": {"answer_not_in_context": len(mismatched), "unanswerable_without_v2": unanswerable},
        "first_skipped_ids": mismatched[:5], **extra_stats,
    }
    return TrainFeatures(
        input_ids=np.concatenate([w.input_ids for w in pieces]).astype(np.int32),
        token_type_ids=np.concatenate([w.token_type_ids for w in pieces]).astype(np.int8) if has_types else None,
        offsets=offsets, start_positions=starts,
        end_positions=np.fromiter((w.end_position for w in pieces), dtype=np.int64, count=len(pieces)),
        stats=stats, group_offsets=groups, negative=negative,
    )


def _grouped_windows(pieces: list, kept: Sequence, tokenizer, settings: WindowSettings, n: int, seed: int,
                     source: str, chunk_size: int):
    """The windows question by question (own paragraph's, then each negative's), with group offsets."""
    from .negatives import draw_negatives

    own: list[list] = [[] for _ in kept]
    for w in pieces:
        own[w.example_index].append(w)
    theirs: list[list] = [[] for _ in kept]
    extra: dict = {}
    if n > 0:
        draw = draw_negatives(kept, n, seed, source)
        pairs = [(q, p) for q, negs in enumerate(draw.negatives) for p in negs]
        for lo in range(0, len(pairs), chunk_size):
            chunk = pairs[lo:lo + chunk_size]
            windows = build_windows(tokenizer, [kept[q].question for q, _ in chunk],
                                    [draw.paragraphs[p] for _, p in chunk], settings, first_example_index=lo,
                                    answers=[None] * len(chunk))
            for best in _closest_windows(windows):  # no answer in a negative: CLS target (label for None)
                theirs[chunk[best.example_index - lo][0]].append(best)
        extra["passage_negatives"] = draw.stats
    ordered, sizes, negative = [], [], []
    for mine, other in zip(own, theirs):
        ordered += mine + other
        sizes.append(len(mine) + len(other))
        negative += [False] * len(mine) + [True] * len(other)
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    extra["negative_windows"] = int(sum(negative))
    extra["groups"] = len(sizes)
    return ordered, offsets, np.asarray(negative, dtype=bool), extra


def _closest_windows(windows: Sequence) -> list:
    """One window per negative paragraph: the one sharing the most distinct tokens with its question.

    At ``ask`` time the reader sees the passages a retriever ranked for the question, so the part
    of a long negative paragraph closest to the question is the one worth learning to reject; and
    one window per negative keeps ``--passage-negatives 1`` at most one extra window per question
    (training cost under 2x the plain recipe's). Ties go to the earlier window.
    """
    best: dict[int, tuple[int, object]] = {}
    for w in windows:
        context, rest = w.input_ids[w.context_mask], w.input_ids[~w.context_mask]  # rest: question + specials
        shared = len(np.intersect1d(rest, context))
        if w.example_index not in best or shared > best[w.example_index][0]:
            best[w.example_index] = (shared, w)
    return [w for _, w in best.values()]


def load_features(config, accelerator, train_path: Path, tokenizer, result) -> TrainFeatures:
    """Tokenize the training data once (main process), cached on disk; the others read the cache."""
    settings = config.window_settings()
    folder = config.features_cache_dir or config.cache_dir or defaults.cache_dir("features")
    n, grouped = config.passage_negatives, config.shared_norm
    extra = None
    if config.for_collections:
        from .negatives import NEGATIVE_RULE

        extra = {"passage_negatives": n, "grouped": True, **({"rule": NEGATIVE_RULE, "seed": config.seed} if n else {})}
    path = features_cache_path(folder, train_path, tokenizer, settings, config.version_2_with_negative, extra)
    result.features_cache = path
    cached = path.is_file() and not config.overwrite_cache
    features = None
    if cached:
        try:
            features = TrainFeatures.load(path)
        except (OSError, ValueError, KeyError):
            cached = False  # a damaged cache is rebuilt, never trusted
    if features is None:
        from ..data import load_squad

        features = make_train_features(load_squad(train_path).examples, tokenizer, settings,
                                       config.version_2_with_negative, source=str(train_path),
                                       passage_negatives=n, seed=config.seed, grouped=grouped)
    result.features_cached = cached
    if not cached and accelerator.is_main_process:
        try:
            features.save(path)
        except OSError as exc:
            warn_main(accelerator, f"cannot write the feature cache {path}: {exc}")
    stats = features.stats
    result.examples_used, result.train_windows = stats["examples_used"], stats["windows"]
    result.negative_windows = stats.get("negative_windows", 0)
    result.examples_skipped = {k: v for k, v in stats["skipped"].items() if v}
    if stats["skipped"]["answer_not_in_context"]:
        warn_main(accelerator, f"{train_path}: skipped {stats['skipped']['answer_not_in_context']} question(s) whose answer "
                           f"text is not at its answer_start (first: {', '.join(stats['first_skipped_ids'])})")
    if stats["skipped"]["unanswerable_without_v2"]:
        warn_main(accelerator, f"{train_path}: skipped {stats['skipped']['unanswerable_without_v2']} unanswerable "
                           f"question(s); pass --version-2-with-negative to train on them")
    return features
