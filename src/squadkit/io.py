"""Small file helpers shared by every stage: atomic writes and JSON reading with clear errors."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import SquadkitError


def current_umask() -> int:
    """The process's umask (read without changing it where Linux allows; else set and restored)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_created(path: str | os.PathLike, is_dir: bool) -> None:
    """Give a temporary file or folder (mkstemp: 0600, mkdtemp: 0700) the mode that open() or
    mkdir() would have given it under the user's umask, before it takes its final name."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~current_umask())


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file beside ``path`` for writing; on success it is synced and renamed
    onto ``path``, so readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _as_created(tmp, is_dir=False)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see ``atomic_open``)."""
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 4) -> None:
    """Atomically write ``obj`` as JSON (with a trailing newline, as run_squad wrote its files)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def replace_dir_atomically(tmp_dir: Path, final_dir: Path) -> None:
    """Move a fully written folder into place; an existing folder of that name is replaced.

    rename(2) of a folder is atomic on one filesystem; when a previous folder exists it is
    first renamed aside, so a crash leaves either the old or the new folder complete.
    """
    final_dir = Path(final_dir)
    if final_dir.exists():
        trash = final_dir.with_name(f".{final_dir.name}.old")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(final_dir, trash)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)


@contextlib.contextmanager
def staged_dir(final_dir: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary folder beside ``final_dir``: fill it, and on success it replaces
    ``final_dir`` atomically; on any error it is removed and ``final_dir`` is left as it was."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", dir=final_dir.parent))
    try:
        _as_created(tmp, is_dir=True)
        yield tmp
        # what libraries wrote inside (safetensors writes through a 0600 temporary file) as well
        for path in tmp.rglob("*"):
            if not path.is_symlink():
                _as_created(path, is_dir=path.is_dir())
        replace_dir_atomically(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file; a missing, unreadable or malformed file is a one-line SquadkitError."""
    path = Path(path)
    if not path.exists():
        raise SquadkitError(f"{path}: {what} not found")
    if path.is_dir():
        raise SquadkitError(f"{path}: expected a {what}, found a folder")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SquadkitError(f"{path}: cannot read {what}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SquadkitError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
