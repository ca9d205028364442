"""Backends: a runner that turns a padded batch of windows into start and end logits.

Everything around a backend (windows, batching, decoding) is shared, so both give the same
answers. ``load_runner`` picks one: ONNX Runtime for an exported folder, torch otherwise; the
model folder's settings and calibrators are read by ``squadkit.model.load``, not here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..defaults import DEFAULT_MODEL
from ..errors import SquadkitError
from ..features import Batch

BACKENDS = ("auto", "torch", "onnx")
RUNNER_OPTIONS = ("backend", "device", "dtype", "trust_remote_code", "revision", "precision", "threads", "providers")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class Runner(Protocol):
    """What a backend gives: a tokenizer, where the weights came from, and logits of a batch."""

    tokenizer: Any
    name_or_path: str
    backend: str
    device: str
    window_limit: int | None  # the longest window the model can take, in tokens
    head_sha256: str | None  # the QA head's fingerprint (a calibrator is checked against it)
    pad_multiple: int

    @property
    def input_names(self) -> tuple[str, ...]: ...

    def logits(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """float32 start and end logits, each (batch, width)."""
        ...


def precision_of(runner: Runner) -> str:
    """fp32, bf16, fp16 or int8: what the runner computes in."""
    if runner.backend == "onnx":
        return runner.precision
    dtype = str(runner.model.dtype)
    return {"torch.bfloat16": "bf16", "torch.float16": "fp16"}.get(dtype, "fp32")


def is_onnx_folder(path: str | os.PathLike) -> bool:
    from .onnx import FP32_FILE, INT8_FILE

    p = Path(path).expanduser()
    return p.is_dir() and ((p / FP32_FILE).is_file() or (p / INT8_FILE).is_file())


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise SquadkitError(f"backend must be 'auto', 'torch' or 'onnx', got {backend!r}", param="backend")
    return backend


def load_runner(
    model: Any = None,
    tokenizer=None,
    backend: str = "auto",
    device: str | int | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    precision: str = "auto",
    threads: int | None = None,
    providers: list | None = None,
) -> Runner:
    """A runner for any QA model squadkit can run: a hub id, a checkpoint folder, an exported ONNX
    folder, or an already loaded transformers model (with its tokenizer).

    ``backend="auto"`` picks ONNX Runtime for an exported folder and torch otherwise.
    ``precision``, ``threads`` and ``providers`` are ONNX Runtime's (torch's threads are process-wide:
    ``torch.set_num_threads``, which ``squadkit serve --threads`` calls).
    """
    check_backend(backend)
    if model is None:
        model = DEFAULT_MODEL
    if not isinstance(model, (str, os.PathLike)):
        from .torch import wrap_torch_model

        return wrap_torch_model(model, tokenizer, device)
    if backend == "onnx" or (backend == "auto" and (is_onnx_folder(model) or os.fspath(model).endswith(".onnx"))):
        from .onnx import load_onnx_model

        return load_onnx_model(model, tokenizer=tokenizer, precision=precision, threads=threads, providers=providers)
    from .torch import load_torch_model

    return load_torch_model(model, tokenizer, device, dtype, trust_remote_code, revision)
