"""Question + context -> token windows, with character offsets and (for training) labels.

A context longer than the model's input is cut into overlapping windows. Two meanings of
``doc_stride`` are in use, and both are supported because both are documented behaviour:

* **pipeline** (transformers' QuestionAnsweringPipeline): ``doc_stride`` is the number of
  context tokens that neighbouring windows *share* (default ``min(max_seq_len // 2, 128)``).
* **squad** (run_squad.py): ``doc_stride`` is the *step* between window starts (default 128).
  With the fast tokenizer this is the same split as run_squad's for ordinary text, since both
  start window k at ``k * step`` and stop at the first window that reaches the end.
* **legacy** (``--legacy``): run_squad's ``squad_convert_examples_to_features`` exactly:
  whitespace words, each word tokenized on its own, windows padded to ``max_seq_len``, and the
  text of an answer recovered later by ``get_final_text`` (see decode.py).

Every window records, per token, whether it is a context token, its character span in the
context, the character span of the whole word it belongs to (for ``align_to_words``) and, in
squad modes, whether this window is the token's "max context" window (run_squad's rule).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator, Literal, Sequence

import numpy as np

from .errors import SquadkitError

WindowMode = Literal["pipeline", "squad", "legacy"]

# Tokenizers that run_squad tokenized word by word with a leading space (byte-level BPE).
_PREFIX_SPACE_TOKENIZERS = ("Roberta", "Longformer", "Bart")


@dataclass(frozen=True)
class WindowSettings:
    """How questions and contexts are cut into windows."""

    mode: WindowMode = "pipeline"
    max_seq_len: int = 384
    doc_stride: int | None = None  # pipeline: overlap (default min(max_seq_len // 2, 128)); squad: step (128)
    max_question_len: int = 64

    def resolved_doc_stride(self) -> int:
        if self.doc_stride is not None:
            return self.doc_stride
        return min(self.max_seq_len // 2, 128) if self.mode == "pipeline" else 128

    def validate(self) -> "WindowSettings":
        if self.mode not in ("pipeline", "squad", "legacy"):
            raise SquadkitError(f"window mode must be 'pipeline', 'squad' or 'legacy', got {self.mode!r}")
        for name in ("max_seq_len", "max_question_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SquadkitError(f"{name} must be a positive integer, got {value!r}")
        stride = self.resolved_doc_stride()
        if not isinstance(stride, int) or isinstance(stride, bool) or stride < (0 if self.mode == "pipeline" else 1):
            raise SquadkitError(f"doc_stride must be a {'non-negative' if self.mode == 'pipeline' else 'positive'} integer, got {stride!r}")
        if stride >= self.max_seq_len:
            raise SquadkitError(f"doc_stride ({stride}) must be smaller than max_seq_len ({self.max_seq_len})")
        return self


@dataclass
class Window:
    """One model input: a question and one slice of its context."""

    example_index: int
    input_ids: np.ndarray  # (L,) int64, no padding (legacy: padded to max_seq_len, as run_squad did)
    token_type_ids: np.ndarray | None
    length: int  # tokens before padding
    context_mask: np.ndarray  # (L,) bool: token belongs to the context
    offsets: np.ndarray  # (L, 2) int64 character span of each token in the context (0, 0 elsewhere)
    word_starts: np.ndarray | None = None  # (L,) char start of the token's word (pipeline align_to_words)
    word_ends: np.ndarray | None = None
    max_context: np.ndarray | None = None  # (L,) bool: run_squad's max-context rule (squad modes)
    # legacy only: index of the whitespace word each context token came from (-1 elsewhere)
    token_to_word: np.ndarray | None = None
    start_position: int = 0  # training label (token index; 0 = CLS = no answer in this window)
    end_position: int = 0


@dataclass
class PairTemplate:
    """Where a tokenizer puts its special tokens around a (question, context) pair."""

    prefix: list[int]
    middle: list[int]
    suffix: list[int]
    type_first: int = 0
    type_second: int = 0

    @classmethod
    def from_tokenizer(cls, tokenizer) -> "PairTemplate":
        probe = tokenizer("a", "b", add_special_tokens=True, return_token_type_ids=True)
        ids = list(probe["input_ids"])
        seq = probe.sequence_ids(0)
        first = [i for i, s in enumerate(seq) if s == 0]
        second = [i for i, s in enumerate(seq) if s == 1]
        types = probe.get("token_type_ids") or [0] * len(ids)
        return cls(
            prefix=ids[: first[0]],
            middle=ids[first[-1] + 1 : second[0]],
            suffix=ids[second[-1] + 1 :],
            type_first=types[first[0]],
            type_second=types[second[0]],
        )

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def _check_text(value, name: str, index: int) -> str:
    if not isinstance(value, str):
        raise SquadkitError(f"{name} of input {index} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise SquadkitError(f"{name} of input {index} is empty")
    return value


def truncate_questions(tokenizer, questions: Sequence[str], max_question_len: int) -> list[str]:
    """Cut questions longer than ``max_question_len`` tokens at a token boundary (never an error)."""
    enc = tokenizer(list(questions), add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for question, ids, offsets in zip(questions, enc["input_ids"], enc["offset_mapping"]):
        if len(ids) > max_question_len:
            question = question[: offsets[max_question_len - 1][1]]
        out.append(question)
    return out


def _word_spans(word_ids: list, offsets: np.ndarray, context_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Char span of each token's whole word within this window, as ``Encoding.word_to_chars`` gives it.

    Tokens without a word fall back to their own offsets, as the pipeline's ``get_indices`` does.
    """
    n = len(word_ids)
    words = np.array([-1 if w is None else w for w in word_ids], dtype=np.int64)
    words = np.where(context_mask, words, -1)
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
    settings.validate()
    if len(questions) != len(contexts):
        raise SquadkitError(f"got {len(questions)} questions but {len(contexts)} contexts")
    for i, (q, c) in enumerate(zip(questions, contexts)):
        _check_text(q, "question", first_example_index + i)
        _check_text(c, "context", first_example_index + i)
    if settings.mode == "legacy":
        return _legacy_windows(tokenizer, questions, contexts, settings, first_example_index, answers)
    return _fast_windows(tokenizer, questions, contexts, settings, first_example_index, answers)


