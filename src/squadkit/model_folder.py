"""The model folder: the contract between ``train`` and every consumer.

A squadkit model folder is a Hugging Face checkpoint (config, weights, tokenizer) plus one
settings file, ``squadkit.json``, holding what training decided: the windows it was trained on,
lower-casing, the longest answer, the learned null threshold, the SQuAD version, the base model.
``train`` writes it (final model and every checkpoint alike) and ``export`` copies it; the
pipeline, ``answer``, ``predict``, ``serve`` and ``export`` read it, and an explicit argument
overrides it. This module owns that file (one schema, one reader, one writer) and everything
else about *finding and checking* a model before any weights are loaded: local paths versus hub
ids, offline mode, the question-answering head, and how long a window the model can take.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .defaults import check_non_negative_number
from .errors import SquadkitError, first_line

SETTINGS_FILE = "squadkit.json"
SETTINGS_FORMAT = "squadkit-model-settings"
SETTINGS_VERSION = 1


# ----------------------------------------------------------------------------------------------
# squadkit.json
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSettings:
    """What training decided about a model, saved beside its weights.

    ``None`` means "this folder does not say": the consumer's own default applies. Window
    settings are in run_squad's terms (``doc_stride`` is the step between window starts).
    """

    max_seq_length: int | None = None
    doc_stride: int | None = None
    max_query_length: int | None = None
    do_lower_case: bool | None = None
    max_answer_length: int | None = None  # tokens
    null_score_diff_threshold: float | None = None  # null score - best span score above which "" is answered
    null_score_diff_threshold_from: str | None = None  # how it was chosen (e.g. "best_f1_thresh on dev.json")
    version_2_with_negative: bool | None = None  # trained to abstain (SQuAD v2)
    base_model: str | None = None
    training: dict | None = None  # the training run: its config, command, step (informational)
    eval: dict | None = None  # the dev results the threshold came from (informational)
    calibration: dict | None = None  # the confidence calibrator (calibration.Calibrator.to_json()), validated on read
    # ``ask`` over a collection (issue 19): the abstain threshold on passage-normalised scores, learned by
    # ``train --do-eval`` reading ``ask_k`` passages per dev question; without it ``ask`` keeps its first rule
    ask_threshold: float | None = None
    ask_k: int | None = None
    ask_threshold_from: str | None = None
    ask_calibration: dict | None = None  # a calibrator fitted on ask's answers (same format as ``calibration``)
    ask_scoring: str | None = None  # the rule ask_threshold was learned under: "raw" or "normalized" (None: normalized)
    ask_retrieval_weight: float | None = None  # of the retrieval score in ask's span ranking (settings: retrieval_weight)

    @property
    def ask_rule(self) -> str | None:
        """The rule ``ask_threshold`` was learned under: ``ask_scoring``, else "normalized" for a folder
        with ``ask_threshold`` (learned before ``ask_scoring`` existed), else None (no ask fit)."""
        return self.ask_scoring or ("normalized" if self.ask_threshold is not None else None)

    def to_json(self) -> dict:
        body = {k: v for k, v in asdict(self).items() if v is not None}
        return {"format": SETTINGS_FORMAT, "schema_version": SETTINGS_VERSION, **body}

    def is_empty(self) -> bool:
        return all(v is None for v in asdict(self).values())


_TYPES: dict[str, tuple[type, ...]] = {
    "max_seq_length": (int,), "doc_stride": (int,), "max_query_length": (int,), "do_lower_case": (bool,),
    "max_answer_length": (int,), "null_score_diff_threshold": (int, float), "null_score_diff_threshold_from": (str,),
    "version_2_with_negative": (bool,), "base_model": (str,), "training": (dict,), "eval": (dict,),
    "calibration": (dict,), "ask_threshold": (int, float), "ask_k": (int,), "ask_threshold_from": (str,),
    "ask_calibration": (dict,), "ask_scoring": (str,), "ask_retrieval_weight": (int, float),
}
ASK_SCORINGS = ("raw", "normalized")  # the values of ``ask_scoring`` (retrieval/ask.py's two rules)


def check_ask_scoring(value: Any, name: str, param: str | None = None) -> None:
    """One of ``ASK_SCORINGS``, else a one-line SquadkitError naming ``name``."""
    if value not in ASK_SCORINGS:
        raise SquadkitError(f"{name} must be one of {', '.join(ASK_SCORINGS)}, got {value!r}", param=param)


def _from_first_layout(data: dict) -> dict:
    """squadkit 0.1 wrote the window settings nested and the step/eval of checkpoint-best flat."""
    out = {k: v for k, v in data.items() if k in _TYPES}
    window = data.get("window") or {}
    for key in ("max_seq_length", "doc_stride", "max_query_length"):
        if key in window:
            out[key] = window[key]
    training = data.get("training") or {}
    if "max_answer_length" in training:
        out["max_answer_length"] = training["max_answer_length"]
    if "model_name_or_path" in training:
        out["base_model"] = training["model_name_or_path"]
    return out


def settings_from_json(data: Any, source: str) -> ModelSettings:
    """Validate a parsed ``squadkit.json``; ``source`` names it in errors."""
    if not isinstance(data, dict):
        raise SquadkitError(f"{source}: squadkit settings must be a JSON object")
    if "schema_version" not in data:
        data = _from_first_layout(data)
    else:
        version = data["schema_version"]
        if not isinstance(version, int) or version > SETTINGS_VERSION:
            raise SquadkitError(f"{source}: written by a newer squadkit (settings schema {version!r}; this one reads "
                                f"up to {SETTINGS_VERSION}); upgrade squadkit")
    values = {}
    for key, types in _TYPES.items():
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            names = " or ".join(t.__name__ for t in types)
            raise SquadkitError(f"{source}: field '{key}' must be {names}, got {value!r}")
        values[key] = float(value) if key in ("null_score_diff_threshold", "ask_threshold",
                                              "ask_retrieval_weight") else value
    if "ask_scoring" in values:
        check_ask_scoring(values["ask_scoring"], f"{source}: field 'ask_scoring'")
    if "ask_retrieval_weight" in values:
        check_non_negative_number(values["ask_retrieval_weight"], f"{source}: field 'ask_retrieval_weight'")
    for key in ("calibration", "ask_calibration"):
        if key in values:
            from .calibration import Calibrator

            Calibrator.from_json(values[key], source if key == "calibration" else f"{source}: {key}")  # refuse a malformed one
    return ModelSettings(**values)


def read_settings(folder: str | os.PathLike | None) -> ModelSettings:
    """The settings saved in ``folder``, or empty settings where there is no file (a hub model)."""
    if folder is None:
        return ModelSettings()
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return ModelSettings()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SquadkitError(f"{path}: cannot read squadkit settings: {first_line(exc)}") from None
    return settings_from_json(data, str(path))


def write_settings(folder: str | os.PathLike, settings: ModelSettings) -> Path:
    """Write ``squadkit.json`` into ``folder`` atomically."""
    from .io import atomic_write_json

    path = Path(folder) / SETTINGS_FILE
    atomic_write_json(path, settings.to_json(), indent=2)
    return path


# ----------------------------------------------------------------------------------------------
# where a model comes from: a local folder or the Hugging Face Hub
# ----------------------------------------------------------------------------------------------


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")


def _looks_local(name: str) -> bool:
    """A name the user can only have meant as a path: ./x, ../x, /x, ~/x, a/b/c, x.onnx, a\\b."""
    return (name.startswith((".", "~", "/")) or name.count("/") > 1 or "\\" in name or name.endswith(".onnx")
            or (len(name) > 1 and name[1] == ":"))


def offline_mode() -> bool:
    """True when the environment asks Hugging Face libraries not to use the network."""
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_on_disk(repo_id: str, revision: str | None) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers always brings it
        return False
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # an id the cache layout cannot hold: not cached
        return False
    return isinstance(found, str)


@dataclass(frozen=True)
class ModelSource:
    """A model name resolved before any download: a local folder or a hub id, and how to load it."""

    name: str  # the folder's path, or the hub id
    is_local: bool
    local_files_only: bool = False  # a hub id that must come from the local cache (offline)

    def hub_kwargs(self) -> dict:
        return {"local_files_only": True} if self.local_files_only else {}


def resolve_model_source(model: str | os.PathLike, revision: str | None = None, what: str = "model") -> ModelSource:
    """Decide, without waiting on any network, whether ``model`` is a folder or a hub id that can be had.

    A path that does not exist is "folder not found" (no hub call at all). A hub id is checked
    against the local cache and, unless offline mode is on, against the hub's reachability (one
    TCP connect, three seconds at most), so an unreachable hub fails in seconds, not after retries.
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir() and not text.endswith(".onnx"):
            raise SquadkitError(f"{text}: not a model folder (it is a file)")
        return ModelSource(str(path), True)
    if _looks_local(text) or not _HUB_ID.match(text):
        raise SquadkitError(f"{text}: {what} folder not found")
    if _cached_on_disk(text, revision):
        return ModelSource(text, False, local_files_only=offline_mode() or not _hub_reachable())
    if offline_mode():
        raise SquadkitError(
            f"'{text}': not a local folder, and not in the Hugging Face cache (offline mode is on: HF_HUB_OFFLINE); "
            f"pass a local folder, or download it where the Hub is reachable")
    if not _hub_reachable():
        raise SquadkitError(
            f"'{text}': not a local folder, and the Hugging Face Hub cannot be reached to download it; pass a local "
            f"folder (or set HF_HUB_OFFLINE=1 to use only models already in the local cache)")
    return ModelSource(text, False)


