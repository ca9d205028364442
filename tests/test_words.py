"""Whole-word answers: squad and ask mode never start or end an answer inside a word of the context."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squadkit.words import WordBounds, widen_to_words


def _cuts_word(context: str, start: int, end: int) -> bool:
    inside = lambda i: 0 < i < len(context) and context[i - 1].isalnum() and context[i].isalnum()  # noqa: E731
    return end > start and (inside(start) or inside(end))


@st.composite
def context_and_span(draw):
    context = draw(st.text(alphabet=st.sampled_from("ab9é ,.-()\n'x1"), max_size=40))
    start = draw(st.integers(0, len(context)))
    end = draw(st.integers(start, len(context)))
    return context, start, end


@settings(max_examples=300, deadline=None)
@given(context_and_span())
def test_widened_span_is_whole_words_contains_the_span_and_is_idempotent(case):
    context, start, end = case
    a, b = widen_to_words(context, start, end)
    assert a <= start and end <= b
    assert not _cuts_word(context, a, b)
    assert widen_to_words(context, a, b) == (a, b)
    # only letters and digits are added: what was added joins the span to the word it cut
    assert context[a:start].isalnum() or a == start
    assert context[end:b].isalnum() or b == end


def test_examples_from_the_issue():
    assert widen_to_words("in the 880s, they", 7, 10) == (7, 11)
    context = "it was (1085), said"
    start = context.index("108")
    a, b = widen_to_words(context, start, start + 3)
    assert context[a:b] == "1085"  # the parenthesis is left out
    assert widen_to_words("x", 0, 0) == (0, 0)  # the empty answer stays empty


def test_vectorized_over_many_spans():
    context = "abc def, ghi"
    got = WordBounds.of(context).widen(np.array([1, 4, 5, 9, 7]), np.array([2, 5, 8, 10, 9]))
    assert [context[a:b] for a, b in zip(*got)] == ["abc", "def", "def,", "ghi", ", "]


@pytest.fixture(scope="module")
def dev_sample(squad_dev_path):
    from squadkit.data import load_squad

    return load_squad(squad_dev_path).examples[::7][:60]


def _predict(model_dir, examples, **options):
    from squadkit.model import load as load_model
    from squadkit.predict import predict_squad
    from squadkit.settings import AnswerSettings

    return predict_squad(load_model(str(model_dir), device="cpu"), examples,
                         AnswerSettings(max_seq_length=128, doc_stride=64, **options), batch_size=16)


def test_predict_answers_and_nbest_are_whole_words_and_unique(tiny_roberta, dev_sample):
    cut = _predict(tiny_roberta, dev_sample, whole_words=False)
    whole = _predict(tiny_roberta, dev_sample)
    contexts = {e.id: e.context for e in dev_sample}
    changed = 0
    for qid, nbest in whole.nbest.items():
        texts = [e.text for e in nbest]
        assert len(texts) == len(set(texts)), texts  # widened spans that meet are merged
        for e in nbest:
            if e.start is not None and e.text:
                assert not _cuts_word(contexts[qid], e.start, e.end)
                assert e.text == " ".join(contexts[qid][e.start : e.end].split())
        changed += whole.predictions[qid] != cut.predictions[qid]
        scores = [e.start_logit + e.end_logit for e in nbest if e.text != "empty"]
        assert scores == sorted(scores, reverse=True)
    assert cut.null_odds == whole.null_odds  # the best span keeps its score: the rule decides alike
    assert changed > 0  # a random model cuts words often: the widening did something here
    assert any(_cuts_word(contexts[q], e.start, e.end) for q, n in cut.nbest.items() for e in n if e.start is not None)


def test_legacy_mode_is_unchanged(tiny_roberta, dev_sample):
    a = _predict(tiny_roberta, dev_sample[:20], legacy=True)
    b = _predict(tiny_roberta, dev_sample[:20], legacy=True, whole_words=False)
    assert a.predictions == b.predictions
    assert {q: [e.text for e in n] for q, n in a.nbest.items()} == {q: [e.text for e in n] for q, n in b.nbest.items()}
    contexts = {e.id: e.context for e in dev_sample}
    assert any(_cuts_word(contexts[q], e.start, e.end) for q, n in a.nbest.items() for e in n if e.start is not None)
