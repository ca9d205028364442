"""Every default of squadkit's answering and training settings, defined once.

A leaf module (it imports nothing of squadkit), so that windows, decoding, the model folder's
settings, the pipeline, ``predict``, ``train`` and the CLI all read the same numbers.
"""

from __future__ import annotations

DEFAULT_MODEL = "mrm8488/roberta-base-1B-1-finetuned-squadv2"  # the model card's checkpoint

# run_squad's window and decoding defaults (squad mode; also what `train` uses)
MAX_SEQ_LENGTH = 384  # tokens per window
DOC_STRIDE = 128  # squad mode: step between window starts
MAX_QUERY_LENGTH = 64  # question tokens kept
MAX_ANSWER_LENGTH = 30  # tokens, squad mode (run_squad's --max_answer_length)
N_BEST_SIZE = 20
NULL_SCORE_DIFF_THRESHOLD = 0.0

# transformers' question-answering pipeline defaults (pipeline mode)
PIPELINE_MAX_ANSWER_LEN = 15  # tokens
PIPELINE_TOP_K = 1

ASK_PASSAGES = 5  # ask: passages retrieved and read per question
MAX_PASSAGES = 50  # the most passages one question reads (a request's limit too)


def pipeline_doc_stride(max_seq_len: int) -> int:
    """The pipeline's default overlap between neighbouring windows: min(max_seq_len // 2, 128)."""
    return min(max_seq_len // 2, DOC_STRIDE)


# Windows per forward pass when answering, per backend and precision, measured with
# benchmarks/bench_cpu.py (see the README's speed table): small length-sorted batches keep the
# work in cache on a CPU. GPU: large batches.
CPU_BATCH_SIZES = {("torch", "fp32"): 8, ("torch", "bf16"): 8, ("onnx", "fp32"): 8, ("onnx", "int8"): 1}
CPU_BATCH_SIZE = 8  # any other CPU combination
GPU_BATCH_SIZE = 64


def answer_batch_size(backend: str, precision: str, device: str) -> int:
    """The default windows per forward pass for a model on ``device`` (see CPU_BATCH_SIZES)."""
    if str(device).startswith("cuda"):
        return GPU_BATCH_SIZE
    return CPU_BATCH_SIZES.get((backend, precision), CPU_BATCH_SIZE)


def cache_dir(kind: str) -> str:
    """squadkit's cache folder for ``kind`` (e.g. tokenized training features): $SQUADKIT_CACHE/kind,
    else $XDG_CACHE_HOME/squadkit/kind, else ~/.cache/squadkit/kind; never the working directory."""
    import os

    root = os.environ.get("SQUADKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "squadkit")
    return os.path.join(root, kind)


def check_non_negative_number(value, name: str, param: str | None = None) -> float:
    """``value`` if it is a finite number >= 0 (bools refused), else a one-line SquadkitError naming ``name``."""
    import math

    from .errors import SquadkitError

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < math.inf:
        raise SquadkitError(f"{name} must be a number of at least 0, got {value!r}", param=param)
    return value


def check_positive_int(value, name: str, *, minimum: int = 1) -> int:
    """``value`` if it is an int >= ``minimum`` (bools refused), else a one-line SquadkitError naming ``name``."""
    from .errors import SquadkitError

    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise SquadkitError(f"{name} must be {what}, got {value!r}", param=name)
    return value