def hub_error(name: str, exc: Exception) -> SquadkitError:
    """A one-line error for a failed from_pretrained of ``name``."""
    first = first_line(exc)
    if len(first) > 300:  # e.g. transformers' list of every model type it knows
        first = first[:300] + " ..."
    folder = Path(name).expanduser()
    if folder.is_dir() and not any((folder / f).is_file() for f in ("config.json", "tokenizer_config.json")):
        return SquadkitError(f"cannot load model from folder '{name}': it has no config.json "
                             f"(not a model folder, or a training run that did not finish)")
    if folder.exists():
        return SquadkitError(f"cannot load model from folder '{name}': {first}")
    return SquadkitError(f"cannot load model '{name}' from the Hugging Face Hub: {first}")


@contextlib.contextmanager
def quiet_transformers():
    """No weight-loading progress bars or info chatter from transformers (they would break the
    CLI's one-line errors and JSON output); warnings still show."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_config(source: ModelSource, trust_remote_code: bool = False, revision: str | None = None, **kwargs):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.name, trust_remote_code=trust_remote_code, revision=revision,
                                          **source.hub_kwargs(), **kwargs)
    except (OSError, ValueError) as exc:
        raise hub_error(source.name, exc) from None


def load_tokenizer(name_or_path: str | os.PathLike | ModelSource, trust_remote_code: bool = False,
                   revision: str | None = None, **kwargs):
    """The checkpoint's fast tokenizer (squadkit needs character offsets)."""
    from transformers import AutoTokenizer

    source = name_or_path if isinstance(name_or_path, ModelSource) else resolve_model_source(name_or_path, revision,
                                                                                             "tokenizer")
    try:
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source.name, use_fast=True, trust_remote_code=trust_remote_code,
                                                      revision=revision, **source.hub_kwargs(), **kwargs)
    except (OSError, ValueError, TypeError) as exc:
        raise hub_error(source.name, exc) from None
    if not getattr(tokenizer, "is_fast", False):
        raise SquadkitError(f"{source.name}: squadkit needs a fast tokenizer (tokenizer.json), got {type(tokenizer).__name__}")
    return tokenizer


