"""squadkit train: the card's command as written, outputs, bad input, caching, output folder rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_train_learns import make_task_model, one_thread, task_records, write_task_data  # noqa: F401
from typer.testing import CliRunner

from squadkit.cli import app
from squadkit.errors import SquadkitError
from squadkit.train import TrainConfig, TrainWarning, train

CARD_KEYS = ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact", "NoAns_f1",
             "NoAns_total", "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]


def _small_dev(tmp_path: Path, squad_dev_path: Path, paragraphs: int = 2) -> Path:
    data = json.loads(squad_dev_path.read_text(encoding="utf-8"))
    article = data["data"][0]
    small = {"version": "v2.0", "data": [{"title": article["title"], "paragraphs": article["paragraphs"][:paragraphs]}]}
    path = tmp_path / "dev-small.json"
    path.write_text(json.dumps(small), encoding="utf-8")
    return path


def test_card_command_runs_as_written(tmp_path, tiny_roberta, squad_dev_path, monkeypatch):
    """The card's run_squad command, flag for flag, on a tiny RoBERTa and a few real dev questions."""
    small = _small_dev(tmp_path, squad_dev_path)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")  # unrelated file: --overwrite_output_dir must keep it
    (out / "checkpoint-7").mkdir()  # an earlier run's checkpoint: removed by --overwrite_output_dir
    (out / "checkpoint-7" / "trainer_state.json").write_text("{}")
    card = ("--model_type roberta --model_name_or_path {model} --do_eval --do_train --do_lower_case "
            "--train_file {data} --predict_file {data} --per_gpu_train_batch_size 16 --learning_rate 3e-5 "
            "--num_train_epochs 2 --max_seq_length 384 --doc_stride 128 --output_dir out --overwrite_output_dir "
            "--save_steps 1000 --version_2_with_negative").format(model=tiny_roberta, data=small.name)
    res = CliRunner().invoke(app, ["train", *card.split()])
    assert res.exit_code == 0, res.output
    # RoBERTa's tokenizer keeps case: the flag is accepted, with a warning that says so
    assert "--do_lower_case has no effect on RobertaTokenizer" in res.output  # "...Fast" before transformers 5
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["global_step"] == 4  # 2 epochs x ceil(17 questions / 16)

    results = json.loads((out / "eval_results.json").read_text())
    assert list(results) == CARD_KEYS
    assert results["total"] == 17 and results["HasAns_total"] + results["NoAns_total"] == 17
    preds = json.loads((out / "predictions.json").read_text())
    odds = json.loads((out / "null_odds.json").read_text())
    assert len(preds) == len(odds) == 17 and (out / "nbest_predictions.json").is_file()
    assert len(set(odds.values())) > 1  # real null odds, not zeros
    settings = json.loads((out / "squadkit.json").read_text())
    assert settings["null_score_diff_threshold"] == results["best_f1_thresh"]
    assert settings["schema_version"] == 1 and settings["max_seq_length"] == 384
    assert settings["training"]["learning_rate"] == 3e-5 and settings["training"]["per_gpu_train_batch_size"] == 16
    readme = (out / "README.md").read_text()
    assert "--per-gpu-train-batch-size 16" in readme and "| **EM** |" in readme and '"best_f1_thresh"' in readme
    assert str(tiny_roberta) in readme
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert steps and {"loss", "learning_rate", "samples_per_second", "step"} <= set(steps[-1])
    assert steps[-1]["learning_rate"] == 0.0  # linear decay to zero
    # unrelated files stay; the earlier run's checkpoint went; save_steps 1000 > 4 steps: no new one
    assert (out / "notes.txt").read_text() == "keep me"
    assert not any(p.name.startswith("checkpoint-") for p in out.iterdir())

    # the result loads with transformers and with squadkit's pipeline
    from transformers import AutoModelForQuestionAnswering

    AutoModelForQuestionAnswering.from_pretrained(out)
    from squadkit.pipeline import pipeline

    qa = pipeline("question-answering", model=str(out))
    assert isinstance(qa(question="Who?", context="The Normans were in Normandy.")["answer"], str)
    # predict uses the saved threshold by default (and 0.0 with --ignore-saved-threshold)
    from squadkit.model import load as load_model
    from squadkit.predict import decode_settings_for

    model = load_model(str(out))
    assert decode_settings_for(model)[0].null_score_diff_threshold == results["best_f1_thresh"]
    assert decode_settings_for(model, ignore_saved_threshold=True)[0].null_score_diff_threshold == 0.0


