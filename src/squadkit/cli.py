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

from .errors import SquadkitError, first_line

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
            message = first_line(exc)
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
    from .pipeline import QuestionAnswerer, check_options

    text = _read_context(context, context_file)
    check_options(top_k, max_answer_len, doc_stride, max_seq_len or 384)
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
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Windows per forward pass (default 8 on a CPU, 64 on a GPU)."),
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
def _opt(default, *names: str, **kwargs):
    """An option under run_squad's snake_case name(s) and the kebab-case spelling of each."""
    spelled = []
    for n in names:
        spelled.append(n)
        if "_" in n:
            spelled.append(n.replace("_", "-"))
    return typer.Option(default, *dict.fromkeys(spelled), **kwargs)


@app.command("train", no_args_is_help=True)
@friendly_errors
def train_cmd(
    model_name_or_path: str = _opt(..., "--model_name_or_path", "--model", "-m", help="Base model: local folder or hub id (a base encoder gets a fresh QA head)."),
    output_dir: Path = _opt(..., "--output_dir", "-o", help="Where the model, checkpoints, log.jsonl, predictions and README.md go. Must be empty unless --overwrite_output_dir or --resume_from_checkpoint."),
    train_file: Optional[str] = _opt(None, "--train_file", help="Training data: SQuAD JSON (v1.1/v2.0) or flat `datasets` records (JSON/JSONL)."),
    predict_file: Optional[str] = _opt(None, "--predict_file", help="Dev data to evaluate on (--do_eval, --eval_steps)."),
    data_dir: Optional[str] = _opt(None, "--data_dir", help="Folder the data files are relative to (run_squad's; defaults to train-v2.0.json / dev-v2.0.json there)."),
    model_type: Optional[str] = _opt(None, "--model_type", help="Accepted for run_squad compatibility; checked against the model's config (a note when they differ)."),
    config_name: Optional[str] = _opt(None, "--config_name", help="Config to use instead of the model's."),
    tokenizer_name: Optional[str] = _opt(None, "--tokenizer_name", help="Tokenizer to use instead of the model's."),
    cache_dir: Optional[str] = _opt(None, "--cache_dir", help="Hugging Face download cache; also the default folder of the feature cache."),
    features_cache_dir: Optional[str] = _opt(None, "--features_cache_dir", help="Where tokenized features are cached as squadkit-features-<hash>.npz (hash of data bytes, tokenizer, window settings). Default: --cache_dir, else the output folder's parent."),
    do_train: bool = _opt(False, "--do_train", help="Fine-tune."),
    do_eval: bool = _opt(False, "--do_eval", help="Predict --predict_file at the end; write predictions, null odds and eval_results.json."),
    do_lower_case: bool = _opt(False, "--do_lower_case", help="Lower-case (tokenizers that keep case, e.g. RoBERTa's, ignore it: a warning says so)."),
    version_2_with_negative: bool = _opt(False, "--version_2_with_negative", help="SQuAD v2: train on unanswerable questions and allow the empty answer."),
    max_seq_length: int = _opt(384, "--max_seq_length", help="Tokens per window."),
    doc_stride: int = _opt(128, "--doc_stride", help="Step between window starts (run_squad's meaning)."),
    max_query_length: int = _opt(64, "--max_query_length", help="Questions are cut to this many tokens."),
    per_gpu_train_batch_size: int = _opt(8, "--per_gpu_train_batch_size", "--per_device_train_batch_size", help="Windows per device per micro-step."),
    per_gpu_eval_batch_size: int = _opt(8, "--per_gpu_eval_batch_size", "--per_device_eval_batch_size"),
    learning_rate: float = _opt(5e-5, "--learning_rate", help="Peak AdamW learning rate."),
    gradient_accumulation_steps: int = _opt(1, "--gradient_accumulation_steps"),
    weight_decay: float = _opt(0.0, "--weight_decay"),
    adam_epsilon: float = _opt(1e-8, "--adam_epsilon"),
    max_grad_norm: float = _opt(1.0, "--max_grad_norm"),
    num_train_epochs: float = _opt(3.0, "--num_train_epochs"),
    max_steps: int = _opt(-1, "--max_steps", help="> 0: train this many optimizer steps (overrides --num_train_epochs)."),
    warmup_steps: int = _opt(0, "--warmup_steps"),
    warmup_ratio: float = _opt(0.0, "--warmup_ratio", help="Warmup as a fraction of all steps (when --warmup_steps is 0)."),
    n_best_size: int = _opt(20, "--n_best_size"),
    max_answer_length: int = _opt(30, "--max_answer_length"),
    null_score_diff_threshold: float = _opt(0.0, "--null_score_diff_threshold", help="Threshold for the evaluation's predictions; the best one on the dev data is what gets saved."),
    logging_steps: int = _opt(500, "--logging_steps", help="Log loss, learning rate and samples/s every N steps (log.jsonl and terminal)."),
    save_steps: int = _opt(500, "--save_steps", help="Write a resumable checkpoint-N every N steps (0: none)."),
    save_total_limit: Optional[int] = _opt(None, "--save_total_limit", help="Keep only the newest K checkpoints."),
    eval_steps: int = _opt(0, "--eval_steps", help="Evaluate on --predict_file every N steps and keep the best weights (by F1) in checkpoint-best."),
    evaluate_during_training: bool = _opt(False, "--evaluate_during_training", help="run_squad's flag: evaluate every --logging_steps (same as --eval_steps LOGGING_STEPS)."),
    load_best_model_at_end: bool = _opt(False, "--load_best_model_at_end", help="Save checkpoint-best's weights as the final model rather than the last step's."),
    seed: int = _opt(42, "--seed"),
    bf16: bool = _opt(False, "--bf16", help="bfloat16 autocast (CPU, or GPUs that support it)."),
    fp16: bool = _opt(False, "--fp16", help="float16 autocast with loss scaling (CUDA only)."),
    fp16_opt_level: Optional[str] = _opt(None, "--fp16_opt_level", help="Accepted for run_squad compatibility (apex); ignored."),
    no_cuda: bool = _opt(False, "--no_cuda", help="Train on the CPU even where a GPU is present."),
    overwrite_output_dir: bool = _opt(False, "--overwrite_output_dir", help="Train into a non-empty output folder: removes only an earlier run's checkpoint-*/ folders and log.jsonl; other files stay (model, card and prediction files are replaced at the end)."),
    overwrite_cache: bool = _opt(False, "--overwrite_cache", help="Re-tokenize even when the feature cache holds this data."),
    resume_from_checkpoint: Optional[str] = _opt(None, "--resume_from_checkpoint", help="Continue from a checkpoint folder, or 'auto' for the newest in the output folder (a fresh start when there is none)."),
    eval_all_checkpoints: bool = _opt(False, "--eval_all_checkpoints", help="Accepted for run_squad compatibility; not supported (use --eval_steps): a warning."),
    threads: Optional[int] = _opt(None, "--threads", help="Accepted for run_squad compatibility; tokenization is batched in the fast tokenizer."),
    local_rank: int = _opt(-1, "--local_rank", help="Accepted for launcher compatibility; the launcher's environment decides."),
    verbose_logging: bool = _opt(False, "--verbose_logging", help="Accepted for run_squad compatibility; ignored."),
    quiet: bool = _opt(False, "--quiet", "-q", help="No log lines on the terminal (log.jsonl is still written)."),
) -> None:
    """Fine-tune an extractive QA model with run_squad's recipe and flags (snake_case or kebab-case).

    The card's command runs as written, e.g. squadkit train --model_type roberta
    --model_name_or_path ./roberta-base --do_train --do_eval --version_2_with_negative
    --train_file train-v2.0.json --predict_file dev-v2.0.json --output_dir out ...
    Under `accelerate launch` or `torchrun` it trains data-parallel (batch per device =
    --per_gpu_train_batch_size). Tokenized features are cached in
    <features_cache_dir or cache_dir or output_dir/..>/squadkit-features-<hash>.npz.
    """
    import os
    import shlex
    import warnings

    from .train import TrainConfig, TrainWarning, train

    def show(message, category, filename, lineno, file=None, line=None):
        if int(os.environ.get("RANK", "0")) == 0:  # once, not once per process
            typer.echo(f"{'warning' if issubclass(category, TrainWarning) else category.__name__}: {message}", err=True)

    notes = []
    if eval_all_checkpoints:
        notes.append("--eval_all_checkpoints is not supported (ignored); --eval_steps evaluates during training")
    if fp16_opt_level is not None:
        notes.append("--fp16_opt_level is ignored (apex is not used; --fp16 uses torch autocast)")
    if evaluate_during_training:
        notes.append(f"--evaluate_during_training: evaluating every {logging_steps} steps (--eval_steps)")
    config = TrainConfig(
        model_name_or_path=model_name_or_path, output_dir=str(output_dir), train_file=train_file,
        predict_file=predict_file, data_dir=data_dir, model_type=model_type, config_name=config_name,
        tokenizer_name=tokenizer_name, cache_dir=cache_dir, features_cache_dir=features_cache_dir,
        do_train=do_train, do_eval=do_eval, do_lower_case=do_lower_case, version_2_with_negative=version_2_with_negative,
        max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=max_query_length,
        per_gpu_train_batch_size=per_gpu_train_batch_size, per_gpu_eval_batch_size=per_gpu_eval_batch_size,
        learning_rate=learning_rate, gradient_accumulation_steps=gradient_accumulation_steps, weight_decay=weight_decay,
        adam_epsilon=adam_epsilon, max_grad_norm=max_grad_norm, num_train_epochs=num_train_epochs, max_steps=max_steps,
        warmup_steps=warmup_steps, warmup_ratio=warmup_ratio, n_best_size=n_best_size,
        max_answer_length=max_answer_length, null_score_diff_threshold=null_score_diff_threshold,
        logging_steps=logging_steps, save_steps=save_steps, save_total_limit=save_total_limit,
        eval_steps=eval_steps or (logging_steps if evaluate_during_training else 0),
        load_best_model_at_end=load_best_model_at_end, seed=seed, bf16=bf16, fp16=fp16, no_cuda=no_cuda,
        overwrite_output_dir=overwrite_output_dir, overwrite_cache=overwrite_cache,
        resume_from_checkpoint=resume_from_checkpoint, show_progress=sys.stderr.isatty() and not quiet, quiet=quiet,
        command=shlex.join(["squadkit", *sys.argv[1:]]) if sys.argv[1:2] == ["train"] else None,
    )
    # (no accelerate state may be created before train(): its first creation decides CPU vs GPU)
    with warnings.catch_warnings():
        warnings.simplefilter("always", TrainWarning)
        warnings.showwarning = show
        for note in notes:
            warnings.warn(note, TrainWarning)
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


