"""The keyword engine: a Tantivy index of the passages, beside the SQLite file that holds their text.

Why it is built this way: docs/design.md (squadkit/retrieval/engine.py).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

from ..errors import SquadkitError

ANALYZER = "squadkit_en"  # the name the analyzer is registered under in every tantivy.Index we open
ANALYZER_RECIPE = "simple,remove_long(40),lowercase,ascii_fold,stemmer(english)"  # recorded in meta
WRITER_HEAP = 128 * 2**20  # bytes of tantivy's indexing buffer before it writes a segment
T = TypeVar("T")


def tantivy_module():
    """The ``tantivy`` package, or a one-line SquadkitError naming the install."""
    try:
        import tantivy
    except ImportError:  # a dependency of squadkit; missing only in a broken environment
        raise SquadkitError("keyword search needs the tantivy package: pip install 'tantivy>=0.25'") from None
    return tantivy


def analyzer(stem: bool = True):
    """The engine's analyzer (module docstring); ``stem=False``: the same without the stemmer."""
    tv = tantivy_module()
    builder = (tv.TextAnalyzerBuilder(tv.Tokenizer.simple()).filter(tv.Filter.remove_long(40))
               .filter(tv.Filter.lowercase()).filter(tv.Filter.ascii_fold()))
    if stem:
        builder = builder.filter(tv.Filter.stemmer("english"))
    return builder.build()


def schema():
    tv = tantivy_module()
    sb = tv.SchemaBuilder()
    sb.add_integer_field("pid", stored=False, indexed=False, fast=True)
    sb.add_integer_field("doc_id", stored=False, indexed=True, fast=False)
    sb.add_text_field("text", stored=False, tokenizer_name=ANALYZER, index_option="freq")
    return sb.build()


def search_folder(index_path: str | os.PathLike) -> Path:
    """The folder beside the SQLite file that holds the engine's files: ``INDEX.search``."""
    return Path(str(index_path) + ".search")


def damaged(where: str | os.PathLike, why: Any) -> SquadkitError:
    """The one-line error for a damaged index file or folder, with the fix."""
    why = str(why).strip().splitlines()[0] if str(why).strip() else type(why).__name__
    return SquadkitError(f"{where}: the index is damaged ({why}); rebuild it: "
                         f"squadkit index PATH... --output INDEX --rebuild")


def guarded(where: str | os.PathLike, call: Callable[[], T]) -> T:
    """``call()``, with any engine failure (an OSError, ValueError, or a Rust panic, which pyo3 raises
    as a BaseException) turned into the one-line ``damaged`` error naming ``where``."""
    try:
        return call()
    except SquadkitError:
        raise
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - pyo3's PanicException derives from BaseException
        raise damaged(where, exc) from None


def open_engine(folder: Path, create: bool = False):
    """A tantivy.Index over ``folder`` with the analyzer registered (``create``: a new, empty one)."""
    tv = tantivy_module()
    if create:
        folder.mkdir(parents=True, exist_ok=True)
        index = guarded(folder, lambda: tv.Index(schema(), str(folder), reuse=False))
    else:
        if not (folder / "meta.json").is_file():
            raise damaged(folder, "its keyword index is missing")
        index = guarded(folder, lambda: tv.Index.open(str(folder)))
    # no reload thread: our Index follows commits itself (generation), and a background reload could
    # read files while a writer or a test has them half-written
    guarded(folder, lambda: index.config_reader("Manual", 0))
    index.register_tokenizer(ANALYZER, analyzer())
    return index


def file_sums(folder: Path) -> dict[str, list[int]]:
    """Size and CRC-32 of each of the engine's files (not tantivy's lock and bookkeeping files, whose
    names start with a dot): recorded after each commit, checked on open."""
    return file_sums_of(f for f in sorted(folder.iterdir()) if f.is_file() and not f.name.startswith("."))


def file_sums_of(files: Iterable[Path]) -> dict[str, list[int]]:
    return {f.name: [f.stat().st_size, _crc(f)] for f in files}


def _crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def verify_files(folder: Path, recorded: str | None, checksums: bool) -> None:
    """Every recorded file is there with its size (and, with ``checksums``, its CRC-32); else ``damaged``."""
    if not folder.is_dir():
        raise damaged(folder, "its keyword index folder is missing")
    if not recorded:
        return
    for name, (size, crc) in json.loads(recorded).items():
        f = folder / name
        if not f.is_file():
            raise damaged(f, "file missing")
        if f.stat().st_size != size:
            raise damaged(f, f"{f.stat().st_size} bytes, {size} written")
        if checksums and _crc(f) != crc:
            raise damaged(f, "checksum mismatch")


def new_engine_dir(index_path: str | os.PathLike) -> Path:
    """A fresh, unused folder name for a full build's engine."""
    return search_folder(index_path) / f"bm25-{uuid.uuid4().hex[:12]}"


def remove_stale(index_path: str | os.PathLike, keep: set[str]) -> None:
    """Delete the engine folders and files that no committed index names (left by rebuilds and crashes).
    Called by a writer holding the lock, after its commit."""
    folder = search_folder(index_path)
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith(".") or entry.name in keep:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def term_query(index, terms: Iterable[str]):
    """OR of the (already analyzed) ``terms`` in the text field."""
    tv = tantivy_module()
    sch = index.schema
    clauses = [(tv.Occur.Should, tv.Query.term_query(sch, "text", t)) for t in dict.fromkeys(terms)]
    return tv.Query.boolean_query(clauses)


def passage_doc(pid: int, doc_id: int, text: str):
    return tantivy_module().Document(pid=int(pid), doc_id=int(doc_id), text=text)


def delete_doc(writer, doc_id: int) -> None:
    writer.delete_documents_by_term("doc_id", int(doc_id))
