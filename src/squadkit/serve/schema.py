"""The HTTP request and response models, built per app from the settings and the model; the body limit."""

# No "from __future__ import annotations" here: FastAPI reads the endpoints' annotations at
# runtime, and the request models are built per app (their limits come from the settings).
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Annotated, Optional, Union

from .. import defaults
from ..errors import SquadkitError
from ..http_contract import (ErrorBody, error_response, json_int, json_number, text)
from ..serve_settings import RequestOptions, ServeSettings

try:  # the serve extra: pip install "squadkit[serve]"
    from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictBool, create_model
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise SquadkitError(f"serving needs the serve extra: pip install 'squadkit[serve]' ({exc})") from None


log = logging.getLogger("squadkit.serve")

MAX_ANSWER_LENGTH_LIMIT = 512  # tokens; longer than any window, so a larger value could never matter
MAX_WINDOW_LIMIT = 512  # tokens, for a model whose own limit is not known (yet)
# tokens: the shortest window a request may ask for holds the longest question it may keep and this much
# context (256 tokens in all with the default question length), so the pipeline's default overlap of
# 128 can be asked for, and every window a request may set keeps room for the context
# tokens: the shortest window a request may ask for holds the longest question it may keep and this much
# context, so the pipeline's default overlap of 128 can be asked for
CONTEXT_ROOM = 192


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
        from ..model import folder_settings

        return folder_settings(model).calibration is not None
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


