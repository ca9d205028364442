"""Writing the index: ``IndexWriter`` adds and removes documents in one SQLite transaction and keeps the
keyword engine in step (docs/index.md)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import SquadkitError
from . import ann, debris, engine
from .documents import (
    Document,
    regex_token_count,
    regex_token_offsets,
    split_passages,
    whole_text_passage,
    tokenizer_offsets_fn,
)
from .store import (CHECK_BYTES, INDEX_FORMAT, PASSAGE_TEXT, SCHEMA, IndexReport, IndexSettings, _commit_engine, _replay,
                    _size, connect, read_meta, unreadable)


def _load_tokenizer(name: str):
    """The reader's tokenizer (a model or tokenizer folder, or a hub id), for passage lengths: a local
    folder's tokenizer.json read directly (``fast_tokenizer``: no transformers import), else loaded as
    every model folder is (a missing path or an unreachable hub fails at once, in one line)."""
    from ..model_folder import load_tokenizer
    from ..fast_tokenizer import TOKENIZER_FILE, FastTokenizer

    folder = Path(name).expanduser()
    if (folder / TOKENIZER_FILE).is_file():
        return FastTokenizer(folder)
    return load_tokenizer(name)


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
                 progress: Callable[[int], None] | None = None, names: Mapping[str, str] | None = None) -> None:
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
        self.names = names or {}
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
        self.settings = (settings or old_settings or IndexSettings()).validate(self.names)
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
        path.unlink(missing_ok=True)
        debris.remove_rest(path, [])  # its journal and WAL files


