"""Building an index from files and folders (``squadkit index``): what changed is read again, the rest kept."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence


from ..errors import SquadkitError
from .documents import (
    Document,
    SkipFile,
    file_fingerprint,
    iter_files,
    read_documents,
)
from .store import Index, IndexReport, IndexSettings
from .writer import IndexWriter


def build_index(
    paths: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    settings: IndexSettings | dict | None = None,
    embedder: Any = None,
    rebuild: bool = False,
    progress: Callable[[str], None] | bool | None = None,
    dense: bool | None = None,
    names: Mapping[str, str] | None = None,
) -> IndexReport:
    """Index files and folders into ``output`` (created, or updated incrementally); one transaction.
    ``names``: how the caller spelled the settings (the CLI's flags), for errors.

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
        _index_files(files, roots, paths, output, settings, embedder, rebuild, dense, progress, lines, report, names)
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
                 report: IndexReport, names: Mapping[str, str] | None = None) -> None:
    """``build_index``'s transaction: each file added, updated, kept or removed (see build_index)."""
    with IndexWriter(output, settings, embedder=embedder, rebuild=rebuild, dense=dense, names=names,
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

