"""The index: a SQLite file holding documents, passages (as offsets), the settings and,
optionally, passage embeddings; beside it a folder (``INDEX.search/``) with the keyword engine
(Tantivy, see ``engine``) and, for large ``--dense`` collections, an approximate nearest-neighbour
index (see ``ann``).

Why it is built this way:

* **SQLite keeps what must be exact and transactional.** Document texts, the file table and the
  passages' offsets are rows; a whole ``index`` run is one SQLite transaction: readers see the index
  before the run or after it, and a crash (kill -9, power loss) leaves a hot journal that SQLite
  rolls back on the next open. The ``meta`` table's ``format`` and ``complete`` rows are written in
  that same transaction, so a file without them is never taken for an index.
* **The engine follows SQLite, and a crash between the two commits is repaired.** A full build
  (the first, ``--rebuild``, an old FTS5 index moved over) writes a new engine folder and commits it
  before the SQLite transaction that names it (``meta.bm25_dir``): a crash before that commit leaves
  the old folder named, intact. An incremental run changes the named folder, so it logs every
  document it adds or removes in ``bm25_pending`` inside its SQLite transaction, commits SQLite, then
  the engine, then clears the log. A crash between them leaves the log, and the next opening (reader
  or writer) replays it (delete the document's passages from the engine, add them again from SQLite
  if the document still exists: idempotent). The engine's files' sizes and CRC-32s are recorded after
  each commit and checked on open, so a damaged file is named with the fix (``--rebuild``).
* **Incremental.** Every file's size, mtime and sha256 are kept; an unchanged file is not even
  read again, a touched but identical one is recognised by its hash, and only the documents of
  changed or removed files are deleted and re-added.
* **Offsets, not copies.** A passage is ``(document, start, end)`` into the stored document text;
  the engine indexes the passage text without storing it.
* **Bounded memory.** Documents stream in one at a time; Tantivy writes a segment every
  ``engine.WRITER_HEAP`` bytes of buffered postings, and SQLite's page cache is capped.
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

from ..errors import SquadkitError, first_line
from . import ann, debris, engine
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


# ---------------------------------------------------------------------------------------------
# writing an index
# ---------------------------------------------------------------------------------------------


class IndexWriter:
    """Adds and removes documents inside one transaction (see the module docstring).

    Use as a context manager: leaving it normally commits (SQLite and the engine, in the order the
    module docstring gives), an exception rolls everything back, and a crash leaves what the next
    opening rolls back or replays.
    """

    def __init__(self, path: str | os.PathLike, settings: IndexSettings | dict | None = None,
                 embedder: Any = None, rebuild: bool = False, dense: bool | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        """``settings``: IndexSettings to use, a dict of overrides of the index's own, or None (keep them).
        ``embedder``: the sentence embedder; None keeps the index's own (``dense=False`` drops them).
        ``progress``: called with the number of passages each time some are added."""
        self.path = Path(path)
        self.created_dirs = debris.missing_parents(self.path)  # a failed first build removes them again
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if rebuild:
            _remove_if_damaged(self.path)
        self.embedder = embedder
        self.progress = progress
        self._embed_queue: list[tuple[int, str]] = []
        self.embedded_pids: list[int] = []  # this run's, for updating the graph rather than building it again
        self.removed_pids: list[int] = []
        self.tw: Any = None
        self.first_build = self.committed = False
        self.conn = self._begin()
        try:
            self._open(settings, rebuild, dense)
        except BaseException:
            self._abort()
            raise

    def _begin(self) -> sqlite3.Connection:
        """A connection holding the write lock (one writer; readers keep the last committed index), on
        the file still at the path: a failed first build of another writer removes its file while
        holding the lock (``debris``), and then this one starts again on a new file."""
        for _ in range(5):
            conn = connect(self.path, create=True)
            inode = None
            try:
                inode = debris.file_id(self.path)
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                conn.close()
                if inode is not None and not debris.same_file(self.path, inode):
                    continue  # SQLite saw its file removed while it waited: again, on the new one
                raise SquadkitError(f"{self.path}: cannot write the index ({exc}); "
                                    "is another squadkit index running?") from None
            except sqlite3.DatabaseError as exc:
                conn.close()
                raise unreadable(self.path, exc) from None
            except OSError:  # removed between the open and the lock: again
                conn.close()
                continue
            if debris.same_file(self.path, inode):
                return conn
            conn.rollback()
            conn.close()
        raise SquadkitError(f"{self.path}: cannot write the index (the file keeps being replaced); "
                            "is another squadkit index running?")

    def _open(self, settings: IndexSettings | dict | None, rebuild: bool, dense: bool | None) -> None:
        try:
            tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise unreadable(self.path, exc) from None
        self.first_build = not tables  # a failure removes the file again (``debris``)
        existing: dict[str, str] = {}
        if "meta" in tables:
            existing = read_meta(self.conn, self.path, writing=True, rebuilding=rebuild)
        elif tables:
            raise SquadkitError(f"{self.path}: exists and is not a squadkit index; choose another --output")
        if rebuild and "meta" in tables:
            for table in ("passages_fts", "embeddings", "passages", "documents", "files", "meta", "bm25_pending"):
                self.conn.execute(f"DROP TABLE IF EXISTS {table}")
            existing = {}
        for statement in SCHEMA.split(";"):  # one by one: executescript() would commit the transaction
            if statement.strip():
                self.conn.execute(statement)
        old_settings = IndexSettings(**json.loads(existing["settings"])) if "settings" in existing else None
        if isinstance(settings, dict):  # overrides of the index's own settings (flags given on a re-run)
            base = old_settings or IndexSettings()
            settings = IndexSettings(**{**base.__dict__, **{k: v for k, v in settings.items() if v is not None}})
        self.settings = (settings or old_settings or IndexSettings()).validate()
        self.resplit = old_settings is not None and old_settings.key() != self.settings.key()
        self._open_embedder(existing.get("embedder"), dense)
        self._offsets = (tokenizer_offsets_fn(_load_tokenizer(self.settings.tokenizer))
                         if self.settings.tokenizer else regex_token_offsets)
        self.generation = int(existing.get("generation", "0")) + 1
        self._open_engine(existing)

    def _open_embedder(self, old_embedder: str | None, dense: bool | None) -> None:
        """The embedder of this run: the one given, else the index's own (as ``index --help`` promises),
        none with ``dense=False`` (the stored embeddings go)."""
        if dense is False:
            if self.embedder is not None:
                raise SquadkitError("--no-dense and --embedder contradict each other")
            self.conn.execute("DELETE FROM embeddings")
            self.conn.execute("DELETE FROM meta WHERE key IN ('embedder', 'embedding_dim', 'ann_file')")
            old_embedder = None
        elif self.embedder is None and old_embedder:
            from .embedder import SentenceEmbedder

            self.embedder = SentenceEmbedder(old_embedder)
        new_embedder = getattr(self.embedder, "name", None)
        if self.embedder is not None and old_embedder and old_embedder != new_embedder:
            raise SquadkitError(f"{self.path}: the index holds embeddings by {old_embedder}, not {new_embedder}; "
                                "use --rebuild to change the embedder")
        self.embed_missing = self.embedder is not None and not old_embedder
        self.embeddings_changed = self.embed_missing or dense is False

    def _open_engine(self, existing: dict[str, str]) -> None:
        """A new engine folder for a full build (the first, --rebuild, or an FTS5 index moved over),
        else the index's own, with any log a crash left replayed into this run."""
        self.fresh = existing.get("format", "0") != str(INDEX_FORMAT) or "bm25_dir" not in existing
        if self.fresh:
            self.engine_dir = engine.new_engine_dir(self.path)
            self.engine = engine.open_engine(self.engine_dir, create=True)
        else:
            self.engine_dir = engine.search_folder(self.path) / existing["bm25_dir"]
            pending = [r[0] for r in self.conn.execute("SELECT doc_id FROM bm25_pending")]
            engine.verify_files(self.engine_dir, None if pending else existing.get("bm25_files"),
                                _size(self.path) <= CHECK_BYTES)
            self.engine = engine.open_engine(self.engine_dir)
        self.tw = engine.guarded(self.engine_dir, lambda: self.engine.writer(engine.WRITER_HEAP, 1))
        self.changed = False
        if self.fresh and existing:  # an FTS5 index: its passages feed the new engine, its FTS5 table goes
            self.conn.execute("DROP TABLE IF EXISTS passages_fts")
            _replay(self.conn, self.tw, [r[0] for r in self.conn.execute("SELECT id FROM documents")])
            self.changed = True
        elif not self.fresh:
            pending = [r[0] for r in self.conn.execute("SELECT doc_id FROM bm25_pending")]
            _replay(self.conn, self.tw, pending)
            self.changed = bool(pending)

    def _log(self, doc_id: int) -> None:
        """Record a document changed in the engine (an incremental run's log; module docstring)."""
        self.changed = True
        if not self.fresh:
            self.conn.execute("INSERT OR IGNORE INTO bm25_pending(doc_id) VALUES (?)", (doc_id,))

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
        self._log(doc_id)
        for p in passages:
            pid = self.conn.execute('INSERT INTO passages(doc_id, start, "end") VALUES (?, ?, ?)',
                                    (doc_id, p.start, p.end)).lastrowid
            text = doc.text[p.start : p.end]
            engine.guarded(self.engine_dir, lambda: self.tw.add_document(engine.passage_doc(pid, doc_id, text)))
            if self.embedder is not None:
                self._embed_queue.append((pid, text))
        if len(self._embed_queue) >= 256:
            self._flush_embeddings()
        if self.progress is not None:
            self.progress(len(passages))
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
        self.embedded_pids.extend(ids)
        vectors = self.embedder.embed([t for _, t in self._embed_queue]).astype(np.float16)
        self.conn.executemany("INSERT OR REPLACE INTO embeddings(passage_id, vector) VALUES (?, ?)",
                              [(i, v.tobytes()) for i, v in zip(ids, vectors)])
        self._embed_queue.clear()
        self.embeddings_changed = True

    def remove_documents(self, where: str, params: Sequence[Any]) -> None:
        """Delete documents (and their passages, engine entries and embeddings) matching ``where``."""
        doc_ids = [r[0] for r in self.conn.execute(f"SELECT id FROM documents WHERE {where}", params)]
        for doc_id in doc_ids:
            engine.guarded(self.engine_dir, lambda: engine.delete_doc(self.tw, doc_id))
            self._log(doc_id)
            self.removed_pids.extend(r[0] for r in self.conn.execute(
                "SELECT passage_id FROM embeddings WHERE passage_id IN (SELECT id FROM passages WHERE doc_id = ?)",
                (doc_id,)))
            self.conn.execute("DELETE FROM embeddings WHERE passage_id IN (SELECT id FROM passages WHERE doc_id = ?)",
                              (doc_id,))
            self.conn.execute("DELETE FROM passages WHERE doc_id = ?", (doc_id,))
            self.conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        if doc_ids:
            self.embeddings_changed = True

    def embed_all_missing(self) -> None:
        """Embed passages that have no embedding yet (an index built before --dense was asked for)."""
        from ..progress import ProgressLines

        total = self.conn.execute("SELECT count(*) FROM passages WHERE id NOT IN "
                                  "(SELECT passage_id FROM embeddings)").fetchone()[0]
        bar = ProgressLines("index: embedding passages", total)
        rows = self.conn.execute(
            f"SELECT p.id, {PASSAGE_TEXT} FROM passages p JOIN documents d "
            "ON d.id = p.doc_id WHERE p.id NOT IN (SELECT passage_id FROM embeddings)")
        while True:
            batch = rows.fetchmany(256)
            if not batch:
                break
            self._embed_queue.extend(batch)
            self._flush_embeddings()
            bar(len(batch))
        bar.close()

    # -- transaction --------------------------------------------------------------------------

    def commit(self) -> None:
        """SQLite and the engine, in the order the module docstring gives; then stale engine files go."""
        from importlib.metadata import version

        self._flush_embeddings()
        if self.embed_missing:
            self.embed_all_missing()
        meta = {"format": str(INDEX_FORMAT), "squadkit_version": version("squadkit"), "settings": self.settings.key(),
                "complete": "1", "updated": str(time.time()), "generation": str(self.generation),
                "bm25_dir": self.engine_dir.name, "analyzer": engine.ANALYZER_RECIPE}
        if self.embedder is not None:
            meta["embedder"] = self.embedder.name
            meta["embedding_dim"] = str(self.embedder.dim)
            if self.embeddings_changed or "ann_file" not in self._meta():
                meta["ann_file"] = self._write_ann()
        tw, self.tw = self.tw, None
        if self.fresh:  # a new folder: the engine first, then the SQLite commit that names it
            meta["bm25_files"] = json.dumps(_commit_engine(self.engine_dir, tw))
            self._write_meta(meta)
            self.conn.execute("COMMIT")
            self.committed = True
        else:  # the named folder: SQLite (with the log) first, then the engine, then the log goes
            self._write_meta(meta)
            self.conn.execute("COMMIT")
            self.committed = True
            if self.changed:
                sums = _commit_engine(self.engine_dir, tw)
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.execute("DELETE FROM bm25_pending")
                self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('bm25_files', ?)", (json.dumps(sums),))
                self.conn.execute("COMMIT")
            else:
                engine.guarded(self.engine_dir, tw.rollback)
        after = self._meta()
        engine.remove_stale(self.path, {after["bm25_dir"], ann.ann_name(after.get("ann_file"))})

    def _meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta"))

    def _write_meta(self, meta: dict[str, str]) -> None:
        self.conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", list(meta.items()))

    def _write_ann(self) -> str:
        """The approximate nearest-neighbour index of all embeddings (``ann``), as a new file; '' when
        the collection is small enough for exact search."""
        previous = self._meta().get("ann_file") or None
        return ann.write_for(self.conn, self.path, self.generation, previous=previous,
                             added=self.embedded_pids, removed=self.removed_pids)

    def _abort(self) -> None:
        """Roll back; a failed full build's engine folder goes, and a failed first build's files (``debris``),
        removed while the write lock is held."""
        if self.tw is not None:
            try:
                self.tw.rollback()
            except BaseException:  # noqa: BLE001 - a damaged engine: the SQLite rollback still matters
                pass
            self.tw = None
        first = self.first_build and not self.committed
        if getattr(self, "fresh", False) and not self.committed:
            self.engine = None
            debris.remove_engine(self.engine_dir)
        if first:
            debris.remove_first_build(self.path)
        try:
            self.conn.rollback()
        except sqlite3.Error:
            if not first:  # the file is gone: nothing is left to roll back
                raise
        finally:
            self.conn.close()
            if first:
                debris.remove_rest(self.path, self.created_dirs)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()
            return
        try:
            self.commit()
        except BaseException:
            self._abort()
            raise
        self.close()


