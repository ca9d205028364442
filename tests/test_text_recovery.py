"""Squad-mode text recovery projected word by word (squadkit.text_recovery.ContextWords) against run_squad's
get_final_text on the joined words (tests/reference_decode.py), on random words with accents, control
characters, CJK and odd spaces; the whole text_of_span against run_squad's recovery and the former one
on the dev slice; the backend decoder against convert_tokens_to_string; and the one-span answer
features against the numpy ones."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reference_decode import (former_answer_features, former_text_recoverer, reference_context_span,
                              reference_get_final_text, reference_text_recoverer)
from squadkit.calibration import answer_features
from squadkit.text_recovery import ContextWords, _tokens_to_string, basic_tokenize, get_final_text, squad_text_recoverer
from squadkit.features import WindowSettings, build_windows, whitespace_words

# characters a word may hold: ASCII, accents (composed and combining), control and format characters (some of
# which str.split() splits on), CJK, Hangul, spaces that are not whitespace_words' separators, case oddities
WORD_CHARS = ("aZ09.,-()'/$é\u0301É漢字한하\u00ad\u00a0\u2009\u3000\u200b\x00\x01\x0b\x0c\x1c\x1f\x7f\x85"
              "İßﬁ\ufffd😀")
ASCII_WORD_CHARS = "aZ09.,-()\x00\x01\x0b\x0c\x1c\x1f\x7f"  # the control characters basic_tokenize's two ways differ on
SEPARATORS = [" ", "\t", "\n", "\r", "\u202f", "  ", " \t\n"]
WORDS = st.lists(st.one_of(st.text(alphabet=WORD_CHARS, min_size=1, max_size=6),
                           st.text(alphabet=ASCII_WORD_CHARS, min_size=1, max_size=6)), min_size=1, max_size=6)


# the examples: a control character that basic_tokenize drops in ASCII text and splits on in other text, its loss
# made up for by a Hangul syllable that lower-casing decomposes (the projection holds; the two ways differ)
@settings(max_examples=500, deadline=None)
@example(words=["a\x0bb", "하"], seps=[" "] * 6, lead="", first=0, size=1, lo=0, n=3, lower=True)
@example(words=["漢", "X\x1cy", "하"], seps=["\t"] * 6, lead=" ", first=0, size=2, lo=2, n=3, lower=True)
@given(words=WORDS,
       seps=st.lists(st.sampled_from(SEPARATORS), min_size=6, max_size=6), lead=st.sampled_from(["", " ", "\n "]),
       first=st.integers(0, 5), size=st.integers(0, 5), lo=st.integers(0, 30), n=st.integers(0, 12),
       lower=st.booleans())
def test_projection_in_words_is_run_squads(words, seps, lead, first, size, lo, n, lower):
    """The per-word projection prints run_squad's text, at run_squad's offsets mapped to the context."""
    context = lead + "".join(word + sep for word, sep in zip(words, seps))
    found, starts, ends = whitespace_words(context)
    assert found == words
    context_words = ContextWords.of(found, starts, ends)
    first = min(first, len(words) - 1)
    last = min(first + size, len(words) - 1)
    orig_text = " ".join(words[first : last + 1])
    tok_text = " ".join(basic_tokenize(orig_text, lower))
    for pred in {tok_text[lo : lo + n], orig_text[lo : lo + n], tok_text, orig_text, "", "x"}:
        a, b = reference_get_final_text(pred, orig_text, lower)
        expected = (orig_text[a:b], *reference_context_span(a, b, starts[first : last + 1], ends[first : last + 1]))
        assert context_words.final_text(pred, first, last, lower) == expected


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=WORD_CHARS + " \t\n", max_size=24), lo=st.integers(0, 30), n=st.integers(0, 12),
       lower=st.booleans())
def test_get_final_text_on_any_text_is_run_squads(text, lo, n, lower):
    """get_final_text on any text (empty words, tabs and newlines inside words included)."""
    tok_text = " ".join(basic_tokenize(text, lower))
    for pred in {tok_text[lo : lo + n], text[lo : lo + n], tok_text, text, ""}:
        assert get_final_text(pred, text, lower) == reference_get_final_text(pred, text, lower)


def _spans(windows, rng: np.random.Generator, per_window: int):
    """Random (window, start, end) spans of context tokens, up to 30 tokens long."""
    for window in windows:
        ctx = np.flatnonzero(window.context_mask)
        for _ in range(per_window):
            start = int(rng.choice(ctx))
            end = int(rng.choice(ctx[(ctx >= start) & (ctx < start + 30)]))
            yield window, start, end


@pytest.mark.parametrize("mode", ["squad", "legacy"])
def test_text_of_span_on_the_dev_slice(mode, tiny_roberta, squad_dev_path):
    """text_of_span equals run_squad's recovery without whole words, and the former one with them."""
    from squadkit.data import load_squad
    from squadkit.model_folder import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_roberta))
    examples = load_squad(squad_dev_path).examples[::2]
    windows = build_windows(tokenizer, [e.question for e in examples], [e.context for e in examples],
                            WindowSettings(mode, 128, 48))
    rng = np.random.default_rng(0)
    checked = 0
    for lower in (False, True):
        for window, start, end in _spans(windows, rng, 4):
            context = examples[window.example_index].context
            ours = squad_text_recoverer(tokenizer, context, lower)(window, start, end)
            assert ours == reference_text_recoverer(tokenizer, context, lower)(window, start, end)
            wide = squad_text_recoverer(tokenizer, context, lower, whole_words=True)(window, start, end)
            assert wide == former_text_recoverer(tokenizer, context, lower, whole_words=True)(window, start, end)
            checked += 1
    assert checked >= 1000


