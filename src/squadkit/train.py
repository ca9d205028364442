"""Fine-tune an extractive QA model as transformers' run_squad.py did: one function, one command.

``train(TrainConfig(...))`` is what ``squadkit train`` runs. The recipe is run_squad's
(AdamW without decay on biases and LayerNorm weights, linear warmup/decay, gradient clipping,
start/end cross-entropy averaged, CLS for "no answer"), with run_squad's defaults. The loop in
:func:`_train_loop` is written out in full, nanoGPT style; Hugging Face accelerate does only
device placement, DDP, autocast and gathering, so ``accelerate launch`` / ``torchrun`` run the
same code data-parallel.

Why things are the way they are:

* **Data order is a pure function of (seed, epoch)** and the global batch of step *s* is the
  slice *s* of that epoch's permutation, split over processes and accumulation micro-steps.
  So one process with batch 2B and two processes with batch B see the same samples per step,
  and a resumed run sees exactly the batches the uninterrupted run would have seen, without
  replaying a sampler.
* **The loss is normalised by the global batch size**, not per process, so gradients are the
  same however a batch is split (uneven last batches included); DDP's mean over processes is
  undone by multiplying by the world size.
* **Checkpoints hold everything that changes** (weights, optimizer, scheduler, every process's
  RNG state, step, best score) and are written into a temporary folder and renamed, so a kill
  loses at most the steps since the last checkpoint and never leaves half a checkpoint.
* **Tokenized features are cached** in ``<features_cache_dir>/squadkit-features-<hash>.npz``
  (default folder: ``cache_dir`` if given, else the output folder's parent, so that
  ``--overwrite_output_dir`` never throws it away). The hash covers the data file's bytes, the
  tokenizer's full definition and the window settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import shlex
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import SquadkitError
from .features import WindowSettings, build_windows
from .io import atomic_open, atomic_write_json, atomic_write_text, staged_dir

FEATURES_VERSION = 1  # bump when the cached feature layout or labelling changes
CHECKPOINT_PREFIX = "checkpoint-"
BEST_CHECKPOINT = "checkpoint-best"
LOG_FILE = "log.jsonl"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng_state.pth"
README_FILE = "README.md"


class TrainWarning(UserWarning):
    """Something about a training run worth knowing that does not stop it."""


class TrainingInterrupted(RuntimeError):
    """Raised by the ``interrupt_at_step`` test hook: the run stops as if it had been killed."""


@dataclass
class TrainConfig:
    """run_squad's flags (same names, same defaults) plus squadkit's additions.

    Paths: ``train_file`` / ``predict_file`` are joined to ``data_dir`` when it is given, as in
    run_squad. ``model_type`` is only checked against the model's config (a note when they differ).
    """

    model_name_or_path: str
    output_dir: str
    train_file: str | None = None
    predict_file: str | None = None
    data_dir: str | None = None
    model_type: str | None = None
    config_name: str | None = None
    tokenizer_name: str | None = None
    cache_dir: str | None = None  # Hugging Face download cache; also the default feature-cache folder
    features_cache_dir: str | None = None
    do_train: bool = True
    do_eval: bool = False
    do_lower_case: bool = False
    version_2_with_negative: bool = False  # run_squad's default; the card passes the flag
    max_seq_length: int = 384
    doc_stride: int = 128  # run_squad's meaning: the step between window starts
    max_query_length: int = 64
    per_gpu_train_batch_size: int = 8
    per_gpu_eval_batch_size: int = 8
    learning_rate: float = 5e-5
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.0
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    num_train_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    warmup_steps: int = 0
    warmup_ratio: float = 0.0  # used when warmup_steps is 0
    n_best_size: int = 20
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0
    logging_steps: int = 500
    save_steps: int = 500  # 0: no intermediate checkpoints
    save_total_limit: int | None = None  # keep only the newest K checkpoint-* folders
    eval_steps: int = 0  # > 0: evaluate on predict_file every N steps (and keep the best)
    keep_best: bool = True  # with eval_steps: keep checkpoint-best, the weights with the best dev F1
    load_best_model_at_end: bool = False  # final model = checkpoint-best rather than the last step
    seed: int = 42
    bf16: bool = False
    fp16: bool = False
    no_cuda: bool = False
    overwrite_output_dir: bool = False
    overwrite_cache: bool = False
    resume_from_checkpoint: str | None = None  # a checkpoint folder, or "auto" (the newest, if any)
    show_progress: bool = False  # rich progress bar on the terminal
    quiet: bool = False  # no log lines on stderr
    command: str | None = None  # the command line, for the model card (the CLI fills it in)
    interrupt_at_step: int | None = None  # test hook: stop after this step as if killed

    def validate(self) -> "TrainConfig":
        """One-line errors for values run_squad would only trip over mid-run."""
        for name in ("per_gpu_train_batch_size", "per_gpu_eval_batch_size", "gradient_accumulation_steps",
                     "max_seq_length", "doc_stride", "max_query_length", "n_best_size", "max_answer_length",
                     "logging_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SquadkitError(f"{name} must be a positive integer, got {value!r}")
        for name in ("learning_rate", "adam_epsilon"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
                raise SquadkitError(f"{name} must be a positive number, got {value!r}")
        for name in ("weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise SquadkitError(f"{name} must be a non-negative number, got {value!r}")
        for name in ("warmup_steps", "save_steps", "eval_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise SquadkitError(f"{name} must be a non-negative integer, got {value!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise SquadkitError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise SquadkitError(f"save_total_limit must be a positive integer, got {self.save_total_limit!r}")
        if self.do_train and self.max_steps <= 0 and not self.num_train_epochs > 0:
            raise SquadkitError(f"num_train_epochs must be positive (or give max_steps), got {self.num_train_epochs!r}")
        if self.bf16 and self.fp16:
            raise SquadkitError("give at most one of --bf16 and --fp16")
        if not (self.do_train or self.do_eval):
            raise SquadkitError("nothing to do: give --do_train and/or --do_eval")
        if self.load_best_model_at_end and not self.eval_steps:
            raise SquadkitError("load_best_model_at_end needs eval_steps (evaluation during training)")
        if self.eval_steps and not self.predict_file:
            raise SquadkitError("eval_steps needs a predict_file to evaluate on")
        WindowSettings("squad", self.max_seq_length, self.doc_stride, self.max_query_length).validate()
        return self

    def window_settings(self) -> WindowSettings:
        return WindowSettings("squad", self.max_seq_length, self.doc_stride, self.max_query_length)

    def decode_settings(self, threshold: float | None = None):
        from .predict import SquadDecodeSettings

        return SquadDecodeSettings(
            max_seq_length=self.max_seq_length, doc_stride=self.doc_stride, max_query_length=self.max_query_length,
            n_best_size=self.n_best_size, max_answer_length=self.max_answer_length,
            null_score_diff_threshold=self.null_score_diff_threshold if threshold is None else threshold,
            version_2_with_negative=self.version_2_with_negative, do_lower_case=self.do_lower_case,
        )

    def resolved_path(self, name: str) -> Path | None:
        value = getattr(self, name)
        if value is None:
            if self.data_dir is None:
                return None
            value = {"train_file": "train-v2.0.json" if self.version_2_with_negative else "train-v1.1.json",
                     "predict_file": "dev-v2.0.json" if self.version_2_with_negative else "dev-v1.1.json"}[name]
        return Path(self.data_dir) / value if self.data_dir is not None else Path(value)

    def as_command(self) -> str:
        """The equivalent ``squadkit train`` command line (for the model card)."""
        if self.command:
            return self.command
        defaults = TrainConfig(model_name_or_path="", output_dir="")
        parts = ["squadkit", "train"]
        for f in fields(self):
            if f.name in ("command", "show_progress", "quiet", "interrupt_at_step"):
                continue
            value = getattr(self, f.name)
            if f.name not in ("model_name_or_path", "output_dir") and value == getattr(defaults, f.name):
                continue
            if isinstance(value, bool):
                if value:
                    parts.append(f"--{f.name}")
            elif value is not None:
                parts += [f"--{f.name}", str(value)]
        return shlex.join(parts)


@dataclass
class TrainResult:
    """What a run produced; every path is inside ``output_dir``."""

    output_dir: Path
    global_step: int = 0
    train_loss: float | None = None  # mean loss over the last logging window
    train_seconds: float = 0.0
    samples_per_second: float | None = None  # training windows per second (all processes)
    examples_used: int = 0
    examples_skipped: dict = field(default_factory=dict)
    train_windows: int = 0
    eval_results: dict | None = None
    null_score_diff_threshold: float | None = None
    best_metric: float | None = None
    best_step: int | None = None
    checkpoints: list[Path] = field(default_factory=list)
    resumed_from: Path | None = None
    features_cache: Path | None = None
    features_cached: bool = False  # True when tokenization was skipped thanks to the cache
    is_main_process: bool = True  # under a launcher, only the main process writes and reports


# ----------------------------------------------------------------------------------------------
# features: tokenized windows with labels, cached on disk
# ----------------------------------------------------------------------------------------------


@dataclass
class TrainFeatures:
    """All training windows, concatenated flat (no per-window Python objects in the loop)."""

    input_ids: np.ndarray  # (total_tokens,) int32, windows back to back
    token_type_ids: np.ndarray | None  # (total_tokens,) int8
    offsets: np.ndarray  # (n + 1,) int64: window k is [offsets[k], offsets[k + 1])
    start_positions: np.ndarray  # (n,) int64, 0 (CLS) for no answer in this window
    end_positions: np.ndarray
    stats: dict

    def __len__(self) -> int:
        return len(self.start_positions)

    def batch(self, indices: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
        """Windows ``indices`` padded to the longest of them: one array per model input."""
        lengths = self.offsets[indices + 1] - self.offsets[indices]
        n, width = len(indices), int(lengths.max())
        ids = np.full((n, width), pad_id, dtype=np.int64)
        mask = np.arange(width)[None, :] < lengths[:, None]
        # one gather for the whole batch: token j of row r comes from offsets[idx[r]] + j
        src = (self.offsets[indices][:, None] + np.arange(width)[None, :])[mask]
        ids[mask] = self.input_ids[src]
        out = {"input_ids": ids, "attention_mask": mask.astype(np.int64)}
        if self.token_type_ids is not None:
            types = np.zeros((n, width), dtype=np.int64)
            types[mask] = self.token_type_ids[src]
            out["token_type_ids"] = types
        out["start_positions"] = self.start_positions[indices]
        out["end_positions"] = self.end_positions[indices]
        return out

    def save(self, path: Path) -> None:
        """Written to a temporary file and renamed: a reader never sees half a cache."""
        with atomic_open(path, "wb") as handle:
            np.savez(
                handle, input_ids=self.input_ids, offsets=self.offsets, start_positions=self.start_positions,
                end_positions=self.end_positions,
                token_type_ids=self.token_type_ids if self.token_type_ids is not None else np.zeros(0, np.int8),
                has_types=np.array(self.token_type_ids is not None), stats=np.array(json.dumps(self.stats)),
            )

    @classmethod
    def load(cls, path: Path) -> "TrainFeatures":
        with np.load(path, allow_pickle=False) as z:
            return cls(
                input_ids=z["input_ids"], token_type_ids=z["token_type_ids"] if bool(z["has_types"]) else None,
                offsets=z["offsets"], start_positions=z["start_positions"], end_positions=z["end_positions"],
                stats=json.loads(str(z["stats"])),
            )


def tokenizer_fingerprint(tokenizer) -> str:
    """Everything about a fast tokenizer that changes its output: its full JSON definition."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    h.update(tokenizer.backend_tokenizer.to_str().encode())
    h.update(json.dumps(list(tokenizer.model_input_names)).encode())
    return h.hexdigest()


