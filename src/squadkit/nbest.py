"""Squad-mode span scoring for a whole batch of windows at once (numpy, or torch on the model's device).

run_squad's ``_get_best_indexes`` and the validity rules of ``compute_predictions_logits``, batch-wide:
the ``n`` best start and end positions of every window (ties in position order, as a stable sort of
the window's first ``width`` logits gives them), every (start, end) pair of those scored by
broadcasting (start logit + end logit, float64), masked by the rules (context tokens only, the start in
its max-context window, end >= start, at most ``max_answer_length`` tokens, inside the window's
length), and each window's valid pairs ordered best first, ties in run_squad's enumeration order
(start rank, then end rank). ``decode.squad_prediction`` then only merges a question's windows.

Two numpy paths give the same candidates: ``fast_candidates`` (the n best of each window as a set, the
pairs ordered by radix passes over their scores) serves every batch where no two candidates of a window
score alike; ``squad_nbest_arrays`` (ranked positions, run_squad's enumeration order) serves the rest.
The torch version runs the latter's operations on the logits where the model left them (a GPU), so only
these few numbers per window come back to the host; all give identical candidates (tests/test_nbest.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from itertools import repeat
from typing import Sequence

import numpy as np

from .decode import CandidateColumns, WindowNBest, context_and_cls
from .features import Window, pad_rows


@dataclass
class NBestArrays:
    """A batch's n-best positions and the order of their valid (start, end) pairs, on the host."""

    start_indexes: np.ndarray  # (B, n) int64, best first
    start_logits: np.ndarray  # (B, n) float32
    end_indexes: np.ndarray
    end_logits: np.ndarray
    counts: np.ndarray  # (B,) how many of the n positions are real (the window may be narrower than n)
    pairs: np.ndarray  # (V,) every window's valid pairs (start rank * n + end rank), window by window, best first
    bounds: np.ndarray  # (B + 1,) window b's pairs are pairs[bounds[b] : bounds[b + 1]]
    null_start: np.ndarray  # (B,) float32 CLS logits
    null_end: np.ndarray


_mask_fields = attrgetter("context_mask", "max_context", "length")


