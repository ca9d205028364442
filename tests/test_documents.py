"""The files people have: PDF (pages), Word .docx, text with a byte-order mark; pages on hits and
answers; GET /v1/documents/{id}. Every PDF and Word file here is made by the test itself (fpdf2,
python-docx from the test extra); nothing binary is committed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from squadkit.cli import app
from squadkit.errors import SquadkitError
from squadkit.retrieval import DocumentQA, Hit, Index, IndexSettings, build_index, rank_answers, search
from squadkit.retrieval.documents import SkipFile, decode_bytes, page_at, read_documents
from squadkit.retrieval.filetypes import join_pages

runner = CliRunner()

# one distinctive sentence per page, among filler, so a search says which page it found
PAGES = [
    ["The Normans were the people who gave their name to Normandy, a region in France.",
     "Rollo agreed to swear fealty to King Charles III of West Francia."],
    ["Computational complexity theory classifies problems by their inherent difficulty.",
     "A problem is regarded as inherently difficult if its solution requires significant resources."],
    ["The glaciers of the Alps retreated quickly after the little ice age ended.",
     "Meltwater from the Rhone glacier feeds Lake Geneva every summer."],
    ["Caf\xe9 owners in Lyon serve quenelles with a creamy crayfish sauce."],
]


def make_pdf(path: Path, pages: list[list[str]] = PAGES) -> Path:
    """A PDF with a page per list of paragraphs, in a core font (Latin-1 text)."""
    fpdf = pytest.importorskip("fpdf")
    pdf = fpdf.FPDF()
    pdf.set_font("Helvetica", size=11)
    for paragraphs in pages:
        pdf.add_page()
        for text in paragraphs:
            pdf.multi_cell(0, 6, text)
            pdf.ln(4)
    pdf.output(str(path))
    return path


def make_image_pdf(path: Path) -> Path:
    """A 'scanned' PDF: one page holding only an image, no text layer."""
    fpdf = pytest.importorskip("fpdf")
    from PIL import Image  # fpdf2 depends on Pillow

    pdf = fpdf.FPDF()
    pdf.add_page()
    pdf.image(Image.new("RGB", (240, 120), "white"), x=10, y=10, w=120)
    pdf.output(str(path))
    return path


@pytest.fixture(scope="module")
def pdf_index(tmp_path_factory):
    pytest.importorskip("pypdfium2")
    folder = tmp_path_factory.mktemp("pdf") / "docs"
    folder.mkdir()
    make_pdf(folder / "report.pdf")
    (folder / "notes.txt").write_text("the ferry crosses Lake Geneva twice a day .\n", encoding="utf-8")
    idx = folder.parent / "idx.sqlite"
    report = build_index([folder], idx, IndexSettings(max_tokens=12, overlap=2))  # passages inside pages
    assert report.skipped == [] and report.files_added == 2
    return idx


def pdf_document(idx: Path):
    with Index(idx) as index:
        return index.document(next(n for n in _names(index) if n.endswith("report.pdf")))


def _names(index: Index) -> list[str]:
    return [r[0] for r in index.conn.execute("SELECT name FROM documents")]


# ---------------------------------------------------------------------------------------------
# PDF: text, pages, offsets
# ---------------------------------------------------------------------------------------------


def test_pdf_pages_hold_their_own_text(pdf_index):
    doc = pdf_document(pdf_index)
    assert doc.pages is not None and len(doc.pages) == len(PAGES)
    assert doc.metadata["pages"] == [start for start, _ in doc.pages]
    for number, (start, end) in enumerate(doc.pages, 1):
        page_text = " ".join(doc.text[start:end].split())
        for other, paragraphs in enumerate(PAGES, 1):
            for sentence in paragraphs:
                assert (sentence in page_text) == (other == number), (number, sentence)
        # every character of the page maps back to it
        assert {page_at(doc.metadata, i) for i in range(start, end)} == {number}
    assert doc.title == "report"


@pytest.mark.parametrize("query,page", [("fealty Rollo", 1), ("inherently difficult resources", 2),
                                        ("Rhone glacier meltwater", 3), ("quenelles crayfish", 4)])
def test_hits_carry_the_page_and_exact_offsets(pdf_index, query, page):
    hits = search(pdf_index, query, k=3)
    best = hits[0]
    assert best.document.endswith("report.pdf") and best.page == page
    with Index(pdf_index) as index:
        doc = index.document(best.document_id)
        assert doc.name == best.document and index.document(best.document).id == best.document_id
        for hit in hits:
            assert index.document(hit.document_id).text[hit.start : hit.end] == hit.text
            if hit.document.endswith(".pdf"):
                start, end = doc.pages[hit.page - 1]
                assert start <= hit.start < end
            else:
                assert hit.page is None  # not a PDF
    assert best.to_dict()["page"] == page and best.to_dict()["document_id"] == best.document_id


def test_cli_indexes_a_pdf_and_search_prints_the_page(tmp_path, monkeypatch):
    pytest.importorskip("pypdfium2")
    monkeypatch.chdir(tmp_path)
    make_pdf(tmp_path / "report.pdf")
    result = runner.invoke(app, ["index", "report.pdf", "-o", "idx.sqlite"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["documents"] == 1
    result = runner.invoke(app, ["search", "idx.sqlite", "crayfish sauce", "-k", "1"])
    line = json.loads(result.stdout)
    assert line["page"] == 1 and line["document"] == "report.pdf"  # one passage of all pages: its start's page
    result = runner.invoke(app, ["index", "report.pdf", "-o", "idx.sqlite", "--max-tokens", "12", "--overlap", "2"])
    assert result.exit_code == 0, result.output
    line = json.loads(runner.invoke(app, ["search", "idx.sqlite", "crayfish sauce", "-k", "1"]).stdout)
    assert line["page"] == 4 and line["document"] == "report.pdf"
    assert Index(tmp_path / "idx.sqlite").document(line["document_id"]).text[line["start"] : line["end"]] == line["text"]


def test_answers_carry_the_page_of_their_start():
    from squadkit.decode import NBestEntry

    text = "alpha beta\n\ngamma delta\n\nepsilon zeta"
    meta = {"pages": [0, 12, 25]}
    passage = text[6:]  # a passage from page 1 ("beta") to page 3
    hit = Hit(7, "doc.pdf", 6, len(text), passage, 1.0, metadata=meta, page=1, document_id=3)
    nbest = [NBestEntry("gamma", 5.0, 5.0, start=6, end=11), NBestEntry("zeta", 4.0, 4.0, start=27, end=31),
             NBestEntry("beta", 3.0, 3.0, start=0, end=4), NBestEntry("", 0.0, 0.0)]
    result = rank_answers("q", [hit], [nbest], threshold=0.0, top_k=3)
    assert [(a.answer, a.page, a.document_id) for a in result.answers] == [("gamma", 2, 3), ("zeta", 3, 3), ("beta", 1, 3)]
    assert all(text[a.start : a.end] == a.answer for a in result.answers)
    assert result.to_dict()["answers"][0]["page"] == 2
    plain = Hit(1, "doc.txt", 6, len(text), passage, 1.0)  # no pages: None
    assert rank_answers("q", [plain], [nbest[:1]], threshold=0.0).answers[0].page is None


def test_page_at_ignores_metadata_that_is_not_page_starts():
    assert page_at({}, 5) is None and page_at({"pages": 12}, 5) is None  # a JSON-lines record's own field
    assert page_at({"pages": [3, 9]}, 5) is None and page_at({"pages": ["0"]}, 0) is None
    assert [page_at({"pages": [0, 4, 4, 9]}, i) for i in (0, 3, 4, 8, 9, 100)] == [1, 1, 3, 3, 4, 4]


def test_extracted_text_is_mended_and_page_starts_stay_exact():
    pages = ["The group is best-selling.\r\nIt was estab\ufffelished in 1990 and sold best\ufffeselling records; "
             "a \ufb01ne \ufb02ow.\r\nRoman\ufffeGaulish people.\r\n",
             "   \r\n",  # an empty page still counts
             "The Alps and Aus-", "tralia are far apart; a well-\nknown fact, as well-known as the sea-\nside."]
    text, starts = join_pages(pages)
    assert "established" in text and "best-selling records" in text  # hyphenated elsewhere: kept
    assert "a fine flow" in text and "Roman-Gaulish" in text and "\r" not in text and "\ufffe" not in text
    assert "Aus-" not in text and "Australia are far apart" in text  # a word broken across pages, whole on the later
    assert "a well-known fact" in text and "the seaside." in text
    assert len(starts) == 4 and starts[0] == 0
    assert text[starts[2] :].startswith("The Alps") and text[starts[3] :].startswith("Australia")
    assert text[starts[1] : starts[2]] == "\n\n"  # the empty page: nothing between two page breaks
    assert page_at({"pages": starts}, text.index("Australia")) == 4


# ---------------------------------------------------------------------------------------------
# PDFs that cannot be read: skipped with the reason, never a crash
# ---------------------------------------------------------------------------------------------


def test_scanned_encrypted_and_broken_pdfs_are_skipped_with_their_reason(tmp_path, monkeypatch):
    pytest.importorskip("pypdfium2")
    fpdf = pytest.importorskip("fpdf")
    monkeypatch.chdir(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    make_image_pdf(docs / "scan.pdf")
    locked = fpdf.FPDF()
    locked.set_encryption(owner_password="owner", user_password="secret")
    locked.add_page()
    locked.set_font("Helvetica", size=11)
    locked.multi_cell(0, 6, "a secret text")
    locked.output(str(docs / "locked.pdf"))
    good = make_pdf(docs / "good.pdf").read_bytes()
    (docs / "truncated.pdf").write_bytes(good[: len(good) // 3])
    (docs / "notes.txt").write_text("the river seine flows through paris .\n")
    (docs / "fake.docx").write_bytes(b"not a zip at all")
    result = runner.invoke(app, ["index", "docs", "-o", "idx.sqlite"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    reasons = {item["file"]: item["reason"] for item in report["skipped"]}
    assert reasons["docs/scan.pdf"].startswith("no text layer (scanned?)")
    assert reasons["docs/locked.pdf"] == "encrypted PDF (needs a password)"
    assert reasons["docs/truncated.pdf"].startswith("unreadable PDF")
    assert reasons["docs/fake.docx"].startswith("not a Word .docx file")
    assert report["files_added"] == 2 and "skipped: docs/scan.pdf: no text layer (scanned?)" in result.output
    # only scanned PDFs: a one-line refusal naming the reason, exit 2
    result = runner.invoke(app, ["index", "docs/scan.pdf", "-o", "scan.sqlite"])
    assert result.exit_code == 2 and "no text layer" in result.output and "Traceback" not in result.output


def test_a_pdf_without_the_extractor_is_skipped_naming_the_extra(tmp_path, monkeypatch):
    make_pdf(tmp_path / "report.pdf")
    (tmp_path / "notes.txt").write_text("plain text needs nothing .\n")
    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # import pypdfium2 -> ImportError
    with pytest.raises(SkipFile, match=r"squadkit\[documents\]"):
        list(read_documents(tmp_path / "report.pdf", "report.pdf"))
    report = build_index([tmp_path], tmp_path / "idx.sqlite")
    assert [Path(f).name for f, _ in report.skipped] == ["report.pdf"]
    assert "pip install 'squadkit[documents]'" in report.skipped[0][1]
    assert report.files_added == 1


# ---------------------------------------------------------------------------------------------
# Word .docx
# ---------------------------------------------------------------------------------------------


def test_docx_paragraphs_and_tables_in_order_with_exact_offsets(tmp_path):
    docx = pytest.importorskip("docx")
    document = docx.Document()
    document.core_properties.title = "Field notes"
    document.add_heading("Rivers of Europe", level=1)
    document.add_paragraph("The Rhine rises in the Swiss Alps and flows to the North Sea.")
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate([("river", "length"), ("Danube", "2850 km")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    paragraph = document.add_paragraph("Zo\xeb measured the ")
    paragraph.add_run("Loire").bold = True
    paragraph.add_run(" in 2019 \u2014 \u6771\u4eac was next.")
    document.save(tmp_path / "notes.docx")
    (doc,) = read_documents(tmp_path / "notes.docx", "notes.docx")
    assert doc.title == "Field notes" and "pages" not in doc.metadata
    assert doc.text == ("Rivers of Europe\n\nThe Rhine rises in the Swiss Alps and flows to the North Sea.\n\n"
                        "river\tlength\n\nDanube\t2850 km\n\nZo\xeb measured the Loire in 2019 \u2014 \u6771\u4eac was next.")
    idx = tmp_path / "idx.sqlite"
    build_index([tmp_path / "notes.docx"], idx, IndexSettings(max_tokens=8, overlap=1))
    hit = search(idx, "Danube length", k=1)[0]
    with Index(idx) as index:
        assert index.document(hit.document_id).text[hit.start : hit.end] == hit.text and "Danube" in hit.text
    assert hit.page is None


# ---------------------------------------------------------------------------------------------
# text with a byte-order mark
# ---------------------------------------------------------------------------------------------

BOM_TEXT = "Zo\xeb saw the \U0001f451 in \u6771\u4eac .\r\n\r\nthe harbour of marseille is old .\r\n"


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"])
def test_text_with_a_byte_order_mark_is_indexed_exactly(tmp_path, encoding):
    data = BOM_TEXT.encode(encoding)
    if encoding in ("utf-16-le", "utf-16-be", "utf-32-be"):  # Python writes no mark for these: add it
        data = "\ufeff".encode(encoding) + data
    (tmp_path / "notes.txt").write_bytes(data)
    assert decode_bytes(data) == BOM_TEXT
    idx = tmp_path / "idx.sqlite"
    report = build_index([tmp_path / "notes.txt"], idx, IndexSettings(max_tokens=8, overlap=1))
    assert report.skipped == [] and report.passages == 2
    hit = search(idx, "harbour marseille", k=1)[0]
    assert BOM_TEXT[hit.start : hit.end] == hit.text == "the harbour of marseille is old ."


def test_binaries_and_other_encodings_are_still_refused():
    with pytest.raises(SkipFile, match="binary file"):
        decode_bytes(BOM_TEXT.encode("utf-16-le"))  # UTF-16 without a mark: NUL bytes, as binary
    with pytest.raises(SkipFile, match="binary file"):
        decode_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(SkipFile, match="not UTF-8"):
        decode_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(SkipFile, match="UTF-16-LE text, although it starts with that byte-order mark"):
        decode_bytes(b"\xff\xfe" + b"a\x00\x00\xd8")  # a lone surrogate after the mark


# ---------------------------------------------------------------------------------------------
# the Python call and GET /v1/documents/{id}
# ---------------------------------------------------------------------------------------------


def test_index_document_by_id_or_name(pdf_index):
    with Index(pdf_index) as index:
        by_name = index.document("notes.txt" if "notes.txt" in _names(index) else
                                 next(n for n in _names(index) if n.endswith("notes.txt")))
        assert index.document(by_name.id).text == by_name.text and by_name.pages is None
        assert by_name.to_dict()["pages"] is None
        with pytest.raises(SquadkitError, match="no document with id 999"):
            index.document(999)
        with pytest.raises(SquadkitError, match="no document with name 'missing'"):
            index.document("missing")


def test_get_document_endpoint_and_ask_answers_with_pages(pdf_index, tiny_bert):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from squadkit.pipeline import QuestionAnswerer
    from squadkit.serve import ServeSettings, create_app

    qa = QuestionAnswerer(str(tiny_bert), backend="torch", device="cpu")
    with TestClient(create_app(qa, ServeSettings(access_log=False), index=pdf_index)) as client:
        r = client.post("/v1/ask", json={"question": "Where does the Rhone glacier meltwater go?", "k": 3, "top_k": 3})
        assert r.status_code == 200, r.text
        answers = r.json()["answers"]
        assert answers
        for answer in answers:
            doc = client.get(f"/v1/documents/{answer['document_id']}")
            assert doc.status_code == 200
            body = doc.json()
            assert body["name"] == answer["document"]
            assert body["text"][answer["start"] : answer["end"]] == answer["answer"]
            if answer["document"].endswith(".pdf"):
                span = body["pages"][answer["page"] - 1]
                assert span["page"] == answer["page"] and span["start"] <= answer["start"] < span["end"]
                assert body["metadata"]["pages"] == [p["start"] for p in body["pages"]]
            else:
                assert answer["page"] is None and body["pages"] is None
        missing = client.get("/v1/documents/999")
        assert missing.status_code == 404 and missing.json()["error"] == missing.json()["detail"]
        assert "no document with id 999" in missing.json()["error"]
        assert client.get("/v1/documents/abc").status_code == 422
    # the Python reader gives the same pages
    result = DocumentQA(pdf_index, qa=qa, threshold=1e9).ask("Rhone glacier meltwater", k=2, top_k=2)
    for a in result.answers:
        with Index(pdf_index) as index:
            doc = index.document(a.document_id)
        assert doc.text[a.start : a.end] == a.answer and a.page == page_at(doc.metadata, a.start)
