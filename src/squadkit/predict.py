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
from pathlib import Path
from typing import Callable, Mapping, Sequence

from . import defaults
from .decode import squad_prediction
from .text_recovery import squad_text_recoverer
from .io import atomic_write_json
from .prediction_files import (
    EVAL_RESULTS_FILE,
    check_output_folder,
    SquadPredictions,
    evaluate_predictions,
    merge_predictions,
    write_prediction_files,
)
from .settings import AnswerSettings, Given, given_options, resolve


def decode_settings_for(model, dataset=None, ignore_saved_threshold: bool = False, mode: str = "squad",
                        given: Given | None = None, **explicit) -> tuple[AnswerSettings, list[str]]:
    """The settings for ``model`` in squad (or ask) mode, resolved by ``squadkit.settings.resolve``
    (explicit > model folder > default, each with its source), and notes worth telling the user.

    ``version_2_with_negative`` not given: SQuAD v1.1 data (no unanswerable question, version
    1.x) is predicted without the empty answer, with a note; else the folder's, else True.
    """
    given = given if given is not None else given_options(explicit, mode)
    notes = []
    v1_data = dataset is not None and _is_v1_data(dataset)
    if mode == "squad" and "version_2_with_negative" not in given.values and v1_data:
        given = given.merged(Given({"version_2_with_negative": False}))
        notes.append(f"{getattr(dataset, 'path', None) or 'the data'} is SQuAD v1.1 (no unanswerable questions): "
                     f"predicting without the empty answer (--version-2-with-negative to allow it)")
    ignore = ("null_score_diff_threshold",) if ignore_saved_threshold else ()
    out = resolve(model, mode, given, ignore_saved=ignore)
    if notes:
        out.sources["version_2_with_negative"] = "data (SQuAD v1.1)"
    return out, notes


def _is_v1_data(dataset) -> bool:
    version = (getattr(dataset, "version", None) or "").lstrip("vV")
    fmt = getattr(dataset, "format", "")
    return not any(e.is_impossible for e in dataset.examples) and (fmt == "squad-v1.1" or version.startswith("1"))


def predict_squad(
    model,
    examples: Sequence,
    settings: AnswerSettings = AnswerSettings(),
    batch_size: int | None = None,
    shard: tuple[int, int] | None = None,
    chunk_size: int = 256,
    progress: Callable[[int], None] | None = None,
    calibrate: bool = True,
    keep_windows: bool = False,
) -> SquadPredictions:
    """Predict answers for SQuAD examples (objects with ``id``, ``question`` and ``context``).

    ``model`` is a ``squadkit.model.Model`` (``squadkit.model.load``). ``progress(n)`` is called
    with the number of questions finished after each chunk. With a calibrator in the model's
    settings (and ``calibrate``), every prediction carries its confidence. ``keep_windows``: also keep each
    window's null logits and log normaliser (``SquadPredictions.windows``; ``ask`` normalises over passages).
    """
    from .calibration import check_min_confidence
    from .nbest import squad_batch_nbest
    from .window_scoring import score_pairs

    calibrator = model.calibrator if calibrate else None
    check_min_confidence(settings.min_confidence, calibrated=calibrator is not None)
    batch_size = settings.batch_size if batch_size is None else defaults.check_positive_int(batch_size, "batch_size")
    if shard is not None:
        rank, world = shard
        examples = examples[rank::world]
    legacy = settings.legacy

    def reduce(start, end, batch, rows):
        widths = [w.input_ids.shape[0] if legacy else w.length for w in rows]  # start: numpy, or torch on a GPU
        return squad_batch_nbest(start, end, rows, widths, settings.n_best_size, settings.max_answer_length,
                                 batch.attention_mask)

    out = SquadPredictions()
    questions = [e.question for e in examples]
    contexts = [e.context for e in examples]
    for item in score_pairs(model, questions, contexts, settings.window_settings(), reduce, batch_size, chunk_size,
                            progress, on_device=True):
        example = examples[item.index]
        text_of_span = squad_text_recoverer(model.tokenizer, example.context, settings.do_lower_case,
                                            whole_words=settings.whole_words and not legacy)
        out.add(example.id, squad_prediction(
            item.windows, item.reduced, text_of_span, n_best_size=settings.n_best_size,
            max_answer_length=settings.max_answer_length, version_2_with_negative=settings.version_2_with_negative,
            null_score_diff_threshold=settings.null_score_diff_threshold,
            calibrator=calibrator, min_confidence=settings.min_confidence,
        ))
        if keep_windows:
            out.windows[example.id] = [(nb.null_start_logit, nb.null_end_logit, nb.log_norm) for nb in item.reduced]
    return out


