"""The README's offline first-model recipe, run command for command at a tiny size.

The commands are read from the README itself (the fenced block after the recipe's marker), so a
flag the README names that squadkit does not take fails here. Only the sizes change: a tiny model
and generated task data stand in for all-MiniLM-L6-v2 and the SQuAD files.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from test_train_learns import make_task_model, write_task_data
from typer.testing import CliRunner

from squadkit.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- recipe: offline first model -->"


def recipe_commands() -> list[list[str]]:
    """The ``squadkit ...`` commands of the recipe's block, continuation lines joined."""
    text = README.read_text(encoding="utf-8")
    block = text[text.index(MARKER):].split("```bash", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("squadkit "):
            commands.append(shlex.split(line)[1:])
    return commands


def test_the_recipe_names_train_answer_and_export():
    names = [c[0] for c in recipe_commands()]
    assert names[0] == "train" and "answer" in names and "export" in names


@pytest.mark.slow
def test_the_offline_first_model_recipe_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = make_task_model(tmp_path / "base", seed=0)
    train = write_task_data(tmp_path / "train.json", 60, seed=1)
    dev = write_task_data(tmp_path / "dev.json", 20, seed=2)
    swap = {"$MINILM": str(model), "train-v2.0.json": str(train), "dev-v2.0.json": str(dev),
            "192": "96", "128": "32"}  # windows the tiny model takes (--max-seq-length, --doc-stride)
    runner = CliRunner()
    outputs = []
    for argv in recipe_commands():
        argv = [swap.get(a, a) for a in argv]
        if argv[0] == "train":
            argv += ["--quiet", "--save-steps", "0", "--features-cache-dir", str(tmp_path / "cache")]
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, (argv, result.output)
        outputs.append((argv[0], result.stdout))
    trained = json.loads(outputs[0][1])
    saved = json.loads((Path(trained["output_dir"]) / "squadkit.json").read_text())
    assert "best_f1_thresh" in saved["null_score_diff_threshold_from"]  # learned on the dev file
    answers = [json.loads(out) for name, out in outputs if name == "answer"]
    assert answers and all({"answer", "score", "start", "end"} <= set(a) for a in answers)
    # the README's remedy for an empty answer: the threshold its note names; then answer answers
    argv = [swap.get(a, a) for a in next(c for c in recipe_commands() if c[0] == "answer")]
    first = runner.invoke(app, argv)
    if json.loads(first.stdout)["answer"] != "":  # this run's model answers at its own threshold: make it abstain
        first = runner.invoke(app, argv + ["--null-score-diff-threshold", "-1000"])
    why = json.loads(first.stdout)["abstained"]
    line = next(x for x in first.stderr.splitlines() if x.startswith("note: no answer"))
    assert why["reason"] == "null_score_above_threshold" and why["best_span"]
    remedy = line.split("pass --null-score-diff-threshold ")[1].split()[0]
    again = runner.invoke(app, argv + ["--null-score-diff-threshold", remedy])
    assert again.exit_code == 0 and json.loads(again.stdout)["answer"] == why["best_span"]
