"""Serve a QA model over HTTP: a FastAPI app with micro-batching, limits and a page to try it.

    >>> from squadkit.serve import ServeSettings, create_app, serve
    >>> serve("path/to/checkpoint", ServeSettings(port=8000))          # blocks, like the CLI
    >>> app = create_app(qa, ServeSettings(max_batch_size=16))         # or mount it yourself

Endpoints (all JSON; the OpenAPI schema is at ``/openapi.json``, its docs page at ``/docs``):

* ``POST /v1/answer``        ``{question, context, top_k?, handle_impossible_answer?, max_answer_len?}``
  -> exactly what ``QuestionAnswerer(question=..., context=..., ...)`` returns: one answer
  object for ``top_k == 1``, a list of them (best first) for ``top_k > 1``.
* ``POST /v1/answer/batch``  ``{"inputs": [<the object above>, ...]}`` -> ``{"answers": [...]}``,
  one pipeline answer per input, in order; each input carries its own settings.
* ``GET /healthz`` (the process answers), ``GET /readyz`` (the model is loaded and requests are
  accepted; 503 while loading or draining), ``GET /v1/model`` (model, backend, settings).
* ``GET /`` a page to try the model.

Why it is built this way:

* Requests that arrive together share one forward pass. A :class:`MicroBatcher` on the event
  loop collects question/context pairs until ``max_batch_size`` are waiting or the oldest has
  waited ``max_wait_ms``, then runs them on one worker thread, so the event loop (health checks,
  validation, other connections) keeps answering while the model works. Pairs are the unit, so a
  batch request is spread over micro-batches like any other requests.
* The pipeline takes one set of decoding settings per call (``top_k``, ``handle_impossible_answer``,
  ``max_answer_len``), and this module holds no model logic of its own, so a micro-batch is grouped
  by those settings and each group is one pipeline call. Clients that use the defaults (the usual
  case) all land in one group and one forward pass.
* Every limit answers with its own status: body too large 413, a field too long or a batch too
  large 422 naming the field and the limit, queue full 503 with ``Retry-After``, an answer that
  takes longer than ``request_timeout_s`` 504.
* On SIGTERM uvicorn stops accepting connections and waits for requests in flight; the batcher
  answers everything it has admitted before the worker thread is shut down.
"""

# No "from __future__ import annotations" here: FastAPI reads the endpoints' annotations at
# runtime, and the request models are built per app (their limits come from the settings).
import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Annotated, AsyncIterator, Iterator, Optional, Union

from .errors import SquadkitError, first_line

try:  # the serve extra: pip install "squadkit[serve]"
    from fastapi import FastAPI, Request
    from fastapi_offline import FastAPIOffline
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise SquadkitError(f"serving needs the serve extra: pip install 'squadkit[serve]' ({exc})") from None

log = logging.getLogger("squadkit.serve")

