"""Start/end logits -> answer spans, in the two ways the model card's tools did it.

* **pipeline mode** reproduces transformers' QuestionAnsweringPipeline (4.x-5.2): per-window
  softmax of start and end logits with non-context tokens masked to -10000, span score
  p_start * p_end, spans up to ``max_answer_len`` tokens, equal answers from different windows
  merged by summing their scores, optional null answer (min over windows of the CLS product).
* **squad mode** reproduces run_squad's ``compute_predictions_logits``: n-best start and end
  indices per window, run_squad's validity rules (context only, max-context window, length),
  null score = min over windows of CLS start + end logits, "" predicted when
  null - best non-null > ``null_score_diff_threshold``; the windows' candidates come from
  ``nbest.squad_batch_nbest``, the answer texts from ``text_recovery``.

Work over windows is vectorized with numpy over whole batches (no Python loop over start x end
pairs); what remains per example is the small merge of at most a few dozen candidates.
Each window is reduced to its candidates as soon as its logits exist, so memory stays bounded
however many windows a context needs.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from itertools import chain, islice, repeat
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

from .calibration import NO_SPAN, answer_features, apply_min_confidence, log_normalizers
from .features import Window, pad_rows

MASKED_LOGIT = -10000.0


# ----------------------------------------------------------------------------------------------
# pipeline mode
# ----------------------------------------------------------------------------------------------


@dataclass
class WindowSpans:
    """The best spans of one window (pipeline mode), best first, and the window's null score."""

    starts: np.ndarray  # token indices
    ends: np.ndarray
    scores: np.ndarray  # float32 p_start * p_end
    null_score: float  # p_start[CLS] * p_end[CLS]
    span_logits: np.ndarray | None = None  # float64 start + end logit of each span (for calibration)
    null_logit: float | None = None  # start + end logit of CLS
    log_norm: float | None = None  # log of the start and end softmax normalisers (calibration.log_normalizers)


def allowed_tokens(windows: Sequence[Window], width: int) -> np.ndarray:
    """(B, width) mask of tokens that may take probability mass: context tokens and CLS (index 0)."""
    masks = [w.context_mask for w in windows]
    sizes = np.fromiter(map(len, masks), dtype=np.int64, count=len(masks))
    flat = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)
    return context_and_cls(flat, np.cumsum(sizes) - sizes, sizes, width)


def context_and_cls(context: np.ndarray, starts: np.ndarray, sizes: np.ndarray, width: int) -> np.ndarray:
    """(B, width) mask of each window's context tokens (rows ``starts``/``sizes`` of the windows'
    concatenated context masks) and its CLS (index 0)."""
    mask = pad_rows(context, starts, sizes, False, width, dtype=bool)
    mask[:, 0] = True
    return mask


