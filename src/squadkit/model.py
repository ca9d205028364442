"""The one loading home: a model folder, an exported ONNX folder or a hub id, read once.

    >>> from squadkit.model import load
    >>> model = load("path/to/folder", backend="auto", device=None, dtype=None)
    >>> model.settings, model.calibrator, model.window_limit, model.precision

``load`` opens the backend's runner (``backends``), reads ``squadkit.json`` once, and checks
the calibrators against the weights once; every consumer (the pipeline, ``predict``,
``calibrate``, ``export``, ``serve``, ``DocumentQA``, train's evaluation) takes the ``Model``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Runner, check_backend, load_runner, precision_of
from .calibration import Calibrator, check_fingerprint
from .checkpoint import ModelSettings, read_settings, settings_from_json
from .features import Batch


@dataclass(frozen=True)
class Model:
    """A loaded QA model: its runner (network or session), the folder's settings and checked calibrators."""

    runner: Runner
    settings: ModelSettings
    calibrator: Calibrator | None = None  # single-passage confidence (``squadkit calibrate``)
    ask_calibrator: Calibrator | None = None  # ``ask``'s, fitted on its answers under the folder's ask rule

    @property
    def tokenizer(self) -> Any:
        return self.runner.tokenizer

    @property
    def name_or_path(self) -> str:
        return self.runner.name_or_path

    @property
    def backend(self) -> str:
        return self.runner.backend

    @property
    def device(self) -> str:
        return self.runner.device

    @property
    def window_limit(self) -> int | None:
        return self.runner.window_limit

    @property
    def head_sha256(self) -> str | None:
        return self.runner.head_sha256

    @property
    def pad_multiple(self) -> int:
        return self.runner.pad_multiple

    @property
    def precision(self) -> str:
        return precision_of(self.runner)

    @property
    def model_file(self) -> str | None:
        """The ONNX graph file the model runs from; None for a torch model."""
        return self.runner.model_file if self.backend == "onnx" else None

    @property
    def input_names(self) -> tuple[str, ...]:
        return self.runner.input_names

    def logits(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        return self.runner.logits(batch)


def load(
    source: Any = None,
    tokenizer: Any = None,
    *,
    backend: str = "auto",
    device: str | int | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    precision: str = "auto",
    threads: int | None = None,
    providers: list | None = None,
    calibrators: bool = True,
) -> Model:
    """Load ``source`` (a hub id, checkpoint folder, exported ONNX folder, an in-memory transformers
    model with its ``tokenizer``, or a ``Model``, returned as it is) once.

    ``calibrators=False`` skips the folder's calibrators (``calibrate`` refits one fitted on other
    weights); otherwise a calibrator fitted on other weights is refused in one line.
    ``precision``, ``threads`` and ``providers`` are ONNX Runtime's.
    """
    if isinstance(source, Model):
        return source
    check_backend(backend)
    runner = load_runner(source, tokenizer, backend=backend, device=device, dtype=dtype,
                         trust_remote_code=trust_remote_code, revision=revision, precision=precision,
                         threads=threads, providers=providers)
    settings = _folder_settings(runner)
    if not calibrators:
        return Model(runner, settings)
    return with_calibrators(runner, settings)


def with_calibrators(runner: Runner, settings: ModelSettings = ModelSettings()) -> Model:
    """A ``Model`` of ``runner`` and ``settings`` with its calibrators built and checked against the weights."""
    if settings.calibration is None:
        single = None
    else:
        check_fingerprint(settings, runner.head_sha256, runner.name_or_path or "model")
        single = Calibrator.from_json(settings.calibration)
    ask = Calibrator.from_json(settings.ask_calibration, "ask_calibration") if settings.ask_calibration else None
    return Model(runner, settings, single, ask)


def _folder_settings(runner: Runner) -> ModelSettings:
    """``squadkit.json`` of the runner's folder, read once; an export without one falls back to the
    settings its record carries; a hub model has none."""
    folder = Path(os.fspath(runner.name_or_path or "")).expanduser()
    if not runner.name_or_path or not folder.is_dir():
        return ModelSettings()
    settings = read_settings(folder)
    record = runner.record.get("settings") if runner.backend == "onnx" else None
    if settings.is_empty() and isinstance(record, dict) and record:
        from .backends.onnx import RECORD_FILE

        settings = settings_from_json(record, f"{folder / RECORD_FILE} (settings)")
    return settings
