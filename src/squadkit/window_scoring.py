"""The window-scoring engine that the pipeline and ``predict`` share.

questions + contexts -> windows -> length-sorted batches -> logits -> each window reduced to
its few candidates at once -> the candidates grouped per question.

Pairs are taken ``chunk_size`` at a time and each window is reduced as soon as its logits exist,
so memory stays bounded however long the input is; the two decoders differ only in the
``reduce`` step and in how they merge one question's windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Generic, Iterator, Sequence, TypeVar

import numpy as np

from .features import Batch, Window, WindowSettings, build_windows, iter_batches

R = TypeVar("R")

# reduce(start_logits, end_logits, batch, windows of the batch in row order) -> one result per row
Reducer = Callable[[np.ndarray, np.ndarray, Batch, list[Window]], Sequence[R]]


@dataclass
class QuestionWindows(Generic[R]):
    """One question's windows and what ``reduce`` made of each, in window order."""

    index: int  # the pair's index in the input
    windows: list[Window]
    reduced: list[R]


def pad_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def score_pairs(
    model,
    questions: Sequence[str],
    contexts: Sequence[str],
    settings: WindowSettings,
    reduce: Reducer,
    batch_size: int,
    chunk_size: int = 256,
    progress: Callable[[int], None] | None = None,
    window_progress: Callable[[int, int], None] | None = None,
    on_device: bool = False,
) -> Iterator[QuestionWindows]:
    """Every pair's windows, scored by ``model`` and reduced, yielded per pair in input order.

    ``progress(n)`` is called with the number of pairs finished after each chunk, and
    ``window_progress(done, total)`` after each batch with the chunk's windows scored so far
    (a single long context is one pair, but many windows). The next chunk is tokenized in a
    background thread while this one is scored (the tokenizer and the model release the GIL).
    ``on_device``: ``reduce`` also takes torch tensors; a model with ``device_logits`` (the torch
    backend on a GPU) then leaves the logits on its device.
    """
    pad_id = pad_id_of(model.tokenizer)
    for lo, hi, windows in _windows_ahead(model.tokenizer, questions, contexts, settings, chunk_size):
        reduced: list = [None] * len(windows)
        done = 0
        for batch in iter_batches(windows, batch_size, pad_id, multiple=model.pad_multiple, limit=model.window_limit):
            logits = model.device_logits(batch) if on_device else None
            start, end = logits if logits is not None else model.logits(batch)
            rows = [windows[i] for i in batch.window_indices]
            for i, r in zip(batch.window_indices, reduce(start, end, batch, rows)):
                reduced[i] = r
            done += len(rows)
            if window_progress is not None:
                window_progress(done, len(windows))
        by_pair: dict[int, list[int]] = {}
        for i, window in enumerate(windows):
            by_pair.setdefault(window.example_index, []).append(i)
        for j in range(lo, hi):
            idx = by_pair.get(j, [])
            yield QuestionWindows(j, [windows[i] for i in idx], [reduced[i] for i in idx])
        if progress is not None:
            progress(hi - lo)


def _windows_ahead(tokenizer, questions: Sequence[str], contexts: Sequence[str], settings: WindowSettings,
                   chunk_size: int) -> Iterator[tuple[int, int, list[Window]]]:
    """(lo, hi, windows) of each chunk of pairs, the next chunk's windows built in a thread meanwhile."""
    from concurrent.futures import ThreadPoolExecutor

    bounds = [(lo, min(lo + chunk_size, len(questions))) for lo in range(0, len(questions), chunk_size)]

    def build(k: int) -> list[Window]:
        lo, hi = bounds[k]
        return build_windows(tokenizer, questions[lo:hi], contexts[lo:hi], settings, first_example_index=lo)

    if len(bounds) < 2:
        for k, (lo, hi) in enumerate(bounds):
            yield lo, hi, build(k)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="squadkit-windows") as pool:
        ahead = pool.submit(build, 0)
        for k, (lo, hi) in enumerate(bounds):
            windows = ahead.result()
            if k + 1 < len(bounds):
                ahead = pool.submit(build, k + 1)
            yield lo, hi, windows
