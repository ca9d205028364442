"""What runs around the steps: logging, evaluation (and its threshold), checkpoints, progress."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path


from .checkpoints import (
    LOG_FILE,
    save_best,
    save_training_checkpoint,
)
from .config import TrainConfig, TrainResult
from .dataset import TrainFeatures

# ----------------------------------------------------------------------------------------------
# what happens between steps: logging, evaluation, checkpoints
# ----------------------------------------------------------------------------------------------


class Events:
    """Bookkeeping around the loop: loss averages, log lines, evaluation, checkpoints.

    Log lines (log.jsonl and stderr) come every ``logging_steps``; off a terminal also at least
    every 5% of the steps and at least once a minute, so a background run shows life.
    """

    def __init__(self, config, accelerator, model, tokenizer, optimizer, scheduler, eval_data, plan,
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


