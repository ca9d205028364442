"""The index: one SQLite file holding documents, passages (as offsets), a BM25 full-text index
(FTS5) and, optionally, passage embeddings for dense retrieval.

Why it is built this way:

* **One file, standard library only.** SQLite ships with Python and its FTS5 extension ranks
  with BM25 (``bm25()``); nothing to install, no server, and the file can be copied anywhere.
* **Atomic updates by SQLite's own commit.** A whole ``index`` run is one transaction: readers see
  the index before the run or after it, never between, and a crash (kill -9, power loss) leaves a
  hot journal that SQLite rolls back on the next open. Writing a new file and renaming it would
  give the same guarantee, but would copy the whole index for every incremental update; the
  transaction costs only the changed pages. The ``meta`` table's ``format`` and ``complete``
  rows are written in that same transaction, so a file without them (an empty file left by a
  crash on the very first run, or someone else's database) is never taken for an index.
* **Incremental.** Every file's size, mtime and sha256 are kept; an unchanged file is not even
  read again, a touched but identical one is recognised by its hash, and only the documents of
  changed or removed files are deleted and re-added.
* **Offsets, not copies.** A passage is ``(document, start, end)`` into the stored document text;
  the full-text table is contentless (``content=''``) and fed the passage text, so the text is
  stored once. Deleting from a contentless table needs the old text, which the documents have.
* **Bounded memory.** Documents stream in one at a time; FTS5 flushes its pending terms to disk
  every megabyte or so, and SQLite's page cache is capped.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import SquadkitError
from .documents import (
    Document,
    SkipFile,
    file_fingerprint,
    iter_files,
    page_at,
    read_documents,
    regex_token_count,
    regex_token_offsets,
    split_passages,
    whole_text_passage,
    tokenizer_offsets_fn,
)

INDEX_FORMAT = 1  # bump when the schema changes; an index with a larger number is refused
FTS_TOKENIZE = "porter unicode61 remove_diacritics 2"
DEFAULT_MAX_TOKENS = 256
DEFAULT_OVERLAP = 32

PASSAGE_TEXT = 'substr(d.text, p.start + 1, p."end" - p.start)'  # a passage's text, cut from its document (p, d)

SCHEMA = f"""
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
CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(text, content='', tokenize='{FTS_TOKENIZE}');
CREATE TABLE IF NOT EXISTS embeddings(passage_id INTEGER PRIMARY KEY, vector BLOB NOT NULL);
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

    def validate(self) -> "IndexSettings":
        if not isinstance(self.max_tokens, int) or self.max_tokens < 8:
            raise SquadkitError(f"max_tokens must be an integer >= 8, got {self.max_tokens!r}")
        if not isinstance(self.overlap, int) or not 0 <= self.overlap < self.max_tokens // 2:
            raise SquadkitError(f"overlap must be >= 0 and below half of max_tokens ({self.max_tokens}), got {self.overlap!r}")
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


def connect(path: str | os.PathLike, create: bool = False) -> sqlite3.Connection:
    """A connection to the index file; a missing file is a SquadkitError unless ``create``."""
    path = Path(path)
    if path.is_dir():
        raise SquadkitError(f"{path}: is a folder, not an index file")
    if not create and not path.exists():
        raise SquadkitError(f"{path}: index not found (build it with: squadkit index PATH... --output {path})")
    try:
        uri = f"file:{path.resolve()}?mode={'rwc' if create else 'rw'}"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30.0)
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB at most
    except sqlite3.DatabaseError as exc:
        raise SquadkitError(f"{path}: not a squadkit index ({exc})") from None
    except sqlite3.Error as exc:
        raise SquadkitError(f"{path}: cannot open index: {exc}") from None
    return conn


