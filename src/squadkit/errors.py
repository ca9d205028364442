"""One exception type for bad input, so the CLI can turn it into a one-line message.

It subclasses ValueError: Python callers get the ValueError they expect for bad
arguments, and the CLI prints ``error: <message>`` and exits with code 2.
"""

from __future__ import annotations


class SquadkitError(ValueError):
    """Bad input: a file, field or value the user gave that squadkit cannot use."""
