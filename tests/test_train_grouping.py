"""Length-grouped training batches: every window once per epoch, the same plan on every process,
the same batches after a resume, and a refused resume under the other setting."""

from __future__ import annotations

import numpy as np
import pytest
from test_train_learns import make_task_model, one_thread, write_task_data  # noqa: F401
from typer.testing import CliRunner

from squadkit.cli import app
from squadkit.train import TrainConfig, epoch_order, train
from squadkit.train.loop import StepPlan


def padded_tokens(order: np.ndarray, lengths: np.ndarray, batch: int) -> int:
    return sum(int(lengths[order[i:i + batch]].max()) * len(order[i:i + batch]) for i in range(0, len(order), batch))


@pytest.mark.parametrize("n,batch", [(1000, 16), (997, 32), (5, 16), (1, 1), (160, 16), (3000, 7)])
def test_grouped_order_is_a_permutation_with_less_padding(n, batch):
    rng = np.random.default_rng(n)
    lengths = rng.integers(20, 384, size=n)
    for epoch in range(3):
        grouped = epoch_order(n, seed=7, epoch=epoch, global_batch=batch, lengths=lengths)
        assert sorted(grouped.tolist()) == list(range(n))  # every window exactly once
        plain = epoch_order(n, seed=7, epoch=epoch, global_batch=batch)
        if n >= 4 * batch:
            assert padded_tokens(grouped, lengths, batch) < 0.8 * padded_tokens(plain, lengths, batch)
    if n >= 4 * batch:  # epochs differ (one batch of everything is simply sorted)
        assert not np.array_equal(epoch_order(n, 7, 0, batch, lengths), epoch_order(n, 7, 1, batch, lengths))


def test_processes_split_each_grouped_batch_exactly_once():
    n, micro, world, accum = 203, 4, 2, 3
    lengths = np.random.default_rng(0).integers(10, 300, size=n)
    plans = [StepPlan(n, micro, accum, world, rank, 11, 0, lengths) for rank in range(world)]
    for step in range(2 * plans[0].steps_per_epoch):  # two epochs
        global_ids = plans[0].batch_ids(step)
        assert all(np.array_equal(global_ids, p.batch_ids(step)) for p in plans)  # the same plan everywhere
        seen = [ids for p in plans for _, ids, weight in p.micro_batches(global_ids) if weight]
        assert sorted(np.concatenate(seen).tolist()) == sorted(global_ids.tolist())
    epoch0 = np.concatenate([plans[0].batch_ids(s) for s in range(plans[0].steps_per_epoch)])
    assert sorted(epoch0.tolist()) == list(range(n))


def test_a_resumed_plan_gives_the_same_batches():
    lengths = np.random.default_rng(1).integers(10, 300, size=150)
    running = StepPlan(150, 8, 1, 1, 0, 3, 0, lengths)
    before = [running.batch_ids(s).tolist() for s in range(40)]
    resumed = StepPlan(150, 8, 1, 1, 0, 3, 0, lengths)  # a new process, starting mid-epoch
    assert [resumed.batch_ids(s).tolist() for s in range(23, 40)] == before[23:]


def test_resuming_with_the_other_setting_is_refused_and_changes_nothing(tmp_path, one_thread):  # noqa: F811
    base = make_task_model(tmp_path / "base", hidden=16, layers=1)
    data = write_task_data(tmp_path / "d.json", 4, seed=1)
    out = tmp_path / "out"
    train(TrainConfig(model_name_or_path=str(base), output_dir=str(out), train_file=str(data), max_steps=4,
                      save_steps=2, per_gpu_train_batch_size=2, max_seq_length=64, doc_stride=32, quiet=True,
                      group_by_length=True))
    before = sorted(p.name for p in out.iterdir())
    res = CliRunner().invoke(app, ["train", "-m", str(base), "--do-train", "--train-file", str(data), "-o", str(out),
                                   "--max-steps", "6", "--max-seq-length", "64", "--doc-stride", "32",
                                   "--resume-from-checkpoint", "auto", "--no-group-by-length"])
    assert res.exit_code == 2 and "--group-by-length" in res.stderr and "same setting" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == before


def test_batches_rounded_to_a_multiple_hold_the_same_windows_and_stop_at_the_window_length():
    from squadkit.train.dataset import TrainFeatures

    lengths = np.array([5, 17, 9, 30])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.arange(3, 3 + lengths.sum())
    feats = TrainFeatures(input_ids=ids, token_type_ids=None, offsets=offsets, start_positions=np.arange(4),
                          end_positions=np.arange(4), stats={})
    exact = feats.batch(np.array([0, 2]), pad_id=1)
    rounded = feats.batch(np.array([0, 2]), pad_id=1, multiple=8)
    assert exact["input_ids"].shape == (2, 9) and rounded["input_ids"].shape == (2, 16)
    assert np.array_equal(rounded["input_ids"][:, :9], exact["input_ids"]) and (rounded["input_ids"][:, 9:] == 1).all()
    assert rounded["attention_mask"].sum() == exact["attention_mask"].sum() == 14
    # never wider than the windows were cut for (a BERT-style model has no positions past it) ...
    assert feats.batch(np.array([3]), pad_id=1, multiple=64, limit=32)["input_ids"].shape == (1, 32)
    # ... and never narrower than the longest window
    assert feats.batch(np.array([3]), pad_id=1, multiple=64, limit=20)["input_ids"].shape == (1, 30)


def test_rounding_the_batch_width_changes_no_result(tmp_path, one_thread):  # noqa: F811
    """Padding is masked out of attention and loss: the same run with --pad-to-multiple-of 32 ends with
    the same weights (to float rounding) and the same losses."""
    import json

    import torch
    from safetensors.torch import load_file

    base = make_task_model(tmp_path / "base", hidden=16, layers=1)
    data = write_task_data(tmp_path / "d.json", 6, seed=2)
    runs = {}
    for multiple in (1, 32):
        out = tmp_path / f"m{multiple}"
        train(TrainConfig(model_name_or_path=str(base), output_dir=str(out), train_file=str(data), max_steps=3,
                          save_steps=0, per_gpu_train_batch_size=4, max_seq_length=64, doc_stride=32, quiet=True,
                          logging_steps=1, do_train=True, version_2_with_negative=True, pad_to_multiple_of=multiple))
        log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
        assert [r["pad_to_multiple_of"] for r in log if r.get("event") == "start"] == [multiple]
        runs[multiple] = ([r["loss"] for r in log if "loss" in r], load_file(str(out / "model.safetensors")))
    (loss1, w1), (loss32, w32) = runs[1], runs[32]
    assert len(loss1) == 3 and np.allclose(loss1, loss32, rtol=1e-5)
    # qa_outputs.bias is left out: a softmax ignores a constant added to every logit, so its gradient is
    # zero up to float noise, and Adam scales that noise up to full-size steps
    assert all(torch.allclose(w1[k], w32[k], atol=1e-5) for k in w1 if k != "qa_outputs.bias")


def test_pad_to_multiple_of_must_be_a_positive_integer(tmp_path):
    res = CliRunner().invoke(app, ["train", "-m", "x", "-o", str(tmp_path / "o"), "--do-train", "--train-file", "t.json",
                                   "--pad-to-multiple-of", "0"])
    assert res.exit_code == 2 and "--pad-to-multiple-of must be" in res.output and "Traceback" not in res.output
