"""HTTP endpoints for questions over an index: ``POST /v1/ask``, ``GET /v1/index`` and
``GET /v1/documents/{id}`` (a stored document, by the ``document_id`` every hit and answer carries).

``squadkit.serve.create_app(..., index=PATH)`` includes this router and hands it the server's
admission (``squadkit.serve.Admission``): a question over the index is one job in the same bounded
queue as the answer requests, run on the model's one worker thread between micro-batches, with the
same request timeout, 503 when the queue is full or the model is loading, and the same error body.
So retrieval and reading never block the event loop, and never compete with /v1/answer for the CPU.
(This module sits above serve.py in the import order, so serve passes in what it shares.)
"""

# No "from __future__ import annotations": FastAPI reads the request model's annotations at runtime.
from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, create_model

from ..defaults import ASK_PASSAGES as DEFAULT_PASSAGES
from ..defaults import MAX_PASSAGES
from ..errors import SquadkitError
from ..http_contract import ANSWERING_ERRORS, error_response, error_responses, json_int, json_number, text
from .ask import AskResult, DocumentQA
from .store import Index
from .search import has_words



def ask_request_model(max_question_chars: int, max_top_k: int, retrievers: tuple[str, ...],
                      calibrated: bool) -> type[BaseModel]:
    """The /v1/ask body: the retrievers this index supports, ``min_confidence`` only with a calibrated model."""

    class AskFields(BaseModel):
        """A question over the served document index."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
            "question": "In what country is Normandy located?", "k": 5, "top_k": 1}]})

    fields: dict = {
        "question": (text(max_length=max_question_chars), ...),
        "k": (Optional[json_int(ge=1, le=MAX_PASSAGES)], Field(None, description=(
            f"Passages to retrieve and read [default: the model folder's ask_k, else {DEFAULT_PASSAGES}]."))),
        "top_k": (json_int(ge=1, le=max_top_k), Field(1, description="Answers to return, best first.")),
        "retriever": (Optional[Literal[retrievers]], Field(None, description="Default: bm25.")),  # type: ignore[valid-type]
        "null_score_diff_threshold": (Optional[json_number()], Field(None, description=(
            "Abstain when the no-answer score beats the best span's by more than this [default: the model "
            "folder's, else 0]."))),
        "retrieval_weight": (Optional[json_number(ge=0.0)], Field(None, description=(
            "Rank spans on their score + this x their passage's z-scored retrieval score [default: the model "
            "folder's ask_retrieval_weight, else 0]."))),
    }
    if calibrated:
        fields["min_confidence"] = (Optional[json_number(ge=0.0, le=1.0)], Field(None, description=(
            "Abstain below this calibrated confidence.")))
    return create_model("AskRequest", __base__=AskFields, __doc__=AskFields.__doc__, **fields)


def ask_router(admission: Any, index_path: str, max_question_chars: int = 1000, max_top_k: int = 20, *,
               calibrated: bool = False) -> APIRouter:
    """The router. ``admission.qa`` is the server's QuestionAnswerer once loaded; ``admission.run(job)``
    runs a job through the server's admission control (its result, or an error response)."""
    index = Index(index_path)  # a missing or bad index fails here, when the app is created
    router = APIRouter(tags=["documents"])
    readers: dict[str, DocumentQA] = {}  # made and used on the model's worker thread only
    retrievers = ("bm25", "dense", "hybrid") if index.meta.get("embedder") else ("bm25",)
    AskRequest = ask_request_model(max_question_chars, max_top_k, retrievers, calibrated)  # noqa: N806

    def reader(kind: str) -> DocumentQA:
        if kind not in readers:
            readers[kind] = DocumentQA(index, qa=admission.qa, retriever=kind)
        return readers[kind]

    def run(body: Any) -> dict:
        dqa = reader(body.retriever or "bm25")
        if not has_words(body.question):  # nothing to search for, so nothing found: the reader abstains
            threshold = dqa.settings.null_score_diff_threshold if body.null_score_diff_threshold is None else body.null_score_diff_threshold
            return AskResult(body.question, True, [], None, threshold).to_dict()
        result = dqa.ask(
            body.question, k=body.k, top_k=body.top_k, min_confidence=getattr(body, "min_confidence", None),
            null_score_diff_threshold=body.null_score_diff_threshold, retrieval_weight=body.retrieval_weight)
        return result.to_dict()

    @router.post("/v1/ask", responses=error_responses(*ANSWERING_ERRORS))
    async def ask_endpoint(body: AskRequest):  # type: ignore[valid-type]
        """Answers from the documents: ``{answer, no_answer, answers: [{answer, score, document, start,
        end, passage, passage_start, ...}]}``; ``document_text[start:end] == answer``. When the reader
        abstains, ``answer`` is "" and ``answers`` still lists the best spans it rejected."""
        return await admission.run(lambda: run(body))

    @router.get("/v1/index")
    async def index_info() -> dict:
        """The served index: its file, counts and which retrievers it supports."""
        counts = await run_in_threadpool(index.counts)
        return {"index": str(index.path), **counts, "retrievers": list(retrievers), "settings": index.settings.__dict__}

    @router.get("/v1/documents/{document_id}", responses=error_responses(404, 422, 500))
    async def document(document_id: Annotated[int, Path(ge=1, le=2**63 - 1)]):
        """A stored document: ``{id, name, title, text, metadata, pages}``, ``text`` being what every
        ``start``/``end`` points into; ``pages`` (a PDF's) lists ``{page, start, end}`` spans of it, else null.
        Ids come from hits and answers (``document_id``); a re-indexed file's documents get new ones."""
        try:
            record = await run_in_threadpool(index.document, document_id)
        except SquadkitError:
            return error_response(404, f"no document with id {document_id} in the served index")
        return record.to_dict()

    return router

