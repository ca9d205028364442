"""One vocabulary: every setting has one name across the CLI, Python and HTTP; short flags mean one
thing; the one resolver decides every consumer's settings (a table of cases for every mode)."""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from squadkit.model_folder import ModelSettings
from squadkit.cli import app
from squadkit.errors import SquadkitError
from squadkit.settings import ALIASES, BY_NAME, SETTINGS, given_options, resolve

runner = CliRunner()


def _commands() -> dict:
    """Every command of the CLI, sub-commands included, by its full name."""
    root = typer.main.get_command(app)
    out: dict = {}

    def walk(group, prefix: str) -> None:
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):  # a group (typer vendors its own click)
                walk(cmd, f"{prefix}{name} ")
            else:
                out[f"{prefix}{name}"] = cmd

    walk(root, "")
    return out


def _visible_options(cmd):
    """The options --help lists, each with only the spellings it shows (the rest are accepted, hidden)."""
    import copy

    out = []
    for p in cmd.params:
        if p.param_type_name == "option" and not p.hidden:
            shown = copy.copy(p)
            shown.opts, shown.secondary_opts = (list(x) for x in cmd.shown.get(p.name, (p.opts, p.secondary_opts)))
            out.append(shown)
    return out


def _hidden_spellings(cmd) -> dict[str, str]:
    """Every accepted spelling --help does not show, and the option it belongs to."""
    out = {}
    for p in cmd.params:
        shown = set().union(*cmd.shown.get(p.name, ((), ())))
        for opt in (*p.opts, *p.secondary_opts):
            if opt not in shown:
                out[opt] = p.name
    return out


def test_every_command_is_walked():
    assert {"answer", "predict", "calibrate", "train", "evaluate", "export", "serve", "index", "search", "ask",
            "data stats"} <= set(_commands())


def test_a_short_flag_means_one_thing_everywhere():
    meaning: dict[str, set[str]] = {}
    for name, cmd in _commands().items():
        for option in _visible_options(cmd):
            shorts = [o for o in option.opts + option.secondary_opts if not o.startswith("--")]
            longs = [o for o in option.opts if o.startswith("--")]
            for short in shorts:
                meaning.setdefault(short, set()).update(longs)
    assert {s: m for s, m in meaning.items() if len(m) != 1} == {}
    assert meaning["-o"] == {"--output"} and meaning["-m"] == {"--model"} and meaning["-k"] == {"--k"}


def test_no_setting_has_two_visible_spellings():
    """A flag shown in --help is never an alias of another, and a setting's flag is its one name."""
    for name, cmd in _commands().items():
        for option in _visible_options(cmd):
            hidden = _hidden_spellings(cmd)
            for opt in option.opts + option.secondary_opts:
                assert opt not in hidden, f"{name}: {opt} is an old spelling of --{hidden[opt]}"
            setting = BY_NAME.get(option.name)
            if setting is not None and name != "train":  # train keeps run_squad's flags (same names)
                assert setting.flag in option.opts, f"{name}: --{option.name} is not spelled {setting.flag}"
    # and across commands: one long flag per setting
    spellings: dict[str, set[str]] = {}
    for cmd in _commands().values():
        for option in _visible_options(cmd):
            if option.name in BY_NAME:
                spellings.setdefault(option.name, set()).update(o for o in option.opts if o.startswith("--"))
    assert {n: s for n, s in spellings.items() if len(s) != 1} == {}


@pytest.mark.parametrize("command", sorted(_commands()))
def test_dash_h_is_help(command):
    result = runner.invoke(app, [*command.split(), "-h"])
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize("argv, typed", [
    (["answer", "-q", "where?", "-c", "here", "--max-seq-len", "0"], "--max-seq-len"),
    (["answer", "-q", "where?", "-c", "here", "--max-seq-length", "0"], "--max-seq-length"),
    (["answer", "-q", "where?", "-c", "here", "--max_answer_len", "-1"], "--max_answer_len"),
    (["ask", "idx.sqlite", "where?", "-m", "m", "--threshold", "nan"], "--threshold"),
    (["ask", "idx.sqlite", "where?", "-m", "m", "--null-score-diff-threshold", "inf"], "--null-score-diff-threshold"),
    (["ask", "idx.sqlite", "where?", "-m", "m", "-k", "0"], "-k"),
])
def test_old_spellings_still_work_and_errors_name_the_flag_as_typed(argv, typed):
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and typed in line, line


@pytest.mark.parametrize("argv", [
    ["answer", "-q", "   ", "-c", "here", "-m", "/nonexistent/model"],
    ["ask", "/nonexistent/idx.sqlite", " ", "-m", "/nonexistent/model"],
])
def test_an_empty_question_is_refused_before_anything_loads(argv):
    result = runner.invoke(app, argv)
    assert result.exit_code == 2 and "question is empty" in result.output


