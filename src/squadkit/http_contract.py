"""What every HTTP route of ``squadkit serve`` shares: the one error body and JSON's own number types.

Used by ``serve.py`` and ``retrieval/routes.py`` (which sits above serve in the import order, so the
shared pieces live here, below both). Needs the serve extra (FastAPI, pydantic).

* Every error answers ``{"error": "<one line naming the field, limit or cause>", "detail": ...}``
  (:class:`ErrorBody`), and every route lists the error statuses it can return
  (:func:`error_responses`), so the OpenAPI schema is the whole contract.
* Request fields take numbers as JSON Schema means them: an ``integer`` field takes ``3`` and
  ``3.0`` and refuses ``3.5``, ``"3"`` and ``true``; a ``number`` field takes ``3`` and ``3.5`` and
  refuses ``"3"`` and ``true``. (pydantic's lax types take ``"3"`` and ``true``; its strict int
  refuses ``3.0``.)
"""

# No "from __future__ import annotations": pydantic reads these annotations at runtime.
import re
from typing import Annotated, Any, Optional, Union

from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StrictStr


# JSON Schema's patterns are ECMA-262 regular expressions, whose \s differs from Python's (str.isspace,
# which the pipeline strips) at the edges: \x1c-\x1f and \x85 are spaces only to Python, U+FEFF only
# to ECMA. Blank means blank to both, spelled out character by character, so the schema and the
# server mean the same thing.
_SPACES = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NOT_BLANK = f"[^{_SPACES}]"  # the pattern of a text that must not be empty or blank
_NOT_BLANK = re.compile(NOT_BLANK)


def not_blank(value: str) -> str:
    """``value``, unless it has no character outside NOT_BLANK's spaces (a ValueError for pydantic)."""
    if not _NOT_BLANK.search(value):
        raise ValueError("must not be empty or blank")
    return value


def text(**constraints: Any) -> Any:
    """A string field that must not be blank: stated in the schema (pattern), enforced with the same class."""
    return Annotated[StrictStr, Field(min_length=1, json_schema_extra={"pattern": NOT_BLANK}, **constraints),
                     AfterValidator(not_blank)]


def _json_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("should be a JSON number, not a string or a boolean")
    return value


def json_int(**constraints: Any) -> Any:
    """An ``integer`` field with ``constraints`` (``ge=``, ``le=``); int's own rule refuses a fractional part.
    (The constraints come before the check, so pydantic states them in the schema as minimum/maximum.)"""
    return Annotated[int, Field(**constraints), BeforeValidator(_json_number)]


def json_number(**constraints: Any) -> Any:
    """A ``number`` field with ``constraints``; never NaN or infinite (JSON has no such numbers)."""
    return Annotated[float, Field(allow_inf_nan=False, **constraints), BeforeValidator(_json_number)]


class ErrorBody(BaseModel):
    """Every error response: ``error`` is one line naming the field, limit or cause; ``detail`` is the
    same line, or for 422 the list of validation errors (each with its ``field``)."""

    error: str
    detail: Union[str, list[dict[str, Any]]]


_ERROR_DESCRIPTIONS = {
    400: "The body cannot be read as JSON text (e.g. it is not UTF-8).",
    404: "Not served here (e.g. the document routes on a server started without --index).",
    413: "The body is larger than max_body_bytes.",
    422: "The body breaks the schema or a limit (``error`` names the field), or the model cannot answer this input.",
    500: "Answering failed: a bug, reported with its message.",
    503: "The model is loading or failed to load, the queue is full, or the server is shutting down; retry later.",
    504: "No answer within request_timeout_s.",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
ANSWERING_ERRORS = (400, 413, 422, 500, 503, 504)  # what a route that uses the model can answer


def error_responses(*statuses: int) -> dict:
    """The OpenAPI ``responses=`` entries of the error statuses a route can return."""
    return {status: {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[status],
                     **({"headers": RETRY_AFTER} if status == 503 else {})} for status in statuses}


def error_response(status: int, message: str, detail: Any = None, retry_after: Optional[int] = None,
                   headers: Optional[dict] = None) -> JSONResponse:
    """An error in the one shape: ``{"error": message, "detail": detail or message}``."""
    headers = dict(headers or {})
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    body = {"error": message, "detail": message if detail is None else detail}
    return JSONResponse(body, status_code=status, headers=headers or None)