def read_meta(conn: sqlite3.Connection, path: str | os.PathLike) -> dict[str, str]:
    """The index's meta rows, after checking that it is a complete index of a format this version reads."""
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table')")}
    except sqlite3.DatabaseError as exc:
        raise SquadkitError(f"{path}: not a squadkit index ({exc})") from None
    if "meta" not in tables:
        raise SquadkitError(f"{path}: not a squadkit index, or one whose first build never finished (no meta table)")
    meta = dict(conn.execute("SELECT key, value FROM meta"))
    try:
        fmt = int(meta.get("format", "0"))
    except ValueError:
        fmt = 0
    if fmt > INDEX_FORMAT:
        raise SquadkitError(f"{path}: index format {fmt} was written by a newer squadkit "
                            f"({meta.get('squadkit_version', '?')}); this one reads format {INDEX_FORMAT}")
    if fmt < 1 or meta.get("complete") != "1":
        raise SquadkitError(f"{path}: incomplete squadkit index (no finished build recorded); rebuild it")
    return meta


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


class Index:
    """A read handle on an index file (safe to share between threads: calls are serialised)."""

    def __init__(self, path: str | os.PathLike) -> None:
        import threading

        self.path = Path(path)
        self.conn = connect(self.path)
        self.meta = read_meta(self.conn, self.path)
        self.lock = threading.RLock()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def settings(self) -> IndexSettings:
        return IndexSettings(**json.loads(self.meta["settings"]))

    def counts(self) -> dict[str, int]:
        with self.lock:
            docs = self.conn.execute("SELECT count(*) FROM documents").fetchone()[0]
            passages = self.conn.execute("SELECT count(*) FROM passages").fetchone()[0]
            embedded = self.conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
        return {"documents": docs, "passages": passages, "embedded": embedded}

    def passages(self, ids: Sequence[int]) -> dict[int, PassageRecord]:
        """The passages with these ids (text cut from the stored document text)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self.lock:
            rows = self.conn.execute(
                f"SELECT p.id, d.name, d.title, p.start, p.\"end\", {PASSAGE_TEXT}, "
                f"d.metadata, d.id FROM passages p JOIN documents d ON d.id = p.doc_id WHERE p.id IN ({marks})",
                [int(i) for i in ids]).fetchall()
        return {r[0]: PassageRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]) if r[6] else {}, r[7])
                for r in rows}

    def document_text(self, name: str) -> str:
        with self.lock:
            row = self.conn.execute("SELECT text FROM documents WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise SquadkitError(f"{self.path}: no document named {name!r}")
        return row[0]

    def document(self, ref: int | str) -> DocumentRecord:
        """The stored document with this id (an int: a hit's ``document_id``) or name (a str: a hit's
        ``document``); a SquadkitError naming it when there is none. Ids are the index's own: a
        re-indexed file's documents get new ones, names stay."""
        column = "id" if isinstance(ref, int) and not isinstance(ref, bool) else "name"
        with self.lock:
            row = self.conn.execute(f"SELECT id, name, title, text, metadata FROM documents WHERE {column} = ?",
                                    (ref,)).fetchone()
        if row is None:
            raise SquadkitError(f"{self.path}: no document with {column} {ref!r}")
        metadata = json.loads(row[4]) if row[4] else {}
        pages = None
        if page_at(metadata, 0) is not None:
            from .filetypes import page_spans

            pages = page_spans(metadata["pages"], len(row[3]))
        return DocumentRecord(row[0], row[1], row[2], row[3], metadata, pages)

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(passage ids, float32 matrix) of the stored embeddings, in passage-id order."""
        with self.lock:
            rows = self.conn.execute("SELECT passage_id, vector FROM embeddings ORDER BY passage_id").fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.stack([np.frombuffer(r[1], dtype=np.float16) for r in rows]).astype(np.float32)
        return ids, matrix


# ---------------------------------------------------------------------------------------------
# writing an index
# ---------------------------------------------------------------------------------------------


class IndexWriter:
    """Adds and removes documents inside one transaction (see the module docstring).

    Use as a context manager: leaving it normally commits (with the ``complete`` marker), an
    exception rolls everything back, and a crash leaves the journal SQLite rolls back on open.
    """

    def __init__(self, path: str | os.PathLike, settings: IndexSettings | dict | None = None,
                 embedder: Any = None, rebuild: bool = False) -> None:
        """``settings``: IndexSettings to use, a dict of overrides of the index's own, or None (keep them)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = connect(self.path, create=True)
        self.embedder = embedder
        self._embed_queue: list[tuple[int, str]] = []
        try:
            self.conn.execute("BEGIN IMMEDIATE")  # one writer; readers keep the last committed index
        except sqlite3.OperationalError as exc:
            self.conn.close()
            raise SquadkitError(f"{self.path}: cannot write the index ({exc}); is another squadkit index running?") from None
        try:
            self._open(settings, rebuild)
        except BaseException:
            self.conn.rollback()
            self.conn.close()
            raise

    def _open(self, settings: IndexSettings | None, rebuild: bool) -> None:
        tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        existing: dict[str, str] = {}
        if "meta" in tables:
            existing = read_meta(self.conn, self.path)
        elif tables:
            raise SquadkitError(f"{self.path}: exists and is not a squadkit index; choose another --output")
        if rebuild and existing:
            for table in ("passages_fts", "embeddings", "passages", "documents", "files", "meta"):
                self.conn.execute(f"DROP TABLE IF EXISTS {table}")
            existing = {}
        # statements one by one: executescript() would commit the transaction
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self.conn.execute(statement)
        old_settings = IndexSettings(**json.loads(existing["settings"])) if "settings" in existing else None
        if isinstance(settings, dict):  # overrides of the index's own settings (flags given on a re-run)
            base = old_settings or IndexSettings()
            settings = IndexSettings(**{**base.__dict__, **{k: v for k, v in settings.items() if v is not None}})
        self.settings = (settings or old_settings or IndexSettings()).validate()
        self.resplit = old_settings is not None and old_settings.key() != self.settings.key()
        old_embedder = existing.get("embedder")
        new_embedder = getattr(self.embedder, "name", None)
        if self.embedder is None and old_embedder:
            raise SquadkitError(f"{self.path}: the index holds embeddings by {old_embedder}: pass --dense "
                                "(with that --embedder) to keep them current, or --rebuild")
        if self.embedder is not None and old_embedder and old_embedder != new_embedder:
            raise SquadkitError(f"{self.path}: the index holds embeddings by {old_embedder}, not {new_embedder}; "
                                "use --rebuild to change the embedder")
        self.embed_missing = self.embedder is not None and not old_embedder
        self._offsets = (tokenizer_offsets_fn(_load_tokenizer(self.settings.tokenizer))
                         if self.settings.tokenizer else regex_token_offsets)

    # -- documents --------------------------------------------------------------------------

    def add_document(self, doc: Document, file_id: int | None = None) -> int:
        """Store one document and its passages; returns how many passages (0: an empty document)."""
        if self._offsets is regex_token_offsets and regex_token_count(doc.text) <= self.settings.max_tokens:
            passages = whole_text_passage(doc.text)  # the common short document: no offsets needed
        else:
            passages = split_passages(doc.text, self._offsets(doc.text), self.settings.max_tokens, self.settings.overlap)
        if not passages:
            return 0
        cur = self.conn.execute(
            "INSERT INTO documents(file_id, name, title, text, metadata) VALUES (?, ?, ?, ?, ?)",
            (file_id, doc.name, doc.title, doc.text, json.dumps(doc.metadata, ensure_ascii=False) if doc.metadata else None))
        doc_id = cur.lastrowid
        for p in passages:
            pid = self.conn.execute('INSERT INTO passages(doc_id, start, "end") VALUES (?, ?, ?)',
                                    (doc_id, p.start, p.end)).lastrowid
            text = doc.text[p.start : p.end]
            self.conn.execute("INSERT INTO passages_fts(rowid, text) VALUES (?, ?)", (pid, text))
            if self.embedder is not None:
                self._embed_queue.append((pid, text))
        if len(self._embed_queue) >= 256:
            self._flush_embeddings()
        return len(passages)

    def add_documents(self, docs: Iterable[Document], report: "IndexReport", file_id: int | None = None) -> None:
        """``add_document`` for each, counted in ``report`` (an empty document is named there)."""
        for doc in docs:
            n = self.add_document(doc, file_id)
            if n:
                report.documents_added += 1
                report.passages_added += n
            else:
                report.empty_documents.append(doc.name)

    def count_totals(self, report: "IndexReport") -> None:
        """The index's documents and passages after this run, into ``report``."""
        report.documents = self.conn.execute("SELECT count(*) FROM documents").fetchone()[0]
        report.passages = self.conn.execute("SELECT count(*) FROM passages").fetchone()[0]

    def _flush_embeddings(self) -> None:
        if not self._embed_queue:
            return
        ids = [i for i, _ in self._embed_queue]
        vectors = self.embedder.embed([t for _, t in self._embed_queue]).astype(np.float16)
        self.conn.executemany("INSERT OR REPLACE INTO embeddings(passage_id, vector) VALUES (?, ?)",
                              [(i, v.tobytes()) for i, v in zip(ids, vectors)])
        self._embed_queue.clear()

    def remove_documents(self, where: str, params: Sequence[Any]) -> None:
        """Delete documents (and their passages, full-text rows and embeddings) matching ``where``."""
        rows = self.conn.execute(
            f"SELECT p.id, {PASSAGE_TEXT} FROM passages p "
            f"JOIN documents d ON d.id = p.doc_id WHERE d.id IN (SELECT id FROM documents WHERE {where})", params)
        for pid, text in rows.fetchall():
            self.conn.execute("INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', ?, ?)", (pid, text))
            self.conn.execute("DELETE FROM embeddings WHERE passage_id = ?", (pid,))
        self.conn.execute(f"DELETE FROM passages WHERE doc_id IN (SELECT id FROM documents WHERE {where})", params)
        self.conn.execute(f"DELETE FROM documents WHERE {where}", params)

    def embed_all_missing(self) -> None:
        """Embed passages that have no embedding yet (an index built before --dense was asked for)."""
        rows = self.conn.execute(
            f"SELECT p.id, {PASSAGE_TEXT} FROM passages p JOIN documents d "
            "ON d.id = p.doc_id WHERE p.id NOT IN (SELECT passage_id FROM embeddings)")
        while True:
            batch = rows.fetchmany(256)
            if not batch:
                break
            self._embed_queue.extend(batch)
            self._flush_embeddings()

    # -- transaction --------------------------------------------------------------------------

    def commit(self) -> None:
        from .. import __version__

        self._flush_embeddings()
        if self.embed_missing:
            self.embed_all_missing()
        meta = {"format": str(INDEX_FORMAT), "squadkit_version": __version__, "settings": self.settings.key(),
                "complete": "1", "updated": str(time.time())}
        if self.embedder is not None:
            meta["embedder"] = self.embedder.name
            meta["embedding_dim"] = str(self.embedder.dim)
        self.conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", list(meta.items()))
        self.conn.execute("INSERT INTO passages_fts(passages_fts) VALUES ('optimize')")  # one segment: faster queries
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self.commit()
            else:
                self.conn.rollback()
        finally:
            self.close()