def test_predict_refuses_an_output_that_is_a_file_before_any_work(tmp_path):
    out = tmp_path / "taken"
    out.write_text("mine")
    result = runner.invoke(app, ["predict", "-m", "/nonexistent/model", "-d", str(tmp_path / "none.json"),
                                 "--output-dir", str(out)])
    assert result.exit_code == 2 and "is not a folder" in result.output and "--output-dir" in result.output
    assert out.read_text() == "mine"


def test_python_keywords_accept_the_transformers_spellings_but_not_both():
    given = given_options({"max_seq_len": 64, "max_answer_len": 3, "topk": 2}, "pipeline")
    assert given.values == {"max_seq_length": 64, "max_answer_length": 3, "top_k": 2}
    assert given.typed["max_seq_length"] == "max_seq_len"
    with pytest.raises(SquadkitError, match="max_seq_len and max_seq_length are the same setting"):
        given_options({"max_seq_len": 64, "max_seq_length": 64}, "pipeline")
    with pytest.raises(SquadkitError, match="unknown keyword argument 'max_seq_lenght'"):
        given_options({"max_seq_lenght": 64}, "pipeline")
    assert set(ALIASES.values()) <= set(BY_NAME)


# ----------------------------------------------------------------------------------------------
# the resolver: one table, every consumer
# ----------------------------------------------------------------------------------------------


@dataclass
class FakeModel:
    settings: ModelSettings = field(default_factory=ModelSettings)
    window_limit: int | None = 512
    name_or_path: str = "fake"
    backend: str = "torch"
    device: str = "cpu"
    precision: str = "fp32"
    calibrator: Any = None
    ask_calibrator: Any = None


FOLDER = ModelSettings(max_seq_length=256, doc_stride=100, max_query_length=32, max_answer_length=20,
                       null_score_diff_threshold=-1.5, version_2_with_negative=True, do_lower_case=True)
FOLDER_ASK = ModelSettings(null_score_diff_threshold=-1.5, ask_threshold=2.5, ask_k=3)  # learned in ask mode

CASES = [
    # mode, folder, explicit, setting, value, source ("argument", "folder", "default")
    ("pipeline", None, {}, "max_seq_length", 384, "default"),
    ("squad", None, {}, "max_seq_length", 384, "default"),
    ("ask", None, {}, "max_seq_length", 384, "default"),
    ("pipeline", FOLDER, {}, "max_seq_length", 256, "folder"),
    ("squad", FOLDER, {}, "max_seq_length", 256, "folder"),
    ("ask", FOLDER, {}, "max_seq_length", 256, "folder"),
    ("pipeline", FOLDER, {"max_seq_len": 128}, "max_seq_length", 128, "argument"),
    ("squad", FOLDER, {"max_seq_length": 128}, "max_seq_length", 128, "argument"),
    # the pipeline's doc_stride is an overlap: the folder's step is not used, its default follows the window
    ("pipeline", FOLDER, {}, "doc_stride", 128, "default"),
    ("pipeline", FOLDER, {"max_seq_length": 100}, "doc_stride", 50, "default"),
    ("squad", FOLDER, {}, "doc_stride", 100, "folder"),
    ("ask", None, {}, "doc_stride", 128, "default"),
    ("pipeline", None, {}, "max_answer_length", 15, "default"),
    ("squad", None, {}, "max_answer_length", 30, "default"),
    ("ask", None, {}, "max_answer_length", 30, "default"),
    ("pipeline", FOLDER, {}, "max_answer_length", 20, "folder"),
    ("pipeline", FOLDER, {"max_question_len": 10}, "max_query_length", 10, "argument"),
    ("squad", FOLDER, {}, "max_query_length", 32, "folder"),
    ("pipeline", None, {}, "null_score_diff_threshold", 0.0, "default"),
    ("squad", FOLDER, {}, "null_score_diff_threshold", -1.5, "folder"),
    ("ask", FOLDER, {}, "null_score_diff_threshold", -1.5, "folder"),
    ("ask", FOLDER_ASK, {}, "null_score_diff_threshold", 2.5, "folder"),
    ("ask", FOLDER_ASK, {"threshold": 0.5}, "null_score_diff_threshold", 0.5, "argument"),
    ("squad", FOLDER_ASK, {}, "null_score_diff_threshold", -1.5, "folder"),
    ("pipeline", None, {}, "handle_impossible_answer", False, "default"),
    ("pipeline", FOLDER, {}, "handle_impossible_answer", True, "folder"),
    ("squad", FOLDER, {}, "do_lower_case", True, "folder"),
    ("ask", FOLDER, {}, "do_lower_case", True, "folder"),
    ("squad", None, {}, "version_2_with_negative", True, "default"),
    ("ask", None, {}, "k", 5, "default"),
    ("ask", None, {"k": 3}, "k", 3, "argument"),
    ("ask", FOLDER_ASK, {}, "k", 3, "folder"),
    ("ask", FOLDER_ASK, {"k": 10}, "k", 10, "argument"),
    ("pipeline", None, {}, "top_k", 1, "default"),
    ("pipeline", None, {}, "batch_size", 8, "default"),
    ("squad", None, {"batch_size": 3}, "batch_size", 3, "argument"),
]


