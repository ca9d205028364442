"""The document index as read: its SQLite schema, settings and records, ``Index``, and crash repair of
its keyword engine. How it is built and why: docs/index.md."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import SquadkitError, first_line
from . import engine
from .documents import (
    page_at,
)

INDEX_FORMAT = 2  # 2: Tantivy beside SQLite (1: SQLite FTS5, moved over by a plain re-run); a larger one is refused
DEFAULT_MAX_TOKENS = 256
DEFAULT_OVERLAP = 32
CHECK_BYTES = 256 * 2**20  # below this, opening an index also checks SQLite pages and engine checksums

PASSAGE_TEXT = 'substr(d.text, p.start + 1, p."end" - p.start)'  # a passage's text, cut from its document (p, d)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(
    id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, name TEXT NOT NULL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents(
    id INTEGER PRIMARY KEY, file_id INTEGER, name TEXT NOT NULL, title TEXT NOT NULL,
    text TEXT NOT NULL, metadata TEXT);
CREATE INDEX IF NOT EXISTS documents_file ON documents(file_id);
CREATE TABLE IF NOT EXISTS passages(
    id INTEGER PRIMARY KEY, doc_id INTEGER NOT NULL, start INTEGER NOT NULL, "end" INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS passages_doc ON passages(doc_id);
CREATE TABLE IF NOT EXISTS embeddings(passage_id INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS bm25_pending(doc_id INTEGER PRIMARY KEY);
"""


@dataclass
class IndexSettings:
    """How passages are cut; stored in the index. Changing them re-splits every file."""

    tokenizer: str | None = None  # a tokenizer/model folder or hub id; None: words and punctuation
    max_tokens: int = DEFAULT_MAX_TOKENS
    overlap: int = DEFAULT_OVERLAP

    def key(self) -> str:
        return json.dumps({"tokenizer": self.tokenizer, "max_tokens": self.max_tokens, "overlap": self.overlap},
                          sort_keys=True)

    def validate(self, names: Mapping[str, str] | None = None) -> "IndexSettings":
        """Refuse passages too short to hold a question's answer; ``names``: how the caller spelled each field."""
        names = names or {}
        tokens, overlap = names.get("max_tokens", "max_tokens"), names.get("overlap", "overlap")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 8:
            raise SquadkitError(f"{tokens} must be an integer >= 8, got {self.max_tokens!r}")
        if not isinstance(self.overlap, int) or not 0 <= self.overlap < self.max_tokens // 2:
            raise SquadkitError(f"{overlap} must be >= 0 and below half of {tokens} ({self.max_tokens}), "
                                f"got {self.overlap!r}")
        return self


@dataclass
class IndexReport:
    """What one ``index`` run did; ``skipped`` names every file left out and why."""

    index: str
    files_added: int = 0
    files_updated: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    documents_added: int = 0
    passages_added: int = 0
    empty_documents: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    documents: int = 0  # totals after the run
    passages: int = 0
    embedded: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["skipped"] = [{"file": f, "reason": r} for f, r in self.skipped]
        return d


def connect(path: str | os.PathLike, create: bool = False, timeout: float = 30.0) -> sqlite3.Connection:
    """A connection to the index file; a missing file is a SquadkitError unless ``create``."""
    path = Path(path)
    if path.is_dir():
        raise SquadkitError(f"{path}: is a folder, not an index file")
    if not create and not path.exists():
        raise SquadkitError(f"{path}: index not found (build it with: squadkit index PATH... --output {path})")
    try:
        uri = f"file:{path.resolve()}?mode={'rwc' if create else 'rw'}"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=timeout)
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB at most
    except sqlite3.DatabaseError as exc:
        raise unreadable(path, exc) from None
    except sqlite3.Error as exc:
        raise SquadkitError(f"{path}: cannot open index: {exc}") from None
    return conn


def unreadable(path: str | os.PathLike, exc: BaseException) -> SquadkitError:
    """SQLite could not read the file: damaged, when the engine folder beside it says it was an index."""
    if engine.search_folder(path).is_dir():
        return engine.damaged(path, exc)
    return SquadkitError(f"{path}: not a squadkit index ({first_line(exc)})")


