"""PDF text extractors compared (speed and faithfulness), and a 100-page PDF indexed by the CLI.

PDFs are made here from real SQuAD paragraphs (the shared train slice): by fpdf2 in one and two
columns (DejaVu Serif: accents, non-Latin scripts), and by LibreOffice (when ``soffice`` is on the
PATH) from a two-column, justified, auto-hyphenated Word file written by python-docx, which gives
real hyphenation and ligatures. Each extractor's pages go through squadkit's own mending
(``filetypes.join_pages``: line ends, ligatures, words broken at line ends), so the comparison is
of what the index would store. Faithfulness is the similarity of that text to the source
paragraphs (difflib ratio, in order, whitespace runs as one space) by words and by characters;
1.0 is exact.

    OMP_NUM_THREADS=1 python benchmarks/bench_documents.py --pages 100

Needs the ``documents`` and ``test`` extras (pypdfium2, fpdf2, python-docx) plus pypdf and
pdfminer.six for the comparison; prints Markdown tables.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from squadkit.retrieval.filetypes import join_pages, pdf_pages  # noqa: E402

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf")


def squad_paragraphs() -> list[str]:
    data = Path(os.environ.get("SQUADKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
    articles = json.loads((data / "squad_v2" / "train-v2.0.first10articles.json").read_text())["data"]
    return [p["context"] for a in articles for p in a["paragraphs"]]


def fpdf_document(path: Path, paragraphs: list[str], pages: int, columns: int) -> list[str]:
    """A PDF of at least ``pages`` pages of paragraphs; returns the paragraphs written."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(True, margin=15)
    if FONT.is_file():
        from fontTools.ttLib import TTFont  # an fpdf2 dependency

        pdf.add_font("serif", fname=str(FONT))
        pdf.set_font("serif", size=10)
        covered = TTFont(str(FONT)).getBestCmap()  # paragraphs the font can draw whole (no CJK in DejaVu)
        paragraphs = [p for p in paragraphs if all(ord(c) in covered or c.isspace() for c in p)]
    else:  # core font: Latin-1 only
        pdf.set_font("Helvetica", size=10)
        paragraphs = [p.encode("latin-1", "ignore").decode("latin-1") for p in paragraphs]
    pdf.add_page()
    written: list[str] = []
    if columns > 1:  # one flowing block: fpdf2 breaks columns and pages itself (about 5 paragraphs a page)
        written = [paragraphs[i % len(paragraphs)] for i in range(5 * pages)]
        with pdf.text_columns(ncols=columns, gutter=8) as cols:
            for text in written:
                cols.write(text + "\n\n")
    else:
        while pdf.page_no() < pages:
            text = paragraphs[len(written) % len(paragraphs)]
            pdf.multi_cell(0, 5, text)
            pdf.ln(3)
            written.append(text)
    pdf.output(str(path))
    return written


def libreoffice_document(path: Path, paragraphs: list[str], count: int) -> list[str] | None:
    """A PDF by LibreOffice of a two-column, justified, hyphenated Word file; None without soffice."""
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        return None
    from docx import Document
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    doc = Document()
    cols = OxmlElement("w:cols")
    cols.set(qn("w:num"), "2")
    cols.set(qn("w:space"), "720")
    doc.sections[0]._sectPr.append(cols)
    hyphenate = OxmlElement("w:autoHyphenation")
    hyphenate.set(qn("w:val"), "true")
    doc.settings.element.append(hyphenate)
    doc.styles["Normal"].font.name = "Liberation Serif"
    written = paragraphs[:count]
    for text in written:
        doc.add_paragraph(text).alignment = WD_ALIGN_PARAGRAPH.JUSTIFY
    source = path.with_suffix(".docx")
    doc.save(source)
    subprocess.run([soffice, "--headless", "--convert-to", "pdf", "--outdir", str(path.parent), str(source)],
                   check=True, capture_output=True, timeout=300)
    return written


def extract_pypdfium2(path: Path) -> list[str]:
    return pdf_pages(path.read_bytes())[0]


