"""Every answering setting, named once, and the one resolver that decides its value.

A setting has one name, used as the Python keyword, the HTTP request field and the command-line
flag (``--`` + the name with dashes): ``max_seq_length`` is ``--max-seq-length`` everywhere.
Older spellings stay accepted as aliases (transformers' pipeline keywords such as
``max_seq_len``; earlier squadkit flags such as ``ask --threshold``), so code written against the
transformers pipeline keeps working, but nothing shows them.

``resolve(model, mode, explicit)`` gives the value of each setting a consumer uses, and where it
came from: an explicit argument > the model folder (``squadkit.json``) > the default. The
consumers differ only by *mode*, and how modes differ is data in ``SETTINGS`` below, not code in
each consumer:

* ``pipeline`` (``QuestionAnswerer``, ``answer``, ``serve``): transformers' decoding. Its
  ``doc_stride`` is the *overlap* of neighbouring windows (the folder's is run_squad's *step*, so
  the folder's is not used), its answer-length default is 15 tokens.
* ``squad`` (``predict``, ``calibrate``, ``train``'s evaluation): run_squad's decoding.
* ``ask`` (``DocumentQA``, ``ask``, ``/v1/ask``): run_squad's decoding of each retrieved passage.

Every mode takes the same window by default: the folder's, else ``min(model limit, 384)``; a
window longer than the model can take is refused when asked for explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from . import defaults
from .errors import SquadkitError

Mode = Literal["pipeline", "squad", "ask"]
MODES: tuple[Mode, ...] = ("pipeline", "squad", "ask")


# ----------------------------------------------------------------------------------------------
# checks: each names the setting as the caller spelled it
# ----------------------------------------------------------------------------------------------


def _positive_int(value: Any, name: str) -> None:
    defaults.check_positive_int(value, name)


def _non_negative_int(value: Any, name: str) -> None:
    defaults.check_positive_int(value, name, minimum=0)


def _passages(value: Any, name: str) -> None:
    defaults.check_positive_int(value, name)
    if value > defaults.MAX_PASSAGES:
        raise SquadkitError(f"{name} must be at most {defaults.MAX_PASSAGES} passages, got {value!r}", param=name)


def _finite_number(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SquadkitError(f"{name} must be a finite number, got {value!r}", param=name)


def _non_negative_number(value: Any, name: str) -> None:
    defaults.check_non_negative_number(value, name, param=name)


def _probability(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise SquadkitError(f"{name} must be a number between 0 and 1, got {value!r}", param=name)


def _flag(value: Any, name: str) -> None:
    if not isinstance(value, bool):
        raise SquadkitError(f"{name} must be true or false, got {value!r}", param=name)


_KIND_OF_CHECK = {_positive_int: int, _non_negative_int: int, _passages: int, _finite_number: float,
                  _non_negative_number: float, _probability: float, _flag: bool}


# ----------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------

Default = Callable[[dict, Any], Any]  # (values resolved so far, model) -> default


def _window_default(values: dict, model: Any) -> int:
    limit = getattr(model, "window_limit", None)
    return min(limit, defaults.MAX_SEQ_LENGTH) if limit else defaults.MAX_SEQ_LENGTH


def _stride_default(values: dict, model: Any) -> int:
    """128 (run_squad's step, the pipeline's overlap), or half the window where that is shorter."""
    return defaults.pipeline_doc_stride(values["max_seq_length"])


def _batch_size_default(values: dict, model: Any) -> int:
    from .backends import default_batch_size

    return default_batch_size(model) if model is not None else defaults.CPU_BATCH_SIZE


def _const(value: Any) -> Default:
    return lambda values, model: value


@dataclass(frozen=True)
class Setting:
    """One setting: its name everywhere, older spellings, the folder field it is read from, the
    modes that use it with their defaults, and what it means (the README's table and --help)."""

    name: str
    meaning: str
    defaults: Mapping[str, Default]  # mode -> default; a mode not listed does not use the setting
    default_text: str
    check: Callable[[Any, str], None] | None = None
    aliases: tuple[str, ...] = ()
    saved: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # mode -> folder fields, first set wins

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def kind(self) -> type:
        """The value's type, as its check accepts it (int, float or bool): the CLI's option type."""
        return _KIND_OF_CHECK[self.check]


ALL_SQUAD = ("squad", "ask")
_SAVED_WINDOW = {m: ("max_seq_length",) for m in MODES}

SETTINGS: tuple[Setting, ...] = (
    Setting("max_seq_length", "Tokens per window (question + passage + special tokens).",
            {m: _window_default for m in MODES}, "the model folder's, else min(model limit, 384)",
            _positive_int, ("max_seq_len",), _SAVED_WINDOW),
    Setting("doc_stride", "pipeline: tokens shared by neighbouring windows; squad/ask: step between window starts "
            "(run_squad's meaning).",
            {m: _stride_default for m in MODES},
            "min(max_seq_length // 2, 128); squad/ask: the model folder's first",
            _non_negative_int, (), {"squad": ("doc_stride",), "ask": ("doc_stride",)}),
    Setting("max_query_length", "Question tokens kept (a longer question is cut).",
            {m: _const(defaults.MAX_QUERY_LENGTH) for m in MODES}, "the model folder's, else 64",
            _positive_int, ("max_question_len",), {m: ("max_query_length",) for m in MODES}),
    Setting("max_answer_length", "Longest answer, in tokens.",
            {"pipeline": _const(defaults.PIPELINE_MAX_ANSWER_LEN), "squad": _const(defaults.MAX_ANSWER_LENGTH),
             "ask": _const(defaults.MAX_ANSWER_LENGTH)},
            "the model folder's, else 15 (pipeline) or 30 (squad/ask)",
            _positive_int, ("max_answer_len",), {m: ("max_answer_length",) for m in MODES}),
    Setting("null_score_diff_threshold", "The empty answer wins when null score - best span score exceeds this "
            "(pipeline: log p_null - log p_span, the same quantity).",
            {m: _const(defaults.NULL_SCORE_DIFF_THRESHOLD) for m in MODES},
            "the model folder's (ask: its ask_threshold first), else 0",
            _finite_number, ("threshold",),
            {"pipeline": ("null_score_diff_threshold",), "squad": ("null_score_diff_threshold",),
             "ask": ("ask_threshold", "null_score_diff_threshold")}),
    Setting("handle_impossible_answer", "Allow the empty answer (abstain).",
            {"pipeline": _const(False)}, "on for a folder trained with --version-2-with-negative, else off",
            _flag, (), {"pipeline": ("version_2_with_negative",)}),
    Setting("version_2_with_negative", "SQuAD v2 decoding: the empty answer is allowed (ask: always).",
            {m: _const(True) for m in ALL_SQUAD}, "the model folder's, else on (off for SQuAD v1.1 data, with a note)",
            _flag, (), {"squad": ("version_2_with_negative",)}),
    Setting("top_k", "How many answers to return, best first.",
            {"pipeline": _const(defaults.PIPELINE_TOP_K), "ask": _const(1)}, "1", _positive_int, ("topk",)),
    Setting("k", f"How many passages to retrieve and read (1-{defaults.MAX_PASSAGES}).",
            {"ask": _const(defaults.ASK_PASSAGES)}, f"the model folder's ask_k, else {defaults.ASK_PASSAGES}",
            _passages, (), {"ask": ("ask_k",)}),
    Setting("retrieval_weight", "ask: spans are ranked across passages on their score + this x their passage's "
            "retrieval score, z-scored over the passages read (0: the reader's score alone).",
            {"ask": _const(0.0)}, "the model folder's ask_retrieval_weight, else 0",
            _non_negative_number, (), {"ask": ("ask_retrieval_weight",)}),
    Setting("n_best_size", "Candidate spans kept per question (run_squad's n-best).",
            {m: _const(defaults.N_BEST_SIZE) for m in ALL_SQUAD}, "20", _positive_int),
    Setting("do_lower_case", "run_squad's answer-text recovery lower-cases.",
            {m: _const(False) for m in ALL_SQUAD}, "the model folder's, else off", _flag, (),
            {m: ("do_lower_case",) for m in ALL_SQUAD}),
    Setting("legacy", "Windows and answer texts exactly as run_squad built them.",
            {"squad": _const(False)}, "off", _flag),
    Setting("align_to_words", "Widen answers to whole words (transformers' pipeline).",
            {"pipeline": _const(True)}, "on", _flag),
    Setting("min_confidence", "Answer \"\" unless the calibrated confidence is at least this (a calibrated model).",
            {m: _const(None) for m in MODES}, "none", _probability),
    Setting("batch_size", "Windows per forward pass.", {m: _batch_size_default for m in MODES},
            "the measured best for the backend: 8 (torch, ONNX fp32), 1 (ONNX int8) on a CPU; 64 on a GPU",
            _positive_int),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
ALIASES: dict[str, str] = {alias: s.name for s in SETTINGS for alias in s.aliases}


def names_for(mode: Mode) -> tuple[str, ...]:
    """The settings ``mode`` uses, in resolving order."""
    return tuple(s.name for s in SETTINGS if mode in s.defaults)


# ----------------------------------------------------------------------------------------------
# the resolver
# ----------------------------------------------------------------------------------------------


@dataclass
class SettingsInForce:
    """The value of each setting in force and where it came from (``--explain``, ``GET /v1/model``)."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def as_dict(self) -> dict:
        return {name: {"value": self.values[name], "from": self.sources[name]} for name in self.values}


def canonical_options(options: Mapping[str, Any], mode: Mode, where: str = "") -> tuple[dict, dict]:
    """``options`` under their canonical names, None values dropped; with the spelling each was given
    as (errors name what the caller typed). Unknown names and two spellings of one setting are refused."""
    known = set(names_for(mode))
    out: dict[str, Any] = {}
    typed: dict[str, str] = {}
    for given, value in options.items():
        name = ALIASES.get(given, given)
        if name not in known:
            accepted = ", ".join(sorted(known))
            raise SquadkitError(f"unknown keyword argument {given!r}{' ' + where if where else ''} "
                                f"(known: {accepted})", param=given)
        if value is None:
            continue
        if name in out:
            raise SquadkitError(f"{typed[name]} and {given} are the same setting: give one", param=given)
        out[name], typed[name] = value, given
    return out, typed


def check_values(values: Mapping[str, Any], typed: Mapping[str, str] | None = None) -> None:
    """Each value's own check (type and range), naming the setting as given; then the window's shape."""
    typed = typed or {}
    for name, value in values.items():
        check = BY_NAME[name].check
        if check is not None and value is not None:
            check(value, typed.get(name, name))
    stride, width = values.get("doc_stride"), values.get("max_seq_length")
    if stride is not None and width is not None and stride >= width:
        raise SquadkitError(f"{typed.get('doc_stride', 'doc_stride')} ({stride}) must be smaller than "
                            f"{typed.get('max_seq_length', 'max_seq_length')} ({width})",
                            param=typed.get("doc_stride", "doc_stride"))


def check_options(options: Mapping[str, Any], mode: Mode) -> dict:
    """Validate options before any model loads: canonical names, types and ranges (one-line errors)."""
    values, typed = canonical_options(options, mode)
    check_values(values, typed)
    return values


def resolve(model: Any, mode: Mode, explicit: Mapping[str, Any] | None = None, *,
            ignore_saved: tuple[str, ...] = ()) -> SettingsInForce:
    """Every setting of ``mode``: explicit (any accepted spelling; None = not given) > the model
    folder (``model.settings``) > the mode's default. ``ignore_saved`` skips the folder for those.

    Refuses, naming the setting as given: unknown names, bad values, a window longer than the
    model can take, a min_confidence for a model without a calibrator.
    """
    from .checkpoint import SETTINGS_FILE, check_window_fits

    given, typed = canonical_options(explicit or {}, mode)
    check_values(given, typed)
    saved = getattr(model, "settings", None)
    out = SettingsInForce()
    for name in names_for(mode):
        setting = BY_NAME[name]
        if name in given:
            out.values[name], out.sources[name] = given[name], "argument"
            continue
        fields = () if name in ignore_saved else setting.saved.get(mode, ())
        found = next(((f, getattr(saved, f)) for f in fields if getattr(saved, f, None) is not None), None)
        if found is not None:
            out.values[name], out.sources[name] = found[1], f"model folder ({SETTINGS_FILE}: {found[0]})"
        else:
            out.values[name], out.sources[name] = setting.defaults[mode](out.values, model), "default"
    check_values(out.values, typed)
    width_name = typed.get("max_seq_length", "max_seq_length")
    check_window_fits(out.values["max_seq_length"], getattr(model, "window_limit", None),
                      f"model {getattr(model, 'name_or_path', '')}".strip(), param=width_name)
    if out.values.get("min_confidence") is not None and model is not None:
        from .calibration import calibrator_of

        if calibrator_of(model) is None:
            name = typed.get("min_confidence", "min_confidence")
            raise SquadkitError(f"{name} needs a calibrated model: this one has no calibrator (fit one with "
                                f"squadkit calibrate)", param=name)
    return out
