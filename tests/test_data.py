"""squadkit.data: reading and validating SQuAD files, and the ``squadkit data stats`` command."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from squadkit.cli import app
from squadkit.data import (
    Answer,
    SquadDataWarning,
    dataset_from_records,
    examples_from_records,
    iter_contexts,
    load_squad,
)
from squadkit.errors import SquadkitError
from squadkit.stats import dataset_stats

runner = CliRunner()


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def nested_to_flat(nested: dict) -> list[dict]:
    """The ``datasets`` library's flat form, built from the official nested one."""
    records = []
    for article in nested["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                records.append({
                    "id": qa["id"],
                    "title": article["title"],
                    "context": para["context"],
                    "question": qa["question"],
                    "answers": {
                        "text": [a["text"] for a in qa["answers"]],
                        "answer_start": [a["answer_start"] for a in qa["answers"]],
                    },
                })
    return records


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


CONTEXT = "The Normans were the people who gave their name to Normandy, a region in France."


def small_squad() -> dict:
    """A tiny valid v2 file: 2 articles, 3 paragraphs, 4 questions (one unanswerable)."""
    return {
        "version": "v2.0",
        "data": [
            {"title": "Normans", "paragraphs": [
                {"context": CONTEXT, "qas": [
                    {"id": "q1", "question": "Where is Normandy?", "is_impossible": False,
                     "answers": [{"text": "France", "answer_start": CONTEXT.index("France")}]},
                    {"id": "q2", "question": "Who named Paris?", "is_impossible": True, "answers": [],
                     "plausible_answers": [{"text": "Normans", "answer_start": 4}]},
                ]},
                {"context": "Rollo was a Viking.", "qas": [
                    {"id": "q3", "question": "Who was Rollo?", "is_impossible": False,
                     "answers": [{"text": "a Viking", "answer_start": 10}]},
                ]},
            ]},
            {"title": "Physics", "paragraphs": [
                {"context": "Force equals mass times acceleration.", "qas": [
                    {"id": "q4", "question": "What equals force?", "is_impossible": False,
                     "answers": [{"text": "mass times acceleration", "answer_start": 13}]},
                ]},
            ]},
        ],
    }


