"""``squadkit export`` and the ONNX Runtime backend: the same answers as torch (fp32), an exported
folder served without being told, int8 that loads and answers, the record, and one-line errors
for bad input (a checkpoint that is not a QA model, a corrupt ONNX file, a missing tokenizer)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from squadkit.cli import app  # noqa: E402
from squadkit.errors import SquadkitError  # noqa: E402
from squadkit.export import FP32_FILE, INT8_FILE, RECORD_FILE, export_model  # noqa: E402
from squadkit.features import WindowSettings, build_windows, iter_batches  # noqa: E402
from squadkit.model import load as load_model  # noqa: E402
from squadkit.backends.onnx import OnnxQAModel, load_onnx_model  # noqa: E402
from squadkit.pipeline import pipeline  # noqa: E402

QUESTIONS = [
    "who was the king of france?",
    "where was the queen born?",
    "what year was the war?",
    "which river is in the north of the city?",
]
CONTEXTS = [
    "the king of france was born in paris in the first year of the war. the queen was named rome.",
    "the queen was born in london, a big city on a river. her king was found in the south.",
    "the war was in the year 1066 and the peace came in the second year after it. " * 12,  # several windows
    "the river in the north of the city is called the blue river; the red river is in the south.",
]
SETTINGS = {"null_score_diff_threshold": -1.25}


def cli(*args: str):
    return CliRunner().invoke(app, [*map(str, args)])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def bert_source(tiny_bert, tmp_path_factory) -> Path:
    """tiny_bert with squadkit settings saved beside it (they must travel into the export)."""
    src = tmp_path_factory.mktemp("bert-src") / "ckpt"
    shutil.copytree(tiny_bert, src)
    (src / "squadkit.json").write_text(json.dumps(SETTINGS), encoding="utf-8")
    return src


@pytest.fixture(scope="module")
def bert_export(bert_source, tmp_path_factory) -> Path:
    """One CLI export with --quantize int8: model.onnx (fp32) and model.int8.onnx."""
    out = tmp_path_factory.mktemp("bert-onnx") / "exported"
    result = cli("export", "--model", bert_source, "--output", out, "--quantize", "int8")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["files"] == {"fp32": FP32_FILE, "int8": INT8_FILE}
    return out


@pytest.fixture(scope="module")
def roberta_export(tiny_roberta, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("roberta-onnx") / "exported"
    return export_model(tiny_roberta, out)


def compare_logits(source: Path, exported: Path) -> None:
    torch_model = load_model(source, backend="torch", device="cpu")
    onnx_model = load_model(exported, precision="fp32")
    assert onnx_model.backend == "onnx"
    windows = build_windows(torch_model.tokenizer, QUESTIONS, CONTEXTS, WindowSettings("pipeline", 64, 16))
    assert len(windows) > len(QUESTIONS)  # padding within batches is exercised
    pad = torch_model.tokenizer.pad_token_id
    for batch in iter_batches(windows, 3, pad):
        ts, te = torch_model.logits(batch)
        os_, oe = onnx_model.logits(batch)
        assert os_.dtype == np.float32 and os_.shape == ts.shape
        mask = batch.attention_mask.astype(bool)
        np.testing.assert_allclose(os_[mask], ts[mask], atol=1e-4, rtol=0)
        np.testing.assert_allclose(oe[mask], te[mask], atol=1e-4, rtol=0)


def compare_answers(source: Path, exported: Path) -> None:
    qa_torch = pipeline("question-answering", model=source, backend="torch", device="cpu")
    qa_onnx = pipeline("question-answering", model=exported, backend="onnx", precision="fp32")
    inputs = [{"question": q, "context": c} for q, c in zip(QUESTIONS, CONTEXTS)]
    for kwargs in ({"top_k": 3}, {"top_k": 2, "handle_impossible_answer": True, "max_seq_len": 48, "doc_stride": 8}):
        got = qa_onnx(inputs, batch_size=2, **kwargs)
        want = qa_torch(inputs, batch_size=2, **kwargs)
        for g, w in zip(got, want):
            assert [(a["start"], a["end"], a["answer"]) for a in g] == [(a["start"], a["end"], a["answer"]) for a in w]
            np.testing.assert_allclose([a["score"] for a in g], [a["score"] for a in w], rtol=1e-3, atol=1e-6)


def test_bert_fp32_logits_match_torch(bert_source, bert_export):
    compare_logits(bert_source, bert_export)


def test_bert_fp32_answers_match_torch(bert_source, bert_export):
    compare_answers(bert_source, bert_export)


@pytest.mark.needs_shared
def test_roberta_fp32_logits_and_answers_match_torch(tiny_roberta, roberta_export):
    assert json.loads((roberta_export / RECORD_FILE).read_text())["inputs"] == ["input_ids", "attention_mask"]
    compare_logits(tiny_roberta, roberta_export)
    compare_answers(tiny_roberta, roberta_export)


def test_exported_folder_is_served_by_onnx_runtime_unasked(bert_export, bert_source):
    qa = pipeline(model=bert_export)
    assert isinstance(qa.model.runner, OnnxQAModel) and qa.model.backend == "onnx"
    assert qa.model.precision == "int8"  # exported with --quantize int8: served int8 by default
    assert Path(qa.model.model_file).name == INT8_FILE
    assert load_model(bert_export, precision="fp32").precision == "fp32"
    assert load_model(bert_source).backend == "torch"
    assert qa.model.settings.null_score_diff_threshold == -1.25  # the null threshold travelled with the model
    sess_options = qa.model.runner.session.get_session_options()
    assert sess_options.intra_op_num_threads >= 1 and sess_options.inter_op_num_threads == 1


def test_int8_loads_and_answers(bert_export):
    qa = pipeline(model=bert_export, precision="int8", threads=1)
    results = qa([{"question": q, "context": c} for q, c in zip(QUESTIONS, CONTEXTS)])
    for result, context in zip(results, CONTEXTS):
        assert set(result) == {"score", "start", "end", "answer"}
        assert 0.0 <= result["score"] <= 1.0 and result["answer"] == context[result["start"] : result["end"]]
    assert (bert_export / INT8_FILE).stat().st_size < (bert_export / FP32_FILE).stat().st_size


def test_cli_answer_with_exported_folder(bert_export):
    result = cli("answer", "--model", bert_export, "-q", QUESTIONS[0], "-c", CONTEXTS[0])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["answer"] == CONTEXTS[0][out["start"] : out["end"]]


def test_record_contents(bert_export, bert_source):
    record = json.loads((bert_export / RECORD_FILE).read_text(encoding="utf-8"))
    assert record["format"] == "squadkit-onnx-export" and record["format_version"] == 1
    assert record["source"]["model"] == str(bert_source.resolve())
    assert record["source"]["model_type"] == "bert"
    assert record["source"]["architecture"] == "BertForQuestionAnswering"
    assert record["settings"] == {"format": "squadkit-model-settings", "schema_version": 1, **SETTINGS}
    assert record["files"] == {"fp32": FP32_FILE, "int8": INT8_FILE} and record["default"] == "int8"
    assert record["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert record["outputs"] == ["start_logits", "end_logits"]
    assert record["opset"] == 17 and "torch.onnx.export" in record["exporter"]
    assert record["verification"]["max_abs_logit_diff"] < 1e-4
    assert record["quantization"]["method"] == "onnxruntime.quantization.quantize_dynamic"
    for package in ("torch", "transformers", "onnx", "onnxruntime", "python"):
        assert record["versions"][package]
    for name in ("config.json", "tokenizer.json", "squadkit.json"):
        assert (bert_export / name).is_file()


def test_existing_folder_is_not_overwritten(bert_export, bert_source, tmp_path):
    before = (bert_export / FP32_FILE).stat().st_mtime_ns
    result = cli("export", "--model", bert_source, "--output", bert_export)
    assert_one_line_error(result, "already holds an ONNX export", "--overwrite")
    assert (bert_export / FP32_FILE).stat().st_mtime_ns == before
    with pytest.raises(SquadkitError, match="already an exported ONNX folder"):
        export_model(bert_export, tmp_path / "again")


def test_failed_export_leaves_nothing(bert_source, tmp_path, monkeypatch):
    import squadkit.export as export

    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded\nsecond line")

    monkeypatch.setattr(export, "_torch_export", broken)
    out = tmp_path / "out"
    with pytest.raises(SquadkitError, match="ONNX export failed: exporter exploded$"):
        export_model(bert_source, out)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder left behind


def test_export_refuses_a_checkpoint_that_is_not_qa(bert_source, tmp_path):
    other = tmp_path / "classifier"
    shutil.copytree(bert_source, other)
    config = json.loads((other / "config.json").read_text())
    config["architectures"] = ["BertForSequenceClassification"]
    (other / "config.json").write_text(json.dumps(config))
    assert_one_line_error(cli("export", "--model", other, "--output", tmp_path / "o"), "not a question-answering checkpoint")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a model")
    assert_one_line_error(cli("export", "--model", empty, "--output", tmp_path / "o2"), str(empty))
    assert not (tmp_path / "o").exists() and not (tmp_path / "o2").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_onnx_file_is_a_clear_error(bert_export, tmp_path, damage):
    folder = tmp_path / "broken"
    shutil.copytree(bert_export, folder)
    path = folder / FP32_FILE
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"not an onnx model" * 10, "empty": b""}[damage])
    with pytest.raises(SquadkitError, match="not a loadable ONNX model"):
        load_onnx_model(folder, precision="fp32")
    result = cli("answer", "--model", folder, "--backend", "onnx", "-q", "who?", "-c", "the king")
    assert result.exit_code == 0  # the folder serves int8 by default, and that file is intact
    (folder / RECORD_FILE).unlink()  # without the record, model.onnx is served
    assert_one_line_error(cli("answer", "--model", folder, "-q", "who?", "-c", "the king"), "not a loadable ONNX model")


def test_missing_tokenizer_is_a_clear_error(bert_export, tmp_path):
    folder = tmp_path / "no-tokenizer"
    shutil.copytree(bert_export, folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(SquadkitError, match="has no tokenizer"):
        load_model(folder)
    assert_one_line_error(cli("answer", "--model", folder, "-q", "who?", "-c", "the king"), "has no tokenizer")


def test_bad_folder_and_options(bert_export, bert_source, tmp_path):
    with pytest.raises(SquadkitError, match="not an exported ONNX folder"):
        load_model(bert_source, backend="onnx")  # a torch checkpoint, asked for with backend=onnx
    with pytest.raises(SquadkitError, match="folder not found"):
        load_onnx_model(tmp_path / "missing")
    fp32_only = tmp_path / "fp32-only"
    shutil.copytree(bert_export, fp32_only)
    (fp32_only / INT8_FILE).unlink()
    with pytest.raises(SquadkitError, match="--quantize int8"):
        load_onnx_model(fp32_only, precision="int8")
    with pytest.raises(SquadkitError, match="precision"):
        load_onnx_model(bert_export, precision="fp16")
    with pytest.raises(SquadkitError, match="threads"):
        load_onnx_model(bert_export, threads=0)
    with pytest.raises(SquadkitError, match="quantize"):
        export_model(bert_source, tmp_path / "x", quantize="int4")
    assert_one_line_error(cli("export", "--model", bert_source, "--output", tmp_path / "y", "--opset", "7"), "opset")


def test_answering_batch_size_defaults_to_the_measured_best_per_backend_and_precision(bert_export, bert_source):
    from squadkit.defaults import CPU_BATCH_SIZES

    int8 = pipeline(model=bert_export)
    fp32 = pipeline(model=bert_export, precision="fp32")
    torch_qa = pipeline(model=bert_source, device="cpu")
    assert int8.settings_in_force().values["batch_size"] == CPU_BATCH_SIZES[("onnx", "int8")]
    assert fp32.settings_in_force().values["batch_size"] == CPU_BATCH_SIZES[("onnx", "fp32")]
    assert torch_qa.settings_in_force().values["batch_size"] == CPU_BATCH_SIZES[("torch", "fp32")]
    assert int8.settings_in_force(batch_size=5).sources["batch_size"] == "argument"
