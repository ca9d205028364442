"""Beyond the official numbers: the no-answer score's AUC, paired bootstrap intervals, calibration and
confidence reports."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..errors import SquadkitError
from .official import GoldInput, exact_match, get_raw_scores, gold_answers_from, make_qid_to_has_ans
from .plots import make_image_dir, new_figure, save_figure

# ---------------------------------------------------------------------------------------------
# how well the no-answer score separates, whatever the threshold
# ---------------------------------------------------------------------------------------------


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties counted half (ROC AUC; 0.5 = chance); NaN when
    either side is empty. Ranks, not pairs: O(n log n)."""
    pos, neg = np.asarray(positive, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if not pos.size or not neg.size:
        return float("nan")
    _, inverse, counts = np.unique(np.concatenate([pos, neg]), return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based ranks, averaged over ties
    rank_sum = float(mean_rank[inverse[: pos.size]].sum())
    return (rank_sum - pos.size * (pos.size + 1) / 2.0) / (pos.size * neg.size)


def no_answer_auc(gold: GoldInput, na_probs: Mapping[str, float]) -> float:
    """How well ``na_probs`` (higher: more likely unanswerable; null odds work too) rank the answerable
    questions of ``gold`` below the unanswerable ones: ROC AUC, whatever the threshold (0.5 = chance).

    Why: F1 at the best threshold hides a score that cannot tell the two apart; on data with many
    unanswerable questions such a model's best threshold simply abstains almost always."""
    has_ans = make_qid_to_has_ans(gold_answers_from(gold))
    missing = next((qid for qid in has_ans if qid not in na_probs), None)
    if missing is not None:
        raise SquadkitError(f"no_answer_auc: na_probs has no value for question {missing!r}", param="na_probs")
    return roc_auc([-float(na_probs[q]) for q, h in has_ans.items() if h],
                   [-float(na_probs[q]) for q, h in has_ans.items() if not h])


# ---------------------------------------------------------------------------------------------
# comparing two systems on the same questions
# ---------------------------------------------------------------------------------------------


def paired_bootstrap(gold: GoldInput, preds_a: Mapping[str, str], preds_b: Mapping[str, str],
                     metric: str = "f1", resamples: int = 2000, confidence: float = 0.95,
                     seed: int = 0, names: tuple[str, str] = ("preds_a", "preds_b")) -> dict[str, float]:
    """``metric`` (``"f1"`` or ``"exact"``, in points) of ``preds_a`` minus that of ``preds_b``, with a
    paired bootstrap interval: the questions are drawn with replacement ``resamples`` times and the
    same draw scores both systems, so the interval is of the difference itself.

    Why: on a dev set of a few hundred questions a one-point gap is often noise; the interval says
    whether it is (it excludes 0 when the gap holds at that confidence). Both must predict every
    question of ``gold`` (``names`` name them in that error); the interval is the percentile one,
    seeded (the same numbers every run).
    """
    if metric not in ("f1", "exact"):
        raise SquadkitError(f"paired_bootstrap: metric must be 'f1' or 'exact', not {metric!r}", param="metric")
    if resamples < 1 or not 0 < confidence < 1:
        raise SquadkitError(f"paired_bootstrap: resamples must be >= 1 and confidence in (0, 1), "
                            f"not {resamples!r} and {confidence!r}", param="resamples")
    gold_answers = gold_answers_from(gold)
    for name, preds in zip(names, (preds_a, preds_b)):
        missing = next((qid for qid in gold_answers if qid not in preds), None)
        if missing is not None:
            raise SquadkitError(f"paired_bootstrap: {name} has no prediction for question {missing!r}", param=name)
    per_question = []
    for preds in (preds_a, preds_b):
        exact, f1 = get_raw_scores(gold_answers, preds, report_missing=None)
        per_question.append(np.fromiter((float((f1 if metric == "f1" else exact)[q]) for q in gold_answers),
                                        dtype=np.float64, count=len(gold_answers)))
    diff = 100.0 * (per_question[0] - per_question[1])
    if diff.size == 0:
        raise SquadkitError("paired_bootstrap: no questions to compare", param="gold")
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // diff.size)  # resamples per draw: bounded memory on the full dev set too
    means = np.concatenate([diff[rng.integers(0, diff.size, size=(min(chunk, resamples - done), diff.size))].mean(axis=1)
                            for done in range(0, resamples, chunk)])
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return {"difference": float(diff.mean()), "low": float(low), "high": float(high),
            "questions": int(diff.size), "resamples": int(resamples), "confidence": float(confidence)}


# ---------------------------------------------------------------------------------------------
# calibrated confidence (``evaluate --confidence``): ECE, reliability, risk-coverage, precision at cut-offs
# ---------------------------------------------------------------------------------------------


def calibration_report(confidence: np.ndarray, correct: np.ndarray, bins: int = 10,
                       cutoffs: Sequence[float] = (0.5, 0.7, 0.9)) -> dict:
    """ECE (equal-width bins), the reliability table, precision/coverage at cut-offs, and the
    risk-coverage curve (answers sorted by confidence, most confident first)."""
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    n = c.shape[0]
    if n == 0:
        raise SquadkitError("no questions with a confidence to report on", param="confidence")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(c, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            gap = abs(float(c[m].mean()) - float(y[m].mean()))
            ece += m.sum() / n * gap
            table.append({"bin": [round(float(edges[b]), 6), round(float(edges[b + 1]), 6)], "count": int(m.sum()),
                          "mean_confidence": float(c[m].mean()), "accuracy": float(y[m].mean())})
    at = {}
    for cut in cutoffs:
        m = c >= cut
        at[f"{cut:g}"] = {"coverage": float(m.mean()), "answered": int(m.sum()),
                          "precision": float(y[m].mean()) if m.any() else None}
    order = np.argsort(-c, kind="stable")
    hits = np.cumsum(y[order])
    k = np.arange(1, n + 1)
    coverage = k / n
    risk = 1.0 - hits / k
    aurc = float(risk.mean())
    return {"questions": n, "accuracy": float(y.mean()), "ece": float(ece), "bins": bins, "reliability": table,
            "at_confidence": at, "aurc": aurc,
            "risk_coverage": {"coverage": coverage.tolist(), "risk": risk.tolist()}}


def correctness_of_final(predictions: Mapping[str, str], gold: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """The official exact match of each final prediction (``exact_match``): on an unanswerable question
    any prediction that normalizes to "" ("", "the", ".") is right, as ``evaluate-v2.0.py`` counts it."""
    return {qid: exact_match(gold.get(qid, []), pred) for qid, pred in predictions.items()}


RELIABILITY_IMAGE = "reliability.png"
RISK_COVERAGE_IMAGE = "risk_coverage.png"


def confidence_report(dataset, preds: Mapping[str, str], confidence: Mapping[str, float],
                      cutoffs: Sequence[float] = (0.5, 0.7, 0.9), out_image_dir=None,
                      confidence_name: str = "confidence") -> dict:
    """How well ``confidence`` (question id -> probability that its prediction is an exact match)
    is calibrated on ``dataset``: see ``calibration_report``; images with ``out_image_dir``."""
    if not isinstance(confidence, Mapping):
        raise SquadkitError(f"{confidence_name}: must be a JSON object of question id to confidence", param="confidence")
    for qid, value in confidence.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SquadkitError(f"{confidence_name}: confidence of {qid!r} must be a number, got {value!r}",
                                param="confidence")
    gold = {e.id: [a.text for a in e.answers] for e in dataset.examples}
    qids = [q for q in gold if q in preds and q in confidence]
    if not qids:
        raise SquadkitError(f"{confidence_name}: no question has both a prediction and a confidence", param="confidence")
    bad = next((q for q in qids if not 0.0 <= float(confidence[q]) <= 1.0), None)
    if bad is not None:
        raise SquadkitError(f"{confidence_name}: confidence of {bad} is {confidence[bad]!r}, not in [0, 1]",
                            param="confidence")
    correct_map = correctness_of_final({q: preds[q] for q in qids}, gold)
    conf = np.array([float(confidence[q]) for q in qids])
    correct = np.array([correct_map[q] for q in qids], dtype=float)
    report = calibration_report(conf, correct, cutoffs=cutoffs)
    curve = report.pop("risk_coverage")
    if out_image_dir is not None:
        make_image_dir(out_image_dir)
        _plot_reliability(report, Path(out_image_dir) / RELIABILITY_IMAGE)
        _plot_risk_coverage(curve, Path(out_image_dir) / RISK_COVERAGE_IMAGE)
    return report


def _plot_reliability(report: dict, path: Path) -> None:
    fig = new_figure()
    ax = fig.add_subplot()
    for row in report["reliability"]:
        lo, hi = row["bin"]
        ax.bar(lo, row["accuracy"], width=hi - lo, align="edge", color="b", alpha=0.3, edgecolor="b")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax.set_xlabel("Confidence")
    ax.set_ylabel("Exact match")
    ax.set_xlim([0.0, 1.0])
    ax.set_ylim([0.0, 1.0])
    ax.set_title(f"Reliability (ECE {report['ece']:.3f})")
    save_figure(fig, path)


def _plot_risk_coverage(curve: dict, path: Path) -> None:
    fig = new_figure()
    ax = fig.add_subplot()
    ax.plot(curve["coverage"], curve["risk"], color="b")
    ax.set_xlabel("Coverage (answered, most confident first)")
    ax.set_ylabel("Risk (1 - exact match)")
    ax.set_xlim([0.0, 1.0])
    ax.set_ylim([0.0, 1.05])
    ax.set_title("Risk-coverage")
    save_figure(fig, path)

