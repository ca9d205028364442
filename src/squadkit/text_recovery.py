"""Answer texts from token spans, as run_squad's ``get_final_text`` recovered them (squad mode).

The span's tokens are turned back into a string and projected onto the whitespace words of the
context they came from, so run_squad's answers (whole words with their punctuation where the
projection fails, for example) are reproduced for any window. How: docs/design.md
(squadkit/text_recovery.py).
"""

from __future__ import annotations

import functools
import re
import unicodedata
import weakref
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import Callable

import numpy as np

from .features import Window, whitespace_words
from .words import WordBounds, inside_word

_NORMAL, _SPACE, _DROP, _PUNCT, _CJK = range(5)
_ASCII_TOKEN = re.compile(r"[A-Za-z0-9]+|[!-/:-@\[-`{-~]")
_ASCII_DROP = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@functools.lru_cache(maxsize=65536)
def _char_class(char: str) -> int:
    """How BERT's BasicTokenizer treats a character (cached: texts repeat the same few)."""
    cp = ord(char)
    if char in " \t\n\r" or unicodedata.category(char) == "Zs":
        return _SPACE
    if cp == 0 or cp == 0xFFFD or unicodedata.category(char).startswith("C"):
        return _DROP
    if (
        0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F
    ):
        return _CJK
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or unicodedata.category(char).startswith("P"):
        return _PUNCT
    return _NORMAL