@pytest.mark.parametrize("mode, folder, explicit, name, value, source", CASES)
def test_the_resolver(mode, folder, explicit, name, value, source):
    in_force = resolve(FakeModel(folder or ModelSettings()), mode, explicit)
    assert in_force[name] == value
    assert in_force.sources[name].startswith({"folder": "model folder", "argument": "argument",
                                              "default": "default"}[source])


def test_a_short_model_gets_a_shorter_window_in_every_mode_and_a_long_one_is_refused_in_every_mode():
    short = FakeModel(window_limit=128)
    for mode in ("pipeline", "squad", "ask"):
        assert resolve(short, mode)["max_seq_length"] == 128
        with pytest.raises(SquadkitError, match=r"max_seq_len=200 is longer than model fake can take \(128"):
            resolve(short, mode, {"max_seq_len": 200})


@pytest.mark.parametrize("mode, explicit, message", [
    ("pipeline", {"top_k": 0}, "top_k must be a positive integer"),
    ("squad", {"n_best_size": True}, "n_best_size must be a positive integer"),
    ("ask", {"k": -1}, "k must be a positive integer"),
    ("ask", {"k": 51}, "k must be at most 50 passages"),
    ("pipeline", {"null_score_diff_threshold": float("nan")}, "finite number"),
    ("pipeline", {"min_confidence": 1.5}, "between 0 and 1"),
    ("pipeline", {"max_seq_length": 64, "doc_stride": 64}, r"doc_stride \(64\) must be smaller than max_seq_length"),
    ("pipeline", {"min_confidence": 0.5}, "needs a calibrated model"),
    ("squad", {"handle_impossible_answer": True}, "unknown keyword argument 'handle_impossible_answer'"),
])
def test_the_resolver_refuses_in_one_line(mode, explicit, message):
    with pytest.raises(SquadkitError, match=message):
        resolve(FakeModel(), mode, explicit)


def test_every_setting_is_documented_in_the_readme_table():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| setting | flag |"):]
    for setting in SETTINGS:
        assert f"`{setting.name}`" in table, setting.name
        assert setting.check is None or f"`{setting.flag}" in table, setting.name  # derived ones have no flag


def test_every_consumer_takes_its_settings_from_the_one_resolver(tiny_bert, tmp_path):
    """pipeline/answer/serve, predict/calibrate and ask report exactly what resolve() gives in their mode."""
    import json as _json
    import shutil

    from squadkit import pipeline
    from squadkit.predict import decode_settings_for
    from squadkit.retrieval import DocumentQA, build_index

    folder = tmp_path / "model"
    shutil.copytree(tiny_bert, folder)
    (folder / "squadkit.json").write_text(_json.dumps({
        "format": "squadkit-model-settings", "schema_version": 1, "max_seq_length": 96, "doc_stride": 40,
        "max_answer_length": 7, "null_score_diff_threshold": -2.0, "version_2_with_negative": True}))
    qa = pipeline("question-answering", model=str(folder))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("kabo likes green tea .", encoding="utf-8")
    build_index([tmp_path / "docs"], tmp_path / "i.sqlite")
    dqa = DocumentQA(tmp_path / "i.sqlite", qa=qa, max_answer_len=4)
    try:
        consumers = {
            "pipeline": (qa.settings_in_force(top_k=2), resolve(qa.model, "pipeline", {"top_k": 2})),
            "squad": (decode_settings_for(qa.model, n_best_size=5)[0], resolve(qa.model, "squad", {"n_best_size": 5})),
            "ask": (dqa.settings, resolve(qa.model, "ask", {"max_answer_len": 4})),
        }
    finally:
        dqa.close()
    for mode, (reported, resolved) in consumers.items():
        assert reported.as_dict() == resolved.as_dict(), mode
    assert consumers["pipeline"][0]["max_seq_length"] == 96 and consumers["pipeline"][0]["doc_stride"] == 48
    assert consumers["squad"][0]["doc_stride"] == 40 and consumers["squad"][0]["max_answer_length"] == 7
    assert consumers["ask"][0]["max_answer_length"] == 4 and dqa.settings.null_score_diff_threshold == -2.0
