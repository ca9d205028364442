"""Question + context -> token windows, with character offsets and (for training) labels.

Why it is built this way: docs/design.md (squadkit/features.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, Literal, Sequence

import numpy as np

from . import defaults
from .errors import SquadkitError

WindowMode = Literal["pipeline", "squad", "legacy"]

# Tokenizers that run_squad tokenized word by word with a leading space (byte-level BPE).
_PREFIX_SPACE_TOKENIZERS = ("Roberta", "Longformer", "Bart")


@dataclass(frozen=True)
class WindowSettings:
    """How questions and contexts are cut into windows."""

    mode: WindowMode = "pipeline"
    max_seq_length: int = defaults.MAX_SEQ_LENGTH
    doc_stride: int | None = None  # pipeline: overlap (default min(max_seq_length // 2, 128)); squad: step (128)
    max_query_length: int = defaults.MAX_QUERY_LENGTH

    def resolved_doc_stride(self) -> int:
        if self.doc_stride is not None:
            return self.doc_stride
        return defaults.pipeline_doc_stride(self.max_seq_length) if self.mode == "pipeline" else defaults.DOC_STRIDE

    def validate(self) -> "WindowSettings":
        if self.mode not in ("pipeline", "squad", "legacy"):
            raise SquadkitError(f"window mode must be 'pipeline', 'squad' or 'legacy', got {self.mode!r}")
        defaults.check_positive_int(self.max_seq_length, "max_seq_length")
        defaults.check_positive_int(self.max_query_length, "max_query_length")
        stride = self.resolved_doc_stride()
        defaults.check_positive_int(stride, "doc_stride", minimum=0 if self.mode == "pipeline" else 1)
        if stride >= self.max_seq_length:
            raise SquadkitError(f"doc_stride ({stride}) must be smaller than max_seq_length ({self.max_seq_length})",
                                param="doc_stride")
        return self


@dataclass
class Window:
    """One model input: a question and one slice of its context."""

    example_index: int
    input_ids: np.ndarray  # (L,) int64, no padding (legacy: padded to max_seq_length, as run_squad did)
    token_type_ids: np.ndarray | None
    length: int  # tokens before padding
    context_mask: np.ndarray  # (L,) bool: token belongs to the context
    offsets: np.ndarray  # (L, 2) int64 character span of each token in the context (0, 0 elsewhere)
    word_starts: np.ndarray | None = None  # (L,) char start of the token's word (pipeline align_to_words)
    word_ends: np.ndarray | None = None
    max_context: np.ndarray | None = None  # (L,) bool: run_squad's max-context rule (squad modes)
    start_position: int = 0  # training label (token index; 0 = CLS = no answer in this window)
    end_position: int = 0


@dataclass
class PairTemplate:
    """Where a tokenizer puts its special tokens (and token types) around a (question, context) pair.

    Read once from the tokenizer's own post-processor by encoding a probe pair, so windows can
    be assembled from separately tokenized questions and contexts for any tokenizer.
    """

    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    prefix_types: list[int]
    middle_types: list[int]
    suffix_types: list[int]
    type_first: int = 0
    type_second: int = 0

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "PairTemplate":
        probe = tokenizer("a", "b", add_special_tokens=True, return_token_type_ids=True)
        ids = list(probe["input_ids"])
        seq = probe.sequence_ids(0)
        first = [i for i, s in enumerate(seq) if s == 0]
        second = [i for i, s in enumerate(seq) if s == 1]
        types = list(probe.get("token_type_ids") or [0] * len(ids))
        pre, mid, suf = slice(0, first[0]), slice(first[-1] + 1, second[0]), slice(second[-1] + 1, len(ids))
        return cls(ids[pre], ids[mid], ids[suf], types[pre], types[mid], types[suf], types[first[0]], types[second[0]])

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def assemble(self, question: Sequence[int], context: np.ndarray, width: int | None = None, pad_id: int = 0):
        """input_ids, token_type_ids and the context token slice of one window (padded to ``width``)."""
        head = np.asarray(self.prefix + list(question) + self.middle, dtype=np.int64)
        ids = np.concatenate([head, context, np.asarray(self.suffix, dtype=np.int64)])
        types = np.concatenate([
            np.asarray(self.prefix_types, dtype=np.int64),
            np.full(len(question), self.type_first, dtype=np.int64),
            np.asarray(self.middle_types, dtype=np.int64),
            np.full(len(context), self.type_second, dtype=np.int64),
            np.asarray(self.suffix_types, dtype=np.int64),
        ])
        if width is not None and width > len(ids):
            ids = np.concatenate([ids, np.full(width - len(ids), pad_id, dtype=np.int64)])
            types = np.concatenate([types, np.zeros(width - len(types), dtype=np.int64)])
        return ids, types, slice(len(head), len(head) + len(context))


def _check_text(value, name: str, index: int) -> str:
    if not isinstance(value, str):
        raise SquadkitError(f"{name} of input {index} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise SquadkitError(f"{name} of input {index} is empty")
    return value


def question_token_ids(tokenizer, questions: Sequence[str], max_query_length: int) -> list[list[int]]:
    """Question tokens, cut to ``max_query_length`` (a long question is truncated, never an error)."""
    return [ids[:max_query_length] for ids in tokenizer(list(questions), add_special_tokens=False, verbose=False)["input_ids"]]


def _word_spans(words: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Char span of each token's whole word within this window, as ``Encoding.word_to_chars`` gives it.

    ``words`` holds each token's word index (-1 for tokens outside the context); tokens without
    a word fall back to their own offsets, as the pipeline's ``get_indices`` does.
    """
    n = len(words)
    starts = offsets[:, 0].copy()
    ends = offsets[:, 1].copy()
    if n == 0:
        return starts, ends
    # Runs of equal word ids: first and last token of each run give the word's char span.
    change = np.ones(n, dtype=bool)
    change[1:] = words[1:] != words[:-1]
    run_id = np.cumsum(change) - 1
    run_first = np.flatnonzero(change)
    run_last = np.append(run_first[1:] - 1, n - 1)
    has_word = words >= 0
    starts[has_word] = offsets[run_first[run_id[has_word]], 0]
    ends[has_word] = offsets[run_last[run_id[has_word]], 1]
    return starts, ends


