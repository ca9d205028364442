"""The first hour: --version, on/off flags, readable help, the user's umask, offline /docs,
progress off a terminal, v1.1 data, swapped evaluate files, null-odds histograms."""

from __future__ import annotations

import io
import json
import os
import re
import stat
from pathlib import Path

import pytest
from test_train_learns import make_task_model, one_thread, to_squad, task_records, write_task_data  # noqa: F401
from typer.testing import CliRunner

import squadkit
from squadkit.cli import app


def cli(*args, env=None):
    res = CliRunner().invoke(app, [str(a) for a in args], env=env)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


def test_version():
    res = cli("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"squadkit {squadkit.__version__}"


def test_on_off_flags_take_both_forms(tiny_bert):
    args = ("answer", "-m", tiny_bert, "-q", "where is the city ?", "-c", "the city of paris is in france .",
            "--top-k", 30)
    on = json.loads(cli(*args, "--handle-impossible-answer").stdout)
    off = json.loads(cli(*args, "--no-handle-impossible-answer").stdout)
    assert any(a["answer"] == "" for a in on) and not any(a["answer"] == "" for a in off)


def test_train_help_is_readable_at_80_columns_and_lists_each_option_once():
    res = cli("train", "--help", env={"COLUMNS": "80"})
    assert res.exit_code == 0
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in res.stdout
    assert "--max-seq-length" in res.stdout and "--max_seq_length" not in res.stdout.split("Options:")[1]
    assert "--group-by-length / --no-group-by-length" in res.stdout
    for hidden in ("--local-rank", "--fp16-opt-level"):  # run_squad's no-op flags: accepted, not listed
        assert hidden not in res.stdout


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_files_and_folders_follow_the_users_umask(tiny_bert, tmp_path, mask, one_thread):  # noqa: F811
    old = os.umask(mask)
    try:
        data = write_task_data(tmp_path / "d.json", 2, seed=1)
        assert cli("predict", "-m", tiny_bert, "-d", data, "-o", tmp_path / "preds").exit_code == 0
        base = make_task_model(tmp_path / "base", hidden=32)
        assert cli("train", "-m", base, "--do-train", "--train-file", data, "-o", tmp_path / "out", "--max-steps", 1,
                   "--save-steps", 1, "--max-seq-length", 64, "--doc-stride", 32, "--quiet").exit_code == 0
        pytest.importorskip("onnxruntime")
        assert cli("export", "-m", tmp_path / "out", "-o", tmp_path / "onnx").exit_code == 0
    finally:
        os.umask(old)
    files = [tmp_path / "preds" / "predictions.json", tmp_path / "preds" / "null_odds.json",
             tmp_path / "out" / "model.safetensors", tmp_path / "out" / "README.md", tmp_path / "out" / "squadkit.json",
             tmp_path / "out" / "checkpoint-1" / "model.safetensors", tmp_path / "onnx" / "model.onnx"]
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, f
    for d in (tmp_path / "preds", tmp_path / "out" / "checkpoint-1", tmp_path / "onnx"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o777 & ~mask, d


def test_docs_need_no_network(tiny_bert):
    from fastapi.testclient import TestClient

    from squadkit import QuestionAnswerer
    from squadkit.serve import create_app

    with TestClient(create_app(QuestionAnswerer(str(tiny_bert)))) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert not re.search(r"""(src|href)=["']https?://""", page.text)  # nothing from a CDN
        assets = re.findall(r"""(?:src|href)=["'](/[^"']+)["']""", page.text)
        assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
        for asset in assets:
            assert client.get(asset).status_code == 200, asset


def test_progress_lines_off_a_terminal():
    from squadkit.progress import ProgressLines

    stream = io.StringIO()  # not a TTY
    progress = ProgressLines("predict", 10, stream=stream, every_s=0.0)
    for _ in range(10):
        progress(1)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) >= 9 and lines[0].startswith("predict: 1/10 (10%)") and "ETA" in lines[0]


def test_train_prints_a_line_every_5_percent_off_a_terminal(tmp_path, capsys, one_thread):  # noqa: F811
    from squadkit.train import TrainConfig, train

    base = make_task_model(tmp_path / "base", hidden=16, layers=1)
    data = write_task_data(tmp_path / "d.json", 4, seed=1)
    train(TrainConfig(model_name_or_path=str(base), output_dir=str(tmp_path / "out"), train_file=str(data),
                      per_gpu_train_batch_size=2, max_steps=40, save_steps=0, max_seq_length=64, doc_stride=32))
    err = capsys.readouterr().err
    steps = [int(m) for m in re.findall(r"^step (\d+)/40 .*ETA", err, flags=re.M)]
    assert steps == list(range(2, 41, 2))  # logging_steps is 500: every 5% of 40 steps instead
    assert all(k in err for k in ("loss", "lr", "samples/s"))


def test_predict_on_v1_data_never_abstains_and_says_so(tiny_bert, tmp_path):
    records = [r for r in task_records(6, seed=3) if r["answers"]["text"]]
    v1 = to_squad(records)
    v1["version"] = "1.1"
    for p in v1["data"][0]["paragraphs"]:
        for q in p["qas"]:
            del q["is_impossible"]
    path = tmp_path / "dev-v1.1.json"
    path.write_text(json.dumps(v1))
    res = cli("predict", "-m", tiny_bert, "-d", path, "-o", tmp_path / "p", "--null-score-diff-threshold", -1e9)
    assert res.exit_code == 0 and "SQuAD v1.1" in res.stderr and "without the empty answer" in res.stderr
    preds = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert preds and all(text != "" for text in preds.values())
    res = cli("predict", "-m", tiny_bert, "-d", path, "-o", tmp_path / "q", "--null-score-diff-threshold", -1e9,
              "--version-2-with-negative")
    assert all(t == "" for t in json.loads((tmp_path / "q" / "predictions.json").read_text()).values())


def test_evaluate_hints_at_swapped_files_and_plots_null_odds_on_their_range(tmp_path):
    data = write_task_data(tmp_path / "dev.json", 4, seed=2)
    squad = json.loads(data.read_text())
    qids = [q["id"] for p in squad["data"][0]["paragraphs"] for q in p["qas"]]
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({q: "" for q in qids}))
    res = cli("evaluate", preds, data)
    assert res.exit_code == 2 and "did you swap the files?" in res.stderr
    odds = tmp_path / "null_odds.json"
    odds.write_text(json.dumps({q: (i - 3) * 2.5 for i, q in enumerate(qids)}))  # logit differences, not 0..1
    pytest.importorskip("matplotlib")
    res = cli("evaluate", data, preds, "-n", odds, "-p", tmp_path / "plots")
    assert res.exit_code == 0 and "own range" in res.stderr
    assert (tmp_path / "plots" / "na_prob_hist_noAns.png").stat().st_size > 0


def test_serve_threads_reach_onnx_runtime(tiny_bert, tmp_path):
    pytest.importorskip("onnxruntime")
    from squadkit.export import export_model
    from squadkit.serve import ServeSettings, _as_pipeline

    folder = export_model(str(tiny_bert), tmp_path / "onnx")
    qa = _as_pipeline(str(folder), ServeSettings(threads=1))
    assert qa.model.runner.session.get_session_options().intra_op_num_threads == 1