def features_cache_path(folder: str | os.PathLike, data_file: str | os.PathLike, tokenizer, settings: WindowSettings,
                        version_2_with_negative: bool) -> Path:
    """``<folder>/squadkit-features-<hash>.npz``; the hash covers data bytes, tokenizer and settings."""
    h = hashlib.sha256(f"squadkit-features-v{FEATURES_VERSION}".encode())
    with open(data_file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    h.update(tokenizer_fingerprint(tokenizer).encode())
    h.update(json.dumps([asdict(settings), version_2_with_negative]).encode())
    return Path(folder) / f"squadkit-features-{h.hexdigest()[:24]}.npz"


def make_train_features(examples: Sequence, tokenizer, settings: WindowSettings, version_2_with_negative: bool,
                        source: str = "training data", chunk_size: int = 2000) -> TrainFeatures:
    """Windows with start/end labels for the first answer of each question (as run_squad).

    Answers whose text is not at their offset, and (without version_2_with_negative) questions
    with no answer, are skipped and counted; an error when nothing usable is left.
    """
    kept, spans = [], []
    mismatched, unanswerable = [], 0
    for ex in examples:
        if ex.answers:
            a = ex.answers[0]
            if ex.context[a.answer_start:a.answer_start + len(a.text)] != a.text:
                mismatched.append(ex.id)
                continue
            spans.append((a.answer_start, a.answer_start + len(a.text)))
        elif version_2_with_negative:
            spans.append(None)
        else:
            unanswerable += 1
            continue
        kept.append(ex)
    if not kept:
        why = []
        if mismatched:
            why.append(f"{len(mismatched)} answer(s) not found in their context (first: {mismatched[0]})")
        if unanswerable:
            why.append(f"{unanswerable} unanswerable question(s) without --version_2_with_negative")
        raise SquadkitError(f"{source}: no usable training examples out of {len(examples)}"
                            + (f" ({'; '.join(why)})" if why else ""))
    pieces = []
    for lo in range(0, len(kept), chunk_size):
        chunk = kept[lo:lo + chunk_size]
        pieces.extend(build_windows(tokenizer, [e.question for e in chunk], [e.context for e in chunk], settings,
                                    first_example_index=lo, answers=spans[lo:lo + chunk_size]))
    lengths = np.fromiter((w.length for w in pieces), dtype=np.int64, count=len(pieces))
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    has_types = "token_type_ids" in tokenizer.model_input_names and all(w.token_type_ids is not None for w in pieces)
    starts = np.fromiter((w.start_position for w in pieces), dtype=np.int64, count=len(pieces))
    stats = {
        "examples": len(examples), "examples_used": len(kept), "windows": len(pieces),
        "windows_with_answer": int((starts > 0).sum()),
        "skipped": {"answer_not_in_context": len(mismatched), "unanswerable_without_v2": unanswerable},
        "first_skipped_ids": mismatched[:5],
    }
    return TrainFeatures(
        input_ids=np.concatenate([w.input_ids for w in pieces]).astype(np.int32),
        token_type_ids=np.concatenate([w.token_type_ids for w in pieces]).astype(np.int8) if has_types else None,
        offsets=offsets, start_positions=starts,
        end_positions=np.fromiter((w.end_position for w in pieces), dtype=np.int64, count=len(pieces)),
        stats=stats,
    )


# ----------------------------------------------------------------------------------------------
# output folder, checkpoints
# ----------------------------------------------------------------------------------------------


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete ``checkpoint-<step>`` folders, oldest first (a complete one holds trainer_state.json)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+)", p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def _resolve_resume(config: TrainConfig, output_dir: Path) -> Path | None:
    value = config.resume_from_checkpoint
    if not value:
        return None
    if value == "auto":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(value)
    if not (path / STATE_FILE).is_file():
        raise SquadkitError(f"{path}: not a squadkit training checkpoint (no {STATE_FILE})")
    return path


