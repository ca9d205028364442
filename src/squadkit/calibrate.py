"""Fitting a calibrator on a model's dev predictions: ``squadkit calibrate`` and ``train --do-eval``.

The model predicts the dev data in squad mode (``predict.predict_squad``, without a calibrator);
the calibrator (``calibration.fit_calibrator``) is fitted on the top span of every question, and
the report says how well it is calibrated in-sample and, cross-fitted, out of sample (an
in-sample ECE is optimistic: the calibrator has seen those questions).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from .calibration import MIN_QUESTIONS, calibration_targets, fit_calibrator
from .errors import SquadkitError
from .metrics import calibration_report, correctness_of_final
from .prediction_files import SquadPredictions


def calibration_data(dataset, preds: SquadPredictions):
    """(features (n, 3), top span right?, unanswerable?, question ids, article of each) of the questions
    predicted; refuses data without gold answers (one line)."""
    examples = [e for e in dataset.examples if e.id in preds.features]
    if not any(e.answers for e in examples):
        where = getattr(dataset, "path", None) or "the data"
        raise SquadkitError(f"{where}: has no gold answers; calibrating needs dev data with answers", param="data")
    tops = preds.top_spans()
    right, unanswerable = calibration_targets([tops[e.id] for e in examples],
                                              [[a.text for a in e.answers] for e in examples])
    x = np.asarray([preds.features[e.id] for e in examples], dtype=np.float64)
    return x, right, unanswerable, [e.id for e in examples], [e.title or str(e.article_index) for e in examples]


def raw_confidence(x, abstains):
    """The uncalibrated "before" of a final prediction, in the pipeline's terms: a span's window
    softmax probability (its ``score`` for one window), the empty answer's p_null of that window."""
    x = np.asarray(x, dtype=np.float64)
    log_p_null = x[:, 1] - x[:, 0]
    return np.exp(np.where(np.asarray(abstains, bool), log_p_null, x[:, 1]))


def confidence_of_final(calibrator, x, abstains):
    """The calibrated confidence of final predictions (``abstains``: the prediction is "")."""
    return np.where(np.asarray(abstains, bool), calibrator.abstain_confidence(x), calibrator.answer_confidence(x))


