"""The training loop, written out in full (nanoGPT style): the data order, the step plan, the losses,
the optimizer and ``train_loop``. accelerate does only device placement, DDP, autocast and gathering.
Why the data order, batching and loss are what they are: docs/design.md (squadkit/train/loop.py).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backends.torch import to_device
from ..errors import SquadkitError
from .checkpoints import (
    load_best_weights,
    restore_training_state,
)
from .config import TrainConfig, TrainingInterrupted, TrainResult
from .dataset import TrainFeatures
from .events import Events

MEGA_BATCHES = 50  # global batches per length-sorted group
ASK_EVAL_FILE = "ask_eval_results.json"  # dev scores of ask at the learned ask_threshold


# ----------------------------------------------------------------------------------------------
# the data order
# ----------------------------------------------------------------------------------------------


def epoch_order(n: int, seed: int, epoch: int, global_batch: int, lengths: np.ndarray | None = None) -> np.ndarray:
    """The order of the ``n`` windows in ``epoch``: a permutation, the same on every process.

    With ``lengths`` (group by length) each mega-batch of ``MEGA_BATCHES`` global batches is
    sorted by length and the full global batches are shuffled; a short remainder stays last, so
    that global batch *k* is always slice *k*.
    """
    import torch

    g = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).numpy()
    if lengths is None:
        return order
    mega = global_batch * MEGA_BATCHES
    order = np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in np.split(order, range(mega, n, mega))])
    full = n // global_batch
    batches = order[: full * global_batch].reshape(full, global_batch)[torch.randperm(full, generator=g).numpy()]
    return np.concatenate([batches.reshape(-1), order[full * global_batch :]])


@dataclass
class StepPlan:
    """How steps map to windows: batch sizes, steps per epoch, and this process's share."""

    n: int
    micro_batch: int
    accumulation: int
    world: int
    rank: int
    seed: int
    total_steps: int
    lengths: np.ndarray | None
    # shared normalization: the unit is a question's group of windows, windows [g[i], g[i + 1]); None: a window
    group_offsets: np.ndarray | None = None
    _epoch: int | None = field(default=None, init=False, repr=False)  # the epoch whose order is cached
    _order: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.world * self.accumulation

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.n / self.global_batch)

    def batch_ids(self, step: int) -> np.ndarray:
        epoch, k = divmod(step, self.steps_per_epoch)
        if self._epoch != epoch:
            self._epoch, self._order = epoch, epoch_order(self.n, self.seed, epoch, self.global_batch, self.lengths)
        return self._order[k * self.global_batch : (k + 1) * self.global_batch]

    def windows_of(self, ids: np.ndarray) -> np.ndarray:
        """The window indices of units ``ids`` (each group's windows together, in order)."""
        g = self.group_offsets
        if g is None:
            return ids
        return np.concatenate([np.arange(g[i], g[i + 1]) for i in ids])

    def group_index(self, ids: np.ndarray) -> np.ndarray:
        """For each window of ``windows_of(ids)``, which of the ``ids`` (0-based) it belongs to."""
        g = self.group_offsets
        return np.repeat(np.arange(len(ids)), g[ids + 1] - g[ids])

    def window_count(self, ids: np.ndarray) -> int:
        g = self.group_offsets
        return len(ids) if g is None else int((g[ids + 1] - g[ids]).sum())

    @property
    def windows_per_epoch(self) -> int:
        return self.n if self.group_offsets is None else int(self.group_offsets[-1])

    def micro_batches(self, batch_ids: np.ndarray):
        """(micro-step, this process's window ids, weight) for each accumulation micro-step; an
        empty share (a short last batch) still runs one window at weight 0, as DDP needs every process."""
        for m, chunk in enumerate(np.array_split(batch_ids, self.accumulation)):
            mine = np.array_split(chunk, self.world)[self.rank]
            yield (m, mine, 1.0) if len(mine) else (m, batch_ids[:1], 0.0)


