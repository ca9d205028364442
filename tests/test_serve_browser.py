"""The page at / in headless Chromium: type a question, read the highlighted answer.

Uses the Python ``playwright`` package with the system Chromium (Debian's ``chromium``,
/usr/bin/chromium; override with $SQUADKIT_CHROMIUM); ``playwright install`` is never needed.
Skips, saying why, where either is missing.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from squadkit.pipeline import QuestionAnswerer  # noqa: E402
from squadkit.serve import ServeSettings, create_app, serve_in_thread  # noqa: E402

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
QUIET = dict(access_log=False, log_level="warning")
CONTEXT = "the old king was born in rome and the queen was born in london ."
QUESTION = "where was the king born"


def chromium_path() -> str:
    for candidate in (os.environ.get("SQUADKIT_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    pytest.skip("needs Chromium (apt-get install chromium, or set SQUADKIT_CHROMIUM)")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install playwright)")
    executable = chromium_path()
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        except Exception as exc:  # a Chromium that cannot start here is an environment problem, not ours
            pytest.skip(f"Chromium at {executable} does not start: {str(exc).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def qa(tiny_bert) -> QuestionAnswerer:
    return QuestionAnswerer(str(tiny_bert), backend="torch", device="cpu")


class NoAnswerQA:
    """A pipeline that always abstains, to show the page's no-answer case."""

    model = None

    def answer_pairs(self, pairs, **kwargs):  # pragma: no cover - serve calls __call__
        return [[{"score": 0.91, "start": 0, "end": 0, "answer": ""}] for _ in pairs]

    def __call__(self, inputs, top_k=1, **kwargs):
        one = {"score": 0.91, "start": 0, "end": 0, "answer": ""}
        return [one if top_k == 1 else [one] for _ in inputs]


def ask(page, url: str, context: str, question: str, allow_no_answer: bool = False, press_enter: bool = True) -> None:
    page.goto(url + "/")
    page.get_by_label("Passage", exact=True).fill(context)
    page.get_by_label("Question", exact=True).fill(question)
    page.get_by_label("Allow “no answer”").set_checked(allow_no_answer)
    if press_enter:
        page.get_by_label("Question", exact=True).press("Enter")
    else:
        page.get_by_role("button", name="Ask").click()
    page.wait_for_selector("#result:not([hidden]), #error:not([hidden])", timeout=20_000)


def test_page_highlights_the_pipelines_answer(browser, qa):
    expected = qa(question=QUESTION, context=CONTEXT)
    assert expected["answer"]  # the tiny model does pick a span here
    with serve_in_thread(create_app(qa, ServeSettings(**QUIET))) as url:
        page = browser.new_page()
        try:
            ask(page, url, CONTEXT, QUESTION)
            mark = page.locator("#passage mark")
            assert mark.count() == 1
            assert mark.inner_text() == CONTEXT[expected["start"]:expected["end"]] == expected["answer"]
            assert page.locator("#answer-text").inner_text() == expected["answer"]
            assert page.locator("#verdict").get_attribute("data-kind") == "answer"
            assert page.locator("#answer-score").inner_text() == f"score {100 * expected['score']:.1f}%"
            # the whole passage is shown, the answer in its place
            assert page.locator("#passage").inner_text() == CONTEXT
            assert page.locator("#model-info").inner_text().startswith("Model: ")
        finally:
            page.close()


def test_page_asks_with_the_button_too_and_shows_other_candidates(browser, qa):
    expected = qa(question=QUESTION, context=CONTEXT, top_k=3)
    with serve_in_thread(create_app(qa, ServeSettings(**QUIET))) as url:
        page = browser.new_page()
        try:
            page.goto(url + "/")
            page.get_by_label("Answers", exact=True).select_option("3")
            ask_without_reload = dict(context=CONTEXT, question=QUESTION)
            page.get_by_label("Passage", exact=True).fill(ask_without_reload["context"])
            page.get_by_label("Question", exact=True).fill(ask_without_reload["question"])
            page.get_by_label("Allow “no answer”").set_checked(False)
            page.get_by_role("button", name="Ask").click()
            page.wait_for_selector("#result:not([hidden])", timeout=20_000)
            assert page.locator("#passage mark").inner_text() == expected[0]["answer"]
            items = page.locator("#others-list li")
            assert items.count() == len(expected) - 1
            assert items.nth(0).inner_text().startswith(expected[1]["answer"] or "(no answer)")
        finally:
            page.close()


def test_page_shows_no_answer_as_such(browser):
    with serve_in_thread(create_app(NoAnswerQA(), ServeSettings(**QUIET))) as url:
        page = browser.new_page()
        try:
            ask(page, url, CONTEXT, "what colour is the sky", allow_no_answer=True)
            assert page.locator("#verdict").get_attribute("data-kind") == "no-answer"
            assert "No answer" in page.locator("#verdict").text_content()
            assert page.locator("#passage mark").count() == 0
            assert page.locator("#answer-score").inner_text() == "score 91.0%"
        finally:
            page.close()


def test_page_shows_the_servers_validation_error(browser, qa):
    with serve_in_thread(create_app(qa, ServeSettings(max_context_chars=20, **QUIET))) as url:
        page = browser.new_page()
        try:
            ask(page, url, CONTEXT, QUESTION)
            error = page.get_by_role("alert")
            assert error.is_visible()
            assert error.inner_text().startswith("context:") and "20" in error.inner_text()
        finally:
            page.close()


def test_page_highlights_by_characters_after_an_emoji(browser, qa):
    """The server's offsets count characters; an emoji (two UTF-16 units) before the answer must not shift it."""
    context = "🙂 🙂 " + CONTEXT
    expected = qa(question=QUESTION, context=context)
    assert expected["answer"] and expected["start"] > 4
    with serve_in_thread(create_app(qa, ServeSettings(**QUIET))) as url:
        page = browser.new_page()
        try:
            ask(page, url, context, QUESTION)
            assert page.locator("#passage mark").inner_text() == context[expected["start"]:expected["end"]]
            assert page.locator("#passage").inner_text() == context
        finally:
            page.close()
