"""The server's settings and one request's answering options, without FastAPI.

Kept apart from ``serve.py`` so the ``squadkit serve`` command can build its flags from
:class:`ServeSettings` (each field's metadata carries its help text, like ``TrainConfig``'s)
without importing the web stack for ``squadkit --help``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import SquadkitError


def _flag(help: str, *aliases: str) -> Any:
    """Field metadata for the CLI: the help text and hidden old spellings of the flag."""
    return {"help": help, "aliases": aliases}


@dataclass(frozen=True)
class ServeSettings:
    """Everything that shapes the server; every field is also a ``squadkit serve`` flag
    (``--`` + the name with ``-`` for ``_``).

    Defaults bind to loopback only and suit one CPU model: micro-batches of up to 16 pairs,
    gathered for at most 5 ms, at most 256 pairs waiting.
    """

    host: str = field(default="127.0.0.1", metadata=_flag("Address to listen on (loopback by default; 0.0.0.0 for all)."))
    port: int = field(default=8000, metadata=_flag("Port to listen on (0 picks a free one)."))
    backend: str = field(default="auto", metadata=_flag("torch, onnx, or auto (ONNX for an exported folder)."))
    device: Optional[str] = field(default=None, metadata=_flag("cpu, cuda, cuda:1 ... [default: cuda when available]."))
    threads: Optional[int] = field(default=None, metadata=_flag(
        "Intra-op threads of the model (ONNX Runtime's session, or torch's) [default: one per core]."))
    max_batch_size: int = field(default=16, metadata=_flag("Questions answered together (1 disables batching)."))
    batch_size: Optional[int] = field(default=None, metadata=_flag(
        "Windows per forward pass [default: the measured best for the backend and precision]."))
    max_wait_ms: float = field(default=5.0, metadata=_flag("How long a question may wait for others to share its batch."))
    max_queue: int = field(default=256, metadata=_flag(
        "Questions waiting at most (a question over the documents counts as one); beyond it 503 with Retry-After."))
    max_body_bytes: int = field(default=2_097_152, metadata=_flag("Largest request body; beyond it 413."))
    max_context_chars: int = field(default=20_000, metadata=_flag("Longest context, in characters; beyond it 422."))
    max_question_chars: int = field(default=1_000, metadata=_flag("Longest question, in characters; beyond it 422."))
    max_batch_items: int = field(default=64, metadata=_flag("Inputs per /v1/answer/batch request; beyond it 422."))
    max_top_k: int = field(default=20, metadata=_flag("Largest top_k a request may ask for."))
    request_timeout_s: float = field(default=30.0, metadata=_flag(
        "Seconds a request may wait for its answer; beyond it 504.", "--request-timeout"))
    retry_after_s: int = field(default=1, metadata=_flag("The Retry-After (seconds) sent with a 503."))
    log_level: str = field(default="info", metadata=_flag("uvicorn log level: critical, error, warning, info, debug."))
    access_log: bool = field(default=True, metadata=_flag("Log every request."))

    def validate(self, names: Optional[dict] = None) -> "ServeSettings":
        """Refuse settings that cannot work, naming each as the caller spelled it (``names``: the CLI's flags)."""
        def n(field_name: str) -> str:
            return (names or {}).get(field_name, field_name)

        positive_ints = ("max_batch_size", "max_queue", "max_body_bytes", "max_context_chars",
                         "max_question_chars", "max_batch_items", "max_top_k", "retry_after_s")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SquadkitError(f"{n(name)} must be an integer >= 1, got {value!r}", param=name)
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise SquadkitError(f"{n('batch_size')} must be an integer >= 1, got {self.batch_size!r}", param="batch_size")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise SquadkitError(f"{n('threads')} must be an integer >= 1, got {self.threads!r}", param="threads")
        if not 0 <= self.port <= 65535:
            raise SquadkitError(f"{n('port')} must be between 0 and 65535, got {self.port}", param="port")
        if self.max_wait_ms < 0:
            raise SquadkitError(f"{n('max_wait_ms')} must be >= 0, got {self.max_wait_ms}", param="max_wait_ms")
        if self.request_timeout_s <= 0:
            raise SquadkitError(f"{n('request_timeout_s')} must be > 0, got {self.request_timeout_s}", param="request_timeout_s")
        if self.max_batch_items > self.max_queue:
            raise SquadkitError(
                f"{n('max_batch_items')} ({self.max_batch_items}) cannot exceed "
                f"{n('max_queue')} ({self.max_queue}): "
                "such a batch could never be admitted", param="max_batch_items"
            )
        if self.log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
            raise SquadkitError(f"{n('log_level')} must be critical, error, warning, info, debug or trace, got {self.log_level!r}",
                                param="log_level")
        if self.backend not in ("auto", "torch", "onnx"):
            raise SquadkitError(f"{n('backend')} must be 'auto', 'torch' or 'onnx', got {self.backend!r}", param="backend")
        return self

    def public(self) -> dict:
        """The settings a client may see (GET /v1/model)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RequestOptions:
    """One request's answering options, by their canonical names; None: the model folder's, else the default.

    Frozen and hashable: the micro-batcher groups the pairs of a micro-batch by it, one pipeline
    call per group. A request may set what ``squadkit answer`` may set, within the server's limits.
    """

    top_k: int = 1
    handle_impossible_answer: Optional[bool] = None
    null_score_diff_threshold: Optional[float] = None
    max_answer_length: Optional[int] = None
    max_seq_length: Optional[int] = None
    doc_stride: Optional[int] = None  # pipeline mode: the overlap between neighbouring windows
    max_query_length: Optional[int] = None
    min_confidence: Optional[float] = None