def make_plan(config: TrainConfig, accelerator, features: TrainFeatures) -> StepPlan:
    """Over windows; with ``shared_norm`` over questions (each its group of windows, never split
    across processes or micro-batches), length-grouped by each group's longest window."""
    groups = features.group_offsets if config.shared_norm else None
    if config.shared_norm and groups is None:
        raise SquadkitError("shared_norm needs features grouped by question (a feature cache without groups)")
    n = len(features) if groups is None else len(groups) - 1
    lengths = None
    if config.group_by_length:
        lengths = features.lengths if groups is None else np.maximum.reduceat(features.lengths, groups[:-1])
    plan = StepPlan(n, config.per_gpu_train_batch_size, config.gradient_accumulation_steps,
                    accelerator.num_processes, accelerator.process_index, config.seed, 0, lengths, groups)
    plan.total_steps = config.max_steps if config.max_steps > 0 else math.ceil(config.num_train_epochs * plan.steps_per_epoch)
    return plan


# ----------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------


def qa_loss(start_logits, end_logits, start_positions, end_positions, attention_mask):
    """Per-window loss as the HF QA heads compute it ((CE(start) + CE(end)) / 2), unreduced, over
    the window's real tokens only: with padding to the longest window of a batch, counting padding
    would make a window's loss depend on its batch mates, and splitting a batch over processes
    would change the gradients."""
    import torch.nn.functional as F

    pad = attention_mask == 0
    s = F.cross_entropy(start_logits.float().masked_fill(pad, -1e4), start_positions, reduction="none")
    e = F.cross_entropy(end_logits.float().masked_fill(pad, -1e4), end_positions, reduction="none")
    return (s + e) / 2


