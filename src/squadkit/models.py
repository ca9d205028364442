"""Load and save extractive-QA checkpoints; run them on the torch or ONNX Runtime backend.

Any checkpoint in Hugging Face format loads here, by hub id or local folder, through the
transformers Auto classes: safetensors preferred, remote code never trusted unless asked.
A backend turns a padded batch of windows into float32 start and end logits; everything
around it (windows, decoding) is shared, so both backends give the same answers.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .errors import SquadkitError, first_line
from .features import Batch

DEFAULT_MODEL = "mrm8488/roberta-base-1B-1-finetuned-squadv2"
SETTINGS_FILE = "squadkit.json"  # settings saved beside a checkpoint (e.g. the tuned null threshold)
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class QAModel(Protocol):
    """What the rest of squadkit needs from a model: a tokenizer and logits for a batch."""

    tokenizer: Any
    name_or_path: str
    backend: str
    input_names: tuple[str, ...]
    settings: dict

    def logits(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """float32 start and end logits, each (batch, width)."""
        ...


def read_settings(folder: str | os.PathLike | None) -> dict:
    """squadkit's settings saved beside a checkpoint, or {} when there are none."""
    if folder is None:
        return {}
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SquadkitError(f"{path}: cannot read squadkit settings: {exc}") from None
    if not isinstance(data, dict):
        raise SquadkitError(f"{path}: squadkit settings must be a JSON object")
    return data


def _hub_error(name: str, exc: Exception) -> SquadkitError:
    first = first_line(exc)
    if Path(name).exists():
        return SquadkitError(f"cannot load model from folder '{name}': {first}")
    return SquadkitError(
        f"cannot load model '{name}': not a local folder, and not reachable or cached from the Hugging Face Hub "
        f"({first}); download it where the Hub is reachable and pass the local folder, e.g. --model ./path/to/checkpoint"
    )


@contextlib.contextmanager
def quiet_transformers():
    """No weight-loading progress bars or info chatter from transformers (they would break the
    CLI's one-line errors and JSON output); warnings still show."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, revision: str | None = None, **kwargs):
    """The checkpoint's fast tokenizer (squadkit needs character offsets)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(name_or_path), use_fast=True, trust_remote_code=trust_remote_code, revision=revision, **kwargs
        )
    except (OSError, ValueError) as exc:
        raise _hub_error(str(name_or_path), exc) from None
    if not getattr(tokenizer, "is_fast", False):
        raise SquadkitError(f"{name_or_path}: squadkit needs a fast tokenizer (tokenizer.json), got {type(tokenizer).__name__}")
    return tokenizer


def check_qa_config(config, name: str) -> None:
    """Refuse a config that transformers cannot put a question-answering head on."""
    from transformers import AutoModelForQuestionAnswering

    mapping = AutoModelForQuestionAnswering._model_mapping
    if type(config) not in mapping.keys():
        raise SquadkitError(
            f"{name}: model type '{getattr(config, 'model_type', '?')}' has no question-answering architecture in transformers"
        )


