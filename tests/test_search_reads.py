"""Search that reads like search (issue 27, item 6): a query of stop words only finds nothing and
says so; a document named by the question's subject ranks first (the Normandy case)."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from squadkit.cli import app
from squadkit.retrieval import build_index, search

S = importlib.import_module("squadkit.retrieval.search")
runner = CliRunner()

NORMANS = (
    "The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in the 10th and 11th "
    "centuries gave their name to Normandy, a region in France. They were descended from Norse raiders and pirates "
    "from Denmark, Iceland and Norway who, under their leader Rollo, agreed to swear fealty to King Charles III of "
    "West Francia.\n\nThe Norman dynasty had a major political, cultural and military impact on medieval Europe and "
    "even the Near East. The Duchy of Normandy, which they formed by treaty with the French crown, was a great fief "
    "of medieval France, and under Richard I of Normandy was forged into a cohesive and formidable principality.\n"
)
NEW_YORK = (
    "<html><head><title>New York City</title></head><body><h1>New York City</h1>"
    "<p>New York, often called New York City, is the most populous city in the United States, located at the "
    "southern tip of the State of New York on one of the largest natural harbors in the world. With over eight "
    "million residents it is the largest city in the country.</p>"
    "<p>Manhattan is the financial center of the country, and the headquarters of the United Nations are located "
    "there. New York was founded as a trading post by Dutch colonists in 1624; it came under English control in "
    "1664.</p><p>Many of the country's most famous landmarks, such as the Statue of Liberty and Central Park, are "
    "located in the city.</p></body></html>"
)
OTHERS = {
    "rainforest.md": "# Amazon rainforest\n\nThe Amazon rainforest covers much of the Amazon basin of South America.\n",
    "notes.txt": "Meeting notes: the team discussed the schedule, the release plan and the testing strategy.\n",
    "recipes.txt": "To bake bread, mix flour, water, salt and yeast, let the dough rise, then bake it.\n",
}
QUESTION = "In what country is Normandy located?"


@pytest.fixture()
def collection(tmp_path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "normans.txt").write_text(NORMANS)
    (docs / "new_york.html").write_text(NEW_YORK)
    for name, text in OTHERS.items():
        (docs / name).write_text(text)
    idx = tmp_path / "idx.sqlite"
    build_index([docs], idx)
    return idx


def test_the_document_named_by_the_question_ranks_first(collection, monkeypatch):
    hits = search(collection, QUESTION, k=3)
    assert Path(hits[0].document).name == "normans.txt"
    monkeypatch.setattr(S, "TITLE_WEIGHT", 0.0)  # without the title bonus, the case as reported
    assert Path(search(collection, QUESTION, k=3)[0].document).name == "new_york.html"


def test_names_match_by_their_stems_first_letters():
    assert S.name_keys("Normandy") == S.name_keys("normans") == {"norman"}
    assert S.title_share(S.name_keys("where is normandy"), "normans", "docs/normans.pdf") == 1.0
    assert S.title_share(S.name_keys("new harbors"), "New York City", "new_york.html") == pytest.approx(1 / 3)
    assert S.document_name("Normans", "dev.json#Normans/3") == "Normans"  # a record: its title alone


def test_a_query_of_stop_words_only_finds_nothing_and_says_so(collection):
    with pytest.warns(S.StopWordsOnly, match="only stop words"):
        assert search(collection, "the of and", k=5) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert search(collection, "the of Normandy", k=5)  # one content word is enough
    result = runner.invoke(app, ["search", str(collection), "the of and"])
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("note: ") and "stop words" in result.stderr
    result = runner.invoke(app, ["search", str(collection), QUESTION, "-k", "1"])
    assert result.exit_code == 0 and result.stderr == ""
    assert json.loads(result.stdout)["document"].endswith("normans.txt")
