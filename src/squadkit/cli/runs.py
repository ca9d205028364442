"""Commands that run for a while: train, export, serve."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from ..defaults import DEFAULT_MODEL
from ..serve_settings import ServeSettings
from ..train.config import TrainConfig
from .app import MODEL, app, leave_process_group
from .options import Flags, Opt, command, dataclass_opts, print_json

# run_squad flags squadkit accepts and does not need (hidden from --help; a note says so when given)
RUN_SQUAD_EXTRAS = (
    Opt("evaluate_during_training", "run_squad's: evaluate every --logging-steps (same as --eval-steps N).", bool,
        False, ("--evaluate-during-training",), hidden=True),
    Opt("fp16_opt_level", "apex's; ignored (--fp16 uses torch autocast).", Optional[str], hidden=True),
    Opt("eval_all_checkpoints", "not supported (use --eval-steps); ignored with a warning.", bool, False,
        ("--eval-all-checkpoints",), hidden=True),
    Opt("threads", "tokenization is batched in the fast tokenizer; ignored.", Optional[int], hidden=True),
    Opt("local_rank", "the launcher's environment decides; ignored.", int, -1, hidden=True),
    Opt("verbose_logging", "ignored.", bool, False, ("--verbose-logging",), hidden=True),
)
TRAIN_ALIASES = {"model_name_or_path": ("--model-name-or-path",), "output_dir": ("--output-dir",)}


def _train_opts() -> list[Opt]:
    """One option per TrainConfig field (run_squad's and transformers' spellings hidden), and run_squad's extras."""
    opts = [dataclasses.replace(o, aliases=o.aliases + TRAIN_ALIASES.get(o.name, ())) for o in dataclass_opts(TrainConfig)]
    return [*opts, *RUN_SQUAD_EXTRAS]


def _extras_notes(flags: dict) -> list[str]:
    """What the run_squad extras given mean here (they are removed from ``flags``)."""
    extras = {o.name: flags.pop(o.name) for o in RUN_SQUAD_EXTRAS}
    notes = []
    if extras["eval_all_checkpoints"]:
        notes.append("--eval_all_checkpoints is not supported (ignored); --eval-steps evaluates during training")
    if extras["fp16_opt_level"] is not None:
        notes.append("--fp16_opt_level is ignored (apex is not used; --fp16 uses torch autocast)")
    if extras["evaluate_during_training"] and not flags["eval_steps"]:
        flags["eval_steps"] = flags["logging_steps"]
        notes.append(f"--evaluate_during_training: evaluating every {flags['logging_steps']} steps (--eval-steps)")
    return notes


@command(app, "train", *_train_opts(), no_args_is_help=True)
def train(f: Flags) -> None:
    """Fine-tune an extractive QA model with run_squad's recipe and flags.

    The card's command runs as written (run_squad's snake_case flags are accepted as well as the
    kebab-case shown here), e.g. squadkit train --model_type roberta --model_name_or_path
    ./roberta-base --do_train --do_eval --version_2_with_negative --train_file train-v2.0.json
    --predict_file dev-v2.0.json --output_dir out ... Under `accelerate launch` or `torchrun` it
    trains data-parallel (batch per device = --per-gpu-train-batch-size).
    """
    from ..train import TrainWarning
    from ..train import train as run_training

    def show(message, category, filename, lineno, file=None, line=None):
        if int(os.environ.get("RANK", "0")) == 0:  # once, not once per process
            typer.echo(f"{'warning' if issubclass(category, TrainWarning) else category.__name__}: {message}", err=True)

    flags = dict(f.values)
    notes = _extras_notes(flags)
    flags["output_dir"] = str(flags["output_dir"])
    config = TrainConfig(**flags, show_progress=sys.stderr.isatty() and not flags["quiet"], names=dict(f.names),
                         command=shlex.join(["squadkit", *sys.argv[1:]]) if sys.argv[1:2] == ["train"] else None)
    # (no accelerate state may be created before train(): its first creation decides CPU vs GPU)
    with warnings.catch_warnings():
        warnings.simplefilter("always", TrainWarning)
        warnings.showwarning = show
        for text in notes:
            warnings.warn(text, TrainWarning)
        result = run_training(config)
    leave_process_group()
    if result.is_main_process:
        print_json(result.summary())


@command(app, "export",
         Opt("model", "Hub id or checkpoint folder of a QA model.", str, DEFAULT_MODEL, ("--model", "-m"),
             show_default=False),
         Opt("output", "Folder to write (model.onnx, tokenizer, settings, squadkit_export.json).", Path, ...,
             ("--output", "-o"), ("--output-dir", "--out-file")),
         Opt("quantize", "int8: also write model.int8.onnx (dynamic int8 weights), served by default from this folder.",
             Optional[str]),
         Opt("opset", "ONNX opset (default 17; the dynamo exporter uses at least 18).", Optional[int]),
         Opt("overwrite", "Replace an existing folder (atomically).", bool, False),
         Opt("exporter", "auto (TorchScript where torch has it), torchscript or dynamo.", str, "auto"),
         Opt("trust_remote_code", "Allow the checkpoint's own modelling code.", bool, False))
def export(f: Flags) -> None:
    """Export a QA model to ONNX (dynamic batch and sequence), optionally int8, for fast CPU answers."""
    from ..backends.onnx import read_record
    from ..export import export_model

    folder = export_model(f.model, f.output, quantize=f.quantize, opset=f.opset, overwrite=f.overwrite,
                          exporter=f.exporter, trust_remote_code=f.trust_remote_code)
    record = read_record(folder)
    print_json({"output": str(folder), "files": record.get("files"), "default": record.get("default"),
                "exporter": record.get("exporter"), "opset": record.get("opset"),
                "max_abs_logit_diff": (record.get("verification") or {}).get("max_abs_logit_diff")})


@command(app, "serve", MODEL, *dataclass_opts(ServeSettings),
         Opt("index", "Also answer over this document index: POST /v1/ask and a page tab.", Optional[Path]))
def serve(f: Flags) -> None:
    """Serve the model over HTTP: JSON API (/v1/answer, /docs), health checks and a page to try it (/)."""
    values = {k: v for k, v in f.values.items() if k not in ("model", "index")}
    settings = ServeSettings(**values).validate(dict(f.names))  # bad settings fail before the model loads
    if f.index is not None:  # so does a bad index
        from ..retrieval.store import Index

        Index(f.index, verify=True).close()  # every page and engine checksum: a damaged index fails at start
    from ..serve import serve as run_server

    run_server(f.model, settings, index=f.index)