def max_context_flags(window_starts: Sequence[int], window_lengths: Sequence[int], n_doc_tokens: int) -> list[np.ndarray]:
    """run_squad's ``_check_is_max_context`` for every token of every window of one example.

    A token seen by several windows belongs to the window where it has the most context:
    score = min(left, right) + 0.01 * window_length, first window wins ties.
    """
    best = np.full(n_doc_tokens, -np.inf)
    owner = np.full(n_doc_tokens, -1, dtype=np.int64)
    for k, (start, length) in enumerate(zip(window_starts, window_lengths)):
        pos = np.arange(start, start + length)
        score = np.minimum(pos - start, start + length - 1 - pos) + 0.01 * length
        better = score > best[pos]
        best[pos[better]] = score[better]
        owner[pos[better]] = k
    return [owner[start : start + length] == k for k, (start, length) in enumerate(zip(window_starts, window_lengths))]


def build_windows(
    tokenizer,
    questions: Sequence[str],
    contexts: Sequence[str],
    settings: WindowSettings,
    first_example_index: int = 0,
    answers: Sequence[tuple[int, int] | None] | None = None,
) -> list[Window]:
    """Cut every (question, context) pair into windows; optional char-span answers give labels.

    ``answers[i]`` is ``(char_start, char_end)`` of example i's answer, or None when it has none.
    """
    settings.validate()  # a window made by hand (AnswerSettings' are made from checked values)
    if len(questions) != len(contexts):
        raise SquadkitError(f"got {len(questions)} questions but {len(contexts)} contexts")
    for i, (q, c) in enumerate(zip(questions, contexts)):
        _check_text(q, "question", first_example_index + i)
        _check_text(c, "context", first_example_index + i)
    if settings.mode == "legacy":
        return _legacy_windows(tokenizer, questions, contexts, settings, first_example_index, answers)
    return _fast_windows(tokenizer, questions, contexts, settings, first_example_index, answers)


