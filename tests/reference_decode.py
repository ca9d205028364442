"""The per-window squad-mode decoder as it was before the batch-wide one (``squadkit.nbest``):
run_squad's ``_get_best_indexes`` per window and the (start, end) candidates built per question.
Kept here, outside the package, as the reference the vectorized decoder is tested against; with
run_squad's text recovery (``reference_text_recoverer``), squadkit's text recovery and answer features
as they were before the per-word projection (``former_text_recoverer``, ``former_answer_features``)."""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from squadkit.decode import SquadPrediction, final_prediction, nbest_entries
from squadkit.text_recovery import basic_tokenize as _basic_tokenize
from squadkit.features import Window


@dataclass
class WindowNBest:
    """The n-best start and end positions of one window, with their logits (as the decoder once kept them)."""

    start_indexes: np.ndarray
    end_indexes: np.ndarray
    start_logits: np.ndarray  # float32 logits at start_indexes
    end_logits: np.ndarray
    null_start_logit: float  # logit of the CLS token (index 0)
    null_end_logit: float
    log_norm: float | None = None


def reference_allowed_tokens(windows: Sequence[Window], width: int) -> np.ndarray:
    """``decode.allowed_tokens`` as it was: the context tokens and CLS of each window, row by row."""
    mask = np.zeros((len(windows), width), dtype=bool)
    for row, window in enumerate(windows):
        size = window.context_mask.shape[0]
        mask[row, :size] = window.context_mask
        mask[row, 0] = True
    return mask


def reference_window_nbest(start_logits: np.ndarray, end_logits: np.ndarray, widths: Sequence[int], n_best_size: int,
                       log_norms: np.ndarray | None = None) -> list[WindowNBest]:
    """run_squad's ``_get_best_indexes`` for every window of a batch.

    The n best positions are taken over the window's whole width (question tokens included,
    and, in legacy mode, the padding up to max_seq_len, as run_squad did), ties in position order.
    """
    out = []
    for b, width in enumerate(widths):
        s = start_logits[b, :width]
        e = end_logits[b, :width]
        s_idx = np.argsort(-s, kind="stable")[:n_best_size]
        e_idx = np.argsort(-e, kind="stable")[:n_best_size]
        out.append(WindowNBest(s_idx, e_idx, s[s_idx], e[e_idx], float(s[0]), float(e[0]),
                               float(log_norms[b]) if log_norms is not None else None))
    return out


def reference_candidates(windows, nbests, max_answer_length: int, version_2_with_negative: bool):
    """A question's (start, end) candidates, window by window in enumeration order, the null last."""
    cand_window, cand_start, cand_end, cand_s_logit, cand_e_logit = [], [], [], [], []
    score_null = 1000000.0
    null_window, null_s, null_e = 0, 0.0, 0.0
    for w, (window, nb) in enumerate(zip(windows, nbests)):
        if version_2_with_negative:
            feature_null = nb.null_start_logit + nb.null_end_logit
            if feature_null < score_null:
                score_null, null_window, null_s, null_e = feature_null, w, nb.null_start_logit, nb.null_end_logit
        starts = np.repeat(nb.start_indexes, len(nb.end_indexes))
        ends = np.tile(nb.end_indexes, len(nb.start_indexes))
        s_logits = np.repeat(nb.start_logits, len(nb.end_indexes))
        e_logits = np.tile(nb.end_logits, len(nb.start_indexes))
        size = window.context_mask.shape[0]
        in_range = (starts < window.length) & (ends < window.length) & (starts < size) & (ends < size)
        starts_c, ends_c = np.minimum(starts, size - 1), np.minimum(ends, size - 1)
        max_context = window.max_context if window.max_context is not None else window.context_mask
        valid = (
            in_range
            & window.context_mask[starts_c]
            & window.context_mask[ends_c]
            & max_context[starts_c]
            & (ends >= starts)
            & (ends - starts + 1 <= max_answer_length)
        )
        cand_window.append(np.full(int(valid.sum()), w, dtype=np.int64))
        cand_start.append(starts[valid])
        cand_end.append(ends[valid])
        cand_s_logit.append(s_logits[valid])
        cand_e_logit.append(e_logits[valid])
    win = np.concatenate(cand_window) if cand_window else np.zeros(0, dtype=np.int64)
    st = np.concatenate(cand_start) if cand_start else np.zeros(0, dtype=np.int64)
    en = np.concatenate(cand_end) if cand_end else np.zeros(0, dtype=np.int64)
    sl = np.concatenate(cand_s_logit).astype(np.float64) if cand_s_logit else np.zeros(0)
    el = np.concatenate(cand_e_logit).astype(np.float64) if cand_e_logit else np.zeros(0)
    if version_2_with_negative:
        win = np.append(win, null_window)
        st = np.append(st, 0)
        en = np.append(en, 0)
        sl = np.append(sl, null_s)
        el = np.append(el, null_e)
    return win, st, en, sl, el, score_null, null_s, null_e


