"""The files people have: PDF (by pypdfium2, the ``documents`` extra) and Word .docx (standard library).

Why it is built this way: docs/design.md (squadkit/retrieval/filetypes.py).
"""

from __future__ import annotations

import io
import re
import zipfile
from typing import Iterator
from xml.etree import ElementTree

from .types import DOCUMENTS_EXTRA, Document, SkipFile

_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
                            "\ufb05": "st", "\ufb06": "st"})
# a word broken at a line end: PDFium marks its hyphen U+FFFE (and drops the break); others keep "-\n"
_BROKEN_WORD = re.compile(r"(\w+)(?:\ufffe|\u00ad\n?|-[^\S\n]*\n)[^\S\n]*(?=([a-z]\w*))")
_HYPHENATED = re.compile(r"\w+(?:-\w+)+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\uffff]")
MAX_DOCX_XML_BYTES = 256 << 20  # a larger word/document.xml is refused (a zip bomb, or not a real document)


# ---------------------------------------------------------------------------------------------
# PDF
# ---------------------------------------------------------------------------------------------


def read_pdf(data: bytes, name: str, stem: str) -> Document:
    """One document of a PDF's text layer; ``metadata["pages"]``: each page's start offset."""
    pages, title = pdf_pages(data)
    text, starts = join_pages(pages)
    if not text.strip():
        raise SkipFile(f"no text layer (scanned?): {len(pages)} page(s) without text; run OCR on it first")
    return Document(name, text, title=title or stem, metadata={"pages": starts})


def pdf_pages(data: bytes) -> tuple[list[str], str]:
    """(raw text of every page, the document's title or ""), by PDFium; SkipFile for what it cannot read."""
    try:
        import pypdfium2 as pdfium
    except ImportError:
        raise SkipFile(f"reading PDF needs pypdfium2: {DOCUMENTS_EXTRA}") from None
    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        why = str(exc)
        if "password" in why.lower():
            raise SkipFile("encrypted PDF (needs a password)") from None
        raise SkipFile(f"unreadable PDF: {why}") from None
    try:
        pages = []
        for i in range(len(pdf)):
            page = pdf[i]
            textpage = page.get_textpage()
            pages.append(textpage.get_text_range())
            textpage.close()
            page.close()
        title = str(pdf.get_metadata_dict().get("Title") or "").strip()
    except pdfium.PdfiumError as exc:
        raise SkipFile(f"unreadable PDF: {exc}") from None
    finally:
        pdf.close()
    return pages, title


def join_pages(pages: list[str]) -> tuple[str, list[int]]:
    """The pages' mended text (module docstring) joined by blank lines, and each page's start offset."""
    pages = [p.replace("\r\n", "\n").replace("\r", "\n").translate(_LIGATURES) for p in pages]
    written = {w.lower() for p in pages for w in _HYPHENATED.findall(p)}  # words the document hyphenates
    _join_across_pages(pages, written)
    mended = [_tidy(mend_broken_words(p, written)) for p in pages]
    starts, parts, at = [], [], 0
    for page in mended:
        starts.append(at)
        parts.append(page)
        at += len(page) + 2
    return "\n\n".join(parts), starts


def mend_broken_words(text: str, hyphenated: set[str]) -> str:
    """Join the words broken at line ends (``estab-\\nlished``), keeping the hyphen of those the
    document writes with one elsewhere (``hyphenated``: lower-cased ``a-b`` forms)."""

    def join(m: re.Match) -> str:
        head, tail = m.group(1), m.group(2)
        return f"{head}-" if f"{head}-{tail}".lower() in hyphenated else head

    return _BROKEN_WORD.sub(join, text).replace("\ufffe", "-")  # a hyphen before a capital or digit stays


_PAGE_END_BREAK = re.compile(r"(\w+)(?:\ufffe|\u00ad|-)\s*$")
_PAGE_START_WORD = re.compile(r"\s*([a-z]\w*)")


def _join_across_pages(pages: list[str], hyphenated: set[str]) -> None:
    """A word broken at a page's end (``Aus-`` | ``tralia``) is moved whole onto the next page, in place."""
    for i in range(len(pages) - 1):
        head, tail = _PAGE_END_BREAK.search(pages[i]), _PAGE_START_WORD.match(pages[i + 1])
        if head and tail and f"{head.group(1)}-{tail.group(1)}".lower() not in hyphenated:
            pages[i] = pages[i][: head.start()]
            pages[i + 1] = head.group(1) + pages[i + 1].lstrip()


def _tidy(page: str) -> str:
    """A page without control characters, trailing spaces, or blank lines at its ends."""
    lines = [line.rstrip() for line in _CONTROL.sub("", page).split("\n")]
    return "\n".join(lines).strip()


def page_spans(starts: list[int], length: int) -> list[tuple[int, int]]:
    """(start, end) of each page in the joined text (``join_pages``), the blank line between them left out."""
    ends = [s - 2 for s in starts[1:]] + [length]
    return [(s, max(s, e)) for s, e in zip(starts, ends)]


# ---------------------------------------------------------------------------------------------
# Word .docx
# ---------------------------------------------------------------------------------------------

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_DC_TITLE = "{http://purl.org/dc/elements/1.1/}title"


def read_docx(data: bytes, name: str, stem: str) -> Document:
    """One document of a Word file's body text: paragraphs, and table rows, one per paragraph."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            body = ElementTree.fromstring(_member(z, "word/document.xml")).find(f"{_W}body")
            title = ""
            if "docProps/core.xml" in z.namelist():
                found = ElementTree.fromstring(_member(z, "docProps/core.xml")).find(_DC_TITLE)
                title = (found.text or "").strip() if found is not None else ""
    except (zipfile.BadZipFile, KeyError) as exc:
        raise SkipFile(f"not a Word .docx file ({exc})") from None
    except ElementTree.ParseError as exc:
        raise SkipFile(f"damaged Word .docx file: {exc}") from None
    blocks = [b for b in _blocks(body) if b.strip()] if body is not None else []
    return Document(name, "\n\n".join(blocks), title=title or stem)


def _member(z: zipfile.ZipFile, member: str) -> bytes:
    info = z.getinfo(member)
    if info.file_size > MAX_DOCX_XML_BYTES:
        raise SkipFile(f"{member} is {info.file_size} bytes unpacked, over the {MAX_DOCX_XML_BYTES} limit")
    return z.read(info)


def _blocks(container: ElementTree.Element) -> Iterator[str]:
    """Paragraphs and table rows of a body, table cell or content control, in document order."""
    for child in container:
        if child.tag == f"{_W}p":
            yield _paragraph_text(child)
        elif child.tag == f"{_W}tbl":
            for row in child.findall(f"{_W}tr"):
                cells = [" ".join(b for b in _blocks(cell) if b.strip()) for cell in row.findall(f"{_W}tc")]
                yield "\t".join(cells)
        elif child.tag == f"{_W}sdt":
            content = child.find(f"{_W}sdtContent")
            if content is not None:
                yield from _blocks(content)


def _paragraph_text(paragraph: ElementTree.Element) -> str:
    parts = []
    for node in paragraph.iter():
        if node.tag == f"{_W}t":
            parts.append(node.text or "")
        elif node.tag == f"{_W}tab":
            parts.append("\t")
        elif node.tag in (f"{_W}br", f"{_W}cr"):
            parts.append("\n")
        elif node.tag == f"{_W}noBreakHyphen":
            parts.append("-")
    return "".join(parts)
