"""The batch-wide squad-mode decoder (squadkit.nbest) against the per-window one it replaced
(tests/reference_decode.py): the same n-best positions, candidates, predictions, n-best lists and
null odds, on random logits with ties and masked tokens, and on the dev slice with a tiny model;
and its torch version (CPU tensors) against the numpy one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_decode import (reference_allowed_tokens, reference_squad_prediction, reference_window_candidates,
                              reference_window_nbest)
from squadkit.decode import allowed_tokens, squad_prediction
from squadkit.features import Window
from squadkit.nbest import (BatchMasks, FlatCandidates, fast_candidates, order_by_row_then_score, squad_batch_nbest,
                            squad_nbest_arrays, top_positions, top_sets)


def make_window(rng: np.random.Generator, width: int, legacy: bool) -> Window:
    length = int(rng.integers(3, width + 1))
    size = width if legacy else length
    ctx = np.zeros(size, dtype=bool)
    q = int(rng.integers(1, max(2, length // 2)))
    ctx[q:length - 1] = True
    ctx &= rng.random(size) > 0.1  # a few masked tokens inside the context too
    max_ctx = ctx & (rng.random(size) > 0.2)
    offsets = np.stack([np.arange(size) * 3, np.arange(size) * 3 + 2], axis=1)
    return Window(0, np.arange(size, dtype=np.int64), None, length, ctx, offsets, max_context=max_ctx)


def logits(rng: np.random.Generator, shape, levels: int | None) -> np.ndarray:
    """Random float32 logits; with ``levels``, drawn from a few values, so ties abound."""
    if levels is not None:
        return rng.integers(0, levels, size=shape).astype(np.float32) / 2
    return rng.normal(size=shape).astype(np.float32)


def text_of_span(window, start, end):
    return f"{start}-{end}", int(window.offsets[start, 0]), int(window.offsets[end, 1])


def same_predictions(a, b):
    assert a.text == b.text and a.null_odds == b.null_odds
    assert [(e.text, e.start_logit, e.end_logit, e.probability, e.start, e.end, e.window, e.tokens) for e in a.nbest] \
        == [(e.text, e.start_logit, e.end_logit, e.probability, e.start, e.end, e.window, e.tokens) for e in b.nbest]
    np.testing.assert_array_equal(a.features, b.features)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 6), width=st.integers(4, 48),
       n_best=st.integers(1, 25), max_len=st.integers(1, 12), levels=st.sampled_from([None, 2, 3, 6]),
       legacy=st.booleans(), v2=st.booleans())
def test_batch_decoder_equals_per_window_decoder(seed, batch, width, n_best, max_len, levels, legacy, v2):
    rng = np.random.default_rng(seed)
    rows = [make_window(rng, width, legacy) for _ in range(batch)]
    start, end = logits(rng, (batch, width), levels), logits(rng, (batch, width), levels)
    widths = [w.input_ids.shape[0] if legacy else w.length for w in rows]
    ours = squad_batch_nbest(start, end, rows, widths, n_best, max_len)
    ref = reference_window_nbest(start, end, widths, n_best)
    for window, a, b in zip(rows, ours, ref):
        assert (a.candidates, a.null_at) == reference_window_candidates(window, b, max_len)
        assert (a.null_start_logit, a.null_end_logit) == (b.null_start_logit, b.null_end_logit)
    # one question over all the windows, and one per window
    for group in ([list(range(batch))] + [[i] for i in range(batch)]):
        kw = dict(n_best_size=n_best, max_answer_length=max_len, version_2_with_negative=v2)
        same_predictions(squad_prediction([rows[i] for i in group], [ours[i] for i in group], text_of_span, **kw),
                         reference_squad_prediction([rows[i] for i in group], [ref[i] for i in group], text_of_span, **kw))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 6), width=st.integers(4, 48), n_best=st.integers(1, 25),
       max_len=st.one_of(st.integers(1, 12), st.just(40000)), levels=st.sampled_from([None, None, 3, 40]),
       legacy=st.booleans())
def test_fast_path_equals_exact_path(seed, batch, width, n_best, max_len, levels, legacy):
    """Where the fast path answers (no two candidates of a window score alike), its candidates are the exact
    path's; with continuous logits it always answers; with ties it may decline, never answer wrongly."""
    rng = np.random.default_rng(seed)
    rows = [make_window(rng, width, legacy) for _ in range(batch)]
    start, end = logits(rng, (batch, width), levels), logits(rng, (batch, width), levels)
    widths = np.minimum([w.input_ids.shape[0] if legacy else w.length for w in rows], width)
    masks = BatchMasks.of(rows)
    fast = fast_candidates(start, end, widths, masks, n_best, max_len)
    ctx, max_ctx = masks.dense(width)
    exact = FlatCandidates.of(squad_nbest_arrays(start, end, widths, ctx, max_ctx, masks.lengths, n_best, max_len))
    if levels is None:
        assert fast is not None
    if fast is not None:
        for name in ("rows", "start", "end", "start_logit", "end_logit", "score"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(exact, name), err_msg=name)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(0, 6), width=st.integers(4, 48), legacy=st.booleans())