def assert_one_line_error(exc: pytest.ExceptionInfo, *parts: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


# ---------------------------------------------------------------------------------------------
# real files
# ---------------------------------------------------------------------------------------------


def test_dev_counts(squad_dev_path):
    ds = load_squad(squad_dev_path)
    assert ds.format == "squad-v2.0" and ds.version == "v2.0"
    assert len(ds.examples) == 626
    assert ds.num_articles == 2 and ds.num_paragraphs == 87
    assert sum(ex.answerable for ex in ds) == 293
    assert sum(ex.is_impossible for ex in ds) == 333
    assert ds.problems == []
    first = ds.examples[0]
    assert first.id == "56ddde6b9a695914005b9628"
    assert first.title == "Normans"
    assert first.question == "In what country is Normandy located?"
    assert first.answers[0] == Answer("France", 159)
    assert first.context[159:165] == "France"
    assert (first.article_index, first.paragraph_index) == (0, 0)
    impossible = next(ex for ex in ds if ex.is_impossible)
    assert impossible.answers == [] and impossible.plausible_answers and not impossible.answerable


def test_train_counts_and_stats(squad_train_path):
    ds = load_squad(squad_train_path)
    stats = dataset_stats(ds)
    assert (stats.articles, stats.paragraphs, stats.questions) == (10, 694, 4719)
    assert (stats.answerable, stats.unanswerable) == (4371, 348)
    assert stats.context_chars.count == 694
    assert stats.context_chars.min <= stats.context_chars.median <= stats.context_chars.p95 <= stats.context_chars.max
    assert stats.question_chars.count == 4719
    assert stats.context_tokens is None
    d = stats.to_dict()
    json.dumps(d)
    assert d["questions"] == 4719 and d["problem_counts"] == {}
    assert len(list(iter_contexts(ds))) == 694
    assert len({ex.id for ex in ds}) == 4719


def test_stats_with_tokenizer(squad_dev_path, roberta_tokenizer_dir):
    stats = dataset_stats(load_squad(squad_dev_path), tokenizer=roberta_tokenizer_dir)
    assert stats.context_tokens.count == 87 and stats.question_tokens.count == 626
    # BPE tokens are fewer than characters, but not absurdly so
    assert stats.context_chars.mean / 8 < stats.context_tokens.mean < stats.context_chars.mean
    assert stats.question_tokens.min >= 1


def test_importing_data_does_not_import_torch():
    code = "import sys, squadkit.data; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ---------------------------------------------------------------------------------------------
# flat forms give the same examples
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["jsonl", "jsonl-as-json", "list", "data-dict"])
def test_flat_forms_match_nested(tmp_path, squad_dev_path, form):
    nested = json.loads(squad_dev_path.read_text(encoding="utf-8"))
    records = nested_to_flat(nested)
    if form == "jsonl":
        path = tmp_path / "dev.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif form == "jsonl-as-json":  # datasets' to_json() writes JSON lines under a .json name
        path = tmp_path / "dev-flat.json"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif form == "list":
        path = write_json(tmp_path / "dev-list.json", records)
    else:
        path = write_json(tmp_path / "dev-data.json", {"version": "flat", "data": records})
    flat = load_squad(path)
    ref = load_squad(squad_dev_path)
    assert flat.format == "flat"
    assert len(flat.examples) == len(ref.examples) == 626
    # Plausible answers exist only in the nested form; everything else must be identical.
    for got, want in zip(flat.examples, ref.examples):
        assert got.plausible_answers == []
        for name in ("id", "title", "context", "question", "answers", "is_impossible",
                     "article_index", "paragraph_index"):
            assert getattr(got, name) == getattr(want, name), name
    assert dataset_stats(flat).to_dict()["paragraphs"] == 87


def test_examples_from_records(squad_dev_path):
    nested = json.loads(squad_dev_path.read_text(encoding="utf-8"))
    records = nested_to_flat(nested)
    examples = examples_from_records(records)
    assert [ex.id for ex in examples] == [ex.id for ex in load_squad(squad_dev_path)]
    assert sum(ex.answerable for ex in examples) == 293


def test_flat_answers_as_list_of_dicts_and_empty(tmp_path):
    recs = [
        {"id": "a", "title": "T", "context": CONTEXT, "question": "Where?",
         "answers": [{"text": "France", "answer_start": CONTEXT.index("France")}]},
        {"id": "b", "title": "T", "context": CONTEXT, "question": "Who?", "answers": {"text": [], "answer_start": []}},
    ]
    ds = dataset_from_records(recs)
    assert ds.examples[0].answers == [Answer("France", CONTEXT.index("France"))]
    assert ds.examples[1].is_impossible and not ds.examples[1].answerable
    assert ds.num_paragraphs == 1


def test_v11_detected_without_is_impossible(tmp_path):
    obj = small_squad()
    obj["version"] = "1.1"
    for art in obj["data"]:
        for para in art["paragraphs"]:
            para["qas"] = [{k: v for k, v in qa.items() if k not in ("is_impossible", "plausible_answers")}
                           for qa in para["qas"] if qa["answers"]]
    ds = load_squad(write_json(tmp_path / "v11.json", obj))
    assert ds.format == "squad-v1.1" and ds.version == "1.1"
    assert len(ds) == 3 and all(ex.answerable and not ex.is_impossible for ex in ds)


# ---------------------------------------------------------------------------------------------
# validation errors
# ---------------------------------------------------------------------------------------------


