"""The Python API and the `answer` / `predict` commands on checkpoints saved by transformers."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import pytest

from squadkit import QuestionAnswerer, pipeline
from squadkit.errors import SquadkitError

CONTEXT = "paris is the capital of france . the river is north of the city . the king was born in rome ."


@pytest.fixture(scope="module")
def qa(tiny_bert):
    return pipeline("question-answering", model=str(tiny_bert), device="cpu")


class CliResult:
    def __init__(self, returncode: int, stdout: str, stderr: str):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run_cli(*args):
    """Run the CLI in this process (fast); one test below runs the real console entry point."""
    from typer.testing import CliRunner

    from squadkit.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


def test_console_entry_point_runs(tiny_bert):
    result = subprocess.run([sys.executable, "-m", "squadkit", "answer", "--model", str(tiny_bert), "-q", "where ?",
                             "-c", CONTEXT, "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["answer"] in CONTEXT
    result = subprocess.run([sys.executable, "-m", "squadkit", "--help"], capture_output=True, text=True, timeout=300)
    for command in ("answer", "predict", "evaluate", "data"):
        assert command in result.stdout


def test_call_forms_agree(qa):
    one = qa(question="where was the king born ?", context=CONTEXT)
    assert set(one) == {"score", "start", "end", "answer"}
    assert one["answer"] == CONTEXT[one["start"] : one["end"]]
    assert qa({"question": "where was the king born ?", "context": CONTEXT}) == one
    many = qa([{"question": "where was the king born ?", "context": CONTEXT}] * 3, batch_size=2)
    assert many == [one] * 3
    assert qa(question=["where was the king born ?"] * 2, context=CONTEXT) == [one] * 2
    top = qa(question="where was the king born ?", context=CONTEXT, top_k=4)
    assert isinstance(top, list) and len(top) == 4
    assert top[0] == one
    assert [a["score"] for a in top] == sorted((a["score"] for a in top), reverse=True)


def test_handle_impossible_answer_adds_the_null_answer(qa):
    answers = qa(question="who is the queen ?", context=CONTEXT, top_k=10_000, handle_impossible_answer=True)
    nulls = [a for a in answers if a["answer"] == ""]
    assert len(nulls) == 1 and nulls[0]["start"] == nulls[0]["end"] == 0
    assert all(a["answer"] for a in qa(question="who is the queen ?", context=CONTEXT, top_k=10_000))


def test_max_answer_len_bounds_answers(qa):
    for answer in qa(question="what ?", context=CONTEXT, top_k=10, max_answer_len=2):
        assert len(qa.tokenizer(answer["answer"], add_special_tokens=False)["input_ids"]) <= 2


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"question": "", "context": CONTEXT}, "empty"),
        ({"question": "q", "context": ""}, "empty"),
        ({"question": 5, "context": CONTEXT}, "string"),
        ({"question": "q", "context": CONTEXT, "top_k": 0}, "top_k"),
        ({"question": "q", "context": CONTEXT, "doc_stride": 384}, "doc_stride"),
        ({"question": "q", "context": CONTEXT, "max_answer_len": 0}, "max_answer_len"),
        ({"question": "q"}, "both question and context"),
    ],
)
def test_bad_input_is_a_value_error(qa, kwargs, message):
    with pytest.raises(ValueError, match=message):
        qa(**kwargs)


def test_bad_task_and_missing_model(tmp_path):
    with pytest.raises(SquadkitError, match="question-answering"):
        pipeline("text-generation")
    with pytest.raises(SquadkitError, match="local folder"):
        QuestionAnswerer("no-such-org/no-such-model-xyz")


def test_not_a_qa_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(SquadkitError, match="question-answering"):
        QuestionAnswerer(str(tmp_path))


def test_loaded_by_transformers_and_in_memory(tiny_bert, qa):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_bert))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    in_memory = pipeline("question-answering", model=model, tokenizer=tokenizer)
    assert in_memory(question="where ?", context=CONTEXT) == qa(question="where ?", context=CONTEXT)


def test_million_character_context_answers(qa):
    import resource

    context = (CONTEXT + " ") * (1_000_000 // (len(CONTEXT) + 1) + 1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    answer = qa(question="where was the king born ?", context=context, batch_size=8)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert answer["answer"] == context[answer["start"] : answer["end"]]
    assert grown_mb < 600, f"peak memory grew by {grown_mb:.0f} MB"


def test_answer_command_prints_the_pipeline_answer(tiny_bert, qa, tmp_path):
    result = run_cli("answer", "--model", tiny_bert, "--question", "where was the king born ?", "--context", CONTEXT,
                     "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(json.dumps(qa(question="where was the king born ?", context=CONTEXT)))
    context_file = tmp_path / "passage.txt"
    context_file.write_text(CONTEXT, encoding="utf-8")
    result = run_cli("answer", "--model", tiny_bert, "-q", "where ?", "--context-file", context_file, "--top-k", "3",
                     "--handle-impossible-answer", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 3


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--question", "", "--context", CONTEXT], "empty"),
        (["--question", "q", "--context", CONTEXT, "--top-k", "0"], "--top-k must be a positive integer"),
        (["--question", "q", "--context", CONTEXT, "--doc-stride", "400"], "--doc-stride (400) must be smaller"),
        (["--question", "q"], "--context"),
        (["--question", "q", "--context-file", "/nonexistent/passage.txt"], "/nonexistent/passage.txt"),
    ],
)
def test_answer_command_bad_input(tiny_bert, args, fragment):
    result = run_cli("answer", "--model", tiny_bert, "--device", "cpu", *args)
    assert result.returncode == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_answer_command_unreachable_model_is_one_line():
    result = run_cli("answer", "--model", "no-such-org/no-such-model-xyz", "-q", "q", "-c", "c")
    assert result.returncode == 2
    assert "local folder" in result.stderr and "Traceback" not in result.stderr


def _squad_file(path, with_answers=True):
    qas = [
        {"id": "q1", "question": "where was the king born ?",
         "answers": [{"text": "rome", "answer_start": CONTEXT.index("rome")}] if with_answers else [], "is_impossible": False},
        {"id": "q2", "question": "who is the queen ?", "answers": [], "is_impossible": True},
        {"id": "q3", "question": "what is the capital of france ?",
         "answers": [{"text": "paris", "answer_start": 0}] if with_answers else [], "is_impossible": False},
    ]
    if not with_answers:
        for q in qas:
            q.pop("is_impossible")
    data = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_predict_writes_run_squad_files_and_scores(tiny_bert, tmp_path):
    data = _squad_file(tmp_path / "dev.json")
    out = tmp_path / "out"
    result = run_cli("predict", "--model", tiny_bert, "--data", data, "--output-dir", out, "--device", "cpu",
                     "--max-seq-length", "32", "--doc-stride", "8")
    assert result.returncode == 0, result.stderr
    predictions = json.loads((out / "predictions.json").read_text())
    nbest = json.loads((out / "nbest_predictions.json").read_text())
    null_odds = json.loads((out / "null_odds.json").read_text())
    assert list(predictions) == ["q1", "q2", "q3"] == list(nbest) == list(null_odds)
    for qid, entries in nbest.items():
        assert len(entries) <= 21  # n_best_size, plus the null answer run_squad appends when it fell outside
        assert abs(sum(e["probability"] for e in entries) - 1.0) < 1e-9
        assert {"text", "probability", "start_logit", "end_logit", "start", "end"} <= set(entries[0])
        for e in entries:
            if e["text"] and e["text"] != "empty":
                assert CONTEXT[e["start"] : e["end"]] == e["text"]
        # "" is predicted exactly when the null odds exceed the threshold 0.0
        assert (predictions[qid] == "") == (null_odds[qid] > 0.0)
    null_probs = json.loads((out / "null_probs.json").read_text())  # the probabilities evaluate -n expects
    assert list(null_probs) == list(null_odds)
    assert all(null_probs[q] == pytest.approx(1 / (1 + math.exp(-null_odds[q]))) for q in null_odds)
    results = json.loads((out / "eval_results.json").read_text())
    assert results["total"] == 3 and results["HasAns_total"] == 2 and results["NoAns_total"] == 1
    assert "best_f1_thresh" in results
    assert json.loads(result.stdout) == results


def test_predict_uses_the_saved_threshold(tiny_bert, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    data = _squad_file(tmp_path / "dev.json")
    (model / "squadkit.json").write_text(json.dumps({"null_score_diff_threshold": 1e9}))
    assert run_cli("predict", "-m", model, "-d", data, "-o", tmp_path / "a", "--device", "cpu").returncode == 0
    assert all(json.loads((tmp_path / "a" / "predictions.json").read_text()).values())  # never ""
    (model / "squadkit.json").write_text(json.dumps({"null_score_diff_threshold": -1e9}))
    assert run_cli("predict", "-m", model, "-d", data, "-o", tmp_path / "b", "--device", "cpu").returncode == 0
    assert set(json.loads((tmp_path / "b" / "predictions.json").read_text()).values()) == {""}
    assert run_cli("predict", "-m", model, "-d", data, "-o", tmp_path / "c", "--device", "cpu",
                   "--ignore-saved-threshold").returncode == 0
    odds = json.loads((tmp_path / "c" / "null_odds.json").read_text())
    preds = json.loads((tmp_path / "c" / "predictions.json").read_text())
    assert all((preds[q] == "") == (odds[q] > 0.0) for q in preds)


def test_predict_without_gold_answers_writes_no_eval_results(tiny_bert, tmp_path):
    data = _squad_file(tmp_path / "questions.json", with_answers=False)
    result = run_cli("predict", "-m", tiny_bert, "-d", data, "-o", tmp_path / "out", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "predictions.json").exists()
    assert not (tmp_path / "out" / "eval_results.json").exists()


@pytest.mark.parametrize(
    "content,fragment",
    [("{not json", "malformed JSON"), ('{"data": [{"title": "t", "paragraphs": [{"context": 3, "qas": []}]}]}', "context")],
)
def test_predict_bad_data_file(tiny_bert, tmp_path, content, fragment):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = run_cli("predict", "-m", tiny_bert, "-d", bad, "-o", tmp_path / "out", "--device", "cpu")
    assert result.returncode == 2
    assert fragment in result.stderr and str(bad) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_predict_legacy_and_lower_case_flags_run(tiny_bert, tmp_path):
    data = _squad_file(tmp_path / "dev.json")
    result = run_cli("predict", "-m", tiny_bert, "-d", data, "-o", tmp_path / "out", "--device", "cpu", "--legacy",
                     "--do-lower-case", "--n-best-size", "5", "--max-answer-length", "4")
    assert result.returncode == 0, result.stderr
    nbest = json.loads((tmp_path / "out" / "nbest_predictions.json").read_text())
    assert all(len(v) <= 6 for v in nbest.values())  # 5 + the null answer run_squad appends


def test_rounding_batch_widths_changes_no_prediction(tiny_bert):
    """Batches padded to a multiple (``model.pad_multiple``, as training does on a GPU): padding is
    masked, so predict's files and the pipeline's answers are the same as with exact widths."""
    from types import SimpleNamespace

    from squadkit.model import load as load_model
    from squadkit.predict import predict_squad
    from squadkit.settings import AnswerSettings

    model = load_model(str(tiny_bert), device="cpu")
    assert model.pad_multiple == 1  # the default on every device (see TorchQAModel.pad_multiple)
    examples = [SimpleNamespace(id=f"q{i}", question=q, context=CONTEXT[: 40 + 17 * i]) for i, q in
                enumerate(["where is paris ?", "who was born in rome ?", "what is north ?", "which river ?"])]
    settings = AnswerSettings(max_seq_length=32, doc_stride=8)
    runs = {}
    for multiple in (1, 64):
        model = dataclasses.replace(model, pad_multiple=multiple)
        preds = predict_squad(model, examples, settings, batch_size=3)
        qa = pipeline("question-answering", model=model)
        answers = qa(question=[e.question for e in examples], context=[e.context for e in examples], top_k=3)
        runs[multiple] = (preds, answers)
    (p1, a1), (p64, a64) = runs[1], runs[64]
    assert p1.predictions == p64.predictions
    for q in p1.nbest:
        assert [e.text for e in p1.nbest[q]] == [e.text for e in p64.nbest[q]]
        assert [e.probability for e in p1.nbest[q]] == pytest.approx([e.probability for e in p64.nbest[q]], abs=1e-5)
    assert [[x["answer"] for x in a] for a in a1] == [[x["answer"] for x in a] for a in a64]
    assert [x["score"] for a in a1 for x in a] == pytest.approx([x["score"] for a in a64 for x in a], abs=1e-5)
