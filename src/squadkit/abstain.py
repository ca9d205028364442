"""Why an answer is empty, in a field a program can read and a line a person can.

``abstained`` (in the pipeline's empty answer, ``AskResult.to_dict()``, ``/v1/answer`` and
``/v1/ask``) holds the reason, the best span the reader rejected, its margin (no-answer score minus
the span's score: the reader abstains when the margin is above the threshold), the threshold and
where it came from (``settings.AnswerSettings.sources``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

NULL_ABOVE_THRESHOLD = "null_score_above_threshold"
BELOW_MIN_CONFIDENCE = "min_confidence"
NO_SPAN = "no_span"


@dataclass
class Abstention:
    """Why the answer is "": one of the three reasons above, with the numbers behind it."""

    reason: str
    best_span: str | None  # the best span the reader rejected; None when it found none
    margin: float | None  # no-answer score - best span score (abstain when above threshold)
    threshold: float
    threshold_from: str | None = None  # "argument", "model folder (squadkit.json: ...)" or "default"
    confidence: float | None = None  # the best span's calibrated confidence (reason min_confidence)
    min_confidence: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k in ("best_span", "margin")}

    def sentence(self, threshold_flag: str = "--null-score-diff-threshold") -> str:
        """One line for a person: why, and what to pass to get the span."""
        where = f", {_from(self.threshold_from)}" if self.threshold_from else ""
        if self.reason == NO_SPAN:
            return "no answer: the model found no span in the context that fits the windows and max_answer_length"
        if self.reason == BELOW_MIN_CONFIDENCE:
            return (f"no answer: the best span \"{_short(self.best_span)}\" has confidence {self.confidence:.2f}, below "
                    f"--min-confidence {self.min_confidence:g}; pass a lower --min-confidence to get it")
        margin = float(self.margin)  # type: ignore[arg-type]
        versus = (f"scored {margin:.2f} below the no-answer score" if margin >= 0
                  else f"scored {-margin:.2f} above the no-answer score, not enough")
        return (f"no answer: the best span \"{_short(self.best_span)}\" {versus} (threshold {self.threshold:g}{where}); "
                f"pass {threshold_flag} {threshold_to_answer(margin):g} or higher to get it")


def threshold_to_answer(margin: float) -> float:
    """The smallest threshold at two decimals that the span's ``margin`` does not exceed."""
    cents = math.ceil(margin * 100)
    return cents / 100 if cents / 100 >= margin else (cents + 1) / 100


def why_empty(best_span: str | None, margin: float | None, threshold: float, threshold_from: str | None = None,
              confidence: float | None = None, min_confidence: float | None = None) -> Abstention:
    """The reason for an empty answer: no span found; the margin above the threshold; else the
    calibrated ``confidence`` below ``min_confidence``."""
    if best_span is None:
        reason = NO_SPAN
    elif margin is not None and margin > threshold:
        reason = NULL_ABOVE_THRESHOLD
    else:
        reason = BELOW_MIN_CONFIDENCE
    return Abstention(reason, best_span, None if margin is None else float(margin), float(threshold), threshold_from,
                      None if confidence is None else float(confidence),
                      min_confidence if reason == BELOW_MIN_CONFIDENCE else None)


def _from(source: str) -> str:
    return "given" if source == "argument" else "the default" if source == "default" else f"from the {source}"


def _short(text: str | None, width: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"