STATIC_DIR = resources.files("squadkit") / "static"
MAX_ANSWER_LEN_LIMIT = 512  # tokens; longer than any window, so a larger value could never matter


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeSettings:
    """Everything that shapes the server; every field is also a ``squadkit serve`` flag.

    Defaults bind to loopback only and suit one CPU model: micro-batches of up to 16 pairs,
    gathered for at most 5 ms, at most 256 pairs waiting.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "auto"  # used when the app is given a model name or folder
    device: Optional[str] = None
    threads: Optional[int] = None  # intra-op threads: ONNX Runtime's session; torch's for this process (serve() only)
    max_batch_size: int = 16  # pairs per micro-batch
    batch_size: Optional[int] = None  # windows per forward pass; None: the measured best for the backend
    max_wait_ms: float = 5.0  # how long the oldest waiting pair may wait for others to join it
    max_queue: int = 256  # pairs admitted but not yet being answered; beyond it, 503
    max_body_bytes: int = 2_097_152  # request body (a full batch of full contexts fits); beyond it, 413
    max_context_chars: int = 20_000  # per context; beyond it, 422
    max_question_chars: int = 1_000  # per question; beyond it, 422
    max_batch_items: int = 64  # inputs per batch request; beyond it, 422
    max_top_k: int = 20
    request_timeout_s: float = 30.0  # admission to answer; beyond it, 504
    retry_after_s: int = 1  # the Retry-After sent with 503
    log_level: str = "info"
    access_log: bool = True

    def validate(self) -> "ServeSettings":
        """Refuse settings that cannot work, naming the setting (a SquadkitError, so the CLI says one line)."""
        positive_ints = ("max_batch_size", "max_queue", "max_body_bytes", "max_context_chars",
                         "max_question_chars", "max_batch_items", "max_top_k", "retry_after_s")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SquadkitError(f"{name} must be an integer >= 1, got {value!r}")
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise SquadkitError(f"batch_size must be an integer >= 1, got {self.batch_size!r}", param="batch_size")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise SquadkitError(f"threads must be an integer >= 1, got {self.threads!r}")
        if not 0 <= self.port <= 65535:
            raise SquadkitError(f"port must be between 0 and 65535, got {self.port}")
        if self.max_wait_ms < 0:
            raise SquadkitError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.request_timeout_s <= 0:
            raise SquadkitError(f"request_timeout_s must be > 0, got {self.request_timeout_s}")
        if self.max_batch_items > self.max_queue:
            raise SquadkitError(
                f"max_batch_items ({self.max_batch_items}) cannot exceed max_queue ({self.max_queue}): "
                "such a batch could never be admitted"
            )
        if self.log_level not in ("critical", "error", "warning", "info", "debug", "trace"):
            raise SquadkitError(f"log_level must be critical, error, warning, info, debug or trace, got {self.log_level!r}")
        if self.backend not in ("auto", "torch", "onnx"):
            raise SquadkitError(f"backend must be 'auto', 'torch' or 'onnx', got {self.backend!r}")
        return self

    def public(self) -> dict:
        """The settings a client may see (GET /v1/model)."""
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------
# micro-batching
# ---------------------------------------------------------------------------------------------


class QueueFull(Exception):
    """The bounded queue cannot admit the request: the client should retry later (503)."""


class NotAccepting(Exception):
    """The server is loading or draining and admits no new work (503)."""


@dataclass
class _Item:
    """One question/context pair waiting for its answer."""

    question: str
    context: str
    options: tuple  # top_k, handle_impossible_answer, max_answer_len, min_confidence
    future: asyncio.Future
    arrived: float

    @property
    def abandoned(self) -> bool:
        """Its request timed out or went away: not worth a forward pass."""
        return self.future.done()


class MicroBatcher:
    """Gathers pairs that arrive together into one pipeline call on a single worker thread.

    Lives on the event loop: ``submit`` admits pairs (all of a request or none, within
    ``max_queue``) and returns their futures; ``run`` forms micro-batches and hands them to the
    worker thread; ``drain`` answers everything admitted, then stops.
    """

    def __init__(self, qa: Any, settings: ServeSettings) -> None:
        self.qa = qa
        self.settings = settings
        self._pending: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._accepting = True
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="squadkit-model")
        self._task: Optional[asyncio.Task] = None
        self.batches_run = 0
        self.pairs_answered = 0

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="squadkit-batcher")

    def submit(self, pairs: list[tuple[str, str, tuple[int, bool, int]]]) -> list[asyncio.Future]:
        """Admit the pairs of one request, or raise QueueFull / NotAccepting without admitting any."""
        if not self._accepting:
            raise NotAccepting("the server is shutting down")
        self._compact()
        if len(self._pending) + len(pairs) > self.settings.max_queue:
            raise QueueFull(f"the queue is full ({len(self._pending)} of {self.settings.max_queue} pairs waiting)")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        items = [_Item(q, c, opts, loop.create_future(), now) for q, c, opts in pairs]
        self._pending.extend(items)
        self._wakeup.set()
        return [i.future for i in items]

    def _compact(self) -> None:
        """Forget pairs whose requests timed out, so they do not hold places in the queue."""
        if any(i.abandoned for i in self._pending):
            self._pending = deque(i for i in self._pending if not i.abandoned)

    async def run(self) -> None:
        """Form micro-batches until drained: wait for a first pair, let others join, answer them."""
        loop = asyncio.get_running_loop()
        while True:
            self._drop_abandoned()
            if not self._pending:
                if not self._accepting:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._gather_more()
            batch = self._take_batch()
            if not batch:
                continue
            try:
                outcomes = await loop.run_in_executor(self._executor, self._answer, batch)
            except Exception as exc:  # the worker itself failed: fail this batch, keep serving
                outcomes = [exc] * len(batch)
            self.batches_run += 1
            self.pairs_answered += len(batch)
            for item, outcome in zip(batch, outcomes):
                if item.future.done():
                    continue  # timed out meanwhile
                if isinstance(outcome, BaseException):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)

    async def _gather_more(self) -> None:
        """Wait until a full batch is waiting or the oldest pair has waited max_wait_ms."""
        deadline = self._pending[0].arrived + self.settings.max_wait_ms / 1000.0
        while len(self._pending) < self.settings.max_batch_size and self._accepting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except asyncio.TimeoutError:
                return

    def _drop_abandoned(self) -> None:
        while self._pending and self._pending[0].abandoned:
            self._pending.popleft()

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        while self._pending and len(batch) < self.settings.max_batch_size:
            item = self._pending.popleft()
            if not item.abandoned:
                batch.append(item)
        return batch

    def _answer(self, batch: list[_Item]) -> list[Any]:
        """Worker thread: one pipeline call per group of equal settings; an error stays with its group."""
        groups: dict[tuple[int, bool, int], list[int]] = {}
        for index, item in enumerate(batch):
            groups.setdefault(item.options, []).append(index)
        outcomes: list[Any] = [None] * len(batch)
        for (top_k, impossible, max_answer_len, min_confidence), indices in groups.items():
            inputs = [{"question": batch[i].question, "context": batch[i].context} for i in indices]
            try:
                answers = self.qa(inputs, top_k=top_k, handle_impossible_answer=impossible,
                                  max_answer_len=max_answer_len, min_confidence=min_confidence,
                                  batch_size=self.settings.batch_size)
            except Exception as exc:  # handed to the requests of this group only
                answers = [exc] * len(indices)
            for i, answer in zip(indices, answers):
                outcomes[i] = answer
        return outcomes

    async def drain(self) -> None:
        """Admit nothing more, answer everything admitted, then stop the worker thread."""
        self._accepting = False
        self._wakeup.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------
# request / response models
# ---------------------------------------------------------------------------------------------


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or blank")
    return value


class Answer(BaseModel):
    """One answer span, as the pipeline gives it; ``answer == ""`` with ``start == end`` means no answer."""

    score: float
    start: int
    end: int
    answer: str
    # with a calibrated model (squadkit calibrate): the probability that this answer is an exact match
    # (for "": that the question has no answer); absent otherwise
    confidence: Optional[float] = None


def request_models(settings: ServeSettings) -> tuple[type[BaseModel], type[BaseModel]]:
    """The request bodies, with this server's limits in them (so they show in the OpenAPI schema)."""

    class AnswerRequest(BaseModel):
        """A question about a passage, with the pipeline's decoding settings."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
            "question": "Where do I live?", "context": "My name is Wolfgang and I live in Berlin."}]})

        question: Annotated[StrictStr, Field(min_length=1, max_length=settings.max_question_chars)]
        context: Annotated[StrictStr, Field(min_length=1, max_length=settings.max_context_chars)]
        top_k: Annotated[StrictInt, Field(ge=1, le=settings.max_top_k)] = 1
        # None: the model folder's setting (squadkit.json), else the pipeline's default
        handle_impossible_answer: Optional[StrictBool] = None
        max_answer_len: Optional[Annotated[StrictInt, Field(ge=1, le=MAX_ANSWER_LEN_LIMIT)]] = None
        # answer "" unless the calibrated confidence is at least this (needs a calibrated model)
        min_confidence: Optional[Annotated[float, Field(ge=0.0, le=1.0)]] = None

        @field_validator("question", "context")
        @classmethod
        def not_blank(cls, value: str) -> str:
            return _not_blank(value)

        def pair(self) -> tuple[str, str, tuple]:
            return self.question, self.context, (self.top_k, self.handle_impossible_answer, self.max_answer_len,
                                                 self.min_confidence)

    class BatchRequest(BaseModel):
        """Many questions, answered in order; each carries its own settings."""

        model_config = ConfigDict(extra="forbid")

        inputs: Annotated[list[AnswerRequest], Field(min_length=1, max_length=settings.max_batch_items)]

    return AnswerRequest, BatchRequest


class BatchResponse(BaseModel):
    answers: list[Union[Answer, list[Answer]]]


# ---------------------------------------------------------------------------------------------
# body size limit
# ---------------------------------------------------------------------------------------------


class BodyLimitMiddleware:
    """Answer 413 to a body over ``max_bytes``, declared or streamed, before the app parses it.

    Pure ASGI: the body (small by construction) is read here and replayed to the app, so a chunked
    upload is refused as soon as it passes the limit rather than after it has all been read.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        response = JSONResponse(
            {"detail": f"request body too large: the limit is {self.max_bytes} bytes"},
            status_code=413, headers={"Connection": "close"},
        )
        await response(scope, receive, send)


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def replayed() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls wait for the disconnect, as the server's own would

    return replayed


