"""The model folder is the contract: what `train` decided is read by every consumer.

A tiny model is trained here at 32-token windows (the defaults are 384); the pipeline, `answer`,
`predict`, `serve` and `export` must all answer with 32-token windows unless told otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_train_learns import make_task_model, one_thread, write_task_data  # noqa: F401
from typer.testing import CliRunner

from squadkit import pipeline
from squadkit.model_folder import SETTINGS_FILE, ModelSettings, read_settings, settings_from_json
from squadkit.cli import app
from squadkit.errors import SquadkitError

WINDOW = 32
LONG_CONTEXT = " . ".join(f"kabo likes {w}" for w in ["red", "blue", "tea", "jazz", "rice", "snow"] * 8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A model trained by `squadkit train` at 32-token windows, stride 8, answers of at most 6 tokens."""
    import torch

    from squadkit.train import TrainConfig, train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trained32")
    base = make_task_model(root / "base", hidden=32)
    data = write_task_data(root / "train.json", 8, seed=1)
    dev = write_task_data(root / "dev.json", 4, seed=2)
    train(TrainConfig(model_name_or_path=str(base), output_dir=str(root / "out"), train_file=str(data),
                      predict_file=str(dev), do_eval=True, version_2_with_negative=True, max_seq_length=WINDOW,
                      doc_stride=8, max_query_length=12, max_answer_length=6, per_gpu_train_batch_size=4,
                      max_steps=3, save_steps=2, quiet=True))
    torch.set_num_threads(before)
    return root / "out"


def record_widths(monkeypatch) -> list[int]:
    """Every batch width any torch or ONNX model is asked to score."""
    from squadkit.backends.onnx import OnnxQAModel
    from squadkit.backends.torch import TorchQAModel

    widths: list[int] = []
    for cls in (TorchQAModel, OnnxQAModel):
        original = cls.logits

        def spy(self, batch, _original=original):
            widths.append(batch.input_ids.shape[1])
            return _original(self, batch)

        monkeypatch.setattr(cls, "logits", spy)
    return widths


def test_train_writes_one_settings_layout_for_the_model_and_every_checkpoint(trained):
    final = json.loads((trained / SETTINGS_FILE).read_text())
    step2 = json.loads((trained / "checkpoint-2" / SETTINGS_FILE).read_text())
    for saved in (final, step2):
        assert saved["format"] == "squadkit-model-settings" and saved["schema_version"] == 1
        assert (saved["max_seq_length"], saved["doc_stride"], saved["max_query_length"]) == (WINDOW, 8, 12)
        assert saved["max_answer_length"] == 6 and saved["version_2_with_negative"] is True
        assert saved["base_model"].endswith("base")
    assert final["null_score_diff_threshold"] == json.loads((trained / "eval_results.json").read_text())["best_f1_thresh"]
    assert "null_score_diff_threshold" in step2 and step2["training"]["global_step"] == 2
    # the card says what is true: the threshold, and that the pipeline abstains by default for this model
    card = (trained / "README.md").read_text()
    assert f"{final['null_score_diff_threshold']:.4f}" in card and "handle_impossible_answer` is on" in card


def test_pipeline_answers_with_the_folders_windows_unless_told(trained, monkeypatch):
    widths = record_widths(monkeypatch)
    qa = pipeline("question-answering", model=str(trained))
    in_force = qa.settings_in_force()
    assert in_force.values["max_seq_length"] == WINDOW and in_force.sources["max_seq_length"].startswith("model folder")
    assert in_force.values["max_answer_length"] == 6 and in_force.values["handle_impossible_answer"] is True
    assert in_force.values["null_score_diff_threshold"] == read_settings(trained).null_score_diff_threshold
    qa(question="what does kabo like ?", context=LONG_CONTEXT)
    assert max(widths) == WINDOW
    widths.clear()
    qa(question="what does kabo like ?", context=LONG_CONTEXT, max_seq_len=48)  # an explicit argument wins
    assert max(widths) == 48
    widths.clear()
    pipeline("question-answering", model=str(trained), max_seq_len=40)(question="what does kabo like ?",
                                                                        context=LONG_CONTEXT)
    assert max(widths) == 40