def _remove_if_damaged(path: Path) -> None:
    """``--rebuild`` over an index SQLite cannot read: remove it (and its journal), as it cannot be
    updated in place. Only where the engine folder beside it says it was an index."""
    if not path.is_file() or not engine.search_folder(path).is_dir():
        return
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            ok = conn.execute("PRAGMA quick_check(1)").fetchone()[0] == "ok"
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        ok = False
    if not ok:
        for leftover in (path, Path(str(path) + "-journal"), Path(str(path) + "-wal")):
            leftover.unlink(missing_ok=True)


def _load_tokenizer(name: str):
    """The reader's tokenizer (a model or tokenizer folder, or a hub id), for passage lengths: a local
    folder's tokenizer.json read directly (``fast_tokenizer``: no transformers import), else loaded as
    every model folder is (a missing path or an unreachable hub fails at once, in one line)."""
    from ..checkpoint import load_tokenizer
    from ..fast_tokenizer import TOKENIZER_FILE, FastTokenizer

    folder = Path(name).expanduser()
    if (folder / TOKENIZER_FILE).is_file():
        return FastTokenizer(folder)
    return load_tokenizer(name)


def build_index(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    settings: IndexSettings | dict | None = None,
    embedder: Any = None,
    rebuild: bool = False,
    progress: Callable[[str], None] | bool | None = None,
    dense: bool | None = None,
) -> IndexReport:
    """Index files and folders into ``output`` (created, or updated incrementally); one transaction.

    ``embedder`` None keeps the index's own embeddings current (``dense=False`` drops them).
    ``progress``: a callable given each file's name as it is done, or True for progress lines on
    stderr (files, passages, passages/s, ETA; a bar on a terminal).
    Raises SquadkitError when no file under ``paths`` is indexable (and leaves the index as it was).
    """
    start_time = time.perf_counter()
    report = IndexReport(index=str(output))
    files = list(iter_files(paths))  # paths only; a missing path fails here, before anything is written
    roots = sorted({str(root) for _, root in files} | {str(Path(p).resolve()) for p in paths})
    lines = IndexProgress(len(files)) if progress is True else None
    if lines is not None:
        progress = lines.file_done
    try:
        _index_files(files, roots, paths, output, settings, embedder, rebuild, dense, progress, lines, report)
    finally:
        if lines is not None:
            lines.close()
    with Index(output, verify=False) as idx:
        report.embedded = idx.counts()["embedded"]
    report.seconds = time.perf_counter() - start_time
    return report


