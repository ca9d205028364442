"""squadkit.pipeline gives transformers' question-answering pipeline's answers.

Reference: transformers 4.57.6 (pinned in the test extra), the last releases' behaviour.
Models: tiny RoBERTa checkpoints with random weights (several seeds) and the real
roberta-base tokenizer; inputs: real questions and contexts from the SQuAD v2 dev slice,
plus contexts with accents, CJK, emoji, runs of spaces and newlines.
"""

from __future__ import annotations

import json
import warnings

import pytest

transformers = pytest.importorskip("transformers")
try:
    from transformers.pipelines.question_answering import QuestionAnsweringPipeline  # noqa: F401
except ImportError:  # transformers >= 5.3 removed it
    pytest.skip("this transformers release has no question-answering pipeline to compare with", allow_module_level=True)

from tiny_models import make_tiny_roberta  # noqa: E402

pytestmark = pytest.mark.parity

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def dev_pairs(squad_dev_path):
    data = json.loads(squad_dev_path.read_text(encoding="utf-8"))
    pairs = [(qa["question"], p["context"]) for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]
    # every 7th question: both articles, answerable and unanswerable questions
    return pairs[::7][:48]


@pytest.fixture(scope="module")
def long_pairs(squad_dev_path):
    """Contexts of 8 paragraphs joined: 3 or more windows at the default max_seq_len 384."""
    data = json.loads(squad_dev_path.read_text(encoding="utf-8"))
    paragraphs = data["data"][0]["paragraphs"]
    out = []
    for i in range(0, 24, 8):
        context = "\n\n".join(p["context"] for p in paragraphs[i : i + 8])
        out.append((paragraphs[i + 5]["qas"][0]["question"], context))
    return out


UNICODE_CONTEXTS = [
    "Zürich's café served crème brûlée to naïve tourists in 1998; the Señora paid 12 € for it.",
    "東京は日本の首都です。 Tokyo became the capital in 1868, when the emperor moved from Kyoto.",
    "The party 🎉 was great 👍🏽 and the cake 🎂 had 3 layers of chocolate.",
    "Many    spaces   between   words, and\n\nnewlines\nin the middle of the  text  about   rivers.",
    "Tabs\tand\u00a0non-breaking spaces\u2009and — dashes – and “quotes” appear in this 2021 report.",
]
UNICODE_QUESTIONS = ["Who paid for the dessert?", "When did Tokyo become the capital?", "How many layers did the cake have?",
                     "What is in the middle of the text?", "When was the report written?"]


def _hf_pipeline(model_dir):
    from transformers import pipeline as hf_pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf_pipeline("question-answering", model=str(model_dir), tokenizer=str(model_dir), device=-1)


@pytest.fixture(scope="module", params=SEEDS)
def model_pair(request, tmp_path_factory, roberta_tokenizer_dir):
    from squadkit import pipeline

    model_dir = make_tiny_roberta(tmp_path_factory.mktemp(f"parity-{request.param}"), roberta_tokenizer_dir, seed=request.param)
    return _hf_pipeline(model_dir), pipeline("question-answering", model=str(model_dir), device="cpu")


def _as_list(result):
    return result if isinstance(result, list) else [result]


def assert_same_answers(reference, ours):
    reference, ours = _as_list(reference), _as_list(ours)
    assert [(a["answer"], a["start"], a["end"]) for a in ours] == [(a["answer"], a["start"], a["end"]) for a in reference]
    for a, b in zip(reference, ours):
        assert b["score"] == pytest.approx(a["score"], abs=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"top_k": 3},
        {"handle_impossible_answer": True},
        {"top_k": 3, "handle_impossible_answer": True},
        {"align_to_words": False, "top_k": 2},
        {"max_answer_len": 5, "top_k": 3},
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "defaults",
)
def test_same_answers_on_real_dev_questions(model_pair, dev_pairs, options):
    reference, ours = model_pair
    for question, context in dev_pairs[:16]:
        assert_same_answers(reference(question=question, context=context, **options), ours(question=question, context=context, **options))


def test_same_answers_with_many_windows(model_pair, long_pairs):
    reference, ours = model_pair
    for question, context in long_pairs:
        windows = ours.tokenizer(question, context, truncation="only_second", max_length=384, stride=128,
                                 return_overflowing_tokens=True)["input_ids"]
        assert len(windows) >= 3
        for options in ({}, {"top_k": 3, "handle_impossible_answer": True}):
            assert_same_answers(reference(question=question, context=context, **options),
                                ours(question=question, context=context, **options))


def test_same_answers_with_small_windows(model_pair, dev_pairs):
    reference, ours = model_pair
    options = {"max_seq_len": 64, "doc_stride": 24, "top_k": 3, "handle_impossible_answer": True}
    for question, context in dev_pairs[16:28]:
        assert_same_answers(reference(question=question, context=context, **options), ours(question=question, context=context, **options))


@pytest.mark.parametrize("options", [{}, {"top_k": 3}, {"handle_impossible_answer": True, "top_k": 2}])
def test_same_answers_on_unicode_and_whitespace(model_pair, options):
    reference, ours = model_pair
    for question, context in zip(UNICODE_QUESTIONS, UNICODE_CONTEXTS):
        assert_same_answers(reference(question=question, context=context, **options), ours(question=question, context=context, **options))
        for answer in _as_list(ours(question=question, context=context, **options)):
            assert context[answer["start"] : answer["end"]] == answer["answer"]


def test_batched_call_equals_one_by_one(model_pair, dev_pairs):
    reference, ours = model_pair
    pairs = dev_pairs[:24]
    batched = ours([{"question": q, "context": c} for q, c in pairs], batch_size=7, top_k=2)
    assert len(batched) == len(pairs)
    for (question, context), got in zip(pairs, batched):
        assert_same_answers(reference(question=question, context=context, top_k=2), got)