def reference_window_candidates(window, nb: WindowNBest, max_answer_length: int):
    """One window's valid candidates (start, end, start logit, end logit) best first, ties in enumeration
    order, and how many of them score at least its null answer."""
    _, st, en, sl, el, *_ = reference_candidates([window], [nb], max_answer_length, False)
    order = np.argsort(-(sl + el), kind="stable")
    rows = list(zip(st[order].tolist(), en[order].tolist(), sl[order].tolist(), el[order].tolist()))
    null = nb.null_start_logit + nb.null_end_logit
    return rows, sum(s + e >= null for _, _, s, e in rows)


def reference_squad_prediction(
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
    """``decode.squad_prediction`` as it was: the question's candidates built from each window's n-best
    positions and sorted together; the n-best list and the answer from it are decode's (unchanged since),
    with the former answer features."""
    win, st, en, sl, el, score_null, null_s, null_e = reference_candidates(windows, nbests, max_answer_length,
                                                                            version_2_with_negative)
    order = np.argsort(-(sl + el), kind="stable")
    ranked = ((int(win[i]), int(st[i]), int(en[i]), float(sl[i]), float(el[i])) for i in order)
    nbest = nbest_entries(ranked, windows, text_of_span, n_best_size, version_2_with_negative, null_s, null_e)
    return final_prediction(nbest, nbests, score_null, version_2_with_negative, null_score_diff_threshold, calibrator,
                            min_confidence, features_of=former_answer_features)


def _strip_spaces(text: str) -> tuple[str, dict[int, int]]:
    chars, ns_to_s = [], {}
    for i, char in enumerate(text):
        if char == " ":
            continue
        ns_to_s[len(chars)] = i
        chars.append(char)
    return "".join(chars), ns_to_s


def reference_get_final_text(pred_text: str, orig_text: str, do_lower_case: bool) -> tuple[int, int]:
    """run_squad's ``get_final_text``: where, within ``orig_text``, the predicted text lies.

    Returns ``(start, end)`` so that ``orig_text[start:end]`` is the text run_squad printed;
    when the projection fails it is the whole of ``orig_text``, as run_squad's fallback.
    """
    whole = (0, len(orig_text))
    tok_text = " ".join(_basic_tokenize(orig_text, do_lower_case))
    start = tok_text.find(pred_text)
    if start == -1:
        return whole
    end = start + len(pred_text) - 1
    orig_ns, orig_ns_to_s = _strip_spaces(orig_text)
    tok_ns, tok_ns_to_s = _strip_spaces(tok_text)
    if len(orig_ns) != len(tok_ns):
        return whole
    tok_s_to_ns = {s: ns for ns, s in tok_ns_to_s.items()}
    if start not in tok_s_to_ns or tok_s_to_ns[start] not in orig_ns_to_s:
        return whole
    if end not in tok_s_to_ns or tok_s_to_ns[end] not in orig_ns_to_s:
        return whole
    return orig_ns_to_s[tok_s_to_ns[start]], orig_ns_to_s[tok_s_to_ns[end]] + 1


def reference_text_recoverer(tokenizer, context: str, do_lower_case: bool):
    """``text_of_span`` of squad mode: run_squad's text recovery, for any window.

    The span's tokens are turned back into a string and projected by ``get_final_text`` onto
    the whitespace words they came from, as run_squad did (so its answers, e.g. whole words
    with their punctuation where the projection fails, are reproduced). The words are found
    from the tokens' character offsets, which works for fast-tokenizer and legacy windows alike.
    """
    from squadkit.features import whitespace_words

    words, word_starts, word_ends = whitespace_words(context)
    starts_arr = np.asarray(word_starts, dtype=np.int64)

    def word_at(char: int) -> int:
        return max(0, int(np.searchsorted(starts_arr, char, side="right")) - 1)

    def text_of_span(window: Window, start: int, end: int) -> tuple[str, int, int]:
        tokens = tokenizer.convert_ids_to_tokens(window.input_ids[start : end + 1].tolist())
        tok_text = " ".join(tokenizer.convert_tokens_to_string(tokens).strip().split())
        first_word = word_at(int(window.offsets[start, 0]))
        last_word = max(first_word, word_at(max(int(window.offsets[end, 1]) - 1, 0)))
        orig_text = " ".join(words[first_word : last_word + 1])
        a, b = reference_get_final_text(tok_text, orig_text, do_lower_case)
        return (orig_text[a:b], *reference_context_span(a, b, word_starts[first_word : last_word + 1],
                                                          word_ends[first_word : last_word + 1]))

    return text_of_span


def reference_context_span(a: int, b: int, word_starts: Sequence[int], word_ends: Sequence[int]) -> tuple[int, int]:
    """Positions ``a:b`` in a span's words joined by single spaces -> positions in the context (the words' starts
    and ends there)."""
    joined_to_context: list[int] = []
    for start, end in zip(word_starts, word_ends):
        joined_to_context.extend(range(start, end))
        joined_to_context.append(end)  # the joining space
    char_start = joined_to_context[a] if a < len(joined_to_context) else word_ends[-1]
    char_end = joined_to_context[b - 1] + 1 if b > a else char_start
    return char_start, char_end


# ----------------------------------------------------------------------------------------------
# the text recovery squadkit had before the per-word projection, kept as it was
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _former_tokenized_text(orig_text: str, do_lower_case: bool) -> tuple[str, int, np.ndarray]:
    """``orig_text`` as BasicTokenizer's tokens joined by spaces, the count of its non-space
    characters, and where each non-space character of ``orig_text`` lies."""
    tok_text = " ".join(_basic_tokenize(orig_text, do_lower_case))
    code_points = np.frombuffer(orig_text.encode("utf-32-le"), dtype=np.uint32)
    return tok_text, len(tok_text) - tok_text.count(" "), np.flatnonzero(code_points != 32)


def former_get_final_text(pred_text: str, orig_text: str, do_lower_case: bool) -> tuple[int, int]:
    """squadkit's former ``get_final_text``: run_squad's projection through the whole span's cached tokens."""
    whole = (0, len(orig_text))
    tok_text, tok_ns_len, orig_ns_to_s = _former_tokenized_text(orig_text, do_lower_case)
    start = tok_text.find(pred_text)
    if start == -1 or not pred_text or len(orig_ns_to_s) != tok_ns_len:
        return whole
    end = start + len(pred_text) - 1
    if tok_text[start] == " " or tok_text[end] == " ":
        return whole
    return (int(orig_ns_to_s[start - tok_text.count(" ", 0, start)]),
            int(orig_ns_to_s[end - tok_text.count(" ", 0, end)]) + 1)


def former_text_recoverer(tokenizer, context: str, do_lower_case: bool, whole_words: bool = False):
    """squadkit's former ``squad_text_recoverer`` (whole-word widening included), as it was."""
    from squadkit.text_recovery import _token_lookup
    from squadkit.features import whitespace_words
    from squadkit.words import WordBounds, inside_word

    bounds: list[WordBounds] = []

    words, word_starts, word_ends = whitespace_words(context)
    id_to_token = _token_lookup(tokenizer)

    def word_at(char: int) -> int:
        return max(0, bisect.bisect_right(word_starts, char) - 1)

    def to_context(p: int, first_word: int, last_word: int) -> int:
        for w in range(first_word, last_word + 1):
            size = word_ends[w] - word_starts[w]
            if p < size:
                return word_starts[w] + p
            if p == size:
                return word_ends[w]
            p -= size + 1
        return word_ends[last_word]

    def text_of_span(window: Window, start: int, end: int) -> tuple[str, int, int]:
        tokens = id_to_token(window.input_ids[start : end + 1].tolist())
        tok_text = " ".join(tokenizer.convert_tokens_to_string(tokens).strip().split())
        first_word = word_at(int(window.offsets[start, 0]))
        last_word = max(first_word, word_at(max(int(window.offsets[end, 1]) - 1, 0)))
        orig_text = " ".join(words[first_word : last_word + 1])
        a, b = former_get_final_text(tok_text, orig_text, do_lower_case)
        char_start = to_context(a, first_word, last_word)
        char_end = to_context(b - 1, first_word, last_word) + 1 if b > a else char_start
        if whole_words and char_end > char_start and (inside_word(context, char_start)
                                                       or inside_word(context, char_end)):
            if not bounds:
                bounds.append(WordBounds.of(context))
            wide_start, wide_end = bounds[0].widen(np.array([char_start]), np.array([char_end]))
            char_start, char_end = int(wide_start[0]), int(wide_end[0])
            return " ".join(context[char_start:char_end].split()), char_start, char_end
        return orig_text[a:b], char_start, char_end

    return text_of_span


def former_answer_features(span_logit_sum, null_logit_sum, log_norm, length_tokens) -> np.ndarray:
    """``calibration.answer_features`` as it was for one span: its array path (unchanged), which every call
    took before one span got its own."""
    from squadkit.calibration import answer_features

    return answer_features(*(np.asarray([v], dtype=np.float64) for v in (span_logit_sum, null_logit_sum, log_norm,
                                                                          length_tokens)))
