"""Windows, offsets and labels: the two doc_stride meanings, question budget, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from squadkit.errors import SquadkitError
from squadkit.features import WindowSettings, build_windows, iter_batches, max_context_flags, whitespace_words


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_bert))


CONTEXT = " ".join(f"word{i}" for i in range(200))  # 200 words -> 400 wordpieces ("word", "##N")


def context_token_ids(window):
    return window.input_ids[window.context_mask].tolist()


def test_pipeline_doc_stride_is_the_overlap(tokenizer):
    windows = build_windows(tokenizer, ["what is it?"], [CONTEXT], WindowSettings("pipeline", max_seq_length=64, doc_stride=16))
    assert len(windows) >= 3
    for a, b in zip(windows, windows[1:]):
        assert context_token_ids(a)[-16:] == context_token_ids(b)[:16]


def test_squad_doc_stride_is_the_step(tokenizer):
    windows = build_windows(tokenizer, ["what is it?"], [CONTEXT], WindowSettings("squad", max_seq_length=64, doc_stride=20))
    all_tokens = tokenizer(CONTEXT, add_special_tokens=False)["input_ids"]
    for k, window in enumerate(windows):
        ids = context_token_ids(window)
        assert ids == all_tokens[20 * k : 20 * k + len(ids)]
    # the last window reaches the end, the one before does not
    assert len(context_token_ids(windows[-1])) + 20 * (len(windows) - 1) == len(all_tokens)
    assert 20 * (len(windows) - 2) + len(context_token_ids(windows[-2])) < len(all_tokens)


def test_offsets_point_into_the_context(tokenizer):
    context = "Paris is the capital of France.  It is on the river Seine.\nRome is old."
    for mode in ("pipeline", "squad", "legacy"):
        for window in build_windows(tokenizer, ["where?"], [context], WindowSettings(mode, max_seq_length=24, doc_stride=8)):
            for start, end in window.offsets[window.context_mask]:
                assert 0 <= start < end <= len(context)
                assert context[start:end].strip() == context[start:end]


def test_max_context_rule_picks_the_centred_window():
    flags = max_context_flags([0, 4], [8, 8], 12)
    # token 5: window 0 gives min(5, 2) = 2, window 1 gives min(1, 6) = 1 -> window 0
    assert flags[0].tolist() == [True] * 6 + [False] * 2
    assert flags[1].tolist() == [False] * 2 + [True] * 6
    # each token belongs to exactly one window
    owner = np.zeros(12, dtype=int)
    owner[0:8] += flags[0]
    owner[4:12] += flags[1]
    assert (owner == 1).all()


def test_labels_point_at_the_answer_or_cls(tokenizer):
    context = CONTEXT
    start = context.index("word150")
    answer = (start, start + len("word150"))
    windows = build_windows(tokenizer, ["which?"], [context], WindowSettings("squad", 64, 20), answers=[answer])
    holding = [w for w in windows if w.start_position > 0]
    assert holding, "some window holds the answer"
    for w in windows:
        if w.start_position == 0:
            assert w.end_position == 0
            continue
        s, e = w.offsets[w.start_position, 0], w.offsets[w.end_position, 1]
        assert context[s:e] == "word150"
    unanswerable = build_windows(tokenizer, ["which?"], [context], WindowSettings("squad", 64, 20), answers=[None])
    assert all(w.start_position == w.end_position == 0 for w in unanswerable)


def test_answer_cut_by_a_window_edge_points_at_cls(tokenizer):
    context = CONTEXT
    start = context.index("word10 ")
    end = context.index("word40") + len("word40")  # 31 words: longer than one window of 64 tokens
    windows = build_windows(tokenizer, ["which?"], [context], WindowSettings("squad", 32, 8), answers=[(start, end)])
    assert all(w.start_position == 0 for w in windows)


def test_long_question_is_truncated_not_an_error(tokenizer):
    question = " ".join(["what"] * 300)
    windows = build_windows(tokenizer, [question], ["paris is the capital"], WindowSettings("pipeline", 128, 32, 64))
    assert len(windows) == 1
    assert (~windows[0].context_mask).sum() <= 64 + 3


@pytest.mark.parametrize(
    "settings,question,context,message",
    [
        (WindowSettings("pipeline", 64, 64), "q", "c", "doc_stride"),
        (WindowSettings("pipeline", 64, 100), "q", "c", "doc_stride"),
        (WindowSettings("pipeline", 64), "", "context", "question of input 0 is empty"),
        (WindowSettings("pipeline", 64), "q", "   ", "context of input 0 is empty"),
        (WindowSettings("pipeline", 64), 3, "context", "must be a string"),
        (WindowSettings("pipeline", 8, 2, 64), "what is the capital of france", "paris", "no room for the context"),
        (WindowSettings("squad", 0), "q", "c", "max_seq_len"),
    ],
)
def test_bad_input_is_a_clear_value_error(tokenizer, settings, question, context, message):
    with pytest.raises(ValueError, match=message):
        build_windows(tokenizer, [question], [context], settings)


def test_whitespace_words_match_run_squad_split():
    words, starts, ends = whitespace_words("  a\tb\u202fc\u00a0d\n\ne ")
    assert words == ["a", "b", "c\u00a0d", "e"]
    assert [("  a\tb\u202fc\u00a0d\n\ne ")[s:e] for s, e in zip(starts, ends)] == words


def test_batches_are_sorted_and_padded_to_the_longest(tokenizer):
    contexts = ["paris is the capital", CONTEXT[:300], CONTEXT[:60]]
    windows = build_windows(tokenizer, ["q"] * 3, contexts, WindowSettings("pipeline", 128, 32))
    batches = list(iter_batches(windows, 2, tokenizer.pad_token_id))
    seen = sorted(i for b in batches for i in b.window_indices.tolist())
    assert seen == list(range(len(windows)))
    first = batches[0]
    assert first.input_ids.shape[1] == max(windows[i].length for i in first.window_indices)
    lengths = [windows[i].length for b in batches for i in b.window_indices]
    assert lengths == sorted(lengths, reverse=True)
    for b in batches:
        for row, i in enumerate(b.window_indices):
            assert b.attention_mask[row].sum() == windows[i].length
    with pytest.raises(SquadkitError):
        list(iter_batches(windows, 0, 0))


def test_batches_rounded_to_a_multiple_keep_rows_and_masks_and_stop_at_the_limit(tokenizer):
    contexts = ["paris is the capital", CONTEXT[:300], CONTEXT[:60]]
    windows = build_windows(tokenizer, ["q"] * 3, contexts, WindowSettings("pipeline", 128, 32))
    plain = list(iter_batches(windows, 2, tokenizer.pad_token_id))
    rounded = list(iter_batches(windows, 2, tokenizer.pad_token_id, multiple=16))
    for p, r in zip(plain, rounded, strict=True):
        width = p.input_ids.shape[1]
        assert r.input_ids.shape[1] == -(-width // 16) * 16
        assert (r.window_indices == p.window_indices).all()
        assert (r.input_ids[:, :width] == p.input_ids).all() and (r.input_ids[:, width:] == tokenizer.pad_token_id).all()
        assert (r.attention_mask.sum(1) == p.attention_mask.sum(1)).all()
    longest = plain[0].input_ids.shape[1]
    capped = next(iter_batches(windows, 2, tokenizer.pad_token_id, multiple=1000, limit=longest + 1))
    assert capped.input_ids.shape[1] == longest + 1  # never past what the model takes
    with pytest.raises(SquadkitError, match="multiple"):
        list(iter_batches(windows, 2, 0, multiple=0))
