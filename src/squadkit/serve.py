"""Serve a QA model over HTTP: a FastAPI app with micro-batching, limits and a page to try it.

    >>> from squadkit.serve import ServeSettings, create_app, serve
    >>> serve("path/to/checkpoint", ServeSettings(port=8000))          # blocks, like the CLI
    >>> app = create_app(qa, ServeSettings(max_batch_size=16))         # or mount it yourself

Endpoints (all JSON; the OpenAPI schema is at ``/openapi.json``, its docs page at ``/docs``):

* ``POST /v1/answer``        ``{question, context, top_k?, handle_impossible_answer?,
  null_score_diff_threshold?, max_answer_length?, max_seq_length?, doc_stride?, max_query_length?,
  min_confidence?}`` (what ``squadkit answer`` may set, by the same names) -> exactly what
  ``QuestionAnswerer(question=..., context=..., ...)`` returns: one answer object for
  ``top_k == 1``, a list of them (best first) for ``top_k > 1``.
* ``POST /v1/answer/batch``  ``{"inputs": [<the object above>, ...]}`` -> ``{"answers": [...]}``,
  one pipeline answer per input, in order; each input carries its own settings.
* ``GET /healthz`` (the process answers), ``GET /readyz`` (the model is loaded and requests are
  accepted; 503 while loading or draining), ``GET /v1/model`` (model, model file, backend, settings).
* ``POST /v1/ask``, ``GET /v1/index`` with a document index (``index=``, ``serve --index``);
  without one they answer 404 saying how to start the server with one.
* ``GET /`` a page to try the model.

Why it is built this way:

* Requests that arrive together share one forward pass. A :class:`MicroBatcher` on the event
  loop collects question/context pairs until ``max_batch_size`` are waiting or the oldest has
  waited ``max_wait_ms``, then runs them on one worker thread, so the event loop (health checks,
  validation, other connections) keeps answering while the model works. Pairs are the unit, so a
  batch request is spread over micro-batches like any other requests.
* The pipeline takes one set of decoding settings per call, and this module holds no model logic
  of its own, so a micro-batch is grouped by its pairs' :class:`RequestOptions` (a frozen
  dataclass) and each group is one pipeline call. Clients that use the defaults (the usual case)
  all land in one group and one forward pass.
* Every route that uses the model goes through one :class:`Admission`: the batcher's bounded
  queue (a question over the documents is one job in it, run on the same worker thread between
  micro-batches, so the two never compete for the CPU), the request timeout, and the refusal
  while loading or draining.
* Every limit answers with its own status, and every error the same body,
  ``{"error": "<one line naming the field, limit or cause>", "detail": ...}`` (:class:`ErrorBody`):
  garbled body 400, body too large 413, a field too long or a batch too large 422 naming the
  field and the limit, queue full 503 with ``Retry-After``, an answer that takes longer than
  ``request_timeout_s`` 504. Each route's OpenAPI entry lists the statuses it can return.
* The request schema is this server's truth: its limits come from the settings and the model
  (the window options are bounded so that every combination within them works with the model),
  and ``min_confidence`` is a field only when the model is calibrated: on an uncalibrated model it
  is refused (422) as in Python and the CLI, and the schema does not offer it.
* On SIGTERM uvicorn stops accepting connections and waits for requests in flight; the batcher
  answers everything it has admitted before the worker thread is shut down.
"""

# No "from __future__ import annotations" here: FastAPI reads the endpoints' annotations at
# runtime, and the request models are built per app (their limits come from the settings).
import asyncio
import contextlib
import dataclasses
import http
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
from typing import Any, Annotated, AsyncIterator, Callable, Iterator, Optional, Union

from . import defaults
from .errors import SquadkitError, first_line
from .http_contract import (ANSWERING_ERRORS, RETRY_AFTER, ErrorBody, error_response, error_responses, json_int,
                            json_number, text)
from .serve_settings import RequestOptions, ServeSettings

try:  # the serve extra: pip install "squadkit[serve]"
    from fastapi import FastAPI, Request
    from fastapi_offline import FastAPIOffline
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictBool, create_model
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise SquadkitError(f"serving needs the serve extra: pip install 'squadkit[serve]' ({exc})") from None

__all__ = ["Admission", "ErrorBody", "MicroBatcher", "RequestOptions", "ServeSettings", "create_app", "serve",
           "serve_in_thread"]

