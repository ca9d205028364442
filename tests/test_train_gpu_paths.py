"""The training step's GPU paths (issue 26), checked where a CPU can: fused AdamW keeps the update
rule, a compiled forward gives the plain step's loss and gradients, automatic bf16 and --compile
never touch a CPU run, and the flags that conflict are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from test_train_learns import make_task_model, one_thread, write_task_data  # noqa: F401
from typer.testing import CliRunner

from squadkit.cli import app
from squadkit.train.config import TrainConfig


def _batch(seed: int = 0, n: int = 4, width: int = 64, vocab: int = 20):
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (n, width), generator=g)
    mask = torch.ones_like(ids)
    mask[1, width // 2:] = 0
    starts = torch.randint(0, width // 2, (n,), generator=g)
    return ids, mask, starts, starts + 2


def _model(tmp_path, seed=0, layers=2):
    from transformers import AutoModelForQuestionAnswering

    folder = make_task_model(tmp_path / f"m{seed}-{layers}", seed=seed, hidden=32, layers=layers)
    return AutoModelForQuestionAnswering.from_pretrained(str(folder))


def _step_loss(model, forward, batch):
    from squadkit.train.loop import qa_loss

    ids, mask, s, e = batch
    out = forward(input_ids=ids, attention_mask=mask)
    loss = qa_loss(out.start_logits, out.end_logits, s, e, mask).mean()
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_fused_adamw_follows_the_plain_update_rule(tmp_path, one_thread):
    """make_optimizer asks for the fused AdamW on CUDA; where torch has it on the CPU too, a few steps
    of it land where the plain AdamW's do (same groups, same schedule), so the switch changes no curve."""
    import torch

    from squadkit.train.loop import make_optimizer

    config = TrainConfig(model_name_or_path="x", output_dir="y", do_train=True, learning_rate=1e-3, warmup_steps=1)
    plain_model, fused_model = _model(tmp_path), _model(tmp_path)
    plain, plain_sched = make_optimizer(plain_model, config, 10)
    assert not plain.defaults.get("fused")  # CPU tensors: the default implementation, as before
    groups = plain.param_groups
    try:
        fused = torch.optim.AdamW([{**{k: v for k, v in g.items() if k != "params"},
                                    "params": [dict(fused_model.named_parameters())[n] for n in
                                               [n for n, p in plain_model.named_parameters() for q in g["params"] if p is q]]}
                                   for g in groups], fused=True)
    except (RuntimeError, TypeError) as exc:
        pytest.skip(f"no fused AdamW on this CPU build: {exc}")
    from transformers import get_linear_schedule_with_warmup

    fused_sched = get_linear_schedule_with_warmup(fused, 1, 10)
    for step in range(3):
        batch = _batch(step, vocab=plain_model.config.vocab_size)
        for model, opt, sched in ((plain_model, plain, plain_sched), (fused_model, fused, fused_sched)):
            _step_loss(model, model, batch)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    for (n, p), q in zip(plain_model.named_parameters(), fused_model.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=n)


def test_compiled_forward_gives_the_plain_steps_loss_and_gradients(tmp_path, one_thread):
    """train --compile's forward (torch.compile, static shapes) against the eager one on the same batch:
    the same loss and gradients within float32 rounding. Skipped where this CPU cannot compile."""
    pytest.importorskip("torch._inductor")
    from squadkit.train.loop import compiled_forward

    model = _model(tmp_path, layers=1)  # one layer: the graph, and compiling it, stay small
    model.train()
    batch = _batch(3, vocab=model.config.vocab_size)
    import torch

    torch.manual_seed(0)
    eager_loss, eager_grads = _step_loss(model, model, batch)
    model.zero_grad(set_to_none=True)
    try:
        torch.manual_seed(0)
        compiled_loss, compiled_grads = _step_loss(model, compiled_forward(model), batch)
    except Exception as exc:  # no C++ toolchain, or inductor unsupported here
        pytest.skip(f"torch.compile does not run on this CPU: {type(exc).__name__}: {str(exc)[:200]}")
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5)
    assert eager_grads.keys() == compiled_grads.keys()
    for name, grad in eager_grads.items():
        np.testing.assert_allclose(compiled_grads[name].numpy(), grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_cpu_runs_keep_float32_and_refuse_compile(tmp_path, monkeypatch):
    """On a machine without CUDA: no automatic bf16 (the curve stays float32), --compile refused in one
    line, and two precisions at once refused before any work."""
    import torch

    from squadkit.train.run import make_accelerator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = TrainConfig(model_name_or_path="x", output_dir=str(tmp_path / "o"), do_train=True)
    assert make_accelerator(config).mixed_precision == "no"
    data = write_task_data(tmp_path / "train.json", 2, seed=1)
    base = ["train", "--model_name_or_path", str(make_task_model(tmp_path / "m", hidden=32)), "--output_dir",
            str(tmp_path / "out"), "--do_train", "--train_file", str(data)]
    res = CliRunner().invoke(app, base + ["--compile"])
    assert res.exit_code == 2 and "compile needs a CUDA GPU" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(app, base + ["--bf16", "--fp32"])
    assert res.exit_code == 2 and "at most one of --bf16, --fp16 and --fp32" in res.output and "fp32" in res.output
    assert not (tmp_path / "out").exists()


def test_automatic_bf16_only_where_the_gpu_has_it_and_not_told_otherwise(monkeypatch):
    """The precision make_accelerator picks on a (pretended) CUDA machine, without building one."""
    import accelerate
    import torch

    from squadkit.train import run as loop

    seen = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(accelerate, "Accelerator", lambda mixed_precision, cpu: seen.setdefault("p", []).append(mixed_precision))
    for bf16_ok, flags, want in ((True, {}, "bf16"), (True, {"fp32": True}, "no"), (False, {}, "no"),
                                 (True, {"fp16": True}, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda ok=bf16_ok: ok)
        loop.make_accelerator(TrainConfig(model_name_or_path="x", output_dir="y", do_train=True, **flags))
        assert seen["p"][-1] == want, (bf16_ok, flags)