def _check_output_dir(config: TrainConfig, output_dir: Path, resume: Path | None) -> None:
    """run_squad's rule: a non-empty output folder needs --overwrite_output_dir (or a resume)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise SquadkitError(f"{output_dir}: output_dir exists and is not a folder")
    if config.do_train and resume is None and not config.overwrite_output_dir and output_dir.is_dir() \
            and any(output_dir.iterdir()):
        raise SquadkitError(f"output folder {output_dir} already exists and is not empty; pass --overwrite_output_dir "
                            f"to train into it, or --resume_from_checkpoint auto to continue a run there")


def _clear_previous_run(output_dir: Path) -> None:
    """--overwrite_output_dir: remove only what a previous ``squadkit train`` wrote that would
    otherwise mix with this run (its checkpoints, its log, its leftover temporary folders).
    Everything else stays; the model, card and prediction files are replaced when this run ends."""
    if not output_dir.is_dir():
        return
    for p in output_dir.iterdir():
        if p.is_dir() and (re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+|best)", p.name)
                           or p.name.startswith(f".{CHECKPOINT_PREFIX}") or p.name.startswith(".final")):
            shutil.rmtree(p)
        elif p.name == LOG_FILE:
            p.unlink()


def _rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, output_dir: Path, step: int,
                     trainer_state: dict, save_total_limit: int | None) -> Path | None:
    """All processes call this (their RNG states are gathered); the main process writes."""
    import torch
    from accelerate.utils import gather_object

    rng_states = gather_object([_rng_state()]) if accelerator.num_processes > 1 else [_rng_state()]
    final = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        with staged_dir(final) as tmp:
            accelerator.unwrap_model(model).save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            torch.save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
            torch.save(rng_states, tmp / RNG_FILE)
            (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n", encoding="utf-8")
        if save_total_limit:
            for old in list_checkpoints(output_dir)[:-save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final if accelerator.is_main_process else None


def _save_final(model, tokenizer, output_dir: Path, settings: dict) -> None:
    """The final model in Hugging Face format, loadable from ``output_dir`` itself.

    ``models.save_checkpoint`` writes it complete into a staging folder (atomically); each file
    then moves into place with an atomic rename, leaving checkpoints and logs beside it alone.
    """
    from .models import save_checkpoint

    stage = output_dir / ".final-model"
    shutil.rmtree(stage, ignore_errors=True)
    save_checkpoint(model, tokenizer, stage, settings)
    for p in sorted(stage.iterdir()):
        target = output_dir / p.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(p, target)
    stage.rmdir()


# ----------------------------------------------------------------------------------------------
# evaluation, model card, logging
# ----------------------------------------------------------------------------------------------


def _evaluate(accelerator, model, tokenizer, dataset, decode, batch_size: int):
    """Predict ``dataset`` (each process a shard), gather on the main process and score it.

    Returns ``(results, predictions)`` on the main process and ``(None, None)`` elsewhere.
    """
    from accelerate.utils import gather_object

    from .models import TorchQAModel
    from .predict import evaluate_predictions, merge_predictions, predict_squad

    net = accelerator.unwrap_model(model)
    was_training = net.training
    net.eval()
    qa = TorchQAModel(net, tokenizer, getattr(net.config, "_name_or_path", ""), str(accelerator.device))
    world = accelerator.num_processes
    shard = (accelerator.process_index, world) if world > 1 else None
    try:
        with accelerator.autocast():
            preds = predict_squad(qa, dataset.examples, decode, batch_size=batch_size, shard=shard)
    finally:
        if was_training:
            net.train()
    if shard is not None:
        parts = gather_object([preds])
        if not accelerator.is_main_process:
            return None, None
        preds = merge_predictions(parts, [e.id for e in dataset.examples])
    return evaluate_predictions(dataset, preds, decode.null_score_diff_threshold), preds


def _metric(results: dict) -> float:
    """The score that picks the best checkpoint: F1 at the best null threshold when there is one
    (that threshold is saved with the model, so it is the F1 the model will actually give)."""
    return float(results.get("best_f1", results["f1"]))


def model_card(config: TrainConfig, base_model: str, train_path: Path | None, predict_path: Path | None,
               results: dict | None, stats: dict | None, global_step: int) -> str:
    """A README.md in the shape of the card's: base model, data, the command, results table and JSON."""
    name = Path(config.output_dir).name
    lines = [f"# {name}", "", f"`{base_model}` fine-tuned for extractive question answering "
             f"(SQuAD{' v2' if config.version_2_with_negative else ''} style) with `squadkit train`.", "",
             "## Details of the language model", "", f"Base model: `{base_model}`", "",
             "## Details of the downstream task (Q&A) - Dataset", ""]
    if train_path is not None:
        lines.append(f"- train: `{train_path.name}`" + (
            f" ({stats['examples_used']} questions used of {stats['examples']}, {stats['windows']} windows)"
            if stats else ""))
    if predict_path is not None:
        lines.append(f"- dev: `{predict_path.name}`")
    lines += ["", "## Model training", "", f"Trained for {global_step} steps with:", "", "```bash",
              config.as_command(), "```", ""]
    if results:
        lines += ["## Results", "", "| Metric | # Value |", "| ------ | --------- |",
                  f"| **EM** | **{results['exact']:.2f}** |", f"| **F1** | **{results['f1']:.2f}** |", "",
                  "```json", json.dumps(results, indent=2), "```", ""]
        if "best_f1_thresh" in results:
            lines += [f"The best null-score threshold on the dev data ({results['best_f1_thresh']:.4f}) is saved in "
                      f"`squadkit.json`; `squadkit predict` and `squadkit answer` use it by default.", ""]
    return "\n".join(lines)


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


