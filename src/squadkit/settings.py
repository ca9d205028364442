"""Every answering setting, named once, and the one resolver that decides its value.

A setting has one name: the Python keyword, the HTTP field and the flag (``--`` + the name with
dashes). Older spellings (transformers' ``max_seq_len``, ``ask --threshold``) are aliases, translated
at the edges by ``given_options``, which also checks each value: the one check of input.
``resolve(model, mode, given)`` then decides every setting of ``mode`` (argument > model folder >
default) into one frozen ``AnswerSettings``, with where each came from. How the modes differ
(pipeline: transformers' decoding; squad: run_squad's; ask: run_squad's over retrieved passages,
with its rule) is data in ``SETTINGS``, not code in the consumers. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from . import defaults
from .model_folder import ASK_SCORINGS, SETTINGS_FILE, ModelSettings, check_window_fits
from .errors import SquadkitError
from .features import WindowSettings

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


def _scoring(value: Any, name: str) -> None:
    if value not in ASK_SCORINGS:
        raise SquadkitError(f"{name} must be one of {', '.join(ASK_SCORINGS)}, got {value!r}", param=name)


_KIND_OF_CHECK = {_positive_int: int, _non_negative_int: int, _passages: int, _finite_number: float,
                  _non_negative_number: float, _probability: float, _flag: bool, _scoring: str}


# ----------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------

Default = Callable[[dict, Any], Any]  # (values resolved so far, model or None) -> default
Saved = Callable[[dict, ModelSettings], tuple[str, ...]]  # (values so far, folder) -> folder fields, first set wins


def _window_default(values: dict, model: Any) -> int:
    limit = model.window_limit if model is not None else None
    return min(limit, defaults.MAX_SEQ_LENGTH) if limit else defaults.MAX_SEQ_LENGTH


def _stride_default(values: dict, model: Any) -> int:
    """128 (run_squad's step, the pipeline's overlap), or half the window where that is shorter."""
    return defaults.pipeline_doc_stride(values["max_seq_length"])


def _batch_size_default(values: dict, model: Any) -> int:
    if model is None:
        return defaults.CPU_BATCH_SIZE
    return defaults.answer_batch_size(model.backend, model.precision, model.device)


def _ask_threshold_fields(values: dict, saved: ModelSettings) -> tuple[str, ...]:
    """ask's threshold: the folder's ask_threshold stands for the rule it was learned under; for the other
    rule, the single-passage threshold (raw) or the default (normalized)."""
    if saved.ask_rule == values["scoring"]:
        return ("ask_threshold", "null_score_diff_threshold")
    return ("null_score_diff_threshold",) if values["scoring"] == "raw" else ()


def _calibrator_default(values: dict, model: Any) -> str | None:
    """Which calibrator ``ask`` applies: the folder's ask calibrator under the rule it was fitted with,
    the single-passage one under the raw rule of a folder without an ask fit, else none."""
    if model is None:
        return None
    if model.settings.ask_rule == values["scoring"]:
        return "ask" if model.ask_calibrator is not None else None
    return "single" if values["scoring"] == "raw" and model.calibrator is not None else None


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
    check: Callable[[Any, str], None] | None = None  # None: derived, never given
    aliases: tuple[str, ...] = ()
    saved: Mapping[str, tuple[str, ...] | Saved] = field(default_factory=dict)  # mode -> folder fields, first set wins

    def saved_fields(self, mode: str, values: dict, saved: ModelSettings) -> tuple[str, ...]:
        fields_ = self.saved.get(mode, ())
        return fields_(values, saved) if callable(fields_) else fields_

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
    Setting("scoring", "ask: how spans of several passages are scored and the no-answer score taken: raw (logit "
            "sums, minimum null) or normalized (log-probabilities over every passage read).",
            {"ask": _const("raw")}, "the model folder's ask_scoring (the rule its ask_threshold was learned under), "
            "else raw", _scoring, (), {"ask": ("ask_rule",)}),
    Setting("null_score_diff_threshold", "The empty answer wins when null score - best span score exceeds this "
            "(pipeline: log p_null - log p_span, the same quantity).",
            {m: _const(defaults.NULL_SCORE_DIFF_THRESHOLD) for m in MODES},
            "the model folder's (ask: its ask_threshold under the rule it was learned with), else 0",
            _finite_number, ("threshold",),
            {"pipeline": ("null_score_diff_threshold",), "squad": ("null_score_diff_threshold",),
             "ask": _ask_threshold_fields}),
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
    Setting("whole_words", "Widen an answer that starts or ends inside a word of the context (letters and digits) "
            "to the whole word(s); never with legacy (run_squad's texts).", {m: _const(True) for m in ALL_SQUAD},
            "on", _flag),
    Setting("align_to_words", "Widen answers to whole words (transformers' pipeline).",
            {"pipeline": _const(True)}, "on", _flag),
    Setting("min_confidence", "Answer \"\" unless the calibrated confidence is at least this (a calibrated model).",
            {m: _const(None) for m in MODES}, "none", _probability),
    Setting("batch_size", "Windows per forward pass.", {m: _batch_size_default for m in MODES},
            "the measured best for the backend: 8 (torch, ONNX fp32), 1 (ONNX int8) on a CPU; 64 on a GPU",
            _positive_int),
    Setting("calibrator", "ask: the calibrator in force (derived from the rule; not a setting you give).",
            {"ask": _calibrator_default}, "the folder's ask calibrator under its rule, else its single-passage one "
            "under raw"),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
ALIASES: dict[str, str] = {alias: s.name for s in SETTINGS for alias in s.aliases}


# ----------------------------------------------------------------------------------------------
# input: translated and checked once, at the edge
# ----------------------------------------------------------------------------------------------


def check_setting(name: str, value: Any, as_given: str) -> None:
    """The one check of one given value (its type and range), naming the setting as the caller spelled it."""
    BY_NAME[name].check(value, as_given)


@dataclass(frozen=True)
class Given:
    """Settings a caller gave, under their canonical names, each checked once; with the spelling each
    was given as (later errors name what the caller typed)."""

    values: Mapping[str, Any] = field(default_factory=dict)
    typed: Mapping[str, str] = field(default_factory=dict)

    def name_of(self, name: str) -> str:
        return self.typed.get(name, name)

    def merged(self, later: "Given") -> "Given":
        """These settings, with ``later``'s (e.g. a call's over a pipeline's construction) taking precedence."""
        return Given({**self.values, **later.values}, {**self.typed, **later.typed})


