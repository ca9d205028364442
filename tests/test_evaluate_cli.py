"""``squadkit evaluate``: the official script's interface, JSON on stdout or compact to -o, images,
and one-line errors (exit code 2, no traceback) for every kind of bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from squadkit.cli import app
from squadkit.metrics import evaluate, load_na_probs, load_predictions

V2_KEYS = ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
           "NoAns_exact", "NoAns_f1", "NoAns_total"]
BEST_KEYS = ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]
PR_KEYS = ["pr_exact_ap", "pr_f1_ap", "pr_oracle_ap"]
IMAGES = ["na_prob_hist_hasAns.png", "na_prob_hist_noAns.png", "pr_exact.png", "pr_f1.png", "pr_oracle.png"]


def run(*args: str):
    result = CliRunner().invoke(app, ["evaluate", *map(str, args)])
    return result


@pytest.fixture(scope="module")
def files(squad_dev_path, tmp_path_factory):
    """Predictions (some wrong, deterministic) and na-probs for the dev slice."""
    raw = json.loads(squad_dev_path.read_text(encoding="utf-8"))
    qas = [qa for a in raw["data"] for p in a["paragraphs"] for qa in p["qas"]]
    preds, na = {}, {}
    for i, qa in enumerate(qas):
        gold = qa["answers"][0]["text"] if qa["answers"] else ""
        preds[qa["id"]] = gold if i % 3 else (gold + " and more" if gold else "Normandy")
        na[qa["id"]] = round((i * 37 % 101) / 100, 2)
    d = tmp_path_factory.mktemp("eval")
    (d / "preds.json").write_text(json.dumps(preds), encoding="utf-8")
    (d / "na.json").write_text(json.dumps(na), encoding="utf-8")
    return {"data": squad_dev_path, "preds": d / "preds.json", "na": d / "na.json", "dir": d}


def test_stdout_json(files):
    result = run(files["data"], files["preds"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert list(out) == V2_KEYS
    assert out["total"] == 626 and out["HasAns_total"] == 293 and out["NoAns_total"] == 333
    assert result.stdout.startswith("{\n  \"exact\": ")  # indent 2, as the official script prints
    assert out == evaluate(__import__("squadkit.data").data.load_squad(files["data"]),
                           load_predictions(files["preds"]), report_missing=None)


def test_na_prob_threshold_and_best_keys(files):
    result = run(files["data"], files["preds"], "-n", files["na"], "-t", "0.5")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert list(out) == V2_KEYS + BEST_KEYS
    from squadkit.data import load_squad

    want = evaluate(load_squad(files["data"]), load_predictions(files["preds"]), load_na_probs(files["na"]),
                    na_prob_thresh=0.5, report_missing=None)
    assert out == want
    # a different threshold changes the thresholded numbers but not best_* (they use raw scores)
    other = json.loads(run(files["data"], files["preds"], "-n", files["na"], "-t", "0.0").stdout)
    assert other["exact"] != out["exact"]
    assert all(other[k] == out[k] for k in BEST_KEYS)


def test_null_odds_get_a_note_and_a_probability_reading(files, tmp_path):
    """Null odds (logit differences) given to -n: the official numbers as given, plus one line saying
    that -t thresholds them as they are; --na-prob-logits (a sigmoid) keeps the headline of no -n."""
    import math

    na = json.loads(files["na"].read_text())
    odds = {q: (v - 0.5) * 12.0 for q, v in na.items()}  # like null_odds.json: about -6 to +6
    (tmp_path / "odds.json").write_text(json.dumps(odds))
    plain = json.loads(run(files["data"], files["preds"]).stdout)
    result = run(files["data"], files["preds"], "-n", tmp_path / "odds.json")
    assert result.exit_code == 0, result.stderr
    as_given = json.loads(result.stdout)
    dataset = __import__("squadkit.data").data.load_squad(files["data"])
    assert as_given == evaluate(dataset, load_predictions(files["preds"]), odds, 1.0, report_missing=None)
    assert as_given["exact"] != plain["exact"]  # thresholded at 1.0 as given: the headline moves
    notes = [line for line in result.stderr.splitlines() if "outside 0..1" in line]
    above = sum(v > 1.0 for v in odds.values())
    assert len(notes) == 1 and "-t 1 " in notes[0] and f"{above} of 626" in notes[0]
    assert "null_probs.json" in notes[0] and "--na-prob-logits" in notes[0]
    result = run(files["data"], files["preds"], "-n", tmp_path / "odds.json", "--na-prob-logits")
    assert result.exit_code == 0 and "outside 0..1" not in result.stderr
    probs = json.loads(result.stdout)
    assert {k: probs[k] for k in V2_KEYS} == plain  # probabilities never reach -t 1.0
    for key in ("best_exact", "best_f1"):
        assert probs[key] == as_given[key]  # the sigmoid keeps the order
        thresh = as_given[key + "_thresh"]
        assert probs[key + "_thresh"] == pytest.approx(1 / (1 + math.exp(-thresh)))
    assert "outside 0..1" not in run(files["data"], files["preds"], "-n", files["na"]).stderr  # probabilities


def test_out_file_is_compact(files, tmp_path):
    target = tmp_path / "sub" / "eval.json"
    result = run(files["data"], files["preds"], "-n", files["na"], "-o", target)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    text = target.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text)) + "\n"  # json.dumps(out), no indentation
    assert list(json.loads(text)) == V2_KEYS + BEST_KEYS
    assert json.loads(text) == json.loads(run(files["data"], files["preds"], "-n", files["na"]).stdout)


def test_images(files, tmp_path):
    img = tmp_path / "img"
    result = run(files["data"], files["preds"], "-n", files["na"], "-p", img)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert list(out) == V2_KEYS + BEST_KEYS + PR_KEYS
    assert sorted(p.name for p in img.iterdir()) == IMAGES
    for name in IMAGES:
        assert (img / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(0.0 < out[k] <= 100.0 for k in PR_KEYS)


def test_images_need_na_probs(files, tmp_path):
    img = tmp_path / "img"
    result = run(files["data"], files["preds"], "-p", img)
    assert result.exit_code == 0
    assert list(json.loads(result.stdout)) == V2_KEYS
    assert "--na-prob-file" in result.stderr
    assert not img.exists()


def test_best_always(files):
    out = json.loads(run(files["data"], files["preds"], "--best-always").stdout)
    assert list(out) == V2_KEYS + BEST_KEYS
    assert out["best_exact_thresh"] == 0.0 and out["best_f1_thresh"] == 0.0
    assert out["best_exact"] >= out["exact"]


def test_missing_predictions_go_to_stderr(files, tmp_path):
    preds = json.loads(files["preds"].read_text(encoding="utf-8"))
    dropped = list(preds)[:3]
    for qid in dropped:
        del preds[qid]
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(preds), encoding="utf-8")
    result = run(files["data"], path, "-v")
    assert result.exit_code == 0
    out = json.loads(result.stdout)  # stdout is still one JSON document
    assert out["total"] == 623
    for qid in dropped:
        assert f"Missing prediction for {qid}" in result.stderr
    assert "3 without a prediction" in result.stderr


def test_v1_file(files, tmp_path):
    raw = json.loads(files["data"].read_text(encoding="utf-8"))
    for article in raw["data"]:
        for para in article["paragraphs"]:
            para["qas"] = [{"id": qa["id"], "question": qa["question"], "answers": qa["answers"]}
                           for qa in para["qas"] if qa["answers"]]
    raw["version"] = "1.1"
    path = tmp_path / "v1.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    out = json.loads(run(path, files["preds"]).stdout)
    assert list(out) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "v1.1"]
    assert set(out["v1.1"]) == {"exact_match", "f1"}
    assert out["v1.1"]["exact_match"] == out["exact"]  # no empty-normalized golds in the slice


# ---------------------------------------------------------------------------------------------
# bad input: exit 2, one line naming the file, no traceback
# ---------------------------------------------------------------------------------------------


def _bad(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "which, text",
    [
        ("data", '{"version": "v2.0", "data": [{"title": "x", "paragraphs": ['),  # truncated
        ("data", "not json"),
        ("preds", '{"a": "x", '),
        ("preds", '["x", "y"]'),
        ("preds", '{"56ddde6b9a695914005b9628": 3}'),
        ("preds", '{"some-other-id": "France"}'),  # no question has a prediction
        ("na", '{"56ddde6b9a695914005b9628": "high"}'),
        ("na", '{"56ddde6b9a695914005b9628": NaN}'),
        ("na", '{"56ddde6b9a695914005b9628": 0.5}'),  # misses the other predicted questions
        ("na", ""),
    ],
)
def test_bad_input(files, tmp_path, which, text):
    args = {"data": files["data"], "preds": files["preds"], "na": files["na"]}
    args[which] = _bad(tmp_path, f"bad-{which}.json", text)
    result = run(args["data"], args["preds"], "-n", args["na"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(args[which]) in lines[0]
    assert "Traceback" not in result.output and result.stdout == ""


@pytest.mark.parametrize("which", ["data", "preds", "na"])
def test_missing_file(files, tmp_path, which):
    args = {"data": files["data"], "preds": files["preds"], "na": files["na"]}
    args[which] = tmp_path / "does-not-exist.json"
    result = run(args["data"], args["preds"], "-n", args["na"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(args[which]) in lines[0] and "not found" in lines[0]
    assert "Traceback" not in result.output


def test_unwritable_out_file(files, tmp_path):
    result = run(files["data"], files["preds"], "-o", tmp_path)  # a folder
    assert result.exit_code == 2
    assert str(tmp_path) in result.stderr and "Traceback" not in result.output


# ---------------------------------------------------------------------------------------------
# --compare: is PREDS' gap over other predictions more than noise? (own tiny data: no shared/ needed)
# ---------------------------------------------------------------------------------------------


def _tiny_squad(tmp_path: Path) -> Path:
    qas = [{"id": "q1", "question": "Who?", "answers": [{"text": "cat", "answer_start": 4}], "is_impossible": False},
           {"id": "q2", "question": "What?", "answers": [{"text": "dog", "answer_start": 16}], "is_impossible": False},
           {"id": "q3", "question": "When?", "answers": [], "is_impossible": True},
           {"id": "q4", "question": "Which?", "answers": [{"text": "red fox", "answer_start": 26}],
            "is_impossible": False}]
    data = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": "The cat and the dog saw a red fox.", "qas": qas}]}]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_compare_adds_paired_differences(tmp_path):
    data = _tiny_squad(tmp_path)
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps({"q1": "cat", "q2": "dog", "q3": "", "q4": "fox"}), encoding="utf-8")
    b.write_text(json.dumps({"q1": "mouse", "q2": "dog", "q3": "", "q4": "fox"}), encoding="utf-8")
    result = run(data, a, "--compare", b)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert list(out)[:3] == ["exact", "f1", "total"]  # the official keys first, unchanged
    compared = out["compared_with"]
    assert compared["file"] == str(b)
    # a is right on q1 where b is wrong, the same elsewhere: +25 points, interval [0, 75] (see test_metrics)
    assert (compared["f1"]["difference"], compared["f1"]["low"], compared["f1"]["high"]) == (25.0, 0.0, 75.0)
    assert compared["exact"]["difference"] == 25.0 and compared["f1"]["questions"] == 4
    back = json.loads(run(data, b, "--compare", a).stdout)["compared_with"]
    assert back["f1"]["difference"] == -25.0


def test_compare_refuses_a_file_missing_a_question(tmp_path):
    data = _tiny_squad(tmp_path)
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps({"q1": "cat", "q2": "dog", "q3": "", "q4": "fox"}), encoding="utf-8")
    b.write_text(json.dumps({"q1": "cat", "q2": "dog", "q3": ""}), encoding="utf-8")
    result = run(data, a, "--compare", b)
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(b) in lines[0] and "'q4'" in lines[0], result.stderr
    missing = run(data, a, "--compare", tmp_path / "nope.json")
    assert missing.exit_code == 2 and "nope.json" in missing.stderr and "Traceback" not in missing.output


# ---------------------------------------------------------------------------------------------
# a real process: JSON on stdout, and no torch / transformers import on the way
# ---------------------------------------------------------------------------------------------


def _env():
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_subprocess(files):
    proc = subprocess.run([sys.executable, "-m", "squadkit", "evaluate", str(files["data"]), str(files["preds"]),
                           "-n", str(files["na"])], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads(proc.stdout)) == V2_KEYS + BEST_KEYS


def test_metrics_import_is_light():
    code = ("import sys, squadkit.metrics, squadkit.cli; "
            "heavy = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