def read_meta(conn: sqlite3.Connection, path: str | os.PathLike, writing: bool = False,
              rebuilding: bool = False) -> dict[str, str]:
    """The index's meta rows, after checking that it is a complete index of a format this version reads
    (``writing``: also format 1, which a writer moves over to the current engine; ``rebuilding``: also
    an incomplete one, which ``--rebuild`` replaces)."""
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table')")}
        meta = dict(conn.execute("SELECT key, value FROM meta")) if "meta" in tables else None
    except sqlite3.DatabaseError as exc:
        raise unreadable(path, exc) from None
    if meta is None and not tables:  # what a first build killed before its commit leaves
        raise SquadkitError(f"{path}: an empty index file (a first build that never finished); "
                            f"build it with: squadkit index PATH... --output {path}")
    if meta is None:
        raise SquadkitError(f"{path}: not a squadkit index (a SQLite file without squadkit's tables); "
                            f"give the file squadkit index --output wrote")
    try:
        fmt = int(meta.get("format", "0"))
    except ValueError:
        fmt = 0
    if fmt > INDEX_FORMAT:
        raise SquadkitError(f"{path}: index format {fmt} was written by a newer squadkit "
                            f"({meta.get('squadkit_version', '?')}); this one reads format {INDEX_FORMAT}")
    if (fmt < 1 or meta.get("complete") != "1") and not rebuilding:
        raise SquadkitError(f"{path}: incomplete squadkit index (no finished build recorded); "
                            f"rebuild it: squadkit index PATH... --output {path} --rebuild")
    if fmt == 1 and not writing:
        raise SquadkitError(f"{path}: an index of an earlier squadkit (SQLite FTS5 search); move it to the current "
                            f"engine with a plain re-run: squadkit index PATH... --output {path}")
    return meta


def check_pages(conn: sqlite3.Connection, path: str | os.PathLike) -> None:
    """SQLite's own page check (``PRAGMA quick_check``): a damaged page is a one-line error with the fix."""
    try:
        result = conn.execute("PRAGMA quick_check(1)").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise unreadable(path, exc) from None
    if result != "ok":
        raise engine.damaged(path, result)


def _size(path: Path) -> int:
    total = path.stat().st_size if path.is_file() else 0
    return total + sum(f.stat().st_size for f in path.parent.glob(path.name + ".search/*/*") if f.is_file())


# ---------------------------------------------------------------------------------------------
# reading an index
# ---------------------------------------------------------------------------------------------


@dataclass
class PassageRecord:
    """A passage as stored, with its document: ``document_text[start:end] == text``."""

    passage_id: int
    document: str
    title: str
    start: int
    end: int
    text: str
    metadata: dict = field(default_factory=dict)
    document_id: int | None = None  # the documents row: ``Index.document(document_id)``, GET /v1/documents/{id}


@dataclass
class DocumentRecord:
    """A stored document: the text every offset points into, and (a PDF's) pages as (start, end) spans
    of it, ``text[start:end]`` being page ``i + 1``'s text; ``pages`` is None for other files."""

    id: int
    name: str
    title: str
    text: str
    metadata: dict = field(default_factory=dict)
    pages: list[tuple[int, int]] | None = None

    def to_dict(self) -> dict:
        pages = None if self.pages is None else [{"page": i, "start": a, "end": b}
                                                 for i, (a, b) in enumerate(self.pages, 1)]
        return {"id": self.id, "name": self.name, "title": self.title, "text": self.text,
                "metadata": self.metadata, "pages": pages}

    def __getitem__(self, key: str):
        """``record["text"]``: the record read as its ``to_dict()`` (the JSON of GET /v1/documents/{id})."""
        return self.to_dict()[key]

    def keys(self):
        return self.to_dict().keys()


