"""What a failed or interrupted ``index`` run leaves behind, and its removal.

A first build (the SQLite file held no table when the run took the write lock) that fails or is
interrupted removes everything it made: the SQLite file and its journal, its engine folder, the
``INDEX.search/`` folder and the output's parent folders when it created them. It does so while it
still holds SQLite's write lock, so a second writer waiting on that lock finds the file gone and
starts again on a new one (``IndexWriter`` checks the file it locked is still the one at the path).
A failed run over an existing index only removes the engine folder it had started (nothing names
it); SQLite's rollback keeps the old index.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from . import engine

SIDE_FILES = ("-journal", "-wal", "-shm")  # SQLite's files beside the database


def missing_parents(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, deepest first (removed again by a failed first build)."""
    out = []
    folder = path.parent.absolute()
    for parent in (folder, *folder.parents):
        if parent.exists():
            break
        out.append(parent)
    return out


def same_file(path: Path, inode: tuple[int, int]) -> bool:
    """Whether ``path`` still names the file ``inode`` ((st_dev, st_ino)) was taken from."""
    try:
        st = path.stat()
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == inode


def file_id(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def remove_engine(folder: Path | None) -> None:
    """An engine folder no committed index names (a failed full build's)."""
    if folder is not None and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


def remove_first_build(path: Path) -> None:
    """A failed first build's SQLite file and the engine's ``INDEX.search/`` folder; called with the
    write lock held (SQLite's side files and the created folders go after its rollback: ``remove_rest``)."""
    shutil.rmtree(engine.search_folder(path), ignore_errors=True)
    path.unlink(missing_ok=True)


def remove_rest(path: Path, created: list[Path]) -> None:
    """SQLite's journal (and WAL files) of a removed database, as a hot journal would otherwise be
    played into the next file of that name; then the parent folders the run created, when empty."""
    for suffix in SIDE_FILES:
        Path(str(path) + suffix).unlink(missing_ok=True)
    for folder in created:
        try:
            folder.rmdir()
        except OSError:
            break  # not empty (something else was put there) or already gone
