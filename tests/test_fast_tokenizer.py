"""The tokenizer read straight from tokenizer.json (an exported folder answers without torch) gives
the same windows, offsets and answer texts as transformers' fast tokenizer of the same folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from squadkit.model_folder import load_tokenizer
from squadkit.text_recovery import squad_text_recoverer
from squadkit.fast_tokenizer import FastTokenizer
from squadkit.features import WindowSettings, build_windows

QUESTIONS = ["Where did the Normans settle?", "Who was the duke in 1066 — and why?", "what ?"]
CONTEXTS = [
    "The Normans (Norman: Nourmands; French: Normands) were the people who in the 10th and 11th centuries "
    "gave their name to Normandy, a region in France.  Their identity emerged initially ...",
    "William the Conqueror, Duke of Normandy, invaded England in 1066; café naïve résumé — ünïcödé 😀 text.",
    "short",
]


def _saved(tokenizer_source: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "tok"
    load_tokenizer(str(tokenizer_source)).save_pretrained(folder)
    return folder


@pytest.fixture(params=["bert", "roberta"])
def tokenizer_folder(request, tmp_path, tiny_bert):
    if request.param == "bert":
        return _saved(tiny_bert, tmp_path)
    return _saved(request.getfixturevalue("roberta_tokenizer_dir"), tmp_path)


@pytest.mark.parametrize("settings", [WindowSettings("pipeline", 24, 8), WindowSettings("squad", 24, 10),
                                      WindowSettings("legacy", 24, 10), WindowSettings("pipeline", 384)])
def test_windows_are_the_same_as_transformers(tokenizer_folder, settings):
    reference = load_tokenizer(str(tokenizer_folder))
    lite = FastTokenizer(tokenizer_folder)
    assert lite.pad_token_id == reference.pad_token_id
    assert lite.model_max_length == reference.model_max_length
    ours = build_windows(lite, QUESTIONS, CONTEXTS, settings)
    theirs = build_windows(reference, QUESTIONS, CONTEXTS, settings)
    assert len(ours) == len(theirs) >= len(QUESTIONS)
    for a, b in zip(ours, theirs):
        for name in ("input_ids", "token_type_ids", "context_mask", "offsets"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_answer_texts_are_recovered_the_same(tokenizer_folder):
    reference = load_tokenizer(str(tokenizer_folder))
    lite = FastTokenizer(tokenizer_folder)
    settings = WindowSettings("squad", 32, 16)
    for context in CONTEXTS:
        window = build_windows(lite, ["who?"], [context], settings)[0]
        ours = squad_text_recoverer(lite, context, do_lower_case=True)
        theirs = squad_text_recoverer(reference, context, do_lower_case=True)
        span = np.flatnonzero(window.context_mask)
        for start, end in [(span[0], span[0]), (span[0], span[-1]), (span[len(span) // 2], span[-1])]:
            assert ours(window, int(start), int(end)) == theirs(window, int(start), int(end))


def test_an_exported_folder_answers_without_importing_torch(tiny_bert, tmp_path):
    from squadkit.export import export_model

    folder = export_model(str(tiny_bert), tmp_path / "onnx", quantize="int8")
    code = (
        "import sys, json\n"
        "from squadkit import pipeline\n"
        f"qa = pipeline('question-answering', model={str(folder)!r})\n"
        "answer = qa(question='what does kabo like ?', context='kabo likes green tea .', top_k=2)\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules,\n"
        "                  'file': qa.model.model_file, 'answers': answer}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch"] is False and result["transformers"] is False
    assert result["file"].endswith("model.int8.onnx") and len(result["answers"]) == 2
    # and the same answers as with transformers' tokenizer of that folder
    from squadkit import pipeline

    reference = pipeline("question-answering", model=str(folder), tokenizer=str(folder))
    expected = reference(question="what does kabo like ?", context="kabo likes green tea .", top_k=2)
    assert [a["answer"] for a in result["answers"]] == [a["answer"] for a in expected]
    assert [round(a["score"], 5) for a in result["answers"]] == [round(a["score"], 5) for a in expected]


def test_passage_offsets_for_the_index_are_the_same(tokenizer_folder):
    from squadkit.retrieval.documents import tokenizer_offsets_fn

    ours = tokenizer_offsets_fn(FastTokenizer(tokenizer_folder))
    theirs = tokenizer_offsets_fn(load_tokenizer(str(tokenizer_folder)))
    for text in CONTEXTS + ["\r\n".join(CONTEXTS) * 30]:
        assert np.array_equal(ours(text), theirs(text))


def test_indexing_with_a_tokenizer_folder_imports_no_transformers(tiny_bert, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("kabo likes green tea .\n\nthe tea is green .", encoding="utf-8")
    code = (
        "import sys\n"
        "from squadkit.retrieval import build_index\n"
        f"report = build_index([{str(tmp_path / 'docs')!r}], {str(tmp_path / 'i.sqlite')!r}, "
        f"{{'tokenizer': {str(tiny_bert)!r}, 'max_tokens': 8, 'overlap': 2}})\n"
        "print(report.passages, 'transformers' in sys.modules, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    passages, transformers_loaded, torch_loaded = out.stdout.split()[-3:]
    assert int(passages) >= 2 and transformers_loaded == "False" and torch_loaded == "False"


def test_a_malformed_tokenizer_json_is_one_line(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="tokenizer.json: cannot read the tokenizer"):
        FastTokenizer(tmp_path)
