"""One exception type for bad input, so the CLI can turn it into a one-line message.

It subclasses ValueError: Python callers get the ValueError they expect for bad arguments,
and the CLI prints ``error: <message>`` and exits with code 2. ``param`` names the Python
keyword at fault, so the CLI can say the flag the user typed instead (``max_seq_len`` ->
``--max-seq-len``). Anything that is not a SquadkitError is a bug, and shows as one.
"""

from __future__ import annotations


class SquadkitError(ValueError):
    """Bad input: a file, field or value the user gave that squadkit cannot use."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def first_line(error: BaseException | str, fallback: str | None = None) -> str:
    """The first line of an error's message (or its type name), for one-line reports."""
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    return fallback or (type(error).__name__ if isinstance(error, BaseException) else "")