class IndexProgress:
    """``index`` progress off a terminal as ``train``'s: files done of all, passages, passages/s, ETA."""

    every_s = 5.0  # seconds between lines

    def __init__(self, files: int) -> None:
        from ..progress import ProgressLines

        self.lines = ProgressLines("index: files", files, every_s=self.every_s)
        self.passages = 0
        self.lines._line = self._line  # the same cadence, with passages in the line

    def passages_added(self, n: int) -> None:
        self.passages += n

    def file_done(self, name: str) -> None:
        self.lines(1)

    def _line(self, now: float) -> None:
        lines = self.lines
        elapsed = max(now - lines.t0, 1e-9)
        rate = lines.done / elapsed
        eta = (lines.total - lines.done) / rate if rate > 0 else float("nan")
        print(f"index: {lines.done}/{lines.total} files ({100 * lines.done / max(lines.total, 1):.0f}%), "
              f"{self.passages:,} passages, {self.passages / elapsed:,.0f} passages/s, ETA {eta:.0f} s",
              file=lines.stream, flush=True)

    def close(self) -> None:
        self.lines.close()


def _index_files(files: list[tuple[Path, Path]], roots: list[str], paths: Sequence[str | os.PathLike],
                 output: str | os.PathLike, settings: IndexSettings | dict | None, embedder: Any, rebuild: bool,
                 dense: bool | None, progress: Callable[[str], None] | None, lines: "IndexProgress | None",
                 report: IndexReport) -> None:
    """``build_index``'s transaction: each file added, updated, kept or removed (see build_index)."""
    with IndexWriter(output, settings, embedder=embedder, rebuild=rebuild, dense=dense,
                     progress=lines.passages_added if lines is not None else None) as writer:
        seen: set[str] = set()
        indexable = 0
        for path, _root in files:
            seen.add(str(path))
            name = _display_name(path)
            if _index_file(writer, path, name, report):
                indexable += 1
                if progress is not None:
                    progress(name)
        _remove_vanished(writer, seen, roots, report)
        if indexable == 0:
            what = "; ".join(f"{f}: {r}" for f, r in report.skipped[:3]) or "no files found"
            raise SquadkitError(f"nothing to index under {', '.join(map(str, paths))} ({what})")
        writer.count_totals(report)
        if report.passages == 0:
            raise SquadkitError(f"nothing to index under {', '.join(map(str, paths))}: every document is empty")


