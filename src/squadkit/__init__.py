"""squadkit: extractive question answering in the SQuAD v2 style.

    >>> from squadkit import pipeline
    >>> qa = pipeline("question-answering", model="path/or/hub-id")
    >>> qa(question="Where is Normandy?", context="Normandy is a region in France.")
    {'score': ..., 'start': 24, 'end': 30, 'answer': 'France'}
"""

from __future__ import annotations

from importlib.metadata import version as _version

__version__ = _version("squadkit")

from .errors import SquadkitError

# pipeline.py keeps torch and transformers out of its import-time work, so this stays cheap.
# Importing the function after the submodule makes ``squadkit.pipeline`` the function,
# as ``transformers.pipeline`` is.
from .pipeline import QuestionAnswerer, pipeline  # noqa: E402

__all__ = ["SquadkitError", "__version__", "pipeline", "QuestionAnswerer", "DocumentQA", "ask"]


def __getattr__(name: str):
    """``squadkit.DocumentQA`` and ``squadkit.ask`` (questions over a document index), imported on first use."""
    if name in ("DocumentQA", "ask"):
        from . import retrieval

        return getattr(retrieval, name)
    raise AttributeError(f"module 'squadkit' has no attribute {name!r}")