# ---------------------------------------------------------------------------------------------
# export  (squadkit.export)
# ---------------------------------------------------------------------------------------------
# COMMANDS:EXPORT
@app.command("export")
@friendly_errors
def export_cmd(
    model: str = typer.Option(DEFAULT_MODEL_ID, "--model", "-m", help="Hub id or checkpoint folder of a QA model."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder to write (model.onnx, tokenizer, settings, squadkit_export.json)."),
    quantize: Optional[str] = typer.Option(
        None, "--quantize", help="int8: also write model.int8.onnx (dynamic int8 weights), served by default from this folder."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default 17; the dynamo exporter uses at least 18)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder (atomically)."),
    exporter: str = typer.Option("auto", "--exporter", help="auto (TorchScript where torch has it), torchscript or dynamo."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help="Allow the checkpoint's own modelling code."),
) -> None:
    """Export a QA model to ONNX (dynamic batch and sequence), optionally int8, for fast CPU answers."""
    from .export import read_record, export_model

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
    model: str = typer.Option(DEFAULT_MODEL_ID, "--model", "-m", help="Hub id, checkpoint folder or exported ONNX folder."),
    backend: str = typer.Option("auto", help="torch, onnx, or auto (ONNX for an exported folder)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch intra-op threads (default: torch's, one per core)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default; 0.0.0.0 for all)."),
    port: int = typer.Option(8000, help="Port to listen on (0 picks a free one)."),
    max_batch_size: int = typer.Option(16, "--max-batch-size", help="Questions answered in one forward pass (1 disables batching)."),
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
        max_wait_ms=max_wait_ms, max_queue=max_queue, max_body_bytes=max_body_bytes,
        max_context_chars=max_context_chars, max_question_chars=max_question_chars,
        max_batch_items=max_batch_items, max_top_k=max_top_k, request_timeout_s=request_timeout,
        log_level=log_level, access_log=access_log,
    )
    if index is not None:  # a bad index fails before the model loads
        from .retrieval.index import Index

        Index(index).close()
    run_server(model, settings, index=index)