def given_options(options: Mapping[str, Any] | None, mode: Mode, where: str = "",
                  spelled: Mapping[str, str] | None = None) -> Given:
    """``options`` under their canonical names (None = not given, dropped), each value checked once.
    Unknown names, derived settings, and two spellings of one setting are refused (one line).
    ``spelled``: how the caller spelled each name (the CLI's flags), for errors."""
    known = {s.name for s in SETTINGS if mode in s.defaults and s.check is not None}
    values: dict[str, Any] = {}
    typed: dict[str, str] = {}
    for key, value in (options or {}).items():
        name = ALIASES.get(key, key)
        as_given = (spelled or {}).get(key, key)
        if name not in known:
            raise SquadkitError(f"unknown keyword argument {key!r}{' ' + where if where else ''} "
                                f"(known: {', '.join(sorted(known))})", param=key)
        if value is None:
            continue
        if name in values:
            raise SquadkitError(f"{typed[name]} and {as_given} are the same setting: give one", param=key)
        check_setting(name, value, as_given)
        values[name], typed[name] = value, as_given
    given = Given(values, typed)
    _check_window_shape(values, given)
    return given


def _check_window_shape(values: Mapping[str, Any], given: Given) -> None:
    """The window's step or overlap must be shorter than the window."""
    stride, width = values.get("doc_stride"), values.get("max_seq_length")
    if stride is not None and width is not None and stride >= width:
        name = given.name_of("doc_stride")
        raise SquadkitError(f"{name} ({stride}) must be smaller than {given.name_of('max_seq_length')} ({width})",
                            param=name)


