"""Squad mode gives run_squad's predictions: transformers 4.x's squad_convert_examples_to_features
+ compute_predictions_logits, on the same tiny models and the real dev slice.

run_squad used the slow tokenizer, padded every window to max_seq_length and did not pass
token_type_ids to RoBERTa; the reference below does the same.
"""

from __future__ import annotations

import json
import logging

import pytest

pytest.importorskip("transformers")
try:
    from transformers.data.metrics.squad_metrics import compute_predictions_logits
    from transformers.data.processors.squad import SquadResult, SquadV2Processor, squad_convert_examples_to_features
except ImportError:  # removed from newer transformers
    pytest.skip("this transformers release has no run_squad functions to compare with", allow_module_level=True)

from tiny_models import make_tiny_roberta  # noqa: E402

pytestmark = pytest.mark.parity

N_QUESTIONS = 40


@pytest.fixture(scope="module", params=[0, 1])
def model_dir(request, tmp_path_factory, roberta_tokenizer_dir):
    return make_tiny_roberta(tmp_path_factory.mktemp(f"squad-parity-{request.param}"), roberta_tokenizer_dir, seed=request.param)


@pytest.fixture(scope="module")
def dev_examples(squad_dev_path):
    examples = SquadV2Processor().get_dev_examples(str(squad_dev_path.parent), filename=squad_dev_path.name)
    return examples[::5][:N_QUESTIONS]


def run_squad_reference(model_dir, examples, max_seq_length, doc_stride, do_lower_case, threshold=0.0):
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    logging.getLogger("transformers").setLevel(logging.ERROR)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=False)
    features = squad_convert_examples_to_features(
        examples, tokenizer, max_seq_length=max_seq_length, doc_stride=doc_stride, max_query_length=64,
        is_training=False, tqdm_enabled=False, threads=1,
    )
    for i, feature in enumerate(features):
        feature.unique_id = i
    model = AutoModelForQuestionAnswering.from_pretrained(str(model_dir)).eval()
    results = []
    with torch.no_grad():
        for i in range(0, len(features), 16):
            chunk = features[i : i + 16]
            out = model(
                input_ids=torch.tensor([f.input_ids for f in chunk]),
                attention_mask=torch.tensor([f.attention_mask for f in chunk]),
            )
            for j, f in enumerate(chunk):
                results.append(SquadResult(f.unique_id, out.start_logits[j].tolist(), out.end_logits[j].tolist()))
    preds = compute_predictions_logits(
        examples, features, results, 20, 30, do_lower_case, None, None, None, False, True, threshold, tokenizer
    )
    return preds, features, results


def ours(model_dir, examples, **settings):
    from types import SimpleNamespace

    from squadkit.model import load as load_model
    from squadkit.predict import predict_squad
    from squadkit.settings import AnswerSettings

    records = [SimpleNamespace(id=e.qas_id, question=e.question_text, context=e.context_text) for e in examples]
    return predict_squad(load_model(str(model_dir), device="cpu"), records, AnswerSettings(**settings), batch_size=16)


@pytest.mark.parametrize("max_seq_length,doc_stride", [(384, 128), (96, 32)])
@pytest.mark.parametrize("do_lower_case", [False, True])
def test_legacy_mode_matches_run_squad(model_dir, dev_examples, max_seq_length, doc_stride, do_lower_case):
    reference, _, _ = run_squad_reference(model_dir, dev_examples, max_seq_length, doc_stride, do_lower_case)
    got = ours(model_dir, dev_examples, max_seq_length=max_seq_length, doc_stride=doc_stride, legacy=True, do_lower_case=do_lower_case)
    assert got.predictions == dict(reference)


def test_squad_mode_matches_run_squad_on_single_spaced_text(model_dir, dev_examples):
    """With the fast tokenizer the windows equal run_squad's wherever words are single-spaced (and with
    whole_words off, run_squad's answers: it could stop inside a word)."""
    examples = [e for e in dev_examples if "  " not in e.context_text and "\n" not in e.context_text]
    assert len(examples) > 20
    reference, _, _ = run_squad_reference(model_dir, examples, 96, 32, False)
    got = ours(model_dir, examples, max_seq_length=96, doc_stride=32, whole_words=False)
    assert got.predictions == dict(reference)


def test_null_odds_and_nbest_match_run_squad(model_dir, dev_examples, tmp_path):
    """The n-best lists (texts, logits, probabilities) and null odds equal run_squad's files."""
    import torch  # noqa: F401  (the reference needs it)
    from transformers import AutoTokenizer

    examples = dev_examples[:20]
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=False)
    _, features, results = run_squad_reference(model_dir, examples, 128, 64, False)
    nbest_file, odds_file = tmp_path / "nbest.json", tmp_path / "odds.json"
    compute_predictions_logits(examples, features, results, 20, 30, False, None, str(nbest_file), str(odds_file), False, True,
                               0.0, tokenizer)
    got = ours(model_dir, examples, max_seq_length=128, doc_stride=64, legacy=True)
    ref_nbest = json.loads(nbest_file.read_text())
    ref_odds = json.loads(odds_file.read_text())
    assert got.null_odds.keys() == ref_odds.keys()
    for qid in ref_odds:
        assert got.null_odds[qid] == pytest.approx(ref_odds[qid], abs=1e-4)
        ours_list = got.nbest[qid]
        assert [e.text for e in ours_list] == [e["text"] for e in ref_nbest[qid]]
        for a, b in zip(ours_list, ref_nbest[qid]):
            assert a.start_logit == pytest.approx(b["start_logit"], abs=1e-4)
            assert a.end_logit == pytest.approx(b["end_logit"], abs=1e-4)
            assert a.probability == pytest.approx(b["probability"], abs=1e-4)


def test_threshold_changes_predictions_as_run_squad(model_dir, dev_examples):
    examples = dev_examples[:30]
    for threshold in (-2.0, 3.0):
        reference, _, _ = run_squad_reference(model_dir, examples, 128, 64, False, threshold=threshold)
        got = ours(model_dir, examples, max_seq_length=128, doc_stride=64, legacy=True, null_score_diff_threshold=threshold)
        assert got.predictions == dict(reference)
