"""A reader for collections (issue 19): passage negatives, shared normalization, ask's threshold.

Tiny random models (tests/test_train_learns.py's task, tests/tiny_models.py) and hand-made data;
no shared data needed.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_train_learns import make_task_model, one_thread, task_records, to_squad, write_task_data  # noqa: F401
from typer.testing import CliRunner

from squadkit.cli import app
from squadkit.data import Answer, SquadExample, load_squad
from squadkit.errors import SquadkitError
from squadkit.train import TrainConfig, train
from squadkit.train.negatives import draw_negatives


def _example(qid: str, question: str, context: str, answer: str | None = None, title: str = "t") -> SquadExample:
    answers = [Answer(answer, context.index(answer))] if answer else []
    return SquadExample(qid, title, context, question, answers, [], not answers, 0, 0)


def _cfg(tmp_path: Path, base: Path, data: Path, name: str, **kw) -> TrainConfig:
    options = dict(version_2_with_negative=True, max_seq_length=64, doc_stride=32, per_gpu_train_batch_size=4,
                   num_train_epochs=1, save_steps=0, quiet=True, logging_steps=1,
                   features_cache_dir=str(tmp_path / "cache"))
    options.update(kw)
    return TrainConfig(model_name_or_path=str(base), output_dir=str(tmp_path / name), train_file=str(data), **options)


# ----------------------------------------------------------------------------------------------
# passage negatives
# ----------------------------------------------------------------------------------------------


def test_negatives_are_deterministic_for_a_seed_and_never_the_gold_paragraph(tmp_path):
    examples = load_squad(write_task_data(tmp_path / "train.json", 12, seed=3)).examples
    first = draw_negatives(examples, 2, seed=7)
    assert draw_negatives(examples, 2, seed=7).negatives == first.negatives  # the same for a seed
    assert draw_negatives(examples, 2, seed=8).negatives != first.negatives  # the seed matters
    for ex, negs in zip(examples, first.negatives):
        assert len(negs) == 2 and len(set(negs)) == 2
        assert all(first.paragraphs[p] != ex.context for p in negs)  # never the gold paragraph
        for a in ex.answers:
            assert all(a.text.lower() not in first.paragraphs[p].lower() for p in negs)
    assert first.stats["negatives"] == 2 * len(examples)


def test_a_paragraph_holding_the_answer_text_is_skipped_for_the_next_candidate():
    gold = "kabo likes tea . lofi likes rice ."
    repeat = "it is said that kabo likes tea very much ."  # BM25's best other paragraph, holds the answer text
    plain = "kabo likes jazz . nebo likes snow ."
    far = "mida likes gold ."
    q = _example("q1", "what does kabo like ?", gold, "kabo likes tea")
    others = [_example(f"o{i}", "what does mida like ?", c) for i, c in enumerate((repeat, plain, far))]
    draw = draw_negatives([q, *others], 1, seed=0)
    chosen = {draw.paragraphs[p] for p in draw.negatives[0]}
    assert repeat not in chosen and gold not in chosen and len(chosen) == 1
    assert draw.stats["candidates_dropped_for_answer_text"] >= 1


def test_negatives_become_unanswerable_windows_grouped_with_their_question(tmp_path, one_thread):
    from squadkit.features import WindowSettings
    from squadkit.train import make_train_features
    from transformers import AutoTokenizer

    base = make_task_model(tmp_path / "base", hidden=32)
    tok = AutoTokenizer.from_pretrained(str(base))
    examples = load_squad(write_task_data(tmp_path / "train.json", 6, seed=2)).examples
    settings = WindowSettings("squad", 64, 32, 64)
    plain = make_train_features(examples, tok, settings, True)
    grouped = make_train_features(examples, tok, settings, True, passage_negatives=1, seed=1)
    assert plain.group_offsets is None and plain.negative is None
    assert len(grouped.group_offsets) == len(examples) + 1
    assert grouped.stats["negative_windows"] == int(grouped.negative.sum()) > 0
    assert len(grouped) == len(plain) + grouped.stats["negative_windows"]
    # one window per negative paragraph, however long the paragraph
    assert grouped.stats["negative_windows"] == grouped.stats["passage_negatives"]["negatives"] == len(examples)
    # every negative window is labelled "no answer" (CLS), and sits after its question's own windows
    assert (grouped.start_positions[grouped.negative] == 0).all() and (grouped.end_positions[grouped.negative] == 0).all()
    for g in range(len(examples)):
        flags = grouped.negative[grouped.group_offsets[g]:grouped.group_offsets[g + 1]]
        assert not flags[0] and list(flags) == sorted(flags)
    # own windows keep the plain labels, in the plain order
    own = ~grouped.negative
    assert (grouped.start_positions[own] == plain.start_positions).all()
    # shared norm without negatives: the same windows, in the same order, one group per question
    same = make_train_features(examples, tok, settings, True, grouped=True)
    assert (same.input_ids == plain.input_ids).all() and (same.start_positions == plain.start_positions).all()


def test_a_long_negative_gives_the_one_window_closest_to_the_question(tmp_path):
    from transformers import AutoTokenizer

    from squadkit.features import WindowSettings, build_windows
    from squadkit.train.dataset import _closest_windows

    tok = AutoTokenizer.from_pretrained(str(make_task_model(tmp_path / "base", hidden=32)))
    filler = " ".join(["lobo likes red . mida likes blue ."] * 5)
    question = "what does kabo like ?"
    context = f"{filler} kabo likes jazz . {filler}"
    windows = build_windows(tok, [question], [context], WindowSettings("squad", 48, 16, 16), answers=[None])
    assert len(windows) > 2  # the paragraph spans several windows
    (chosen,) = _closest_windows(windows)
    text = tok.decode(chosen.input_ids[chosen.context_mask])
    assert "kabo likes jazz" in text and chosen.start_position == chosen.end_position == 0
    # ties go to the earlier window: a question sharing nothing picks the first
    (first,) = _closest_windows(build_windows(tok, ["nebo ?"], [filler], WindowSettings("squad", 48, 16, 16),
                                              answers=[None]))
    assert first.offsets[first.context_mask][0, 0] == 0


# ----------------------------------------------------------------------------------------------
# the shared-normalization loss
# ----------------------------------------------------------------------------------------------


def test_shared_norm_loss_equals_a_hand_computed_value():
    import torch

    from squadkit.train.loop import shared_norm_loss

    # question 0: two windows, the answer in window 1 (start 2, end 3); question 1: one window, no answer
    start = torch.tensor([[0.5, 1.0, 0.0, -1.0], [0.2, 0.0, 2.0, 0.1], [1.5, 0.3, -0.5, 9.0]])
    end = torch.tensor([[0.1, 0.0, 0.4, 0.3], [0.0, 0.5, 0.2, 1.2], [1.0, 0.2, 0.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]])  # the last token of window 2 is padding
    sp, ep = torch.tensor([0, 2, 0]), torch.tensor([0, 3, 0])
    group = torch.tensor([0, 0, 1])
    got = shared_norm_loss(start, end, sp, ep, mask, group, 2)

    def lse(xs):
        return math.log(sum(math.exp(x) for x in xs))

    s0 = lse([0.5, 1.0, 0.0, -1.0, 0.2, 0.0, 2.0, 0.1]) - 2.0  # the numerator: the answer window's start only
    e0 = lse([0.1, 0.0, 0.4, 0.3, 0.0, 0.5, 0.2, 1.2]) - 1.2
    s1 = lse([1.5, 0.3, -0.5]) - 1.5  # unanswerable: CLS; padding takes no part
    e1 = lse([1.0, 0.2, 0.0]) - 1.0
    assert got.tolist() == pytest.approx([(s0 + e0) / 2, (s1 + e1) / 2], abs=1e-6)
    # an unanswerable question with two windows: both CLS in the numerator
    both = shared_norm_loss(start[:2], end[:2], torch.tensor([0, 0]), torch.tensor([0, 0]), mask[:2],
                            torch.tensor([0, 0]), 1)
    s = lse([0.5, 1.0, 0.0, -1.0, 0.2, 0.0, 2.0, 0.1]) - lse([0.5, 0.2])
    e = lse([0.1, 0.0, 0.4, 0.3, 0.0, 0.5, 0.2, 1.2]) - lse([0.1, 0.0])
    assert both.item() == pytest.approx((s + e) / 2, abs=1e-6)


def test_shared_norm_loss_with_one_window_per_question_is_todays_loss():
    import torch

    from squadkit.train.loop import qa_loss, shared_norm_loss

    g = torch.Generator().manual_seed(0)
    start, end = torch.randn(6, 9, generator=g) * 3, torch.randn(6, 9, generator=g) * 3
    mask = torch.ones(6, 9, dtype=torch.long)
    mask[2, 6:] = 0
    mask[4, 3:] = 0
    sp, ep = torch.tensor([0, 3, 5, 0, 1, 2]), torch.tensor([0, 4, 5, 0, 2, 2])
    today = qa_loss(start, end, sp, ep, mask)
    shared = shared_norm_loss(start, end, sp, ep, mask, torch.arange(6), 6)
    assert torch.allclose(today, shared, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# training: the plain recipe unchanged; groups with the plan, resume, and the cost logged
# ----------------------------------------------------------------------------------------------


def test_plain_recipe_is_unchanged_and_shared_norm_with_one_window_matches_it(tmp_path, one_thread):
    from squadkit.train.dataset import features_cache_path

    base = make_task_model(tmp_path / "base", seed=3, hidden=32)
    data = write_task_data(tmp_path / "train.json", 8, seed=5)  # every context fits one 64-token window
    plain = train(_cfg(tmp_path, base, data, "plain", max_steps=3))
    shared = train(_cfg(tmp_path, base, data, "shared", max_steps=3, shared_norm=True))
    # the plain cache: the key as before (no extra), only the arrays it always had
    from transformers import AutoTokenizer

    key = features_cache_path(tmp_path / "cache", data, AutoTokenizer.from_pretrained(str(base)),
                              TrainConfig(model_name_or_path="", output_dir="", max_seq_length=64,
                                          doc_stride=32).window_settings(), True)
    assert plain.features_cache == key and shared.features_cache != key
    with np.load(key) as z:
        assert sorted(z.files) == ["end_positions", "has_types", "input_ids", "offsets", "start_positions", "stats",
                                   "token_type_ids"]
    losses = [[json.loads(x)["loss"] for x in (tmp_path / n / "log.jsonl").read_text().splitlines() if '"loss"' in x]
              for n in ("plain", "shared")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)  # one window per question: the same batches, same loss
    start = json.loads((tmp_path / "shared" / "log.jsonl").read_text().splitlines()[0])
    assert start["shared_norm"] is True and start["windows_per_epoch"] == plain.train_windows


def test_groups_are_never_split_across_processes_or_micro_batches():
    from squadkit.train.loop import StepPlan

    sizes = np.array([1, 3, 2, 1, 4, 2, 1, 1, 2, 3, 1])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    seen = []
    for rank in range(2):
        plan = StepPlan(len(sizes), 2, 2, 2, rank, 0, 0, sizes.astype(np.int64), offsets)
        for step in range(plan.steps_per_epoch):
            for _, mine, weight in plan.micro_batches(plan.batch_ids(step)):
                rows = plan.windows_of(mine)
                groups = plan.group_index(mine)
                assert len(rows) == len(groups) == sizes[mine].sum()
                for j, g in enumerate(mine):  # each group whole and contiguous
                    assert list(rows[groups == j]) == list(range(offsets[g], offsets[g + 1]))
                if weight:
                    seen += list(mine)
    assert sorted(seen) == list(range(len(sizes)))  # every question once per epoch


def test_collections_training_resumes_as_if_never_stopped(tmp_path, one_thread):
    from safetensors.torch import load_file

    from squadkit.train import TrainingInterrupted

    base = make_task_model(tmp_path / "base", seed=3, hidden=32)
    data = write_task_data(tmp_path / "train.json", 7, seed=5)
    kw = dict(passage_negatives=1, shared_norm=True, save_steps=2, max_steps=4)
    full = train(_cfg(tmp_path, base, data, "full", **kw))
    with pytest.raises(TrainingInterrupted):
        train(_cfg(tmp_path, base, data, "killed", interrupt_at_step=3, **kw))
    with pytest.raises(SquadkitError, match="shared_norm"):  # resumed with the other setting: refused
        train(_cfg(tmp_path, base, data, "killed", resume_from_checkpoint="auto", passage_negatives=1, save_steps=2,
                   max_steps=4))
    resumed = train(_cfg(tmp_path, base, data, "killed", resume_from_checkpoint="auto", **kw))
    assert resumed.global_step == full.global_step == 4
    a, b = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6


def test_do_eval_learns_ask_threshold_in_ask_mode(tmp_path, one_thread, monkeypatch):
    from squadkit.model_folder import read_settings
    from squadkit.train import ask_eval
    from squadkit.train.config import TrainWarning

    monkeypatch.setattr(ask_eval, "ASK_MIN_AUC", -1.0)  # the fit's mechanics; a tiny model's AUC is near chance
    base = make_task_model(tmp_path / "base", hidden=32)
    data = write_task_data(tmp_path / "train.json", 10, seed=1)
    dev = write_task_data(tmp_path / "dev.json", 10, seed=2)
    result = train(_cfg(tmp_path, base, data, "out", passage_negatives=1, shared_norm=True, do_eval=True,
                        predict_file=str(dev), ask_k=3))
    settings = read_settings(tmp_path / "out")
    asked = json.loads((tmp_path / "out" / "ask_eval_results.json").read_text())
    assert settings.ask_k == 3 and settings.ask_threshold == asked["threshold"]
    assert "k=3" in settings.ask_threshold_from and "dev.json + train.json" in settings.ask_threshold_from
    assert asked["total"] == 20 and asked["k"] == 3
    # both rules were fitted on the same readings, each threshold at k=3 and scored at k=1 and 3; the folder
    # keeps the rule with the better mean F1 over those k (then the better F1 at k=3, then normalised)
    by_rule = asked["best_f1_by_scoring"]
    assert set(by_rule) == {"raw", "normalized"} and settings.ask_scoring == asked["scoring"]
    assert by_rule[settings.ask_scoring] == pytest.approx(asked["f1"])
    by_k = asked["f1_by_k_by_scoring"]
    assert all(list(by_k[rule]) == ["1", "3"] and by_k[rule]["3"] == by_rule[rule] for rule in by_rule)
    mean = {rule: (by_k[rule]["1"] + by_k[rule]["3"]) / 2 for rule in by_rule}
    assert asked["mean_f1_by_scoring"] == pytest.approx(mean)
    chosen, other = settings.ask_scoring, "raw" if settings.ask_scoring == "normalized" else "normalized"
    assert (mean[chosen], by_rule[chosen]) >= (mean[other], by_rule[other])
    assert chosen == "normalized" or (mean["raw"], by_rule["raw"]) > (mean["normalized"], by_rule["normalized"])
    assert asked["threshold_by_scoring"][settings.ask_scoring] == settings.ask_threshold
    # the retriever's weight in the span ranking: the grid's weight with the best spans (the smallest of equals)
    from squadkit.train.ask_eval import RETRIEVAL_WEIGHTS

    span_f1 = {float(w): f for w, f in asked["span_f1_by_retrieval_weight"].items()}
    assert set(span_f1) == set(RETRIEVAL_WEIGHTS) and settings.ask_retrieval_weight == asked["retrieval_weight"]
    assert span_f1[settings.ask_retrieval_weight] == max(span_f1.values())
    assert all(span_f1[w] < max(span_f1.values()) for w in RETRIEVAL_WEIGHTS if w < settings.ask_retrieval_weight)
    assert settings.training["negative_windows"] == result.negative_windows > 0
    assert "ask_threshold" in (tmp_path / "out" / "README.md").read_text()
    assert "refused" not in asked and 0.0 <= asked["answerable_auc"] <= 1.0
    # a fit at chance is refused: one line, no ask threshold saved, ask keeps the single-passage rule
    monkeypatch.setattr(ask_eval, "ASK_MIN_AUC", 1.01)
    with pytest.warns(TrainWarning, match="no better than chance .* no ask threshold saved"):
        train(_cfg(tmp_path, base, data, "refused", passage_negatives=1, shared_norm=True, do_eval=True,
                   predict_file=str(dev), ask_k=3))
    refused = read_settings(tmp_path / "refused")
    assert refused.ask_threshold is None and refused.ask_scoring is None and refused.null_score_diff_threshold is not None
    assert "single-passage rule" in json.loads((tmp_path / "refused" / "ask_eval_results.json").read_text())["refused"]
    # the plain recipe learns none: its folder keeps today's keys
    train(_cfg(tmp_path, base, data, "plain", do_eval=True, predict_file=str(dev)))
    assert read_settings(tmp_path / "plain").ask_threshold is None
    assert not (tmp_path / "plain" / "ask_eval_results.json").exists()


# ----------------------------------------------------------------------------------------------
# bad input: one line, nothing written
# ----------------------------------------------------------------------------------------------


def test_too_small_a_file_and_k_out_of_range_are_refused_before_anything_is_written(tmp_path, one_thread):
    base = make_task_model(tmp_path / "base", hidden=32)
    small = tmp_path / "small.json"
    small.write_text(json.dumps(to_squad(task_records(2, seed=1))))  # 2 paragraphs
    with pytest.raises(SquadkitError, match=r"passage-negatives 2 needs at least 3 distinct paragraphs.*has 2"):
        train(_cfg(tmp_path, base, small, "out", passage_negatives=2))
    assert not (tmp_path / "out").exists()
    runner = CliRunner()
    common = ["train", "--model-name-or-path", str(base), "--do-train", "--version-2-with-negative", "--train-file",
              str(small), "--max-seq-length", "64", "--doc-stride", "32", "--output-dir", str(tmp_path / "cli")]
    for extra, message in ((["--passage-negatives", "5"], "needs at least 6 distinct paragraphs"),
                           (["--ask-k", "0"], "ask-k must be an integer from 1 to 50"),
                           (["--ask-k", "51"], "ask-k must be an integer from 1 to 50"),
                           (["--passage-negatives", "-1"], "passage-negatives must be an integer >= 0")):
        res = runner.invoke(app, common + extra)
        assert res.exit_code == 2, res.output
        assert message in res.output and len(res.output.strip().splitlines()) == 1
        assert not (tmp_path / "cli").exists()


# ----------------------------------------------------------------------------------------------
# ask: the folder's threshold, the old rule for old folders
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def collection(tmp_path, tiny_bert):
    from squadkit.retrieval import IndexSettings, build_index

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("the queen was born in paris . the king was born in rome .\n\nthe river is north of "
                                "the city .", encoding="utf-8")
    (docs / "b.txt").write_text("the first war was in the south . the new capital was built in london .",
                                encoding="utf-8")
    idx = tmp_path / "idx.sqlite"
    build_index([docs], idx, IndexSettings(tokenizer=str(tiny_bert), max_tokens=24, overlap=4))
    return idx


def _with_settings(tiny_bert: Path, folder: Path, **values) -> Path:
    shutil.copytree(tiny_bert, folder)
    path = folder / "squadkit.json"
    data = json.loads(path.read_text()) if path.is_file() else {"format": "squadkit-model-settings", "schema_version": 1}
    data.update(values)
    path.write_text(json.dumps(data))
    return folder


def test_a_folder_without_ask_threshold_answers_as_before_and_says_so_once(collection, tiny_bert, tmp_path):
    from squadkit.retrieval import DocumentQA
    import importlib

    from squadkit.retrieval.ask import AskNote, rank_answers, reader_threshold

    model = _with_settings(tiny_bert, tmp_path / "old", null_score_diff_threshold=0.25)
    importlib.import_module("squadkit.retrieval.ask")._NOTED.discard(str(model))
    with pytest.warns(AskNote, match="has no ask rule .*only with --passage-negatives or --shared-norm and --do-eval"):
        dqa = DocumentQA(collection, model=str(model))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second reader of the same folder says nothing
        again = DocumentQA(collection, model=str(model))
    threshold = dqa.settings.null_score_diff_threshold
    assert threshold == again.settings.null_score_diff_threshold == reader_threshold(dqa.model) == 0.25
    assert dqa.settings.scoring == "raw"
    q = "where was the queen born"
    result = dqa.ask(q, k=3, top_k=3)
    read = dqa.read([q], 3)[0]
    today = rank_answers(q, read.hits, read.nbests, 0.25, 3)  # the first rule: raw logit sums, min null
    assert dqa.settings.sources["null_score_diff_threshold"] == "model folder (squadkit.json: null_score_diff_threshold)"
    today.threshold_from = result.threshold_from
    assert result.scoring == "raw" and "scoring" not in result.to_dict()
    assert result.to_dict() == today.to_dict()
    assert result.null_score == min(e.start_logit + e.end_logit for nb in read.nbests for e in nb if e.text == "")


def test_ask_threshold_precedence_and_normalised_scores(collection, tiny_bert, tmp_path):
    from squadkit.retrieval import DocumentQA

    model = _with_settings(tiny_bert, tmp_path / "new", null_score_diff_threshold=0.25, ask_threshold=-1.5, ask_k=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no note for a folder with ask_threshold
        folder = DocumentQA(collection, model=str(model))
    assert (folder.settings.scoring == "normalized") and folder.settings.null_score_diff_threshold == -1.5 and folder.settings.k == 2  # folder
    assert DocumentQA(collection, model=str(model), threshold=3.0, k=4).settings.null_score_diff_threshold == 3.0  # argument beats folder
    result = folder.ask("where was the first king born", top_k=5)
    assert result.scoring == "normalized" and len(result.passages) == 2
    # log-probabilities under one softmax over every window read: spans and the null share it
    assert all(a.score <= 0 and a.probability == pytest.approx(math.exp(a.score)) for a in result.answers)
    best = result.answers[0].score
    assert result.no_answer == (result.null_score - best > -1.5)
    # CLI: the folder's rule; -k out of range is one line, exit 2
    res = CliRunner().invoke(app, ["ask", str(collection), "where was the queen born", "-m", str(model)])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{"):])
    assert out["threshold"] == -1.5 and out["scoring"] == "normalized"
    res = CliRunner().invoke(app, ["ask", str(collection), "where was the queen born", "-m", str(model), "-k", "51"])
    assert res.exit_code == 2 and "k must be at most 50" in res.output


def test_a_folder_fitted_under_the_raw_rule_ranks_raw_with_its_ask_threshold(collection, tiny_bert, tmp_path):
    from squadkit.retrieval import DocumentQA
    from squadkit.retrieval.ask import rank_answers

    model = _with_settings(tiny_bert, tmp_path / "raw", null_score_diff_threshold=0.25, ask_threshold=-0.75,
                           ask_k=3, ask_scoring="raw")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a fitted folder: no note
        dqa = DocumentQA(collection, model=str(model))
    assert dqa.settings.scoring == "raw" and dqa.settings.null_score_diff_threshold == -0.75 and dqa.settings.k == 3
    q = "where was the queen born"
    result, read = dqa.ask(q, top_k=3), dqa.read([q], 3)[0]
    assert result.scoring == "raw" and result.threshold == -0.75
    assert result.to_dict() == rank_answers(q, read.hits, read.nbests, -0.75, 3).to_dict()  # min null, raw logits
    # the other rule, forced: the folder's ask_threshold was not learned for it, so 0 (normalised) ...
    forced = DocumentQA(collection, model=str(model), scoring="normalized")
    assert forced.settings.scoring == "normalized" and forced.settings.null_score_diff_threshold == 0.0
    # ... and a folder fitted under the normalised rule, read under the raw one, falls back to its single-passage threshold
    other = _with_settings(tiny_bert, tmp_path / "norm", null_score_diff_threshold=0.25, ask_threshold=-1.5,
                           ask_scoring="normalized")
    assert DocumentQA(collection, model=str(other), scoring="raw").settings.null_score_diff_threshold == 0.25
    assert DocumentQA(collection, model=str(other), scoring="raw", threshold=2.0).settings.null_score_diff_threshold == 2.0  # argument first


def test_fit_retrieval_weight_takes_the_smallest_weight_with_the_best_spans(tmp_path):
    from squadkit.decode import NBestEntry
    from squadkit.retrieval import Hit
    from squadkit.retrieval.ask import Reading, rank_answers
    from squadkit.train.ask_eval import fit_retrieval_weight

    # two answerable questions; the retriever's best passage holds the answer, the reader prefers a span
    # of the worst one by 1.0 logit: z = (+1.22, 0, -1.22), so it takes a weight above 0.41 to fix
    data = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [
        {"context": "the queen was born in paris", "qas": [
            {"id": f"q{i}", "question": "where was the queen born", "is_impossible": False,
             "answers": [{"text": "paris", "answer_start": 22}]} for i in range(2)]}]}]}
    (tmp_path / "dev.json").write_text(json.dumps(data))
    dataset = load_squad(tmp_path / "dev.json")
    hits = [Hit(i, f"d{i}", 0, 27, t, s) for i, (t, s) in
            enumerate([("the queen was born in paris", 9.0), ("a king was born in rome .", 6.0),
                       ("her sister lives in milan", 3.0)])]
    nbests = [[NBestEntry("paris", 1.0, 1.0, start=22, end=27), NBestEntry("", 0.0, 0.0)],
              [NBestEntry("rome", 0.5, 0.5, start=19, end=23), NBestEntry("", 0.0, 0.0)],
              [NBestEntry("milan", 1.5, 1.5, start=20, end=25), NBestEntry("", 0.0, 0.0)]]
    reading = Reading(hits, nbests, [[] for _ in hits], {})

    class Reader:  # DocumentQA.rank's signature, raw rule
        def rank(self, question, read, k=None, top_k=1, threshold=None, retrieval_weight=None):
            return rank_answers(question, read.hits[:k], read.nbests[:k], threshold, top_k,
                                retrieval_weight=retrieval_weight or 0.0)

    weight, span_f1 = fit_retrieval_weight(Reader(), [reading, reading], dataset, 3)
    assert span_f1 == {0.0: 0.0, 0.25: 0.0, 0.5: 100.0, 1.0: 100.0, 2.0: 100.0, 4.0: 100.0} and weight == 0.5
    assert fit_retrieval_weight(Reader(), [reading, reading], dataset, 1)[0] == 0.0  # one passage: nothing to learn


def test_retrieval_weight_precedence_cli_and_http(collection, tiny_bert, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from squadkit.pipeline import QuestionAnswerer
    from squadkit.retrieval import DocumentQA
    from squadkit.retrieval.ask import rank_answers
    from squadkit.serve import ServeSettings, create_app

    model = _with_settings(tiny_bert, tmp_path / "new", ask_threshold=-1.5, ask_k=3, ask_scoring="raw",
                           ask_retrieval_weight=2.0)
    folder = DocumentQA(collection, model=str(model))
    assert folder.settings.retrieval_weight == 2.0 and "ask_retrieval_weight" in folder.settings.sources["retrieval_weight"]
    assert DocumentQA(collection, model=str(model), retrieval_weight=0).settings.retrieval_weight == 0.0  # argument wins
    q = "where was the first king born"
    read = folder.read([q], 3)[0]
    result = folder.ask(q, top_k=5)
    assert result.to_dict() == rank_answers(q, read.hits, read.nbests, -1.5, 5, read.windows, "raw", 2.0).to_dict()
    assert folder.ask(q, top_k=5, retrieval_weight=0.0).to_dict() == \
        rank_answers(q, read.hits, read.nbests, -1.5, 5, read.windows, "raw").to_dict()  # per call
    with pytest.raises(SquadkitError, match="retrieval_weight must be a number of at least 0"):
        folder.ask(q, retrieval_weight=-1.0)
    res = CliRunner().invoke(app, ["ask", str(collection), q, "-m", str(model), "--retrieval-weight", "0"])
    assert res.exit_code == 0 and "retrieval_weight" not in json.loads(res.stdout[res.stdout.index("{"):])
    res = CliRunner().invoke(app, ["ask", str(collection), q, "-m", str(model), "--retrieval-weight", "-1"])
    assert res.exit_code == 2 and "--retrieval-weight must be a number of at least 0" in res.output
    qa = QuestionAnswerer(str(model), backend="torch", device="cpu")
    with TestClient(create_app(qa, ServeSettings(access_log=False), index=collection)) as client:
        assert client.post("/v1/ask", json={"question": q}).json()["retrieval_weight"] == 2.0  # the folder's
        body = client.post("/v1/ask", json={"question": q, "retrieval_weight": 0.5}).json()
        assert body["retrieval_weight"] == 0.5
        r = client.post("/v1/ask", json={"question": q, "retrieval_weight": -1})
        assert r.status_code == 422 and r.json()["error"].startswith("retrieval_weight")
    bad = _with_settings(tiny_bert, tmp_path / "bad", ask_threshold=-1.5, ask_retrieval_weight=-2)
    res = CliRunner().invoke(app, ["ask", str(collection), q, "-m", str(bad)])
    assert res.exit_code == 2 and "squadkit.json" in res.output and "'ask_retrieval_weight'" in res.output


def test_a_bad_ask_scoring_in_the_folder_is_one_line(collection, tiny_bert, tmp_path):
    model = _with_settings(tiny_bert, tmp_path / "bad", ask_threshold=-1.5, ask_scoring="softmax")
    res = CliRunner().invoke(app, ["ask", str(collection), "where was the queen born", "-m", str(model)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "squadkit.json" in res.output and "'ask_scoring' must be one of raw, normalized" in res.output


@pytest.mark.slow
def test_two_processes_with_shared_norm_match_one_process(tmp_path):
    """DDP: each process gets whole questions (groups); two processes with B questions each train the
    same model as one with 2B (the loss is the mean over the global batch's questions)."""
    from safetensors.torch import load_file
    from test_train_distributed import TOLERANCE, _torchrun

    base = make_task_model(tmp_path / "base", seed=1, hidden=32, dropout=0.0)
    data = write_task_data(tmp_path / "train.json", 7, seed=4)  # 14 questions: 4 steps of 4, the last one short
    common = ["--model_name_or_path", str(base), "--do_train", "--version_2_with_negative", "--train_file", str(data),
              "--max_seq_length", "64", "--doc_stride", "32", "--learning_rate", "1e-3", "--num_train_epochs", "1",
              "--save_steps", "0", "--logging_steps", "1", "--features_cache_dir", str(tmp_path / "cache"), "--quiet",
              "--passage_negatives", "1", "--shared_norm"]
    two = _torchrun(["train", *common, "--output_dir", str(tmp_path / "two"), "--per_gpu_train_batch_size", "2"],
                    tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    one = CliRunner().invoke(app, ["train", *common, "--output_dir", str(tmp_path / "one"),
                                   "--per_gpu_train_batch_size", "4"])
    assert one.exit_code == 0, one.output
    start = json.loads((tmp_path / "two" / "log.jsonl").read_text().splitlines()[0])
    assert start["processes"] == 2 and start["total_steps"] == 4 and start["negative_windows"] > 0
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a if k != "qa_outputs.bias") <= TOLERANCE
    losses = [[json.loads(x)["loss"] for x in (tmp_path / n / "log.jsonl").read_text().splitlines() if '"loss"' in x]
              for n in ("one", "two")]
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], abs=1e-4)


def test_serve_ask_reads_the_folders_ask_threshold(collection, tiny_bert, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from squadkit.pipeline import QuestionAnswerer
    from squadkit.serve import ServeSettings, create_app

    model = _with_settings(tiny_bert, tmp_path / "new", ask_threshold=-1.5, ask_k=2)
    qa = QuestionAnswerer(str(model), backend="torch", device="cpu")
    with TestClient(create_app(qa, ServeSettings(access_log=False), index=collection)) as client:
        body = client.post("/v1/ask", json={"question": "where was the first king born"}).json()
        assert body["threshold"] == -1.5 and body["scoring"] == "normalized"  # folder: threshold and k
        assert len({a["document"] for a in body["answers"]}) <= 2
        r = client.post("/v1/ask", json={"question": "where was the first king born", "k": 51})
        assert r.status_code == 422 and r.json()["error"].startswith("k")