def _load_tokenizer(name: str):
    """The reader's tokenizer (a model or tokenizer folder, or a hub id), for passage lengths: loaded
    as every model folder is (a missing path or an unreachable hub fails at once, in one line)."""
    from ..checkpoint import load_tokenizer

    return load_tokenizer(name)


def build_index(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    settings: IndexSettings | dict | None = None,
    embedder: Any = None,
    rebuild: bool = False,
    progress: Callable[[str], None] | None = None,
) -> IndexReport:
    """Index files and folders into ``output`` (created, or updated incrementally); one transaction.

    Raises SquadkitError when no file under ``paths`` is indexable (and leaves the index as it was).
    """
    start_time = time.perf_counter()
    report = IndexReport(index=str(output))
    files = list(iter_files(paths))  # paths only; a missing path fails here, before anything is written
    roots = sorted({str(root) for _, root in files} | {str(Path(p).resolve()) for p in paths})
    with IndexWriter(output, settings, embedder=embedder, rebuild=rebuild) as writer:
        conn = writer.conn
        seen: set[str] = set()
        indexable = 0
        for path, root in files:
            key = str(path)
            seen.add(key)
            name = _display_name(path)
            try:
                stat = path.stat()
            except OSError as exc:
                report.skipped.append((name, f"unreadable: {exc.strerror or exc}"))
                continue
            row = conn.execute("SELECT id, size, mtime_ns, sha256 FROM files WHERE path = ?", (key,)).fetchone()
            if row is not None and not writer.resplit and row[1] == stat.st_size and row[2] == stat.st_mtime_ns:
                report.files_unchanged += 1
                indexable += 1
                continue
            try:
                digest = file_fingerprint(path)
            except OSError as exc:
                report.skipped.append((name, f"unreadable: {exc.strerror or exc}"))
                continue
            if row is not None and not writer.resplit and row[3] == digest:
                conn.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?", (stat.st_size, stat.st_mtime_ns, row[0]))
                report.files_unchanged += 1
                indexable += 1
                continue
            try:
                docs = list(read_documents(path, name))
            except SkipFile as exc:
                report.skipped.append((name, str(exc)))
                if row is not None:  # it was indexable before: its old documents go
                    writer.remove_documents("file_id = ?", (row[0],))
                    conn.execute("DELETE FROM files WHERE id = ?", (row[0],))
                continue
            if row is not None:
                writer.remove_documents("file_id = ?", (row[0],))
                conn.execute("UPDATE files SET size = ?, mtime_ns = ?, sha256 = ?, name = ? WHERE id = ?",
                             (stat.st_size, stat.st_mtime_ns, digest, name, row[0]))
                file_id = row[0]
                report.files_updated += 1
            else:
                file_id = conn.execute("INSERT INTO files(path, name, size, mtime_ns, sha256) VALUES (?, ?, ?, ?, ?)",
                                       (key, name, stat.st_size, stat.st_mtime_ns, digest)).lastrowid
                report.files_added += 1
            indexable += 1
            writer.add_documents(docs, report, file_id)
            if progress is not None:
                progress(name)
        # files indexed before under these roots that are gone now
        for fid, fpath in conn.execute("SELECT id, path FROM files").fetchall():
            if fpath not in seen and any(fpath == r or fpath.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
                writer.remove_documents("file_id = ?", (fid,))
                conn.execute("DELETE FROM files WHERE id = ?", (fid,))
                report.files_removed += 1
        if indexable == 0:
            what = "; ".join(f"{f}: {r}" for f, r in report.skipped[:3]) or "no files found"
            raise SquadkitError(f"nothing to index under {', '.join(map(str, paths))} ({what})")
        writer.count_totals(report)
        if report.passages == 0:
            raise SquadkitError(f"nothing to index under {', '.join(map(str, paths))}: every document is empty")
    with Index(output) as idx:
        report.embedded = idx.counts()["embedded"]
    report.seconds = time.perf_counter() - start_time
    return report


def _display_name(path: Path) -> str:
    """How a file is named in answers: relative to the current folder when inside it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def index_documents(documents: Iterable[Document], output: str | os.PathLike, settings: IndexSettings | None = None,
                    embedder: Any = None, rebuild: bool = False) -> IndexReport:
    """Index documents given in Python (not read from files), in one transaction; for generated collections."""
    start_time = time.perf_counter()
    report = IndexReport(index=str(output))
    with IndexWriter(output, settings, embedder=embedder, rebuild=rebuild) as writer:
        writer.add_documents(documents, report)
        writer.count_totals(report)
        if report.passages == 0:
            raise SquadkitError("nothing to index: every document is empty")
    report.seconds = time.perf_counter() - start_time
    return report
