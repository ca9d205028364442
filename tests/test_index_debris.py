"""A first ``index`` that fails or is interrupted leaves nothing behind; a failed rebuild or update
keeps the old index; what an older or killed build left gets a message naming the command that works
(issue 27, item 5)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from squadkit.cli import app
from squadkit.errors import SquadkitError
from squadkit.retrieval import Index, build_index, search
from squadkit.retrieval import engine
from squadkit.retrieval import index as ix
from squadkit.retrieval.writer import IndexWriter

runner = CliRunner()


def _docs(folder: Path, n: int = 6, word: str = "paris") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"d{i}.txt").write_text(f"document {i} about {word} and the river .\n" * 5)
    return folder


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _fail_on_third_file(monkeypatch, error: BaseException) -> None:
    real = ix.read_documents
    count = [0]

    def read(path, name):
        count[0] += 1
        if count[0] == 3:
            raise error
        return real(path, name)

    monkeypatch.setattr(ix, "read_documents", read)


def test_a_first_index_of_nothing_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    before = _tree(tmp_path)
    for out in ("n.sqlite", "new/deeper/n.sqlite"):
        result = runner.invoke(app, ["index", "empty", "-o", out])
        assert result.exit_code == 2 and "nothing to index" in result.output
        assert _tree(tmp_path) == before  # no 0-byte file, no .search folder, no journal, no new folders


@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("reader crashed")], ids=["ctrl-c", "exception"])
def test_a_first_build_interrupted_leaves_nothing(tmp_path, monkeypatch, error):
    folder = _docs(tmp_path / "docs")
    before = _tree(tmp_path)
    _fail_on_third_file(monkeypatch, error)
    with pytest.raises(type(error)):
        build_index([folder], tmp_path / "out" / "n.sqlite")
    assert _tree(tmp_path) == before
    monkeypatch.undo()
    assert build_index([folder], tmp_path / "n.sqlite").files_added == 6


@pytest.mark.parametrize("rebuild", [False, True], ids=["update", "rebuild"])
def test_a_failed_update_or_rebuild_keeps_the_old_index(tmp_path, monkeypatch, rebuild):
    folder = _docs(tmp_path / "docs")
    idx = tmp_path / "n.sqlite"
    build_index([folder], idx)
    hits = [(h.document, h.start, h.end) for h in search(idx, "paris river", k=10)]
    engines = sorted(p.name for p in engine.search_folder(idx).iterdir())
    _docs(folder, word="mountain")  # every file changes
    _fail_on_third_file(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        build_index([folder], idx, rebuild=rebuild)
    assert [(h.document, h.start, h.end) for h in search(idx, "paris river", k=10)] == hits
    assert sorted(p.name for p in engine.search_folder(idx).iterdir()) == engines  # its new folder went
    assert not Path(str(idx) + "-journal").exists()


def test_a_killed_first_build_names_the_plain_rerun_that_works(tmp_path):
    folder = _docs(tmp_path / "docs")
    idx = tmp_path / "n.sqlite"
    idx.touch()  # what kill -9 during a first build leaves, once SQLite rolled its journal back
    (engine.search_folder(idx) / "bm25-0123456789ab").mkdir(parents=True)
    result = runner.invoke(app, ["search", str(idx), "paris"])
    assert result.exit_code == 2 and result.output.strip().count("\n") == 0
    assert "never finished" in result.output and result.output.rstrip().endswith(f"squadkit index PATH... --output {idx}")
    assert build_index([folder], idx).files_added == 6 and len(search(idx, "paris", k=10)) == 6
    assert len(list(engine.search_folder(idx).iterdir())) == 1  # the killed build's folder went


def test_an_incomplete_index_is_rebuilt_as_its_message_says(tmp_path):
    folder = _docs(tmp_path / "docs")
    idx = tmp_path / "n.sqlite"
    build_index([folder], idx)
    with sqlite3.connect(idx) as conn:  # an index whose build was never recorded as finished
        conn.execute("DELETE FROM meta WHERE key = 'complete'")
    with pytest.raises(SquadkitError, match="--rebuild"):
        Index(idx)
    with pytest.raises(SquadkitError, match="--rebuild"):
        build_index([folder], idx)
    assert build_index([folder], idx, rebuild=True).documents == 6
    assert len(search(idx, "paris", k=10)) == 6


def test_a_writer_waiting_on_a_failed_first_build_builds_on_a_new_file(tmp_path):
    folder = _docs(tmp_path / "docs")
    idx = tmp_path / "n.sqlite"
    first = IndexWriter(idx)  # holds the write lock of a first build
    done: list = []
    waiter = threading.Thread(target=lambda: done.append(build_index([folder], idx)))
    waiter.start()
    time.sleep(1.0)  # the second writer opens the file and waits for the lock
    first.__exit__(RuntimeError, RuntimeError("failed"), None)  # the first fails: its file is removed
    waiter.join(60)
    assert done and done[0].files_added == 6
    assert len(search(idx, "paris", k=10)) == 6  # the second build is the file at the path