class Index:
    """A read handle on an index (safe to share between threads: calls are serialised).

    Opening checks it: its format, its engine files' sizes and, when ``verify`` (by default for an
    index under ``CHECK_BYTES``; ``serve`` always), SQLite's pages and the engine files' checksums;
    any damage is one SquadkitError naming the file and the fix. An engine log left by a crash is
    replayed here (module docstring). A re-index by another process is picked up by the next query.
    """

    def __init__(self, path: str | os.PathLike, verify: bool | None = None) -> None:
        import threading

        self.path = Path(path)
        self.lock = threading.RLock()
        self.conn = connect(self.path)
        try:
            self.meta = read_meta(self.conn, self.path)
            self.verify = _size(self.path) <= CHECK_BYTES if verify is None else verify
            if self.verify:
                check_pages(self.conn, self.path)
            self._open_engine()
        except BaseException:
            self.conn.close()
            raise

    def _open_engine(self) -> None:
        if self.rows("SELECT count(*) FROM bm25_pending")[0][0]:
            repair_engine(self.path)
            self.meta = read_meta(self.conn, self.path)
        self.engine_dir = engine.search_folder(self.path) / self.meta["bm25_dir"]
        pending = self.rows("SELECT count(*) FROM bm25_pending")[0][0]  # a writer is between its commits
        engine.verify_files(self.engine_dir, None if pending else self.meta.get("bm25_files"), self.verify)
        self.engine = engine.open_engine(self.engine_dir)
        self.searcher = engine.guarded(self.engine_dir, self.engine.searcher)
        self.generation = self.meta.get("generation")

    def refresh(self) -> None:
        """Follow a re-index committed since this handle was opened (one small query when there is none)."""
        with self.lock:
            generation = self.rows("SELECT value FROM meta WHERE key = 'generation'")
            if generation and generation[0][0] != self.generation:
                self.meta = read_meta(self.conn, self.path)
                self._open_engine()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """``sql``'s rows; a SQLite failure (a damaged page met late) is the one-line ``damaged`` error."""
        with self.lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise unreadable(self.path, exc) from None

    def close(self) -> None:
        """Close SQLite and let go of the engine (its files are memory-mapped until then)."""
        self.conn.close()
        self.engine = self.searcher = None

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def settings(self) -> IndexSettings:
        return IndexSettings(**json.loads(self.meta["settings"]))

    def counts(self) -> dict[str, int]:
        docs = self.rows("SELECT count(*) FROM documents")[0][0]
        passages = self.rows("SELECT count(*) FROM passages")[0][0]
        embedded = self.rows("SELECT count(*) FROM embeddings")[0][0]
        return {"documents": docs, "passages": passages, "embedded": embedded}

    def passages(self, ids: Sequence[int]) -> dict[int, PassageRecord]:
        """The passages with these ids (text cut from the stored document text)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.rows(f"SELECT p.id, d.name, d.title, p.start, p.\"end\", {PASSAGE_TEXT}, "
                         f"d.metadata, d.id FROM passages p JOIN documents d ON d.id = p.doc_id WHERE p.id IN ({marks})",
                         [int(i) for i in ids])
        return {r[0]: PassageRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]) if r[6] else {}, r[7])
                for r in rows}

    def document_text(self, name: str) -> str:
        rows = self.rows("SELECT text FROM documents WHERE name = ?", (name,))
        if not rows:
            raise SquadkitError(f"{self.path}: no document named {name!r}")
        return rows[0][0]

    def document(self, ref: int | str) -> DocumentRecord:
        """The stored document with this id (an int: a hit's ``document_id``) or name (a str: a hit's
        ``document``); a SquadkitError naming it when there is none. Ids are the index's own: a
        re-indexed file's documents get new ones, names stay."""
        column = "id" if isinstance(ref, int) and not isinstance(ref, bool) else "name"
        found = self.rows(f"SELECT id, name, title, text, metadata FROM documents WHERE {column} = ?", (ref,))
        if not found:
            raise SquadkitError(f"{self.path}: no document with {column} {ref!r}")
        row = found[0]
        metadata = json.loads(row[4]) if row[4] else {}
        pages = None
        if page_at(metadata, 0) is not None:
            from .filetypes import page_spans

            pages = page_spans(metadata["pages"], len(row[3]))
        return DocumentRecord(row[0], row[1], row[2], row[3], metadata, pages)

    def embeddings(self, ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(passage ids, float32 matrix) of the stored embeddings (those of ``ids``, or all), in passage-id order."""
        if ids is None:
            rows = self.rows("SELECT passage_id, vector FROM embeddings ORDER BY passage_id")
        else:
            marks = ",".join("?" * len(ids))
            rows = self.rows(f"SELECT passage_id, vector FROM embeddings WHERE passage_id IN ({marks}) "
                             "ORDER BY passage_id", [int(i) for i in ids])
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids_out = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.stack([np.frombuffer(r[1], dtype=np.float16) for r in rows]).astype(np.float32)
        return ids_out, matrix

    # -- the keyword engine ------------------------------------------------------------------

    def bm25(self, terms: Sequence[str], k: int) -> list[tuple[int, float]]:
        """The ``k`` best (passage id, BM25 score) for an OR of the analyzed ``terms``, best first."""
        if not terms:
            return []
        self.refresh()
        with self.lock:
            query = engine.term_query(self.engine, terms)
            searcher = self.searcher
            hits = engine.guarded(self.engine_dir, lambda: searcher.search(query, k, count=False).hits)
            pids = engine.guarded(self.engine_dir, lambda: searcher.fast_field_values("pid", [a for _, a in hits]))
        return [(int(pid), float(score)) for (score, _), pid in zip(hits, pids)]

    def doc_freqs(self, terms: Iterable[str]) -> tuple[int, dict[str, int]]:
        """(passages in the engine, how many hold each analyzed term): BM25's IDF inputs."""
        with self.lock:
            searcher = self.searcher
            n = engine.guarded(self.engine_dir, lambda: searcher.num_docs)
            df = {t: engine.guarded(self.engine_dir, lambda t=t: searcher.doc_freq("text", t)) for t in terms}
        return n, df


def repair_engine(path: str | os.PathLike) -> bool:
    """Replay the engine log a crash left (module docstring); False when a writer holds the index now
    (it replays the log itself) or it was already replayed."""
    conn = connect(path, timeout=0.1)
    try:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False  # an index run holds it: its own commit replays the log
        try:
            meta = read_meta(conn, path)
            pending = [r[0] for r in conn.execute("SELECT doc_id FROM bm25_pending")]
            if not pending:
                return False
            folder = engine.search_folder(path) / meta["bm25_dir"]
            index = engine.open_engine(folder)
            writer = engine.guarded(folder, lambda: index.writer(engine.WRITER_HEAP, 1))
            _replay(conn, writer, pending)
            sums = _commit_engine(folder, writer)
            conn.execute("DELETE FROM bm25_pending")
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('bm25_files', ?)", (json.dumps(sums),))
            conn.execute("COMMIT")
            return True
        except BaseException:
            conn.rollback()
            raise
    finally:
        conn.close()


def _replay(conn: sqlite3.Connection, writer: Any, doc_ids: Iterable[int]) -> None:
    """Make the engine hold exactly SQLite's passages of these documents (delete, then add those that exist)."""
    for doc_id in doc_ids:
        engine.delete_doc(writer, doc_id)
        for pid, text in conn.execute(f"SELECT p.id, {PASSAGE_TEXT} FROM passages p JOIN documents d "
                                      "ON d.id = p.doc_id WHERE d.id = ?", (doc_id,)):
            writer.add_document(engine.passage_doc(pid, doc_id, text))


def _commit_engine(folder: Path, writer: Any) -> dict[str, list[int]]:
    """Commit the engine writer, let its merges finish, drop unused files; the files' sizes and CRCs."""
    def run() -> None:
        writer.commit()
        writer.wait_merging_threads()  # merges publish their own commits: wait, so the files stay as recorded

    engine.guarded(folder, run)
    engine.guarded(folder, lambda: engine.open_engine(folder).writer(16 * 2**20, 1).garbage_collect_files())
    return engine.file_sums(folder)