def pick_device(device: str | int | None = None) -> str:
    """'cuda' when a GPU is there and none was asked for; ints mean a CUDA index, -1 the CPU."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, int):
        return "cpu" if device < 0 else f"cuda:{device}"
    return str(device)


@dataclass
class TorchQAModel:
    """A transformers ``AutoModelForQuestionAnswering`` on a torch device."""

    model: Any
    tokenizer: Any
    name_or_path: str
    device: str = "cpu"
    settings: dict = field(default_factory=dict)
    backend: str = "torch"

    @property
    def input_names(self) -> tuple[str, ...]:
        names = tuple(n for n in self.tokenizer.model_input_names if n in MODEL_INPUTS)
        return names if "input_ids" in names else ("input_ids", "attention_mask")

    def logits(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        import torch

        arrays = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in self.input_names and batch.token_type_ids is not None:
            arrays["token_type_ids"] = batch.token_type_ids
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in arrays.items()}
            out = self.model(**inputs)
            start = out.start_logits.float().cpu().numpy()
            end = out.end_logits.float().cpu().numpy()
        return start, end


def load_torch_model(
    name_or_path: str | os.PathLike,
    tokenizer=None,
    device: str | int | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> TorchQAModel:
    """Load a QA checkpoint (hub id or folder) and its tokenizer for inference."""
    import torch
    from transformers import AutoConfig, AutoModelForQuestionAnswering

    name = str(name_or_path)
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, revision=revision)
    except (OSError, ValueError) as exc:
        raise _hub_error(name, exc) from None
    check_qa_config(config, name)
    torch_dtype = {None: None, "auto": "auto", "fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
                   "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype not in torch_dtype:
        raise SquadkitError(f"dtype must be one of fp32, bf16, fp16, auto; got {dtype!r}")
    kwargs = {"dtype": torch_dtype[dtype]} if dtype is not None else {}
    try:
        with quiet_transformers():
            model = AutoModelForQuestionAnswering.from_pretrained(
                name, config=config, trust_remote_code=trust_remote_code, revision=revision, **kwargs
            )
    except (OSError, ValueError) as exc:
        raise _hub_error(name, exc) from None
    if tokenizer is None:
        tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code, revision=revision)
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(str(tokenizer), trust_remote_code=trust_remote_code)
    device = pick_device(device)
    model.to(device).eval()
    return TorchQAModel(model, tokenizer, name, device, read_settings(name if Path(name).is_dir() else None))


def is_onnx_folder(path: str | os.PathLike) -> bool:
    """An exported folder (``squadkit export``) holds ``model.onnx``."""
    return Path(path).is_dir() and (Path(path) / "model.onnx").is_file()


def load_model(
    model: Any = None,
    tokenizer=None,
    backend: str = "auto",
    device: str | int | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    **backend_options,
) -> QAModel:
    """Any QA model squadkit can run: a hub id, a checkpoint folder, an exported ONNX folder,
    or an already loaded transformers model (with its tokenizer).

    ``backend="auto"`` picks ONNX Runtime for an exported folder and torch otherwise.
    """
    if backend not in ("auto", "torch", "onnx"):
        raise SquadkitError(f"backend must be 'auto', 'torch' or 'onnx', got {backend!r}")
    if model is None:
        model = DEFAULT_MODEL
    if hasattr(model, "logits") and hasattr(model, "tokenizer") and hasattr(model, "backend"):
        return model  # already a squadkit model
    if not isinstance(model, (str, os.PathLike)):
        # an in-memory transformers model
        if tokenizer is None:
            raise SquadkitError("pass the tokenizer along with an in-memory model")
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_tokenizer(str(tokenizer))
        name = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        dev = str(next(model.parameters()).device) if device is None else pick_device(device)
        model.to(dev).eval()
        return TorchQAModel(model, tokenizer, name, dev, read_settings(name if name and Path(name).is_dir() else None))
    if backend == "onnx" or (backend == "auto" and is_onnx_folder(model)):
        return load_onnx_model(model, tokenizer=tokenizer, **backend_options)
    return load_torch_model(model, tokenizer, device, dtype, trust_remote_code, revision)


# ----------------------------------------------------------------------------------------------
# ONNX Runtime backend
# ----------------------------------------------------------------------------------------------


ONNX_PRECISIONS = ("auto", "fp32", "int8")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                    "sentencepiece.bpe.model")


def default_threads() -> int:
    """Intra-op threads: $SQUADKIT_NUM_THREADS, else $OMP_NUM_THREADS, else the cores this process may use."""
    for var in ("SQUADKIT_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return max(os.cpu_count() or 1, 1)


def onnx_session_options(threads: int | None = None):
    """Session options for answering: all graph optimizations, sequential execution, one intra-op pool."""
    import onnxruntime as ort

    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise SquadkitError(f"threads must be a positive integer, got {threads!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no warnings about unused initializers on stderr
    return options


@dataclass
class OnnxQAModel:
    """An exported folder (``squadkit export``) served by ONNX Runtime on the CPU."""

    session: Any
    tokenizer: Any
    name_or_path: str
    model_file: str
    precision: str
    settings: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    backend: str = "onnx"
    device: str = "cpu"

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.session.get_inputs())

    def logits(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        feed = {}
        for name in self.input_names:
            value = getattr(batch, name, None)
            if value is None:  # a graph with token types fed a batch without them: all zeros, as torch does
                value = np.zeros_like(batch.input_ids)
            feed[name] = np.ascontiguousarray(value, dtype=np.int64)
        start, end = self.session.run(["start_logits", "end_logits"], feed)
        return start.astype(np.float32, copy=False), end.astype(np.float32, copy=False)


def _onnx_error(file: Path, exc: Exception) -> SquadkitError:
    first = first_line(exc)
    return SquadkitError(f"{file}: not a loadable ONNX model (corrupt or truncated?): {first}")


def load_onnx_model(
    path: str | os.PathLike,
    tokenizer=None,
    precision: str = "auto",
    threads: int | None = None,
    providers: list | None = None,
    **options,
) -> QAModel:
    """An exported folder served by ONNX Runtime (see export.py).

    ``precision``: "auto" (the record's default: int8 when the folder was exported with
    ``--quantize int8``), "fp32" (model.onnx) or "int8" (model.int8.onnx). ``threads``: intra-op
    threads (default: $SQUADKIT_NUM_THREADS, $OMP_NUM_THREADS, else the usable cores).
    A path to an ``.onnx`` file inside such a folder is accepted too.
    """
    if options:
        raise SquadkitError(f"unknown ONNX backend option(s): {', '.join(sorted(options))}")
    try:
        import onnxruntime as ort
    except ImportError:
        raise SquadkitError("the ONNX backend needs onnxruntime: pip install 'squadkit[onnx]'") from None
    from .export import FP32_FILE, INT8_FILE, OUTPUT_NAMES, read_record

    if precision not in ONNX_PRECISIONS:
        raise SquadkitError(f"precision must be one of {', '.join(ONNX_PRECISIONS)}, got {precision!r}")
    folder = Path(path)
    record = read_record(folder if folder.is_dir() else folder.parent)
    if folder.is_file() and folder.suffix == ".onnx":
        file, folder = folder, folder.parent
        precision = "int8" if file.name == INT8_FILE else "fp32"
    elif not folder.is_dir():
        raise SquadkitError(f"{path}: not an exported ONNX folder (no such folder)")
    else:
        if precision == "auto":
            precision = record.get("default", "fp32") if record.get("default") in ("fp32", "int8") else "fp32"
        file = folder / (INT8_FILE if precision == "int8" else FP32_FILE)
        if not file.is_file():
            hint = " (export with --quantize int8)" if precision == "int8" else ""
            raise SquadkitError(f"{folder}: not an exported ONNX folder: no {file.name}{hint}")
    if tokenizer is None:
        if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
            raise SquadkitError(
                f"{folder}: the exported folder has no tokenizer (tokenizer.json); re-export it, or pass tokenizer=..."
            )
        tokenizer = load_tokenizer(str(folder))
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(str(tokenizer))
    if file.stat().st_size == 0:
        raise SquadkitError(f"{file}: not a loadable ONNX model (empty file)")
    try:
        session = ort.InferenceSession(
            str(file), onnx_session_options(threads), providers=providers or ["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own InvalidProtobuf / Fail / InvalidGraph types
        raise _onnx_error(file, exc) from None
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if "input_ids" not in inputs or not inputs <= set(MODEL_INPUTS) or not set(OUTPUT_NAMES) <= outputs:
        raise SquadkitError(
            f"{file}: not a squadkit QA export (inputs {sorted(inputs)}, outputs {sorted(outputs)}; "
            f"expected input_ids/attention_mask[/token_type_ids] -> start_logits, end_logits)"
        )
    settings = read_settings(folder) or dict(record.get("settings") or {})
    return OnnxQAModel(session, tokenizer, str(folder), str(file), precision, settings, record)


def save_checkpoint(model, tokenizer, out_dir: str | os.PathLike, settings: dict | None = None) -> Path:
    """Save model + tokenizer (+ squadkit settings) in Hugging Face format, atomically.

    Written into a temporary sibling folder first, then renamed into place, so a crash never
    leaves a half-written checkpoint under the final name.
    """
    from .io import staged_dir

    out_dir = Path(out_dir)
    with staged_dir(out_dir) as tmp, quiet_transformers():
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if settings:
            (tmp / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return out_dir
