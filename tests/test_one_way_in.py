"""The core path every command takes: a model folder read once per load, each setting of one call
checked once, and the ask rule decided by the settings table."""

from __future__ import annotations

import collections
import json
import pathlib
import shutil

import pytest
from typer.testing import CliRunner

import squadkit.settings as settings_module
from squadkit.model_folder import SETTINGS_FILE, ModelSettings, write_settings


@pytest.fixture
def folder(tiny_bert, tmp_path) -> pathlib.Path:
    """The tiny BERT with a squadkit.json that holds a threshold and an answer length."""
    out = tmp_path / "model"
    shutil.copytree(tiny_bert, out)
    write_settings(out, ModelSettings(max_answer_length=7, null_score_diff_threshold=-1.0, version_2_with_negative=True))
    return out


@pytest.fixture
def folder_reads(monkeypatch) -> collections.Counter:
    """How often each squadkit.json is read (every reader goes through Path.read_text)."""
    reads: collections.Counter = collections.Counter()
    real = pathlib.Path.read_text

    def read_text(self, *args, **kwargs):
        if self.name == SETTINGS_FILE:
            reads[str(self)] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", read_text)
    return reads


@pytest.fixture
def checks(monkeypatch) -> collections.Counter:
    """How often each setting's value is checked (settings.check_setting is the one check)."""
    counted: collections.Counter = collections.Counter()
    real = settings_module.check_setting

    def check_setting(name, value, as_given):
        counted[name] += 1
        return real(name, value, as_given)

    monkeypatch.setattr(settings_module, "check_setting", check_setting)
    return counted


def test_load_reads_the_folder_once_and_carries_everything(folder, folder_reads):
    from squadkit.model import load

    model = load(str(folder), device="cpu")
    assert sum(folder_reads.values()) == 1
    assert model.settings.max_answer_length == 7 and model.calibrator is None and model.ask_calibrator is None
    assert model.backend == "torch" and model.precision == "fp32" and model.model_file is None
    assert model.window_limit == 512 and model.head_sha256 and load(model) is model


def test_every_consumer_reads_the_folder_once(folder, folder_reads, docs_index, tmp_path):
    from squadkit import DocumentQA, pipeline
    from squadkit.predict import run_predict

    qa = pipeline("question-answering", model=str(folder), device="cpu")
    assert qa(question="who was born ?", context="the king was born in rome .", top_k=1) is not None
    assert sum(folder_reads.values()) == 1
    dqa = DocumentQA(docs_index, model=str(folder), device="cpu")
    dqa.ask("where was the queen born")
    dqa.close()
    assert sum(folder_reads.values()) == 2
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"context": "the king was born in rome .",
                                                                         "qas": [{"id": "q1", "question": "where ?",
                                                                                  "answers": [], "is_impossible": True}]}]}]}))
    run_predict(str(folder), data, tmp_path / "out", device="cpu")
    assert sum(folder_reads.values()) == 3


def test_each_setting_of_one_answer_is_checked_once(folder, checks):
    from squadkit.cli import app

    res = CliRunner().invoke(app, ["answer", "-q", "who was born ?", "-c", "the old king was born in rome .",
                                   "-m", str(folder), "--device", "cpu", "--max-answer-length", "5", "--top-k", "2",
                                   "--max-seq-length", "48", "--doc-stride", "16"])
    assert res.exit_code == 0, res.output
    assert checks == {"max_answer_length": 1, "top_k": 1, "max_seq_length": 1, "doc_stride": 1}


def test_each_setting_of_one_ask_is_checked_once(tiny_bert, docs_index, checks):
    from squadkit.cli import app

    res = CliRunner().invoke(app, ["ask", str(docs_index), "where was the queen born", "-m", str(tiny_bert),
                                   "--device", "cpu", "-k", "2", "--top-k", "2", "--null-score-diff-threshold", "1.5",
                                   "--max-answer-length", "6"])
    assert res.exit_code == 0, res.output
    assert checks == {"k": 1, "top_k": 1, "null_score_diff_threshold": 1, "max_answer_length": 1}
    assert json.loads(res.output)["threshold"] == 1.5


def test_each_setting_of_one_http_ask_is_checked_once(tiny_bert, docs_index, checks):
    from fastapi.testclient import TestClient

    from squadkit.pipeline import QuestionAnswerer
    from squadkit.serve import ServeSettings, create_app

    app = create_app(QuestionAnswerer(str(tiny_bert), device="cpu"), ServeSettings(access_log=False), index=docs_index)
    with TestClient(app) as client:
        checks.clear()
        response = client.post("/v1/ask", json={"question": "where was the queen born", "k": 3, "top_k": 2,
                                                "retrieval_weight": 0.5})
    assert response.status_code == 200, response.text
    assert checks == {"k": 1, "top_k": 1, "retrieval_weight": 1}


@pytest.mark.parametrize("scoring, folder_settings, threshold, source", [
    # the folder's ask_threshold stands for the rule it was learned under ...
    (None, ModelSettings(null_score_diff_threshold=-1.5, ask_threshold=2.5, ask_scoring="raw"), 2.5, "ask_threshold"),
    # ... the other rule falls back to the single-passage threshold (raw) or the default (normalized)
    ("normalized", ModelSettings(null_score_diff_threshold=-1.5, ask_threshold=2.5, ask_scoring="raw"), 0.0, None),
    (None, ModelSettings(null_score_diff_threshold=-1.5), -1.5, "null_score_diff_threshold"),
    ("raw", ModelSettings(null_score_diff_threshold=-1.5, ask_threshold=2.5, ask_scoring="normalized"), -1.5,
     "null_score_diff_threshold"),
])
def test_the_ask_rule_is_rows_of_the_settings_table(scoring, folder_settings, threshold, source):
    from test_vocabulary import FakeModel

    resolved = settings_module.resolve(FakeModel(folder_settings), "ask", {"scoring": scoring})
    assert resolved.scoring == (scoring or folder_settings.ask_rule or "raw")
    assert resolved.null_score_diff_threshold == threshold
    where = resolved.sources["null_score_diff_threshold"]
    assert (source in where) if source else where == "default"


def test_ask_applies_min_confidence_with_the_ask_calibrator_alone(tiny_bert, docs_index, tmp_path):
    """A folder whose only calibrator is ask's: min_confidence is ask's rule over the passages, not a
    per-passage rule that would need the single-passage calibrator."""
    from squadkit import DocumentQA
    from squadkit.calibration import Calibrator

    calibrator = Calibrator((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.0, 1.0, 0.0, 0.0), (0.0, -1.0, 0.0, 0.0))
    out = tmp_path / "model"
    shutil.copytree(tiny_bert, out)
    write_settings(out, ModelSettings(ask_threshold=0.0, ask_scoring="raw", ask_calibration=calibrator.to_json()))
    dqa = DocumentQA(docs_index, model=str(out), device="cpu", min_confidence=0.99)
    try:
        assert dqa.settings.calibrator == "ask"
        result = dqa.ask("where was the queen born")
    finally:
        dqa.close()
    assert result.confidence is not None and (result.no_answer or result.answers[0].confidence >= 0.99)
