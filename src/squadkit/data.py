"""Read SQuAD v1.1 / v2.0 files (and the flat ``datasets`` form) into typed, validated records.

Both the official nested form and the flat form (JSON lines, a JSON list, or ``{"data": [records]}``)
give identical :class:`SquadExample` lists. Bad records are one-line errors naming the file, article,
paragraph and question id; mismatched answer offsets are kept and warned about once (an error under
``strict=True``); nothing is dropped silently. The full policy and why: docs/data.md.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .errors import SquadkitError
from .io import read_json

__all__ = [
    "Answer",
    "SquadExample",
    "Problem",
    "SquadDataset",
    "SquadDataWarning",
    "load_squad",
    "examples_from_records",
    "dataset_from_records",
    "iter_contexts",
]

#: How many ids a warning / error message lists before "...".
MAX_IDS_SHOWN = 5
#: How many problems :meth:`DatasetStats.to_dict` lists in full.
MAX_PROBLEMS_SHOWN = 10

_JSONL_SUFFIXES = {".jsonl", ".ndjson"}


class SquadDataWarning(UserWarning):
    """A problem in a SQuAD file that does not stop loading (e.g. mismatched answer offsets)."""


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    text: str
    answer_start: int

    @property
    def answer_end(self) -> int:
        """Exclusive character end offset."""
        return self.answer_start + len(self.text)


@dataclass
class SquadExample:
    id: str
    title: str
    context: str
    question: str
    answers: list[Answer]
    plausible_answers: list[Answer]
    is_impossible: bool
    article_index: int
    paragraph_index: int

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


@dataclass
class Problem:
    kind: str
    message: str
    question_id: str | None = None


@dataclass
class SquadDataset:
    path: Path | None
    examples: list[SquadExample]
    format: str  # "squad-v1.1" | "squad-v2.0" | "flat"
    problems: list[Problem] = field(default_factory=list)
    version: str | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[SquadExample]:
        return iter(self.examples)

    def __getitem__(self, index: int) -> SquadExample:
        return self.examples[index]

    @property
    def num_articles(self) -> int:
        return len({ex.article_index for ex in self.examples})

    @property
    def num_paragraphs(self) -> int:
        return len({(ex.article_index, ex.paragraph_index) for ex in self.examples})

    def by_id(self) -> dict[str, SquadExample]:
        return {ex.id: ex for ex in self.examples}


def iter_contexts(dataset: SquadDataset | Iterable[SquadExample]) -> Iterator[tuple[int, int, str, str]]:
    """Yield ``(article_index, paragraph_index, title, context)`` once per paragraph, in file order."""
    seen: set[tuple[int, int]] = set()
    for ex in dataset:
        key = (ex.article_index, ex.paragraph_index)
        if key not in seen:
            seen.add(key)
            yield ex.article_index, ex.paragraph_index, ex.title, ex.context


# ---------------------------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "list", str: "string", bool: "bool"}.get(type(value), type(value).__name__)


class _Builder:
    """Shared validation for both shapes; collects examples and soft problems."""

    def __init__(self, source: str):
        self.source = source
        self.examples: list[SquadExample] = []
        self.problems: list[Problem] = []
        self.first_seen: dict[str, str] = {}
        self.saw_is_impossible = False

    # -- helpers ------------------------------------------------------------------------------
    def fail(self, where: str, message: str) -> None:
        raise SquadkitError(f"{self.source}: {where}: {message}")

    def field(self, obj: dict, name: str, kind: type | tuple, where: str, what: str, required: bool = True,
              default: Any = None) -> Any:
        if name not in obj:
            if required:
                self.fail(where, f"missing field '{name}'")
            return default
        value = obj[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(where, f"field '{name}' must be {what}, got {_type_name(value)}")
        return value

    def answers(self, raw: Any, context: str, where: str, qid: str, name: str) -> list[Answer]:
        """Validate a list of ``{"text", "answer_start"}`` dicts."""
        out: list[Answer] = []
        label = "answer" if name == "answers" else "plausible answer"
        n = len(context)
        for k, ans in enumerate(raw):
            awhere = f"{where}, {label} {k}"
            if not isinstance(ans, dict):
                self.fail(where, f"'{name}[{k}]' must be an object, got {_type_name(ans)}")
            text = ans.get("text")
            start = ans.get("answer_start")
            if not isinstance(text, str):
                self.fail(awhere, "missing field 'text'" if "text" not in ans
                          else f"field 'text' must be a string, got {_type_name(text)}")
            if not isinstance(start, int) or isinstance(start, bool):
                self.fail(awhere, "missing field 'answer_start'" if "answer_start" not in ans
                          else f"field 'answer_start' must be an integer, got {_type_name(start)}")
            out.append(self.check_answer(text, start, n, context, awhere, qid))
        return out

    def check_answer(self, text: str, start: int, n: int, context: str, where: str, qid: str) -> Answer:
        if not text:
            self.fail(where, "answer text is empty")
        if start < 0 or start >= n:
            self.fail(where, f"answer_start {start} is out of range for a context of {n} characters")
        if context[start:start + len(text)] != text:
            found = context[start:start + len(text)]
            self.problems.append(Problem(
                "offset_mismatch",
                f"{where}: answer_start {start} points at {found!r}, not at the answer text {text!r}",
                qid,
            ))
        return Answer(text, start)

    def question(self, qa: dict, where_para: str, title: str, context: str, article_index: int,
                 paragraph_index: int, answers_raw_getter=None) -> None:
        qid = qa.get("id")
        where = f"{where_para}, question {qid if isinstance(qid, str) else f'#{len(self.examples)} (no valid id)'}"
        qid = self.field(qa, "id", str, where, "a string")
        if not qid:
            self.fail(where, "field 'id' is empty")
        question = self.field(qa, "question", str, where, "a string")
        is_impossible = self.field(qa, "is_impossible", bool, where, "true or false", required=False)
        if answers_raw_getter is not None:
            answers = answers_raw_getter(qa, where, qid, context)
        else:
            raw = self.field(qa, "answers", list, where, "a list", required=not is_impossible, default=[])
            answers = self.answers(raw, context, where, qid, "answers")
        plaus_raw = self.field(qa, "plausible_answers", list, where, "a list", required=False, default=[])
        plausible = self.answers(plaus_raw, context, where, qid, "plausible_answers") if plaus_raw else []
        if is_impossible is None:
            is_impossible = not answers
        else:
            self.saw_is_impossible = True
            if is_impossible and answers:
                self.fail(where, f"is_impossible is true but the question has {len(answers)} answer(s)")
            if not is_impossible and not answers:
                self.fail(where, "is_impossible is false but the question has no answers")
        if qid in self.first_seen:
            self.fail(where, f"duplicate question id (first seen at {self.first_seen[qid]})")
        self.first_seen[qid] = where_para
        self.examples.append(SquadExample(
            id=qid, title=title, context=context, question=question, answers=answers,
            plausible_answers=plausible, is_impossible=is_impossible,
            article_index=article_index, paragraph_index=paragraph_index,
        ))


def _parse_nested(data: list, builder: _Builder) -> None:
    for a_i, article in enumerate(data):
        if not isinstance(article, dict):
            builder.fail(f"article {a_i}", f"must be an object, got {_type_name(article)}")
        title = article.get("title", "")
        where_a = f"article {a_i} {title!r}" if isinstance(title, str) else f"article {a_i}"
        title = builder.field(article, "title", str, where_a, "a string", required=False, default="")
        paragraphs = builder.field(article, "paragraphs", list, where_a, "a list")
        for p_i, para in enumerate(paragraphs):
            where_p = f"{where_a}, paragraph {p_i}"
            if not isinstance(para, dict):
                builder.fail(where_p, f"must be an object, got {_type_name(para)}")
            context = builder.field(para, "context", str, where_p, "a string")
            qas = builder.field(para, "qas", list, where_p, "a list")
            for qa in qas:
                if not isinstance(qa, dict):
                    builder.fail(where_p, f"question entries must be objects, got {_type_name(qa)}")
                builder.question(qa, where_p, title, context, a_i, p_i)


def _flat_answers(builder: _Builder):
    """Answer reader for flat records: ``{"text": [...], "answer_start": [...]}`` or a list of dicts."""

    def read(rec: dict, where: str, qid: str, context: str) -> list[Answer]:
        if "answers" not in rec:
            if rec.get("is_impossible") is True:
                return []
            builder.fail(where, "missing field 'answers'")
        raw = rec["answers"]
        if isinstance(raw, list):
            return builder.answers(raw, context, where, qid, "answers")
        if not isinstance(raw, dict):
            builder.fail(where, f"field 'answers' must be an object with 'text' and 'answer_start' lists, "
                                f"got {_type_name(raw)}")
        texts = raw.get("text")
        starts = raw.get("answer_start")
        if not isinstance(texts, list):
            builder.fail(where, "missing field 'answers.text'" if "text" not in raw
                         else f"field 'answers.text' must be a list, got {_type_name(texts)}")
        if not isinstance(starts, list):
            builder.fail(where, "missing field 'answers.answer_start'" if "answer_start" not in raw
                         else f"field 'answers.answer_start' must be a list, got {_type_name(starts)}")
        if len(texts) != len(starts):
            builder.fail(where, f"'answers.text' has {len(texts)} item(s) but 'answers.answer_start' has {len(starts)}")
        out = []
        n = len(context)
        for k, (text, start) in enumerate(zip(texts, starts)):
            awhere = f"{where}, answer {k}"
            if not isinstance(text, str):
                builder.fail(awhere, f"'answers.text[{k}]' must be a string, got {_type_name(text)}")
            if not isinstance(start, int) or isinstance(start, bool):
                builder.fail(awhere, f"'answers.answer_start[{k}]' must be an integer, got {_type_name(start)}")
            out.append(builder.check_answer(text, start, n, context, awhere, qid))
        return out

    return read


def _parse_flat(records: Iterable[Any], builder: _Builder, line_numbers: Sequence[int] | None = None) -> None:
    """Flat records → examples. Articles are runs of equal titles, paragraphs runs of equal contexts."""
    reader = _flat_answers(builder)
    a_i = p_i = -1
    prev_title: str | None = None
    prev_context: str | None = None
    for r_i, rec in enumerate(records):
        where_r = f"record {r_i}" if line_numbers is None else f"line {line_numbers[r_i]}"
        if not isinstance(rec, dict):
            builder.fail(where_r, f"must be an object, got {_type_name(rec)}")
        title = builder.field(rec, "title", (str, type(None)), where_r, "a string", required=False, default="") or ""
        if a_i < 0 or title != prev_title:
            a_i += 1
            p_i = -1
            prev_context = None
            prev_title = title
        qid = rec.get("id")
        where_q = f"{where_r}, article {a_i} {title!r}, question {qid if isinstance(qid, str) else '?'}"
        context = builder.field(rec, "context", str, where_q, "a string")
        if context != prev_context:
            p_i += 1
            prev_context = context
        where_p = f"{where_r}, article {a_i} {title!r}, paragraph {p_i}"
        builder.question(rec, where_p, title, context, a_i, p_i, answers_raw_getter=reader)


def _looks_like_jsonl(path: Path) -> bool:
    """JSON lines if the suffix says so, or the first line is a whole JSON object and more lines follow."""
    if path.suffix.lower() in _JSONL_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            first = handle.readline(1 << 20)
            if not first.endswith(b"\n"):
                return False
            stripped = first.strip()
            if not (stripped.startswith(b"{") and stripped.endswith(b"}")):
                return False
            rest = handle.read(4096)
            if not rest.strip():
                return False
        return isinstance(json.loads(stripped), dict)
    except (OSError, ValueError):
        return False


def _read_jsonl(path: Path) -> tuple[list[Any], list[int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SquadkitError(f"{path}: cannot read SQuAD file: {exc}") from None
    records: list[Any] = []
    numbers: list[int] = []
    loads = json.loads
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(loads(line))
        except json.JSONDecodeError as exc:
            raise SquadkitError(f"{path}: line {n}: malformed JSON at column {exc.colno}: {exc.msg}") from None
        numbers.append(n)
    return records, numbers


def _finish(builder: _Builder, path: Path | None, fmt: str, version: str | None) -> SquadDataset:
    if not builder.examples:
        raise SquadkitError(f"{builder.source}: no questions found")
    return SquadDataset(path=path, examples=builder.examples, format=fmt, problems=builder.problems, version=version)


def _report(dataset: SquadDataset, strict: bool, stacklevel: int, source: str | None = None) -> None:
    """Mismatched offsets: one warning with the count and the first ids, or an error when strict."""
    mismatched = [p for p in dataset.problems if p.kind == "offset_mismatch"]
    if not mismatched:
        return
    source = source or str(dataset.path)
    ids = list(dict.fromkeys(p.question_id for p in mismatched))
    shown = ", ".join(str(i) for i in ids[:MAX_IDS_SHOWN]) + (", ..." if len(ids) > MAX_IDS_SHOWN else "")
    summary = (f"{source}: {len(mismatched)} answer(s) in {len(ids)} question(s) have an "
               f"answer_start that does not point at the answer text ({shown})")
    if strict:
        raise SquadkitError(f"{summary}; first: {mismatched[0].message}")
    warnings.warn(summary + "; kept as-is (strict mode rejects them)", SquadDataWarning, stacklevel=stacklevel + 1)


@contextlib.contextmanager
def _gc_paused():
    """Building ~10^5 small objects next to a large parsed JSON tree triggers many full GC passes
    (about half the load time on the full train set); nothing here creates reference cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_squad(path: str | os.PathLike, strict: bool = False) -> SquadDataset:
    """Read and validate a SQuAD v1.1 / v2.0 file or a flat ``datasets``-style file.

    Raises :class:`SquadkitError` for unreadable or invalid input (see the module docstring);
    mismatched answer offsets are a :class:`SquadDataWarning` (an error when ``strict``).
    """
    with _gc_paused():
        dataset = _load_squad(Path(path))
    _report(dataset, strict, stacklevel=2)
    return dataset


