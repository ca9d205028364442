"""Calibrated confidence: features of an answer, the calibrator (fit, apply, save) and the abstain rule.

Why it is built this way: docs/design.md (squadkit/calibration.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .errors import SquadkitError
from .metrics import exact_match

CALIBRATION_FORMAT = "squadkit-calibration"
CALIBRATION_VERSION = 1
FEATURES = ("margin", "log_p_span", "log_length")
MIN_QUESTIONS = 50  # the fewest dev questions a calibrator is fitted on
MIN_PER_CLASS = 5  # the fewest right and wrong top answers (answerable and unanswerable questions) needed
_CLIP = {"margin": (-50.0, 50.0), "log_p_span": (-50.0, 0.0), "log_length": (0.0, 10.0)}
NO_SPAN = (-50.0, -50.0, 0.0)  # the features of "no span at all"


# ----------------------------------------------------------------------------------------------
# features
# ----------------------------------------------------------------------------------------------


def log_normalizers(start_logits: np.ndarray, end_logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """(B,) log of the start softmax's normaliser plus the end softmax's, over the allowed tokens (float64)."""
    out = np.zeros(start_logits.shape[0])
    for logits in (start_logits, end_logits):
        x = np.where(allowed, logits.astype(np.float64), -np.inf)
        top = x.max(axis=1, keepdims=True)
        top = np.where(np.isfinite(top), top, 0.0)
        out += top[:, 0] + np.log(np.exp(x - top).sum(axis=1))
    return out


_SCALARS = (int, float, np.integer, np.floating)


def _log_length(length_tokens) -> float:
    """``log(max(length, 1))`` as numpy computes it for one value."""
    return float(np.log(np.maximum(np.asarray(length_tokens, dtype=np.float64), 1.0)))


_LOG_LENGTHS = tuple(_log_length(n) for n in range(1025))  # the lengths answers have, computed once


def _clipped(x: float, name: str) -> float:
    """``x`` with nan_to_num and clip applied as ``answer_features`` applies them to its column ``name``."""
    lo, hi = _CLIP[name]
    if x != x or x < lo:  # nan, or below (-inf included)
        return lo
    return hi if x > hi else x


def _one_span_features(span_logit_sum: float, null_logit_sum: float, log_norm: float,
                       length_tokens) -> np.ndarray | None:
    """``answer_features`` of one span, in Python floats: the same (1, 3) float64 values; None where the
    log-probability is -0.0 (at its bound 0.0 the sign of zero is numpy's clip's to choose)."""
    log_p = span_logit_sum - log_norm
    if log_p == 0.0 and math.copysign(1.0, log_p) < 0:
        return None
    if isinstance(length_tokens, (int, np.integer)) and 0 <= length_tokens < len(_LOG_LENGTHS):
        log_len = _LOG_LENGTHS[length_tokens]
    else:
        log_len = _log_length(length_tokens)
    return np.array([[_clipped(span_logit_sum - null_logit_sum, "margin"), _clipped(log_p, "log_p_span"),
                      _clipped(log_len, "log_length")]])


def answer_features(span_logit_sum, null_logit_sum, log_norm, length_tokens) -> np.ndarray:
    """(n, 3) features (see the module doc) from each span's start+end logit, its window's CLS
    start+end logit, its window's log normalisers and its length in tokens."""
    if all(isinstance(v, _SCALARS) for v in (span_logit_sum, null_logit_sum, log_norm, length_tokens)):
        x = _one_span_features(float(span_logit_sum), float(null_logit_sum), float(log_norm), length_tokens)
        if x is not None:
            return x
    z = np.asarray(span_logit_sum, dtype=np.float64)
    margin = z - np.asarray(null_logit_sum, dtype=np.float64)
    log_p = z - np.asarray(log_norm, dtype=np.float64)
    log_len = np.log(np.maximum(np.asarray(length_tokens, dtype=np.float64), 1.0))
    x = np.stack([margin, log_p, log_len], axis=-1).reshape(-1, len(FEATURES))
    for j, name in enumerate(FEATURES):
        lo, hi = _CLIP[name]
        x[:, j] = np.clip(np.nan_to_num(x[:, j], nan=lo, neginf=lo, posinf=hi), lo, hi)
    return x