def extract_pypdf(path: Path) -> list[str]:
    from pypdf import PdfReader

    return [page.extract_text() for page in PdfReader(path).pages]


def extract_pdfminer(path: Path) -> list[str]:
    from pdfminer.high_level import extract_text

    return extract_text(path).split("\f")[:-1]


EXTRACTORS = {"pypdfium2": extract_pypdfium2, "pypdf": extract_pypdf, "pdfminer.six": extract_pdfminer}


def similarity(source: list[str], pages: list[str]) -> tuple[float, float]:
    """(word-level, character-level) similarity of the mended text to the source, whitespace runs
    as one space. Characters are aligned inside the word alignment (difflib over whole texts of
    100k characters would take minutes): equal words match whole, replaced runs character by character."""
    text, _ = join_pages(pages)
    a, b = " ".join(source).split(), text.split()
    words = difflib.SequenceMatcher(None, a, b, autojunk=False)
    matched = 0
    for op, i1, i2, j1, j2 in words.get_opcodes():
        if op == "equal":
            matched += sum(len(w) + 1 for w in a[i1:i2])
        elif op == "replace":
            x, y = " ".join(a[i1:i2]), " ".join(b[j1:j2])
            matched += sum(m.size for m in difflib.SequenceMatcher(None, x, y, autojunk=False).get_matching_blocks())
    chars = len(" ".join(a)) + len(" ".join(b)) + 2
    return words.ratio(), 2 * matched / chars


def compare(pdfs: dict[str, tuple[Path, list[str]]], repeats: int) -> None:
    print("| PDF | pages | extractor | pages/s (1 thread) | word similarity | character similarity |")
    print("|---|---|---|---|---|---|")
    for label, (path, source) in pdfs.items():
        for name, extract in EXTRACTORS.items():
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                pages = extract(path)
                best = min(best, time.perf_counter() - t0)
            words, chars = similarity(source, pages)
            print(f"| {label} | {len(pages)} | {name} {version(name)} | {len(pages) / best:,.0f} | "
                  f"{words:.4f} | {chars:.4f} |", flush=True)


def cli_index(path: Path, workdir: Path, tokenizer: str | None = None) -> None:
    """``squadkit index`` of one PDF as a user runs it (a fresh process: imports included)."""
    out = workdir / "pdf.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "squadkit.cli", "index", str(path), "-o", str(out), "--rebuild"]
    cmd += ["--tokenizer", tokenizer] if tokenizer else []
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(done.stderr)
    report = json.loads(done.stdout)
    how = f" --tokenizer {Path(tokenizer).name}" if tokenizer else ""
    print(f"\n`squadkit index{how}` of {path.name} ({report['documents']} document): {seconds:.2f} s wall (process start included), "
          f"{report['seconds']:.2f} s inside build_index, {report['passages']} passages")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=100, help="Pages of the fpdf2 PDFs.")
    parser.add_argument("--lo-paragraphs", type=int, default=120, help="Paragraphs in the LibreOffice PDF.")
    parser.add_argument("--repeats", type=int, default=2, help="Timed runs per extractor (the best is kept).")
    parser.add_argument("--tokenizer", default=None, help="Also index with this reader's tokenizer (passage lengths).")
    parser.add_argument("--only-index", action="store_true", help="Skip the extractor comparison.")
    args = parser.parse_args()
    paragraphs = squad_paragraphs()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pdfs = {}
        one = work / "one.pdf"
        pdfs["fpdf2, 1 column"] = (one, fpdf_document(one, paragraphs, args.pages, 1))
        two = work / "two.pdf"
        pdfs["fpdf2, 2 columns"] = (two, fpdf_document(two, paragraphs, args.pages, 2))
        lo = work / "office.pdf"
        written = None if args.only_index else libreoffice_document(lo, paragraphs, args.lo_paragraphs)
        if written is not None:
            pdfs["LibreOffice, 2 columns, hyphenated"] = (lo, written)
        if not args.only_index:
            compare(pdfs, args.repeats)
        cli_index(one, work)
        if args.tokenizer:
            cli_index(one, work, args.tokenizer)


if __name__ == "__main__":
    main()