# ---------------------------------------------------------------------------------------------
# the app
# ---------------------------------------------------------------------------------------------


@dataclass
class ServerState:
    """What the endpoints share: the settings, the pipeline once loaded, its batcher."""

    settings: ServeSettings
    qa: Any = None
    batcher: Optional[MicroBatcher] = None
    load_error: Optional[str] = None
    model_name: str = ""

    @property
    def ready(self) -> bool:
        return self.batcher is not None and self.batcher.accepting


def _as_pipeline(qa_or_model: Any, settings: ServeSettings) -> Any:
    """A QuestionAnswerer (or anything callable like one) from what create_app was given.

    ``settings.threads`` goes to the backend: ONNX Runtime's intra-op pool, or torch's threads."""
    from .pipeline import QuestionAnswerer

    if callable(qa_or_model) and hasattr(qa_or_model, "answer_pairs"):
        return qa_or_model
    return QuestionAnswerer(qa_or_model, backend=settings.backend, device=settings.device, threads=settings.threads)


def _model_settings(qa: Any) -> dict:
    """The answering settings in force for a request that sets none, and where each came from."""
    if qa is None or not hasattr(qa, "settings_in_force"):
        return {}
    saved = getattr(qa.model, "settings", None)
    return {"in_force": qa.settings_in_force().as_dict(), "calibrated": getattr(qa, "calibrator", None) is not None,
            "saved": saved.to_json() if saved is not None and not saved.is_empty() else None}


