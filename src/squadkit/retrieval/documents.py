"""Reading a document collection and splitting it into passages with exact character offsets.

Why it is built this way: docs/design.md (squadkit/retrieval/documents.py).
"""

from __future__ import annotations

import bisect
import codecs
import hashlib
import html.parser
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import SquadkitError
from .types import Document, SkipFile

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst", ""}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
JSON_SUFFIXES = {".json"}
PDF_SUFFIXES = {".pdf"}
DOCX_SUFFIXES = {".docx"}
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | JSONL_SUFFIXES | JSON_SUFFIXES | PDF_SUFFIXES | DOCX_SUFFIXES


@dataclass(frozen=True)
class Passage:
    """A passage of a document: ``document.text[start:end]``."""

    start: int
    end: int


# ---------------------------------------------------------------------------------------------
# finding files
# ---------------------------------------------------------------------------------------------


def iter_files(paths: Sequence[str | os.PathLike]) -> Iterator[tuple[Path, Path]]:
    """Every file under ``paths`` as (absolute path, the root it was found under), sorted, no hidden files.

    A path that does not exist is a SquadkitError naming it.
    """
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise SquadkitError(f"{given}: no such file or folder")
        root = root.resolve()
        if root.is_file():
            yield root, root
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith("."):
                    yield Path(dirpath) / name, root


