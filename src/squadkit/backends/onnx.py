"""The ONNX Runtime backend, and the layout of the folder ``squadkit export`` writes.

The export folder's file names live here, with the code that reads them; ``export`` imports
them from here (never the reverse)::

    model.onnx             fp32 graph, dynamic batch and sequence axes
    model.int8.onnx        dynamic int8 quantization of model.onnx (``--quantize int8``)
    config.json            the source model's config
    tokenizer files        the source's fast tokenizer
    squadkit.json          the source's model settings (see model_folder.py)
    squadkit_export.json   the record: source model, files, default precision, exporter, versions
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..model_folder import load_tokenizer, max_window_tokens
from ..errors import SquadkitError, first_line
from ..features import Batch

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
RECORD_FILE = "squadkit_export.json"
RECORD_FORMAT = "squadkit-onnx-export"
OUTPUT_NAMES = ("start_logits", "end_logits")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PRECISIONS = ("auto", "fp32", "int8")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                    "sentencepiece.bpe.model")


def read_record(folder: str | os.PathLike) -> dict:
    """The export record of a folder, or {} when it has none (a hand-made folder with model.onnx)."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SquadkitError(f"{path}: cannot read the export record: {first_line(exc)}") from None
    if not isinstance(data, dict):
        raise SquadkitError(f"{path}: the export record must be a JSON object")
    return data


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


def session_options(threads: int | None = None):
    """Session options for answering: all graph optimizations, sequential execution, one intra-op pool."""
    import onnxruntime as ort

    from ..defaults import check_positive_int

    if threads is not None:
        check_positive_int(threads, "threads")
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
    record: dict = field(default_factory=dict)
    window_limit: int | None = None
    threads: int | None = None
    backend: str = "onnx"
    device: str = "cpu"
    pad_multiple: int = 1

    @property
    def head_sha256(self) -> str | None:
        """The QA head's fingerprint, recorded by ``export`` from the torch weights it exported."""
        value = (self.record.get("source") or {}).get("head_sha256")
        return value if isinstance(value, str) else None

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
        start, end = self.session.run(list(OUTPUT_NAMES), feed)
        return start.astype(np.float32, copy=False), end.astype(np.float32, copy=False)


def _model_file(path: Path, precision: str, record: dict) -> tuple[Path, Path, str]:
    """(folder, graph file, precision) for a folder or an .onnx file inside one."""
    if path.is_file() and path.suffix == ".onnx":
        return path.parent, path, "int8" if path.name == INT8_FILE else "fp32"
    if not path.is_dir():
        raise SquadkitError(f"{path}: exported ONNX folder not found", param="model")
    if precision == "auto":
        precision = record.get("default") if record.get("default") in ("fp32", "int8") else (
            "fp32" if (path / FP32_FILE).is_file() else "int8")
    file = path / (INT8_FILE if precision == "int8" else FP32_FILE)
    if not file.is_file():
        hint = " (export with --quantize int8)" if precision == "int8" else ""
        raise SquadkitError(f"{path}: not an exported ONNX folder: no {file.name}{hint}", param="model")
    return path, file, precision


def _folder_tokenizer(folder: Path):
    """The export's tokenizer: straight from tokenizer.json (no transformers, hence no torch, is
    imported: an exported folder answers in about a second), else through transformers."""
    from ..fast_tokenizer import TOKENIZER_FILE, FastTokenizer

    if (folder / TOKENIZER_FILE).is_file():
        return FastTokenizer(folder)
    return load_tokenizer(str(folder))


def load_onnx_model(
    path: str | os.PathLike,
    tokenizer=None,
    precision: str = "auto",
    threads: int | None = None,
    providers: list | None = None,
) -> OnnxQAModel:
    """An exported folder served by ONNX Runtime.

    ``precision``: "auto" (the record's default: int8 when the folder was exported with
    ``--quantize int8``), "fp32" (model.onnx) or "int8" (model.int8.onnx). ``threads``: intra-op
    threads (default: $SQUADKIT_NUM_THREADS, $OMP_NUM_THREADS, else the usable cores).
    A path to an ``.onnx`` file inside such a folder is accepted too.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise SquadkitError("the ONNX backend needs onnxruntime: pip install 'squadkit[onnx]'") from None
    if precision not in PRECISIONS:
        raise SquadkitError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}", param="precision")
    path = Path(path).expanduser()
    record = read_record(path if path.is_dir() else path.parent)
    folder, file, precision = _model_file(path, precision, record)
    if tokenizer is None:
        if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
            raise SquadkitError(
                f"{folder}: the exported folder has no tokenizer (tokenizer.json); re-export it, or pass tokenizer=..."
            )
        tokenizer = _folder_tokenizer(folder)
    elif isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(str(tokenizer))
    if file.stat().st_size == 0:
        raise SquadkitError(f"{file}: not a loadable ONNX model (empty file)")
    try:
        session = ort.InferenceSession(str(file), session_options(threads), providers=providers or ["CPUExecutionProvider"])
    except SquadkitError:
        raise
    except Exception as exc:  # onnxruntime raises its own InvalidProtobuf / Fail / InvalidGraph types
        raise SquadkitError(f"{file}: not a loadable ONNX model (corrupt or truncated?): {first_line(exc)}") from None
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if "input_ids" not in inputs or not inputs <= set(MODEL_INPUTS) or not set(OUTPUT_NAMES) <= outputs:
        raise SquadkitError(
            f"{file}: not a squadkit QA export (inputs {sorted(inputs)}, outputs {sorted(outputs)}; "
            f"expected input_ids/attention_mask[/token_type_ids] -> start_logits, end_logits)"
        )
    src = record.get("source") or {}
    limit = max_window_tokens(src.get("model_type"), src.get("max_position_embeddings"), src.get("pad_token_id"),
                              getattr(tokenizer, "model_max_length", None))
    return OnnxQAModel(session, tokenizer, str(folder), str(file), precision, record, limit,
                       threads or default_threads())
