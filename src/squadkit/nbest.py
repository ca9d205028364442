"""Squad-mode span scoring for a whole batch of windows at once (numpy, or torch on the model's device).

run_squad's ``_get_best_indexes`` and the validity rules of ``compute_predictions_logits``, batch-wide:
the ``n`` best start and end positions of every window (ties in position order, as a stable sort of
the window's first ``width`` logits gives them), every (start, end) pair of those scored by
broadcasting (start logit + end logit, float64), masked by the rules (context tokens only, the start in
its max-context window, end >= start, at most ``max_answer_length`` tokens, inside the window's
length), and each window's valid pairs ordered best first, ties in run_squad's enumeration order
(start rank, then end rank). ``decode.squad_prediction`` then only merges a question's windows.

The torch version runs the same operations on the logits where the model left them (a GPU), so only
these few numbers per window come back to the host; both give identical arrays (tests/test_nbest.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .decode import WindowNBest
from .features import Window


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


def window_masks(rows: Sequence[Window], width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(B, W) context and max-context masks (False past each window's own size) and (B,) lengths."""
    width = max([width] + [w.context_mask.shape[0] for w in rows])
    ctx = np.zeros((len(rows), width), dtype=bool)
    max_ctx = np.zeros((len(rows), width), dtype=bool)
    for r, window in enumerate(rows):
        size = window.context_mask.shape[0]
        ctx[r, :size] = window.context_mask
        max_ctx[r, :size] = window.max_context if window.max_context is not None else window.context_mask
    return ctx, max_ctx, np.array([w.length for w in rows], dtype=np.int64)


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


def window_nbests(a: NBestArrays, log_norms: np.ndarray | None = None) -> list[WindowNBest]:
    """One ``WindowNBest`` per window: its valid candidates best first as Python tuples (converted once for
    the batch) and where its null answer ranks among them (after every candidate scoring at least as much)."""
    n, batch = a.start_indexes.shape[1], len(a.counts)
    rows = np.repeat(np.arange(batch), np.diff(a.bounds))
    si, ei = np.divmod(a.pairs, n)
    c_s_logits, c_e_logits = a.start_logits[rows, si], a.end_logits[rows, ei]
    keys = -(c_s_logits.astype(np.float64) + c_e_logits.astype(np.float64))  # run_squad's sort key, ascending
    null_keys = -(a.null_start.astype(np.float64) + a.null_end.astype(np.float64))
    null_at = np.bincount(rows[keys <= null_keys[rows]], minlength=batch).tolist()
    cands = list(zip(a.start_indexes[rows, si].tolist(), a.end_indexes[rows, ei].tolist(), c_s_logits.tolist(),
                     c_e_logits.tolist()))
    null_s, null_e, counts, bounds = a.null_start.tolist(), a.null_end.tolist(), a.counts.tolist(), a.bounds.tolist()
    norms = log_norms.tolist() if log_norms is not None else [None] * batch
    return [WindowNBest(a.start_indexes[b, :c], a.end_indexes[b, :c], a.start_logits[b, :c], a.end_logits[b, :c],
                        null_s[b], null_e[b], norms[b], candidates=cands[bounds[b] : bounds[b + 1]], null_at=null_at[b])
            for b, c in enumerate(counts)]


def squad_batch_nbest(start, end, rows: Sequence[Window], widths: Sequence[int], n_best_size: int,
                      max_answer_length: int, allowed=None) -> list[WindowNBest]:
    """Every window of a batch reduced to its n-best positions and valid candidates, numpy or torch.

    ``start``/``end``: (B, W) numpy arrays, or torch tensors (then scored on their device);
    ``allowed``: the tokens the softmax normalisers run over (``calibration.log_normalizers``), or None.
    """
    ctx, max_ctx, lengths = window_masks(rows, start.shape[1])
    widths = np.asarray(widths, dtype=np.int64)
    if isinstance(start, np.ndarray):
        from .calibration import log_normalizers

        arrays = squad_nbest_arrays(start, end, widths, ctx, max_ctx, lengths, n_best_size, max_answer_length)
        norms = log_normalizers(start, end, allowed) if allowed is not None else None
        return window_nbests(arrays, norms)
    import torch

    dev = start.device
    to = lambda x: torch.from_numpy(x).to(dev, non_blocking=True)  # noqa: E731
    with torch.inference_mode():
        arrays = squad_nbest_arrays_torch(start, end, to(widths), to(ctx), to(max_ctx), to(lengths), n_best_size,
                                          max_answer_length)
        norms = log_normalizers_torch(start, end, to(allowed)) if allowed is not None else None
    return window_nbests(arrays, norms)