def file_fingerprint(path: Path) -> str:
    """sha256 of the file's bytes: decides whether a file whose size or mtime changed really changed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


# longest first: the UTF-32 LE mark begins with the UTF-16 LE one
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def decode_bytes(data: bytes) -> str:
    """The text of a file: decoded by its byte-order mark (dropped), else as UTF-8; SkipFile for
    binary data (a NUL byte, without a mark saying UTF-16/32) or another encoding."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(encoding)
            except UnicodeDecodeError as exc:
                raise SkipFile(f"not {encoding.upper()} text, although it starts with that byte-order mark "
                               f"(byte {exc.start + len(bom)})") from None
    if b"\x00" in data[:65536]:
        raise SkipFile("binary file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"not UTF-8 text (byte {exc.start})") from None


class _TextExtractor(html.parser.HTMLParser):
    """Visible text of an HTML page: script/style dropped, block elements end a paragraph."""

    BLOCKS = {"p", "div", "section", "article", "li", "ul", "ol", "table", "tr", "h1", "h2", "h3", "h4", "h5",
              "h6", "br", "blockquote", "pre", "header", "footer", "main", "nav", "title", "dd", "dt"}
    HIDDEN = {"script", "style", "noscript", "template", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._hidden = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "title":
            self._in_title = True
        elif tag in self.HIDDEN:
            self._hidden += 1
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag in self.HIDDEN and self._hidden:
            self._hidden -= 1
        if tag in self.BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._hidden:
            self.parts.append(data)

    def text(self) -> str:
        raw = "".join(self.parts)
        lines = [" ".join(line.split()) for line in raw.split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(source: str) -> tuple[str, str]:
    """(title, visible text) of an HTML page."""
    parser = _TextExtractor()
    parser.feed(source)
    parser.close()
    return " ".join(parser.title.split()), parser.text()


def page_at(metadata: Any, offset: int) -> int | None:
    """The 1-based page holding character ``offset`` of a document whose ``metadata["pages"]`` lists
    its pages' start offsets (a PDF's); None for a document without pages."""
    pages = metadata.get("pages") if isinstance(metadata, dict) else None
    if not isinstance(pages, list) or not pages or pages[0] != 0 or not all(isinstance(p, int) for p in pages):
        return None
    return bisect.bisect_right(pages, offset)


def _is_squad(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("data"), list) and all(
        isinstance(a, dict) and isinstance(a.get("paragraphs"), list) for a in obj["data"][:5])


def read_documents(path: Path, name: str) -> Iterator[Document]:
    """The documents of one file; ``name`` is how the file is called in the index.

    Raises SkipFile for a file that cannot be indexed at all. Plain text and Markdown give one
    document; HTML one (its visible text); PDF and Word one (their text, a PDF's page starts in
    ``metadata["pages"]``); JSON lines one per line (``{"id", "text", ...}``, other
    fields kept as metadata); SQuAD JSON one per paragraph, titled by its article.
    """
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise SkipFile(f"unsupported file type {suffix!r}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SkipFile(f"unreadable: {exc.strerror or exc}") from None
    if suffix in PDF_SUFFIXES or suffix in DOCX_SUFFIXES:
        from .filetypes import read_docx, read_pdf

        yield (read_pdf if suffix in PDF_SUFFIXES else read_docx)(data, name, path.stem)
        return
    text = decode_bytes(data)
    if suffix in TEXT_SUFFIXES:
        yield Document(name, text, title=path.stem)
    elif suffix in HTML_SUFFIXES:
        title, body = html_to_text(text)
        yield Document(name, body, title=title or path.stem)
    elif suffix in JSONL_SUFFIXES:
        yield from _jsonl_documents(text, name)
    else:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SkipFile(f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
        if _is_squad(obj):
            for article in obj["data"]:
                title = str(article.get("title", ""))
                for i, paragraph in enumerate(article["paragraphs"]):
                    context = paragraph.get("context") if isinstance(paragraph, dict) else None
                    if isinstance(context, str):
                        yield Document(f"{name}#{title}/{i}", context, title=title,
                                       metadata={"article": title, "paragraph": i})
        elif isinstance(obj, list):
            yield from _records(obj, name)
        else:
            raise SkipFile("JSON that is neither SQuAD ({'data': [...]}) nor a list of {'id', 'text'} records")


def _jsonl_documents(text: str, name: str) -> Iterator[Document]:
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SkipFile(f"line {lineno}: malformed JSON: {exc.msg}") from None
        yield _record_document(record, name, lineno)


def _records(records: list, name: str) -> Iterator[Document]:
    for i, record in enumerate(records, 1):
        yield _record_document(record, name, i)


def _record_document(record: Any, name: str, number: int) -> Document:
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        raise SkipFile(f"record {number}: expected an object with a string 'text'")
    rid = record.get("id", number)
    meta = {k: v for k, v in record.items() if k not in ("id", "text")}
    return Document(f"{name}#{rid}", record["text"], title=str(record.get("title", rid)), metadata=meta)


# ---------------------------------------------------------------------------------------------
# splitting
# ---------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+|[^\w\s]")
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n\s*")  # a blank line (\r counts as blank space)


def regex_token_offsets(text: str) -> np.ndarray:
    """(N, 2) character offsets of words and punctuation marks: the splitter without a tokenizer."""
    flat = np.fromiter((i for m in _WORD.finditer(text) for i in m.span()), dtype=np.int64)
    return flat.reshape(-1, 2)


def regex_token_count(text: str) -> int:
    """How many tokens ``regex_token_offsets`` would find (cheaper: no offsets)."""
    return len(_WORD.findall(text))


def tokenizer_offsets_fn(tokenizer: Any) -> Callable[[str], np.ndarray]:
    """A function giving the (N, 2) character offsets of ``tokenizer``'s tokens of a text.

    Uses the fast tokenizer's Rust backend directly: no special tokens, no length warnings.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise SquadkitError(f"{type(tokenizer).__name__} is not a fast tokenizer: character offsets need one")

    def offsets(text: str) -> np.ndarray:
        encoding = backend.encode(text, add_special_tokens=False)
        arr = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
        return arr[arr[:, 1] > arr[:, 0]]  # zero-width tokens (none in practice) carry no text

    return offsets


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every paragraph (text between blank lines), surrounding whitespace trimmed."""
    spans = []
    pos = 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    out = []
    for a, b in spans:
        chunk = text[a:b]
        stripped = chunk.strip()
        if stripped:
            a += len(chunk) - len(chunk.lstrip())
            out.append((a, a + len(stripped)))
    return out


def split_passages(text: str, token_offsets: np.ndarray, max_tokens: int = 256, overlap: int = 32) -> list[Passage]:
    """Paragraph-aware passages of at most ``max_tokens`` tokens (see the module docstring).

    ``token_offsets`` is the (N, 2) array of the text's token character offsets. Passages never
    start or end in whitespace; a text with no tokens has no passages.
    """
    if max_tokens < 1:
        raise SquadkitError(f"max_tokens must be >= 1, got {max_tokens}")
    if not 0 <= overlap < max_tokens:
        raise SquadkitError(f"overlap must be >= 0 and below max_tokens ({max_tokens}), got {overlap}")
    if len(token_offsets) == 0:
        return []
    starts = token_offsets[:, 0]
    paragraphs = paragraph_spans(text)
    pa = np.asarray([p[0] for p in paragraphs])
    pb = np.asarray([p[1] for p in paragraphs])
    first = np.searchsorted(starts, pa, side="left")  # first token of each paragraph
    last = np.searchsorted(starts, pb, side="left")  # one past its last token
    out: list[Passage] = []
    pending: list[int] = []  # paragraphs packed into the next passage
    pending_tokens = 0

    def flush() -> None:
        nonlocal pending, pending_tokens
        if pending:
            out.append(Passage(paragraphs[pending[0]][0], paragraphs[pending[-1]][1]))
        pending, pending_tokens = [], 0

    step = max_tokens - overlap
    for i, (t0, t1) in enumerate(zip(first.tolist(), last.tolist())):
        n = t1 - t0
        if n == 0:
            continue
        if n > max_tokens:
            flush()
            lo = t0
            while True:
                hi = min(lo + max_tokens, t1)
                out.append(Passage(int(token_offsets[lo, 0]), int(token_offsets[hi - 1, 1])))
                if hi >= t1:
                    break
                lo += step
            continue
        if pending_tokens + n > max_tokens:
            flush()
        pending.append(i)
        pending_tokens += n
    flush()
    return [_trim(text, p) for p in out if p.end > p.start]


def whole_text_passage(text: str) -> list[Passage]:
    """The passage of a document short enough to be one: the whole text, whitespace trimmed.

    What ``split_passages`` returns whenever the text has at most ``max_tokens`` tokens (all its
    paragraphs pack into one passage); callers that can count tokens cheaply skip the offsets.
    """
    whole = _trim(text, Passage(0, len(text)))
    return [whole] if whole.end > whole.start else []


def _trim(text: str, p: Passage) -> Passage:
    chunk = text[p.start : p.end]
    left = len(chunk) - len(chunk.lstrip())
    right = len(chunk) - len(chunk.rstrip())
    return Passage(p.start + left, p.end - right)