def _bad(tmp_path, mutate, name="dev.json"):
    obj = small_squad()
    mutate(obj)
    return write_json(tmp_path / name, obj)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda o: o["data"][1]["paragraphs"][0]["qas"][0].__setitem__("question", 7),
         ["article 1 'Physics'", "paragraph 0", "question q4", "field 'question' must be a string, got int"]),
        (lambda o: o["data"][0]["paragraphs"][1]["qas"][0].pop("question"),
         ["article 0 'Normans'", "paragraph 1", "question q3", "missing field 'question'"]),
        (lambda o: o["data"][0]["paragraphs"][0]["qas"][0].__setitem__("answers", "France"),
         ["article 0 'Normans'", "paragraph 0", "question q1", "field 'answers' must be a list"]),
        (lambda o: o["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].__setitem__("answer_start", "159"),
         ["paragraph 0", "question q1", "'answer_start' must be an integer, got string"]),
        (lambda o: o["data"][0]["paragraphs"][0]["qas"][0].__setitem__("is_impossible", "no"),
         ["question q1", "field 'is_impossible' must be true or false"]),
        (lambda o: o["data"][0]["paragraphs"][1].__setitem__("context", None),
         ["article 0 'Normans'", "paragraph 1", "field 'context' must be a string, got null"]),
        (lambda o: o["data"][1]["paragraphs"][0]["qas"][0].__setitem__("id", "q1"),
         ["article 1 'Physics'", "paragraph 0", "question q1", "duplicate question id",
          "article 0 'Normans', paragraph 0"]),
        (lambda o: o["data"][0]["paragraphs"][1]["qas"][0]["answers"][0].__setitem__("answer_start", -1),
         ["article 0 'Normans'", "paragraph 1", "question q3", "answer_start -1 is out of range"]),
        (lambda o: o["data"][0]["paragraphs"][1]["qas"][0]["answers"][0].__setitem__("answer_start", 500),
         ["paragraph 1", "question q3", "answer_start 500 is out of range for a context of 19 characters"]),
        (lambda o: o["data"][0]["paragraphs"][0]["qas"][1].__setitem__(
            "answers", [{"text": "Normans", "answer_start": 4}]),
         ["article 0 'Normans'", "paragraph 0", "question q2", "is_impossible is true but the question has 1 answer"]),
        (lambda o: o["data"][0]["paragraphs"][0]["qas"][0].__setitem__("answers", []),
         ["paragraph 0", "question q1", "is_impossible is false but the question has no answers"]),
        (lambda o: o["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].__setitem__("text", ""),
         ["question q1", "answer text is empty"]),
        (lambda o: o["data"][1].pop("paragraphs"), ["article 1 'Physics'", "missing field 'paragraphs'"]),
        (lambda o: o.__setitem__("data", {"x": 1}), ["field 'data' must be a list"]),
    ],
)
def test_validation_errors_name_the_location(tmp_path, mutate, expected):
    path = _bad(tmp_path, mutate)
    with pytest.raises(SquadkitError) as exc:
        load_squad(path)
    assert_one_line_error(exc, str(path), *expected)
    assert isinstance(exc.value, ValueError)


def test_flat_errors_name_line_and_id(tmp_path):
    recs = nested_to_flat(small_squad())
    recs[2]["answers"]["answer_start"] = [999]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    with pytest.raises(SquadkitError) as exc:
        load_squad(path)
    assert_one_line_error(exc, str(path), "line 3", "article 0 'Normans'", "paragraph 1", "question q3",
                          "out of range")

    recs = nested_to_flat(small_squad())
    recs[3]["context"] = 12
    with pytest.raises(SquadkitError) as exc:
        load_squad(write_json(tmp_path / "bad-list.json", recs))
    assert_one_line_error(exc, "record 3", "article 1 'Physics'", "question q4", "field 'context' must be a string")

    recs = nested_to_flat(small_squad())
    recs[0]["answers"] = {"text": ["France"], "answer_start": []}
    with pytest.raises(SquadkitError) as exc:
        examples_from_records(recs)
    assert_one_line_error(exc, "record 0", "question q1", "'answers.text' has 1 item(s)")


