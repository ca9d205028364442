"""Fine-tune an extractive QA model as transformers' run_squad.py did: ``train(TrainConfig(...))``.

The recipe is run_squad's (AdamW without decay on biases and LayerNorm weights, linear
warmup/decay, gradient clipping, start/end cross-entropy averaged, CLS for "no answer"), with
its defaults. :func:`train_loop` is written out in full, nanoGPT style; Hugging Face accelerate
does only device placement, DDP, autocast and gathering, so ``accelerate launch`` / ``torchrun``
run the same code data-parallel.

Why things are the way they are:

* **Data order is a pure function of (seed, epoch)** and the global batch of step *s* is slice
  *s* of that epoch's order, split over processes and accumulation micro-steps. So one process
  with batch 2B and two processes with batch B see the same samples per step, and a resumed run
  sees exactly the batches the uninterrupted run would have seen, without replaying a sampler.
* **Length-grouped batches** (``group_by_length``, on by default): the epoch's random order is
  cut into mega-batches of 50 global batches, each sorted by window length, and the resulting
  batches are shuffled. Every window is still seen once per epoch, in batches of near-equal
  length, so far less of the work is padding.
* **The loss is normalised by the global batch size**, not per process, so gradients are the same
  however a batch is split (uneven last batches included); DDP's mean over processes is undone by
  multiplying by the world size.
* **Nothing is written before every check has passed**: a refused run leaves the output folder as
  it was, and a run that fails before its first checkpoint removes the folder it created.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import SquadkitError
from ..io import atomic_write_json, atomic_write_text
from .card import model_card
from .checkpoints import (
    BEST_CHECKPOINT,
    LOG_FILE,
    README_FILE,
    check_output_dir,
    check_resume_compatible,
    clear_previous_run,
    list_checkpoints,
    load_best_weights,
    resolve_resume,
    restore_training_state,
    save_best,
    save_final,
    save_training_checkpoint,
)
from .config import TrainConfig, TrainingInterrupted, TrainResult, warn_main
from .features import TrainFeatures, load_features

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


def to_device(array: np.ndarray, device):
    """A host array as a tensor on ``device``: on CUDA through pinned memory, copied without blocking
    (the copy overlaps the work already queued); elsewhere as before."""
    import torch

    tensor = torch.from_numpy(array)
    if getattr(device, "type", str(device)) == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


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


# ----------------------------------------------------------------------------------------------
# what happens between steps: logging, evaluation, checkpoints
# ----------------------------------------------------------------------------------------------


class Events:
    """Bookkeeping around the loop: loss averages, log lines, evaluation, checkpoints.

    Log lines (log.jsonl and stderr) come every ``logging_steps``; off a terminal also at least
    every 5% of the steps and at least once a minute, so a background run shows life.
    """

    def __init__(self, config, accelerator, model, tokenizer, optimizer, scheduler, eval_data, plan: StepPlan,
                 step: int, best, best_step) -> None:
        import torch

        self.config, self.accelerator, self.model, self.tokenizer = config, accelerator, model, tokenizer
        self.optimizer, self.scheduler, self.eval_data, self.plan = optimizer, scheduler, eval_data, plan
        self.best, self.best_step, self.first_step = best, best_step, step
        # (value, where it came from) of the best evaluation so far, and of the latest
        self.best_threshold = self.last_threshold = (float(config.null_score_diff_threshold), None)
        self.main = accelerator.is_main_process
        self.run_loss = torch.zeros((), device=accelerator.device)
        self.run_count = torch.zeros((), device=accelerator.device)
        self.window_samples, self.window_time, self.t_last = 0, 0.0, time.perf_counter()
        self.train_time, self.train_samples = 0.0, 0
        self.every_pct = max(1, math.ceil(plan.total_steps * 0.05))
        self.last_line_step, self.last_line_time = step, time.monotonic()
        console = None
        if self.main:
            from rich.console import Console

            console = Console(stderr=True)
        self.log = _Log(Path(config.output_dir) / LOG_FILE if self.main else None, config.quiet, console)
        self.bar = _progress_bar(plan.total_steps, step, console) if (self.main and config.show_progress) else None

    def start(self, features: TrainFeatures, resume: Path | None, pad_to_multiple_of: int) -> None:
        p = self.plan
        self.log.write({"event": "start", "step": self.first_step, "total_steps": p.total_steps,
                        "steps_per_epoch": p.steps_per_epoch, "global_batch": p.global_batch, "processes": p.world,
                        "device": str(self.accelerator.device), "mixed_precision": self.accelerator.mixed_precision,
                        "group_by_length": self.config.group_by_length,
                        "pad_to_multiple_of": pad_to_multiple_of, "train": features.stats,
                        "passage_negatives": self.config.passage_negatives, "shared_norm": self.config.shared_norm,
                        "windows_per_epoch": p.windows_per_epoch,
                        "negative_windows": features.stats.get("negative_windows", 0),
                        "resumed_from": str(resume) if resume else None},
                       f"training {features.stats['examples_used']} questions ({len(features)} windows"
                       + (f", {features.stats.get('negative_windows', 0)} of them from "
                          f"{self.config.passage_negatives} negative paragraph(s) per question"
                          if self.config.passage_negatives else "")
                       + (", one softmax per question (shared norm)" if self.config.shared_norm else "") + ") for "
                       f"{p.total_steps} steps ({p.steps_per_epoch}/epoch), global batch {p.global_batch} on "
                       f"{p.world} process(es), {self.accelerator.device}"
                       + (f"; resuming at step {self.first_step} from {resume}" if resume else ""))

    def add_loss(self, loss_sum, count: float) -> None:
        self.run_loss += loss_sum
        self.run_count += count

    def _line_due(self, step: int) -> bool:
        if step % self.config.logging_steps == 0 or step == self.plan.total_steps:
            return True
        if self.config.show_progress:  # a terminal has the bar
            return False
        return step - self.last_line_step >= self.every_pct or time.monotonic() - self.last_line_time >= 60

    def after_step(self, step: int, n_global: int, grad_norm, result: TrainResult) -> None:
        self.window_samples += n_global
        if self.bar is not None:
            self.bar.update(step)
        if self._line_due(step):
            self._log_line(step, grad_norm, result)
        if self.config.eval_steps and step % self.config.eval_steps == 0:
            self._pause(lambda: self._evaluate(step))
        if self.config.save_steps and step % self.config.save_steps == 0:
            self._pause(lambda: self._checkpoint(step))
        result.global_step, result.best_metric, result.best_step = step, self.best, self.best_step

    def _pause(self, work) -> None:
        """Run ``work`` without counting its time as training time."""
        self.window_time += time.perf_counter() - self.t_last
        work()
        self.t_last = time.perf_counter()

    def _log_line(self, step: int, grad_norm, result: TrainResult) -> None:
        import torch

        now = time.perf_counter()
        self.window_time += now - self.t_last
        totals = torch.stack([self.run_loss, self.run_count])
        if self.plan.world > 1:
            totals = self.accelerator.reduce(totals, reduction="sum")
        loss = (totals[0] / totals[1].clamp(min=1)).item()
        rate = self.window_samples / self.window_time if self.window_time > 0 else None
        self.train_time += self.window_time
        self.train_samples += self.window_samples
        overall = self.overall_rate()
        per_step = self.plan.global_batch if self.plan.group_offsets is None else \
            self.plan.windows_per_epoch / self.plan.steps_per_epoch  # shared norm: windows, not questions
        eta = (self.plan.total_steps - step) * per_step / overall if overall else None
        record = {"step": step, "epoch": round(step / self.plan.steps_per_epoch, 4), "loss": loss,
                  "learning_rate": self.scheduler.get_last_lr()[0],
                  "grad_norm": float(grad_norm) if grad_norm is not None else None,
                  "samples_per_second": rate, "eta_seconds": round(eta, 1) if eta is not None else None}
        self.log.write(record, f"step {step}/{self.plan.total_steps} ({100 * step / self.plan.total_steps:.0f}%)  "
                               f"loss {loss:.4f}  lr {record['learning_rate']:.3g}  {rate or 0:.1f} samples/s  "
                               f"ETA {_duration(eta)}")
        result.train_loss, result.samples_per_second = loss, rate
        self.run_loss.zero_(), self.run_count.zero_()
        self.window_samples, self.window_time, self.t_last = 0, 0.0, time.perf_counter()
        self.last_line_step, self.last_line_time = step, time.monotonic()

    def overall_rate(self) -> float | None:
        return self.train_samples / self.train_time if self.train_time > 0 else None

    def _evaluate(self, step: int) -> None:
        """Score the dev data; keep the weights with the best F1 as checkpoint-best (main process)."""
        config, accelerator = self.config, self.accelerator
        results, _ = evaluate(accelerator, self.model, self.tokenizer, self.eval_data, config.decode_settings(),
                              config.per_gpu_eval_batch_size)
        payload = [self.best, self.best_step, self.best_threshold, self.last_threshold]
        if self.main:
            score = _metric(results)
            improved = self.best is None or score > self.best
            self.log.write({"step": step, "eval": results},
                           f"eval at step {step}: EM {results['exact']:.2f}  F1 {results['f1']:.2f}"
                           + (f"  best F1 {results['best_f1']:.2f}" if "best_f1" in results else "")
                           + ("  (new best)" if improved else ""))
            threshold = _threshold_of(results, config, f"step {step}")
            payload[3] = threshold
            if improved:
                payload[:3] = [score, step, threshold]
                if config.keep_best:
                    save_best(accelerator.unwrap_model(self.model), self.tokenizer, Path(config.output_dir),
                              config.model_settings(threshold[0], threshold[1], results, global_step=step))
        if accelerator.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(payload, from_process=0)
        accelerator.wait_for_everyone()
        self.best, self.best_step, self.best_threshold, self.last_threshold = payload

    def _checkpoint(self, step: int) -> None:
        p = self.plan
        state = {"global_step": step, "epoch": step / p.steps_per_epoch, "total_steps": p.total_steps,
                 "global_batch": p.global_batch, "processes": p.world, "best_metric": self.best,
                 "best_step": self.best_step, "seed": self.config.seed, "group_by_length": self.config.group_by_length,
                 **({"passage_negatives": self.config.passage_negatives, "shared_norm": self.config.shared_norm}
                    if self.config.for_collections else {})}
        settings = self.config.model_settings(*self.last_threshold, global_step=step)
        path = save_training_checkpoint(self.accelerator, self.model, self.tokenizer, self.optimizer, self.scheduler,
                                        Path(self.config.output_dir), step, state, self.config.save_total_limit,
                                        settings)
        if path is not None:
            self.log.write({"step": step, "checkpoint": str(path)})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        self.log.close()


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _metric(results: dict) -> float:
    """The score that picks the best checkpoint: F1 at the best null threshold when there is one
    (that threshold is saved with the model, so it is the F1 the model will actually give)."""
    return float(results.get("best_f1", results["f1"]))


AT_CHANCE_AUC = 0.6  # a no-answer AUC below this on the dev data earns the note below


def abstention_at_chance(dataset, null_odds: dict, threshold: float, predict_path) -> str | None:
    """A one-line note when the dev questions' no-answer score (null odds) tells answerable from
    unanswerable ones little better than chance: the best-F1 threshold then mostly just abstains (or
    answers) always, and the F1 it reports is close to that of a constant answer. None otherwise, or
    where the dev data lacks either kind of question."""
    from ..metrics import no_answer_auc

    if not null_odds or any(e.id not in null_odds for e in dataset.examples):
        return None
    auc = no_answer_auc(dataset, null_odds)
    if not auc < AT_CHANCE_AUC:  # also NaN: the dev data has one kind of question only
        return None
    answered = 100.0 * sum(null_odds[e.id] <= threshold for e in dataset.examples) / len(dataset.examples)
    name = Path(predict_path).name if predict_path is not None else "the dev data"
    return (f"{name}: the no-answer score tells answerable from unanswerable questions little better than chance "
            f"(AUC {auc:.2f}); at the saved threshold {threshold:.2f} the model answers {answered:.1f}% of them, so "
            f"its F1 is close to that of a constant answer: train longer, or on data with unanswerable questions")


def _threshold_of(results: dict, config: TrainConfig, where: str) -> tuple[float, str | None]:
    """The threshold to save with weights evaluated as ``results``: the best one on the dev data."""
    if "best_f1_thresh" in results:
        name = config.resolved_path("predict_file")
        return float(results["best_f1_thresh"]), f"best_f1_thresh on {name.name if name else 'the dev data'} at {where}"
    return float(config.null_score_diff_threshold), None


def evaluate(accelerator, model, tokenizer, dataset, decode, batch_size: int, show_progress: bool = False):
    """Predict ``dataset`` (each process a shard, as ``squadkit predict``), gather on the main
    process and score it; progress as ``predict`` prints it (a bar on a terminal, lines elsewhere).

    Returns ``(results, predictions)`` on the main process and ``(None, None)`` elsewhere.
    """
    from ..backends.torch import TorchQAModel
    from ..model import Model
    from ..predict import evaluate_predictions, predict_sharded
    from ..progress import ProgressLines

    net = accelerator.unwrap_model(model)
    was_training = net.training
    net.eval()
    qa = Model.of(TorchQAModel(net, tokenizer, net.config._name_or_path, str(accelerator.device)))
    shard_size = len(dataset.examples[accelerator.process_index :: accelerator.num_processes])
    progress = ProgressLines("evaluate", shard_size) if show_progress and accelerator.is_main_process else None
    try:
        with accelerator.autocast():
            preds = predict_sharded(qa, dataset.examples, decode, batch_size, accelerator, progress)
    finally:
        if progress is not None:
            progress.close()
        if was_training:
            net.train()
    if preds is None:
        return None, None
    return evaluate_predictions(dataset, preds, decode.null_score_diff_threshold), preds


class _Log:
    """log.jsonl on the main process (one JSON object per line, flushed), plus a terminal line."""

    def __init__(self, path: Path | None, quiet: bool, console=None):
        self.path, self.quiet, self.console = path, quiet, console
        self.handle = open(path, "a", encoding="utf-8") if path is not None else None

    def write(self, record: dict, line: str | None = None) -> None:
        if self.handle is not None:
            self.handle.write(json.dumps(record) + "\n")
            self.handle.flush()
        if line and not self.quiet and self.console is not None:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def _progress_bar(total: int, done: int, console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True,
                   console=console)
    task = bar.add_task("train", total=total, completed=done)
    bar.start()

    class _Bar:
        def update(self, step: int) -> None:
            bar.update(task, completed=step)

        def stop(self) -> None:
            bar.stop()

    return _Bar()


# ----------------------------------------------------------------------------------------------
# train: checks, then the loop, then the model folder
# ----------------------------------------------------------------------------------------------


def _lowercases(tokenizer) -> bool:
    a = tokenizer("Paris Hello", add_special_tokens=False)["input_ids"]
    b = tokenizer("paris hello", add_special_tokens=False)["input_ids"]
    return a == b


def make_accelerator(config: TrainConfig):
    import torch
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and not config.no_cuda
    if config.compile and not cuda:
        raise SquadkitError("compile needs a CUDA GPU and none is in use here (on the CPU the step is not "
                            "launch-bound; compiling would cost more than it saves)", param="compile")
    if config.fp16 and not cuda:
        raise SquadkitError(f"{config.name_of('fp16')} needs a CUDA GPU and none is in use here; use bf16 (CPU autocast) or neither",
                            param="fp16")
    if config.bf16 and cuda and not torch.cuda.is_bf16_supported():
        raise SquadkitError(f"{config.name_of('bf16')}: this GPU does not support bfloat16; use fp16", param="bf16")
    precision = "bf16" if config.bf16 else "fp16" if config.fp16 else "no"
    if precision == "no" and cuda and not config.fp32 and torch.cuda.is_bf16_supported():
        precision = "bf16"  # chosen for the user on a GPU that has it; --fp32 keeps float32
    return Accelerator(mixed_precision=precision, cpu=config.no_cuda or not cuda)


def train(config: TrainConfig) -> TrainResult:
    """Fine-tune (``do_train``) and/or evaluate (``do_eval``) as run_squad did; see the module doc.

    Every check on the input happens before anything is written: a bad flag, missing file, model
    without a QA architecture, windows longer than the model's positions or data without usable
    examples is a SquadkitError, and the output folder is left as it was.
    """
    from ..checkpoint import hub_error, quiet_transformers, resolve_model_source
    from ..data import load_squad

    output_dir, train_path, predict_path, resume = _check_inputs(config)
    # model and tokenizer: from the checkpoint when resuming, else the base model (checked before heavy imports)
    source = resolve_model_source(str(resume) if resume is not None else config.model_name_or_path)

    import torch
    from transformers import AutoModelForQuestionAnswering
    from transformers.trainer_utils import set_seed

    accelerator = make_accelerator(config)
    hub = {"cache_dir": config.cache_dir} if config.cache_dir else {}
    model_config, tokenizer = _config_and_tokenizer(config, accelerator, source, resume, hub)
    eval_data = load_squad(predict_path) if (config.do_eval or config.eval_steps) else None
    result = TrainResult(output_dir=output_dir, resumed_from=resume, is_main_process=accelerator.is_main_process)
    set_seed(config.seed)
    try:
        # float32 master weights whatever the checkpoint is stored in (transformers 5 loads a half-precision
        # checkpoint as half by default); --bf16/--fp16 are autocast, as in run_squad. Quietly: transformers
        # 5's weight-loading bar would come before any one-line error that follows.
        with quiet_transformers():
            model = AutoModelForQuestionAnswering.from_pretrained(source.name, config=model_config,
                                                                  dtype=torch.float32, **source.hub_kwargs(), **hub)
    except (OSError, ValueError) as exc:
        raise hub_error(source.name, exc) from None
    features = load_features(config, accelerator, train_path, tokenizer, result) if config.do_train else None

    # -- nothing was written to output_dir before this line; a bad input has already raised --
    accelerator.wait_for_everyone()  # every process has checked the output folder before it changes
    created = not output_dir.exists()
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if config.do_train and config.overwrite_output_dir and resume is None:
            clear_previous_run(output_dir)
    accelerator.wait_for_everyone()
    try:
        _run(config, accelerator, model, tokenizer, features, eval_data, resume, result, train_path, predict_path)
    except BaseException as exc:
        # a run that failed before writing anything worth keeping leaves no folder to block the next
        if (created and accelerator.is_main_process and not isinstance(exc, TrainingInterrupted)
                and not list_checkpoints(output_dir) and not (output_dir / BEST_CHECKPOINT).exists()):
            shutil.rmtree(output_dir, ignore_errors=True)
        raise
    result.checkpoints = list_checkpoints(output_dir)
    return result


def _check_inputs(config: TrainConfig) -> tuple[Path, Path | None, Path | None, Path | None]:
    """(output folder, train file, dev file, checkpoint to resume) once every input checked out
    without writing anything: flags, data files, the resumable checkpoint, the output folder."""
    config.validate()
    output_dir = Path(config.output_dir)
    train_path, predict_path = config.resolved_path("train_file"), config.resolved_path("predict_file")
    if config.do_train and train_path is None:
        raise SquadkitError(f"{config.name_of('do_train')} needs a {config.name_of('train_file')}", param="train_file")
    if config.do_eval and predict_path is None:
        raise SquadkitError(f"{config.name_of('do_eval')} needs a {config.name_of('predict_file')}", param="predict_file")
    for p, param in ((train_path if config.do_train else None, "train_file"),
                     (predict_path if (config.do_eval or config.eval_steps) else None, "predict_file")):
        if p is not None and not p.is_file():
            raise SquadkitError(f"{p}: data file not found", param=param)
    resume = resolve_resume(config, output_dir) if config.do_train else None
    if resume is not None:
        check_resume_compatible(resume, config.group_by_length, config.passage_negatives, config.shared_norm)
    check_output_dir(config, output_dir, resume)
    return output_dir, train_path, predict_path, resume


def _config_and_tokenizer(config: TrainConfig, accelerator, source, resume, hub: dict):
    """The model's config (a QA architecture) and tokenizer, and windows that fit the model."""
    from ..checkpoint import (check_qa_architecture, check_window_fits, config_window_limit, load_config,
                              load_tokenizer, resolve_model_source)

    config_source = resolve_model_source(config.config_name, what="config") \
        if (config.config_name and resume is None) else source
    model_config = load_config(config_source, **hub)
    check_qa_architecture(model_config, config_source.name)
    if config.model_type and config.model_type.lower() != model_config.model_type:
        warn_main(accelerator, f"--model_type {config.model_type} differs from the model's config "
                               f"('{model_config.model_type}'); the config decides")
    tok_source = resolve_model_source(config.tokenizer_name, what="tokenizer") \
        if (config.tokenizer_name and resume is None) else source
    tokenizer = load_tokenizer(tok_source, **hub, **({"do_lower_case": True} if config.do_lower_case else {}))
    check_window_fits(config.max_seq_length, config_window_limit(model_config, tokenizer),
                      f"model {config.model_name_or_path}", param=config.name_of("max_seq_length"))
    if config.do_lower_case and not _lowercases(tokenizer):
        warn_main(accelerator, f"--do_lower_case has no effect on {type(tokenizer).__name__}: this tokenizer keeps case "
                               f"(as with run_squad's RoBERTa); it only changes how answer texts are projected back")
    return model_config, tokenizer