log = logging.getLogger("squadkit.serve")

STATIC_DIR = resources.files("squadkit") / "static"
MAX_ANSWER_LENGTH_LIMIT = 512  # tokens; longer than any window, so a larger value could never matter
MAX_WINDOW_LIMIT = 512  # tokens, for a model whose own limit is not known (yet)
# tokens: the shortest window a request may ask for holds the longest question it may keep and this much
# context (256 tokens in all with the default question length), so the pipeline's default overlap of
# 128 can be asked for, and every window a request may set keeps room for the context
CONTEXT_ROOM = 192


# ---------------------------------------------------------------------------------------------
# micro-batching
# ---------------------------------------------------------------------------------------------


class QueueFull(Exception):
    """The bounded queue cannot admit the request: the client should retry later (503)."""


class NotAccepting(Exception):
    """The server is loading or draining and admits no new work (503)."""


@dataclass
class _Item:
    """One question/context pair waiting for its answer, or one job (``job``) run on its own."""

    question: str
    context: str
    options: RequestOptions
    future: asyncio.Future
    arrived: float
    job: Optional[Callable[[], Any]] = None

    @property
    def abandoned(self) -> bool:
        """Its request timed out or went away: not worth a forward pass."""
        return self.future.done()


class MicroBatcher:
    """Gathers pairs that arrive together into one pipeline call on a single worker thread.

    Lives on the event loop: ``submit`` admits pairs (all of a request or none, within
    ``max_queue``) and ``submit_job`` one job (a callable that uses the model, such as a question
    over the documents), each returning futures; ``run`` forms micro-batches and hands them to the
    worker thread; ``drain`` answers everything admitted, then stops. A job is never batched: it
    runs alone, in its turn.
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
        self.jobs_run = 0

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run(), name="squadkit-batcher")

    def submit(self, pairs: list[tuple[str, str, RequestOptions]]) -> list[asyncio.Future]:
        """Admit the pairs of one request, or raise QueueFull / NotAccepting without admitting any."""
        return self._admit([(q, c, options, None) for q, c, options in pairs])

    def submit_job(self, job: Callable[[], Any]) -> list[asyncio.Future]:
        """Admit one job, run on the worker thread in its turn (one place in the queue)."""
        return self._admit([("", "", RequestOptions(), job)])

    def _admit(self, entries: list[tuple[str, str, RequestOptions, Optional[Callable[[], Any]]]]) -> list[asyncio.Future]:
        if not self._accepting:
            raise NotAccepting("the server is shutting down")
        self._compact()
        if len(self._pending) + len(entries) > self.settings.max_queue:
            raise QueueFull(f"the queue is full ({len(self._pending)} of {self.settings.max_queue} waiting)")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        items = [_Item(q, c, opts, loop.create_future(), now, job) for q, c, opts, job in entries]
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
            self._count(batch)
            for item, outcome in zip(batch, outcomes):
                if item.future.done():
                    continue  # timed out meanwhile
                if isinstance(outcome, BaseException):
                    item.future.set_exception(outcome)
                else:
                    item.future.set_result(outcome)

    def _count(self, batch: list[_Item]) -> None:
        if batch[0].job is not None:
            self.jobs_run += 1
        else:
            self.batches_run += 1
            self.pairs_answered += len(batch)

    async def _gather_more(self) -> None:
        """Wait until a full batch is waiting or the oldest pair has waited max_wait_ms (a job waits for none)."""
        deadline = self._pending[0].arrived + self.settings.max_wait_ms / 1000.0
        while (len(self._pending) < self.settings.max_batch_size and self._accepting
               and self._pending[0].job is None):
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
        """The next job alone, or the pairs up to max_batch_size that come before the next job."""
        batch: list[_Item] = []
        while self._pending and len(batch) < self.settings.max_batch_size:
            item = self._pending[0]
            if item.job is not None and batch:
                break
            self._pending.popleft()
            if item.abandoned:
                continue
            batch.append(item)
            if item.job is not None:
                break
        return batch

    def _answer(self, batch: list[_Item]) -> list[Any]:
        """Worker thread: a job, or one pipeline call per group of equal options; an error stays with its group."""
        if batch[0].job is not None:
            try:
                return [batch[0].job()]
            except Exception as exc:  # handed to the job's request
                return [exc]
        groups: dict[RequestOptions, list[int]] = {}
        for index, item in enumerate(batch):
            groups.setdefault(item.options, []).append(index)
        outcomes: list[Any] = [None] * len(batch)
        for options, indices in groups.items():
            inputs = [{"question": batch[i].question, "context": batch[i].context} for i in indices]
            try:
                answers = self.qa(inputs, **dataclasses.asdict(options), batch_size=self.settings.batch_size)
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
# errors: one body for every error (http_contract.py), listed in the OpenAPI schema
# ---------------------------------------------------------------------------------------------


class NotReadyBody(ErrorBody):
    """GET /readyz while not ready: why, and the state (loading, failed or draining)."""

    status: str


# ---------------------------------------------------------------------------------------------
# request / response models
# ---------------------------------------------------------------------------------------------


class Abstained(BaseModel):
    """Why the answer is "" (squadkit.abstain): null_score_above_threshold, min_confidence or no_span; the
    best span rejected and its margin (no-answer score minus its score), the threshold and where it came from."""

    reason: str
    best_span: Optional[str] = None
    margin: Optional[float] = None
    threshold: float
    threshold_from: Optional[str] = None
    confidence: Optional[float] = None
    min_confidence: Optional[float] = None


class Answer(BaseModel):
    """One answer span, as the pipeline gives it; ``answer == ""`` with ``start == end`` means no answer."""

    score: float
    start: int
    end: int
    answer: str
    # with a calibrated model (squadkit calibrate): the probability that this answer is an exact match
    # (for "": that the question has no answer); absent otherwise
    confidence: Optional[float] = None
    abstained: Optional[Abstained] = None  # with answer "": why


@dataclass(frozen=True)
class RequestLimits:
    """What a request may set, from the server's settings and the model.

    The window options are bounded so that every combination within the bounds works: a window
    never longer than the model takes; the shortest one still holds the longest question a request
    may keep plus CONTEXT_ROOM tokens of context; an overlap shorter than any window (the model's
    own included). ``calibrated``: whether ``min_confidence`` is a field at all.
    """

    max_top_k: int = 20
    max_seq_length: tuple[int, int] = (defaults.MAX_QUERY_LENGTH + CONTEXT_ROOM, MAX_WINDOW_LIMIT)
    max_query_length: int = defaults.MAX_QUERY_LENGTH
    doc_stride: int = defaults.MAX_QUERY_LENGTH + CONTEXT_ROOM - 1
    calibrated: bool = False


def request_limits(qa_or_model: Any, settings: ServeSettings) -> RequestLimits:
    """The limits for a loaded pipeline (its model's window and settings in force), or, for a model
    still to be loaded, the defaults and whether its folder holds a calibrator."""
    if not hasattr(qa_or_model, "settings_in_force"):
        qa = getattr(qa_or_model, "qa", None)  # a wrapper around a pipeline (tests' gated pipelines)
        if qa is not None and hasattr(qa, "settings_in_force"):
            return request_limits(qa, settings)
        return RequestLimits(settings.max_top_k, calibrated=_folder_is_calibrated(qa_or_model))
    values = qa_or_model.settings_in_force().values
    window = qa_or_model.model.window_limit or MAX_WINDOW_LIMIT
    query = max(defaults.MAX_QUERY_LENGTH, values["max_query_length"])
    shortest = min(query + CONTEXT_ROOM, window)
    return RequestLimits(settings.max_top_k, (shortest, window), query, min(shortest, values["max_seq_length"]) - 1,
                         qa_or_model.calibrator is not None)


def _folder_is_calibrated(model: Any) -> bool:
    """Whether a model folder not loaded yet holds a calibrator (its squadkit.json, or an export's record)."""
    if not isinstance(model, (str, os.PathLike)) or not Path(model).is_dir():
        return False
    try:
        from .checkpoint import read_settings

        if read_settings(model).calibration is not None:
            return True
        from .backends.onnx import read_record

        return bool(((read_record(model) or {}).get("settings") or {}).get("calibration"))
    except Exception:  # an unreadable folder fails to load, and says why, in the background
        return False


class _AnswerFields(BaseModel):
    """A question about a passage, with the pipeline's decoding settings."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "question": "Where do I live?", "context": "My name is Wolfgang and I live in Berlin."}]})

    def options(self) -> RequestOptions:
        return RequestOptions(**{f.name: getattr(self, f.name, None) for f in dataclasses.fields(RequestOptions)})

    def pair(self) -> tuple[str, str, RequestOptions]:
        return self.question, self.context, self.options()  # type: ignore[attr-defined]


def option_fields(limits: RequestLimits) -> dict:
    """The answering options a request may set (pydantic field definitions), by their canonical names."""
    lo, hi = limits.max_seq_length
    fields: dict = {
        "top_k": (json_int(ge=1, le=limits.max_top_k), Field(1, description="Answers to return, best first.")),
        "handle_impossible_answer": (Optional[StrictBool], Field(None, description=(
            "Allow the empty answer [default: the model folder's, else off]."))),
        "null_score_diff_threshold": (Optional[json_number()], Field(None, description=(
            "With the empty answer: it wins when log p_null - log p_span exceeds this [default: the model folder's, "
            "else 0]."))),
        "max_answer_length": (Optional[json_int(ge=1, le=MAX_ANSWER_LENGTH_LIMIT)], Field(
            None, validation_alias=AliasChoices("max_answer_length", "max_answer_len"), description=(
                "Longest answer, in tokens [default: the model folder's, else 15]; transformers' name "
                "max_answer_len is accepted too."))),
        "max_seq_length": (Optional[json_int(ge=lo, le=hi)], Field(None, description=(
            "Tokens per window [default: the model folder's, else min(model limit, 384)]."))),
        "doc_stride": (Optional[json_int(ge=0, le=limits.doc_stride)], Field(None, description=(
            "Tokens shared by neighbouring windows (the pipeline's overlap) [default: min(max_seq_length // 2, "
            "128)]."))),
        "max_query_length": (Optional[json_int(ge=1, le=limits.max_query_length)], Field(
            None, description="Question tokens kept [default: the model folder's, else 64].")),
    }
    if limits.calibrated:  # otherwise not a field: refused, as Python and the CLI refuse it
        fields["min_confidence"] = (Optional[json_number(ge=0.0, le=1.0)], Field(None, description=(
            'Answer "" unless the calibrated confidence is at least this.')))
    return fields


def request_models(settings: ServeSettings, limits: Optional[RequestLimits] = None) -> tuple[type[BaseModel], type[BaseModel]]:
    """The request bodies, with this server's limits in them (so they show in the OpenAPI schema)."""
    limits = limits or RequestLimits(settings.max_top_k)
    AnswerRequest = create_model(  # noqa: N806 - a class
        "AnswerRequest", __base__=_AnswerFields, __doc__=_AnswerFields.__doc__,
        question=(text(max_length=settings.max_question_chars), ...),
        context=(text(max_length=settings.max_context_chars), ...),
        **option_fields(limits),
    )

    class BatchRequest(BaseModel):
        """Many questions, answered in order; each carries its own settings."""

        model_config = ConfigDict(extra="forbid")

        inputs: Annotated[list[AnswerRequest], Field(min_length=1, max_length=settings.max_batch_items)]  # type: ignore[valid-type]

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
        response = error_response(413, f"body: too large: the limit is {self.max_bytes} bytes",
                                  headers={"Connection": "close"})
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
    saved = qa.model.settings
    return {"in_force": qa.settings_in_force().as_dict(), "calibrated": qa.calibrator is not None,
            "saved": saved.to_json() if not saved.is_empty() else None}


def _model_name(qa_or_model: Any) -> str:
    if isinstance(qa_or_model, (str, os.PathLike)):
        return str(qa_or_model)
    model = getattr(qa_or_model, "model", qa_or_model)
    return str(getattr(model, "name_or_path", "") or type(model).__name__)


_EXTRA_FIELD_HINTS = {  # why a field this server's schema leaves out is refused
    "min_confidence": "this server's model is not calibrated, so it takes no min_confidence (fit a calibrator "
                      "with `squadkit calibrate`)",
}


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
        if e.get("type") == "extra_forbidden" and loc and loc[-1] in _EXTRA_FIELD_HINTS:
            entry["msg"] = _EXTRA_FIELD_HINTS[loc[-1]]
        cleaned.append(entry)
    first = cleaned[0] if cleaned else {"field": "body", "msg": "invalid request"}
    more = f" (and {len(cleaned) - 1} more)" if len(cleaned) > 1 else ""
    return f"{first['field']}: {first['msg']}{more}", cleaned


class Admission:
    """The one door to the model for every route that uses it (/v1/answer, /v1/answer/batch, /v1/ask).

    Work enters the micro-batcher's bounded queue, or is refused with 503 and Retry-After (queue
    full, model loading or failed, server draining); it waits at most ``request_timeout_s`` for its
    outcome (504); bad input found by the model's code is 422, anything else 500.
    """

    def __init__(self, state: "ServerState") -> None:
        self.state = state

    @property
    def qa(self) -> Any:
        """The loaded pipeline (None while loading)."""
        return self.state.qa

    async def answer(self, pairs: list[tuple[str, str, RequestOptions]]) -> Union[JSONResponse, list]:
        """The pipeline's answers to the pairs, in order, or the error response."""
        return await self._admit(lambda batcher: batcher.submit(pairs))

    async def run(self, job: Callable[[], Any]) -> Any:
        """``job()`` run on the model's worker thread in its turn (one place in the queue), or the error response."""
        result = await self._admit(lambda batcher: batcher.submit_job(job))
        return result if isinstance(result, JSONResponse) else result[0]

    async def _admit(self, submit: Callable[[MicroBatcher], list[asyncio.Future]]) -> Union[JSONResponse, list]:
        settings, batcher = self.state.settings, self.state.batcher
        if batcher is None:
            why = f"the model failed to load: {self.state.load_error}" if self.state.load_error else "the model is loading"
            return error_response(503, why, retry_after=settings.retry_after_s)
        try:
            futures = submit(batcher)
        except (QueueFull, NotAccepting) as exc:
            return error_response(503, f"server busy: {exc}; retry later", retry_after=settings.retry_after_s)
        try:
            return list(await asyncio.wait_for(asyncio.gather(*futures), settings.request_timeout_s))
        except asyncio.TimeoutError:
            for f in futures:  # leave them for the batcher to skip
                if not f.done():
                    f.cancel()
            return error_response(504, f"no answer within the request timeout of {settings.request_timeout_s:g} s")
        except SquadkitError as exc:
            return error_response(422, first_line(exc))
        except Exception as exc:
            log.exception("answering failed")
            return error_response(500, f"answering failed: {type(exc).__name__}: {first_line(exc)}")


def create_app(qa_or_model: Any, settings: Optional[ServeSettings] = None, index: Any = None) -> FastAPI:
    """The FastAPI app serving ``qa_or_model``: a QuestionAnswerer, a loaded squadkit model, or a
    model name / folder (loaded in the background at startup: /readyz says 503 until it is ready).
    With ``index`` (a ``squadkit index`` file) it also answers over documents: POST /v1/ask.
    """
    settings = (settings or ServeSettings()).validate()
    state = ServerState(settings, model_name=_model_name(qa_or_model))
    preloaded = not isinstance(qa_or_model, (str, os.PathLike))
    limits = request_limits(qa_or_model, settings)

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
    _add_error_handlers(app)
    admission = Admission(state)
    _add_answer_routes(app, admission, *request_models(settings, limits))
    _add_health_routes(app, state)
    if index is not None:  # questions over a document index (squadkit.retrieval)
        from .retrieval.routes import ask_router

        app.include_router(ask_router(admission, str(index), settings.max_question_chars, settings.max_top_k,
                                      calibrated=limits.calibrated))
    else:
        _add_no_index_routes(app)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error in the one shape: validation (422), and the HTTP errors FastAPI and Starlette raise
    themselves (400 for a body that is not JSON text, 404, 405 with its Allow header)."""

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, errors = _validation_summary(list(exc.errors()))
        if any(e.get("type") == "json_invalid" for e in exc.errors()):  # not JSON text: 400, as documented
            return error_response(400, "body: cannot be read as JSON text (send UTF-8 JSON)", detail=errors)
        return error_response(422, message, detail=errors)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) and exc.detail else http.HTTPStatus(exc.status_code).phrase
        if exc.status_code == 400 and message == "There was an error parsing the body":
            message = "body: cannot be read as JSON (send UTF-8 JSON text)"
        return error_response(exc.status_code, message, headers=exc.headers)


def _add_answer_routes(app: FastAPI, admission: Admission, AnswerRequest: type, BatchRequest: type) -> None:  # noqa: N803
    @app.post("/v1/answer", response_model=Union[Answer, list[Answer]], tags=["answer"],
              responses=error_responses(*ANSWERING_ERRORS), response_model_exclude_none=True)
    async def answer_one(body: AnswerRequest):  # type: ignore[valid-type]
        """The pipeline's answer: one object for ``top_k`` 1, a list (best first) for more."""
        result = await admission.answer([body.pair()])
        return result if isinstance(result, JSONResponse) else result[0]

    @app.post("/v1/answer/batch", response_model=BatchResponse, tags=["answer"],
              responses=error_responses(*ANSWERING_ERRORS), response_model_exclude_none=True)
    async def answer_batch(body: BatchRequest):  # type: ignore[valid-type]
        """One pipeline answer per input, in order."""
        result = await admission.answer([item.pair() for item in body.inputs])
        return result if isinstance(result, JSONResponse) else {"answers": result}


def _add_health_routes(app: FastAPI, state: "ServerState") -> None:
    settings = state.settings

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        """The process is up and its event loop answers (even while the model works)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {
        "model": NotReadyBody, "description": "Loading, failed to load, or draining.", "headers": RETRY_AFTER}})
    async def readyz():
        """The model is loaded and requests are admitted; 503 while loading, after a failed load, or draining."""
        if state.ready:
            return {"status": "ready", "queued": state.batcher.queued}
        status = "failed" if state.load_error else ("draining" if state.batcher else "loading")
        why = state.load_error or {"draining": "the server is shutting down", "loading": "the model is loading"}[status]
        return JSONResponse({"status": status, "error": why, "detail": why}, status_code=503,
                            headers={"Retry-After": str(settings.retry_after_s)})

    @app.get("/v1/model", tags=["health"])
    async def model_info() -> dict:
        """What is served: the model, the file and precision it runs, its backend and device, and this
        server's settings."""
        model = state.qa.model if state.qa is not None else None
        return {
            "model": state.model_name,
            **_model_file(model),
            "backend": model.backend if model is not None else settings.backend,
            "device": str((model.device if model is not None else None) or settings.device or "") or None,
            "ready": state.ready,
            "stats": {"micro_batches": getattr(state.batcher, "batches_run", 0),
                      "pairs_answered": getattr(state.batcher, "pairs_answered", 0),
                      "document_questions": getattr(state.batcher, "jobs_run", 0),
                      "queued": getattr(state.batcher, "queued", 0)},
            "model_settings": _model_settings(state.qa),
            "settings": settings.public(),
            "squadkit_version": _version(),
        }


def _model_file(model: Any) -> dict:
    """The file the model runs from (``model.int8.onnx`` or ``model.onnx`` for an export; None for a
    torch checkpoint, whose folder is ``model``) and the precision it computes in."""
    if model is None:
        return {"model_file": None, "precision": None}
    file = model.model_file
    return {"model_file": Path(file).name if file else None, "precision": model.precision}


def _add_no_index_routes(app: FastAPI) -> None:
    """The document routes on a server without an index: a JSON error saying how to get one (not in the schema)."""

    @app.post("/v1/ask", include_in_schema=False)
    @app.get("/v1/index", include_in_schema=False)
    async def no_index() -> JSONResponse:
        return error_response(404, "this server has no document index: start it with `squadkit serve --index INDEX` "
                                   "(an index built by `squadkit index`) to ask documents")


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
    from importlib.metadata import version

    return version("squadkit")


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
        app = app_for(qa_or_model, settings, index=index)
        server = _uvicorn_server(app, settings)
        print(f"squadkit: serving {app.state.squadkit.model_name} at {url_of(sock)} (page: /, API docs: /docs)",
              file=sys.stderr, flush=True)
        server.run(sockets=[sock])
    finally:
        sock.close()


def app_for(qa_or_model: Any, settings: ServeSettings, index: Any = None) -> FastAPI:
    """The app exactly as ``squadkit serve`` makes it: threads pinned, the model loaded first (so its
    limits and calibration are in the request schema), then the app."""
    _set_threads(settings.threads)
    return create_app(_as_pipeline(qa_or_model, settings), settings, index=index)


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