def _warn(accelerator, message: str) -> None:
    if accelerator.is_main_process:
        warnings.warn(message, TrainWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------


def _lowercases(tokenizer) -> bool:
    a = tokenizer("Paris Hello", add_special_tokens=False)["input_ids"]
    b = tokenizer("paris hello", add_special_tokens=False)["input_ids"]
    return a == b


def _make_accelerator(config: TrainConfig):
    import torch
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and not config.no_cuda
    if config.fp16 and not cuda:
        raise SquadkitError("--fp16 needs a CUDA GPU and none is in use here; use --bf16 (CPU autocast) or neither")
    if config.bf16 and cuda and not torch.cuda.is_bf16_supported():
        raise SquadkitError("--bf16: this GPU does not support bfloat16; use --fp16")
    precision = "bf16" if config.bf16 else "fp16" if config.fp16 else "no"
    return Accelerator(mixed_precision=precision, cpu=config.no_cuda or not cuda)


def train(config: TrainConfig) -> TrainResult:
    """Fine-tune (``do_train``) and/or evaluate (``do_eval``) as run_squad did; see the module doc.

    Every check on the input happens before anything is written: a bad flag, missing file,
    model without a QA architecture or data without usable examples is a SquadkitError.
    """
    from transformers import AutoConfig, AutoModelForQuestionAnswering
    from transformers.trainer_utils import set_seed

    from .data import load_squad
    from .models import _hub_error, check_qa_config, load_tokenizer

    config.validate()
    accelerator = _make_accelerator(config)
    output_dir = Path(config.output_dir)
    train_path, predict_path = config.resolved_path("train_file"), config.resolved_path("predict_file")
    if config.do_train and train_path is None:
        raise SquadkitError("--do_train needs --train_file")
    if config.do_eval and predict_path is None:
        raise SquadkitError("--do_eval needs --predict_file")
    for p in (train_path if config.do_train else None, predict_path if (config.do_eval or config.eval_steps) else None):
        if p is not None and not p.is_file():
            raise SquadkitError(f"{p}: data file not found")
    resume = _resolve_resume(config, output_dir) if config.do_train else None
    _check_output_dir(config, output_dir, resume)

    # model and tokenizer: from the checkpoint when resuming, else the base model
    source = str(resume) if resume is not None else config.model_name_or_path
    hub = {"cache_dir": config.cache_dir} if config.cache_dir else {}
    config_source = config.config_name if (config.config_name and resume is None) else source
    try:
        model_config = AutoConfig.from_pretrained(config_source, **hub)
    except (OSError, ValueError) as exc:
        raise _hub_error(config_source, exc) from None
    check_qa_config(model_config, config_source)
    if config.model_type and config.model_type.lower() != model_config.model_type:
        _warn(accelerator, f"--model_type {config.model_type} differs from the model's config "
                           f"('{model_config.model_type}'); the config decides (squadkit reads the architecture from it)")
    tok_source = config.tokenizer_name if (config.tokenizer_name and resume is None) else source
    tokenizer = load_tokenizer(tok_source, **hub, **({"do_lower_case": True} if config.do_lower_case else {}))
    if config.do_lower_case and not _lowercases(tokenizer):
        _warn(accelerator, f"--do_lower_case has no effect on {type(tokenizer).__name__}: this tokenizer keeps case "
                           f"(as with run_squad, whose RoBERTa tokenizer ignored the flag too); "
                           f"it only changes how answer texts are projected back")

    eval_data = load_squad(predict_path) if (config.do_eval or config.eval_steps) else None
    result = TrainResult(output_dir=output_dir, resumed_from=resume, is_main_process=accelerator.is_main_process)

    set_seed(config.seed)
    try:
        model = AutoModelForQuestionAnswering.from_pretrained(source, config=model_config, **hub)
    except (OSError, ValueError) as exc:
        raise _hub_error(source, exc) from None

    features = None
    if config.do_train:
        features = _load_features(config, accelerator, train_path, tokenizer, result, load_squad)
    # -- nothing was written to output_dir before this line; a bad input has already raised --
    accelerator.wait_for_everyone()  # every process has checked the output folder before it changes
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if config.do_train and config.overwrite_output_dir and resume is None:
            _clear_previous_run(output_dir)
    accelerator.wait_for_everyone()

    if config.do_train:
        model = _train_loop(config, accelerator, model, tokenizer, features, eval_data, resume, result)
    else:
        model = accelerator.prepare(model)

    settings = _saved_settings(config, result)
    if config.do_eval:
        results, preds = _evaluate(accelerator, model, tokenizer, eval_data, config.decode_settings(),
                                   config.per_gpu_eval_batch_size)
        if accelerator.is_main_process:
            from .predict import EVAL_RESULTS_FILE, write_prediction_files

            write_prediction_files(preds, output_dir)
            atomic_write_json(output_dir / EVAL_RESULTS_FILE, results)
            result.eval_results = results
            if "best_f1_thresh" in results:
                settings["null_score_diff_threshold"] = float(results["best_f1_thresh"])
                settings["null_score_diff_threshold_from"] = f"best_f1_thresh on {predict_path.name}"
    result.null_score_diff_threshold = settings["null_score_diff_threshold"]
    if config.do_train and accelerator.is_main_process:
        _save_final(accelerator.unwrap_model(model), tokenizer, output_dir, settings)
        card = model_card(config, config.model_name_or_path, train_path, predict_path if config.do_eval else None,
                          result.eval_results, features.stats, result.global_step)
        atomic_write_text(output_dir / README_FILE, card)
        with open(output_dir / LOG_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": result.global_step, "final": True, "eval": result.eval_results,
                                     "null_score_diff_threshold": result.null_score_diff_threshold}) + "\n")
    accelerator.wait_for_everyone()
    result.checkpoints = list_checkpoints(output_dir)
    return result


