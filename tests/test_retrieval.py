"""Ask your documents: reading and splitting, the index (offsets, incremental, crash-safe), search,
ranking answers across passages, the CLI, the server endpoint and the page tab."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from squadkit.cli import app
from squadkit.decode import NBestEntry
from squadkit.errors import SquadkitError
from squadkit.retrieval import (
    DocumentQA,
    Hit,
    Index,
    IndexSettings,
    build_index,
    rank_answers,
    reader_threshold,
    search,
    split_passages,
)
from squadkit.retrieval.documents import SkipFile, read_documents, regex_token_offsets, tokenizer_offsets_fn
from squadkit.retrieval.store import INDEX_FORMAT
from squadkit.retrieval.search import fts_query

SRC = Path(__file__).resolve().parents[1] / "src"
runner = CliRunner()

# Windows line endings, accents, non-Latin scripts and an emoji (one code point, two UTF-16 units)
UNICODE_CRLF = ("the old king was born in rome .\r\n\r\n"
                "Zoë said the queen 👑 was born in london , not in paris .\r\n\r\n"
                "東京 is a city . the river seine flows through paris .\r\n")


def write_collection(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kings.txt").write_bytes(UNICODE_CRLF.encode("utf-8"))
    (folder / "notes.md").write_text("# music\n\nthe red team won the game in paris .\n\nthe blue team lost .\n",
                                     encoding="utf-8")
    (folder / "page.html").write_text("<html><head><title>Rivers</title><script>var x = 1;</script></head><body>"
                                      "<h1>Rivers</h1><p>the river thames flows through london &amp; oxford .</p>"
                                      "</body></html>", encoding="utf-8")
    records = [{"id": "r1", "text": "the capital of france is paris .", "source": "atlas", "year": 1999},
               {"id": "r2", "text": "", "source": "empty"}]
    (folder / "records.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    (folder / "blob.txt").write_bytes(b"\x89PNG\x00\x00binary")
    (folder / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    return folder


def doc_text(index_path: Path, name: str) -> str:
    with Index(index_path) as idx:
        return idx.document_text(name)


# ---------------------------------------------------------------------------------------------
# reading and splitting
# ---------------------------------------------------------------------------------------------


def test_split_keeps_exact_offsets_paragraphs_and_length_limit():
    text = UNICODE_CRLF + "\r\n" + " ".join(f"w{i}" for i in range(50)) + "\r\n"
    offsets = regex_token_offsets(text)
    passages = split_passages(text, offsets, max_tokens=12, overlap=3)
    for p in passages:
        chunk = text[p.start : p.end]
        assert chunk == chunk.strip() and chunk  # no leading/trailing whitespace or \r
        n = ((offsets[:, 0] >= p.start) & (offsets[:, 1] <= p.end)).sum()
        assert n <= 12
    # paragraphs that fit are not cut: each short paragraph is exactly one passage
    assert any(text[p.start : p.end] == "the old king was born in rome ." for p in passages)
    assert any(text[p.start : p.end].startswith("Zoë said the queen 👑") for p in passages)
    # the 50-word paragraph is cut into windows sharing 3 tokens
    long = [text[p.start : p.end].split() for p in passages if text[p.start : p.end].startswith("w")]
    assert len(long) >= 5 and long[0][-3:] == long[1][:3]
    assert long[0][0] == "w0" and long[-1][-1] == "w49"


def test_split_packs_small_paragraphs_up_to_the_limit():
    text = "a b c\n\nd e f\n\ng h i\n\nj k l"
    passages = split_passages(text, regex_token_offsets(text), max_tokens=6, overlap=0)
    assert [text[p.start : p.end] for p in passages] == ["a b c\n\nd e f", "g h i\n\nj k l"]


def test_split_in_reader_tokens(tmp_path, tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    text = "normandy normandy normandy normandy\n\n" * 3
    offsets = tokenizer_offsets_fn(tok)(text)
    # the tiny vocabulary spells "normandy" as one token; each paragraph is 4 tokens
    assert len(offsets) == 12
    passages = split_passages(text, offsets, max_tokens=8, overlap=2)
    assert len(passages) == 2


def test_readers(tmp_path, squad_dev_path):
    folder = write_collection(tmp_path / "docs")
    (doc,) = read_documents(folder / "page.html", "page.html")
    assert doc.title == "Rivers" and "var x" not in doc.text and "london & oxford" in doc.text
    docs = list(read_documents(folder / "records.jsonl", "records.jsonl"))
    assert docs[0].name == "records.jsonl#r1" and docs[0].metadata == {"source": "atlas", "year": 1999}
    (kings,) = read_documents(folder / "kings.txt", "kings.txt")
    assert kings.text == UNICODE_CRLF  # \r\n kept: offsets are into the file's own text
    with pytest.raises(SkipFile, match="binary"):
        list(read_documents(folder / "blob.txt", "blob.txt"))
    with pytest.raises(SkipFile, match="UTF-8"):
        list(read_documents(folder / "latin1.txt", "latin1.txt"))
    squad = list(read_documents(squad_dev_path, "dev.json"))
    assert len(squad) == 87 and squad[0].title == "Normans" and squad[0].name == "dev.json#Normans/0"


# ---------------------------------------------------------------------------------------------
# index and search
# ---------------------------------------------------------------------------------------------


def test_index_search_offsets_are_exact_on_unicode_and_crlf(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = write_collection(tmp_path / "docs")
    report = build_index([folder], tmp_path / "idx.sqlite", IndexSettings(max_tokens=16, overlap=4))
    assert sorted(f for f, _ in report.skipped) == ["docs/blob.txt", "docs/latin1.txt"]
    assert report.empty_documents == ["docs/records.jsonl#r2"]
    assert report.files_added == 4 and report.documents == 4
    hits = search(tmp_path / "idx.sqlite", "where was the queen born", k=3)
    assert hits[0].document == "docs/kings.txt" and "queen 👑" in hits[0].text
    for query in ("queen london", "paris", "東京", "thames oxford", "capital france"):
        for hit in search(tmp_path / "idx.sqlite", query, k=5):
            assert doc_text(tmp_path / "idx.sqlite", hit.document)[hit.start : hit.end] == hit.text
    kings = search(tmp_path / "idx.sqlite", "Zoë", k=1)[0]
    assert kings.document == "docs/kings.txt"
    assert UNICODE_CRLF[kings.start : kings.end] == kings.text  # offsets into the file's text itself
    jsonl = search(tmp_path / "idx.sqlite", "capital of france", k=1)[0]
    assert jsonl.document == "docs/records.jsonl#r1" and jsonl.metadata == {"source": "atlas", "year": 1999}


def test_fts_query_quotes_words_and_keeps_stop_word_only_questions():
    assert fts_query('What is "NEAR" AND NOT x*?') == '"near" OR "x"'
    assert fts_query("who is it") == '"who" OR "is" OR "it"'
    with pytest.raises(SquadkitError, match="no words"):
        fts_query("?!")


def test_proximity_puts_the_passage_with_the_question_s_words_together_first(tmp_path):
    """Two passages with the same words (and the same length): the one where the question's neighbouring
    words stand together (in the question's order, stemmed as the index stems them) ranks first; plain
    BM25 cannot tell them apart and keeps index order."""
    from squadkit.retrieval import Index, index_documents
    from squadkit.retrieval.documents import Document
    from squadkit.retrieval.search import BM25Retriever

    apart = "The mill was near the river by the old bridge built in spring."
    together = "The mill was built in spring by the river near the old bridge."  # the same words
    filler = [Document(f"f{i}", f"Unrelated note number {i} about gardens and weather.") for i in range(5)]
    index_documents([Document("apart", apart), Document("together", together), *filler], tmp_path / "i.sqlite")
    with Index(tmp_path / "i.sqlite") as index:
        question = "When was the mill built?"  # "mill" then "built" (porter: build) within 3 tokens
        plain = [h.document for h in BM25Retriever(index, proximity=False).search(question, 2)]
        ranked = BM25Retriever(index).search(question, 2)
        assert plain == ["apart", "together"]
        assert [h.document for h in ranked] == ["together", "apart"] and ranked[0].score > ranked[1].score
        # one content word: nothing to re-rank, the same order as plain BM25
        assert [h.document for h in BM25Retriever(index).search("the mill", 2)] == plain


def test_a_passage_with_every_question_word_in_one_sentence_ranks_first(tmp_path):
    """The same words again, none of the question's word pairs close together in either passage: the one
    whose single sentence holds all of "king", "founded" and "abbey" outranks the one that spreads them
    over two sentences."""
    from squadkit.retrieval import Index, index_documents
    from squadkit.retrieval.documents import Document
    from squadkit.retrieval.search import BM25Retriever, split_sentences

    spread = "The abbey was rich and famous in the whole region. Long ago a king of great renown founded many towns by tradition."
    one = "The abbey was rich and famous in the whole region by tradition, founded long ago, a king of great renown, many towns."
    assert len(split_sentences(spread)) == 2 and split_sentences(one) == [one]
    filler = [Document(f"f{i}", f"Unrelated note number {i} about gardens and weather.") for i in range(5)]
    index_documents([Document("spread", spread), Document("one", one), *filler], tmp_path / "i.sqlite")
    with Index(tmp_path / "i.sqlite") as index:
        question = "Which king founded the abbey?"
        assert [h.document for h in BM25Retriever(index, proximity=False).search(question, 2)] == ["spread", "one"]
        assert [h.document for h in BM25Retriever(index).search(question, 2)] == ["one", "spread"]


def test_the_question_s_words_as_written_break_a_tie_of_stems(tmp_path):
    """"restored" and "restoration" share porter's stem, so BM25, proximity and sentences cannot tell
    the two passages apart; the passage holding the word as the question writes it ranks first.
    Accents fold in both tokenizations (Beyonce matches Beyoncé)."""
    from squadkit.retrieval import Index, index_documents
    from squadkit.retrieval.documents import Document
    from squadkit.retrieval.search import BM25Retriever

    stem = "The hall was restoration work by Beyoncé in the spring of that year."
    exact = "The hall was restored work by Beyoncé in the spring of that year."
    filler = [Document(f"f{i}", f"Unrelated note number {i} about gardens and weather.") for i in range(5)]
    index_documents([Document("stem", stem), Document("exact", exact), *filler], tmp_path / "i.sqlite")
    with Index(tmp_path / "i.sqlite") as index:
        question = "Who restored the hall of Beyonce?"
        plain = BM25Retriever(index, proximity=False).search(question, 2)
        assert [h.document for h in plain] == ["stem", "exact"] and plain[0].score == pytest.approx(plain[1].score)
        ranked = BM25Retriever(index).search(question, 2)
        assert [h.document for h in ranked] == ["exact", "stem"] and ranked[0].score > ranked[1].score
        tokens = BM25Retriever(index)._tokenize("restored hall beyonce", [stem, exact])
        assert tokens.stem_of == {"restored": "restor", "hall": "hall", "beyonce": "beyonc"}
        assert set(tokens.exact[1]) == {"hall", "beyonce"} and set(tokens.exact[2]) == {"restored", "hall", "beyonce"}
        assert tokens.lengths == {1: 13, 2: 13}


def test_incremental_reindex_updates_only_what_changed(tmp_path):
    folder = write_collection(tmp_path / "docs")
    idx = tmp_path / "idx.sqlite"
    first = build_index([folder], idx)
    assert first.files_added == 4
    again = build_index([folder], idx)
    assert (again.files_added, again.files_updated, again.files_unchanged, again.files_removed) == (0, 0, 4, 0)
    assert again.passages_added == 0 and again.passages == first.passages
    # same bytes, new mtime: recognised by hash, not re-read
    os.utime(folder / "notes.md", ns=(1, 1))
    assert build_index([folder], idx).files_unchanged == 4
    (folder / "notes.md").write_text("the green team won the cup in rome .\n", encoding="utf-8")
    (folder / "page.html").unlink()
    (folder / "new.txt").write_text("a new file about the mountain .\n", encoding="utf-8")
    third = build_index([folder], idx)
    assert (third.files_added, third.files_updated, third.files_unchanged, third.files_removed) == (1, 1, 2, 1)
    assert third.passages_added == 2
    assert search(idx, "green team cup", k=1)[0].text == "the green team won the cup in rome ."
    assert all("red team" not in h.text for h in search(idx, "red team game", k=10))
    assert all("thames" not in h.text for h in search(idx, "thames oxford", k=10))
    assert search(idx, "mountain", k=1)[0].document.endswith("new.txt")
    # the keyword engine holds exactly the live passages (deleted ones really went)
    with Index(idx) as index:
        live = index.counts()["passages"]
        assert len(index.bm25(["team"], 10)) == 1
        assert index.searcher.num_docs == live
    assert live == third.passages


def test_index_settings_change_resplits_everything(tmp_path):
    folder = write_collection(tmp_path / "docs")
    idx = tmp_path / "idx.sqlite"
    build_index([folder], idx, IndexSettings(max_tokens=256, overlap=0))
    small = build_index([folder], idx, IndexSettings(max_tokens=8, overlap=2))
    assert small.files_updated == 4 and small.passages > 4
    with Index(idx) as index:
        assert index.settings.max_tokens == 8
    # a re-run without the flags keeps the index's settings: nothing to re-split
    result = runner.invoke(app, ["index", str(folder), "-o", str(idx)])
    assert result.exit_code == 0 and json.loads(result.stdout[result.stdout.index("{"):])["files_unchanged"] == 4
    result = runner.invoke(app, ["index", str(folder), "-o", str(idx), "--overlap", "1"])
    assert json.loads(result.stdout[result.stdout.index("{"):])["files_updated"] == 4
    with Index(idx) as index:
        assert (index.settings.max_tokens, index.settings.overlap) == (8, 1)


CRASH_SCRIPT = textwrap.dedent("""
    import os, sys
    from squadkit.retrieval import index as ix, writer
    real_connect = writer.connect
    def tiny_cache(*a, **k):  # spill every page to disk at once, so the crash leaves a real half-write
        conn = real_connect(*a, **k)
        conn.execute("PRAGMA cache_size=2")
        return conn
    writer.connect = tiny_cache
    real_add = ix.IndexWriter.add_document
    count = 0
    def add(self, doc, file_id=None):
        global count
        count += 1
        if count == int(sys.argv[3]):
            os._exit(17)  # as kill -9: no rollback, no cleanup
        return real_add(self, doc, file_id)
    ix.IndexWriter.add_document = add
    ix.build_index([sys.argv[1]], sys.argv[2])
""")


def _crash_index(folder: Path, idx: Path, after_docs: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(folder), str(idx), str(after_docs)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 17, proc.stderr


def _write_docs(folder: Path, n: int, line: str, repeat: int) -> Path:
    """``n`` text files d00.txt ... whose text is ``line`` (formatted with the file's number) ``repeat`` times."""
    folder.mkdir(exist_ok=True)
    for i in range(n):
        (folder / f"d{i:02d}.txt").write_text(line.format(i=i) * repeat)
    return folder


def test_crash_mid_index_leaves_the_previous_index(tmp_path):
    folder = _write_docs(tmp_path / "docs", 30, "document {i} about the city of paris and the river .\n", 20)
    idx = tmp_path / "idx.sqlite"
    before = build_index([folder], idx)
    expected = [(h.document, h.start, h.end) for h in search(idx, "paris river", k=50)]
    _write_docs(folder, 30, "changed {i} about the mountain .\n", 20)  # every file changes; the crash comes after 20
    _crash_index(folder, idx, after_docs=20)
    assert Path(str(idx) + "-journal").exists()  # the crash really happened mid-write
    with Index(idx) as index:  # opening rolls the half-written transaction back
        assert index.counts()["passages"] == before.passages
        assert index.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not Path(str(idx) + "-journal").exists()
    assert [(h.document, h.start, h.end) for h in search(idx, "paris river", k=50)] == expected
    assert search(idx, "mountain", k=5) == []
    after = build_index([folder], idx)  # and the next run completes the update
    assert after.files_updated == 30 and len(search(idx, "mountain", k=50)) == 30


def test_crash_during_the_first_build_is_never_read_as_an_index(tmp_path):
    folder = _write_docs(tmp_path / "docs", 10, "document {i} about paris .\n", 50)
    idx = tmp_path / "idx.sqlite"
    _crash_index(folder, idx, after_docs=5)
    result = runner.invoke(app, ["search", str(idx), "paris"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "first build that never finished" in result.output
    assert f"squadkit index PATH... --output {idx}" in result.output and "--rebuild" not in result.output
    assert build_index([folder], idx).files_added == 10  # the plain re-run the message gives works
    assert len(search(idx, "paris", k=20)) == 10


def test_bad_indexes_and_bad_input_are_one_line_errors(tmp_path):
    folder = write_collection(tmp_path / "docs")
    idx = tmp_path / "idx.sqlite"
    build_index([folder], idx)
    # from a newer squadkit
    newer = tmp_path / "newer.sqlite"
    newer.write_bytes(idx.read_bytes())
    with sqlite3.connect(newer) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'format'", (str(INDEX_FORMAT + 1),))
    not_index = tmp_path / "other.sqlite"
    with sqlite3.connect(not_index) as conn:
        conn.execute("CREATE TABLE t(x)")
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    cases = [
        (["search", str(newer), "paris"], "newer squadkit"),
        (["search", str(not_index), "paris"], "not a squadkit index"),
        (["search", str(garbage), "paris"], "not a squadkit index"),
        (["search", str(tmp_path / "missing.sqlite"), "paris"], "index not found"),
        (["search", str(idx), "paris", "-k", "0"], "--k must be a positive integer"),
        (["search", str(idx), "?!"], "no words"),
        (["search", str(idx), "paris", "--retriever", "dense"], "no embeddings"),
        (["ask", str(idx), "where?", "-k", "0", "--model", str(tmp_path / "no-model")], "k must be"),
        (["index", str(tmp_path / "nowhere"), "-o", str(idx)], "no such file or folder"),
        (["index", str(folder / "blob.txt"), "-o", str(tmp_path / "x.sqlite")], "nothing to index"),
        (["index", str(folder), "-o", str(not_index)], "not a squadkit index"),
        (["index", str(folder), "-o", str(idx), "--max-tokens", "4"], "--max-tokens must be an integer >= 8"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and result.output.startswith("error: "), (args, result.output)
        assert result.output.strip().count("\n") == 0, result.output
    assert not (tmp_path / "missing.sqlite").exists()  # a query never creates an index
    # a failed index run changed nothing: x.sqlite holds no index, idx is as it was
    with pytest.raises(SquadkitError):
        Index(tmp_path / "x.sqlite")
    assert search(idx, "queen london", k=1)[0].document.endswith("kings.txt")
    # a stop-word-only question finds nothing, with a note (test_search_reads.py)
    assert runner.invoke(app, ["search", str(idx), "who was it"]).exit_code == 0


def test_cli_index_and_search_print_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_collection(tmp_path / "docs")
    result = runner.invoke(app, ["index", "docs", "--output", "idx.sqlite", "--max-tokens", "32", "--overlap", "4"])
    assert result.exit_code == 0, result.output
    assert "skipped: docs/blob.txt: binary file" in result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["documents"] == 4 and summary["files_added"] == 4
    result = runner.invoke(app, ["search", "idx.sqlite", "where was the queen born", "-k", "2"])
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert 1 <= len(lines) <= 2 and set(lines[0]) >= {"document", "start", "end", "text", "score"}
    assert lines[0]["document"] == "docs/kings.txt"
    assert UNICODE_CRLF[lines[0]["start"] : lines[0]["end"]] == lines[0]["text"]
    assert lines == sorted(lines, key=lambda h: -h["score"])


# ---------------------------------------------------------------------------------------------
# ranking across passages
# ---------------------------------------------------------------------------------------------


def _hit(i: int, text: str) -> Hit:
    return Hit(i, f"doc{i}", 100 * i, 100 * i + len(text), text, score=10.0 - i)


def test_answers_are_ranked_on_logits_not_per_passage_softmax():
    a = _hit(1, "paris is in france")
    b = _hit(2, "london is in england , rome in italy")
    # passage a: one candidate, probability ~1 inside its passage, but a low logit sum (3.0)
    nb_a = [NBestEntry("paris", 1.5, 1.5, probability=0.99, start=0, end=5), NBestEntry("", -4.0, -4.0)]
    # passage b: candidates spread out, each with a low per-passage probability but higher logits
    nb_b = [NBestEntry("london", 3.0, 2.0, probability=0.4, start=0, end=6),
            NBestEntry("rome", 2.9, 2.0, probability=0.35, start=23, end=27), NBestEntry("", 0.0, 0.0)]
    result = rank_answers("q", [a, b], [nb_a, nb_b], threshold=0.0, top_k=3)
    assert [x.answer for x in result.answers] == ["london", "rome", "paris"]
    assert result.answers[0].document == "doc2" and result.answers[0].start == 200 and result.answers[0].end == 206
    assert result.answers[2].retrieval_rank == 1
    assert result.null_score == -8.0 and not result.no_answer
    # probabilities: one softmax over every span of every passage and the no-answer score
    expected = np.exp([5, 4.9, 3, -8]) / np.exp([5, 4.9, 3, -8]).sum()
    assert np.allclose([x.probability for x in result.answers], expected[:3])


def test_abstains_when_the_lowest_null_beats_the_best_span_by_the_threshold():
    a = _hit(0, "some text here")
    nb = [NBestEntry("", 4.0, 4.0), NBestEntry("text", 2.0, 1.0, start=5, end=9)]
    other = [NBestEntry("", 5.0, 5.0), NBestEntry("here", 0.5, 0.5, start=10, end=14)]
    # min null over passages = 8; best span = 3: 8 - 3 = 5
    assert rank_answers("q", [a, a], [nb, other], threshold=4.9).no_answer
    kept = rank_answers("q", [a, a], [nb, other], threshold=5.1)
    assert not kept.no_answer and kept.answer == "text"
    assert rank_answers("q", [], [], threshold=0.0).no_answer  # nothing retrieved: abstain
    # the same span read in two overlapping passages is one answer
    twice = rank_answers("q", [a, a], [nb, nb], threshold=100.0, top_k=5)
    assert [x.answer for x in twice.answers] == ["text"]


def test_the_retrieval_weight_ranks_spans_on_their_passages_retrieval_score_too():
    from squadkit.retrieval.ask import retrieval_prior

    a = Hit(1, "doc1", 0, 18, "paris is in france", score=12.0)
    b = Hit(2, "doc2", 0, 20, "london is in england", score=6.0)
    c = Hit(3, "doc3", 0, 18, "rome is in italy !", score=3.0)
    nbests = [[NBestEntry("paris", 1.5, 1.5, start=0, end=5), NBestEntry("", -4.0, -4.0)],
              [NBestEntry("london", 3.0, 2.0, start=0, end=6), NBestEntry("", 0.0, 0.0)],
              [NBestEntry("rome", 2.0, 2.0, start=0, end=4), NBestEntry("", -0.5, -0.5)]]
    z = (np.array([12.0, 6.0, 3.0]) - 7.0) / np.sqrt(14.0)  # z-scored over the passages read
    assert np.allclose(retrieval_prior([a, b, c], 2.0), 2.0 * z)
    ranked = {w: rank_answers("q", [a, b, c], nbests, threshold=0.0, top_k=3, retrieval_weight=w)
              for w in (0.0, 1.0, 2.0)}
    # spans 3.0, 5.0, 4.0 (+ w z): the reader's order at 0; london, then paris at 1; paris first at 2
    assert [x.answer for x in ranked[0.0].answers] == ["london", "rome", "paris"]
    assert [x.answer for x in ranked[1.0].answers] == ["london", "paris", "rome"]
    assert [x.answer for x in ranked[2.0].answers] == ["paris", "london", "rome"]
    assert [x.score for x in ranked[2.0].answers] == [3.0, 5.0, 4.0]  # the reader's own scores are kept
    probs = [x.probability for x in ranked[2.0].answers]
    assert probs == sorted(probs, reverse=True)  # probabilities follow the ranking
    assert ranked[2.0].to_dict()["retrieval_weight"] == 2.0 and "retrieval_weight" not in ranked[0.0].to_dict()
    # the abstain decision compares the null with the chosen span's own score (-8 - 3 = -11), not with its
    # ranking score (3 + 2z = 5.67), so the threshold means what it means without the weight
    assert rank_answers("q", [a, b, c], nbests, threshold=-12.0, retrieval_weight=2.0).no_answer
    assert not rank_answers("q", [a, b, c], nbests, threshold=-10.9, retrieval_weight=2.0).no_answer
    # one passage, or passages scored alike: nothing to tell them apart, the reader's order
    same = [Hit(h.passage_id, h.document, h.start, h.end, h.text, 5.0) for h in (a, b, c)]
    assert rank_answers("q", same, nbests, 0.0, 3, retrieval_weight=4.0).to_dict()["answers"] == \
        rank_answers("q", same, nbests, 0.0, 3).to_dict()["answers"]
    assert retrieval_prior([a], 4.0) == [0.0]


# ---------------------------------------------------------------------------------------------
# ask with a real (tiny) model
# ---------------------------------------------------------------------------------------------


def test_ask_answers_point_into_the_documents(docs_index, tiny_bert):
    from squadkit.predict import predict_squad
    from squadkit.settings import AnswerSettings
    from squadkit.retrieval.ask import _Example

    dqa = DocumentQA(docs_index, model=str(tiny_bert), threshold=1e9)  # never abstain: check the spans
    result = dqa.ask("where was the queen born", k=4, top_k=5)
    assert not result.no_answer and result.answers
    assert [a.score for a in result.answers] == sorted((a.score for a in result.answers), reverse=True)
    for a in result.answers:
        text = dqa.index.document_text(a.document)
        assert text[a.start : a.end] == a.answer
        assert text[a.passage_start : a.passage_end] == a.passage
        assert a.passage_start <= a.start < a.end <= a.passage_end
    # the best answer is the reader's best span over the retrieved passages, by logits
    hits = dqa.retriever.search("where was the queen born", 4)
    preds = predict_squad(dqa.model, [_Example(str(j), "where was the queen born", h.text) for j, h in enumerate(hits)],
                          AnswerSettings(version_2_with_negative=True))
    best = max(((e.start_logit + e.end_logit, h.start + e.start) for j, h in enumerate(hits)
                for e in preds.nbest[str(j)] if e.start is not None), key=lambda t: t[0])
    assert abs(result.answers[0].score - best[0]) < 1e-4 and result.answers[0].start == best[1]
    null = min(e.start_logit + e.end_logit for j in range(len(hits)) for e in preds.nbest[str(j)]
               if e.text == "" and e.start is None)
    assert abs(result.null_score - null) < 1e-4


def test_ask_uses_the_models_saved_threshold(docs_index, tiny_bert, tmp_path):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    (model / "squadkit.json").write_text(json.dumps({"null_score_diff_threshold": 1e6}))
    dqa = DocumentQA(docs_index, model=str(model))
    assert reader_threshold(dqa.model) == 1e6
    assert not dqa.ask("where was the queen born").no_answer
    (model / "squadkit.json").write_text(json.dumps({"null_score_diff_threshold": -1e6}))
    abstaining = DocumentQA(docs_index, model=str(model))
    result = abstaining.ask("where was the queen born", top_k=2)
    assert result.no_answer and result.answer == "" and result.to_dict()["no_answer"] is True
    assert len(result.answers) == 2  # the rejected candidates are still shown


def test_cli_ask(docs_index, tiny_bert):
    result = runner.invoke(app, ["ask", str(docs_index), "where was the queen born", "--model", str(tiny_bert),
                                 "-k", "3", "--top-k", "2", "--threshold", "1e9", "--passages"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["answer"] == out["answers"][0]["answer"] and len(out["answers"]) == 2
    best = out["answers"][0]
    assert doc_text(docs_index, best["document"])[best["start"] : best["end"]] == best["answer"]
    assert set(best) >= {"answer", "score", "document", "start", "end", "passage"}
    assert 1 <= len(out["passages"]) <= 3


def test_dense_and_hybrid_retrieval(tmp_path, tiny_bert):
    from squadkit.retrieval.embedder import SentenceEmbedder

    folder = write_collection(tmp_path / "docs")
    idx = tmp_path / "idx.sqlite"
    embedder = SentenceEmbedder(str(tiny_bert))  # any encoder folder works; a real one is all-MiniLM-L6-v2
    report = build_index([folder], idx, embedder=embedder)
    assert report.embedded == report.passages
    for kind in ("dense", "hybrid"):
        hits = search(idx, "where was the queen born", k=3, retriever=kind)
        assert len(hits) == 3 and len({h.passage_id for h in hits}) == 3
        for h in hits:
            assert doc_text(idx, h.document)[h.start : h.end] == h.text
    # a passage's own text is its nearest neighbour
    kings = search(idx, "Zoë", k=1)[0]
    assert search(idx, kings.text, k=1, retriever="dense")[0].passage_id == kings.passage_id
    # incremental: new passages are embedded too
    (folder / "more.txt").write_text("the mountain is big .\n")
    assert build_index([folder], idx, embedder=embedder).embedded == report.passages + 1
    # a plain re-run keeps the index's own embedder (issue 18: it was refused), and embeds what is new
    (folder / "again.txt").write_text("the valley is small .\n")
    kept = build_index([folder], idx)
    assert kept.files_added == 1 and kept.embedded == kept.passages == report.passages + 2
    with Index(idx) as index:
        assert index.meta["embedder"] == embedder.name
    # the CLI too: a plain `index` after `--dense`, and --no-dense drops the embeddings
    result = runner.invoke(app, ["index", str(folder), "-o", str(idx)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["embedded"] == kept.passages
    assert build_index([folder], idx, dense=False).embedded == 0
    with Index(idx) as index:
        assert "embedder" not in index.meta


# ---------------------------------------------------------------------------------------------
# the server endpoint
# ---------------------------------------------------------------------------------------------


def test_serve_ask_endpoint(docs_index, tiny_bert):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from squadkit.pipeline import QuestionAnswerer
    from squadkit.serve import ServeSettings, create_app

    qa = QuestionAnswerer(str(tiny_bert), backend="torch", device="cpu")
    expected = DocumentQA(docs_index, qa=qa).ask("where was the queen born", k=3, top_k=2).to_dict()
    with TestClient(create_app(qa, ServeSettings(access_log=False), index=docs_index)) as client:
        r = client.post("/v1/ask", json={"question": "where was the queen born", "k": 3, "top_k": 2})
        assert r.status_code == 200
        assert r.json() == json.loads(json.dumps(expected))
        info = client.get("/v1/index").json()
        assert info["documents"] == 4 and info["retrievers"] == ["bm25"]
        for body, field in [({"question": "x", "k": 0}, "k"), ({"question": ""}, "question"),
                            ({"question": "x", "top_k": 99}, "top_k"), ({"question": "x", "extra": 1}, "extra")]:
            r = client.post("/v1/ask", json=body)
            assert r.status_code == 422 and r.json()["error"].startswith(field), r.json()
        # a question without a word to search for finds nothing: the reader abstains (the schema cannot
        # state "has a word" the way Python's regex reads it, so it is not a refusal over HTTP)
        r = client.post("/v1/ask", json={"question": "?!"})
        assert r.status_code == 200 and r.json()["no_answer"] is True and r.json()["answers"] == []
        r = client.post("/v1/ask", json={"question": "the of and"})  # stop words only: nothing retrieved
        assert r.status_code == 200 and r.json()["no_answer"] is True and r.json()["answers"] == []
        # the schema offers only the retrievers this index supports
        r = client.post("/v1/ask", json={"question": "x", "retriever": "dense"})
        assert r.status_code == 422 and r.json()["error"].startswith("retriever:")
        schema = client.get("/openapi.json").json()["components"]["schemas"]["AskRequest"]["properties"]
        assert "dense" not in json.dumps(schema["retriever"]) and "min_confidence" not in schema  # not calibrated
        # the reader's threshold, per request: +inf-like never abstains, -inf-like always does
        question = {"question": "where was the queen born", "k": 3}
        never = client.post("/v1/ask", json={**question, "null_score_diff_threshold": 1e9}).json()
        always = client.post("/v1/ask", json={**question, "null_score_diff_threshold": -1e9}).json()
        assert never["no_answer"] is False and never["threshold"] == 1e9
        assert always["no_answer"] is True and always["answer"] == "" and always["threshold"] == -1e9
    with TestClient(create_app(qa, ServeSettings(access_log=False))) as client:  # no index: a JSON error saying so
        for r in (client.post("/v1/ask", json={"question": "x"}), client.get("/v1/index")):
            assert r.status_code == 404 and "--index" in r.json()["error"] and r.json()["detail"]
        assert "/v1/ask" not in client.get("/openapi.json").json()["paths"]
    with pytest.raises(SquadkitError, match="index not found"):
        create_app(qa, ServeSettings(), index=docs_index.parent / "missing.sqlite")


def test_short_document_fast_path_matches_the_splitter():
    from squadkit.retrieval.documents import regex_token_count, whole_text_passage

    for text in ("  a b\r\n\r\nc d .\r\n", "one", "x\n\n\n\ny z", UNICODE_CRLF):
        offsets = regex_token_offsets(text)
        assert regex_token_count(text) == len(offsets)
        assert split_passages(text, offsets, max_tokens=len(offsets), overlap=0) == whole_text_passage(text)
    assert whole_text_passage(" \r\n ") == [] == split_passages(" \r\n ", regex_token_offsets(" \r\n "), 8, 0)


def test_any_retriever_stands_in_for_the_index(tiny_bert):
    """The Retriever Protocol is all DocumentQA needs: e.g. a search-engine client, here a list."""
    from squadkit.retrieval import Retriever

    class ListRetriever:
        def __init__(self, docs: dict[str, str]) -> None:
            self.docs = docs

        def search(self, query: str, k: int) -> list[Hit]:
            words = set(query.split())
            ranked = sorted(self.docs.items(), key=lambda d: -len(words & set(d[1].split())))[:k]
            return [Hit(i, name, 0, len(text), text, float(len(words & set(text.split()))))
                    for i, (name, text) in enumerate(ranked)]

    docs = {"a": "the old king was born in rome .", "b": "the red team won the game ."}
    retriever = ListRetriever(docs)
    assert isinstance(retriever, Retriever)
    result = DocumentQA(None, model=str(tiny_bert), retriever=retriever, threshold=1e9).ask("where was the king born", k=1)
    assert result.answers[0].document == "a" and docs["a"][result.answers[0].start : result.answers[0].end] == result.answer


def test_serve_refuses_a_missing_index_before_loading_a_model(tmp_path):
    result = runner.invoke(app, ["serve", "--index", str(tmp_path / "missing.sqlite"), "--model", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "index not found" in result.output
