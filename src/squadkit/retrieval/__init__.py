"""Ask your documents: index a collection, retrieve passages, answer from them with offsets.

* ``documents`` reads files (text, Markdown, HTML, JSON lines, SQuAD JSON; PDF and Word through
  ``filetypes``) and splits them into passages with exact character offsets;
* ``index`` stores them in a SQLite file (texts, offsets, optional embeddings) with a Tantivy
  keyword index (``engine``) and, for large dense collections, an HNSW graph (``ann``) beside it,
  updated incrementally and kept consistent through crashes;
* ``search`` holds the retrievers (bm25, dense, hybrid) behind the ``Retriever`` Protocol;
* ``ask`` reads the retrieved passages with a SQuAD model and ranks answers across them.

This package imports the core (predict, models, pipeline); the core never imports it.
"""

from __future__ import annotations

from .ask import Answer, AskResult, DocumentQA, ask, rank_answers, reader_threshold
from .documents import Document, Passage, split_passages
from .index import build_index, index_documents
from .store import DocumentRecord, Index, IndexReport, IndexSettings
from .embedder import SentenceEmbedder
from .search import BM25Retriever, DenseRetriever, Hit, HybridRetriever, Retriever, make_retriever, search

__all__ = [
    "Answer", "AskResult", "DocumentQA", "ask", "rank_answers", "reader_threshold", "Document", "Passage",
    "split_passages", "DocumentRecord", "Index", "IndexReport", "IndexSettings", "build_index", "index_documents", "BM25Retriever",
    "DenseRetriever", "Hit", "HybridRetriever", "Retriever", "SentenceEmbedder", "make_retriever", "search",
]