def test_allowed_tokens_equal_the_row_by_row_masks(seed, batch, width, legacy):
    rng = np.random.default_rng(seed)
    rows = [make_window(rng, width, legacy) for _ in range(batch)]
    np.testing.assert_array_equal(allowed_tokens(rows, width), reference_allowed_tokens(rows, width))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 300), groups=st.integers(1, 70000),
       levels=st.sampled_from([None, 3, 1000]))
def test_radix_order_is_a_stable_sort(seed, size, groups, levels):
    """By row, then score highest first, exactly as lexsort; None (never a wrong order) where a row's keys tie."""
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.integers(0, groups, size))
    score = (logits(rng, size, levels).astype(np.float64) + logits(rng, size, levels)) * rng.choice([1e-3, 1, 1e30])
    order = order_by_row_then_score(rows, score)
    if order is not None:
        np.testing.assert_array_equal(order, np.lexsort((-score, rows)))
    elif groups <= 0xFFFF:
        s, r = score[np.lexsort((-score, rows))], rows[np.lexsort((-score, rows))]
        assert np.any((r[1:] == r[:-1]) & ((-s[1:]).astype(np.float32) == (-s[:-1]).astype(np.float32)))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), width=st.integers(1, 40), n=st.integers(1, 45),
       levels=st.sampled_from([None, 1, 2, 4]))
def test_top_positions_and_sets_are_a_stable_argsorts_first_n(seed, width, n, levels):
    rng = np.random.default_rng(seed)
    x = logits(rng, (5, width), levels)
    widths = rng.integers(1, width + 1, size=5)
    n = min(n, width)
    idx, vals = top_positions(x, widths, n)
    sets = top_sets(x, n)
    for r in range(5):
        expect = np.argsort(-x[r, : widths[r]], kind="stable")[:n]
        k = len(expect)
        np.testing.assert_array_equal(idx[r, :k], expect)
        np.testing.assert_array_equal(vals[r, :k], x[r, expect])
        assert np.all(np.isneginf(vals[r, k:]))
        np.testing.assert_array_equal(sets[r], np.sort(np.argsort(-x[r], kind="stable")[:n]))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 5), width=st.integers(3, 40), n_best=st.integers(1, 22),
       levels=st.sampled_from([None, 2, 5]), legacy=st.booleans())