def test_kebab_case_flags_and_second_run_uses_the_feature_cache(tmp_path, one_thread, monkeypatch):
    base = make_task_model(tmp_path / "base", hidden=32)
    data = write_task_data(tmp_path / "train.json", 6, seed=1)
    args = ["train", "--model-name-or-path", str(base), "--do-train", "--version-2-with-negative", "--train-file",
            str(data), "--max-seq-length", "64", "--doc-stride", "32", "--per-gpu-train-batch-size", "4",
            "--max-steps", "2", "--save-steps", "0", "--features-cache-dir", str(tmp_path / "cache"), "--quiet"]
    first = CliRunner().invoke(app, [*args, "--output-dir", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    s1 = json.loads(first.stdout[first.stdout.index("{"):])
    assert s1["features_cached"] is False and Path(s1["features_cache"]).parent == tmp_path / "cache"
    assert Path(s1["features_cache"]).name.startswith("squadkit-features-")

    import squadkit.train as train_module

    def no_tokenizing(*a, **k):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(train_module, "make_train_features", no_tokenizing)
    second = CliRunner().invoke(app, [*args, "--output-dir", str(tmp_path / "b")])
    assert second.exit_code == 0, second.output
    s2 = json.loads(second.stdout[second.stdout.index("{"):])
    assert s2["features_cached"] is True and s2["features_cache"] == s1["features_cache"]
    # other window settings -> another cache file (and tokenizing again)
    monkeypatch.undo()
    other = [("48" if a == "64" else a) for a in args]  # --max-seq-length 48
    third = CliRunner().invoke(app, [*other, "--output-dir", str(tmp_path / "c")])
    assert third.exit_code == 0, third.output
    s3 = json.loads(third.stdout[third.stdout.index("{"):])
    assert s3["features_cache"] != s1["features_cache"] and s3["features_cached"] is False


def test_a_half_precision_checkpoint_trains_with_float32_weights(tmp_path, one_thread):
    """Many hub checkpoints are stored in fp16/bf16; transformers 5 loads them as such by default. Training keeps
    float32 master weights (mixed precision is --bf16/--fp16 autocast), so the saved model is float32."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForQuestionAnswering

    base = make_task_model(tmp_path / "base", hidden=32)
    AutoModelForQuestionAnswering.from_pretrained(base).to(torch.float16).save_pretrained(base)
    with safe_open(str(base / "model.safetensors"), "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16
    data = write_task_data(tmp_path / "train.json", 4, seed=1)
    res = CliRunner().invoke(app, ["train", "-m", str(base), "--do-train", "--version-2-with-negative",
                                   "--train-file", str(data), "--max-seq-length", "64", "--doc-stride", "32",
                                   "--per-gpu-train-batch-size", "4", "--max-steps", "2", "--save-steps", "0",
                                   "-o", str(tmp_path / "out"), "--quiet"])
    assert res.exit_code == 0, res.output
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}


def test_features_batch_matches_padding_of_make_batch(tmp_path):
    import numpy as np

    from squadkit.features import build_windows, make_batch
    from squadkit.train import make_train_features
    from squadkit.data import examples_from_records
    from squadkit.model_folder import load_tokenizer

    base = make_task_model(tmp_path / "base", hidden=32)
    tok = load_tokenizer(str(base))
    examples = examples_from_records(task_records(5, seed=3))
    settings = TrainConfig("x", "y", max_seq_length=16, doc_stride=4).window_settings()
    feats = make_train_features(examples, tok, settings, True)
    answers = [(e.answers[0].answer_start, e.answers[0].answer_end) if e.answers else None for e in examples]
    windows = build_windows(tok, [e.question for e in examples], [e.context for e in examples], settings, answers=answers)
    assert len(feats) == len(windows) > len(examples)  # some contexts need two windows
    idx = np.array([3, 0, 5, 1])
    got = feats.batch(idx, tok.pad_token_id)
    want = make_batch(windows, idx.tolist(), tok.pad_token_id)
    assert (got["input_ids"] == want.input_ids).all() and (got["attention_mask"] == want.attention_mask).all()
    assert got["start_positions"].tolist() == [windows[i].start_position for i in idx]
    assert got["end_positions"].tolist() == [windows[i].end_position for i in idx]
    # a window not holding the whole answer points at CLS
    assert any(w.start_position == 0 for w, e in zip(windows, [examples[w.example_index] for w in windows]) if e.answers)


def _cfg(tmp_path, base, data, **kw):
    opts = dict(model_name_or_path=str(base), output_dir=str(tmp_path / "out"), train_file=str(data), do_train=True,
                version_2_with_negative=True, max_seq_length=64, doc_stride=32, per_gpu_train_batch_size=4, max_steps=1,
                save_steps=0, quiet=True, features_cache_dir=str(tmp_path / "cache"))
    opts.update(kw)
    return TrainConfig(**opts)


def test_answers_not_in_context_are_skipped_and_counted_and_all_bad_is_an_error(tmp_path, one_thread):
    base = make_task_model(tmp_path / "base", hidden=32)
    recs = task_records(6, seed=2)
    answerable = [r for r in recs if r["answers"]["text"]]
    bad = json.loads(json.dumps(answerable[:2]))
    for r in bad:
        r["answers"]["answer_start"] = [r["answers"]["answer_start"][0] + 1]  # points at the wrong text
    mixed = tmp_path / "mixed.jsonl"
    bad_ids = {r["id"]: r for r in bad}
    mixed.write_text("\n".join(json.dumps(bad_ids.get(r["id"], r)) for r in recs) + "\n")
    with pytest.warns(TrainWarning, match="skipped 2 question"):
        result = train(_cfg(tmp_path, base, mixed))
    assert result.examples_skipped == {"answer_not_in_context": 2}
    assert result.examples_used == len(recs) - 2

    all_bad = tmp_path / "bad.jsonl"
    all_bad.write_text("\n".join(json.dumps(r) for r in bad) + "\n")
    with pytest.raises(SquadkitError, match="no usable training examples"):
        train(_cfg(tmp_path, base, all_bad, output_dir=str(tmp_path / "out2")))
    assert not (tmp_path / "out2").exists()  # refused before anything was written
    # only unanswerable questions without --version_2_with_negative: nothing to learn from
    unans = tmp_path / "unans.jsonl"
    unans.write_text("\n".join(json.dumps(r) for r in recs if not r["answers"]["text"]) + "\n")
    with pytest.raises(SquadkitError, match="without --version-2-with-negative"):
        train(_cfg(tmp_path, base, unans, version_2_with_negative=False, output_dir=str(tmp_path / "out3")))


@pytest.mark.parametrize("flag, value, message", [
    ("--learning_rate", "0", "learning_rate must be a positive number"),
    ("--learning_rate", "-1e-5", "learning_rate must be a positive number"),
    ("--per_gpu_train_batch_size", "0", "per_gpu_train_batch_size must be a positive integer"),
    ("--gradient_accumulation_steps", "0", "gradient_accumulation_steps must be a positive integer"),
])
def test_bad_numbers_are_one_line_errors(tmp_path, flag, value, message):
    data = write_task_data(tmp_path / "train.json", 2, seed=1)
    res = CliRunner().invoke(app, ["train", "--model_name_or_path", str(tmp_path / "nope"), "--output_dir",
                                   str(tmp_path / "out"), "--do_train", "--train_file", str(data), flag, value])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [f"error: {message}, got {value if flag != '--learning_rate' else float(value)!r}"] \
        or message in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_model_without_qa_architecture_and_fp16_on_cpu_are_refused(tmp_path):
    import torch

    folder = tmp_path / "vit"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vit", "hidden_size": 32}))
    data = write_task_data(tmp_path / "train.json", 2, seed=1)
    res = CliRunner().invoke(app, ["train", "--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "out"),
                                   "--do_train", "--train_file", str(data)])
    assert res.exit_code == 2 and "no question-answering architecture" in res.output
    assert len(res.output.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        res = CliRunner().invoke(app, ["train", "--model_name_or_path", str(folder), "--output_dir",
                                       str(tmp_path / "out"), "--do_train", "--train_file", str(data), "--fp16"])
        assert res.exit_code == 2 and "--fp16 needs a CUDA GPU" in res.output
    res = CliRunner().invoke(app, ["train", "--model_name_or_path", str(folder), "--output_dir", str(tmp_path / "out"),
                                   "--train_file", str(data)])
    assert res.exit_code == 2 and "nothing to do" in res.output
    assert not (tmp_path / "out").exists()


def test_non_empty_output_dir_is_refused_and_untouched(tmp_path):
    base = make_task_model(tmp_path / "base", hidden=32)
    data = write_task_data(tmp_path / "train.json", 2, seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "log.jsonl").write_text("old\n")
    (out / "checkpoint-3").mkdir()
    res = CliRunner().invoke(app, ["train", "--model_name_or_path", str(base), "--output_dir", str(out), "--do_train",
                                   "--train_file", str(data), "--version_2_with_negative"])
    assert res.exit_code == 2 and "--overwrite_output_dir" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-3", "log.jsonl"]
    assert (out / "log.jsonl").read_text() == "old\n"


def test_a_dev_no_answer_score_at_chance_earns_one_note(tmp_path):
    """train --do-eval says so when the dev no-answer score cannot tell answerable from unanswerable
    questions: its best-F1 threshold then mostly abstains always, and F1 hides that."""
    from squadkit.data import load_squad
    from squadkit.train.events import abstention_at_chance

    qas = [{"id": f"a{i}", "question": "Who?", "answers": [{"text": "cat", "answer_start": 4}], "is_impossible": False}
           for i in range(4)] + [{"id": f"u{i}", "question": "Who?", "answers": [], "is_impossible": True}
                                 for i in range(4)]
    path = tmp_path / "dev.json"
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": "The cat sat.", "qas": qas}]}]}), encoding="utf-8")
    dev = load_squad(path)
    mixed = {"a0": -2.0, "a1": 3.0, "a2": 0.5, "a3": 4.0, "u0": 3.0, "u1": -2.0, "u2": 4.0, "u3": 0.5}  # alike: AUC 0.5
    note = abstention_at_chance(dev, mixed, 2.0, path)
    assert note is not None and "\n" not in note
    assert note.startswith("dev.json: ") and "(AUC 0.50)" in note
    assert "at the saved threshold 2.00 the model answers 50.0% of them" in note  # 4 of 8 odds <= 2.0
    separable = {**{f"a{i}": -2.0 - i for i in range(4)}, **{f"u{i}": 1.0 + i for i in range(4)}}
    assert abstention_at_chance(dev, separable, 0.0, path) is None
    assert abstention_at_chance(dev, {"a0": 0.0}, 0.0, path) is None  # odds missing: nothing to say
