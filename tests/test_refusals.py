"""Refuse what cannot work, before any work: one line, exit code 2 (ValueError from Python).

No test here contacts a hub: offline mode is on for the session (conftest), and the one test
that turns it off points the Hub endpoint at a closed port on this machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_train_learns import make_task_model, write_task_data
from typer.testing import CliRunner

from squadkit import QuestionAnswerer
from squadkit.cli import app
from squadkit.errors import SquadkitError


def cli(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


def one_error_line(res) -> str:
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.fixture(scope="module")
def encoder_only(tmp_path_factory, tiny_bert) -> Path:
    """tiny_bert's encoder saved as a plain BertModel: no question-answering head."""
    from transformers import AutoTokenizer, BertModel

    folder = tmp_path_factory.mktemp("encoder")
    BertModel.from_pretrained(str(tiny_bert)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(tiny_bert)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def headless_without_architectures(tmp_path_factory, encoder_only) -> Path:
    """The same encoder with no 'architectures' in its config: only loading can tell the head is missing."""
    import shutil

    folder = tmp_path_factory.mktemp("headless") / "m"
    shutil.copytree(encoder_only, folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("architectures", None)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_checkpoint_without_qa_head_is_refused_by_every_consumer(encoder_only, headless_without_architectures,
                                                                    tmp_path):
    for folder in (encoder_only, headless_without_architectures):
        with pytest.raises(ValueError, match="question-answering"):
            QuestionAnswerer(str(folder))
        line = one_error_line(cli("answer", "-m", folder, "-q", "where ?", "-c", "paris is in france ."))
        assert "question-answering" in line
        data = write_task_data(tmp_path / "d.json", 2, seed=1)
        assert "question-answering" in one_error_line(cli("predict", "-m", folder, "-d", data, "-o", tmp_path / "p"))
        assert not (tmp_path / "p").exists()
        assert "question-answering" in one_error_line(cli("serve", "-m", folder, "--port", "0"))
        assert "question-answering" in one_error_line(cli("export", "-m", folder, "-o", tmp_path / "x"))


def test_windows_longer_than_the_model_are_refused_before_work(tiny_bert, tmp_path):
    with pytest.raises(ValueError, match=r"max_seq_len=1000 is longer than .* \(512 tokens\)"):
        QuestionAnswerer(str(tiny_bert), max_seq_len=1000)
    qa = QuestionAnswerer(str(tiny_bert))
    with pytest.raises(ValueError, match="max_seq_len=1000"):
        qa(question="where ?", context="paris .", max_seq_len=1000)
    line = one_error_line(cli("answer", "-m", tiny_bert, "-q", "where ?", "-c", "paris .", "--max-seq-len", 1000))
    assert "--max-seq-len=1000 is longer than" in line
    data = write_task_data(tmp_path / "d.json", 2, seed=1)
    line = one_error_line(cli("predict", "-m", tiny_bert, "-d", data, "-o", tmp_path / "p", "--max-seq-length", 1000))
    assert "--max-seq-length=1000 is longer than" in line and not (tmp_path / "p").exists()


def test_train_refuses_too_long_windows_and_leaves_the_output_folder_as_it_was(tmp_path):
    base = make_task_model(tmp_path / "base", hidden=32)  # 130 positions: at most 128 tokens
    data = write_task_data(tmp_path / "t.json", 2, seed=1)
    line = one_error_line(cli("train", "--model_name_or_path", base, "--do_train", "--train_file", data,
                              "--output_dir", tmp_path / "out", "--max_seq_length", 1000))
    assert "--max_seq_length=1000 is longer than" in line and "(128 tokens)" in line  # the flag as typed
    assert not (tmp_path / "out").exists()
    existing = tmp_path / "kept"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    one_error_line(cli("train", "-m", base, "--do-train", "--train-file", data, "-o", existing,
                       "--overwrite-output-dir", "--max-seq-length", 1000))
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def test_missing_local_paths_and_unreachable_hub_ids_fail_fast_without_a_hub_call(tmp_path, monkeypatch):
    start = time.monotonic()
    for name in ("./nope", str(tmp_path / "missing"), "runs/a/b", "~/no-such-model-here"):
        with pytest.raises(ValueError, match="folder not found"):
            QuestionAnswerer(name)
        assert "folder not found" in one_error_line(cli("answer", "-m", name, "-q", "a", "-c", "b"))
    # offline mode (set for the session): a hub id not in the cache
    line = one_error_line(cli("answer", "-m", "tinyy", "-q", "a", "-c", "b"))
    assert "HF_HUB_OFFLINE" in line and "local folder" in line
    # not offline, but the hub cannot be reached: a closed port on this machine stands in for it
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    data = write_task_data(tmp_path / "d.json", 2, seed=1)
    line = one_error_line(cli("predict", "-m", "someone/some-model", "-d", data, "-o", tmp_path / "o"))
    assert "cannot be reached" in line and "HF_HUB_OFFLINE=1" in line
    assert time.monotonic() - start < 20


def test_python_api_errors_name_the_keyword_and_the_cli_the_flag(tiny_bert):
    qa = QuestionAnswerer(str(tiny_bert))
    with pytest.raises(ValueError, match="^top_k must be a positive integer, got 0"):
        qa(question="a ?", context="b .", top_k=0)
    assert "--top-k must be a positive integer, got 0" in one_error_line(
        cli("answer", "-m", tiny_bert, "-q", "a ?", "-c", "b .", "--top-k", 0))


def test_only_squadkits_own_errors_are_bad_input(monkeypatch, tmp_path):
    """Anything else is a bug and must show as one, not as 'error: ...' with exit code 2."""
    import squadkit.metrics.files

    def broken(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(squadkit.metrics.files, "evaluate_files", broken)
    res = CliRunner().invoke(app, ["evaluate", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert isinstance(res.exception, KeyError)


def test_load_best_model_at_end_needs_keep_best(tmp_path):
    from squadkit.train import TrainConfig

    with pytest.raises(SquadkitError, match="load_best_model_at_end needs keep_best"):
        TrainConfig(model_name_or_path="m", output_dir=str(tmp_path), train_file="t", predict_file="d",
                    eval_steps=2, load_best_model_at_end=True, keep_best=False).validate()


def test_an_exported_model_refuses_windows_longer_than_its_source(tiny_bert, tmp_path):
    pytest.importorskip("onnxruntime")
    from squadkit.export import export_model

    folder = export_model(str(tiny_bert), tmp_path / "onnx")
    with pytest.raises(ValueError, match=r"max_seq_len=1000 is longer than .* \(512 tokens\)"):
        QuestionAnswerer(str(folder), max_seq_len=1000)
    line = one_error_line(cli("answer", "-m", folder, "-q", "where ?", "-c", "paris .", "--max-seq-len", 1000))
    assert "--max-seq-len=1000" in line


def test_a_folder_without_config_is_named_as_not_a_model_folder(tmp_path):
    """An output folder of a run that was killed before it saved: one short line, not transformers' list of
    every model type it knows."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "log.jsonl").write_text("{}\n")
    line = one_error_line(cli("answer", "-m", folder, "-q", "where ?", "-c", "paris is in france ."))
    assert "it has no config.json" in line and str(folder) in line and len(line) < 300
    line = one_error_line(cli("predict", "-m", folder, "-d", write_task_data(tmp_path / "d.json", 2, seed=1),
                              "-o", tmp_path / "p"))
    assert "it has no config.json" in line and not (tmp_path / "p").exists()