def _fast_windows(tokenizer, questions, contexts, settings, first_example_index, answers) -> list[Window]:
    template = PairTemplate.from_tokenizer(tokenizer)
    questions = truncate_questions(tokenizer, questions, settings.max_question_len)
    q_lens = [len(ids) for ids in tokenizer(list(questions), add_special_tokens=False)["input_ids"]]
    stride = settings.resolved_doc_stride()
    # Group examples by the tokenizer overlap they need; one batched tokenizer call per group.
    groups: dict[int, list[int]] = {}
    for i, q_len in enumerate(q_lens):
        capacity = settings.max_seq_len - q_len - template.n_special
        if capacity < 1:
            raise SquadkitError(
                f"input {first_example_index + i}: the question takes {q_len} tokens, leaving no room for the context "
                f"in max_seq_len={settings.max_seq_len}"
            )
        overlap = stride if settings.mode == "pipeline" else capacity - stride
        groups.setdefault(max(0, min(overlap, capacity - 1)), []).append(i)

    per_example: dict[int, list[Window]] = {}
    for overlap, members in groups.items():
        enc = tokenizer(
            [questions[i] for i in members],
            [contexts[i] for i in members],
            truncation="only_second",
            max_length=settings.max_seq_len,
            stride=overlap,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_token_type_ids=True,
            padding=False,
        )
        sample_map = enc["overflow_to_sample_mapping"]
        for w in range(len(enc["input_ids"])):
            i = members[sample_map[w]]
            ids = np.asarray(enc["input_ids"][w], dtype=np.int64)
            seq = enc.sequence_ids(w)
            context_mask = np.array([s == 1 for s in seq], dtype=bool)
            offsets = np.asarray(enc["offset_mapping"][w], dtype=np.int64).reshape(-1, 2)
            offsets = np.where(context_mask[:, None], offsets, 0)
            types = enc.get("token_type_ids")
            window = Window(
                example_index=first_example_index + i,
                input_ids=ids,
                token_type_ids=np.asarray(types[w], dtype=np.int64) if types is not None else None,
                length=len(ids),
                context_mask=context_mask,
                offsets=offsets,
            )
            if settings.mode == "pipeline":
                window.word_starts, window.word_ends = _word_spans(enc.word_ids(w), offsets, context_mask)
            per_example.setdefault(i, []).append(window)

    windows: list[Window] = []
    for i in range(len(questions)):
        example_windows = per_example[i]
        if settings.mode != "pipeline":
            lengths = [int(w.context_mask.sum()) for w in example_windows]
            starts = _window_starts(lengths, settings.max_seq_len - q_lens[i] - template.n_special, stride)
            flags = max_context_flags(starts, lengths, starts[-1] + lengths[-1])
            for window, flag in zip(example_windows, flags):
                window.max_context = np.zeros(window.length, dtype=bool)
                window.max_context[window.context_mask] = flag
        if answers is not None:
            for window in example_windows:
                _label_window(window, answers[i])
        windows.extend(example_windows)
    return windows


def _window_starts(lengths: Sequence[int], capacity: int, step: int) -> list[int]:
    """Token index (within the context) where each window starts: k * step, as run_squad's loop."""
    effective = min(step, capacity)  # an overlap clamped at 0 means the step is the capacity
    return [k * effective for k in range(len(lengths))]


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


def _tokenize_words(tokenizer, words: Sequence[str]) -> dict[str, list[int]]:
    """Token ids of each distinct word, tokenized on its own as run_squad did."""
    prefix = " " if any(name in type(tokenizer).__name__ for name in _PREFIX_SPACE_TOKENIZERS) else ""
    unique = list(dict.fromkeys(words))
    if not unique:
        return {}
    ids = tokenizer([prefix + w for w in unique], add_special_tokens=False)["input_ids"]
    return dict(zip(unique, ids))


