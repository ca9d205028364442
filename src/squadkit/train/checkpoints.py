"""The training run's folder: resumable checkpoints, checkpoint-best, the final model.

Every checkpoint is a model folder like the final one (weights, tokenizer, ``squadkit.json``),
plus what resuming needs: optimizer, scheduler, every process's RNG state and the trainer state.
Each is written into a temporary folder and renamed into place, so a kill loses at most the
steps since the last checkpoint and never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np

from ..model_folder import ModelSettings, save_checkpoint, save_model_files
from ..errors import SquadkitError
from ..io import staged_dir
from .config import warn_main

CHECKPOINT_PREFIX = "checkpoint-"
BEST_CHECKPOINT = "checkpoint-best"
LOG_FILE = "log.jsonl"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng_state.pth"
README_FILE = "README.md"


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


def resolve_resume(config, output_dir: Path) -> Path | None:
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


def check_output_dir(config, output_dir: Path, resume: Path | None) -> None:
    """run_squad's rule: a non-empty output folder needs --overwrite_output_dir (or a resume)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise SquadkitError(f"{output_dir}: output_dir exists and is not a folder")
    if config.do_train and resume is None and not config.overwrite_output_dir and output_dir.is_dir() \
            and any(output_dir.iterdir()):
        raise SquadkitError(f"output folder {output_dir} already exists and is not empty; pass --overwrite_output_dir "
                            f"to train into it, or --resume_from_checkpoint auto to continue a run there")


def clear_previous_run(output_dir: Path) -> None:
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


def rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_checkpoint(accelerator, model, tokenizer, optimizer, scheduler, output_dir: Path, step: int,
                             trainer_state: dict, save_total_limit: int | None, settings: ModelSettings) -> Path | None:
    """All processes call this (their RNG states are gathered); the main process writes."""
    import torch
    from accelerate.utils import gather_object

    rng_states = gather_object([rng_state()]) if accelerator.num_processes > 1 else [rng_state()]
    final = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    if accelerator.is_main_process:
        with staged_dir(final) as tmp:
            save_model_files(accelerator.unwrap_model(model), tokenizer, tmp, settings)
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            torch.save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
            torch.save(rng_states, tmp / RNG_FILE)
            (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n", encoding="utf-8")
        if save_total_limit:
            for old in list_checkpoints(output_dir)[:-save_total_limit]:
                shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final if accelerator.is_main_process else None


def save_final(model, tokenizer, output_dir: Path, settings: ModelSettings) -> None:
    """The final model in Hugging Face format, loadable from ``output_dir`` itself.

    Written complete into a staging folder (atomically); each file then moves into place with an
    atomic rename, leaving checkpoints and logs beside it alone.
    """
    stage = output_dir / ".final-model"
    shutil.rmtree(stage, ignore_errors=True)
    save_checkpoint(model, tokenizer, stage, settings)
    for p in sorted(stage.iterdir()):
        target = output_dir / p.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(p, target)
    stage.rmdir()


def check_resume_compatible(resume: Path, group_by_length: bool, passage_negatives: int = 0,
                            shared_norm: bool = False) -> None:
    """A run resumed with another batch-grouping setting (or other negatives, or shared norm on or
    off) would see other batches than the run it continues: refused (before anything is written),
    naming the setting to use."""
    state = json.loads((resume / STATE_FILE).read_text(encoding="utf-8"))
    for name, value, default in (("passage_negatives", passage_negatives, 0), ("shared_norm", shared_norm, False)):
        saved_value = state.get(name, default)
        if saved_value != value:
            flag = "--" + name.replace("_", "-")
            raise SquadkitError(f"{resume}: that run was started with {name}={saved_value!r} ({flag}); resume it with "
                                f"the same setting, not {value!r}", param=name)
    saved = bool(state.get("group_by_length", False))  # squadkit 0.1 did not group
    if saved != group_by_length:
        how = ("with length-grouped batches (--group-by-length, group_by_length=True)" if saved else
               "without length-grouped batches (--no-group-by-length, group_by_length=False)")
        raise SquadkitError(f"{resume}: that run was started {how}; resume it with the same setting")


def restore_training_state(resume: Path, optimizer, scheduler, accelerator, global_batch: int) -> dict:
    """Optimizer, scheduler and this process's RNG state from a checkpoint; returns its trainer state."""
    import torch

    state = json.loads((resume / STATE_FILE).read_text(encoding="utf-8"))
    optimizer.load_state_dict(torch.load(resume / OPTIMIZER_FILE, map_location=accelerator.device, weights_only=False))
    scheduler.load_state_dict(torch.load(resume / SCHEDULER_FILE, weights_only=False))
    rng = torch.load(resume / RNG_FILE, weights_only=False)
    if len(rng) == accelerator.num_processes:
        set_rng_state(rng[accelerator.process_index])
    else:
        warn_main(accelerator, f"resuming on {accelerator.num_processes} process(es) from a checkpoint written by "
                               f"{len(rng)}: random states (dropout) are re-seeded, so results will differ from an "
                               f"uninterrupted run")
    if state.get("global_batch") != global_batch:
        warn_main(accelerator, f"the checkpoint was trained with a global batch of {state.get('global_batch')}, "
                               f"this run uses {global_batch}")
    return state


def save_best(model, tokenizer, output_dir: Path, settings: ModelSettings) -> Path:
    """checkpoint-best: the weights with the best dev score, a model folder like any other."""
    return save_checkpoint(model, tokenizer, output_dir / BEST_CHECKPOINT, settings)


def load_best_weights(model, output_dir: Path) -> None:
    """Load checkpoint-best's weights into ``model``, strictly: every tensor must match."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(output_dir / BEST_CHECKPOINT / "model.safetensors"), strict=True)
