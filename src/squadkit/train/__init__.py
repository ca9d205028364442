"""``squadkit train``: run_squad's recipe as one function, ``train(TrainConfig(...))``.

    config.py       the flags (run_squad's names and defaults) and what a run returns
    features.py     tokenized windows with labels, cached on disk
    checkpoints.py  resumable checkpoints, checkpoint-best, the final model folder
    card.py         the README.md model card
    loop.py         the loop: data order, step plan, losses, optimizer
    events.py       what runs around the steps: logging, evaluation, checkpoints, progress
    run.py          train(): the checks, the model, the loop, the final folder
"""

from __future__ import annotations

from .checkpoints import (
    BEST_CHECKPOINT,
    CHECKPOINT_PREFIX,
    LOG_FILE,
    OPTIMIZER_FILE,
    README_FILE,
    RNG_FILE,
    SCHEDULER_FILE,
    STATE_FILE,
    list_checkpoints,
)
from .config import TrainConfig, TrainingInterrupted, TrainResult, TrainWarning
from .dataset import TrainFeatures, make_train_features
from .loop import epoch_order
from .run import train

__all__ = [
    "BEST_CHECKPOINT", "CHECKPOINT_PREFIX", "LOG_FILE", "OPTIMIZER_FILE", "README_FILE", "RNG_FILE", "SCHEDULER_FILE",
    "STATE_FILE", "TrainConfig", "TrainFeatures", "TrainResult", "TrainWarning", "TrainingInterrupted",
    "epoch_order", "list_checkpoints", "make_train_features", "train",
]
