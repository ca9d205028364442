"""The ``squadkit`` command: a thin typer shell over the Python API.

Every command parses its flags, calls one API function and prints or writes the result.
Bad input (a SquadkitError / ValueError / missing file) becomes one line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Callable, Optional

import typer

from .errors import SquadkitError

DEFAULT_MODEL_ID = "mrm8488/roberta-base-1B-1-finetuned-squadv2"  # the model card's checkpoint

app = typer.Typer(
    name="squadkit",
    help="Extractive question answering in the SQuAD v2 style: train, evaluate, answer, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and validate SQuAD data files.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("stats")
def data_stats_command(
    file: Path = typer.Argument(..., help="SQuAD v1.1/v2.0 JSON, or flat records (JSON lines / JSON list)."),
    tokenizer: Optional[str] = typer.Option(
        None, "--tokenizer", help="Tokenizer folder or hub id: also report lengths in tokens."
    ),
    strict: bool = typer.Option(False, "--strict", help="Treat mismatched answer offsets as errors."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
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


def friendly_errors(func: Callable) -> Callable:
    """Turn bad-input exceptions into one-line errors with exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except (SquadkitError, ValueError, FileNotFoundError, KeyError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            fail(message)
        except KeyboardInterrupt:
            fail("interrupted", code=130)

    return wrapper


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
        False, "--best-always",
        help="Report best_exact/best_f1 and their thresholds even without --na-prob-file (all na-probs 0.0), "
             "as transformers' run_squad did; its model cards show best_exact at threshold 0.0."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Print a summary and the metric time on stderr."),
) -> None:
    """Score predictions with the official SQuAD v2.0 evaluation, number for number.

    "Missing prediction for ID" lines go to stderr (the official script prints them on stdout), so stdout stays one JSON document.
    """
    import time

    from . import metrics

    if out_image_dir is not None and na_prob_file is None:
        typer.echo("note: --out-image-dir needs --na-prob-file (as in the official script); no images written", err=True)
        out_image_dir = None
    missing: list[str] = []

    def report_missing(line: str) -> None:
        missing.append(line)
        typer.echo(line, err=True)

    start = time.perf_counter()
    out = metrics.evaluate_files(data_file, pred_file, na_prob_file, na_prob_thresh, best_always, out_image_dir,
                                 report_missing=report_missing)
    if verbose:
        typer.echo(f"evaluated {out['total']} question(s) in {time.perf_counter() - start:.3f} s, loading included "
                   f"({len(missing)} without a prediction)", err=True)
    if out_file is not None:
        from .io import atomic_write_json

        try:
            atomic_write_json(out_file, out, indent=None)
        except OSError as exc:
            fail(f"{out_file}: cannot write the metrics: {exc.strerror or exc}")
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
    model: str = typer.Option(DEFAULT_MODEL_ID, "--model", "-m", help="Hub id, checkpoint folder or exported ONNX folder."),
    backend: str = typer.Option("auto", help="torch, onnx, or auto (ONNX for an exported folder)."),
    top_k: int = typer.Option(1, "--top-k", help="How many answers to return."),
    handle_impossible_answer: bool = typer.Option(False, "--handle-impossible-answer", help="Allow the empty (no-answer) answer."),
    max_answer_len: int = typer.Option(15, "--max-answer-len", help="Longest answer, in tokens."),
    doc_stride: Optional[int] = typer.Option(None, "--doc-stride", help="Tokens shared by neighbouring windows (default min(max_seq_len // 2, 128))."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="Tokens per window (default min(model max, 384))."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
) -> None:
    """Answer one question about a passage (pipeline mode) and print JSON."""
    from .pipeline import QuestionAnswerer

    text = _read_context(context, context_file)
    qa = QuestionAnswerer(model, backend=backend, device=device)
    result = qa(
        question=question, context=text, top_k=top_k, handle_impossible_answer=handle_impossible_answer,
        max_answer_len=max_answer_len, doc_stride=doc_stride, max_seq_len=max_seq_len,
    )
    print_json(result)


@app.command()
@friendly_errors
def predict(
    model: str = typer.Option(DEFAULT_MODEL_ID, "--model", "-m", help="Hub id, checkpoint folder or exported ONNX folder."),
    data: Path = typer.Option(..., "--data", "-d", help="SQuAD file (nested v1.1/v2.0 JSON, or flat JSON/JSONL)."),
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Folder for predictions.json, nbest_predictions.json, null_odds.json."),
    backend: str = typer.Option("auto", help="torch, onnx, or auto (ONNX for an exported folder)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Windows per forward pass."),
    null_score_diff_threshold: Optional[float] = typer.Option(
        None, "--null-score-diff-threshold",
        help="Predict '' when null score - best span score exceeds this (default: the threshold saved with the model, else 0.0).",
    ),
    ignore_saved_threshold: bool = typer.Option(False, "--ignore-saved-threshold", help="Use 0.0 rather than the threshold saved beside the model."),
    n_best_size: int = typer.Option(20, "--n-best-size"),
    max_answer_length: int = typer.Option(30, "--max-answer-length"),
    max_seq_length: int = typer.Option(384, "--max-seq-length"),
    doc_stride: int = typer.Option(128, "--doc-stride", help="Step between window starts, as run_squad."),
    max_query_length: int = typer.Option(64, "--max-query-length"),
    legacy: bool = typer.Option(False, "--legacy", help="Build windows and recover text exactly as run_squad did."),
    do_lower_case: bool = typer.Option(False, "--do-lower-case", help="run_squad's flag: lower-cases when projecting answers back (get_final_text)."),
    version_2_with_negative: bool = typer.Option(True, "--version-2-with-negative/--no-null", help="Allow the empty answer (SQuAD v2)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on answer offsets that do not point at their text."),
) -> None:
    """Write run_squad's prediction files for a SQuAD file (and eval_results.json when it has answers)."""
    from .predict import run_predict

    summary = run_predict(
        model=model, data=data, output_dir=output_dir, backend=backend, batch_size=batch_size, device=device,
        null_score_diff_threshold=null_score_diff_threshold, ignore_saved_threshold=ignore_saved_threshold,
        n_best_size=n_best_size, max_answer_length=max_answer_length, max_seq_length=max_seq_length,
        doc_stride=doc_stride, max_query_length=max_query_length, legacy=legacy, do_lower_case=do_lower_case,
        version_2_with_negative=version_2_with_negative, strict=strict, show_progress=sys.stderr.isatty(),
    )
    if summary is not None:
        print_json(summary)


# ---------------------------------------------------------------------------------------------
# train  (squadkit.train)
# ---------------------------------------------------------------------------------------------
# COMMANDS:TRAIN


# ---------------------------------------------------------------------------------------------
# export  (squadkit.export)
# ---------------------------------------------------------------------------------------------
# COMMANDS:EXPORT


# ---------------------------------------------------------------------------------------------
# serve  (squadkit.serve)
# ---------------------------------------------------------------------------------------------
# COMMANDS:SERVE


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
