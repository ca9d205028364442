"""Calibrated confidence: the fit, the folder contract, every consumer, and the abstain rule.

A tiny model is trained here (a few seconds) with ``train --do_eval``, so it is partly right: its
top answers are right on some dev questions and wrong on others, which is what a calibrator needs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_train_learns import make_task_model, write_task_data
from typer.testing import CliRunner

from squadkit import pipeline
from squadkit.calibration import (
    FEATURES,
    MIN_QUESTIONS,
    Calibrator,
    apply_min_confidence,
    check_min_confidence,
    fit_calibrator,
)
from squadkit.model_folder import SETTINGS_FILE, read_settings, settings_from_json
from squadkit.metrics import calibration_report
from squadkit.cli import app
from squadkit.errors import SquadkitError

WINDOW = 64


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """`squadkit train --do_eval` on the reading task: 40 steps, 120 dev questions (about half unanswerable)."""
    import torch

    from squadkit.train import TrainConfig, train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("calib")
    base = make_task_model(root / "base", hidden=32)
    data = write_task_data(root / "train.json", 300, seed=1)
    dev = write_task_data(root / "dev.json", 60, seed=2)
    train(TrainConfig(model_name_or_path=str(base), output_dir=str(root / "out"), train_file=str(data),
                      predict_file=str(dev), do_eval=True, version_2_with_negative=True, max_seq_length=WINDOW,
                      doc_stride=32, per_gpu_train_batch_size=32, learning_rate=1e-3, max_steps=40, save_steps=0,
                      quiet=True))
    torch.set_num_threads(before)
    return root / "out"


@pytest.fixture(scope="module")
def dev_file(trained) -> Path:
    return trained.parent / "dev.json"


@pytest.fixture
def folder(trained, tmp_path) -> Path:
    """A copy of the trained folder that a test may change."""
    out = tmp_path / "model"
    shutil.copytree(trained, out)
    return out


def _questions(dev_file: Path) -> list[dict]:
    data = json.loads(dev_file.read_text())
    return [{"id": q["id"], "question": q["question"], "context": p["context"]}
            for a in data["data"] for p in a["paragraphs"] for q in p["qas"]]


# ----------------------------------------------------------------------------------------------
# the fit itself (numpy only)
# ----------------------------------------------------------------------------------------------


def _synthetic(n: int, seed: int, slope: float = 2.0):
    rng = np.random.default_rng(seed)
    x = np.stack([rng.normal(0, 2, n), rng.normal(-2, 1, n), np.log(rng.integers(1, 8, n))], axis=1)
    p = 1 / (1 + np.exp(-slope * x[:, 0]))
    right = (rng.random(n) < p).astype(float)
    unanswerable = ((rng.random(n) < 1 - p) & (right == 0)).astype(float)
    return x, right, unanswerable, p


def test_the_fit_recovers_probabilities_and_is_calibrated_on_held_out_data():
    x, right, unanswerable, _ = _synthetic(4000, 0)
    cal = fit_calibrator(x, right, unanswerable)
    xt, rt, _, pt = _synthetic(4000, 1)
    conf = cal.answer_confidence(xt)
    assert np.abs(conf - pt).mean() < 0.03  # close to the true probability of being right
    assert calibration_report(conf, rt)["ece"] < 0.03
    raw = 1 / (1 + np.exp(-8 * xt[:, 0]))  # an over-confident score: badly calibrated
    assert calibration_report(raw, rt)["ece"] > 0.05


def test_confidence_is_monotone_in_the_margin_even_when_the_data_say_otherwise():
    x, right, unanswerable, _ = _synthetic(600, 2, slope=-1.0)  # right less often at a larger margin
    cal = fit_calibrator(x, right, unanswerable)
    assert cal.answer_weights[1] == 0.0  # the wrong-signed coefficient is held at 0
    x, right, unanswerable, _ = _synthetic(600, 3)
    cal = fit_calibrator(x, right, unanswerable)
    grid = np.repeat(x[:1], 50, axis=0)
    grid[:, 0] = np.linspace(-10, 10, 50)
    assert np.all(np.diff(cal.answer_confidence(grid)) > 0)  # more margin, more confidence
    assert np.all(np.diff(cal.abstain_confidence(grid)) <= 0)  # more margin, less "no answer"


def test_too_few_questions_or_outcomes_are_refused_in_one_line():
    x, right, unanswerable, _ = _synthetic(MIN_QUESTIONS - 1, 4)
    with pytest.raises(SquadkitError, match=f"too few questions.*{MIN_QUESTIONS - 1}.*at least {MIN_QUESTIONS}"):
        fit_calibrator(x, right, unanswerable)
    x, _, unanswerable, _ = _synthetic(200, 5)
    with pytest.raises(SquadkitError, match="right on 0 of 200"):
        fit_calibrator(x, np.zeros(200), unanswerable)


def test_the_calibrator_round_trips_through_json_and_bad_ones_are_refused():
    x, right, unanswerable, _ = _synthetic(300, 6)
    cal = fit_calibrator(x, right, unanswerable, weights_sha256="ab" * 32)
    again = Calibrator.from_json(json.loads(json.dumps(cal.to_json())))
    assert np.array_equal(again.answer_confidence(x), cal.answer_confidence(x))
    assert np.array_equal(again.abstain_confidence(x), cal.abstain_confidence(x))
    settings = settings_from_json({"schema_version": 1, "calibration": cal.to_json()}, "squadkit.json")
    assert settings.calibration["weights_sha256"] == "ab" * 32
    bad = dict(cal.to_json(), scale=[1.0, 0.0, 1.0])
    with pytest.raises(SquadkitError, match="squadkit.json: field 'calibration' 'scale' must be a list of 3 finite positive"):
        settings_from_json({"schema_version": 1, "calibration": bad}, "squadkit.json")
    with pytest.raises(SquadkitError, match="uses features"):
        settings_from_json({"schema_version": 1, "calibration": dict(cal.to_json(), features=["x"])}, "squadkit.json")
    assert list(FEATURES) == cal.to_json()["features"]


def test_min_confidence_range_and_the_abstain_rule():
    for bad in (-0.1, 1.5, True, "0.5", float("nan")):
        with pytest.raises(SquadkitError, match="min_confidence must be a number between 0 and 1"):
            check_min_confidence(bad)
    with pytest.raises(SquadkitError, match="needs a calibrated model"):
        check_min_confidence(0.5, calibrated=False)
    assert check_min_confidence(0, calibrated=True) == 0.0
    empty = {"answer": "", "confidence": 0.4}
    a, b, c = ({"answer": t, "confidence": v} for t, v in (("a", 0.9), ("b", 0.6), ("c", 0.8)))
    assert apply_min_confidence([a, b, c], empty, None) == [a, b, c]
    assert apply_min_confidence([a, b, c], empty, 0.7) == [a, empty]  # cut at b; c is not promoted
    assert apply_min_confidence([b, a], empty, 0.7) == [empty]
    assert apply_min_confidence([a, empty, b], empty, 0.7) == [a, empty]  # "" appears once
    assert apply_min_confidence([a, b], empty, 0.6) == [a, b]  # "at least" m is kept


# ----------------------------------------------------------------------------------------------
# train, calibrate and the folder contract
# ----------------------------------------------------------------------------------------------


def test_train_do_eval_saves_a_calibrator_of_its_weights_and_the_card_shows_it(trained):
    saved = read_settings(trained).calibration
    assert saved is not None and saved["fitted_on"]["questions"] == 120 and saved["fitted_on"]["data"] == "dev.json"
    qa = pipeline(model=str(trained))
    assert saved["weights_sha256"] == qa.model.head_sha256
    assert 5 <= saved["fitted_on"]["right_top_answers"] <= 115  # a partly right model: both outcomes to fit on
    card = (trained / "README.md").read_text()
    assert "## Calibrated confidence" in card and f"{saved['fitted_on']['cross_fit']['ece']:.3f}" in card


def test_calibrate_command_saves_the_calibrator_and_reports_cross_fitted_ece(folder, dev_file):
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    del settings["calibration"]
    (folder / SETTINGS_FILE).write_text(json.dumps(settings))
    res = CliRunner().invoke(app, ["calibrate", "-m", str(folder), "-d", str(dev_file)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)  # a summary, not the reliability tables (-v prints those)
    assert len(res.stdout.splitlines()) < 40 and "reliability" not in res.stdout
    assert summary["questions"] == 120 and 0 <= summary["ece_cross_fit"] <= 1 and 0 <= summary["ece_in_sample"] <= 1
    assert set(summary["at_confidence_cross_fit"]) == {"0.5", "0.7", "0.9"}
    res = CliRunner().invoke(app, ["calibrate", "-m", str(folder), "-d", str(dev_file), "-v"])
    report = json.loads(res.stdout)
    assert report["questions"] == 120 and set(report["cross_fit"]) == {"folds", "before", "after"}
    assert round(report["cross_fit"]["after"]["ece"], 4) == summary["ece_cross_fit"]
    edges = [b for row in report["in_sample"]["reliability"] for b in row["bin"]]
    assert all(len(repr(b)) <= 4 for b in edges), edges  # 0.3, not 0.30000000000000004
    after = read_settings(folder)
    assert after.calibration["weights_sha256"] == pipeline(model=str(folder)).model.head_sha256
    assert after.max_seq_length == WINDOW and after.null_score_diff_threshold == settings["null_score_diff_threshold"]


def test_scoring_on_the_calibrators_own_data_says_it_is_in_sample(folder, dev_file, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["predict", "-m", str(folder), "-d", str(dev_file), "-o", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert "in-sample (optimistic)" in res.stderr
    results = json.loads((tmp_path / "p" / "eval_results.json").read_text())
    assert results["confidence"]["in_sample"] is True
    res = runner.invoke(app, ["evaluate", str(dev_file), str(tmp_path / "p" / "predictions.json")])
    assert res.exit_code == 0 and "in-sample (optimistic)" in res.stderr
    other = tmp_path / "other-dev.json"
    other.write_text(dev_file.read_text())
    res = runner.invoke(app, ["predict", "-m", str(folder), "-d", str(other), "-o", str(tmp_path / "q")])
    assert res.exit_code == 0 and "in-sample" not in res.stderr
    assert "in_sample" not in json.loads((tmp_path / "q" / "eval_results.json").read_text())["confidence"]


def test_calibrate_refuses_data_without_answers_and_too_few_questions(folder, dev_file, tmp_path):
    data = json.loads(dev_file.read_text())  # a test-set file: the answers are not given
    for p in data["data"][0]["paragraphs"]:
        for q in p["qas"]:
            q["answers"] = []
            q.pop("is_impossible")
    (tmp_path / "noans.json").write_text(json.dumps(data))
    res = CliRunner().invoke(app, ["calibrate", "-m", str(folder), "-d", str(tmp_path / "noans.json")])
    assert res.exit_code == 2 and "has no gold answers" in res.output and len(res.output.strip().splitlines()) == 1
    few = write_task_data(tmp_path / "few.json", 5, seed=3)
    res = CliRunner().invoke(app, ["calibrate", "-m", str(folder), "-d", str(few)])
    assert res.exit_code == 2 and f"at least {MIN_QUESTIONS} are needed" in res.output, res.output


def _perturb_head(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    weights = load_file(path)
    key = next(k for k in weights if k.endswith("qa_outputs.bias"))
    weights[key] = weights[key] + 0.5
    save_file(weights, path, metadata={"format": "pt"})


def test_a_calibrator_fitted_on_other_weights_is_refused(folder, dev_file, tmp_path):
    _perturb_head(folder)
    with pytest.raises(SquadkitError, match="fitted on other weights.*squadkit calibrate"):
        pipeline(model=str(folder))
    res = CliRunner().invoke(app, ["predict", "-m", str(folder), "-d", str(dev_file), "-o", str(tmp_path / "p")])
    assert res.exit_code == 2 and "fitted on other weights" in res.output and len(res.output.strip().splitlines()) == 1
    pytest.importorskip("onnxruntime")
    from squadkit.export import export_model

    with pytest.raises(SquadkitError, match="fitted on other weights"):
        export_model(str(folder), tmp_path / "onnx")
    # refitting is the cure
    assert CliRunner().invoke(app, ["calibrate", "-m", str(folder), "-d", str(dev_file)]).exit_code == 0
    assert "confidence" in pipeline(model=str(folder))(question="what does kabo like ?", context="kabo likes tea .")


# ----------------------------------------------------------------------------------------------
# every consumer: pipeline, answer, predict, serve, export; and min_confidence
# ----------------------------------------------------------------------------------------------


def test_a_calibrated_model_loaded_in_half_precision_keeps_its_calibrator(trained):
    """The fingerprint is of the stored weights: --dtype bf16 is the same model, not other weights."""
    import torch

    question, context = "what does kabo like ?", "mibo likes tea . kabo likes jazz ."
    full = pipeline(model=str(trained))(question=question, context=context)
    for dtype in ("bf16", "fp16"):
        qa = pipeline(model=str(trained), dtype=dtype)
        assert next(qa.model.runner.model.parameters()).dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        answer = qa(question=question, context=context)
        assert 0.0 <= answer["confidence"] <= 1.0
        assert answer["confidence"] == pytest.approx(full["confidence"], abs=0.05)


def test_pipeline_and_predict_compute_the_same_confidence(trained, dev_file):
    """One calibrator for both decoders: where both give the same span, the confidence is the same."""
    from squadkit.model import load as load_model
    from squadkit.data import load_squad
    from squadkit.predict import decode_settings_for, predict_squad

    qa = pipeline(model=str(trained))
    dataset = load_squad(dev_file)
    settings, _ = decode_settings_for(qa.model, dataset, null_score_diff_threshold=1e9)  # never abstain
    preds = predict_squad(load_model(str(trained)), dataset.examples, settings)
    answers = qa([{"question": q["question"], "context": q["context"]} for q in _questions(dev_file)],
                 handle_impossible_answer=False)
    same = 0
    for q, answer in zip(_questions(dev_file), answers):
        assert 0.0 <= answer["confidence"] <= 1.0
        if answer["answer"] == preds.predictions[q["id"]]:
            assert answer["confidence"] == pytest.approx(preds.confidence[q["id"]], abs=1e-5)
            same += 1
    assert same >= 60  # most questions: the two decoders agree on the span


def test_score_is_unchanged_and_confidence_is_only_there_with_a_calibrator(folder):
    question, context = "what does kabo like ?", "mibo likes tea . kabo likes jazz ."
    with_cal = pipeline(model=str(folder))(question=question, context=context, top_k=3)
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    del settings["calibration"]
    (folder / SETTINGS_FILE).write_text(json.dumps(settings))
    without = pipeline(model=str(folder))(question=question, context=context, top_k=3)
    def without_confidence(answer: dict) -> dict:
        out = {k: v for k, v in answer.items() if k != "confidence"}
        if "abstained" in out:  # an empty answer's reason carries the confidence too
            out["abstained"] = {k: v for k, v in out["abstained"].items() if k != "confidence"}
        return out

    assert [without_confidence(a) for a in with_cal] == without
    assert all("confidence" in a for a in with_cal) and not any("confidence" in a for a in without)
    with pytest.raises(SquadkitError, match="needs a calibrated model"):
        pipeline(model=str(folder), min_confidence=0.5)


def test_min_confidence_abstains_exactly_below_the_cut_off(trained, dev_file, tmp_path):
    runner = CliRunner()
    never = ["--null-score-diff-threshold", "1000"]  # the saved threshold abstains often: keep spans to cut
    assert runner.invoke(app, ["predict", "-m", str(trained), "-d", str(dev_file), "-o", str(tmp_path / "a"),
                               *never]).exit_code == 0
    preds = json.loads((tmp_path / "a" / "predictions.json").read_text())
    conf = json.loads((tmp_path / "a" / "confidence.json").read_text())
    assert set(conf) == set(preds) and all(0 <= v <= 1 for v in conf.values())
    spans = {q: c for q, c in conf.items() if preds[q]}
    cut = float(np.median(list(spans.values())))
    res = runner.invoke(app, ["predict", "-m", str(trained), "-d", str(dev_file), "-o", str(tmp_path / "b"),
                              "--min-confidence", str(cut), *never])
    assert res.exit_code == 0, res.output
    cut_preds = json.loads((tmp_path / "b" / "predictions.json").read_text())
    cut_conf = json.loads((tmp_path / "b" / "confidence.json").read_text())
    for qid, text in preds.items():
        if text and conf[qid] < cut:
            assert cut_preds[qid] == "" and cut_conf[qid] != conf[qid]  # abstained: "" with its own confidence
        else:
            assert cut_preds[qid] == text and cut_conf[qid] == conf[qid]
    assert 0 < sum(1 for q in spans if spans[q] < cut) < len(spans)

    # the pipeline follows the same rule: its top span is dropped exactly when its confidence is below the cut
    qa = pipeline(model=str(trained))
    inputs = [{"question": q["question"], "context": q["context"]} for q in _questions(dev_file)][:40]
    plain = qa(inputs, handle_impossible_answer=False)
    cut = float(np.median([a["confidence"] for a in plain]))
    gated = qa(inputs, handle_impossible_answer=False, min_confidence=cut)
    for p, g in zip(plain, gated):
        assert g == p if p["confidence"] >= cut else (g["answer"] == "" and g["start"] == g["end"] == 0)
    assert any(g["answer"] == "" for g in gated) and any(g["answer"] for g in gated)


def test_cli_refuses_min_confidence_outside_zero_one(trained):
    res = CliRunner().invoke(app, ["answer", "-m", str(trained), "-q", "what does kabo like ?", "-c",
                                   "kabo likes tea .", "--min-confidence", "1.5"])
    assert res.exit_code == 2 and "--min-confidence" in res.output and "between 0 and 1" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(app, ["answer", "-m", str(trained), "-q", "what does kabo like ?", "-c",
                                   "kabo likes tea .", "--min-confidence", "0.0"])
    assert res.exit_code == 0 and "confidence" in json.loads(res.stdout)


def test_serve_returns_confidence_and_takes_min_confidence(trained):
    import time

    from fastapi.testclient import TestClient

    from squadkit.serve import create_app

    body = {"question": "what does kabo like ?", "context": "mibo likes tea . kabo likes jazz ."}
    expected = pipeline(model=str(trained))(**body, handle_impossible_answer=False)
    with TestClient(create_app(str(trained))) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.05)
        assert client.get("/v1/model").json()["model_settings"]["calibrated"] is True
        got = client.post("/v1/answer", json={**body, "handle_impossible_answer": False}).json()
        assert got["confidence"] == pytest.approx(expected["confidence"], abs=1e-6)
        gated = client.post("/v1/answer", json={**body, "handle_impossible_answer": False,
                                                "min_confidence": min(1.0, expected["confidence"] + 1e-3)}).json()
        assert gated["answer"] == "" and "confidence" in gated
        assert client.post("/v1/answer", json={**body, "min_confidence": 1.5}).status_code == 422


def test_the_calibrator_survives_export_and_onnx_answers_carry_the_same_confidence(trained, dev_file, tmp_path):
    pytest.importorskip("onnxruntime")
    from squadkit.export import export_model

    out = export_model(str(trained), tmp_path / "onnx")
    assert read_settings(out).calibration == read_settings(trained).calibration
    inputs = [{"question": q["question"], "context": q["context"]} for q in _questions(dev_file)][:20]
    torch_answers = pipeline(model=str(trained))(inputs, handle_impossible_answer=True)
    onnx_qa = pipeline(model=str(out))
    assert onnx_qa.model.backend == "onnx" and onnx_qa.model.head_sha256 == read_settings(out).calibration["weights_sha256"]
    onnx_answers = onnx_qa(inputs, handle_impossible_answer=True)
    for t, o in zip(torch_answers, onnx_answers):
        assert o["answer"] == t["answer"] and o["confidence"] == pytest.approx(t["confidence"], abs=1e-4)
    # a calibrator copied into another model's export is refused there
    settings = json.loads((out / SETTINGS_FILE).read_text())
    settings["calibration"]["weights_sha256"] = "0" * 64
    (out / SETTINGS_FILE).write_text(json.dumps(settings))
    with pytest.raises(SquadkitError, match="fitted on other weights"):
        pipeline(model=str(out))


def test_evaluate_reports_calibration_from_predicts_output(trained, dev_file, tmp_path):
    pytest.importorskip("matplotlib")
    runner = CliRunner()
    assert runner.invoke(app, ["predict", "-m", str(trained), "-d", str(dev_file), "-o", str(tmp_path / "p")]).exit_code == 0
    res = runner.invoke(app, ["evaluate", str(dev_file), str(tmp_path / "p" / "predictions.json"),
                              "-n", str(tmp_path / "p" / "null_odds.json"), "-p", str(tmp_path / "img")])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)["confidence"]  # confidence.json found beside the predictions
    conf = json.loads((tmp_path / "p" / "confidence.json").read_text())
    preds = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert report["questions"] == len(conf) == 120
    assert set(report["at_confidence"]) == {"0.5", "0.7", "0.9"}
    answered = [q for q, c in conf.items() if c >= 0.5]
    assert report["at_confidence"]["0.5"]["answered"] == len(answered)
    assert 0 <= report["ece"] <= 1 and sum(r["count"] for r in report["reliability"]) == 120
    assert (tmp_path / "img" / "reliability.png").stat().st_size > 0
    assert (tmp_path / "img" / "risk_coverage.png").stat().st_size > 0
    res = runner.invoke(app, ["evaluate", str(dev_file), str(tmp_path / "p" / "predictions.json"), "--cutoffs", "0.2,0.6"])
    assert res.exit_code == 0 and set(json.loads(res.stdout)["confidence"]["at_confidence"]) == {"0.2", "0.6"}
    res = runner.invoke(app, ["evaluate", str(dev_file), str(tmp_path / "p" / "predictions.json"), "--cutoffs", "2"])
    assert res.exit_code == 2 and "--cutoffs" in res.output
    # a confidence file with a value out of range is refused in one line
    (tmp_path / "bad.json").write_text(json.dumps({q: 2.0 for q in preds}))
    res = runner.invoke(app, ["evaluate", str(dev_file), str(tmp_path / "p" / "predictions.json"),
                              "--confidence", str(tmp_path / "bad.json")])
    assert res.exit_code == 2 and "not in [0, 1]" in res.output


def test_ask_carries_the_confidence_of_its_prediction_and_applies_min_confidence(trained, dev_file, tmp_path):
    """ask (issue 11) follows the same rule: the best span's confidence on its own passage's features."""
    from squadkit.retrieval import DocumentQA, build_index

    build_index([dev_file], tmp_path / "idx.sqlite")
    dqa = DocumentQA(tmp_path / "idx.sqlite", model=str(trained), threshold=1000.0)  # never abstain on the null
    qa = pipeline(model=str(trained))
    questions = _questions(dev_file)[:12]
    results = dqa.ask_many([q["question"] for q in questions], k=1)
    for q, r in zip(questions, results):
        assert r.confidence is not None and 0.0 <= r.confidence <= 1.0
        best = r.answers[0]
        assert best.confidence == r.confidence  # the prediction is the best span
        if best.passage == q["context"]:  # its passage is the question's own paragraph: the pipeline agrees
            mine = qa(question=q["question"], context=q["context"], handle_impossible_answer=False)
            if mine["answer"] == best.answer:
                assert best.confidence == pytest.approx(mine["confidence"], abs=1e-5)
    cut = float(np.median([r.confidence for r in results]))
    gated = dqa.ask_many([q["question"] for q in questions], k=1, min_confidence=cut)
    for r, g in zip(results, gated):
        assert g.no_answer == (r.confidence < cut)
        assert g.answer == ("" if r.confidence < cut else r.answer)
    with pytest.raises(SquadkitError, match="min_confidence"):
        dqa.ask("what does kabo like ?", min_confidence=1.5)
    nothing = dqa.ask("zzyzx qwxv ?")  # no passage holds a word of it: an abstention, with its confidence
    assert nothing.no_answer and nothing.answers == [] and 0.0 <= nothing.confidence <= 1.0
