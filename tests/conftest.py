"""Shared fixtures: where the real data lives, and tiny QA checkpoints built on the fly.

Real material (the published roberta-base tokenizer, a SQuAD v2 slice) is read from
``$SQUADKIT_SHARED_DATA`` (default: ``../shared/data`` beside the checkout). Tests that
need it skip with a reason where it is absent, so a bare clone still passes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("SQUADKIT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


def require_shared(*parts: str) -> Path:
    """The path under the shared data folder, or skip the test saying what is missing."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs real data at {path} (set SQUADKIT_SHARED_DATA to the folder holding shared/data)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared()


@pytest.fixture(scope="session")
def squad_dev_path() -> Path:
    return require_shared("squad_v2", "dev-v2.0.first2articles.json")


@pytest.fixture(scope="session")
def squad_train_path() -> Path:
    return require_shared("squad_v2", "train-v2.0.first10articles.json")


@pytest.fixture(scope="session")
def roberta_tokenizer_dir() -> Path:
    return require_shared("roberta-base-tokenizer")


@pytest.fixture(scope="session")
def tiny_roberta(tmp_path_factory, roberta_tokenizer_dir) -> Path:
    """A tiny RoBERTa QA checkpoint (random weights, seed 0) with the real roberta-base tokenizer."""
    from tiny_models import make_tiny_roberta

    return make_tiny_roberta(tmp_path_factory.mktemp("tiny-roberta"), roberta_tokenizer_dir, seed=0)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny BERT QA checkpoint with a generated WordPiece vocabulary: needs no shared data."""
    from tiny_models import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), seed=0)


@pytest.fixture(scope="session")
def docs_index(tmp_path_factory, tiny_bert) -> Path:
    """A small document index (test_retrieval's collection, the tiny BERT's tokenizer) for the servers."""
    from test_retrieval import write_collection

    from squadkit.retrieval import IndexSettings, build_index

    root = tmp_path_factory.mktemp("docs-index")
    path = root / "idx.sqlite"
    build_index([write_collection(root / "docs")], path, IndexSettings(tokenizer=str(tiny_bert), max_tokens=24, overlap=4))
    return path


# No test contacts a hub: the Hugging Face libraries are told so before any of them is imported.
for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")
# squadkit's own cache (tokenized training features) goes to a folder of this test session's
if "SQUADKIT_CACHE" not in os.environ:
    import tempfile

    os.environ["SQUADKIT_CACHE"] = tempfile.mkdtemp(prefix="squadkit-test-cache-")