# ---------------------------------------------------------------------------------------------
# index / search / ask  (squadkit.retrieval)
# ---------------------------------------------------------------------------------------------
# COMMANDS:RETRIEVAL
@app.command("index", no_args_is_help=True)
@friendly_errors
def index_cmd(
    paths: list[Path] = typer.Argument(..., metavar="PATH...", help="Files and folders: .txt .md .html .jsonl, SQuAD .json."),
    output: Path = typer.Option(..., "--output", "-o", metavar="INDEX", help="The index file (created, or updated in place)."),
    tokenizer: Optional[str] = typer.Option(
        None, "--tokenizer", help="The reader's model or tokenizer folder: passage lengths in its tokens (default: words)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Longest passage, in tokens [default: 256, or the index's]."),
    overlap: Optional[int] = typer.Option(
        None, "--overlap", help="Tokens shared by the pieces of a paragraph longer than --max-tokens [default: 32, or the index's]."),
    dense: bool = typer.Option(False, "--dense/--no-dense", help="Also store sentence embeddings (for --retriever dense|hybrid)."),
    embedder: Optional[str] = typer.Option(
        None, "--embedder", help="Sentence-embedding model folder (default: all-MiniLM-L6-v2 of squadkit[dense])."),
    rebuild: bool = typer.Option(False, "--rebuild/--no-rebuild", help="Start the index afresh rather than update it."),
) -> None:
    """Index documents for search and ask; re-running updates only what changed (one atomic transaction).

    Flags not given keep the index's own settings; changing them re-splits every file.
    """
    from .retrieval.index import build_index

    settings = {"tokenizer": tokenizer, "max_tokens": max_tokens, "overlap": overlap}
    model = None
    if dense or embedder:
        from .retrieval.search import SentenceEmbedder, default_embedder_path

        model = SentenceEmbedder(embedder or default_embedder_path())
    report = build_index(paths, output, settings, embedder=model, rebuild=rebuild)
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
) -> None:
    """Answer a question from the indexed documents (or abstain): JSON with document, start, end, passage."""
    from .retrieval.ask import DocumentQA
    from .retrieval.search import check_k

    check_k(k), check_k(top_k, "top_k")  # bad flags fail before a model is loaded
    dqa = DocumentQA(index, model, retriever=retriever, k=k, threshold=threshold, backend=backend, device=device)
    print_json(dqa.ask(question, k=k, top_k=top_k).to_dict(with_passages=passages))


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"warning: {first_line(message, category.__name__)}\n"


def main() -> None:
    """Console-script entry point: warnings print as one line, without source locations."""
    import warnings

    warnings.formatwarning = _one_line_warning
    app()


if __name__ == "__main__":
    main()