def _legacy_windows(tokenizer, questions, contexts, settings, first_example_index, answers) -> list[Window]:
    template = PairTemplate.from_tokenizer(tokenizer)
    step = settings.resolved_doc_stride()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    query_ids = tokenizer(list(questions), add_special_tokens=False, truncation=True, max_length=settings.max_question_len)[
        "input_ids"
    ]
    all_words = [whitespace_words(c) for c in contexts]
    vocab = _tokenize_words(tokenizer, [w for words, _, _ in all_words for w in words])
    windows: list[Window] = []
    for i, (query, (words, word_starts, word_ends)) in enumerate(zip(query_ids, all_words)):
        doc_ids: list[int] = []
        tok_to_word: list[int] = []
        for w, word in enumerate(words):
            sub = vocab[word]
            doc_ids.extend(sub)
            tok_to_word.extend([w] * len(sub))
        doc_ids_arr = np.asarray(doc_ids, dtype=np.int64)
        tok_to_word_arr = np.asarray(tok_to_word, dtype=np.int64)
        capacity = settings.max_seq_len - len(query) - template.n_special
        if capacity < 1:
            raise SquadkitError(
                f"input {first_example_index + i}: the question leaves no room for the context in max_seq_len={settings.max_seq_len}"
            )
        starts, lengths = [], []
        while len(starts) * step < len(doc_ids):
            start = len(starts) * step
            starts.append(start)
            lengths.append(min(len(doc_ids) - start, capacity))
            if start + capacity >= len(doc_ids):
                break
        flags = max_context_flags(starts, lengths, len(doc_ids))
        head = template.prefix + list(query) + template.middle
        for start, length, flag in zip(starts, lengths, flags):
            body = doc_ids_arr[start : start + length]
            ids = np.concatenate([np.asarray(head, dtype=np.int64), body, np.asarray(template.suffix, dtype=np.int64)])
            n = len(ids)
            padded = np.full(settings.max_seq_len, pad_id, dtype=np.int64)
            padded[:n] = ids
            ctx = slice(len(head), len(head) + length)
            context_mask = np.zeros(settings.max_seq_len, dtype=bool)
            context_mask[ctx] = True
            token_to_word = np.full(settings.max_seq_len, -1, dtype=np.int64)
            token_to_word[ctx] = tok_to_word_arr[start : start + length]
            offsets = np.zeros((settings.max_seq_len, 2), dtype=np.int64)
            offsets[ctx, 0] = np.asarray(word_starts, dtype=np.int64)[token_to_word[ctx]]
            offsets[ctx, 1] = np.asarray(word_ends, dtype=np.int64)[token_to_word[ctx]]
            max_context = np.zeros(settings.max_seq_len, dtype=bool)
            max_context[ctx] = flag
            types = np.zeros(settings.max_seq_len, dtype=np.int64)
            types[: len(template.prefix) + len(query)] = template.type_first
            types[len(template.prefix) + len(query) : n] = template.type_second
            window = Window(
                example_index=first_example_index + i,
                input_ids=padded,
                token_type_ids=types,
                length=n,
                context_mask=context_mask,
                offsets=offsets,
                max_context=max_context,
                token_to_word=token_to_word,
            )
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


def make_batch(windows: Sequence[Window], indices: Sequence[int], pad_id: int) -> Batch:
    width = max(windows[i].input_ids.shape[0] for i in indices)
    n = len(indices)
    input_ids = np.full((n, width), pad_id, dtype=np.int64)
    attention = np.zeros((n, width), dtype=np.int64)
    has_types = all(windows[i].token_type_ids is not None for i in indices)
    types = np.zeros((n, width), dtype=np.int64) if has_types else None
    for row, i in enumerate(indices):
        w = windows[i]
        size = w.input_ids.shape[0]
        input_ids[row, :size] = w.input_ids
        attention[row, : w.length] = 1
        if types is not None:
            types[row, :size] = w.token_type_ids
    return Batch(np.asarray(indices, dtype=np.int64), input_ids, attention, types)


def iter_batches(windows: Sequence[Window], batch_size: int, pad_id: int, sort_by_length: bool = True) -> Iterator[Batch]:
    """Batches of windows; sorted by length (longest first) so that padding is small."""
    if batch_size < 1:
        raise SquadkitError(f"batch_size must be a positive integer, got {batch_size!r}")
    order = np.arange(len(windows))
    if sort_by_length:
        lengths = np.fromiter((w.input_ids.shape[0] for w in windows), dtype=np.int64, count=len(windows))
        order = np.argsort(-lengths, kind="stable")
    for lo in range(0, len(order), batch_size):
        yield make_batch(windows, order[lo : lo + batch_size].tolist(), pad_id)
