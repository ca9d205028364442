"""The FastAPI app: admission, routes, health, loading the model in the background."""

# No "from __future__ import annotations" here: FastAPI reads the endpoints' annotations at
# runtime, and the request models are built per app (their limits come from the settings).
import asyncio
import contextlib
import http
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Optional, Union

from ..errors import SquadkitError, first_line
from ..http_contract import (ANSWERING_ERRORS, RETRY_AFTER, error_response, error_responses)
from ..serve_settings import RequestOptions, ServeSettings

try:  # the serve extra: pip install "squadkit[serve]"
    from fastapi import FastAPI, Request
    from fastapi_offline import FastAPIOffline
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise SquadkitError(f"serving needs the serve extra: pip install 'squadkit[serve]' ({exc})") from None


log = logging.getLogger("squadkit.serve")

from .batching import MicroBatcher, NotAccepting, QueueFull
from .schema import Answer, BatchResponse, BodyLimitMiddleware, NotReadyBody, request_limits, request_models

STATIC_DIR = resources.files("squadkit") / "static"


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
    from ..pipeline import QuestionAnswerer

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
    """The served model's name: the folder or hub id given, or the loaded pipeline's model's."""
    if isinstance(qa_or_model, (str, os.PathLike)):
        return str(qa_or_model)
    model = qa_or_model.model
    return str(model.name_or_path if model is not None else type(qa_or_model).__name__)


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
        from ..retrieval.routes import ask_router

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


