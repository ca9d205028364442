"""The README is true: every flag, keyword, HTTP field and status it names exists and behaves as written.

Read from README.md itself: the settings table, the HTTP status table, the request fields the serve
section lists, and every ``squadkit SUBCOMMAND --flag`` in its bash blocks and inline code.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path


import pytest
import typer

from squadkit.cli import app
from squadkit.settings import ALIASES, BY_NAME, names_for

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
MODE_COMMANDS = {"pipeline": ("answer",), "squad": ("predict",), "ask": ("ask",)}


def _root():
    return typer.main.get_command(app)


def _command(path: list[str]):
    """The click command at ``path`` (``["data", "stats"]``); None for a name that is not one."""
    command = _root()
    for name in path:
        if name not in getattr(command, "commands", {}):
            return None
        command = command.commands[name]
    return command


def _flags(command) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


def _accepts(command, flag: str) -> bool:
    """Whether ``command`` takes ``flag``: shown, or a hidden spelling it also declares (run_squad's
    snake_case, older names: cli.options)."""
    return flag in _flags(command) | {"--help", "-h"}


def _table(header: str) -> list[list[str]]:
    """The rows of the table whose header line starts with ``header``, cells stripped."""
    lines = README[README.index(header):].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _codes(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def _named_commands() -> list[tuple[list[str], str]]:
    """Every ``squadkit ...`` command line of the bash blocks, and every inline code span that starts
    with a subcommand and names a flag (``answer --explain``): (argv, where)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("squadkit "):
                found.append((shlex.split(line, posix=True)[1:], line))
    commands = set(_root().commands)
    for span in re.findall(r"`([^`\n]+)`", README):
        words = span.split()
        if words and words[0] == "squadkit":
            words = words[1:]
        if len(words) >= 2 and words[0] in commands and any(w.startswith("-") for w in words):
            found.append((words, span))
    return found


def test_every_flag_the_readme_gives_a_subcommand_exists():
    missing = []
    for argv, where in _named_commands():
        path = [argv[0]]
        if argv[1:] and not argv[1].startswith("-") and _command(argv[:2]) is not None:
            path = argv[:2]
        command = _command(path)
        assert command is not None, f"README names an unknown subcommand: {where}"
        for word in argv[len(path):]:
            flag = word.split("=")[0]
            if re.fullmatch(r"--?[A-Za-z][\w-]*", flag) and not _accepts(command, flag):
                missing.append(f"{' '.join(path)} {flag}  (in: {where})")
    assert not missing, "\n".join(missing)
    assert len(_named_commands()) > 20  # the README's blocks were read


def test_the_settings_table_flags_are_every_mode_command_s_and_its_keywords_are_accepted():
    rows = _table("| setting | flag |")
    assert len(rows) >= 15
    wrong = []
    for name, flag, keyword, hidden, modes, *_ in rows:
        name = _codes(name)[0]
        assert name in BY_NAME
        if BY_NAME[name].check is None:  # derived (ask's calibrator): reported, never given
            continue
        assert _codes(keyword) == [name]
        for alias in _codes(hidden):
            assert ALIASES.get(alias) == name, alias
        for mode in [m.strip() for m in modes.split(",")]:
            assert name in names_for(mode), (name, mode)  # the Python keyword / request field of that mode
            for command in MODE_COMMANDS[mode]:
                for f in _codes(flag):
                    if not _accepts(_command([command]), f):
                        wrong.append(f"{command} {f} (setting {name}, mode {mode})")
    assert not wrong, "\n".join(wrong)


def test_index_document_is_read_as_the_readme_says(docs_index):
    from squadkit.retrieval import Index

    with Index(docs_index) as index:
        record = index.document(1)
        assert record["text"] == record.text and record["id"] == 1 and set(record.keys()) >= {"name", "title", "pages"}
        assert dict(record) == record.to_dict()


@pytest.fixture(scope="module")
def app_and_client(tiny_bert, docs_index):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from squadkit import QuestionAnswerer
    from squadkit.serve import ServeSettings, create_app

    qa = QuestionAnswerer(str(tiny_bert), device="cpu")
    fastapi_app = create_app(qa, ServeSettings(access_log=False, log_level="warning"), index=docs_index)
    with TestClient(fastapi_app) as client:
        yield fastapi_app, client


def test_every_http_status_in_the_table_is_in_the_schema(app_and_client):
    fastapi_app, _ = app_and_client
    statuses = {int(status) for path in fastapi_app.openapi()["paths"].values() for op in path.values()
                for status in op.get("responses", {}) if status.isdigit()}
    table = [int(row[0]) for row in _table("| status | when |")]
    assert table and set(table) <= statuses, set(table) - statuses


def test_a_body_that_is_not_json_text_gets_the_table_s_status(app_and_client):
    _, client = app_and_client
    row = next(r for r in _table("| status | when |") if "JSON text" in r[1])
    for body in (b'{"question": "\xff", "context": "a"}', b'{"question": ', b"not json"):
        response = client.post("/v1/answer", content=body, headers={"content-type": "application/json"})
        assert response.status_code == int(row[0]), (body, response.text)


def test_the_request_fields_the_serve_section_names_are_fields(app_and_client):
    fastapi_app, _ = app_and_client
    schemas = fastapi_app.openapi()["components"]["schemas"]

    def fields_of(path: str) -> set[str]:
        ref = fastapi_app.openapi()["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        return set(schemas[ref["$ref"].rsplit("/", 1)[1]]["properties"])

    answer_text = README[README.index("A request may set what"):README.index("one it leaves out")]
    named = {c for c in _codes(answer_text) if re.fullmatch(r"[a-z_]+", c) and c != "squadkit"}
    calibrated_only = {"min_confidence"}  # "where the model is calibrated": the tiny model is not
    assert named - calibrated_only - {"max_answer_len"} <= fields_of("/v1/answer")
    ask_text = README[README.index("With `--index`, `POST /v1/ask`"):].split(")", 1)[0]
    assert set(_codes(ask_text)) - {"--index", "POST /v1/ask"} - calibrated_only <= fields_of("/v1/ask")