@dataclass
class BatchMasks:
    """A batch's context and max-context masks, window after window, and each window's size and length."""

    context: np.ndarray  # (sum of sizes,) bool
    max_context: np.ndarray
    offsets: np.ndarray  # (B,) where each window's masks begin
    sizes: np.ndarray  # (B,) each window's token count (legacy: padded to max_seq_length)
    lengths: np.ndarray  # (B,) tokens before padding

    @classmethod
    def of(cls, rows: Sequence[Window]) -> "BatchMasks":
        ctx, max_ctx, lengths = zip(*map(_mask_fields, rows))
        max_ctx = [c if m is None else m for c, m in zip(ctx, max_ctx)]
        sizes = np.fromiter(map(len, ctx), dtype=np.int64, count=len(rows))
        return cls(np.concatenate(ctx), np.concatenate(max_ctx), np.cumsum(sizes) - sizes, sizes, np.array(lengths))

    def dense(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, W) context and max-context masks, False past each window's size (W: ``width`` or the largest size)."""
        width = max([width] + self.sizes.tolist())
        return tuple(pad_rows(mask, self.offsets, self.sizes, False, width, dtype=bool)
                     for mask in (self.context, self.max_context))

    def at(self, positions: np.ndarray, limits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Context and max-context flags of the tokens at ``positions`` ((k * B, n): the windows' rows, k times
        over), False at or past each window's ``limits`` (B,)."""
        reps = len(positions) // len(self.offsets)
        limits, offsets = np.tile(limits, reps)[:, None], np.tile(self.offsets, reps)[:, None]
        inside = positions < limits
        flat = offsets + np.where(inside, positions, 0)
        return inside & self.context[flat], inside & self.max_context[flat]


def top_positions(logits: np.ndarray, widths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best positions of each row among its first ``widths[r]`` and their logits, best first,
    ties in position order: ``argsort(-row[:width], kind="stable")[:n]`` for all rows at once
    (a partition finds the n-th value, ties at it are taken lowest position first, then n are sorted).
    Positions past a row's width come last with logit -inf."""
    batch, width = logits.shape
    x = np.where(np.arange(width)[None, :] < widths[:, None], logits, np.float32(-np.inf)).astype(np.float32)
    if n < width:
        kth = np.partition(x, width - n, axis=1)[:, width - n][:, None]
        take = x >= kth
        if take.sum() != batch * n:  # ties at some row's n-th value: the lowest positions among them
            above = x > kth
            tie = x == kth
            take = above | (tie & (np.cumsum(tie, axis=1) <= (n - above.sum(axis=1))[:, None]))
        cols = np.nonzero(take)[1].reshape(batch, n)
    else:
        cols = np.broadcast_to(np.arange(width), (batch, width))
    vals = np.take_along_axis(x, cols, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(cols, order, axis=1).astype(np.int64), np.take_along_axis(vals, order, axis=1)


def squad_nbest_arrays(start: np.ndarray, end: np.ndarray, widths: np.ndarray, ctx: np.ndarray, max_ctx: np.ndarray,
                       lengths: np.ndarray, n_best_size: int, max_answer_length: int) -> NBestArrays:
    """The n-best positions and the ordered valid pairs of every window of a batch (numpy).

    The masks are read at the n-best positions only ((B, n) each), then broadcast to the (B, n, n) pairs;
    only the valid pairs are scored and sorted (one lexsort for the batch: by window, then score)."""
    batch, width = start.shape
    n = min(n_best_size, width)
    widths = np.minimum(np.asarray(widths, dtype=np.int64), width)
    idx, val = top_positions(np.concatenate([start, end]), np.concatenate([widths, widths]), n)
    s_idx, e_idx, s_val, e_val = idx[:batch], idx[batch:], val[:batch], val[batch:]
    counts = np.minimum(widths, n)
    real = (np.arange(n)[None, :] < counts[:, None]) & (idx[:batch] < lengths[:, None])
    ok_s = real & np.take_along_axis(ctx, s_idx, axis=1) & np.take_along_axis(max_ctx, s_idx, axis=1)
    ok_e = (np.arange(n)[None, :] < counts[:, None]) & (e_idx < lengths[:, None]) & np.take_along_axis(ctx, e_idx, axis=1)
    gap = e_idx[:, None, :] - s_idx[:, :, None]  # end - start of every pair
    valid = (ok_s[:, :, None] & ok_e[:, None, :] & (gap >= 0) & (gap < max_answer_length)).reshape(batch, n * n)
    rows, pairs = np.nonzero(valid)  # row by row, each in enumeration order (start rank, then end rank)
    si, ei = np.divmod(pairs, n)
    score = s_val[rows, si].astype(np.float64) + e_val[rows, ei].astype(np.float64)
    order = np.lexsort((-score, rows))  # stable: ties keep enumeration order
    bounds = np.concatenate([[0], np.cumsum(valid.sum(axis=1))])
    return NBestArrays(s_idx, s_val, e_idx, e_val, counts, pairs[order], bounds, start[:, 0].astype(np.float32),
                       end[:, 0].astype(np.float32))


def squad_nbest_arrays_torch(start, end, widths, ctx, max_ctx, lengths, n_best_size: int,
                             max_answer_length: int) -> NBestArrays:
    """``squad_nbest_arrays`` in torch, on the tensors' device (float32 logits; the masks and lengths
    as tensors on the same device); only the result's few arrays per window are copied to the host."""
    import torch

    batch, width = start.shape
    n = min(n_best_size, width)
    widths = widths.clamp(max=width)
    pos = torch.arange(width, device=start.device)[None, :]

    def top(x):
        x = torch.where(pos < widths[:, None], x.float(), torch.tensor(float("-inf"), device=x.device))
        keys, idx = torch.sort(-x, dim=1, stable=True)
        return idx[:, :n], -keys[:, :n]

    s_idx, s_val = top(start)
    e_idx, e_val = top(end)
    counts = widths.clamp(max=n)
    real = torch.arange(n, device=start.device)[None, :] < counts[:, None]
    S, E = s_idx[:, :, None].expand(batch, n, n), e_idx[:, None, :].expand(batch, n, n)
    flat = lambda t: t.reshape(batch, n * n)  # noqa: E731
    lens = lengths[:, None]
    S, E = flat(S), flat(E)
    valid = (flat(real[:, :, None] & real[:, None, :]) & (S < lens) & (E < lens) & ctx.gather(1, S)
             & ctx.gather(1, E) & max_ctx.gather(1, S) & (E >= S) & (E - S + 1 <= max_answer_length))
    score = flat(s_val.double()[:, :, None] + e_val.double()[:, None, :])
    inf = torch.tensor(float("inf"), dtype=score.dtype, device=score.device)
    order = torch.sort(torch.where(valid, -score, inf), dim=1, stable=True).indices
    order = order.gather(1, torch.sort((~valid).gather(1, order).to(torch.uint8), dim=1, stable=True).indices)
    n_valid = valid.sum(dim=1)
    host = [t.cpu().numpy() for t in (s_idx, s_val, e_idx, e_val, counts, order.to(torch.int32), n_valid,
                                      start[:, 0].float(), end[:, 0].float())]
    keep = np.arange(n * n)[None, :] < host[6][:, None]
    bounds = np.concatenate([[0], np.cumsum(host[6])])
    return NBestArrays(host[0].astype(np.int64), host[1], host[2].astype(np.int64), host[3], host[4].astype(np.int64),
                       host[5][keep].astype(np.int64), bounds, host[7], host[8])


def log_normalizers_torch(start, end, allowed):
    """``calibration.log_normalizers`` in torch (float64), on the tensors' device; returns numpy (B,)."""
    import torch

    out = torch.zeros(start.shape[0], dtype=torch.float64, device=start.device)
    for logits in (start, end):
        x = torch.where(allowed, logits.double(), torch.tensor(float("-inf"), dtype=torch.float64, device=start.device))
        top = x.max(dim=1, keepdim=True).values
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        out += top[:, 0] + torch.log(torch.exp(x - top).sum(dim=1))
    return out.cpu().numpy()


@dataclass
class FlatCandidates:
    """A batch's valid candidates, window by window, each window's best first (numpy, on the host)."""

    rows: np.ndarray  # (V,) the window of each
    start: np.ndarray  # (V,) token positions
    end: np.ndarray
    start_logit: np.ndarray  # (V,) float32
    end_logit: np.ndarray
    score: np.ndarray  # (V,) float64 start + end logit

    @classmethod
    def of(cls, a: NBestArrays) -> "FlatCandidates":
        n = a.start_indexes.shape[1]
        rows = np.repeat(np.arange(len(a.counts)), np.diff(a.bounds))
        si, ei = np.divmod(a.pairs, n)
        sl, el = a.start_logits[rows, si], a.end_logits[rows, ei]
        return cls(rows, a.start_indexes[rows, si], a.end_indexes[rows, ei], sl, el, sl.astype(np.float64) + el)


def top_sets(x: np.ndarray, n: int) -> np.ndarray | None:
    """(R, n) the positions of each row's ``n`` best values, in position order: those above the row's
    n-th value, then the lowest positions tied at it (the set a stable argsort's first ``n`` is).
    None where a row has no such set (NaN logits)."""
    rows, width = x.shape
    if n >= width:
        return np.broadcast_to(np.arange(width), (rows, width))
    kth = np.partition(x, width - n, axis=1)[:, width - n, None]
    take = x >= kth
    flat = np.flatnonzero(take)
    if len(flat) != rows * n:  # ties at some row's n-th value
        above = x > kth
        tie = take & ~above
        flat = np.flatnonzero(above | (tie & (np.cumsum(tie, axis=1) <= n - np.count_nonzero(above, axis=1)[:, None])))
        if len(flat) != rows * n:
            return None
    return (flat % width).reshape(rows, n)


def order_by_row_then_score(rows: np.ndarray, score: np.ndarray) -> np.ndarray | None:
    """The stable order by row, then score (highest first), of candidates already grouped by row, in
    three 16-bit radix passes over the scores' float32 keys (a float64 sort where two scores of a row only
    differ past float32); None where two candidates of a row tie, which their enumeration order decides."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    if rows[-1] > 0xFFFF:
        return None
    bits = ((-score).astype(np.float32) + np.float32(0.0)).view(np.uint32)  # + 0: -0.0 keys as 0.0
    key = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))  # unsigned order = float order
    order = np.argsort(key.astype(np.uint16), kind="stable")
    order = order[np.argsort((key[order] >> np.uint32(16)).astype(np.uint16), kind="stable")]
    order = order[np.argsort(rows[order].astype(np.uint16), kind="stable")]
    key, in_row = key[order], rows[order]
    clash = (key[1:] == key[:-1]) & (in_row[1:] == in_row[:-1])
    if np.any(clash):
        ranked = score[order]
        if np.any(clash & (ranked[1:] == ranked[:-1])):
            return None  # a tie: the enumeration order decides
        at = np.flatnonzero(clash)  # scores only float64 tells apart: put each such pair right
        if np.any(np.diff(at) == 1):  # three or more in a row: sort them all (no tie, so any sort is the stable one)
            return np.lexsort((-score, rows))
        swap = at[ranked[at] < ranked[at + 1]]
        order[swap], order[swap + 1] = order[swap + 1], order[swap]
    return order


def fast_candidates(start: np.ndarray, end: np.ndarray, widths: np.ndarray, masks: BatchMasks, n_best_size: int,
                    max_answer_length: int) -> FlatCandidates | None:
    """Every window's valid candidates, best first, where no two of a window score alike (else None).

    Without ties the enumeration order never decides, so the n best positions are taken as a set
    (``top_sets``: a partition, no sort) and only the valid pairs are sorted (``order_by_row_then_score``)."""
    batch, width = start.shape
    if width > 0x7FFF:  # positions and their gaps are int16 below
        return None
    n = min(n_best_size, width)
    x = np.concatenate([start, end]).astype(np.float32, copy=False)
    both = np.concatenate([widths, widths])
    if np.any(both < width):
        x[np.arange(width)[None, :] >= both[:, None]] = -np.inf
    cols = top_sets(x, n)
    if cols is None:
        return None
    vals = np.take_along_axis(x, cols, axis=1).ravel()
    limits = np.minimum(np.minimum(widths, masks.lengths), masks.sizes)
    ctx, max_ctx = masks.at(cols, limits)
    cols = cols.astype(np.int16)
    s_pos, e_pos = cols[:batch], cols[batch:]
    gap = e_pos[:, None, :] - s_pos[:, :, None]  # int16; read as unsigned, a negative gap is 0x8001 or more
    short = gap.view(np.uint16) < min(max_answer_length, 0x8000)
    valid = (ctx[:batch] & max_ctx[:batch])[:, :, None] & ctx[batch:, None, :] & short
    flat = np.flatnonzero(valid)  # window, start rank, end rank: (b * n + i) * n + j
    at_start = flat // n  # b * n + i
    at_end = at_start - at_start % n + flat % n + batch * n  # the end's place among the end rows
    sl, el = vals[at_start], vals[at_end]
    score = sl.astype(np.float64) + el
    rows = at_start // n
    order = order_by_row_then_score(rows, score)
    if order is None:
        return None
    cols = cols.ravel()
    at_start, at_end = at_start[order], at_end[order]
    return FlatCandidates(rows[order], cols[at_start], cols[at_end], sl[order], el[order], score[order])


def window_nbests(c: FlatCandidates, null_start: np.ndarray, null_end: np.ndarray,
                  log_norms: np.ndarray | None = None) -> list[WindowNBest]:
    """One ``WindowNBest`` per window: its stretch of the batch's candidates (read through memoryviews:
    a question reads a few of its windows' candidates, not all) and where its null answer ranks among them
    (after every candidate scoring at least as much)."""
    batch = len(null_start)
    null = null_start.astype(np.float64) + null_end.astype(np.float64)
    null_at = np.bincount(c.rows[c.score >= null[c.rows]], minlength=batch).tolist()
    bounds = np.concatenate([[0], np.cumsum(np.bincount(c.rows, minlength=batch))]).tolist()
    table = CandidateColumns(*(memoryview(np.ascontiguousarray(column))
                               for column in (c.start, c.end, c.start_logit, c.end_logit)))
    norms = log_norms.tolist() if log_norms is not None else repeat(None)
    return list(map(_window_nbest, zip(null_start.tolist(), null_end.tolist(), norms, repeat(table), bounds,
                                       bounds[1:], null_at)))


_window_nbest = partial(tuple.__new__, WindowNBest)  # a WindowNBest from its fields' tuple, made in C


def squad_batch_nbest(start, end, rows: Sequence[Window], widths: Sequence[int], n_best_size: int,
                      max_answer_length: int, attention_mask: np.ndarray | None = None) -> list[WindowNBest]:
    """Every window of a batch reduced to its valid candidates, best first, numpy or torch.

    ``start``/``end``: (B, W) numpy arrays, or torch tensors (then scored on their device);
    ``attention_mask``: the batch's; given, each window also gets the log of its softmax normalisers over
    its context tokens and CLS (``calibration.log_normalizers``).
    """
    masks = BatchMasks.of(rows)
    width = start.shape[1]
    widths = np.minimum(np.asarray(widths, dtype=np.int64), width)
    allowed = None
    if attention_mask is not None:
        allowed = context_and_cls(masks.context, masks.offsets, masks.sizes, width) & attention_mask.astype(bool)
    if isinstance(start, np.ndarray):
        from .calibration import log_normalizers

        found = fast_candidates(start, end, widths, masks, n_best_size, max_answer_length)
        if found is None:
            ctx, max_ctx = masks.dense(width)
            found = FlatCandidates.of(squad_nbest_arrays(start, end, widths, ctx, max_ctx, masks.lengths, n_best_size,
                                                         max_answer_length))
        norms = log_normalizers(start, end, allowed) if allowed is not None else None
        return window_nbests(found, start[:, 0].astype(np.float32), end[:, 0].astype(np.float32), norms)
    import torch

    dev = start.device
    to = lambda x: torch.from_numpy(x).to(dev, non_blocking=True)  # noqa: E731
    ctx, max_ctx = masks.dense(width)
    with torch.inference_mode():
        arrays = squad_nbest_arrays_torch(start, end, to(widths), to(ctx), to(max_ctx), to(masks.lengths), n_best_size,
                                          max_answer_length)
        norms = log_normalizers_torch(start, end, to(allowed)) if allowed is not None else None
    return window_nbests(FlatCandidates.of(arrays), arrays.null_start, arrays.null_end, norms)