def test_text_of_span_with_a_wordpiece_tokenizer(tiny_bert):
    """The same with a WordPiece tokenizer (its decoder joins "##" pieces) on texts with accents and symbols."""
    from squadkit.model_folder import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_bert))
    contexts = ["William the Conqueror, Duke of Normandy, invaded England in 1066; café naïve résumé — ünïcödé 😀 text.",
                "The Normans (Norman: Nourmands;\tFrench: Normands)\u202fwere the people\u00a0who in the 10th century"]
    windows = build_windows(tokenizer, ["who?"] * len(contexts), contexts, WindowSettings("squad", 24, 8))
    rng = np.random.default_rng(1)
    for lower in (False, True):
        for window, start, end in _spans(windows, rng, 20):
            context = contexts[window.example_index]
            ours = squad_text_recoverer(tokenizer, context, lower)(window, start, end)
            assert ours == reference_text_recoverer(tokenizer, context, lower)(window, start, end)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_tokens_to_string_is_convert_tokens_to_string(kind, tiny_bert, request):
    """The backend decoder is called straight only where convert_tokens_to_string is just that call."""
    from squadkit.fast_tokenizer import FastTokenizer
    from squadkit.model_folder import load_tokenizer

    folder = tiny_bert if kind == "bert" else request.getfixturevalue("roberta_tokenizer_dir")
    tokenizer = load_tokenizer(str(folder))
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("Naïve café, 1066 — ünïcödé 😀 (Normandy)")["input_ids"])
    from transformers import PreTrainedTokenizerFast

    for tok in (tokenizer, FastTokenizer(folder)):
        to_string = _tokens_to_string(tok)
        assert to_string(tokens) == tok.convert_tokens_to_string(tokens)
        if type(tok).convert_tokens_to_string in (PreTrainedTokenizerFast.convert_tokens_to_string,
                                                  FastTokenizer.convert_tokens_to_string):
            assert to_string is not tok.convert_tokens_to_string and to_string.__name__ == "decode"

    class Overriding(type(tokenizer)):
        def convert_tokens_to_string(self, tokens):
            return "|".join(tokens)

    tokenizer.__class__ = Overriding
    assert _tokens_to_string(tokenizer)(tokens) == "|".join(tokens)


def _floats():
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 50.0, -50.0, 1e-300]),
                     st.floats(width=32).map(np.float32), st.integers(-100, 100))


@settings(max_examples=500, deadline=None)
@given(z=_floats(), null=_floats(), log_norm=_floats(),
       length=st.one_of(st.integers(-3, 2000), st.integers(1, 40).map(np.int64), st.floats(0, 1e6), st.just(math.nan)))
def test_one_span_features_are_the_numpy_ones(z, null, log_norm, length):
    """answer_features of one span: the very float64 values (and zero signs) of the array path."""
    ours = answer_features(z, null, log_norm, length)
    with np.errstate(invalid="ignore"):  # inf - inf
        theirs = former_answer_features(z, null, log_norm, length)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape == (1, 3)
    assert ours.tobytes() == theirs.tobytes()


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.text(alphabet="ab É.,-()'é 漢\u00ad", min_size=1, max_size=6), min_size=1, max_size=5),
       lo=st.integers(0, 30), size=st.integers(0, 12), lower=st.booleans())
def test_get_final_text_equals_run_squads(words, lo, size, lower):
    """The projection gives run_squad's get_final_text's offsets on words with accents, soft hyphens and CJK."""
    orig_text = " ".join(w.strip() or "x" for w in words)
    tok_text = " ".join(basic_tokenize(orig_text, lower))
    for pred in (tok_text[lo : lo + size], orig_text[lo : lo + size], tok_text):
        assert get_final_text(pred, orig_text, lower) == reference_get_final_text(pred, orig_text, lower)
