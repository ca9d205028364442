"""An empty answer says why: ``abstained`` in Python results and HTTP bodies, one line from the CLI."""

from __future__ import annotations

import json

import pytest

from squadkit.abstain import BELOW_MIN_CONFIDENCE, NO_SPAN, NULL_ABOVE_THRESHOLD, Abstention, threshold_to_answer, why_empty

CONTEXT = "paris is the capital of france . the river is north of the city . the king was born in rome ."
QUESTION = "where was the king born ?"


def test_the_reason_follows_the_rule():
    assert why_empty(None, None, 0.0).reason == NO_SPAN
    assert why_empty("rome", 2.3, 0.0).reason == NULL_ABOVE_THRESHOLD
    assert why_empty("rome", -1.0, 0.0, confidence=0.2, min_confidence=0.5).reason == BELOW_MIN_CONFIDENCE
    for margin in (2.3, 2.31, -7.19, 0.0, 1e-9, 3.2800000001):
        assert threshold_to_answer(margin) >= margin  # the threshold the line suggests answers
        assert threshold_to_answer(margin) - margin < 0.0101


def test_the_line_names_the_span_the_threshold_and_the_remedy():
    line = why_empty("France", 2.3, 0.0, "default").sentence()
    assert '"France"' in line and "2.30 below" in line and "threshold 0, the default" in line
    assert "--null-score-diff-threshold 2.3 or higher" in line
    line = why_empty("France", -1.5, -7.19, "model folder (squadkit.json: null_score_diff_threshold)").sentence()
    assert "1.50 above" in line and "-7.19" in line and "squadkit.json" in line
    assert Abstention(**why_empty("x", 1.0, 0.0, "argument").to_dict()).sentence() == why_empty("x", 1.0, 0.0, "argument").sentence()


@pytest.fixture(scope="module")
def qa(tiny_bert):
    from squadkit import pipeline

    return pipeline("question-answering", model=str(tiny_bert), device="cpu", handle_impossible_answer=True)


def test_pipeline_empty_answer_says_why_and_its_remedy_answers(qa):
    empty = qa(question=QUESTION, context=CONTEXT, null_score_diff_threshold=-1000.0)
    assert empty["answer"] == ""
    why = empty["abstained"]
    assert why["reason"] == NULL_ABOVE_THRESHOLD and why["threshold"] == -1000.0 and why["threshold_from"] == "argument"
    assert why["best_span"] and why["margin"] > -1000.0
    best = qa(question=QUESTION, context=CONTEXT, handle_impossible_answer=False)
    assert best["answer"] == why["best_span"] and "abstained" not in best
    answered = qa(question=QUESTION, context=CONTEXT, null_score_diff_threshold=threshold_to_answer(why["margin"]))
    assert answered["answer"] == why["best_span"]
    # at the margin itself the span still wins; just below it, the empty answer
    below = qa(question=QUESTION, context=CONTEXT, null_score_diff_threshold=why["margin"] - 1e-3)
    assert below["answer"] == ""


def test_threshold_from_names_the_model_folder(tiny_bert, tmp_path):
    import shutil

    from squadkit import pipeline
    from squadkit.model_folder import ModelSettings, write_settings

    folder = tmp_path / "abstaining"
    shutil.copytree(tiny_bert, folder)
    write_settings(folder, ModelSettings(null_score_diff_threshold=-1000.0, version_2_with_negative=True))
    got = pipeline("question-answering", model=str(folder), device="cpu")(question=QUESTION, context=CONTEXT)
    assert got["answer"] == "" and got["abstained"]["threshold"] == -1000.0
    assert got["abstained"]["threshold_from"] == "model folder (squadkit.json: null_score_diff_threshold)"
    assert "from the model folder (squadkit.json: null_score_diff_threshold)" in Abstention(**got["abstained"]).sentence()


def test_answer_cli_prints_one_line_why_and_the_json_field(tiny_bert):
    from test_answer_predict import run_cli

    result = run_cli("answer", "-m", tiny_bert, "-q", QUESTION, "-c", CONTEXT, "--device", "cpu",
                     "--handle-impossible-answer", "--null-score-diff-threshold", "-1000")
    assert result.returncode == 0
    out = json.loads(result.stdout)
    assert out["answer"] == "" and out["abstained"]["reason"] == NULL_ABOVE_THRESHOLD
    lines = [line for line in result.stderr.splitlines() if line.startswith("note: no answer")]
    assert len(lines) == 1 and "(threshold -1000, given)" in lines[0]
    remedy = lines[0].split("pass --null-score-diff-threshold ")[1].split()[0]
    again = run_cli("answer", "-m", tiny_bert, "-q", QUESTION, "-c", CONTEXT, "--device", "cpu",
                    "--handle-impossible-answer", "--null-score-diff-threshold", remedy)
    assert json.loads(again.stdout)["answer"] == out["abstained"]["best_span"]
    assert "note: no answer" not in again.stderr


def test_http_answer_carries_abstained(qa):
    from fastapi.testclient import TestClient

    from squadkit.serve import ServeSettings, create_app

    with TestClient(create_app(qa, ServeSettings(access_log=False, log_level="warning"))) as client:
        body = client.post("/v1/answer", json={"question": QUESTION, "context": CONTEXT,
                                               "null_score_diff_threshold": -1000}).json()
        assert body["answer"] == "" and body["abstained"]["reason"] == NULL_ABOVE_THRESHOLD
        assert body["abstained"]["best_span"] and body["abstained"]["threshold_from"] == "argument"
        body = client.post("/v1/answer", json={"question": QUESTION, "context": CONTEXT,
                                               "handle_impossible_answer": False}).json()
        assert body["answer"] and "abstained" not in body


def test_ask_result_says_why(docs_index, tiny_bert):
    import warnings

    from squadkit.retrieval.ask import DocumentQA

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dqa = DocumentQA(docs_index, str(tiny_bert), device="cpu", null_score_diff_threshold=-1000.0)
    try:
        result = dqa.ask("where was the queen born")
        out = result.to_dict()
        assert out["answer"] == "" and out["abstained"]["reason"] == NULL_ABOVE_THRESHOLD
        assert out["abstained"]["best_span"] == result.answers[0].answer
        assert out["abstained"]["margin"] == pytest.approx(result.null_margin)
        assert out["abstained"]["threshold_from"] == "argument"
        again = dqa.ask("where was the queen born", null_score_diff_threshold=threshold_to_answer(result.null_margin))
        assert again.answer == result.answers[0].answer and "abstained" not in again.to_dict()
        assert dqa.settings.sources["null_score_diff_threshold"] == "argument"
    finally:
        dqa.close()
