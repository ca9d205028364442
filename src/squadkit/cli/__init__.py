"""The ``squadkit`` command: a thin typer shell over the Python API.

Every command's options are declared (``cli.options``: from the settings table, the settings
dataclasses and each command's ``Opt`` list); a command parses its flags, calls one API function and
prints or writes the result. Bad input (a SquadkitError, naming the flag as typed) becomes one line
on stderr and exit code 2. Anything else is a bug and shows as one (a traceback).
"""

from __future__ import annotations

from ..errors import first_line
from . import answering, documents, runs  # noqa: F401  (each registers its commands)
from .app import app

__all__ = ["app", "main"]


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"warning: {first_line(message, category.__name__)}\n"


def main() -> None:
    """Console-script entry point: warnings print as one line, without source locations."""
    import warnings

    warnings.formatwarning = _one_line_warning
    app()
