"""The page's Documents tab in headless Chromium: ask the served index, read the highlighted answer.

Same setup as test_serve_browser.py (system Chromium through the playwright package); skips where
either is missing.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("fastapi")

from test_retrieval import write_collection  # noqa: E402
from test_serve_browser import QUIET, browser, chromium_path  # noqa: E402,F401  (the browser fixture)

from squadkit.pipeline import QuestionAnswerer  # noqa: E402
from squadkit.retrieval import DocumentQA, IndexSettings, build_index  # noqa: E402
from squadkit.serve import ServeSettings, create_app, serve_in_thread  # noqa: E402

QUESTION = "where was the queen born"


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_bert):
    """An index and two copies of the tiny model: one that never abstains, one that always does."""
    root = tmp_path_factory.mktemp("browser-docs")
    folder = write_collection(root / "docs")
    idx = root / "idx.sqlite"
    build_index([folder], idx, IndexSettings(tokenizer=str(tiny_bert), max_tokens=24, overlap=4))
    models = {}
    for name, threshold in (("answers", 1e6), ("abstains", -1e6)):
        path = root / name
        shutil.copytree(tiny_bert, path)
        (path / "squadkit.json").write_text(json.dumps({"null_score_diff_threshold": threshold}))
        models[name] = QuestionAnswerer(str(path), backend="torch", device="cpu")
    return idx, models


def ask_documents(page, url: str, question: str) -> None:
    page.goto(url + "/")
    page.get_by_role("tab", name="Documents").click()
    page.get_by_label("Question about the documents").fill(question)
    page.get_by_label("Question about the documents").press("Enter")
    page.wait_for_selector("#docs-result:not([hidden]), #docs-error:not([hidden])", timeout=20_000)


def test_documents_tab_highlights_the_answer_in_its_passage(browser, served):
    idx, models = served
    qa = models["answers"]
    expected = DocumentQA(idx, qa=qa).ask(QUESTION, k=5, top_k=3)
    best = expected.answers[0]
    with serve_in_thread(create_app(qa, ServeSettings(**QUIET), index=idx)) as url:
        page = browser.new_page()
        try:
            ask_documents(page, url, QUESTION)
            assert page.locator("#docs-verdict").get_attribute("data-kind") == "answer"
            assert page.locator("#docs-answer-text").inner_text() == best.answer
            assert page.locator("#docs-passage mark").inner_text() == best.answer
            assert page.locator("#docs-passage").text_content() == best.passage  # the whole passage, answer in place
            assert page.locator("#docs-document").inner_text() == best.document
            assert page.locator("#docs-offsets").inner_text() == f"{best.start}–{best.end}"
            assert page.locator("#docs-others-list li").count() == len(expected.answers) - 1
            # the passage tab is still there and works as before
            page.get_by_role("tab", name="A passage").click()
            assert page.locator("#ask-form").is_visible() and not page.locator("#docs-panel").is_visible()
        finally:
            page.close()


def test_documents_tab_shows_abstention_and_errors(browser, served):
    """Abstaining is said first; the best span the reader rejected is labelled so and marked apart."""
    idx, models = served
    rejected = DocumentQA(idx, qa=models["abstains"]).ask(QUESTION, k=5, top_k=3)
    assert rejected.no_answer and rejected.answers  # the reader found spans, and rejected them
    best = rejected.answers[0]
    with serve_in_thread(create_app(models["abstains"], ServeSettings(**QUIET), index=idx)) as url:
        page = browser.new_page()
        try:
            ask_documents(page, url, QUESTION)
            assert page.locator("#docs-verdict").get_attribute("data-kind") == "no-answer"
            assert "No answer" in page.locator("#docs-verdict").text_content()
            assert "No document answers" in page.locator("#docs-answer-text").inner_text()
            label = page.locator("#docs-where .passage-label").inner_text()
            assert label.startswith("Best span the reader found, and rejected:") and best.answer in label
            mark = page.locator("#docs-passage mark")
            assert mark.count() == 1 and mark.get_attribute("class") == "rejected"
            assert mark.inner_text() == best.answer
            assert page.locator("#docs-others h3").inner_text() == "Other rejected spans"
            ask_documents(page, url, "?!")  # nothing to search for: nothing found, no span to show
            assert page.locator("#docs-verdict").get_attribute("data-kind") == "no-answer"
            assert not page.locator("#docs-where").is_visible()
            ask_documents(page, url, "why " * 300)  # over max_question_chars: the server's error, one line
            error = page.locator("#docs-error")
            assert error.is_visible() and error.inner_text().startswith("question:") and "1000" in error.inner_text()
        finally:
            page.close()


def test_the_two_tabs_sit_together_in_one_bar(browser, served):
    idx, models = served
    with serve_in_thread(create_app(models["answers"], ServeSettings(**QUIET), index=idx)) as url:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        try:
            page.goto(url + "/")
            page.wait_for_selector("#tabs:not([hidden])")
            first = page.get_by_role("tab", name="A passage").bounding_box()
            second = page.get_by_role("tab", name="Documents").bounding_box()
            assert first["y"] == second["y"]  # one row
            assert 0 <= second["x"] - (first["x"] + first["width"]) <= 16  # side by side, not spread apart
        finally:
            page.close()


def test_no_documents_tab_without_an_index(browser, served):
    _, models = served
    with serve_in_thread(create_app(models["answers"], ServeSettings(**QUIET))) as url:
        page = browser.new_page()
        try:
            page.goto(url + "/")
            page.wait_for_function("document.getElementById('model-info').textContent.startsWith('Model')")
            assert not page.locator("#tabs").is_visible() and page.locator("#ask-form").is_visible()
        finally:
            page.close()
