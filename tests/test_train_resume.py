"""Checkpoints: a run killed at step k and resumed ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train_learns import make_task_model, one_thread, write_task_data  # noqa: F401  (fixture)

from squadkit.train import (BEST_CHECKPOINT, OPTIMIZER_FILE, RNG_FILE, SCHEDULER_FILE, STATE_FILE, TrainConfig,
                            TrainingInterrupted, list_checkpoints, train)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _config(tmp_path: Path, base: Path, data: Path, out: str, **kw) -> TrainConfig:
    opts = dict(model_name_or_path=str(base), output_dir=str(tmp_path / out), train_file=str(data), do_train=True,
                version_2_with_negative=True, max_seq_length=64, doc_stride=32, per_gpu_train_batch_size=4,
                learning_rate=1e-3, num_train_epochs=2, warmup_steps=2, save_steps=3, logging_steps=2, quiet=True,
                features_cache_dir=str(tmp_path / "cache"))
    opts.update(kw)
    return TrainConfig(**opts)


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, one_thread):
    import torch

    # dropout on: the restored RNG states matter for equality
    base = make_task_model(tmp_path / "base", seed=3, hidden=32, dropout=0.1)
    data = write_task_data(tmp_path / "train.json", 9, seed=5)  # 18 questions -> 5 steps/epoch (last one short)

    full = train(_config(tmp_path, base, data, "full"))
    assert full.global_step == 10

    with pytest.raises(TrainingInterrupted):
        train(_config(tmp_path, base, data, "killed", interrupt_at_step=8))
    killed = tmp_path / "killed"
    # the kill lost only the steps after the last checkpoint (6): nothing final was written
    assert [p.name for p in list_checkpoints(killed)] == ["checkpoint-3", "checkpoint-6"]
    assert not (killed / "model.safetensors").exists()
    ckpt = killed / "checkpoint-6"
    for name in ("model.safetensors", "tokenizer.json", OPTIMIZER_FILE, SCHEDULER_FILE, RNG_FILE, STATE_FILE):
        assert (ckpt / name).is_file(), name
    assert json.loads((ckpt / STATE_FILE).read_text())["global_step"] == 6
    assert not [p for p in killed.iterdir() if p.name.startswith(".")], "no temporary folders left behind"

    # an existing output folder is refused without resume/overwrite, and left alone
    from squadkit.errors import SquadkitError

    before = sorted(p.name for p in killed.iterdir())
    with pytest.raises(SquadkitError, match="not empty"):
        train(_config(tmp_path, base, data, "killed"))
    assert sorted(p.name for p in killed.iterdir()) == before

    resumed = train(_config(tmp_path, base, data, "killed", resume_from_checkpoint="auto"))
    assert resumed.resumed_from == ckpt and resumed.global_step == 10
    a, b = _weights(tmp_path / "full"), _weights(killed)
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= 1e-6, worst
    # and the resumed run really trained: its weights moved away from checkpoint-6's
    c = _weights(ckpt)
    assert max((c[k].float() - b[k].float()).abs().max().item() for k in a) > 1e-4
    # a run resumed from an explicit checkpoint folder behaves the same
    explicit = train(_config(tmp_path, base, data, "explicit", resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3")))
    e = _weights(tmp_path / "explicit")
    assert max((a[k].float() - e[k].float()).abs().max().item() for k in a) <= 1e-6
    assert explicit.global_step == 10
    del torch


def test_save_total_limit_and_best_checkpoint(tmp_path, one_thread):
    base = make_task_model(tmp_path / "base", seed=3, hidden=32)
    data = write_task_data(tmp_path / "train.json", 9, seed=5)
    dev = write_task_data(tmp_path / "dev.json", 4, seed=6)
    result = train(_config(tmp_path, base, data, "out", save_steps=2, save_total_limit=2, eval_steps=5,
                           predict_file=str(dev), do_eval=True))
    out = tmp_path / "out"
    assert [p.name for p in result.checkpoints] == ["checkpoint-8", "checkpoint-10"]
    best = out / BEST_CHECKPOINT
    assert (best / "model.safetensors").is_file()
    saved = json.loads((best / "squadkit.json").read_text())
    assert saved["training"]["global_step"] == result.best_step in (5, 10)
    assert saved["eval"]["best_f1_thresh"] == saved["null_score_diff_threshold"]
    assert "null_score_diff_threshold" in saved
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "eval" in r and not r.get("final")] == [5, 10]


def test_resume_auto_without_checkpoints_is_a_fresh_start(tmp_path, one_thread):
    base = make_task_model(tmp_path / "base", seed=3, hidden=32)
    data = write_task_data(tmp_path / "train.json", 4, seed=5)
    result = train(_config(tmp_path, base, data, "new", resume_from_checkpoint="auto", max_steps=2, save_steps=0))
    assert result.resumed_from is None and result.global_step == 2
    with pytest.raises(ValueError, match="not a squadkit training checkpoint"):
        train(_config(tmp_path, base, data, "other", resume_from_checkpoint=str(base)))
