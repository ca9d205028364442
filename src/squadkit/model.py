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

from .backends import Runner, load_runner, precision_of
from .calibration import Calibrator, check_fingerprint
from .features import Batch
from .model_folder import ModelSettings, read_settings, settings_from_json


@dataclass(frozen=True)
class Model:
    """A loaded QA model: its runner (network or session) and what was read with it, once: the folder's
    settings, the checked calibrators, and the runner's facts (tokenizer, window limit, precision, file)."""

    runner: Runner
    settings: ModelSettings
    calibrator: Calibrator | None  # single-passage confidence (``squadkit calibrate``)
    ask_calibrator: Calibrator | None  # ``ask``'s, fitted on its answers under the folder's ask rule
    tokenizer: Any
    name_or_path: str
    backend: str
    device: str
    window_limit: int | None
    head_sha256: str | None
    pad_multiple: int
    precision: str  # fp32, bf16, fp16 or int8
    model_file: str | None  # the ONNX graph file it runs from; None for a torch model
    input_names: tuple[str, ...]

    @classmethod
    def of(cls, runner: Runner, settings: ModelSettings = ModelSettings(), calibrator: Calibrator | None = None,
           ask_calibrator: Calibrator | None = None) -> "Model":
        return cls(runner, settings, calibrator, ask_calibrator, runner.tokenizer, runner.name_or_path, runner.backend,
                   runner.device, runner.window_limit, runner.head_sha256, runner.pad_multiple, precision_of(runner),
                   runner.model_file if runner.backend == "onnx" else None, tuple(runner.input_names))

    def logits(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        return self.runner.logits(batch)

    def device_logits(self, batch: Batch):
        """Logits left on the GPU as torch tensors (span scoring there), or None where the runner gives
        host arrays only (a CPU, ONNX Runtime)."""
        return self.runner.device_logits(batch) if self.backend == "torch" else None


def load(source: Any = None, tokenizer: Any = None, *, calibrators: bool = True, **runner_options: Any) -> Model:
    """Load ``source`` (a hub id, checkpoint folder, exported ONNX folder, an in-memory transformers
    model with its ``tokenizer``, or a ``Model``, returned as it is) once.

    ``runner_options`` are ``backends.load_runner``'s: ``backend``, ``device``, ``dtype``,
    ``trust_remote_code``, ``revision``, and ONNX Runtime's ``precision``, ``threads``, ``providers``.
    ``calibrators=False`` skips the folder's calibrators (``calibrate`` refits one fitted on other
    weights); otherwise a calibrator fitted on other weights is refused in one line.
    """
    if isinstance(source, Model):
        return source
    runner = load_runner(source, tokenizer, **runner_options)
    settings = _folder_settings(runner)
    return with_calibrators(runner, settings) if calibrators else Model.of(runner, settings)


def with_calibrators(runner: Runner, settings: ModelSettings = ModelSettings()) -> Model:
    """A ``Model`` of ``runner`` and ``settings`` with its calibrators built and checked against the weights."""
    if settings.calibration is None:
        single = None
    else:
        check_fingerprint(settings, runner.head_sha256, runner.name_or_path or "model")
        single = Calibrator.from_json(settings.calibration)
    ask = Calibrator.from_json(settings.ask_calibration, "ask_calibration") if settings.ask_calibration else None
    return Model.of(runner, settings, single, ask)


def _folder_settings(runner: Runner) -> ModelSettings:
    """The settings of the runner's folder (``folder_settings``); a hub model has none."""
    folder = Path(os.fspath(runner.name_or_path or "")).expanduser()
    if not runner.name_or_path or not folder.is_dir():
        return ModelSettings()
    return folder_settings(folder, runner.record if runner.backend == "onnx" else {})


def folder_settings(folder: str | os.PathLike, record: dict | None = None) -> ModelSettings:
    """``squadkit.json`` of ``folder``, read once; an export without one falls back to the settings its
    record carries (``record``: the export record already read; None reads it)."""
    from .backends.onnx import RECORD_FILE, read_record

    folder = Path(folder)
    settings = read_settings(folder)
    if not settings.is_empty():
        return settings
    saved = (read_record(folder) if record is None else record).get("settings")
    return settings_from_json(saved, f"{folder / RECORD_FILE} (settings)") if isinstance(saved, dict) and saved else settings
