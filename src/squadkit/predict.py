"""run_squad's prediction files for a SQuAD file: predictions, n-best lists and null odds.

``predict_squad`` runs a model over SQuAD examples in squad mode (run_squad's decoding) and
``write_prediction_files`` writes ``predictions.json``, ``nbest_predictions.json`` and
``null_odds.json`` atomically, in run_squad's layout. With ``legacy=True`` the windows and
answer texts are exactly those of run_squad's ``squad_convert_examples_to_features`` and
``get_final_text``, so a model trained by run_squad is scored exactly as its card was.

Under ``torchrun`` / ``accelerate launch`` each process predicts a shard of the questions
(``shard=(rank, world_size)``); ``merge_predictions`` puts the shards back in data order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Sequence

from . import defaults
from .checkpoint import SettingsInForce, check_window_fits
from .decode import (
    NBestEntry,
    SquadPrediction,
    squad_prediction,
    squad_text_recoverer,
    squad_window_nbest,
)
from .errors import SquadkitError
from .features import WindowSettings
from .io import atomic_write_json


@dataclass(frozen=True)
class SquadDecodeSettings:
    """run_squad's evaluation flags, with its defaults."""

    max_seq_length: int = defaults.MAX_SEQ_LENGTH
    doc_stride: int = defaults.DOC_STRIDE
    max_query_length: int = defaults.MAX_QUERY_LENGTH
    n_best_size: int = defaults.N_BEST_SIZE
    max_answer_length: int = defaults.MAX_ANSWER_LENGTH
    null_score_diff_threshold: float = defaults.NULL_SCORE_DIFF_THRESHOLD
    version_2_with_negative: bool = True
    legacy: bool = False
    do_lower_case: bool = False
    min_confidence: float | None = None  # abstain below this calibrated confidence (calibration.py)

    def validate(self) -> "SquadDecodeSettings":
        from .calibration import check_min_confidence

        for name in ("n_best_size", "max_answer_length", "max_seq_length", "max_query_length", "doc_stride"):
            defaults.check_positive_int(getattr(self, name), name)
        check_min_confidence(self.min_confidence)
        self.window_settings().validate()
        return self

    def window_settings(self) -> WindowSettings:
        return WindowSettings("legacy" if self.legacy else "squad", self.max_seq_length, self.doc_stride, self.max_query_length)


