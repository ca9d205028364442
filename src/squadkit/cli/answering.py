"""Commands over one model and a passage or a SQuAD file: answer, predict, calibrate, evaluate, data stats."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Optional

import typer

from ..errors import SquadkitError
from .app import (BACKEND, DEVICE, MODEL, STRICT, app, check_question, data_app, leave_process_group, model_files,
                  note_why_empty, read_context)
from .options import Flags, Opt, command, note, print_json, setting_opts

ANSWER_SETTINGS = ("top_k", "handle_impossible_answer", "null_score_diff_threshold", "max_answer_length",
                   "max_seq_length", "doc_stride", "max_query_length", "batch_size", "min_confidence", "align_to_words")
PREDICT_SETTINGS = ("batch_size", "null_score_diff_threshold", "n_best_size", "max_answer_length", "max_seq_length",
                    "doc_stride", "max_query_length", "legacy", "do_lower_case", "version_2_with_negative",
                    "min_confidence", "whole_words")


@command(app, "answer",
         Opt("question", "The question to answer.", str, ..., ("--question", "-q")),
         Opt("context", "The passage to search.", Optional[str], None, ("--context", "-c")),
         Opt("context_file", "Read the passage from a UTF-8 file.", Optional[Path]),
         MODEL, BACKEND, DEVICE,
         Opt("explain", "Also print the settings in force and where each came from.", bool, False),
         *setting_opts(*ANSWER_SETTINGS))
def answer(f: Flags) -> None:
    """Answer one question about a passage (pipeline mode) and print JSON."""
    from ..model_folder import resolve_model_source

    given = f.settings(ANSWER_SETTINGS, "pipeline")  # checked once, before the model loads
    check_question(f.question)
    text = read_context(f.context, f.context_file)
    resolve_model_source(f.model)
    from ..pipeline import QuestionAnswerer, empty_answer
    from ..progress import ProgressLines

    qa = QuestionAnswerer(f.model, backend=f.backend, device=f.device, given=given)
    in_force = qa.settings_in_force()
    progress = ProgressLines("answer: windows", 1)
    try:
        answers = qa.answer_pairs([(f.question, text)], window_progress=progress.set_done)[0]
    finally:
        progress.close()
    result = answers if in_force.top_k > 1 else (answers[0] if answers else empty_answer(in_force))
    note_why_empty(result[0] if isinstance(result, list) and result else result)
    if f.explain:
        result = {"answer": result, "settings": in_force.as_dict(), "model": qa.model.name_or_path,
                  "backend": qa.model.backend, **model_files(qa.model)}
    print_json(result)


@command(app, "predict",
         MODEL,
         Opt("data", "SQuAD file (nested v1.1/v2.0 JSON, or flat JSON/JSONL).", Path, ..., ("--data", "-d")),
         Opt("output_dir", "Folder for predictions.json, nbest_predictions.json, null_odds.json, null_probs.json.",
             Path, ..., ("--output", "-o"), ("--output-dir", "--out-file")),
         BACKEND,
         Opt("ignore_saved_threshold", "Use 0.0 rather than the threshold saved beside the model.", bool, False,
             ("--ignore-saved-threshold/--use-saved-threshold",)),
         DEVICE, STRICT, *setting_opts(*PREDICT_SETTINGS))
def predict(f: Flags) -> None:
    """Write run_squad's prediction files for a SQuAD file (and eval_results.json when it has answers).

    With a calibrated model (squadkit calibrate) also confidence.json: question id -> confidence of its prediction."""
    from ..predict import run_predict

    summary = run_predict(model=f.model, data=f.data, output_dir=f.output_dir, backend=f.backend, device=f.device,
                          ignore_saved_threshold=f.ignore_saved_threshold, strict=f.strict, show_progress=True,
                          note=note, given=f.settings(PREDICT_SETTINGS, "squad"), names=f.names)
    leave_process_group()
    if summary is not None:
        print_json(summary)


@command(app, "calibrate",
         Opt("model", "A local model folder (checkpoint or ONNX export); the calibrator is saved in its squadkit.json.",
             str, ..., ("--model", "-m")),
         Opt("data", "SQuAD dev data with answers (v2.0 for the empty answer's confidence).", Path, ..., ("--data", "-d")),
         BACKEND, *setting_opts("batch_size"), DEVICE,
         Opt("cross_fit", "Also report out-of-fold ECE (fit on all articles but one, test on it).", bool, True),
         STRICT,
         Opt("verbose", "Print the whole report (reliability tables) rather than its summary.", bool, False,
             ("--verbose/--quiet", "-v")))
def calibrate(f: Flags) -> None:
    """Fit the confidence calibrator on dev predictions and save it in the model folder.

    Every answer of pipeline/answer/predict/serve then carries "confidence" (probability of an exact match;
    for "" the probability that the question has no answer), and --min-confidence abstains below it."""
    from ..calibrate import report_summary, run_calibrate

    report = run_calibrate(f.model, f.data, backend=f.backend, given=f.settings(("batch_size",), "squad"),
                           device=f.device, strict=f.strict, show_progress=True, cross_fit=f.cross_fit, note=note)
    print_json(report if f.verbose else report_summary(report))


@command(app, "evaluate",
         Opt("data_file", "SQuAD v1.1 / v2.0 data file (e.g. dev-v2.0.json).", Path, ..., argument=True, metavar="DATA"),
         Opt("pred_file", "Predictions: a JSON object of question id to answer text.", Path, ..., argument=True,
             metavar="PREDS"),
         Opt("na_prob_file", "Model estimates of the probability of no answer (id -> number; predict's null_probs.json).",
             Optional[Path], None, ("--na-prob-file", "-n"), metavar="FILE"),
         Opt("na_prob_thresh", 'Predict "" where the no-answer probability is strictly above X (with --na-prob-file).',
             float, 1.0, ("--na-prob-thresh", "-t"), metavar="X", show_default=True),
         Opt("na_prob_logits", "The --na-prob-file holds null odds (logit differences, as predict's null_odds.json and "
             "run_squad's): score their sigmoid, a probability (the same best_* scores; -t then in probability "
             "units).", bool, False, ("--na-prob-logits",)),
         Opt("out_file", "Write the metrics here as compact JSON (default: indented JSON on stdout; the official "
             "script's --out-file).", Optional[Path], None, ("--output", "-o"), ("--out-file",), metavar="FILE"),
         Opt("out_image_dir", "Save precision-recall curves and na-prob histograms here (needs --na-prob-file and "
             "matplotlib).", Optional[Path], None, ("--out-image-dir", "-p"), metavar="DIR"),
         Opt("best_always", "Report best_exact/best_f1 and their thresholds even without --na-prob-file (all na-probs "
             "0.0), as transformers' run_squad did; its model cards show best_exact at threshold 0.0.", bool, False),
         Opt("verbose", "Print a summary and the metric time on stderr.", bool, False, ("--verbose/--quiet", "-v")),
         Opt("confidence_file", "Calibrated confidences (id -> probability that the prediction is an exact match; "
             "predict's confidence.json, also read from beside PREDS when there): adds ECE, the reliability table, "
             "precision at 0.5/0.7/0.9 and the risk-coverage AURC under 'confidence' (images with -p).",
             Optional[Path], None, ("--confidence",), metavar="FILE"),
         Opt("cutoffs", "With confidences: the cut-offs to report precision and coverage at (comma-separated, each in "
             "[0, 1]).", str, "0.5,0.7,0.9", metavar="P,P,...", show_default=True),
         Opt("compare_file", "Other predictions for the same questions: adds 'compared_with', PREDS' F1 and exact minus "
             "FILE's with 95% paired-bootstrap intervals (2,000 resamples, seed 0), of the answer texts as given in "
             "both files.", Optional[Path], None, ("--compare",), metavar="FILE"))
def evaluate(f: Flags) -> None:
    """Score predictions with the official SQuAD v2.0 evaluation, number for number.

    "Missing prediction for ID" lines go to stderr (the official script prints them on stdout), so stdout stays one JSON document.
    """
    from ..io import atomic_write_json
    from ..metrics import files

    cutoffs = _cutoffs(f.cutoffs, f.names["cutoffs"])
    confidence_file = f.confidence_file
    if confidence_file is None:
        confidence_file, notes = files.confidences_beside(f.pred_file)
        for text in notes:
            note(text)
    images = f.out_image_dir if f.na_prob_file is not None else None
    if f.out_image_dir is not None and f.na_prob_file is None and confidence_file is None:
        note("--out-image-dir needs --na-prob-file (as in the official script); no images written")
    missing: list[str] = []

    def report_missing(line: str) -> None:
        missing.append(line)
        typer.echo(line, err=True)

    start = time.perf_counter()
    out = files.evaluate_files(f.data_file, f.pred_file, f.na_prob_file, f.na_prob_thresh, f.best_always, images,
                               report_missing=report_missing, report_note=note, na_prob_logits=f.na_prob_logits)
    if confidence_file is not None:
        out["confidence"] = files.confidence_report_of_files(f.data_file, f.pred_file, confidence_file, cutoffs,
                                                             f.out_image_dir)
    if f.compare_file is not None:
        out["compared_with"] = files.compare_files(f.data_file, f.pred_file, f.compare_file)
    if f.verbose:
        typer.echo(f"evaluated {out['total']} question(s) in {time.perf_counter() - start:.3f} s, loading included "
                   f"({len(missing)} without a prediction)", err=True)
    if f.out_file is None:
        return print_json(out)
    try:
        atomic_write_json(f.out_file, out, indent=None)
    except OSError as exc:
        raise SquadkitError(f"{f.out_file}: cannot write the metrics: {exc.strerror or exc}") from None


def _cutoffs(text: str, flag: str) -> tuple[float, ...]:
    """``--cutoffs 0.5,0.7,0.9`` as numbers, each in [0, 1]."""
    try:
        cuts = tuple(float(c) for c in text.split(",") if c.strip())
    except ValueError:
        cuts = ()
    if not cuts or not all(0.0 <= c <= 1.0 for c in cuts):
        raise SquadkitError(f"{flag} must be comma-separated numbers in [0, 1], got {text!r}", param="cutoffs")
    return cuts


@command(data_app, "stats",
         Opt("file", "SQuAD v1.1/v2.0 JSON, or flat records (JSON lines / JSON list).", Path, ..., argument=True),
         Opt("tokenizer", "Tokenizer folder or hub id: also report lengths in tokens.", Optional[str]),
         Opt("strict", "Treat mismatched answer offsets as errors.", bool, False),
         Opt("as_json", "Print machine-readable JSON.", bool, False, ("--json/--no-json",)))
def data_stats(f: Flags) -> None:
    """Counts, length distributions and problems of a SQuAD file."""
    from ..data import SquadDataWarning, load_squad
    from ..stats import dataset_stats
    from .tables import print_stats

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SquadDataWarning)
        dataset = load_squad(f.file, strict=f.strict)
    for w in caught:
        if issubclass(w.category, SquadDataWarning):
            typer.echo(f"warning: {w.message}", err=True)
        else:  # pragma: no cover - pass anything else through unchanged
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    stats = dataset_stats(dataset, tokenizer=f.tokenizer)
    if f.as_json:
        print_json(stats.to_dict())
    else:
        print_stats(f.file, stats)
