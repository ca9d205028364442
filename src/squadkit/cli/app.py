"""The ``squadkit`` application, and what its commands share: the common options and small helpers."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from ..defaults import DEFAULT_MODEL
from ..errors import SquadkitError
from .options import HELP, Opt, note

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

MODEL_HELP = "Hub id, checkpoint folder or exported ONNX folder (default: the model card's checkpoint)."
MODEL = Opt("model", MODEL_HELP, str, DEFAULT_MODEL, ("--model", "-m"), show_default=False)
BACKEND = Opt("backend", "torch, onnx, or auto (ONNX for an exported folder).", str, "auto", show_default=True)
DEVICE = Opt("device", "cpu, cuda, cuda:1 ... (default: cuda when available).", Optional[str])
STRICT = Opt("strict", "Fail on answer offsets that do not point at their text.", bool, False, show_default="off")


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


def check_question(question: str) -> None:
    """An empty question is refused at once, before any model loads."""
    if not question.strip():
        raise SquadkitError("the question is empty", param="question")


def read_context(context: Optional[str], context_file: Optional[Path]) -> str:
    """The passage of ``--context`` or ``--context-file`` (exactly one)."""
    if (context is None) == (context_file is None):
        raise SquadkitError("give exactly one of --context or --context-file")
    if context_file is None:
        return context
    if not context_file.is_file():
        raise SquadkitError(f"{context_file}: context file not found")
    try:
        return context_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SquadkitError(f"{context_file}: cannot read context file: {exc}") from None


def model_files(model) -> dict:
    """What runs: the ONNX file and its precision (int8 or fp32), or torch's dtype."""
    out = {"precision": model.precision}
    if model.model_file:
        out["model_file"] = str(model.model_file)
    return out


def note_why_empty(answer: dict | None) -> None:
    """One line on stderr when ``answer`` is empty: why, and what to pass to get the span (abstain.py)."""
    from ..abstain import Abstention

    if answer and answer.get("abstained"):
        note(Abstention(**answer["abstained"]).sentence())


def leave_process_group() -> None:
    """Under torchrun / accelerate launch: every process meets, then closes the process group before
    the interpreter exits (a gloo group left open can abort a process while Python shuts down)."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