def decode_settings_for(model, dataset=None, ignore_saved_threshold: bool = False,
                        **explicit) -> tuple[SquadDecodeSettings, SettingsInForce, list[str]]:
    """The decode settings for ``model``: each explicit value (not None), else the model folder's,
    else run_squad's default; with where each came from, and notes worth telling the user.

    ``version_2_with_negative`` not given: SQuAD v1.1 data (no unanswerable question, version
    1.x) is predicted without the empty answer, with a note; else the folder's, else True.
    """
    unknown = set(explicit) - {f.name for f in fields(SquadDecodeSettings)}
    if unknown:
        raise SquadkitError(f"unknown decode option(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0])
    saved = model.settings
    out = SettingsInForce()
    notes = []
    out.pick("max_seq_length", explicit.get("max_seq_length"), saved.max_seq_length, defaults.MAX_SEQ_LENGTH)
    out.pick("doc_stride", explicit.get("doc_stride"), saved.doc_stride, defaults.DOC_STRIDE)
    out.pick("max_query_length", explicit.get("max_query_length"), saved.max_query_length, defaults.MAX_QUERY_LENGTH)
    out.pick("n_best_size", explicit.get("n_best_size"), None, defaults.N_BEST_SIZE)
    out.pick("max_answer_length", explicit.get("max_answer_length"), saved.max_answer_length, defaults.MAX_ANSWER_LENGTH)
    out.pick("null_score_diff_threshold", explicit.get("null_score_diff_threshold"),
             None if ignore_saved_threshold else saved.null_score_diff_threshold, defaults.NULL_SCORE_DIFF_THRESHOLD)
    v1_data = dataset is not None and _is_v1_data(dataset)
    if explicit.get("version_2_with_negative") is None and v1_data:
        out.values["version_2_with_negative"], out.sources["version_2_with_negative"] = False, "data (SQuAD v1.1)"
        notes.append(f"{getattr(dataset, 'path', None) or 'the data'} is SQuAD v1.1 (no unanswerable questions): "
                     f"predicting without the empty answer (--version-2-with-negative to allow it)")
    else:
        out.pick("version_2_with_negative", explicit.get("version_2_with_negative"), saved.version_2_with_negative, True)
    out.pick("legacy", explicit.get("legacy"), None, False)
    out.pick("do_lower_case", explicit.get("do_lower_case"), saved.do_lower_case, False)
    out.pick("min_confidence", explicit.get("min_confidence"), None, None)
    settings = SquadDecodeSettings(**out.values).validate()
    check_window_fits(settings.max_seq_length, getattr(model, "window_limit", None),
                      f"model {getattr(model, 'name_or_path', '')}".strip(), param="max_seq_length")
    return settings, out, notes


def _is_v1_data(dataset) -> bool:
    version = (getattr(dataset, "version", None) or "").lstrip("vV")
    fmt = getattr(dataset, "format", "")
    return not any(e.is_impossible for e in dataset.examples) and (fmt == "squad-v1.1" or version.startswith("1"))


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


def predict_squad(
    model,
    examples: Sequence,
    settings: SquadDecodeSettings = SquadDecodeSettings(),
    batch_size: int = defaults.CPU_BATCH_SIZE,
    shard: tuple[int, int] | None = None,
    chunk_size: int = 256,
    progress: Callable[[int], None] | None = None,
    calibrate: bool = True,
    keep_windows: bool = False,
) -> SquadPredictions:
    """Predict answers for SQuAD examples (objects with ``id``, ``question`` and ``context``).

    ``model`` is anything ``squadkit.backends.load_model`` returns. ``progress(n)`` is called
    with the number of questions finished after each chunk. With a calibrator in the model's
    settings (and ``calibrate``), every prediction carries its confidence. ``keep_windows``: also keep each
    window's null logits and log normaliser (``SquadPredictions.windows``; ``ask`` normalises over passages).
    """
    from .calibration import calibrator_of, check_min_confidence
    from .decode import allowed_tokens
    from .engine import score_pairs

    settings.validate()
    calibrator = calibrator_of(model) if calibrate else None
    check_min_confidence(settings.min_confidence, calibrated=calibrator is not None)
    defaults.check_positive_int(batch_size, "batch_size")
    if shard is not None:
        rank, world = shard
        examples = examples[rank::world]
    legacy = settings.legacy

    def reduce(start, end, batch, rows):
        from .calibration import log_normalizers

        widths = [w.input_ids.shape[0] if legacy else w.length for w in rows]
        allowed = allowed_tokens(rows, start.shape[1]) & batch.attention_mask.astype(bool)
        return squad_window_nbest(start, end, widths, settings.n_best_size, log_normalizers(start, end, allowed))

    out = SquadPredictions()
    questions = [e.question for e in examples]
    contexts = [e.context for e in examples]
    for item in score_pairs(model, questions, contexts, settings.window_settings(), reduce, batch_size, chunk_size,
                            progress):
        example = examples[item.index]
        text_of_span = squad_text_recoverer(model.tokenizer, example.context, settings.do_lower_case)
        out.add(example.id, squad_prediction(
            item.windows, item.reduced, text_of_span, n_best_size=settings.n_best_size,
            max_answer_length=settings.max_answer_length, version_2_with_negative=settings.version_2_with_negative,
            null_score_diff_threshold=settings.null_score_diff_threshold,
            calibrator=calibrator, min_confidence=settings.min_confidence,
        ))
        if keep_windows:
            out.windows[example.id] = [(nb.null_start_logit, nb.null_end_logit, nb.log_norm) for nb in item.reduced]
    return out


def merge_predictions(parts: Iterable[SquadPredictions], order: Sequence[str]) -> SquadPredictions:
    """Shards back into one set, in the data's question order."""
    merged = SquadPredictions()
    for part in parts:
        merged.predictions.update(part.predictions)
        merged.nbest.update(part.nbest)
        merged.null_odds.update(part.null_odds)
        merged.confidence.update(part.confidence)
        merged.features.update(part.features)
    out = SquadPredictions()
    for qid in order:
        if qid in merged.predictions:
            out.predictions[qid] = merged.predictions[qid]
            out.nbest[qid] = merged.nbest[qid]
            for name in ("null_odds", "confidence", "features"):
                if qid in getattr(merged, name):
                    getattr(out, name)[qid] = getattr(merged, name)[qid]
    return out


PREDICTIONS_FILE = "predictions.json"
NBEST_FILE = "nbest_predictions.json"
NULL_ODDS_FILE = "null_odds.json"
CONFIDENCE_FILE = "confidence.json"


def write_prediction_files(preds: SquadPredictions, out_dir: str | os.PathLike, prefix: str = "") -> dict[str, Path]:
    """Write run_squad's three files (indent 4, as it did), each atomically."""
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


def run_predict(
    model,
    data,
    output_dir,
    backend: str = "auto",
    batch_size: int | None = None,
    device: str | None = None,
    ignore_saved_threshold: bool = False,
    strict: bool = False,
    show_progress: bool = False,
    note: Callable[[str], None] | None = None,
    **decode_options,
) -> dict | None:
    """``squadkit predict``: load model and data, predict, write the files, score when possible.

    Decode options not given (None) come from the model folder's settings, else run_squad's
    defaults (see ``decode_settings_for``). Under ``torchrun`` or ``accelerate launch`` every
    process predicts its shard of the questions; the main process gathers the shards and writes
    one merged set of files. Returns the metric's results (or a summary without gold answers) on
    the main process, None on the others. ``note(text)`` receives notes for the user.
    """
    from .backends import check_backend, default_batch_size, load_model
    from .checkpoint import resolve_model_source

    if isinstance(model, (str, os.PathLike)):
        resolve_model_source(model)  # a path that does not exist fails before the heavy imports
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from .data import load_squad
    from .progress import ProgressLines

    check_backend(backend)
    if batch_size is not None:
        defaults.check_positive_int(batch_size, "batch_size")
    dataset = data if hasattr(data, "examples") else load_squad(data, strict=strict)
    # cpu=True where no GPU will be used: accelerate only forms a CPU (gloo) process group under
    # torchrun / accelerate launch when told so; otherwise every process would predict everything.
    state = PartialState(cpu=_cpu_only(device))
    if device is None and state.num_processes > 1:
        device = str(state.device)
    qa_model = load_model(model, backend=backend, device=device)
    settings, _, notes = decode_settings_for(qa_model, dataset, ignore_saved_threshold, **decode_options)
    if batch_size is None:  # the measured best for this backend and precision (defaults.CPU_BATCH_SIZES)
        batch_size = default_batch_size(qa_model)
    if note is not None and state.is_main_process:
        for text in notes:
            note(text)
    examples = dataset.examples
    shard = (state.process_index, state.num_processes) if state.num_processes > 1 else None
    total = len(examples[shard[0] :: shard[1]]) if shard else len(examples)

    progress = ProgressLines("predict", total) if (show_progress and state.is_main_process) else None
    try:
        preds = predict_squad(qa_model, examples, settings, batch_size=batch_size, shard=shard, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    if shard is not None:
        parts = gather_object([preds])
        if not state.is_main_process:
            return None
        preds = merge_predictions(parts, [e.id for e in examples])
    paths = write_prediction_files(preds, output_dir)
    has_gold = any(e.answers for e in examples)
    if has_gold:
        results = evaluate_predictions(dataset, preds, settings.null_score_diff_threshold)
        atomic_write_json(Path(output_dir) / EVAL_RESULTS_FILE, results)
        return results
    return {"questions": len(preds.predictions), "files": {k: str(v) for k, v in paths.items()}}


def _cpu_only(device) -> bool:
    """True when this run will not use a GPU (no CUDA, or a CPU device asked for)."""
    import torch

    return not torch.cuda.is_available() or (device is not None and str(device).startswith("cpu"))


# ----------------------------------------------------------------------------------------------
# fitting the confidence calibrator on dev predictions (``squadkit calibrate``, ``train --do_eval``)
# ----------------------------------------------------------------------------------------------


def calibration_data(dataset, preds: SquadPredictions):
    """(features (n, 3), top span right?, unanswerable?, question ids, article of each) of the questions
    predicted; refuses data without gold answers (one line)."""
    import numpy as np

    from .calibration import calibration_targets

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
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    log_p_null = x[:, 1] - x[:, 0]
    return np.exp(np.where(np.asarray(abstains, bool), log_p_null, x[:, 1]))


def confidence_of_final(calibrator, x, abstains):
    """The calibrated confidence of final predictions (``abstains``: the prediction is "")."""
    import numpy as np

    return np.where(np.asarray(abstains, bool), calibrator.abstain_confidence(x), calibrator.answer_confidence(x))


def cross_fit_report(x, right, unanswerable, abstains, correct, groups, cutoffs=(0.5, 0.7, 0.9)) -> dict:
    """Out-of-fold calibration: fit on all groups but one, apply to that one, for every group
    (articles; two halves when there is one article); ECE and precision before and after."""
    import numpy as np

    from .calibration import calibration_report, fit_calibrator

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
    import numpy as np

    from .calibration import calibration_report, correctness_of_final, fit_calibrator

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


def run_calibrate(model, data, backend: str = "auto", batch_size: int | None = None, device: str | None = None,
                  strict: bool = False, show_progress: bool = False, cross_fit: bool = True,
                  note: Callable[[str], None] | None = None) -> dict:
    """``squadkit calibrate``: predict ``data`` with the model folder's settings, fit the calibrator on
    the predictions and save it in the folder's ``squadkit.json``; returns the report."""
    import dataclasses

    from .backends import check_backend, load_model
    from .checkpoint import write_settings
    from .data import load_squad
    from .progress import ProgressLines

    check_backend(backend)
    if batch_size is not None:
        defaults.check_positive_int(batch_size, "batch_size")
    folder = Path(os.fspath(model)).expanduser()
    if not folder.is_dir():
        raise SquadkitError(f"{model}: calibrate needs a local model folder (it saves the calibrator there)",
                            param="model")
    dataset = data if hasattr(data, "examples") else load_squad(data, strict=strict)
    if not any(e.answers for e in dataset.examples):
        raise SquadkitError(f"{getattr(dataset, 'path', None) or data}: has no gold answers; calibrating needs dev "
                            f"data with answers", param="data")
    from .calibration import MIN_QUESTIONS

    if len(dataset.examples) < MIN_QUESTIONS:
        raise SquadkitError(f"too few questions to fit a calibrator: {len(dataset.examples)} (at least "
                            f"{MIN_QUESTIONS} are needed)", param="data")
    qa_model = load_model(str(folder), backend=backend, device=device)
    settings, _, notes = decode_settings_for(qa_model, dataset)
    for text in notes:
        if note is not None:
            note(text)
    if batch_size is None:
        on_gpu = str(getattr(qa_model, "device", "cpu")).startswith("cuda")
        batch_size = defaults.GPU_BATCH_SIZE if on_gpu else defaults.CPU_BATCH_SIZE
    progress = ProgressLines("calibrate", len(dataset.examples)) if show_progress else None
    try:
        preds = predict_squad(qa_model, dataset.examples, settings, batch_size=batch_size, progress=progress,
                              calibrate=False)
    finally:
        if progress is not None:
            progress.close()
    source = Path(getattr(dataset, "path", None) or "data").name
    calibration, report = fit_calibration(dataset, preds, getattr(qa_model, "head_sha256", None), source, cross_fit)
    path = write_settings(folder, dataclasses.replace(qa_model.settings, calibration=calibration))
    report["saved"] = str(path)
    return report