def window_spans(n_tokens: int, capacity: int, step: int) -> list[tuple[int, int]]:
    """(start, length) of each window over ``n_tokens`` context tokens.

    Window k starts at ``k * step``; the first window that reaches the end is the last. This
    is both the tokenizers library's overflow rule and run_squad's loop.
    """
    spans = []
    start = 0
    while True:
        length = min(capacity, n_tokens - start)
        spans.append((start, length))
        if start + length >= n_tokens:
            return spans
        start += step


def _fast_windows(tokenizer, questions, contexts, settings, first_example_index, answers) -> list[Window]:
    """Windows from one tokenization of each question and each context.

    Each context is tokenized once (not once per window), and windows are slices of its
    tokens: the same windows the tokenizer's own overflow handling gives, in less memory.
    """
    template = PairTemplate.from_tokenizer(tokenizer)
    question_ids = question_token_ids(tokenizer, questions, settings.max_query_length)
    # run_squad tokenized every word of the context with a leading space (byte-level BPE), the
    # first word included; squad mode does the same so that its windows are run_squad's.
    shift = 1 if settings.mode == "squad" and _wants_prefix_space(tokenizer) else 0
    enc = tokenizer([" " * shift + c for c in contexts], add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    stride = settings.resolved_doc_stride()
    windows: list[Window] = []
    for i, q_ids in enumerate(question_ids):
        capacity = settings.max_seq_length - len(q_ids) - template.n_special
        if capacity < 1:
            raise SquadkitError(
                f"input {first_example_index + i}: the question takes {len(q_ids)} tokens, leaving no room for the context "
                f"in max_seq_length={settings.max_seq_length}"
            )
        if settings.mode == "pipeline":  # doc_stride = tokens shared by neighbours
            step = capacity - min(stride, capacity - 1)
        else:  # doc_stride = step between window starts
            step = min(stride, capacity)
        ctx_ids = np.asarray(enc["input_ids"][i], dtype=np.int64)
        ctx_offsets = np.maximum(np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2) - shift, 0)
        ctx_words = np.array([-1 if w is None else w for w in enc.word_ids(i)], dtype=np.int64) if settings.mode == "pipeline" else None
        spans = window_spans(len(ctx_ids), capacity, step)
        flags = max_context_flags([s for s, _ in spans], [n for _, n in spans], len(ctx_ids)) if settings.mode != "pipeline" else None
        for k, (start, length) in enumerate(spans):
            ids, types, ctx = template.assemble(q_ids, ctx_ids[start : start + length])
            context_mask = np.zeros(len(ids), dtype=bool)
            context_mask[ctx] = True
            offsets = np.zeros((len(ids), 2), dtype=np.int64)
            offsets[ctx] = ctx_offsets[start : start + length]
            window = Window(first_example_index + i, ids, types, len(ids), context_mask, offsets)
            if ctx_words is not None:
                words = np.full(len(ids), -1, dtype=np.int64)
                words[ctx] = ctx_words[start : start + length]
                window.word_starts, window.word_ends = _word_spans(words, offsets)
            if flags is not None:
                window.max_context = np.zeros(len(ids), dtype=bool)
                window.max_context[ctx] = flags[k]
            if answers is not None:
                _label_window(window, answers[i])
            windows.append(window)
    return windows


def _label_window(window: Window, answer: tuple[int, int] | None) -> None:
    """Start/end token labels; no answer, or an answer not wholly inside the window, point at CLS (0)."""
    window.start_position = window.end_position = 0
    if answer is None:
        return
    char_start, char_end = answer
    ctx = np.flatnonzero(window.context_mask)
    if len(ctx) == 0:
        return
    token_starts = window.offsets[ctx, 0]
    token_ends = window.offsets[ctx, 1]
    if token_starts[0] > char_start or token_ends[-1] < char_end:
        return
    # first token that ends after the answer starts; last token that starts before the answer ends
    start = ctx[np.searchsorted(token_ends, char_start, side="right")]
    end = ctx[np.searchsorted(token_starts, char_end, side="left") - 1]
    if end < start:
        return
    window.start_position, window.end_position = int(start), int(end)