# ----------------------------------------------------------------------------------------------
# is it a QA model, and how long a window can it take?
# ----------------------------------------------------------------------------------------------


def check_qa_architecture(config, name: str) -> None:
    """Refuse a model type that transformers cannot put a question-answering head on."""
    from transformers import AutoModelForQuestionAnswering

    if type(config) not in AutoModelForQuestionAnswering._model_mapping.keys():
        raise SquadkitError(
            f"{name}: model type '{getattr(config, 'model_type', '?')}' has no question-answering architecture in transformers"
        )


def check_qa_checkpoint(config, name: str) -> None:
    """Refuse a checkpoint saved for another task (a plain encoder, a classifier): answering with
    it would answer with a randomly initialised QA head. ``train`` accepts those; nothing else does."""
    check_qa_architecture(config, name)
    architectures = getattr(config, "architectures", None) or []
    if architectures and not any(a.endswith("ForQuestionAnswering") for a in architectures):
        raise SquadkitError(
            f"{name}: not a question-answering checkpoint (saved as {', '.join(architectures)}, no QA head); "
            "fine-tune it first with `squadkit train`, or use a model fine-tuned for extractive QA"
        )


def check_head_loaded(missing_keys: list[str], name: str) -> None:
    """After loading: refuse when the QA head's weights were not in the checkpoint (they'd be random)."""
    head = [k for k in missing_keys if k.split(".")[0] in ("qa_outputs", "qa_classifier", "classifier")]
    if head:
        raise SquadkitError(
            f"{name}: the checkpoint has no question-answering head (missing {', '.join(sorted(head)[:2])}); "
            "fine-tune it first with `squadkit train`, or use a model fine-tuned for extractive QA"
        )