def test_predict_answer_and_serve_use_the_folders_settings(trained, tmp_path, monkeypatch):
    widths = record_widths(monkeypatch)
    data = write_task_data(tmp_path / "dev.json", 2, seed=9)
    res = CliRunner().invoke(app, ["predict", "-m", str(trained), "-d", str(data), "-o", str(tmp_path / "preds")])
    assert res.exit_code == 0, res.output
    assert max(widths) <= WINDOW
    widths.clear()
    res = CliRunner().invoke(app, ["answer", "-m", str(trained), "-q", "what does kabo like ?", "-c", LONG_CONTEXT,
                                   "--explain"])
    assert res.exit_code == 0, res.output
    explained = json.loads(res.stdout)
    assert explained["settings"]["max_seq_length"]["value"] == WINDOW
    assert explained["settings"]["max_seq_length"]["from"].startswith("model folder")
    assert explained["settings"]["top_k"] == {"value": 1, "from": "default"}
    assert max(widths) == WINDOW

    from fastapi.testclient import TestClient

    from squadkit.serve import create_app

    with TestClient(create_app(str(trained))) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            import time

            time.sleep(0.05)
        info = client.get("/v1/model").json()["model_settings"]
        assert info["in_force"]["max_seq_length"]["value"] == WINDOW and info["saved"]["max_seq_length"] == WINDOW
        widths.clear()
        assert client.post("/v1/answer", json={"question": "what does kabo like ?", "context": LONG_CONTEXT}).status_code == 200
        assert max(widths) == WINDOW


def test_export_carries_the_settings_to_onnx(trained, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    from squadkit.export import export_model

    folder = export_model(str(trained), tmp_path / "onnx")
    assert read_settings(folder) == read_settings(trained)
    widths = record_widths(monkeypatch)
    qa = pipeline(model=str(folder))
    assert qa.model.backend == "onnx" and qa.settings_in_force().values["max_seq_length"] == WINDOW
    qa(question="what does kabo like ?", context=LONG_CONTEXT)
    assert max(widths) == WINDOW


def test_saved_threshold_moves_the_empty_answer_in_pipeline_mode(tiny_bert, tmp_path):
    """Pipeline mode ranks the empty answer as if its probability were p_null * exp(-threshold)."""
    import shutil

    model = tmp_path / "m"
    shutil.copytree(tiny_bert, model)
    q, c = "where is the city ?", "the city of paris is in france , north of rome ."
    plain = pipeline(model=str(model))(question=q, context=c, top_k=30, handle_impossible_answer=True)
    null = next(a for a in plain if a["answer"] == "")
    best_span = max(a["score"] for a in plain if a["answer"])
    for threshold in (-50.0, 50.0, float(np.log(null["score"] / best_span)) + 0.01,
                      float(np.log(null["score"] / best_span)) - 0.01):
        (model / SETTINGS_FILE).write_text(json.dumps({"schema_version": 1, "version_2_with_negative": True,
                                                       "null_score_diff_threshold": threshold}))
        top = pipeline(model=str(model))(question=q, context=c)
        expect_empty = np.log(null["score"]) - np.log(best_span) > threshold
        assert (top["answer"] == "") == expect_empty, threshold
        if expect_empty:
            assert top["score"] == pytest.approx(null["score"])  # the score stays the probability


def test_construction_options_are_call_defaults_and_unknown_keywords_are_refused(tiny_bert):
    qa = pipeline("question-answering", model=str(tiny_bert), top_k=3, max_seq_len=64, handle_impossible_answer=True)
    out = qa(question="where is the city ?", context="the city of paris is in france , north of rome .")
    assert isinstance(out, list) and len(out) == 3
    assert qa.settings_in_force().values["max_seq_length"] == 64
    assert isinstance(qa(question="where ?", context="paris is in france .", top_k=1), dict)  # a call overrides
    with pytest.raises(ValueError, match="top_kk"):
        pipeline("question-answering", model=str(tiny_bert), top_kk=3)
    with pytest.raises(ValueError, match="max_seq_lenn"):
        qa(question="where ?", context="paris .", max_seq_lenn=10)


def test_settings_file_reader_old_layout_newer_schema_and_bad_fields(tmp_path):
    old = {"null_score_diff_threshold": -1.5, "window": {"mode": "squad", "max_seq_length": 256, "doc_stride": 64,
                                                          "max_query_length": 32},
           "do_lower_case": True, "version_2_with_negative": True,
           "training": {"max_answer_length": 20, "model_name_or_path": "base"}}
    s = settings_from_json(old, "x")
    assert s == ModelSettings(max_seq_length=256, doc_stride=64, max_query_length=32, do_lower_case=True,
                              max_answer_length=20, null_score_diff_threshold=-1.5, version_2_with_negative=True,
                              base_model="base", training=old["training"])
    with pytest.raises(SquadkitError, match="newer squadkit"):
        settings_from_json({"schema_version": 99}, "f.json")
    with pytest.raises(SquadkitError, match="'max_seq_length' must be int"):
        settings_from_json({"schema_version": 1, "max_seq_length": "384"}, "f.json")
    (tmp_path / SETTINGS_FILE).write_text("{not json")
    with pytest.raises(SquadkitError, match="cannot read squadkit settings"):
        read_settings(tmp_path)
