"""A fast tokenizer read straight from ``tokenizer.json`` with the ``tokenizers`` library.

Why: importing transformers imports torch (seconds, before any work), and an exported ONNX
folder needs neither: ``tokenizer.json`` is the very object transformers' fast tokenizers wrap
(``PreTrainedTokenizerFast.backend_tokenizer``), saved with every override transformers applied at
load time. ``FastTokenizer`` gives the few calls squadkit's windows and decoding make, computed by
that same object, so answers are the same (tests/test_fast_tokenizer.py compares them):

* ``tokenizer(texts, [pairs], add_special_tokens=..., return_offsets_mapping=..., return_token_type_ids=...)``
* ``pad_token_id``, ``model_max_length``, ``convert_ids_to_tokens``, ``convert_tokens_to_string``,
  ``backend_tokenizer``.

``squadkit index --tokenizer FOLDER`` reads a local folder's tokenizer this way too: passage
lengths need token offsets only, and importing transformers took most of a small run's time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from .errors import SquadkitError, first_line

TOKENIZER_FILE = "tokenizer.json"
_CONFIG_FILES = ("tokenizer_config.json", "special_tokens_map.json")
_UNLIMITED = int(1e30)  # transformers' VERY_LARGE_INTEGER: a tokenizer that declares no maximum


def _token_text(value: Any) -> str | None:
    """A special token as the config files write it: a string or ``{"content": ...}``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class Encoded(dict):
    """What a call returns: the fields asked for (a dict, as transformers' BatchEncoding is),
    ``sequence_ids(i)`` (which sequence, 0 or 1, each token of the i-th input came from) and
    ``word_ids(i)`` (the word each token belongs to)."""

    def __init__(self, fields: dict, encodings: list) -> None:
        super().__init__(fields)
        self._encodings = encodings

    def sequence_ids(self, index: int = 0) -> list[int | None]:
        return self._encodings[index].sequence_ids

    def word_ids(self, index: int = 0) -> list[int | None]:
        return self._encodings[index].word_ids


class FastTokenizer:
    """The subset of transformers' fast-tokenizer API that squadkit uses, on ``tokenizers.Tokenizer``."""

    is_fast = True

    def __init__(self, folder: str | Path) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        path = folder / TOKENIZER_FILE
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises a plain Exception for a malformed file
            raise SquadkitError(f"{path}: cannot read the tokenizer: {first_line(exc)}") from None
        # transformers switches these off unless a call asks for them, and squadkit never does
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        config: dict = {}
        for name in reversed(_CONFIG_FILES):  # tokenizer_config.json wins over special_tokens_map.json
            file = folder / name
            if file.is_file():
                try:
                    data = json.loads(file.read_text(encoding="utf-8"))
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise SquadkitError(f"{file}: cannot read the tokenizer settings: {first_line(exc)}") from None
                config.update(data if isinstance(data, dict) else {})
        self.name_or_path = str(folder)
        self.tokenizer_class = str(config.get("tokenizer_class") or "")  # e.g. RobertaTokenizer (features.py reads it)
        self.model_max_length = int(config.get("model_max_length") or _UNLIMITED)
        self.pad_token = _token_text(config.get("pad_token"))
        self.pad_token_id = self._tokenizer.token_to_id(self.pad_token) if self.pad_token else None

    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None, *,
                 add_special_tokens: bool = True, return_token_type_ids: bool = False,
                 return_offsets_mapping: bool = False, verbose: bool = True) -> Encoded:
        """Encode one text (or pair) or a batch, as transformers' ``__call__`` does without padding
        or truncation; ``input_ids`` always, token types and offsets when asked for."""
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if text_pair is None:
            inputs: list = texts
        else:
            pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            inputs = list(zip(texts, pairs))
        encodings = self._tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens)
        out: dict[str, list] = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids:
            out["token_type_ids"] = [e.type_ids for e in encodings]
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encodings]
        return Encoded({k: v[0] for k, v in out.items()} if single else out, encodings)

    @property
    def backend_tokenizer(self):
        """The ``tokenizers.Tokenizer`` itself, as transformers names it."""
        return self._tokenizer

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self._tokenizer.id_to_token(int(i)) for i in ids]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        decoder = self._tokenizer.decoder
        return decoder.decode(list(tokens)) if decoder is not None else " ".join(tokens)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)