def predict_sharded(model, examples: Sequence, settings: AnswerSettings, batch_size: int, state,
                    progress: Callable[[int], None] | None = None) -> SquadPredictions | None:
    """``predict_squad`` under a launcher: each process of ``state`` (accelerate's PartialState or an
    Accelerator) predicts its shard of ``examples``; the main process gets them all, in data order;
    the others get None. One process: all of them. (``predict`` and ``train``'s evaluation.)"""
    shard = (state.process_index, state.num_processes) if state.num_processes > 1 else None
    preds = predict_squad(model, examples, settings, batch_size=batch_size, shard=shard, progress=progress)
    if shard is None:
        return preds
    from accelerate.utils import gather_object

    parts = gather_object([preds])
    if not state.is_main_process:
        return None
    return merge_predictions(parts, [e.id for e in examples])


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
    given: Given | None = None,
    names: Mapping[str, str] | None = None,
    **decode_options,
) -> dict | None:
    """``squadkit predict``: load model and data, predict, write the files, score when possible.

    Decode options not given come from the model folder, else run_squad's defaults. Under ``torchrun``
    or ``accelerate launch`` each process predicts a shard and the main process writes the merged files.
    Returns the metric's results (or a summary without gold answers) on the main process, None elsewhere.
    """
    from .backends import check_backend
    from .model_folder import resolve_model_source
    from .model import load

    # everything that can be checked without the model, before the heavy imports and the model
    check_backend(backend)
    if given is None:  # else checked where it came in (the CLI)
        given = given_options({"batch_size": batch_size, **decode_options}, "squad")
    check_output_folder(output_dir, (names or {}).get("output_dir", "output_dir"))
    if isinstance(model, (str, os.PathLike)):
        resolve_model_source(model)
    from .data import load_squad

    dataset = data if hasattr(data, "examples") else load_squad(data, strict=strict)
    from accelerate import PartialState

    from .progress import ProgressLines

    # cpu=True where no GPU will be used: accelerate only forms a CPU (gloo) process group under
    # torchrun / accelerate launch when told so; otherwise every process would predict everything.
    state = PartialState(cpu=_cpu_only(device))
    if device is None and state.num_processes > 1:
        device = str(state.device)
    qa_model = load(model, backend=backend, device=device)
    settings, notes = decode_settings_for(qa_model, dataset, ignore_saved_threshold, given=given)
    batch_size = settings.batch_size  # unless told: the measured best for this backend and precision
    if note is not None and state.is_main_process:
        for text in notes:
            note(text)
    shard_size = len(dataset.examples[state.process_index :: state.num_processes])
    progress = ProgressLines("predict", shard_size) if (show_progress and state.is_main_process) else None
    try:
        preds = predict_sharded(qa_model, dataset.examples, settings, batch_size, state, progress)
    finally:
        if progress is not None:
            progress.close()
    return None if preds is None else _write_and_score(preds, dataset, qa_model, settings, output_dir, note)


def _write_and_score(preds: SquadPredictions, dataset, model, settings: AnswerSettings, output_dir,
                     note: Callable[[str], None] | None) -> dict:
    """The prediction files, and the official scores where the data has answers (else a summary)."""
    paths = write_prediction_files(preds, output_dir)
    if not any(e.answers for e in dataset.examples):
        return {"questions": len(preds.predictions), "files": {k: str(v) for k, v in paths.items()}}
    results = evaluate_predictions(dataset, preds, settings.null_score_diff_threshold)
    _mark_in_sample(results, model.settings.calibration, getattr(dataset, "path", None), note)
    atomic_write_json(Path(output_dir) / EVAL_RESULTS_FILE, results)
    return results


def _mark_in_sample(results: dict, calibration: dict | None, data_path, note) -> None:
    """Scoring confidences on the very file the calibrator was fitted on measures it in-sample
    (optimistic): say so in the results (``confidence.in_sample``) and in a note, with the
    cross-fitted ECE recorded when it was fitted."""
    fitted = (calibration or {}).get("fitted_on") or {}
    if "confidence" not in results or not data_path or fitted.get("data") != Path(data_path).name:
        return
    results["confidence"]["in_sample"] = True
    cross = (fitted.get("cross_fit") or {}).get("ece")
    if cross is not None:
        results["confidence"]["ece_cross_fit"] = cross
    if note is not None:
        note(f"the calibrator was fitted on {Path(data_path).name}: its ECE here is in-sample (optimistic)"
             + (f"; cross-fitted it was {cross:.3f}" if cross is not None else ""))


def _cpu_only(device) -> bool:
    """True when this run will not use a GPU (no CUDA, or a CPU device asked for)."""
    import torch

    return not torch.cuda.is_available() or (device is not None and str(device).startswith("cpu"))