def _with_calibration(settings, net, eval_data, preds, predict_path):
    """The settings with a confidence calibrator fitted on the final dev predictions (see
    calibration.py); unchanged, with a warning, where the dev data cannot fit one (too few questions)."""
    import dataclasses
    import warnings

    from ..backends.torch import torch_head_fingerprint
    from ..errors import SquadkitError
    from ..calibrate import fit_calibration

    source = Path(predict_path).name if predict_path is not None else "dev data"
    try:
        calibration, _ = fit_calibration(eval_data, preds, torch_head_fingerprint(net), source)
    except SquadkitError as exc:
        warnings.warn(f"no confidence calibrator saved: {exc}", stacklevel=2)
        return settings
    return dataclasses.replace(settings, calibration=calibration)


def _with_ask_threshold(config, settings, output_dir: Path, predict_path, train_path, accelerator):
    """Learn ask's threshold (train/ask_eval.py) on the saved model; written into squadkit.json and
    ask_eval_results.json. Timed and logged: it reads ``ask_k`` passages per dev question."""
    import dataclasses

    from ..checkpoint import write_settings
    from .ask_eval import fit_ask

    start = time.perf_counter()
    fit = fit_ask(output_dir, predict_path, train_path, config.ask_k, batch_size=config.per_gpu_eval_batch_size,
                  device=str(accelerator.device))
    if fit.refused is not None:
        warn_main(accelerator, fit.refused)
    else:
        settings = dataclasses.replace(settings, ask_threshold=fit.threshold, ask_k=fit.k, ask_threshold_from=fit.source,
                                       ask_calibration=fit.calibration, ask_scoring=fit.scoring,
                                       ask_retrieval_weight=fit.retrieval_weight)
        write_settings(output_dir, settings)
    atomic_write_json(output_dir / ASK_EVAL_FILE, {**fit.results, "seconds": round(time.perf_counter() - start, 1)})
    with open(output_dir / LOG_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"event": "ask_threshold", **fit.results}) + "\n")
    return settings


