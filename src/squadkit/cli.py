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

app = typer.Typer(
    name="squadkit",
    help="Extractive question answering in the SQuAD v2 style: train, evaluate, answer, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect and validate SQuAD data files.", no_args_is_help=True)
app.add_typer(data_app, name="data")


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


# ---------------------------------------------------------------------------------------------
# answer / predict  (squadkit.pipeline, squadkit.predict)
# ---------------------------------------------------------------------------------------------
# COMMANDS:ANSWER


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