# ----------------------------------------------------------------------------------------------
# the calibrator
# ----------------------------------------------------------------------------------------------


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 100) -> np.ndarray:
    """Weights [intercept, coef...] of an L2-penalised logistic regression (Newton's method): the
    objective of scikit-learn's ``LogisticRegression()`` default (C=1: log-loss summed over the
    questions + ||coef||^2 / 2, intercept not penalised)."""
    a = np.hstack([np.ones((x.shape[0], 1)), x])
    w = np.zeros(a.shape[1])
    w[0] = math.log((y.mean() + 1e-3) / (1 - y.mean() + 1e-3))
    penalty = np.full(a.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(iters):
        p = _sigmoid(a @ w)
        grad = a.T @ (p - y) + penalty * w
        hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(penalty) + 1e-9 * np.eye(a.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def _fit_monotone(x: np.ndarray, y: np.ndarray, sign: float, column: int = 0) -> np.ndarray:
    """Logistic regression whose coefficient on ``column`` has the sign ``sign`` (or is 0)."""
    w = _fit_logistic(x, y)
    if sign * w[1 + column] >= 0:
        return w
    keep = [j for j in range(x.shape[1]) if j != column]
    w_rest = _fit_logistic(x[:, keep], y)
    w = np.zeros(x.shape[1] + 1)
    w[0] = w_rest[0]
    w[[1 + j for j in keep]] = w_rest[1:]
    return w


@dataclass(frozen=True)
class Calibrator:
    """Two logistic regressions on standardised features; see the module doc."""

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    answer_weights: tuple[float, ...]  # intercept, then one coefficient per feature
    abstain_weights: tuple[float, ...] | None  # None: fitted without unanswerable questions
    weights_sha256: str | None = None
    fitted_on: dict | None = None

    def _z(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).reshape(-1, len(FEATURES))
        return (x - np.asarray(self.mean)) / np.asarray(self.scale)

    def answer_confidence(self, x: np.ndarray) -> np.ndarray:
        """P(exact match) of spans with features ``x`` (n, 3)."""
        w = np.asarray(self.answer_weights)
        return _sigmoid(w[0] + self._z(x) @ w[1:])

    def abstain_confidence(self, x: np.ndarray) -> np.ndarray:
        """P(no answer) of questions whose top span has features ``x`` (n, 3)."""
        if self.abstain_weights is None:
            return np.zeros(np.asarray(x).reshape(-1, len(FEATURES)).shape[0])
        w = np.asarray(self.abstain_weights)
        return _sigmoid(w[0] + self._z(x) @ w[1:])

    def to_json(self) -> dict:
        out = {"format": CALIBRATION_FORMAT, "version": CALIBRATION_VERSION, "method": "logistic",
               "features": list(FEATURES), "mean": list(self.mean), "scale": list(self.scale),
               "answer": list(self.answer_weights),
               "abstain": list(self.abstain_weights) if self.abstain_weights is not None else None,
               "weights_sha256": self.weights_sha256}
        if self.fitted_on:
            out["fitted_on"] = self.fitted_on
        return out

    @classmethod
    def from_json(cls, data: Any, source: str = "calibration") -> "Calibrator":
        def bad(why: str) -> SquadkitError:
            return SquadkitError(f"{source}: field 'calibration' {why}")

        if not isinstance(data, dict):
            raise bad("must be a JSON object")
        if data.get("format") != CALIBRATION_FORMAT:
            raise bad(f"is not a squadkit calibrator (format {data.get('format')!r})")
        if not isinstance(data.get("version"), int) or data["version"] > CALIBRATION_VERSION:
            raise bad(f"was written by a newer squadkit (version {data.get('version')!r}); upgrade squadkit")
        if data.get("features") != list(FEATURES):
            raise bad(f"uses features {data.get('features')!r}; this squadkit computes {list(FEATURES)}")
        n = len(FEATURES)

        def numbers(key: str, length: int, positive: bool = False, optional: bool = False):
            value = data.get(key)
            if value is None and optional:
                return None
            if (not isinstance(value, list) or len(value) != length
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                               for v in value)
                    or (positive and not all(v > 0 for v in value))):
                raise bad(f"'{key}' must be a list of {length} finite{' positive' if positive else ''} numbers")
            return tuple(float(v) for v in value)

        sha = data.get("weights_sha256")
        if sha is not None and not isinstance(sha, str):
            raise bad("'weights_sha256' must be a string")
        fitted_on = data.get("fitted_on")
        return cls(numbers("mean", n), numbers("scale", n, positive=True), numbers("answer", n + 1),
                   numbers("abstain", n + 1, optional=True), sha, fitted_on if isinstance(fitted_on, dict) else None)


def calibration_targets(top_spans: Sequence[str], gold_answers: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(is the top span an exact match, is the question unanswerable) for every question; exact match
    is the official metric's (``metrics.exact_match``), so a span that normalizes to "" ("the", ".")
    is right on an unanswerable question, as the official script counts it."""
    right = np.array([exact_match(gold, span) for span, gold in zip(top_spans, gold_answers)], float)
    unanswerable = np.array([0.0 if gold else 1.0 for gold in gold_answers])
    return right, unanswerable


def fit_calibrator(x: np.ndarray, right: np.ndarray, unanswerable: np.ndarray, weights_sha256: str | None = None,
                   fitted_on: dict | None = None) -> Calibrator:
    """Fit on the top span's features ``x`` (n, 3) of n dev questions, with their targets
    (``calibration_targets``). Refuses too few questions, or too few of either outcome."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, len(FEATURES))
    right = np.asarray(right, dtype=np.float64)
    unanswerable = np.asarray(unanswerable, dtype=np.float64)
    n = x.shape[0]
    if n < MIN_QUESTIONS:
        raise SquadkitError(f"too few questions to fit a calibrator: {n} (at least {MIN_QUESTIONS} are needed, "
                            f"with {MIN_PER_CLASS} or more right and wrong top answers)", param="data")
    n_right = int(right.sum())
    if min(n_right, n - n_right) < MIN_PER_CLASS:
        raise SquadkitError(f"cannot fit a calibrator: the model's top answer is right on {n_right} of {n} questions "
                            f"(at least {MIN_PER_CLASS} right and {MIN_PER_CLASS} wrong are needed)", param="data")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    z = (x - mean) / scale
    answer = _fit_monotone(z, right, +1.0)
    n_un = int(unanswerable.sum())
    abstain = _fit_monotone(z, unanswerable, -1.0) if min(n_un, n - n_un) >= MIN_PER_CLASS else None
    info = {"questions": n, "right_top_answers": n_right, "unanswerable": n_un, **(fitted_on or {})}
    return Calibrator(tuple(mean), tuple(scale), tuple(answer), tuple(abstain) if abstain is not None else None,
                      weights_sha256, info)


# ----------------------------------------------------------------------------------------------
# the fingerprint of the weights a calibrator was fitted with
# ----------------------------------------------------------------------------------------------


def check_fingerprint(settings, fingerprint: str | None, name: str) -> None:
    """Refuse a folder whose calibrator was fitted with other weights (one line)."""
    data = settings.calibration
    if data is None or fingerprint is None:
        return
    saved = data.get("weights_sha256") if isinstance(data, dict) else None
    if saved and saved != fingerprint:
        raise SquadkitError(
            f"{name}: the calibrator in squadkit.json was fitted on other weights (QA head {saved[:12]}..., this "
            f"model's is {fingerprint[:12]}...); refit it with `squadkit calibrate --model {name} --data DEV.json`")


# ----------------------------------------------------------------------------------------------
# the abstain rule
# ----------------------------------------------------------------------------------------------


def check_min_confidence(value: Any, calibrated: bool | None = None, param: str = "min_confidence") -> float | None:
    """``min_confidence`` must be a number in [0, 1], and needs a calibrated model."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise SquadkitError(f"min_confidence must be a number between 0 and 1, got {value!r}", param=param)
    if calibrated is False:
        raise SquadkitError("min_confidence needs a calibrated model (its squadkit.json has no calibrator): fit one "
                            "with `squadkit calibrate --model MODEL --data DEV.json`", param=param)
    return float(value)


def apply_min_confidence(ranked: list[dict], empty: dict, min_confidence: float | None) -> list[dict]:
    """The abstain rule on a ranked answer list (dicts with ``confidence``; ``empty`` is the empty
    answer, by identity): cut at the first span below ``min_confidence``, replacing it by ``empty``
    unless ``empty`` came earlier."""
    if min_confidence is None:
        return ranked
    out: list[dict] = []
    for answer in ranked:
        if answer is not empty and answer["confidence"] < min_confidence:
            if not any(a is empty for a in out):
                out.append(empty)
            break
        out.append(answer)
    return out