# ----------------------------------------------------------------------------------------------
# the settings in force
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnswerSettings:
    """Every setting of one mode in force, typed, and where each came from (``sources``: "argument",
    "model folder (...)", "default"). Fields a mode does not use keep their defaults (run_squad's).
    Made by ``resolve``; one made by hand is checked when made."""

    mode: Mode = "squad"
    max_seq_length: int = defaults.MAX_SEQ_LENGTH
    doc_stride: int = defaults.DOC_STRIDE
    max_query_length: int = defaults.MAX_QUERY_LENGTH
    max_answer_length: int = defaults.MAX_ANSWER_LENGTH
    null_score_diff_threshold: float = defaults.NULL_SCORE_DIFF_THRESHOLD
    handle_impossible_answer: bool = False
    version_2_with_negative: bool = True
    top_k: int = 1
    k: int = defaults.ASK_PASSAGES
    retrieval_weight: float = 0.0
    n_best_size: int = defaults.N_BEST_SIZE
    do_lower_case: bool = False
    legacy: bool = False
    align_to_words: bool = True
    whole_words: bool = True
    min_confidence: float | None = None
    batch_size: int = defaults.CPU_BATCH_SIZE
    scoring: str = "raw"
    calibrator: str | None = None  # ask: "single", "ask" or None (see SETTINGS)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.sources:  # made by hand: the values are input, checked here once
            given = given_options({n: getattr(self, n) for n in names_for(self.mode) if BY_NAME[n].check}, self.mode)
            object.__setattr__(self, "sources", {n: "argument" for n in given.values})

    @property
    def values(self) -> dict[str, Any]:
        """The mode's settings by name."""
        return {name: getattr(self, name) for name in names_for(self.mode)}

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def as_dict(self) -> dict:
        return {name: {"value": value, "from": self.sources.get(name, "default")} for name, value in self.values.items()}

    def window_settings(self) -> WindowSettings:
        mode = "pipeline" if self.mode == "pipeline" else ("legacy" if self.legacy else "squad")
        return WindowSettings(mode, self.max_seq_length, self.doc_stride, self.max_query_length)


def names_for(mode: Mode) -> tuple[str, ...]:
    """The settings ``mode`` uses, in resolving order."""
    return tuple(s.name for s in SETTINGS if mode in s.defaults)


def resolve(model: Any, mode: Mode, given: Given | Mapping[str, Any] | None = None, *,
            ignore_saved: tuple[str, ...] = ()) -> AnswerSettings:
    """Every setting of ``mode``: given > the model folder (``model.settings``) > the mode's default.
    ``given`` is a ``Given`` (checked at the edge) or raw options (checked here, once).
    ``ignore_saved`` skips the folder for those settings.

    Refuses, naming the setting as given: a window longer than the model can take, a min_confidence
    without a calibrator to apply it.
    """
    if not isinstance(given, Given):
        given = given_options(given, mode)
    saved = model.settings if model is not None else ModelSettings()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in names_for(mode):
        setting = BY_NAME[name]
        if name in given.values:
            values[name], sources[name] = given.values[name], "argument"
            continue
        fields_ = () if name in ignore_saved else setting.saved_fields(mode, values, saved)
        found = next(((f, getattr(saved, f)) for f in fields_ if getattr(saved, f) is not None), None)
        if found is not None:
            values[name], sources[name] = found[1], f"model folder ({SETTINGS_FILE}: {found[0]})"
        else:
            values[name], sources[name] = setting.defaults[mode](values, model), "default"
    out = AnswerSettings(mode, **values, sources=sources)
    _check_combined(out, given, model)
    return out


def _check_combined(settings: AnswerSettings, given: Given, model: Any) -> None:
    """What only the values together (and the model) decide: the window's shape and length, and a
    calibrator for min_confidence."""
    _check_window_shape(settings.values, given)
    if model is None:
        return
    width = given.name_of("max_seq_length")
    check_window_fits(settings.max_seq_length, model.window_limit, f"model {model.name_or_path or ''}".strip(),
                      param=width)
    if settings.min_confidence is None:
        return
    calibrated = settings.calibrator is not None if settings.mode == "ask" else model.calibrator is not None
    if not calibrated:
        name = given.name_of("min_confidence")
        raise SquadkitError(f"{name} needs a calibrated model: this one has no calibrator (fit one with "
                            f"squadkit calibrate)", param=name)