def _load_features(config, accelerator, train_path: Path, tokenizer, result: TrainResult, load_squad) -> TrainFeatures:
    """Tokenize the training data once (main process), cached on disk; the others read the cache."""
    settings = config.window_settings()
    folder = config.features_cache_dir or config.cache_dir or str(Path(config.output_dir).resolve().parent)
    path = features_cache_path(folder, train_path, tokenizer, settings, config.version_2_with_negative)
    result.features_cache = path
    cached = path.is_file() and not config.overwrite_cache
    features = None
    if cached:
        try:
            features = TrainFeatures.load(path)
        except (OSError, ValueError, KeyError):
            cached = False  # a damaged cache is rebuilt, never trusted
    if features is None:
        features = make_train_features(load_squad(train_path).examples, tokenizer, settings,
                                       config.version_2_with_negative, source=str(train_path))
    result.features_cached = cached
    if not cached and accelerator.is_main_process:
        try:
            features.save(path)
        except OSError as exc:
            _warn(accelerator, f"cannot write the feature cache {path}: {exc}")
    stats = features.stats
    result.examples_used, result.train_windows = stats["examples_used"], stats["windows"]
    result.examples_skipped = {k: v for k, v in stats["skipped"].items() if v}
    if stats["skipped"]["answer_not_in_context"]:
        _warn(accelerator, f"{train_path}: skipped {stats['skipped']['answer_not_in_context']} question(s) whose answer "
                           f"text is not at its answer_start (first: {', '.join(stats['first_skipped_ids'])})")
    if stats["skipped"]["unanswerable_without_v2"]:
        _warn(accelerator, f"{train_path}: skipped {stats['skipped']['unanswerable_without_v2']} unanswerable "
                           f"question(s); pass --version_2_with_negative to train on them")
    return features