def masked_softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Row softmax in float32 with disallowed logits set to -10000, as the pipeline computes it."""
    x = np.where(allowed, logits.astype(np.float32, copy=False), np.float32(MASKED_LOGIT))
    x = np.exp(x - x.max(axis=-1, keepdims=True))
    return x / x.sum(axis=-1, keepdims=True)


def pipeline_window_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    allowed: np.ndarray,
    top_n: int,
    max_answer_len: int,
    calibration_inputs: bool = True,
) -> list[WindowSpans]:
    """Best ``top_n`` spans of every window in a batch.

    Only spans with start <= end < start + max_answer_len are scored: a (B, L, K) band of the
    start x end outer product, K = max_answer_len, rather than the full (B, L, L) square.
    Spans touching a non-context token have probability 0 and are never returned. With
    ``calibration_inputs`` each window also keeps its spans' logits, its null logit and its log
    softmax normalisers (what ``calibration.answer_features`` needs); without, that work is skipped.
    """
    p_start = masked_softmax(start_logits, allowed)
    p_end = masked_softmax(end_logits, allowed)
    null = p_start[:, 0] * p_end[:, 0]
    p_start[:, 0] = 0.0
    p_end[:, 0] = 0.0
    batch, width = p_start.shape
    k = min(max_answer_len, width)
    # band[b, s, j] = p_start[b, s] * p_end[b, s + j]
    padded_end = np.concatenate([p_end, np.zeros((batch, k - 1), dtype=p_end.dtype)], axis=1)
    idx = np.arange(width)[:, None] + np.arange(k)[None, :]
    band = p_start[:, :, None] * padded_end[:, idx]
    flat = band.reshape(batch, -1)
    n = min(top_n, flat.shape[1])
    if n < flat.shape[1]:
        top = np.argpartition(-flat, n - 1, axis=1)[:, :n]
    else:
        top = np.broadcast_to(np.arange(flat.shape[1]), (batch, flat.shape[1]))
    top_scores = np.take_along_axis(flat, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    top_scores = np.take_along_axis(top_scores, order, axis=1)
    starts, offsets = np.divmod(top, k)
    ends = starts + offsets
    if calibration_inputs:  # the pipeline's own answers need none of these
        span_logits = (np.take_along_axis(start_logits, starts, axis=1).astype(np.float64)
                       + np.take_along_axis(end_logits, np.minimum(ends, width - 1), axis=1))
        null_logits = start_logits[:, 0].astype(np.float64) + end_logits[:, 0]
        log_norms = log_normalizers(start_logits, end_logits, allowed)
    results = []
    for b in range(batch):
        keep = top_scores[b] > 0
        extra = (span_logits[b][keep], float(null_logits[b]), float(log_norms[b])) if calibration_inputs else ()
        results.append(WindowSpans(starts[b][keep], ends[b][keep], top_scores[b][keep], float(null[b]), *extra))
    return results


def pipeline_answers(
    context: str,
    windows: Sequence[Window],
    spans: Sequence[WindowSpans],
    top_k: int = 1,
    handle_impossible_answer: bool = False,
    align_to_words: bool = True,
    null_score_diff_threshold: float = 0.0,
    calibrator=None,
    min_confidence: float | None = None,
    threshold_from: str | None = None,
) -> list[dict]:
    """Merge the windows' spans of one example into the pipeline's answers, best first.

    Answers whose texts are equal ignoring case are merged (scores summed, the first one's text and
    offsets kept), as the pipeline does. With ``handle_impossible_answer`` the empty answer (the
    smallest null probability over windows) ranks as if its score were ``p_null * exp(-threshold)``:
    run_squad's threshold read in probabilities. With a ``calibrator`` every answer gets ``confidence``
    and ``min_confidence`` applies the abstain rule; an empty answer says why (``threshold_from``: where the
    threshold came from). Details: docs/design.md (squadkit/decode.py).
    """
    answers: list[dict] = []
    by_text: dict[str, dict] = {}
    feats: dict[int, tuple[float, np.ndarray]] = {}  # id(answer) -> (best window score, features)
    min_null = 1000000.0
    for window, window_spans in zip(windows, spans):
        min_null = min(min_null, window_spans.null_score)
        if align_to_words and window.word_starts is not None:
            char_starts, char_ends = window.word_starts, window.word_ends
        else:
            char_starts, char_ends = window.offsets[:, 0], window.offsets[:, 1]
        x = None
        if calibrator is not None:
            x = answer_features(window_spans.span_logits, window_spans.null_logit, window_spans.log_norm,
                                window_spans.ends - window_spans.starts + 1)
        for i, (s, e, score) in enumerate(zip(window_spans.starts, window_spans.ends, window_spans.scores)):
            start, end = int(char_starts[s]), int(char_ends[e])
            text = context[start:end]
            key = text.lower()
            existing = by_text.get(key)
            if existing is not None:
                existing["score"] += float(score)
                answer = existing
            else:
                answer = {"score": float(score), "start": start, "end": end, "answer": text}
                by_text[key] = answer
                answers.append(answer)
            if x is not None and (id(answer) not in feats or feats[id(answer)][0] < score):
                feats[id(answer)] = (float(score), x[i])
    null = {"score": min_null, "start": 0, "end": 0, "answer": ""}
    if handle_impossible_answer:
        answers.append(null)
    answers.sort(key=lambda a: _log_rank(a, null, null_score_diff_threshold), reverse=True)
    if calibrator is None:
        return say_why_empty(answers[:top_k], answers, null, null_score_diff_threshold, threshold_from)
    ranked = _with_confidence(answers, null, feats, calibrator, top_k)
    return say_why_empty(apply_min_confidence(ranked, null, min_confidence)[:top_k], answers, null,
                         null_score_diff_threshold, threshold_from, min_confidence)


def _log_rank(answer: dict, null: dict, threshold: float) -> float:
    """An answer's rank in log space (any threshold, no overflow): the empty answer's less the threshold."""
    log_score = math.log(answer["score"]) if answer["score"] > 0 else -math.inf
    return log_score - threshold if answer is null else log_score


def _with_confidence(answers: list[dict], null: dict, feats: dict, calibrator, top_k: int) -> list[dict]:
    """The first ``top_k + 1`` answers (enough for the abstain rule to replace one), each span with its
    calibrated confidence (from its best window's features), the empty answer with the best span's."""
    best_span = next((a for a in answers if a is not null), None)
    null_x = feats[id(best_span)][1] if best_span is not None else np.asarray(NO_SPAN)
    ranked = answers[: top_k + 1]
    spans = [a for a in ranked if a is not null]
    if spans:
        conf = calibrator.answer_confidence(np.stack([feats[id(a)][1] for a in spans]))
        for a, c in zip(spans, conf):
            a["confidence"] = float(c)
    null["confidence"] = float(calibrator.abstain_confidence(null_x)[0])
    return ranked


def say_why_empty(out: list[dict], ranked: list[dict], null: dict, threshold: float,
                  threshold_from: str | None = None, min_confidence: float | None = None) -> list[dict]:
    """``out``, its empty answer (when it ranks first) given ``abstained`` (``squadkit.abstain``): the best
    span of ``ranked`` and its margin, log p_null - log p_span, the pipeline's form of run_squad's rule."""
    from .abstain import why_empty

    if out and out[0] is null:
        best = next((a for a in ranked if a is not null), None)
        margin = None
        if best is not None and best["score"] > 0 and null["score"] > 0:
            margin = math.log(null["score"]) - math.log(best["score"])
        null["abstained"] = why_empty(None if best is None else best["answer"], margin, threshold, threshold_from,
                                      confidence=None if best is None else best.get("confidence"),
                                      min_confidence=min_confidence).to_dict()
    return out


# ----------------------------------------------------------------------------------------------
# squad mode
# ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class CandidateColumns:
    """The valid (start, end) candidates of a batch's windows, window after window, each window's best first
    (ties in run_squad's enumeration order): token positions and float32 logits, as memoryviews of the
    numpy arrays, so each value becomes a Python number only when read."""

    start: memoryview
    end: memoryview
    start_logit: memoryview
    end_logit: memoryview


class WindowNBest(NamedTuple):
    """One window's candidates (squad mode): its stretch ``lo:hi`` of the batch's ``columns``
    (``nbest.squad_batch_nbest`` applies the validity rules, max_answer_length included), its null
    logits, and how many of its candidates rank before its null answer (``null_at``)."""

    null_start_logit: float  # logit of the CLS token (index 0)
    null_end_logit: float
    log_norm: float | None  # log of the start and end softmax normalisers (calibration.log_normalizers)
    columns: CandidateColumns
    lo: int
    hi: int
    null_at: int

    def rows(self, window: int) -> Iterator[tuple[int, int, int, float, float]]:
        """(window, start, end, start logit, end logit) of each candidate, best first, made as read."""
        c, lo, hi = self.columns, self.lo, self.hi
        return zip(repeat(window), c.start[lo:hi], c.end[lo:hi], c.start_logit[lo:hi], c.end_logit[lo:hi])

    @property
    def candidates(self) -> list[tuple[int, int, float, float]]:
        """(start, end, start logit, end logit) of every candidate, best first."""
        return [row[1:] for row in self.rows(0)]


@dataclass(slots=True)
class NBestEntry:
    text: str
    start_logit: float
    end_logit: float
    probability: float = 0.0
    start: int | None = None  # character offsets in the context (None for the empty answer)
    end: int | None = None
    window: int | None = None  # the window it came from, and its length in tokens (spans only)
    tokens: int | None = None


@dataclass
class SquadPrediction:
    """What run_squad wrote for one question: its answer, n-best list and null odds."""

    text: str
    nbest: list[NBestEntry]
    null_odds: float | None  # null score - best non-null score (None without version_2_with_negative)
    features: np.ndarray | None = None  # calibration features of the best non-null span (NO_SPAN if none)
    confidence: float | None = None  # calibrated confidence of ``text`` (with a calibrator)


def _softmax(scores: Sequence[float]) -> list[float]:
    """run_squad's ``_compute_softmax``, in Python floats so every digit matches."""
    if not scores:
        return []
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = 0.0
    for x in exps:
        total += x
    return [x / total for x in exps]


def _rank_key(row: tuple) -> float:
    return -(row[3] + row[4])


def ranked_candidates(nbests: Sequence[WindowNBest], version_2_with_negative: bool):
    """A question's candidates best first, as run_squad's stable sort of its windows' candidates (window by
    window, the null answer last) orders them: (window, start, end, start logit, end logit), the null answer
    (start 0) included with v2, made as read; and the null score and logits.

    Each window's candidates are in order already: one window's null answer goes where ``null_at`` says;
    several windows are merged lazily (``heapq.merge`` keeps a stable sort's order of equal scores)."""
    if len(nbests) == 1:  # the common case: no merge, the null answer put where null_at says
        nb = nbests[0]
        rows = nb.rows(0)
        if not version_2_with_negative:
            return rows, 1000000.0, 0.0, 0.0
        null_s, null_e = nb.null_start_logit, nb.null_end_logit
        return chain(islice(rows, nb.null_at), ((0, 0, 0, null_s, null_e),), rows), null_s + null_e, null_s, null_e
    score_null = 1000000.0
    null_window, null_s, null_e = 0, 0.0, 0.0
    if version_2_with_negative:
        for w, nb in enumerate(nbests):
            feature_null = nb.null_start_logit + nb.null_end_logit
            if feature_null < score_null:
                score_null, null_window, null_s, null_e = feature_null, w, nb.null_start_logit, nb.null_end_logit
    null = [(null_window, 0, 0, null_s, null_e)] if version_2_with_negative else []
    streams = [nb.rows(w) for w, nb in enumerate(nbests)] + [null]
    return heapq.merge(*streams, key=_rank_key), score_null, null_s, null_e


def squad_prediction(
    windows: Sequence[Window],
    nbests: Sequence[WindowNBest],
    text_of_span: Callable[[Window, int, int], tuple[str, int, int]],
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool = True,
    null_score_diff_threshold: float = 0.0,
    calibrator=None,
    min_confidence: float | None = None,
) -> SquadPrediction:
    """run_squad's ``compute_predictions_logits`` for one question.

    With a ``calibrator``, the prediction carries ``confidence`` (of the best span, or of "" when
    it abstains), and ``min_confidence`` applies the abstain rule (``calibration`` module doc).

    ``text_of_span(window, start_token, end_token) -> (text, char_start, char_end)`` recovers
    the answer text (``text_recovery.squad_text_recoverer``). ``nbests`` carry each window's valid candidates
    (``nbest.squad_batch_nbest``, which applies ``max_answer_length``; the argument stays for run_squad's signature).
    """
    ranked, score_null, null_s, null_e = ranked_candidates(nbests, version_2_with_negative)
    nbest = nbest_entries(ranked, windows, text_of_span, n_best_size, version_2_with_negative, null_s, null_e)
    return final_prediction(nbest, nbests, score_null, version_2_with_negative, null_score_diff_threshold,
                            calibrator, min_confidence)


def nbest_entries(ranked, windows: Sequence[Window], text_of_span: Callable[[Window, int, int], tuple[str, int, int]],
                  n_best_size: int, version_2_with_negative: bool, null_s: float, null_e: float) -> list[NBestEntry]:
    """run_squad's n-best list of one question, with probabilities, from its candidates best first
    (``ranked``: (window, start, end, start logit, end logit), the null answer's start 0): the first
    ``n_best_size`` distinct texts, the null answer added with v2, and run_squad's nonce entries."""
    nbest: list[NBestEntry] = []
    seen: set[str] = set()
    for w, s, e, s_logit, e_logit in ranked:
        if len(nbest) >= n_best_size:
            break
        if s > 0:
            text, char_start, char_end = text_of_span(windows[w], s, e)
            if text in seen:
                continue
            seen.add(text)
            nbest.append(NBestEntry(text, s_logit, e_logit, start=char_start, end=char_end, window=w, tokens=e - s + 1))
        else:
            seen.add("")
            nbest.append(NBestEntry("", s_logit, e_logit))
    if version_2_with_negative:
        if "" not in seen:
            nbest.append(NBestEntry("", null_s, null_e))
        if len(nbest) == 1:  # run_squad's nonce entry, kept so that numbers match
            nbest.insert(0, NBestEntry("empty", 0.0, 0.0))
    if not nbest:
        nbest.append(NBestEntry("empty", 0.0, 0.0))
    for entry, prob in zip(nbest, _softmax([e.start_logit + e.end_logit for e in nbest])):
        entry.probability = prob
    return nbest


def final_prediction(nbest: list[NBestEntry], nbests: Sequence[WindowNBest], score_null: float,
                     version_2_with_negative: bool, null_score_diff_threshold: float, calibrator=None,
                     min_confidence: float | None = None, features_of=answer_features) -> SquadPrediction:
    """A question's answer from its n-best list: run_squad's null rule, the best span's calibration
    features (``features_of``: ``calibration.answer_features``) and, with a calibrator, its confidence."""
    best_non_null = next((e for e in nbest if e.text), None)
    features = np.asarray(NO_SPAN, dtype=np.float64)[None, :]
    if best_non_null is not None and best_non_null.window is not None:
        nb = nbests[best_non_null.window]
        log_norm = nb.log_norm if nb.log_norm is not None else math.nan
        features = features_of(best_non_null.start_logit + best_non_null.end_logit,
                               nb.null_start_logit + nb.null_end_logit, log_norm, best_non_null.tokens)
    if not version_2_with_negative:
        text, score_diff = nbest[0].text, None
    else:
        score_diff = score_null - best_non_null.start_logit - best_non_null.end_logit
        text = "" if score_diff > null_score_diff_threshold else best_non_null.text
    confidence = None
    if calibrator is not None:
        if text and best_non_null is not None and text == best_non_null.text:
            confidence = float(calibrator.answer_confidence(features)[0])
            if min_confidence is not None and confidence < min_confidence:
                text = ""
        if not text:
            confidence = float(calibrator.abstain_confidence(features)[0])
    return SquadPrediction(text, nbest, score_diff, features[0], confidence)