def _model_name(qa_or_model: Any) -> str:
    if isinstance(qa_or_model, (str, os.PathLike)):
        return str(qa_or_model)
    model = getattr(qa_or_model, "model", qa_or_model)
    return str(getattr(model, "name_or_path", "") or type(model).__name__)


def _error(status: int, message: str, retry_after: Optional[int] = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _validation_summary(errors: list[dict]) -> tuple[str, list[dict]]:
    """A one-line message naming the field at fault, and the errors without echoing large inputs."""
    cleaned = []
    for e in errors:
        entry = {k: v for k, v in e.items() if k not in ("input", "url")}
        if "ctx" in entry:  # exception objects in ctx do not serialise
            entry["ctx"] = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                            for k, v in entry["ctx"].items()}
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        entry["field"] = "body" if e.get("type") == "json_invalid" else ".".join(loc) or "body"
        cleaned.append(entry)
    first = cleaned[0] if cleaned else {"field": "body", "msg": "invalid request"}
    more = f" (and {len(cleaned) - 1} more)" if len(cleaned) > 1 else ""
    return f"{first['field']}: {first['msg']}{more}", cleaned


def create_app(qa_or_model: Any, settings: Optional[ServeSettings] = None, index: Any = None) -> FastAPI:
    """The FastAPI app serving ``qa_or_model``: a QuestionAnswerer, a loaded squadkit model, or a
    model name / folder (loaded in the background at startup: /readyz says 503 until it is ready).
    With ``index`` (a ``squadkit index`` file) it also answers over documents: POST /v1/ask.
    """
    settings = (settings or ServeSettings()).validate()
    state = ServerState(settings, model_name=_model_name(qa_or_model))
    preloaded = not isinstance(qa_or_model, (str, os.PathLike))
    AnswerRequest, BatchRequest = request_models(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = None
        if preloaded:
            _start(state, _as_pipeline(qa_or_model, settings))
        else:
            loader = asyncio.get_running_loop().create_task(_load_in_background(state, qa_or_model))
        try:
            yield
        finally:
            if loader is not None and not loader.done():
                await loader
            if state.batcher is not None:
                await state.batcher.drain()

    app = FastAPIOffline(  # /docs with Swagger UI's files served from the package, not a CDN
        title="squadkit",
        version=_version(),
        description="Extractive question answering in the SQuAD v2 style. Requests that arrive together "
                    "are answered in one batched forward pass.",
        lifespan=lifespan,
    )
    app.state.squadkit = state
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, errors = _validation_summary(list(exc.errors()))
        return JSONResponse({"detail": errors, "error": message}, status_code=422)

    async def answer(pairs: list[tuple[str, str, tuple[int, bool, int]]]) -> Union[JSONResponse, list]:
        """Admit the pairs, wait for their answers; the limits' error responses otherwise."""
        if state.batcher is None:
            why = f"the model failed to load: {state.load_error}" if state.load_error else "the model is loading"
            return _error(503, why, settings.retry_after_s)
        try:
            futures = state.batcher.submit(pairs)
        except (QueueFull, NotAccepting) as exc:
            return _error(503, f"server busy: {exc}; retry later", settings.retry_after_s)
        try:
            return list(await asyncio.wait_for(asyncio.gather(*futures), settings.request_timeout_s))
        except asyncio.TimeoutError:
            for f in futures:  # leave them for the batcher to skip
                if not f.done():
                    f.cancel()
            return _error(504, f"no answer within the request timeout of {settings.request_timeout_s:g} s")
        except SquadkitError as exc:
            return _error(422, str(exc))
        except Exception as exc:
            log.exception("answering failed")
            return _error(500, f"answering failed: {type(exc).__name__}: {exc}")

    @app.post("/v1/answer", response_model=Union[Answer, list[Answer]], tags=["answer"],
              responses={413: {}, 422: {}, 503: {}, 504: {}}, response_model_exclude_none=True)
    async def answer_one(body: AnswerRequest):  # type: ignore[valid-type]
        """The pipeline's answer: one object for ``top_k`` 1, a list (best first) for more."""
        result = await answer([body.pair()])
        return result if isinstance(result, JSONResponse) else result[0]

    @app.post("/v1/answer/batch", response_model=BatchResponse, tags=["answer"],
              responses={413: {}, 422: {}, 503: {}, 504: {}}, response_model_exclude_none=True)
    async def answer_batch(body: BatchRequest):  # type: ignore[valid-type]
        """One pipeline answer per input, in order."""
        result = await answer([item.pair() for item in body.inputs])
        return result if isinstance(result, JSONResponse) else {"answers": result}

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        """The process is up and its event loop answers (even while the model works)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {}})
    async def readyz():
        """The model is loaded and requests are admitted; 503 while loading, after a failed load, or draining."""
        if state.ready:
            return {"status": "ready", "queued": state.batcher.queued}
        status = "failed" if state.load_error else ("draining" if state.batcher else "loading")
        body = {"status": status, **({"error": state.load_error} if state.load_error else {})}
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(settings.retry_after_s)})

    @app.get("/v1/model", tags=["health"])
    async def model_info() -> dict:
        """What is served: the model, its backend and device, and this server's settings."""
        model = getattr(state.qa, "model", None)
        return {
            "model": state.model_name,
            "backend": getattr(model, "backend", None) if model is not None else settings.backend,
            "device": str(getattr(state.qa, "device", None) or settings.device or "") or None,
            "ready": state.ready,
            "stats": {"micro_batches": getattr(state.batcher, "batches_run", 0),
                      "pairs_answered": getattr(state.batcher, "pairs_answered", 0),
                      "queued": getattr(state.batcher, "queued", 0)},
            "model_settings": _model_settings(state.qa),
            "settings": settings.public(),
            "squadkit_version": _version(),
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")

    if index is not None:  # questions over a document index (squadkit.retrieval)
        from .retrieval.routes import ask_router

        app.include_router(ask_router(state, str(index), settings.max_question_chars, settings.max_top_k))
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app


def _start(state: ServerState, qa: Any) -> None:
    state.qa = qa
    state.model_name = state.model_name or _model_name(qa)
    batcher = MicroBatcher(qa, state.settings)
    batcher.start()
    state.batcher = batcher


async def _load_in_background(state: ServerState, model: Any) -> None:
    """Load off the event loop, so /healthz answers (and /readyz says 'loading') meanwhile."""
    loop = asyncio.get_running_loop()
    try:
        qa = await loop.run_in_executor(None, _as_pipeline, model, state.settings)
    except Exception as exc:  # reported by /readyz and the 503s; the process stays up to say so
        state.load_error = first_line(exc)
        log.error("cannot load model %s: %s", model, state.load_error)
        return
    _start(state, qa)


def _version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------------------------------------
# running it
# ---------------------------------------------------------------------------------------------


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, so 'port in use' is one clear error before any model is loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno in (98, 48, 10048) else (exc.strerror or str(exc))
        raise SquadkitError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app: FastAPI, settings: ServeSettings) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app, log_level=settings.log_level, access_log=settings.access_log, lifespan="on",
        # uvicorn waits for requests in flight on SIGTERM; none can last longer than the request timeout
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )
    return uvicorn.Server(config)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(qa_or_model: Any = None, settings: Optional[ServeSettings] = None, index: Any = None, **overrides: Any) -> None:
    """Serve until SIGINT/SIGTERM (the ``squadkit serve`` command). Blocks.

    ``overrides`` replace fields of ``settings`` (``serve("model", port=9000)``). The port is bound
    and the model loaded before the server starts, so either failing is a SquadkitError here.
    Port 0 picks a free port; the URL is printed on stderr once the model is loaded.
    """
    import sys

    from .defaults import DEFAULT_MODEL

    settings = dataclasses.replace(settings or ServeSettings(), **overrides).validate()
    qa_or_model = DEFAULT_MODEL if qa_or_model is None else qa_or_model
    sock = bind_socket(settings.host, settings.port)
    try:
        _set_threads(settings.threads)
        qa = _as_pipeline(qa_or_model, settings)
        app = create_app(qa, settings, index=index)
        server = _uvicorn_server(app, settings)
        print(f"squadkit: serving {_model_name(qa)} at {url_of(sock)} (page: /, API docs: /docs)",
              file=sys.stderr, flush=True)
        server.run(sockets=[sock])
    finally:
        sock.close()


def _set_threads(threads: Optional[int]) -> None:
    """Pin torch's intra-op threads. Process-wide, so only serve() does it, never create_app().

    On a machine shared with other work, torch's default (one thread per core, spinning at every
    barrier) can make each forward pass many times slower than one thread would.
    """
    if threads is None:
        return
    try:
        import torch
    except ImportError:  # an ONNX-only install: nothing to pin
        return
    torch.set_num_threads(threads)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                    startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server in a background thread; yields its base URL.

    For tests, notebooks and benchmarks: port 0 picks a free port, and leaving the block stops
    the server the way SIGTERM would (requests in flight finish first).
    """
    settings: ServeSettings = app.state.squadkit.settings
    sock = bind_socket(host, port)
    server = _uvicorn_server(app, settings)
    server.install_signal_handlers = lambda: None  # uvicorn < 0.29 would try it off the main thread
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="squadkit-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=settings.request_timeout_s + 10)
        sock.close()