def cross_fit_report(x, right, unanswerable, abstains, correct, groups, cutoffs=(0.5, 0.7, 0.9)) -> dict:
    """Out-of-fold calibration: fit on all groups but one, apply to that one, for every group
    (articles; two halves when there is one article); ECE and precision before and after."""
    groups = np.asarray(groups)
    names = list(dict.fromkeys(groups.tolist()))
    if len(names) < 2:
        groups = np.where(np.arange(len(groups)) < len(groups) // 2, "first half", "second half")
        names = ["first half", "second half"]
    conf = np.zeros(len(right))
    for name in names:
        test = groups == name
        cal = fit_calibrator(x[~test], right[~test], unanswerable[~test])
        conf[test] = confidence_of_final(cal, x[test], abstains[test])
    raw = raw_confidence(x, abstains)
    before = calibration_report(raw, correct, cutoffs=cutoffs)
    after = calibration_report(conf, correct, cutoffs=cutoffs)
    for r in (before, after):
        r.pop("risk_coverage")
    return {"folds": names, "before": before, "after": after}


def fit_calibration(dataset, preds: SquadPredictions, weights_sha256: str | None, source: str,
                    cross_fit: bool = True) -> tuple[dict, dict]:
    """Fit the calibrator on ``preds`` of ``dataset`` (the top span of every question); returns its JSON
    (for ``ModelSettings.calibration``) and a report (in-sample and, with ``cross_fit``, out-of-fold)."""
    x, right, unanswerable, qids, groups = calibration_data(dataset, preds)
    cal = fit_calibrator(x, right, unanswerable, weights_sha256, {"data": source})
    abstains = np.array([preds.predictions[q] == "" for q in qids])
    gold = {e.id: [a.text for a in e.answers] for e in dataset.examples}
    correct_map = correctness_of_final({q: preds.predictions[q] for q in qids}, gold)
    correct = np.array([correct_map[q] for q in qids], float)
    in_sample = calibration_report(confidence_of_final(cal, x, abstains), correct)
    in_sample.pop("risk_coverage")
    report = {"questions": len(qids), "in_sample": in_sample}
    if cross_fit:
        try:
            report["cross_fit"] = cross_fit_report(x, right, unanswerable, abstains, correct, groups)
        except SquadkitError as exc:  # a fold too small to fit: say so, keep the calibrator
            report["cross_fit"] = {"skipped": str(exc)}
    out = cal.to_json()
    out["fitted_on"] = {**out.get("fitted_on", {}), "ece_in_sample": in_sample["ece"]}
    if "after" in report.get("cross_fit", {}):
        cf = report["cross_fit"]
        out["fitted_on"]["cross_fit"] = {
            "folds": cf["folds"], "ece_raw_score": cf["before"]["ece"], "ece": cf["after"]["ece"],
            "at_confidence": cf["after"]["at_confidence"], "aurc": cf["after"]["aurc"]}
    return out, report


def report_summary(report: dict) -> dict:
    """The few numbers worth reading from a calibration report: where it was saved, how many
    questions, and the expected calibration error, in-sample (optimistic: the calibrator has seen
    these questions) and cross-fitted (each article scored by a calibrator fitted without it)."""
    summary = {"saved": report.get("saved"), "questions": report["questions"],
               "ece_in_sample": round(report["in_sample"]["ece"], 4)}
    cross = report.get("cross_fit") or {}
    if "after" in cross:
        summary.update({
            "ece_cross_fit": round(cross["after"]["ece"], 4),
            "ece_cross_fit_raw_score": round(cross["before"]["ece"], 4),
            "aurc_cross_fit": round(cross["after"]["aurc"], 4),
            "at_confidence_cross_fit": {
                cut: {"coverage": round(v["coverage"], 4), "precision": None if v["precision"] is None
                      else round(v["precision"], 4)} for cut, v in cross["after"]["at_confidence"].items()},
        })
    elif "skipped" in cross:
        summary["cross_fit_skipped"] = cross["skipped"]
    return summary


def run_calibrate(model, data, backend: str = "auto", batch_size: int | None = None, device: str | None = None,
                  strict: bool = False, show_progress: bool = False, cross_fit: bool = True,
                  note: Callable[[str], None] | None = None, given=None) -> dict:
    """``squadkit calibrate``: predict ``data`` with the model folder's settings (squad mode of
    ``settings.resolve``, as ``predict``), fit the calibrator on the predictions and save it in the
    folder's ``squadkit.json``; returns the report."""
    import dataclasses

    from .backends import check_backend
    from .model_folder import write_settings
    from .data import load_squad
    from .model import load
    from .predict import decode_settings_for, predict_squad
    from .progress import ProgressLines
    from .settings import given_options

    check_backend(backend)
    if given is None:  # else checked where it came in (the CLI)
        given = given_options({"batch_size": batch_size}, "squad")
    folder = Path(os.fspath(model)).expanduser()
    if not folder.is_dir():
        raise SquadkitError(f"{model}: calibrate needs a local model folder (it saves the calibrator there)",
                            param="model")
    dataset = data if hasattr(data, "examples") else load_squad(data, strict=strict)
    if not any(e.answers for e in dataset.examples):
        raise SquadkitError(f"{getattr(dataset, 'path', None) or data}: has no gold answers; calibrating needs dev "
                            f"data with answers", param="data")
    if len(dataset.examples) < MIN_QUESTIONS:
        raise SquadkitError(f"too few questions to fit a calibrator: {len(dataset.examples)} (at least "
                            f"{MIN_QUESTIONS} are needed)", param="data")
    qa_model = load(str(folder), backend=backend, device=device, calibrators=False)  # it refits them
    settings, notes = decode_settings_for(qa_model, dataset, given=given)
    for text in notes:
        if note is not None:
            note(text)
    progress = ProgressLines("calibrate", len(dataset.examples)) if show_progress else None
    try:
        preds = predict_squad(qa_model, dataset.examples, settings, progress=progress, calibrate=False)
    finally:
        if progress is not None:
            progress.close()
    source = Path(getattr(dataset, "path", None) or "data").name
    calibration, report = fit_calibration(dataset, preds, qa_model.head_sha256, source, cross_fit)
    path = write_settings(folder, dataclasses.replace(qa_model.settings, calibration=calibration))
    report["saved"] = str(path)
    return report