def _index_file(writer: IndexWriter, path: Path, name: str, report: IndexReport) -> bool:
    """One file into the run's transaction: kept when unchanged (same size and mtime, else the same
    bytes), re-read when changed, added when new, skipped (and its old documents removed) when it
    cannot be read; True when the file is indexable."""
    conn, key = writer.conn, str(path)
    try:
        stat = path.stat()
    except OSError as exc:
        report.skipped.append((name, f"unreadable: {exc.strerror or exc}"))
        return False
    row = conn.execute("SELECT id, size, mtime_ns, sha256 FROM files WHERE path = ?", (key,)).fetchone()
    if row is not None and not writer.resplit and row[1] == stat.st_size and row[2] == stat.st_mtime_ns:
        report.files_unchanged += 1
        return True
    try:
        digest = file_fingerprint(path)
    except OSError as exc:
        report.skipped.append((name, f"unreadable: {exc.strerror or exc}"))
        return False
    if row is not None and not writer.resplit and row[3] == digest:
        conn.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE id = ?", (stat.st_size, stat.st_mtime_ns, row[0]))
        report.files_unchanged += 1
        return True
    try:
        docs = list(read_documents(path, name))
    except SkipFile as exc:
        report.skipped.append((name, str(exc)))
        if row is not None:  # it was indexable before: its old documents go
            writer.remove_documents("file_id = ?", (row[0],))
            conn.execute("DELETE FROM files WHERE id = ?", (row[0],))
        return False
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
    writer.add_documents(docs, report, file_id)
    return True


def _remove_vanished(writer: IndexWriter, seen: set[str], roots: list[str], report: IndexReport) -> None:
    """The files indexed before under these roots that are gone now: their documents go."""
    for fid, fpath in writer.conn.execute("SELECT id, path FROM files").fetchall():
        if fpath not in seen and any(fpath == r or fpath.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
            writer.remove_documents("file_id = ?", (fid,))
            writer.conn.execute("DELETE FROM files WHERE id = ?", (fid,))
            report.files_removed += 1


def _display_name(path: Path) -> str:
    """How a file is named in answers: relative to the current folder when inside it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def index_documents(documents: Iterable[Document], output: str | os.PathLike, settings: IndexSettings | None = None,
                    embedder: Any = None, rebuild: bool = False, dense: bool | None = None) -> IndexReport:
    """Index documents given in Python (not read from files), in one transaction; for generated collections."""
    start_time = time.perf_counter()
    report = IndexReport(index=str(output))
    with IndexWriter(output, settings, embedder=embedder, rebuild=rebuild, dense=dense) as writer:
        writer.add_documents(documents, report)
        writer.count_totals(report)
        if report.passages == 0:
            raise SquadkitError("nothing to index: every document is empty")
    report.seconds = time.perf_counter() - start_time
    return report
