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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .decode import (
    NBestEntry,
    SquadPrediction,
    squad_prediction,
    squad_text_recoverer,
    squad_window_nbest,
)
from .errors import SquadkitError
from .features import WindowSettings, build_windows, iter_batches
from .io import atomic_write_json


@dataclass(frozen=True)
class SquadDecodeSettings:
    """run_squad's evaluation flags, with its defaults."""

    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    n_best_size: int = 20
    max_answer_length: int = 30
    null_score_diff_threshold: float = 0.0
    version_2_with_negative: bool = True
    legacy: bool = False
    do_lower_case: bool = False

    def validate(self) -> "SquadDecodeSettings":
        for name in ("n_best_size", "max_answer_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SquadkitError(f"{name} must be a positive integer, got {value!r}")
        self.window_settings().validate()
        return self

    def window_settings(self) -> WindowSettings:
        return WindowSettings("legacy" if self.legacy else "squad", self.max_seq_length, self.doc_stride, self.max_query_length)


@dataclass
class SquadPredictions:
    """Predictions for a set of questions, keyed by question id, in data order."""

    predictions: dict[str, str] = field(default_factory=dict)
    nbest: dict[str, list[NBestEntry]] = field(default_factory=dict)
    null_odds: dict[str, float] = field(default_factory=dict)

    def add(self, qid: str, prediction: SquadPrediction) -> None:
        self.predictions[qid] = prediction.text
        self.nbest[qid] = prediction.nbest
        if prediction.null_odds is not None:
            self.null_odds[qid] = prediction.null_odds

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
    batch_size: int = 32,
    shard: tuple[int, int] | None = None,
    chunk_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> SquadPredictions:
    """Predict answers for SQuAD examples (objects with ``id``, ``question`` and ``context``).

    ``model`` is anything ``squadkit.models.load_model`` returns. ``progress(n)`` is called
    with the number of questions finished after each chunk.
    """
    settings.validate()
    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    window_settings = settings.window_settings()
    if shard is not None:
        rank, world = shard
        examples = examples[rank::world]
    out = SquadPredictions()
    for lo in range(0, len(examples), chunk_size):
        chunk = examples[lo : lo + chunk_size]
        windows = build_windows(tokenizer, [e.question for e in chunk], [e.context for e in chunk], window_settings)
        nbests = [None] * len(windows)
        for batch in iter_batches(windows, batch_size, pad_id):
            start, end = model.logits(batch)
            widths = [windows[i].input_ids.shape[0] if settings.legacy else windows[i].length for i in batch.window_indices]
            for i, nb in zip(batch.window_indices, squad_window_nbest(start, end, widths, settings.n_best_size)):
                nbests[i] = nb
        by_example: dict[int, list[int]] = {}
        for i, window in enumerate(windows):
            by_example.setdefault(window.example_index, []).append(i)
        for j, example in enumerate(chunk):
            idx = by_example.get(j, [])
            text_of_span = squad_text_recoverer(tokenizer, example.context, settings.do_lower_case)
            out.add(
                example.id,
                squad_prediction(
                    [windows[i] for i in idx],
                    [nbests[i] for i in idx],
                    text_of_span,
                    n_best_size=settings.n_best_size,
                    max_answer_length=settings.max_answer_length,
                    version_2_with_negative=settings.version_2_with_negative,
                    null_score_diff_threshold=settings.null_score_diff_threshold,
                ),
            )
        if progress is not None:
            progress(len(chunk))
    return out


def merge_predictions(parts: Iterable[SquadPredictions], order: Sequence[str]) -> SquadPredictions:
    """Shards back into one set, in the data's question order."""
    merged = SquadPredictions()
    for part in parts:
        merged.predictions.update(part.predictions)
        merged.nbest.update(part.nbest)
        merged.null_odds.update(part.null_odds)
    out = SquadPredictions()
    for qid in order:
        if qid in merged.predictions:
            out.predictions[qid] = merged.predictions[qid]
            out.nbest[qid] = merged.nbest[qid]
            if qid in merged.null_odds:
                out.null_odds[qid] = merged.null_odds[qid]
    return out


PREDICTIONS_FILE = "predictions.json"
NBEST_FILE = "nbest_predictions.json"
NULL_ODDS_FILE = "null_odds.json"


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
    return paths


EVAL_RESULTS_FILE = "eval_results.json"


def resolve_threshold(model, given: float | None, ignore_saved: bool) -> float:
    """The null-score threshold to use: the flag, else the one saved beside the model, else 0.0."""
    if given is not None:
        return float(given)
    saved = None if ignore_saved else model.settings.get("null_score_diff_threshold")
    return float(saved) if saved is not None else 0.0


def evaluate_predictions(dataset, preds: SquadPredictions, threshold: float) -> dict:
    """The official metric on ``preds``, with the real null odds as na-probs.

    The metric's no-answer threshold is the one the predictions were made with, so its
    thresholding agrees with theirs; best_* then show the threshold that would have been best.
    """
    from .metrics import evaluate

    null_odds = preds.null_odds or None
    return dict(evaluate(dataset, preds.predictions, na_probs=null_odds, na_prob_thresh=threshold, report_missing=None))


def run_predict(
    model,
    data,
    output_dir,
    backend: str = "auto",
    batch_size: int | None = None,
    device: str | None = None,
    null_score_diff_threshold: float | None = None,
    ignore_saved_threshold: bool = False,
    strict: bool = False,
    show_progress: bool = False,
    **decode_options,
) -> dict | None:
    """``squadkit predict``: load model and data, predict, write the files, score when possible.

    Under ``torchrun`` or ``accelerate launch`` every process predicts its shard of the
    questions; the main process gathers the shards and writes one merged set of files.
    Returns the metric's results (or a summary without gold answers) on the main process,
    None on the others.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    from .data import load_squad
    from .models import load_model

    dataset = data if hasattr(data, "examples") else load_squad(data, strict=strict)
    # cpu=True where no GPU will be used: accelerate only forms a CPU (gloo) process group under
    # torchrun / accelerate launch when told so; otherwise every process would predict everything.
    state = PartialState(cpu=_cpu_only(device))
    if device is None and state.num_processes > 1:
        device = str(state.device)
    qa_model = load_model(model, backend=backend, device=device)
    if batch_size is None:  # small length-sorted batches are fastest on a CPU (benchmarks/bench_cpu.py)
        batch_size = 64 if str(getattr(qa_model, "device", "cpu")).startswith("cuda") else 8
    threshold = resolve_threshold(qa_model, null_score_diff_threshold, ignore_saved_threshold)
    settings = SquadDecodeSettings(null_score_diff_threshold=threshold, **decode_options).validate()
    examples = dataset.examples
    shard = (state.process_index, state.num_processes) if state.num_processes > 1 else None
    total = len(examples[shard[0] :: shard[1]]) if shard else len(examples)

    progress_cb, finish = _progress(total, show_progress and state.is_main_process)
    try:
        preds = predict_squad(qa_model, examples, settings, batch_size=batch_size, shard=shard, progress=progress_cb)
    finally:
        finish()
    if shard is not None:
        parts = gather_object([preds])
        if not state.is_main_process:
            return None
        preds = merge_predictions(parts, [e.id for e in examples])
    paths = write_prediction_files(preds, output_dir)
    has_gold = any(e.answers for e in examples)
    if has_gold:
        results = evaluate_predictions(dataset, preds, threshold)
        atomic_write_json(Path(output_dir) / EVAL_RESULTS_FILE, results)
        return results
    return {"questions": len(preds.predictions), "files": {k: str(v) for k, v in paths.items()}}


def _cpu_only(device) -> bool:
    """True when this run will not use a GPU (no CUDA, or a CPU device asked for)."""
    import torch

    return not torch.cuda.is_available() or (device is not None and str(device).startswith("cpu"))


def _progress(total: int, enabled: bool):
    """A rich progress bar on a terminal; no-ops elsewhere."""
    if not enabled:
        return None, lambda: None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
    task = bar.add_task("predict", total=total)
    bar.start()
    return (lambda n: bar.advance(task, n)), bar.stop
