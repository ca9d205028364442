"""Data-parallel training and prediction for real: two CPU processes (gloo) under torchrun.

Two processes with a per-device batch B must train the same model as one process with batch
2B: the global batch of every step holds the same windows and the loss is normalised by the
global batch. Dropout is off, so the only difference is the order of float additions
(tolerance: 1e-4 absolute on every weight after 6 steps of AdamW at lr 1e-3 (observed: ~1e-7,
but up to 4e-5 on the last LayerNorm bias, whose gradient is nearly shift-invariant); 1e-4 on
the null odds of the evaluation; identical predictions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_learns import make_task_model, write_task_data

TOLERANCE = 1e-4


def _torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "squadkit.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    from typer.testing import CliRunner

    from squadkit.cli import app

    base = make_task_model(tmp_path / "base", seed=1, hidden=32, dropout=0.0)
    data = write_task_data(tmp_path / "train.json", 11, seed=4)  # 22 windows: 6 steps of 4, the last one short
    dev = write_task_data(tmp_path / "dev.json", 6, seed=8)
    common = ["--model_name_or_path", str(base), "--do_train", "--version_2_with_negative", "--train_file", str(data),
              "--max_seq_length", "64", "--doc_stride", "32", "--learning_rate", "1e-3", "--num_train_epochs", "1",
              "--save_steps", "0", "--logging_steps", "3", "--features_cache_dir", str(tmp_path / "cache"), "--quiet"]

    two = _torchrun(["train", *common, "--output_dir", str(tmp_path / "two"), "--per_gpu_train_batch_size", "2",
                     "--do_eval", "--predict_file", str(dev), "--per_gpu_eval_batch_size", "3"], tmp_path)
    assert two.returncode == 0, two.stderr[:3000]
    runner = CliRunner()
    one = runner.invoke(app, ["train", *common, "--output_dir", str(tmp_path / "one"), "--per_gpu_train_batch_size", "4",
                              "--do_eval", "--predict_file", str(dev)])
    assert one.exit_code == 0, one.output

    log_two = [json.loads(x) for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    start = log_two[0]
    assert start["processes"] == 2 and start["global_batch"] == 4 and start["total_steps"] == 6
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    # qa_outputs.bias is left out: softmax ignores a shift of all logits, so its true gradient is
    # exactly 0 and Adam (g / (|g| + eps)) turns float noise there into steps of up to lr. It
    # cannot change any prediction, which the null odds below (shift-free) confirm.
    worst = max((a[k] - b[k]).abs().max().item() for k in a if k != "qa_outputs.bias")
    assert worst <= TOLERANCE, worst
    moved = max((a[k] - _weights(base)[k]).abs().max().item() for k in a)
    assert moved > 10 * TOLERANCE  # it trained: the agreement is not just two untouched copies
    # logged losses agree too (each is the mean over the same global batches)
    log_one = [json.loads(x) for x in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    l1 = [r["loss"] for r in log_one if "loss" in r]
    l2 = [r["loss"] for r in log_two if "loss" in r]
    assert len(l1) == len(l2) >= 2 and all(abs(x - y) < 1e-4 for x, y in zip(l1, l2))
    # the sharded evaluation wrote one merged set of predictions, in data order, for every question
    preds_two = json.loads((tmp_path / "two" / "predictions.json").read_text())
    preds_one = json.loads((tmp_path / "one" / "predictions.json").read_text())
    assert preds_two == preds_one and len(preds_two) == 12
    odds_one = json.loads((tmp_path / "one" / "null_odds.json").read_text())
    odds_two = json.loads((tmp_path / "two" / "null_odds.json").read_text())
    assert max(abs(odds_one[k] - odds_two[k]) for k in odds_one) <= 1e-4


@pytest.mark.slow
def test_predict_under_torchrun_writes_one_merged_output(tmp_path):
    from typer.testing import CliRunner

    from squadkit.cli import app

    model = make_task_model(tmp_path / "model", seed=2, hidden=32)
    dev = write_task_data(tmp_path / "dev.json", 7, seed=9)  # 14 questions: uneven shards
    res = _torchrun(["predict", "--model", str(model), "--data", str(dev), "--output-dir", str(tmp_path / "two"),
                     "--device", "cpu", "--max-seq-length", "64", "--doc-stride", "32"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    # one process reported (the summary is printed once): the work was sharded, not repeated
    assert res.stdout.count('"total"') == 1, res.stdout
    one = CliRunner().invoke(app, ["predict", "--model", str(model), "--data", str(dev), "--output-dir",
                                   str(tmp_path / "one"), "--device", "cpu", "--max-seq-length", "64", "--doc-stride", "32"])
    assert one.exit_code == 0, one.output
    for name in ("predictions.json", "null_odds.json", "eval_results.json"):
        a = json.loads((tmp_path / "one" / name).read_text())
        b = json.loads((tmp_path / "two" / name).read_text())
        if name == "null_odds.json":
            assert list(a) == list(b) and all(abs(a[k] - b[k]) < 1e-4 for k in a)
        elif name == "eval_results.json":
            assert a["total"] == b["total"] == 14 and a["exact"] == b["exact"]
        else:
            assert a == b and len(a) == 14
            assert list(a) == [q["id"] for p in json.loads(dev.read_text())["data"][0]["paragraphs"] for q in p["qas"]]
    # only the main process wrote: exactly one set of files
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
