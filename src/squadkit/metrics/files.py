"""The evaluation's files: predictions, no-answer probabilities, and the official script's command."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from ..errors import SquadkitError, first_line
from ..io import read_json
from .official import check_na_prob_value, evaluate, json_type



def load_predictions(path: Union[str, os.PathLike]) -> dict[str, str]:
    """Read a predictions file: a JSON object mapping question id to answer text ('' = no answer)."""
    obj = read_json(path, "predictions file")
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        raise SquadkitError(f"{path}: this is a SQuAD data file, not predictions; did you swap the files? "
                            f"The data file comes first: squadkit evaluate DATA PREDS")
    if not isinstance(obj, dict):
        raise SquadkitError(f"{path}: predictions must be a JSON object of question id to answer text, "
                            f"got {json_type(obj)}")
    for qid, text in obj.items():
        if not isinstance(text, str):
            raise SquadkitError(f"{path}: prediction for {qid!r} must be a string, got {json_type(text)}")
    return obj


def load_na_probs(path: Union[str, os.PathLike]) -> dict[str, float]:
    """Read a na-prob file: a JSON object mapping question id to a number (NaN is refused: it cannot be ordered).

    Values are kept as read (an ``int`` stays an ``int``), because the official script reports the
    best threshold as the file's own value.
    """
    obj = read_json(path, "na-prob file")
    if not isinstance(obj, dict):
        raise SquadkitError(f"{path}: na-prob file must be a JSON object of question id to number, "
                            f"got {json_type(obj)}")
    for qid, value in obj.items():
        check_na_prob_value(qid, value, str(path))
    return obj


def null_probabilities(null_odds: Mapping[str, float]) -> dict[str, float]:
    """Null odds (null score minus the best span's, a logit difference) as the null's probability
    against the best span: the logistic sigmoid, same keys and order. Monotone, so the official
    ``best_*`` scores and precision-recall curves are those of the odds; only thresholds change scale
    (a null-odds threshold ``t`` is probability ``sigmoid(t)``)."""
    qids = list(null_odds)
    x = np.fromiter((float(null_odds[q]) for q in qids), dtype=np.float64, count=len(qids))
    probs = np.exp(-np.logaddexp(0.0, -x))  # 1 / (1 + exp(-x)) without overflow
    return {q: float(v) for q, v in zip(qids, probs)}


def evaluate_files(
    data_file: Union[str, os.PathLike],
    pred_file: Union[str, os.PathLike],
    na_prob_file: Optional[Union[str, os.PathLike]] = None,
    na_prob_thresh: float = 1.0,
    best_always: bool = False,
    out_image_dir: Optional[Union[str, os.PathLike]] = None,
    report_missing: Optional[Callable[[str], None]] = print,
    report_note: Optional[Callable[[str], None]] = None,
    na_prob_logits: bool = False,
) -> "OrderedDict[str, Any]":
    """:func:`evaluate` on files, as the official script's ``main``: errors name the file at fault.
    ``na_prob_logits``: the na-prob file holds null odds (logit differences), turned into
    probabilities first (:func:`null_probabilities`)."""
    from ..data import load_squad

    dataset = load_squad(data_file)
    preds = load_predictions(pred_file)
    na_probs = load_na_probs(na_prob_file) if na_prob_file is not None else None
    if na_probs is not None and na_prob_logits:
        na_probs = null_probabilities(na_probs)
    return evaluate(dataset, preds, na_probs, na_prob_thresh, best_always, out_image_dir,
                    report_missing=report_missing, report_note=report_note, pred_name=str(pred_file),
                    na_prob_name=str(na_prob_file) if na_prob_file is not None else "na_probs")




def confidences_beside(pred_file: Path) -> tuple[Optional[Path], list[str]]:
    """predict's confidence.json beside its predictions.json (read unasked), with the notes to say so:
    where it was found, and whether it scores the calibrator's own data (predict's eval_results.json)."""
    found = Path(pred_file).parent / "confidence.json"
    if not (found.is_file() and Path(pred_file).name.endswith("predictions.json")):
        return None, []
    notes = [f"reading the confidences from {found} (predict's output beside {Path(pred_file).name})"]
    try:
        saved = json.loads((found.parent / "eval_results.json").read_text(encoding="utf-8")).get("confidence") or {}
    except (OSError, ValueError, AttributeError):
        saved = {}
    if saved.get("in_sample"):
        cross = saved.get("ece_cross_fit")
        notes.append("these predictions are of the data the calibrator was fitted on: the ECE is in-sample "
                     "(optimistic)" + (f"; cross-fitted it was {cross:.3f}" if isinstance(cross, (int, float)) else ""))
    return found, notes


def confidence_report_of_files(data_file: Path, pred_file: Path, confidence_file: Path, cutoffs: tuple[float, ...],
                               image_dir: Optional[Path]) -> dict:
    """``evaluate --confidence``: how well the confidences in ``confidence_file`` are calibrated."""
    from ..data import load_squad
    from .reports import confidence_report

    try:
        confidence = json.loads(Path(confidence_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SquadkitError(f"{confidence_file}: cannot read the confidences: {first_line(exc)}",
                            param="confidence_file") from None
    return confidence_report(load_squad(data_file), load_predictions(pred_file), confidence, cutoffs=cutoffs,
                             out_image_dir=image_dir, confidence_name=str(confidence_file))


def compare_files(data_file: Path, pred_file: Path, other_file: Path) -> dict:
    """``evaluate --compare``: PREDS minus FILE on every question of DATA, F1 and exact, with paired-bootstrap
    intervals."""
    from ..data import load_squad
    from .reports import paired_bootstrap

    dataset = load_squad(data_file)
    preds, other = load_predictions(pred_file), load_predictions(other_file)
    names = (str(pred_file), str(other_file))
    return {"file": str(other_file), **{metric: paired_bootstrap(dataset, preds, other, metric=metric, names=names)
                                        for metric in ("f1", "exact")}}