def _run(config, accelerator, model, tokenizer, features, eval_data, resume, result, train_path, predict_path):
    """Train and/or evaluate, then write the model folder (main process)."""
    threshold = (float(config.null_score_diff_threshold), None)
    preds = None
    if config.do_train:
        model, threshold = train_loop(config, accelerator, model, tokenizer, features, eval_data, resume, result)
    else:
        model = accelerator.prepare(model)
    output_dir = Path(config.output_dir)
    if config.do_eval:
        results, preds = evaluate(accelerator, model, tokenizer, eval_data, config.decode_settings(),
                                  config.per_gpu_eval_batch_size, show_progress=not config.quiet)
        if accelerator.is_main_process:
            from ..predictions import EVAL_RESULTS_FILE, write_prediction_files

            write_prediction_files(preds, output_dir)
            atomic_write_json(output_dir / EVAL_RESULTS_FILE, results)
            result.eval_results = results
            threshold = _threshold_of(results, config, "the end of training")
            note = abstention_at_chance(eval_data, preds.null_odds, threshold[0], predict_path)
            if note:
                warn_main(accelerator, note)
    result.null_score_diff_threshold = threshold[0]
    if config.do_train and accelerator.is_main_process:
        settings = config.model_settings(threshold[0], threshold[1], result.eval_results,
                                         global_step=result.global_step, examples_used=result.examples_used,
                                         train_windows=result.train_windows,
                                         **({"negative_windows": result.negative_windows}
                                            if config.for_collections else {}))
        if config.do_eval and preds is not None:
            settings = _with_calibration(settings, accelerator.unwrap_model(model), eval_data, preds, predict_path)
        save_final(accelerator.unwrap_model(model), tokenizer, output_dir, settings)
        if config.do_eval and config.for_collections:
            settings = _with_ask_threshold(config, settings, output_dir, predict_path, train_path, accelerator)
        card = model_card(config, train_path, predict_path if config.do_eval else None, result.eval_results,
                          features.stats, result.global_step, settings)
        atomic_write_text(output_dir / README_FILE, card)
        with open(output_dir / LOG_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": result.global_step, "final": True, "eval": result.eval_results,
                                     "null_score_diff_threshold": result.null_score_diff_threshold}) + "\n")
    accelerator.wait_for_everyone()
