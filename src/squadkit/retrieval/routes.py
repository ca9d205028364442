"""HTTP endpoints for questions over an index: ``POST /v1/ask`` and ``GET /v1/index``.

``squadkit.serve.create_app(..., index=PATH)`` includes this router; it shares the server's
loaded model (``state.qa``), so one model serves both /v1/answer and /v1/ask. Questions over the
index run on FastAPI's thread pool, one at a time (a lock), so retrieval and reading never block
the event loop and never compete with each other for the CPU.
"""

# No "from __future__ import annotations": FastAPI reads the request model's annotations at runtime.
import threading
from typing import Any, Literal, Optional

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from ..errors import SquadkitError, first_line
from .ask import DEFAULT_PASSAGES, DocumentQA
from .index import Index

MAX_PASSAGES = 50


def ask_router(state: Any, index_path: str, max_question_chars: int = 1000, max_top_k: int = 20) -> APIRouter:
    """The router; ``state.qa`` is the server's QuestionAnswerer once loaded (None while loading)."""
    index = Index(index_path)  # a missing or bad index fails here, when the app is created
    router = APIRouter(tags=["documents"])
    lock = threading.Lock()
    readers: dict[str, DocumentQA] = {}

    class AskRequest(BaseModel):
        """A question over the served document index."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
            "question": "In what country is Normandy located?", "k": 5, "top_k": 1}]})

        question: StrictStr = Field(min_length=1, max_length=max_question_chars)
        k: Optional[int] = Field(None, ge=1, le=MAX_PASSAGES, description="Passages to retrieve and read (default: "
                                 f"the model folder's ask_k, else {DEFAULT_PASSAGES}).")
        top_k: int = Field(1, ge=1, le=max_top_k, description="Answers to return, best first.")
        retriever: Optional[Literal["bm25", "dense", "hybrid"]] = Field(None, description="Default: bm25.")
        min_confidence: Optional[float] = Field(None, ge=0.0, le=1.0, description="Abstain below this calibrated "
                                                "confidence (a calibrated model only).")

    def reader(kind: str) -> DocumentQA:
        if kind not in readers:
            readers[kind] = DocumentQA(index, qa=state.qa, retriever=kind)
        return readers[kind]

    def run(body: AskRequest) -> dict:
        with lock:
            return reader(body.retriever or "bm25").ask(body.question, k=body.k, top_k=body.top_k,
                                                             min_confidence=body.min_confidence).to_dict()

    @router.post("/v1/ask", responses={422: {}, 503: {}})
    async def ask_endpoint(body: AskRequest):
        """Answers from the documents: ``{answer, no_answer, answers: [{answer, score, document, start,
        end, passage, passage_start, ...}]}``; ``document_text[start:end] == answer``."""
        if getattr(state, "qa", None) is None:
            return JSONResponse({"detail": "the model is loading"}, status_code=503, headers={"Retry-After": "1"})
        if not body.question.strip():
            return JSONResponse({"detail": "question: must not be blank", "error": "question: must not be blank"},
                                status_code=422)
        try:
            return await run_in_threadpool(run, body)
        except SquadkitError as exc:
            return JSONResponse({"detail": first_line(exc), "error": first_line(exc)}, status_code=422)

    @router.get("/v1/index")
    async def index_info() -> dict:
        """The served index: its file, counts and which retrievers it supports."""
        counts = await run_in_threadpool(index.counts)
        kinds = ["bm25"] + (["dense", "hybrid"] if index.meta.get("embedder") else [])
        return {"index": str(index.path), **counts, "retrievers": kinds, "settings": index.settings.__dict__}

    return router