def _saved_settings(config: TrainConfig, result: TrainResult) -> dict:
    """squadkit.json beside the model: the threshold predict/answer use, and how it was made."""
    training = {f.name: getattr(config, f.name) for f in fields(config)
                if f.name not in ("show_progress", "quiet", "interrupt_at_step", "command")}
    return {
        "null_score_diff_threshold": float(config.null_score_diff_threshold),
        "window": {"mode": "squad", "max_seq_length": config.max_seq_length, "doc_stride": config.doc_stride,
                   "max_query_length": config.max_query_length},
        "do_lower_case": config.do_lower_case,
        "version_2_with_negative": config.version_2_with_negative,
        "training": {**training, "command": config.as_command(), "global_step": result.global_step,
                     "examples_used": result.examples_used, "train_windows": result.train_windows},
    }


def _qa_loss(start_logits, end_logits, start_positions, end_positions, attention_mask):
    """Per-window loss as the HF QA heads compute it ((CE(start) + CE(end)) / 2), unreduced,
    but over the window's real tokens only. Padding can never be an answer (decoding never
    looks at it), and with padding to the longest window of a batch, counting it would make a
    window's loss depend on which other windows share its batch, so that splitting a batch
    over processes would change the gradients."""
    import torch.nn.functional as F

    pad = attention_mask == 0
    s = F.cross_entropy(start_logits.float().masked_fill(pad, -1e4), start_positions, reduction="none")
    e = F.cross_entropy(end_logits.float().masked_fill(pad, -1e4), end_positions, reduction="none")
    return (s + e) / 2