def _load_squad(path: Path) -> SquadDataset:
    source = str(path)
    if not path.exists():
        raise SquadkitError(f"{path}: SQuAD file not found")
    if path.is_file():
        size = path.stat().st_size
        if size == 0 or (size < 4096 and not path.read_bytes().strip()):
            raise SquadkitError(f"{path}: file is empty")
    builder = _Builder(source)
    if path.is_file() and _looks_like_jsonl(path):
        records, numbers = _read_jsonl(path)
        if not records:
            raise SquadkitError(f"{path}: file is empty")
        _parse_flat(records, builder, numbers)
        return _finish(builder, path, "flat", None)

    obj = read_json(path, "SQuAD file")
    version = None
    if isinstance(obj, dict):
        if "data" not in obj:
            hint = ""
            if obj and all(isinstance(v, str) for v in obj.values()):
                hint = " (it looks like predictions: question id -> answer text; did you swap the files?)"
            elif obj and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in obj.values()):
                hint = " (it looks like a na-prob / null-odds file; did you swap the files?)"
            raise SquadkitError(f"{path}: expected a SQuAD file ({{\"version\", \"data\": [...]}}) or flat "
                                f"records; found an object with keys {sorted(obj)[:6]}{hint}")
        raw_version = obj.get("version")
        if raw_version is not None and not isinstance(raw_version, (str, int, float)):
            raise SquadkitError(f"{path}: field 'version' must be a string, got {_type_name(raw_version)}")
        version = None if raw_version is None else str(raw_version)
        data = obj["data"]
        if not isinstance(data, list):
            raise SquadkitError(f"{path}: field 'data' must be a list, got {_type_name(data)}")
        nested = bool(data) and isinstance(data[0], dict) and "paragraphs" in data[0]
        if not data:
            raise SquadkitError(f"{path}: no questions found ('data' is empty)")
    elif isinstance(obj, list):
        data = obj
        nested = bool(data) and isinstance(data[0], dict) and "paragraphs" in data[0]
        if not data:
            raise SquadkitError(f"{path}: no questions found (the list is empty)")
    else:
        raise SquadkitError(f"{path}: expected a SQuAD object or a list of records, got {_type_name(obj)}")

    if nested:
        _parse_nested(data, builder)
        v2 = builder.saw_is_impossible or (version is not None and version.lstrip("vV").startswith("2"))
        fmt = "squad-v2.0" if v2 else "squad-v1.1"
    else:
        _parse_flat(data, builder)
        fmt = "flat"
    return _finish(builder, path, fmt, version)


def dataset_from_records(records: Iterable[dict], strict: bool = False, source: str = "records") -> SquadDataset:
    """Validate in-memory flat records (e.g. a ``datasets.Dataset``) into a :class:`SquadDataset`."""
    return _from_records(records, strict, source, stacklevel=3)


def _from_records(records: Iterable[dict], strict: bool, source: str, stacklevel: int) -> SquadDataset:
    builder = _Builder(source)
    with _gc_paused():
        _parse_flat(records, builder)
        dataset = _finish(builder, None, "flat", None)
    _report(dataset, strict, stacklevel=stacklevel, source=source)
    return dataset


def examples_from_records(records: Iterable[dict], strict: bool = False, source: str = "records") -> list[SquadExample]:
    """Flat ``datasets``-style records → validated :class:`SquadExample` list (same rules as files)."""
    return _from_records(records, strict, source, stacklevel=3).examples
