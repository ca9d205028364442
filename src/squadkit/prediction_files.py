"""Predictions in run_squad's terms: the record of a set of predictions, its files and its score.

``SquadPredictions`` holds, per question id, the final text, the n-best list, the null odds and
(with a calibrator) the confidence; ``write_prediction_files`` writes ``predictions.json``,
``nbest_predictions.json``, ``null_odds.json`` (and ``null_probs.json``, ``confidence.json``) atomically, in run_squad's
layout; ``merge_predictions`` puts the shards of a launcher run back in data order;
``evaluate_predictions`` scores them with the official metric.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from .decode import NBestEntry, SquadPrediction
from .io import atomic_write_json


@dataclass
class SquadPredictions:
    """Predictions for a set of questions, keyed by question id, in data order."""

    predictions: dict[str, str] = field(default_factory=dict)
    nbest: dict[str, list[NBestEntry]] = field(default_factory=dict)
    null_odds: dict[str, float] = field(default_factory=dict)
    confidence: dict[str, float] = field(default_factory=dict)  # with a calibrator: of each final prediction
    features: dict[str, list[float]] = field(default_factory=dict)  # calibration features of the top span
    # with keep_windows: per question, each window's (CLS start logit, CLS end logit, log normaliser)
    windows: dict[str, list[tuple[float, float, float | None]]] = field(default_factory=dict)

    def add(self, qid: str, prediction: SquadPrediction) -> None:
        self.predictions[qid] = prediction.text
        self.nbest[qid] = prediction.nbest
        if prediction.null_odds is not None:
            self.null_odds[qid] = prediction.null_odds
        if prediction.confidence is not None:
            self.confidence[qid] = prediction.confidence
        if prediction.features is not None:
            self.features[qid] = [float(v) for v in prediction.features]

    def top_spans(self) -> dict[str, str]:
        """The best non-empty answer of every question (what the calibrator's ``answer`` part is fitted on)."""
        return {qid: next((e.text for e in entries if e.text and e.window is not None), "")
                for qid, entries in self.nbest.items()}

    def nbest_json(self) -> dict[str, list[dict]]:
        return {
            qid: [
                {
                    "text": e.text,
                    "probability": e.probability,
                    "start_logit": e.start_logit,
                    "end_logit": e.end_logit,
                    "start": e.start,
                    "end": e.end,
                }
                for e in entries
            ]
            for qid, entries in self.nbest.items()
        }


def merge_predictions(parts: Iterable[SquadPredictions], order: Sequence[str]) -> SquadPredictions:
    """Shards back into one set, in the data's question order."""
    merged = SquadPredictions()
    for part in parts:
        merged.predictions.update(part.predictions)
        merged.nbest.update(part.nbest)
        merged.null_odds.update(part.null_odds)
        merged.confidence.update(part.confidence)
        merged.features.update(part.features)
        merged.windows.update(part.windows)
    out = SquadPredictions()
    for qid in order:
        if qid in merged.predictions:
            out.predictions[qid] = merged.predictions[qid]
            out.nbest[qid] = merged.nbest[qid]
            for name in ("null_odds", "confidence", "features", "windows"):
                if qid in getattr(merged, name):
                    getattr(out, name)[qid] = getattr(merged, name)[qid]
    return out


PREDICTIONS_FILE = "predictions.json"
NBEST_FILE = "nbest_predictions.json"
NULL_ODDS_FILE = "null_odds.json"
NULL_PROBS_FILE = "null_probs.json"  # sigmoid of the null odds: a probability of no answer, for evaluate -n
CONFIDENCE_FILE = "confidence.json"


def check_output_folder(out_dir: str | os.PathLike, name: str = "output_dir") -> Path:
    """The folder the files go to, refused at once (before any work) where it cannot be one; ``name``: how
    the caller spelled the parameter."""
    from .errors import SquadkitError

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise SquadkitError(f"{out_dir}: exists and is not a folder; give {name} a folder for the prediction files",
                            param="output_dir")
    parent = next((p for p in (out_dir, *out_dir.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise SquadkitError(f"{out_dir}: cannot create the {name} folder here ({parent} is not writable)",
                            param="output_dir")
    return out_dir


def write_prediction_files(preds: SquadPredictions, out_dir: str | os.PathLike, prefix: str = "") -> dict[str, Path]:
    """Write run_squad's three files (indent 4, as it did), each atomically, and ``null_probs.json``."""
    from .metrics import null_probabilities

    out_dir = Path(out_dir)
    paths = {
        "predictions": out_dir / f"{prefix}{PREDICTIONS_FILE}",
        "nbest": out_dir / f"{prefix}{NBEST_FILE}",
        "null_odds": out_dir / f"{prefix}{NULL_ODDS_FILE}",
    }
    atomic_write_json(paths["predictions"], preds.predictions)
    atomic_write_json(paths["nbest"], preds.nbest_json())
    if preds.null_odds:
        atomic_write_json(paths["null_odds"], preds.null_odds)
        paths["null_probs"] = out_dir / f"{prefix}{NULL_PROBS_FILE}"  # the official script's -n expects these
        atomic_write_json(paths["null_probs"], null_probabilities(preds.null_odds))
    else:
        del paths["null_odds"]
    if preds.confidence:  # question id -> calibrated confidence of its final prediction
        paths["confidence"] = out_dir / f"{prefix}{CONFIDENCE_FILE}"
        atomic_write_json(paths["confidence"], preds.confidence)
    return paths


EVAL_RESULTS_FILE = "eval_results.json"


def evaluate_predictions(dataset, preds: SquadPredictions, threshold: float) -> dict:
    """The official metric on ``preds``, with the real null odds as na-probs.

    The metric's no-answer threshold is the one the predictions were made with, so its
    thresholding agrees with theirs; best_* then show the threshold that would have been best.
    """
    from .metrics import evaluate

    null_odds = preds.null_odds or None
    out = dict(evaluate(dataset, preds.predictions, na_probs=null_odds, na_prob_thresh=threshold, report_missing=None))
    if preds.confidence:  # calibrated: how well the confidences of these predictions are calibrated
        from .metrics import confidence_report

        out["confidence"] = confidence_report(dataset, preds.predictions, preds.confidence)
    return out