# ----------------------------------------------------------------------------------------------
# legacy: run_squad's squad_convert_examples_to_features
# ----------------------------------------------------------------------------------------------


_WORD = re.compile(r"[^ \t\r\n\u202f]+")


def whitespace_words(context: str) -> tuple[list[str], list[int], list[int]]:
    """Split as run_squad's SquadExample did (on space, tab, CR, LF and U+202F only).

    Returns the words, each word's char start, and each word's char end.
    """
    matches = list(_WORD.finditer(context))
    return [m.group() for m in matches], [m.start() for m in matches], [m.end() for m in matches]


def _wants_prefix_space(tokenizer) -> bool:
    """run_squad tokenized words of RoBERTa-like (byte-level BPE) models with a leading space."""
    kind = getattr(tokenizer, "tokenizer_class", None) or type(tokenizer).__name__  # fast_tokenizer: from its config
    return any(name in kind for name in _PREFIX_SPACE_TOKENIZERS)


def _tokenize_words(tokenizer, words: Sequence[str]) -> dict[str, list[int]]:
    """Token ids of each distinct word, tokenized on its own as run_squad did."""
    prefix = " " if _wants_prefix_space(tokenizer) else ""
    unique = list(dict.fromkeys(words))
    if not unique:
        return {}
    ids = tokenizer([prefix + w for w in unique], add_special_tokens=False, verbose=False)["input_ids"]
    return dict(zip(unique, ids))


def _legacy_windows(tokenizer, questions, contexts, settings, first_example_index, answers) -> list[Window]:
    """run_squad's windows: whitespace words tokenized one by one, padded to max_seq_length.

    A token's offsets are those of the whitespace word it came from, which is all that
    run_squad's text recovery (``get_final_text``) knows of it.
    """
    template = PairTemplate.from_tokenizer(tokenizer)
    step = settings.resolved_doc_stride()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    question_ids = question_token_ids(tokenizer, questions, settings.max_query_length)
    all_words = [whitespace_words(c) for c in contexts]
    vocab = _tokenize_words(tokenizer, [w for words, _, _ in all_words for w in words])
    windows: list[Window] = []
    for i, (q_ids, (words, word_starts, word_ends)) in enumerate(zip(question_ids, all_words)):
        pieces = [vocab[word] for word in words]
        doc_ids = np.fromiter((t for piece in pieces for t in piece), dtype=np.int64)
        tok_to_word = np.repeat(np.arange(len(words)), [len(piece) for piece in pieces])
        doc_offsets = np.stack([np.asarray(word_starts, dtype=np.int64)[tok_to_word],
                                np.asarray(word_ends, dtype=np.int64)[tok_to_word]], axis=1).reshape(-1, 2)
        capacity = settings.max_seq_length - len(q_ids) - template.n_special
        if capacity < 1:
            raise SquadkitError(
                f"input {first_example_index + i}: the question takes {len(q_ids)} tokens, leaving no room for the context "
                f"in max_seq_length={settings.max_seq_length}"
            )
        spans = window_spans(len(doc_ids), capacity, step)
        flags = max_context_flags([s for s, _ in spans], [n for _, n in spans], len(doc_ids))
        for (start, length), flag in zip(spans, flags):
            ids, types, ctx = template.assemble(q_ids, doc_ids[start : start + length], settings.max_seq_length, pad_id)
            context_mask = np.zeros(len(ids), dtype=bool)
            context_mask[ctx] = True
            offsets = np.zeros((len(ids), 2), dtype=np.int64)
            offsets[ctx] = doc_offsets[start : start + length]
            max_context = np.zeros(len(ids), dtype=bool)
            max_context[ctx] = flag
            window = Window(first_example_index + i, ids, types, ctx.stop + len(template.suffix), context_mask, offsets,
                            max_context=max_context)
            if answers is not None:
                _label_window(window, answers[i])
            windows.append(window)
    return windows