# Model types whose position ids start after the padding index (RoBERTa's learned-position layout).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text", "xmod",
                     "roberta-prelayernorm", "bart", "mbart")


def max_window_tokens(model_type: str | None, max_position_embeddings: int | None, pad_token_id: int | None,
                      tokenizer_max: int | None = None) -> int | None:
    """The longest window a model can take: its learned positions (RoBERTa-like models lose
    ``pad_token_id + 1`` of them), or the tokenizer's declared maximum where that is smaller."""
    limits = []
    if isinstance(max_position_embeddings, int) and max_position_embeddings > 0:
        offset = (pad_token_id or 0) + 1 if model_type in _OFFSET_POSITIONS else 0
        limits.append(max_position_embeddings - offset)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < 1_000_000:
        limits.append(tokenizer_max)
    return min(limits) if limits else None


def config_window_limit(config, tokenizer=None) -> int | None:
    return max_window_tokens(getattr(config, "model_type", None), getattr(config, "max_position_embeddings", None),
                             getattr(config, "pad_token_id", None), getattr(tokenizer, "model_max_length", None))


def check_window_fits(max_seq_len: int, limit: int | None, name: str, param: str = "max_seq_len") -> None:
    """Refuse windows longer than the model's positions before any work (else: a tensor error mid-run)."""
    if limit is not None and max_seq_len > limit:
        raise SquadkitError(f"{param}={max_seq_len} is longer than {name} can take ({limit} tokens); "
                            f"use at most {limit}", param=param)


# ----------------------------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------------------------


def save_checkpoint(model, tokenizer, out_dir: str | os.PathLike, settings: ModelSettings | None = None) -> Path:
    """Save model + tokenizer + ``squadkit.json`` in Hugging Face format, atomically.

    Written into a temporary sibling folder first, then renamed into place, so a crash never
    leaves a half-written checkpoint under the final name.
    """
    from .io import staged_dir

    out_dir = Path(out_dir)
    with staged_dir(out_dir) as tmp, quiet_transformers():
        save_model_files(model, tokenizer, tmp, settings)
    return out_dir


def save_model_files(model, tokenizer, folder: Path, settings: ModelSettings | None = None) -> None:
    """The files of a model folder, written into ``folder`` (which the caller stages)."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if settings is not None and not settings.is_empty():
        write_settings(folder, settings)


def settings_fields() -> tuple[str, ...]:
    return tuple(f.name for f in fields(ModelSettings))