def test_torch_decoder_equals_numpy_decoder(seed, batch, width, n_best, levels, legacy):
    torch = pytest.importorskip("torch")
    from squadkit.nbest import log_normalizers_torch, squad_nbest_arrays_torch
    from squadkit.calibration import log_normalizers

    rng = np.random.default_rng(seed)
    rows = [make_window(rng, width, legacy) for _ in range(batch)]
    start, end = logits(rng, (batch, width), levels), logits(rng, (batch, width), levels)
    widths = np.array([w.input_ids.shape[0] if legacy else w.length for w in rows])
    masks = BatchMasks.of(rows)
    (ctx, max_ctx), lengths = masks.dense(width), masks.lengths
    a = squad_nbest_arrays(start, end, widths, ctx, max_ctx, lengths, n_best, 7)
    t = lambda x: torch.from_numpy(np.ascontiguousarray(x))  # noqa: E731
    b = squad_nbest_arrays_torch(t(start), t(end), t(widths), t(ctx), t(max_ctx), t(lengths), n_best, 7)
    for name in ("start_indexes", "start_logits", "end_indexes", "end_logits", "counts", "pairs", "bounds",
                 "null_start", "null_end"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    allowed = ctx[:, :width] | (np.arange(width) == 0)
    np.testing.assert_allclose(log_normalizers_torch(t(start), t(end), t(allowed)), log_normalizers(start, end, allowed),
                               rtol=1e-12)
    # and through the whole batch reducer, torch tensors in, the same WindowNBest out
    ours = squad_batch_nbest(t(start), t(end), rows, widths, n_best, 7)
    ref = squad_batch_nbest(start, end, rows, widths, n_best, 7)
    for x, y in zip(ours, ref):
        assert x.candidates == y.candidates and x.null_at == y.null_at


@pytest.mark.parametrize("legacy", [False, True])
def test_dev_slice_predictions_identical(legacy, tiny_roberta, squad_dev_path, monkeypatch):
    """predict_squad on the dev slice: the same predictions, n-best lists and null odds as with the
    per-window decoder and the former text recovery (swapped back in)."""
    import squadkit.nbest as nbest_module
    from squadkit.model import load as load_model
    from squadkit.data import load_squad
    from squadkit.predict import predict_squad
    from squadkit.settings import AnswerSettings

    model = load_model(str(tiny_roberta), device="cpu")
    examples = load_squad(squad_dev_path).examples[:: 3 if legacy else 1]
    settings = AnswerSettings(legacy=legacy, max_seq_length=128, doc_stride=48, whole_words=False)  # as before
    new = predict_squad(model, examples, settings, batch_size=32)

    def per_window(start, end, rows, widths, n_best_size, max_answer_length, attention_mask=None):
        from squadkit.calibration import log_normalizers

        allowed = reference_allowed_tokens(rows, start.shape[1]) & attention_mask.astype(bool)
        return reference_window_nbest(start, end, widths, n_best_size, log_normalizers(start, end, allowed))

    import reference_decode
    import squadkit.predict as predict_module

    monkeypatch.setattr(nbest_module, "squad_batch_nbest", per_window)
    monkeypatch.setattr(predict_module, "squad_prediction", reference_decode.reference_squad_prediction)
    monkeypatch.setattr(predict_module, "squad_text_recoverer",
                        lambda tokenizer, context, lower, whole_words=False:
                        reference_decode.reference_text_recoverer(tokenizer, context, lower))
    old = predict_squad(model, examples, settings, batch_size=32)
    assert new.predictions == old.predictions
    assert new.null_odds == old.null_odds
    assert new.nbest_json() == old.nbest_json()
    assert len(new.predictions) == len(examples)


def test_predict_with_logits_left_on_the_device_is_identical(tiny_roberta, squad_dev_path):
    """The GPU path end to end, on CPU tensors: a model whose ``device_logits`` hands torch tensors to
    the engine gets spans scored by the torch decoder, with the same predictions, n-best lists and
    null odds as the numpy path (and the calibration features within float64 rounding)."""
    torch = pytest.importorskip("torch")
    import copy
    import dataclasses

    from squadkit.model import load as load_model
    from squadkit.data import load_squad
    from squadkit.predict import predict_squad
    from squadkit.settings import AnswerSettings

    model = load_model(str(tiny_roberta), device="cpu")
    runner = copy.copy(model.runner)
    seen = []

    def device_logits(batch):
        start, end = model.logits(batch)
        seen.append(len(start))
        return torch.from_numpy(start), torch.from_numpy(end)

    runner.device_logits = device_logits
    on_device = dataclasses.replace(model, runner=runner)
    examples = load_squad(squad_dev_path).examples[::4]
    settings = AnswerSettings(max_seq_length=160, doc_stride=64)
    host = predict_squad(model, examples, settings, batch_size=16, chunk_size=64)
    device = predict_squad(on_device, examples, settings, batch_size=16, chunk_size=64)
    assert sum(seen) >= len(examples)  # every window went through the torch decoder
    assert device.predictions == host.predictions and device.null_odds == host.null_odds
    assert device.nbest_json() == host.nbest_json()
    for qid, x in host.features.items():
        np.testing.assert_allclose(device.features[qid], x, rtol=1e-12, atol=1e-12)