def _strip_accents(token: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", token) if unicodedata.category(c) != "Mn")


def basic_tokenize(text: str, do_lower_case: bool) -> list[str]:
    """BERT's BasicTokenizer: drop control characters, split on whitespace, CJK characters and
    punctuation, and (with ``do_lower_case``) lower-case and strip accents.

    ASCII text, the common case, takes one regular expression; other text goes character by
    character with cached character classes.
    """
    return _ascii_tokens(text, do_lower_case) if text.isascii() else _unicode_tokens(text, do_lower_case)


def _ascii_tokens(text: str, do_lower_case: bool) -> list[str]:
    """``basic_tokenize`` of ASCII text."""
    text = _ASCII_DROP.sub("", text)
    return _ASCII_TOKEN.findall(text.lower() if do_lower_case else text)


def _unicode_tokens(text: str, do_lower_case: bool) -> list[str]:
    """``basic_tokenize`` of text that is not all ASCII."""
    tokens: list[str] = []
    for chunk in text.split():
        pieces: list[str] = []  # split CJK off and drop control characters first
        current = ""
        for char in chunk:
            kind = _char_class(char)
            if kind == _DROP:
                continue
            if kind == _CJK or kind == _SPACE:
                if current:
                    pieces.append(current)
                current = ""
                if kind == _CJK:
                    pieces.append(char)
            else:
                current += char
        if current:
            pieces.append(current)
        for piece in pieces:
            if do_lower_case:
                piece = _strip_accents(piece.lower())
            word = ""
            for char in piece:
                if _char_class(char) == _PUNCT:
                    if word:
                        tokens.append(word)
                        word = ""
                    tokens.append(char)
                else:
                    word += char
            if word:
                tokens.append(word)
    return tokens


@functools.lru_cache(maxsize=65536)
def _word_tokens(word: str, do_lower_case: bool, ascii_text: bool) -> str:
    """A word's BasicTokenizer tokens joined by spaces, as part of a text that is all ASCII or not
    (``basic_tokenize``'s two ways differ on a few control characters)."""
    return " ".join(_ascii_tokens(word, do_lower_case) if ascii_text else _unicode_tokens(word, do_lower_case))


@dataclass(frozen=True)
class ContextWords:
    """A text's whitespace words (no word holds a space), where each starts and ends in the text, and
    how many characters the words before each hold: what run_squad's ``get_final_text`` projects onto."""

    words: list[str]
    starts: list[int]
    ends: list[int]
    chars_before: list[int]  # (n + 1)

    @classmethod
    def of(cls, words: list[str], starts: list[int], ends: list[int]) -> "ContextWords":
        """The words as ``features.whitespace_words`` gives them."""
        return cls(words, starts, ends, [0, *accumulate(map(len, words))])

    def final_text(self, pred_text: str, first: int, last: int, do_lower_case: bool) -> tuple[str, int, int]:
        """run_squad's ``get_final_text`` of ``pred_text`` over words ``first`` to ``last``: the text it
        printed (from the words joined by single spaces) and where that lies in the text (start, end).

        The BasicTokenizer tokens of words joined by spaces are each word's tokens in turn."""
        words, starts, chars_before = self.words, self.starts, self.chars_before
        span = words[first : last + 1]
        orig_text = " ".join(span)
        if pred_text == orig_text:  # found whole, or not at all: the whole words either way (docs/design.md)
            return orig_text, starts[first], self.ends[last]
        ascii_text = all(map(str.isascii, span))  # basic_tokenize's way for the joined words
        tok_text = " ".join(filter(None, [_word_tokens(word, do_lower_case, ascii_text) for word in span]))
        start = tok_text.find(pred_text) if pred_text else -1
        end = start + len(pred_text) - 1
        if (start == -1 or len(tok_text) - tok_text.count(" ") != chars_before[last + 1] - chars_before[first]
                or tok_text[start] == " " or tok_text[end] == " "):
            return orig_text, starts[first], self.ends[last]
        a = chars_before[first] + start - tok_text.count(" ", 0, start)  # among the words' characters
        b = chars_before[first] + end - tok_text.count(" ", 0, end)
        i = bisect_right(chars_before, a, first, last + 1) - 1
        j = bisect_right(chars_before, b, first, last + 1) - 1
        a, b = a - chars_before[i], b - chars_before[j] + 1  # within words i and j
        if i == j:
            text = words[i][a:b]
        else:
            joined = " ".join(words[i : j + 1])
            text = joined[a : len(joined) - len(words[j]) + b]
        return text, starts[i] + a, starts[j] + b


def get_final_text(pred_text: str, orig_text: str, do_lower_case: bool) -> tuple[int, int]:
    """run_squad's ``get_final_text``: where, within ``orig_text``, the predicted text lies.

    Returns ``(start, end)`` so that ``orig_text[start:end]`` is the text run_squad printed;
    when the projection fails it is the whole of ``orig_text``, as run_squad's fallback.
    """
    words = orig_text.split(" ")
    starts = [0, *accumulate(len(word) + 1 for word in words)][:-1]
    ends = [start + len(word) for start, word in zip(starts, words)]
    _, start, end = ContextWords.of(words, starts, ends).final_text(pred_text, 0, len(words) - 1, do_lower_case)
    return start, end


def _token_lookup(tokenizer) -> Callable[[list[int]], list[str]]:
    """``tokenizer.convert_ids_to_tokens`` (element-wise for every tokenizer), memoized per id."""
    try:
        memo = _TOKEN_CACHES.setdefault(tokenizer, {})
    except TypeError:  # a tokenizer that takes no weak reference: memoized per question only
        memo = {}

    def lookup(ids: list[int]) -> list[str]:
        try:
            return [memo[i] for i in ids]
        except KeyError:
            missing = [i for i in ids if i not in memo]
            memo.update(zip(missing, tokenizer.convert_ids_to_tokens(missing)))
            return [memo[i] for i in ids]

    return lookup


_TOKEN_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# convert_tokens_to_string methods that are the backend decoder's decode and nothing else (" ".join without a
# decoder): transformers 4.x and 5.x fast tokenizers, and squadkit's own (docs/design.md, text_recovery.py)
_DECODER_ONLY = {
    ("transformers.tokenization_utils_fast", "PreTrainedTokenizerFast.convert_tokens_to_string"),
    ("transformers.tokenization_utils_tokenizers", "TokenizersBackend.convert_tokens_to_string"),
    ("squadkit.fast_tokenizer", "FastTokenizer.convert_tokens_to_string"),
}


def _tokens_to_string(tokenizer) -> Callable[[list[str]], str]:
    """``tokenizer.convert_tokens_to_string``, or the backend decoder's ``decode`` where that is what it calls."""
    method = getattr(type(tokenizer), "convert_tokens_to_string", None)
    if (getattr(method, "__module__", None), getattr(method, "__qualname__", None)) in _DECODER_ONLY:
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        if decoder is not None and callable(getattr(decoder, "decode", None)):
            return decoder.decode
    return tokenizer.convert_tokens_to_string


@functools.lru_cache(maxsize=64)
def _context_words(context: str) -> ContextWords:
    """A context's ``ContextWords``, cached for a few contexts (a paragraph's questions come together)."""
    return ContextWords.of(*whitespace_words(context))


def squad_text_recoverer(tokenizer, context: str, do_lower_case: bool, whole_words: bool = False):
    """``text_of_span`` of squad mode: run_squad's text recovery, for any window.

    The span's tokens are turned back into a string and projected by ``get_final_text`` onto
    the whitespace words they came from, as run_squad did (so its answers, e.g. whole words
    with their punctuation where the projection fails, are reproduced). The words are found
    from the tokens' character offsets, which works for fast-tokenizer and legacy windows alike.
    With ``whole_words`` a span that starts or ends inside a word of the context is widened to
    the whole word(s) (``squadkit.words``), its text the context's, whitespace-joined as run_squad's.
    """
    bounds: list[WordBounds] = []  # built on the first span cut inside a word (most spans are not)

    context_words = _context_words(context)
    word_starts, final_text = context_words.starts, context_words.final_text
    id_to_token = _token_lookup(tokenizer)
    tokens_to_string = _tokens_to_string(tokenizer)

    def text_of_span(window: Window, start: int, end: int) -> tuple[str, int, int]:
        pred_text = " ".join(tokens_to_string(id_to_token(window.input_ids[start : end + 1].tolist())).split())
        offsets = window.offsets
        first = max(0, bisect_right(word_starts, offsets.item(start, 0)) - 1)  # the words the span's tokens are in
        last = max(first, bisect_right(word_starts, max(offsets.item(end, 1) - 1, 0), first) - 1)
        text, char_start, char_end = final_text(pred_text, first, last, do_lower_case)
        if whole_words and (inside_word(context, char_start) or inside_word(context, char_end)):
            if not bounds:
                bounds.append(WordBounds.of(context))
            wide_start, wide_end = bounds[0].widen(np.array([char_start]), np.array([char_end]))
            char_start, char_end = int(wide_start[0]), int(wide_end[0])
            return " ".join(context[char_start:char_end].split()), char_start, char_end
        return text, char_start, char_end

    return text_of_span