def _train_loop(config: TrainConfig, accelerator, model, tokenizer, features: TrainFeatures, eval_data,
                resume: Path | None, result: TrainResult):
    import torch
    from transformers import get_linear_schedule_with_warmup

    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    micro_bs, accum = config.per_gpu_train_batch_size, config.gradient_accumulation_steps
    global_bs = micro_bs * world * accum
    steps_per_epoch = math.ceil(len(features) / global_bs)
    total_steps = config.max_steps if config.max_steps > 0 else math.ceil(config.num_train_epochs * steps_per_epoch)
    warmup = config.warmup_steps or math.ceil(config.warmup_ratio * total_steps)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")  # run_squad's groups
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in params if not any(k in n for k in no_decay)], "weight_decay": config.weight_decay},
         {"params": [p for n, p in params if any(k in n for k in no_decay)], "weight_decay": 0.0}],
        lr=config.learning_rate, eps=config.adam_epsilon)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)  # the scheduler stays ours: stepped once per step

    step, best, best_step = 0, None, None
    if resume is not None:
        state = json.loads((resume / STATE_FILE).read_text(encoding="utf-8"))
        step, best, best_step = state["global_step"], state.get("best_metric"), state.get("best_step")
        optimizer.load_state_dict(torch.load(resume / OPTIMIZER_FILE, map_location=device, weights_only=False))
        scheduler.load_state_dict(torch.load(resume / SCHEDULER_FILE, weights_only=False))
        rng = torch.load(resume / RNG_FILE, weights_only=False)
        if len(rng) == world:
            _set_rng_state(rng[rank])
        else:
            _warn(accelerator, f"resuming on {world} process(es) from a checkpoint written by {len(rng)}: "
                               f"random states (dropout) are re-seeded, so results will differ from an uninterrupted run")
        if state.get("global_batch") != global_bs:
            _warn(accelerator, f"the checkpoint was trained with a global batch of {state.get('global_batch')}, "
                               f"this run uses {global_bs}")
    result.global_step, result.best_metric, result.best_step = step, best, best_step

    main = accelerator.is_main_process
    console = None
    if main:
        from rich.console import Console

        console = Console(stderr=True)
    log = _Log(Path(config.output_dir) / LOG_FILE if main else None, config.quiet, console)
    log.write({"event": "start", "step": step, "total_steps": total_steps, "steps_per_epoch": steps_per_epoch,
               "global_batch": global_bs, "processes": world, "device": str(device),
               "mixed_precision": accelerator.mixed_precision, "train": features.stats,
               "resumed_from": str(resume) if resume else None},
              f"training {features.stats['examples_used']} questions ({len(features)} windows) for {total_steps} steps "
              f"({steps_per_epoch}/epoch), global batch {global_bs} on {world} process(es), {device}"
              + (f"; resuming at step {step} from {resume}" if resume else ""))
    progress = _progress_bar(total_steps, step, console) if (main and config.show_progress) else None
    order_cache: dict[int, np.ndarray] = {}

    def epoch_order(epoch: int) -> np.ndarray:  # the same permutation on every process
        if epoch not in order_cache:
            order_cache.clear()
            g = torch.Generator().manual_seed(config.seed + epoch)
            order_cache[epoch] = torch.randperm(len(features), generator=g).numpy()
        return order_cache[epoch]

    model.train()
    run_loss = torch.zeros((), device=device)
    run_count = torch.zeros((), device=device)
    window_samples, window_time, t_last = 0, 0.0, time.perf_counter()
    train_time, train_samples = 0.0, 0
    try:
        while step < total_steps:
            # ---- one optimizer step over global batch `step` of this epoch's order ----
            epoch, k = divmod(step, steps_per_epoch)
            batch_ids = epoch_order(epoch)[k * global_bs:(k + 1) * global_bs]
            n_global = len(batch_ids)
            for m, chunk in enumerate(np.array_split(batch_ids, accum)):
                mine = np.array_split(chunk, world)[rank]
                weight = 1.0
                if len(mine) == 0:  # a short last batch: still run (DDP needs every process) at weight 0
                    mine, weight = batch_ids[:1], 0.0
                arrays = features.batch(mine, pad_id)
                tensors = {n: torch.from_numpy(a).to(device, non_blocking=True) for n, a in arrays.items()}
                sync = contextlib.nullcontext() if m == accum - 1 else accelerator.no_sync(model)
                with sync:
                    with accelerator.autocast():
                        out = model(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"],
                                    **({"token_type_ids": tensors["token_type_ids"]} if "token_type_ids" in tensors else {}))
                    losses = _qa_loss(out.start_logits, out.end_logits, tensors["start_positions"],
                                      tensors["end_positions"], tensors["attention_mask"]) * weight
                    # mean over the *global* batch; DDP averages over processes, so scale by world
                    accelerator.backward(losses.sum() * (world / n_global))
                run_loss += losses.detach().sum()
                run_count += weight * len(mine)
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm) \
                if config.max_grad_norm > 0 else None
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window_samples += n_global
            # ---- bookkeeping: log, evaluate, checkpoint ----
            if progress is not None:
                progress.update(step)
            if step % config.logging_steps == 0 or step == total_steps:
                now = time.perf_counter()
                window_time += now - t_last
                totals = accelerator.reduce(torch.stack([run_loss, run_count]), reduction="sum") if world > 1 \
                    else torch.stack([run_loss, run_count])
                loss = (totals[0] / totals[1].clamp(min=1)).item()
                rate = window_samples / window_time if window_time > 0 else None
                train_time += window_time
                train_samples += window_samples
                record = {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": loss,
                          "learning_rate": scheduler.get_last_lr()[0],
                          "grad_norm": float(grad_norm) if grad_norm is not None else None,
                          "samples_per_second": rate}
                log.write(record, f"step {step}/{total_steps}  loss {loss:.4f}  lr {record['learning_rate']:.3g}  "
                                  f"{rate or 0:.1f} samples/s")
                result.train_loss, result.samples_per_second = loss, rate
                run_loss.zero_(), run_count.zero_()
                window_samples, window_time, t_last = 0, 0.0, time.perf_counter()
            if config.eval_steps and step % config.eval_steps == 0:
                window_time += time.perf_counter() - t_last
                best, best_step = _eval_during_training(config, accelerator, model, tokenizer, eval_data, step, best,
                                                        best_step, log)
                t_last = time.perf_counter()
            if config.save_steps and step % config.save_steps == 0:
                window_time += time.perf_counter() - t_last
                state = {"global_step": step, "epoch": step / steps_per_epoch, "total_steps": total_steps,
                         "global_batch": global_bs, "processes": world, "best_metric": best, "best_step": best_step,
                         "seed": config.seed}
                path = _save_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, Path(config.output_dir),
                                        step, state, config.save_total_limit)
                if path is not None:
                    log.write({"step": step, "checkpoint": str(path)})
                t_last = time.perf_counter()
            result.global_step, result.best_metric, result.best_step = step, best, best_step
            if config.interrupt_at_step is not None and step >= config.interrupt_at_step:
                raise TrainingInterrupted(f"interrupted after step {step} (interrupt_at_step)")
    finally:
        if progress is not None:
            progress.stop()
        log.close()
    result.train_seconds = train_time
    if train_time > 0:
        result.samples_per_second = train_samples / train_time
    if config.load_best_model_at_end and best_step is not None:
        best_dir = Path(config.output_dir) / BEST_CHECKPOINT
        from safetensors.torch import load_file

        accelerator.unwrap_model(model).load_state_dict(load_file(best_dir / "model.safetensors"), strict=False)
    return model


def _eval_during_training(config, accelerator, model, tokenizer, eval_data, step, best, best_step, log):
    """Score the dev data; keep the weights with the best F1 as checkpoint-best (main process)."""
    results, _ = _evaluate(accelerator, model, tokenizer, eval_data, config.decode_settings(),
                           config.per_gpu_eval_batch_size)
    if accelerator.is_main_process:
        score = _metric(results)
        improved = best is None or score > best
        log.write({"step": step, "eval": results},
                  f"eval at step {step}: EM {results['exact']:.2f}  F1 {results['f1']:.2f}"
                  + (f"  best F1 {results['best_f1']:.2f}" if "best_f1" in results else "")
                  + ("  (new best)" if improved else ""))
        if improved:
            best, best_step = score, step
            if config.keep_best:
                from .models import save_checkpoint

                settings = {"null_score_diff_threshold": float(results.get("best_f1_thresh",
                                                                           config.null_score_diff_threshold)),
                            "step": step, "eval": results}
                save_checkpoint(accelerator.unwrap_model(model), tokenizer,
                                Path(config.output_dir) / BEST_CHECKPOINT, settings)
    payload = [best, best_step]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(payload, from_process=0)
    accelerator.wait_for_everyone()
    return payload[0], payload[1]


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
