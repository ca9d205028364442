"""The records the document readers share: a document to index, and a file to skip."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DOCUMENTS_EXTRA = "pip install 'squadkit[documents]'"


@dataclass
class Document:
    """One document: its name (unique in the index), the text offsets point into, and metadata."""

    name: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


class SkipFile(Exception):
    """A file that cannot be indexed (binary, not UTF-8, unsupported): skipped and named in the summary."""