def _segment_logsumexp(x, group, n_groups: int):
    """logsumexp of ``x`` within each group (``group[i]`` is x[i]'s group); -inf entries take no part."""
    import torch

    top = torch.full((n_groups,), float("-inf"), device=x.device, dtype=x.dtype)
    top = top.scatter_reduce(0, group, x.detach(), reduce="amax", include_self=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = torch.zeros(n_groups, device=x.device, dtype=x.dtype).index_add(0, group, torch.exp(x - top[group]))
    return top + torch.log(total)


def shared_norm_loss(start_logits, end_logits, start_positions, end_positions, attention_mask, group, n_groups: int):
    """Per-question loss with one softmax over all of the question's windows (Clark & Gardner 2018).

    For the start (the end alike), over question q's windows W_q and their real tokens:
    ``-log sum_{w in T_q} exp(s_w[t_w]) + log sum_{w in W_q} sum_i exp(s_w[i])``, where t_w is the
    window's label and T_q the windows in the numerator: **the windows that hold the answer**, when
    any does (several windows of one paragraph may: their probabilities add, as C&G sum over every
    occurrence); otherwise (an unanswerable question, or an answer no window holds whole) **every
    window's CLS**, so "no answer" is the mass of all CLS tokens. The CLS of a window without the
    answer (a negative, or another window of the gold paragraph) is in the denominator only for an
    answerable question: it can never explain an answer away. With one window per question this is
    ``qa_loss`` exactly. Returns (n_groups,) losses, (start + end) / 2 as ``qa_loss``."""
    import torch

    pad = attention_mask == 0
    answered = start_positions > 0
    has_answer = torch.zeros(n_groups, dtype=torch.long, device=group.device).scatter_reduce(
        0, group, answered.long(), reduce="amax", include_self=True).bool()
    include = answered | ~has_answer[group]
    losses = []
    for logits, targets in ((start_logits, start_positions), (end_logits, end_positions)):
        x = logits.float().masked_fill(pad, -1e4)
        per_window = torch.logsumexp(x, dim=1)
        target = x.gather(1, targets[:, None])[:, 0].masked_fill(~include, float("-inf"))
        losses.append(_segment_logsumexp(per_window, group, n_groups) - _segment_logsumexp(target, group, n_groups))
    return (losses[0] + losses[1]) / 2


def make_optimizer(model, config: TrainConfig, total_steps: int):
    """run_squad's AdamW groups (no decay on biases and LayerNorm weights) and linear warmup/decay.
    On CUDA the fused AdamW (one kernel for all parameters; the same update rule); elsewhere torch's default."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    fused = {"fused": True} if params and all(p.is_cuda for _, p in params) else {}
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in params if not any(k in n for k in no_decay)], "weight_decay": config.weight_decay},
         {"params": [p for n, p in params if any(k in n for k in no_decay)], "weight_decay": 0.0}],
        lr=config.learning_rate, eps=config.adam_epsilon, **fused)
    warmup = config.warmup_steps or math.ceil(config.warmup_ratio * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def pad_multiple(config: TrainConfig, device) -> int:
    """``pad_to_multiple_of``, else 64 on a GPU and 1 on a CPU, where every padded token costs.

    Measured on an H200 (bf16, 384-token windows, the shared train slice, same machine): length-grouped
    batches in every length trained roberta-base at 101 samples/s and all-MiniLM-L6-v2 at 233; rounded
    to 64, at 468 and 1,578. (Random order, nearly always 384 wide, on another machine: 340 and 1,763,
    against 429 and 1,577 rounded; README, "Fine-tune".)"""
    if config.pad_to_multiple_of is not None:
        return config.pad_to_multiple_of
    return 64 if getattr(device, "type", str(device)) == "cuda" else 1


def compiled_forward(model):
    """``torch.compile`` of the (prepared) model for the training step. The padded widths are few
    (multiples of ``pad_multiple``); after the first width, dynamo's automatic dynamic shapes compile
    one graph for the rest rather than one per width. Evaluation and saving use the model itself."""
    import torch

    limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), 32))
    return torch.compile(model)


def train_loop(config: TrainConfig, accelerator, model, tokenizer, features: TrainFeatures, eval_data,
               resume: Path | None, result: TrainResult):
    plan = make_plan(config, accelerator, features)
    model.to(accelerator.device)  # before the optimizer: on CUDA it is the fused AdamW, made over CUDA tensors
    optimizer, scheduler = make_optimizer(model, config, plan.total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)  # the scheduler stays ours: stepped once per step
    forward = compiled_forward(model) if config.compile else model
    step, best, best_step = 0, None, None
    if resume is not None:
        state = restore_training_state(resume, optimizer, scheduler, accelerator, plan.global_batch)
        step, best, best_step = state["global_step"], state.get("best_metric"), state.get("best_step")
    events = Events(config, accelerator, model, tokenizer, optimizer, scheduler, eval_data, plan, step, best, best_step)
    device, world = accelerator.device, plan.world
    multiple = pad_multiple(config, device)
    events.start(features, resume, multiple)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.train()
    try:
        while step < plan.total_steps:
            # ---- one optimizer step over global batch `step` ----
            batch_ids = plan.batch_ids(step)
            for m, mine, weight in plan.micro_batches(batch_ids):
                arrays = features.batch(plan.windows_of(mine), pad_id, multiple, config.max_seq_length)
                t = {k: to_device(v, device) for k, v in arrays.items()}
                inputs = {k: t[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in t}
                sync = contextlib.nullcontext() if m == plan.accumulation - 1 else accelerator.no_sync(model)
                with sync:
                    with accelerator.autocast():
                        out = forward(**inputs)
                    if plan.group_offsets is None:
                        losses = qa_loss(out.start_logits, out.end_logits, t["start_positions"], t["end_positions"],
                                         t["attention_mask"]) * weight
                    else:  # one loss per question (group), over all its windows
                        group = to_device(plan.group_index(mine), device)
                        losses = shared_norm_loss(out.start_logits, out.end_logits, t["start_positions"],
                                                  t["end_positions"], t["attention_mask"], group, len(mine)) * weight
                    # mean over the *global* batch; DDP averages over processes, so scale by world
                    accelerator.backward(losses.sum() * (world / len(batch_ids)))
                events.add_loss(losses.detach().sum(), weight * len(mine))
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm) \
                if config.max_grad_norm > 0 else None
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            # ---- log, evaluate, checkpoint ----
            events.after_step(step, plan.window_count(batch_ids), grad_norm, result)
            if config.interrupt_at_step is not None and step >= config.interrupt_at_step:
                raise TrainingInterrupted(f"interrupted after step {step} (interrupt_at_step)")
    finally:
        events.close()
    result.train_seconds, result.samples_per_second = events.train_time, events.overall_rate()
    if config.load_best_model_at_end and events.best_step is not None:
        load_best_weights(accelerator.unwrap_model(model), Path(config.output_dir))
        return model, events.best_threshold
    return model, events.last_threshold