# ----------------------------------------------------------------------------------------------
# batching
# ----------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Windows padded to the longest in the batch, ready for a model."""

    window_indices: np.ndarray  # indices into the window list, in batch order
    input_ids: np.ndarray  # (B, L) int64
    attention_mask: np.ndarray  # (B, L) int64
    token_type_ids: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def pad_rows(flat: np.ndarray, starts: np.ndarray, sizes: np.ndarray, pad_value: int,
             width: int | None = None, dtype=np.int64) -> np.ndarray:
    """Rows ``flat[starts[r] : starts[r] + sizes[r]]`` as one (n, width) array (int64 unless told), padded
    with ``pad_value`` (width: the longest row; longer rows are cut). One gather for the whole batch, no
    Python loop: the padding routine of answering batches, training batches and token masks alike."""
    sizes = np.asarray(sizes, dtype=np.int64)
    width = int(sizes.max()) if width is None else width
    out = np.full((len(sizes), width), pad_value, dtype=dtype)
    present = np.arange(width)[None, :] < sizes[:, None]
    out[present] = flat[(np.asarray(starts, dtype=np.int64)[:, None] + np.arange(width)[None, :])[present]]
    return out


def attention_mask(lengths: np.ndarray, width: int) -> np.ndarray:
    """(n, width) int64: 1 on each row's first ``lengths[r]`` tokens."""
    return (np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)


def padded_width(longest: int, multiple: int = 1, limit: int | None = None) -> int:
    """A batch's width: its longest row rounded up to a ``multiple``, but not past ``limit`` (the
    most tokens the model takes) unless the row itself is longer.

    Why round: a GPU runs each new batch shape slowly the first time (allocations, kernel choice),
    and length-sorted batches come in every length. Training on a GPU rounds to 64 (4.6x faster,
    ``train.loop.pad_multiple``); answering does not (no gain measured: it waits on the CPU's
    tokenizing and decoding). Padding is masked out of the attention, the loss and the span choice,
    so it changes no result."""
    width = -(-longest // multiple) * multiple
    return max(longest, min(width, limit)) if limit is not None else width


def make_batch(windows: Sequence[Window], indices: Sequence[int], pad_id: int, multiple: int = 1,
               limit: int | None = None) -> Batch:
    rows = [windows[i] for i in indices]
    sizes = np.fromiter((w.input_ids.shape[0] for w in rows), dtype=np.int64, count=len(rows))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    width = padded_width(int(sizes.max()), multiple, limit)
    input_ids = pad_rows(np.concatenate([w.input_ids for w in rows]), starts, sizes, pad_id, width)
    mask = attention_mask(np.fromiter((w.length for w in rows), dtype=np.int64, count=len(rows)), width)
    types = None
    if all(w.token_type_ids is not None for w in rows):
        types = pad_rows(np.concatenate([w.token_type_ids for w in rows]), starts, sizes, 0, width)
    return Batch(np.asarray(indices, dtype=np.int64), input_ids, mask, types)


def iter_batches(windows: Sequence[Window], batch_size: int, pad_id: int, sort_by_length: bool = True,
                 multiple: int = 1, limit: int | None = None) -> Iterator[Batch]:
    """Batches of windows; sorted by length (longest first) so that padding is small; each batch's
    width rounded up to a ``multiple`` (``padded_width``)."""
    defaults.check_positive_int(batch_size, "batch_size")
    defaults.check_positive_int(multiple, "multiple")
    order = np.arange(len(windows))
    if sort_by_length:
        lengths = np.fromiter((w.input_ids.shape[0] for w in windows), dtype=np.int64, count=len(windows))
        order = np.argsort(-lengths, kind="stable")
    for lo in range(0, len(order), batch_size):
        yield make_batch(windows, order[lo : lo + batch_size].tolist(), pad_id, multiple, limit)