def test_bad_json_lines_line_number(tmp_path):
    recs = nested_to_flat(small_squad())
    lines = [json.dumps(r) for r in recs]
    lines[2] = lines[2][:-5]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SquadkitError) as exc:
        load_squad(path)
    assert_one_line_error(exc, str(path), "line 3", "malformed JSON")


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "file is empty"),
        ("  \n", "file is empty"),
        ('{"version": "v2.0", "data": []}', "no questions found"),
        ('{"version": "v2.0", "data": [{"title": "x", "paragraphs": [{"context": "c", "qas": []}]}]}',
         "no questions found"),
        ("[]", "no questions found"),
        ('{"version": "v2.0", "data": [', "malformed JSON"),
        ('{"foo": 1}', "expected a SQuAD file"),
        ("42", "expected a SQuAD object"),
    ],
)
def test_empty_and_malformed_files(tmp_path, content, expected):
    path = tmp_path / "x.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SquadkitError) as exc:
        load_squad(path)
    assert_one_line_error(exc, str(path), expected)


def test_missing_file(tmp_path):
    with pytest.raises(SquadkitError, match="not found"):
        load_squad(tmp_path / "nope.json")


# ---------------------------------------------------------------------------------------------
# mismatched offsets: warning by default, error under strict, never dropped
# ---------------------------------------------------------------------------------------------


def _shift_offsets(obj, ids):
    for art in obj["data"]:
        for para in art["paragraphs"]:
            for qa in para["qas"]:
                if qa["id"] in ids:
                    qa["answers"][0]["answer_start"] += 1


def test_offset_mismatch_warns_and_keeps(tmp_path):
    path = _bad(tmp_path, lambda o: _shift_offsets(o, {"q1", "q4"}))
    with pytest.warns(SquadDataWarning) as record:
        ds = load_squad(path)
    assert len(record) == 1
    message = str(record[0].message)
    assert "2 answer(s) in 2 question(s)" in message and "q1" in message and "q4" in message
    assert str(path) in message
    assert len(ds) == 4  # nothing dropped
    kinds = [(p.kind, p.question_id) for p in ds.problems]
    assert kinds == [("offset_mismatch", "q1"), ("offset_mismatch", "q4")]
    assert "article 0 'Normans', paragraph 0" in ds.problems[0].message
    stats = dataset_stats(ds).to_dict()
    assert stats["problem_counts"] == {"offset_mismatch": 2}
    assert stats["problems"][0]["question_id"] == "q1"


def test_offset_mismatch_lists_first_ids_only(tmp_path):
    recs = [{"id": f"id{i}", "title": "T", "context": CONTEXT, "question": "Where?",
             "answers": {"text": ["France"], "answer_start": [3]}} for i in range(20)]
    with pytest.warns(SquadDataWarning, match=r"20 answer\(s\) in 20 question\(s\).*id0, id1, id2, id3, id4, \.\.\."):
        examples = examples_from_records(recs)
    assert len(examples) == 20


