"""train's ask fit is refused where ask's no-answer score cannot tell answerable from unanswerable questions."""

from __future__ import annotations

import json

import pytest

from squadkit.train.ask_eval import ASK_MIN_AUC, refuse_at_chance


@pytest.fixture()
def dev(tmp_path):
    """Eight questions on one paragraph: q0-q3 answerable, q4-q7 not."""
    from squadkit.data import load_squad

    context = "The Normans gave their name to Normandy, a region in France."
    qas = [{"id": f"q{i}", "question": f"question {i}?", "is_impossible": i >= 4,
            "answers": [{"text": "France", "answer_start": context.index("France")}] if i < 4 else []}
           for i in range(8)]
    path = tmp_path / "dev.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": context, "qas": qas}]}]}), encoding="utf-8")
    return load_squad(path)


def test_a_fit_at_chance_is_refused_with_one_line(dev):
    # the readings' no-answer margins: the same spread for both kinds of question (AUC 0.5)
    odds = {f"q{i}": [1.0, 2.0, 3.0, 4.0][i % 4] for i in range(8)}
    auc, line = refuse_at_chance(dev, odds, threshold=-17.8, rule="raw")
    assert auc == pytest.approx(0.5)
    assert line is not None and "\n" not in line
    assert "AUC 0.50" in line and "single-passage rule" in line and "answers 0.0%" in line


def test_a_fit_that_ranks_the_questions_is_kept(dev):
    odds = {f"q{i}": (-3.0 + 0.1 * i if i < 4 else 2.0 + 0.1 * i) for i in range(8)}  # answerable: lower margins
    auc, line = refuse_at_chance(dev, odds, threshold=0.0, rule="passage-normalised")
    assert auc == pytest.approx(1.0) and line is None
    # just below the bar: refused; at it: kept
    flipped = dict(odds, q0=5.0)  # one answerable question ranked above every unanswerable one: AUC 0.75
    assert refuse_at_chance(dev, flipped, 0.0, "raw")[1] is None and ASK_MIN_AUC <= 0.75
    worse = dict(flipped, q1=5.1, q2=5.2)  # three of four above: AUC 0.25
    assert refuse_at_chance(dev, worse, 0.0, "raw")[1] is not None