def test_offset_mismatch_strict_is_error(tmp_path):
    path = _bad(tmp_path, lambda o: _shift_offsets(o, {"q3"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SquadkitError) as exc:
            load_squad(path, strict=True)
    assert_one_line_error(exc, str(path), "1 answer(s) in 1 question(s)", "q3",
                          "article 0 'Normans', paragraph 1, question q3")


def test_answer_running_past_context_is_a_mismatch(tmp_path):
    def mutate(o):
        qa = o["data"][0]["paragraphs"][1]["qas"][0]
        qa["answers"][0]["answer_start"] = 15  # "Rollo was a Viking." has 19 chars; "a Viking" overruns
    with pytest.warns(SquadDataWarning, match="q3"):
        ds = load_squad(_bad(tmp_path, mutate))
    assert ds.problems[0].kind == "offset_mismatch"


def test_plausible_answer_mismatch_is_recorded(tmp_path):
    def mutate(o):
        o["data"][0]["paragraphs"][0]["qas"][1]["plausible_answers"][0]["answer_start"] = 0
    with pytest.warns(SquadDataWarning, match="q2"):
        ds = load_squad(_bad(tmp_path, mutate))
    assert ds.problems[0].question_id == "q2" and "plausible answer" in ds.problems[0].message


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def test_cli_stats_table(squad_train_path):
    result = runner.invoke(app, ["data", "stats", str(squad_train_path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for needle in ("squad-v2.0", "articles", "10", "694", "4,719", "4,371", "348", "context chars", "p95",
                   "problems: none"):
        assert needle in out, needle


def test_cli_stats_json(squad_dev_path):
    result = runner.invoke(app, ["data", "stats", str(squad_dev_path), "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert (d["articles"], d["paragraphs"], d["questions"], d["answerable"], d["unanswerable"]) == (2, 87, 626, 293, 333)
    assert d["format"] == "squad-v2.0" and d["context_tokens"] is None
    assert set(d["context_chars"]) == {"count", "min", "mean", "median", "p95", "max"}


def test_cli_stats_tokenizer(squad_dev_path, roberta_tokenizer_dir):
    result = runner.invoke(app, ["data", "stats", str(squad_dev_path), "--json", "--tokenizer",
                                 str(roberta_tokenizer_dir)])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["context_tokens"]["count"] == 87 and d["question_tokens"]["count"] == 626
    assert 0 < d["context_tokens"]["mean"] < d["context_chars"]["mean"]
    ref = dataset_stats(load_squad(squad_dev_path), tokenizer=str(roberta_tokenizer_dir)).to_dict()
    assert d["context_tokens"] == ref["context_tokens"]
    table = runner.invoke(app, ["data", "stats", str(squad_dev_path), "--tokenizer", str(roberta_tokenizer_dir)])
    assert table.exit_code == 0 and "context tokens" in table.stdout


def test_cli_mismatch_warns_on_stderr_and_strict_fails(tmp_path):
    path = _bad(tmp_path, lambda o: _shift_offsets(o, {"q1"}))
    result = runner.invoke(app, ["data", "stats", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: ") and "q1" in result.stderr
    assert "offset_mismatch" in result.stdout
    strict = runner.invoke(app, ["data", "stats", str(path), "--strict"])
    assert strict.exit_code == 2
    assert strict.stderr.count("\n") == 1 and strict.stderr.startswith("error: ") and "q1" in strict.stderr


@pytest.mark.parametrize("case", ["missing", "malformed", "bad-field", "empty", "bad-tokenizer"])
def test_cli_bad_input_exit_2_one_line(tmp_path, case):
    good = write_json(tmp_path / "good.json", small_squad())
    args = ["data", "stats"]
    if case == "missing":
        args.append(str(tmp_path / "nope.json"))
    elif case == "malformed":
        (tmp_path / "m.json").write_text("{not json", encoding="utf-8")
        args.append(str(tmp_path / "m.json"))
    elif case == "bad-field":
        args.append(str(_bad(tmp_path, lambda o: o["data"][0]["paragraphs"][0]["qas"][0].__setitem__("id", 5),
                             name="bf.json")))
    elif case == "empty":
        (tmp_path / "e.json").write_text("", encoding="utf-8")
        args.append(str(tmp_path / "e.json"))
    else:
        args += [str(good), "--tokenizer", str(tmp_path / "no-such-tokenizer")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output


def test_cli_subprocess_bad_file(tmp_path):
    path = _bad(tmp_path, lambda o: o["data"][1]["paragraphs"][0]["qas"][0].__setitem__("question", 7))
    proc = subprocess.run([sys.executable, "-m", "squadkit", "data", "stats", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "article 1 'Physics', paragraph 0, question q4: field 'question' must be a string, got int" in lines[0]
