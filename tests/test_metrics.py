"""squadkit.metrics against the official SQuAD v2.0 rules, to the last digit.

The expected numbers come from a second, deliberately naive implementation in this file: plain
loops over the raw JSON (not through squadkit.data), a direct transcription of the rules of
``evaluate-v2.0.py`` / ``evaluate-v1.1.py``, no numpy. Every key is compared with ``==``.
A few cases are also checked against numbers reasoned out by hand.
"""

from __future__ import annotations

import collections
import math
import json
import random
import re
import string
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squadkit import metrics
from squadkit.errors import SquadkitError
from squadkit.metrics import (
    compute_exact,
    compute_f1,
    evaluate,
    find_best_thresh,
    get_raw_scores,
    normalize_answer,
    precision_recall_eval,
)

# ---------------------------------------------------------------------------------------------
# the naive reference
# ---------------------------------------------------------------------------------------------

_PUNCT = set(string.punctuation)


def ref_normalize(s):
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def ref_tokens(s):
    return ref_normalize(s).split() if s else []


def ref_exact(gold, pred):
    return int(ref_normalize(gold) == ref_normalize(pred))


def ref_f1(gold, pred):
    g, p = ref_tokens(gold), ref_tokens(pred)
    if len(g) == 0 or len(p) == 0:
        return int(g == p)
    same = sum((collections.Counter(g) & collections.Counter(p)).values())
    if same == 0:
        return 0
    precision = 1.0 * same / len(p)
    recall = 1.0 * same / len(g)
    return (2 * precision * recall) / (precision + recall)


def ref_questions(squad_json):
    return [qa for article in squad_json["data"] for para in article["paragraphs"] for qa in para["qas"]]


def ref_best(preds, scores, na_probs, has_ans):
    cur = sum(1 for q in has_ans if not has_ans[q])
    best, best_t = cur, 0.0
    for q in sorted(na_probs, key=lambda k: na_probs[k]):
        if q not in scores:
            continue
        if has_ans[q]:
            d = scores[q]
        elif preds[q]:
            d = -1
        else:
            d = 0
        cur += d
        if cur > best:
            best, best_t = cur, na_probs[q]
    return 100.0 * best / len(scores), best_t


def ref_ap(scores, na_probs, num_true_pos, has_ans):
    order = sorted(na_probs, key=lambda k: na_probs[k])
    tp, avg, recalls = 0.0, 0.0, [0.0]
    for i, q in enumerate(order):
        if has_ans[q]:
            tp += scores[q]
        p = tp / float(i + 1)
        r = tp / float(num_true_pos)
        if i == len(order) - 1 or na_probs[q] != na_probs[order[i + 1]]:
            avg += p * (r - recalls[-1])
            recalls.append(r)
    return 100.0 * avg


def ref_evaluate(squad_json, preds, na_probs=None, thresh=1.0, best_always=False, pr=False):
    """Official rules on the questions that have a prediction (the official script crashes otherwise)."""
    qas = [qa for qa in ref_questions(squad_json) if qa["id"] in preds]
    has_ans = {qa["id"]: bool(qa["answers"]) for qa in qas}
    exact, f1 = {}, {}
    for qa in qas:
        golds = [a["text"] for a in qa["answers"] if ref_normalize(a["text"])] or [""]
        exact[qa["id"]] = max(ref_exact(g, preds[qa["id"]]) for g in golds)
        f1[qa["id"]] = max(ref_f1(g, preds[qa["id"]]) for g in golds)
    probs = {k: 0.0 for k in preds} if na_probs is None else {k: v for k, v in na_probs.items() if k in has_ans}
    ex_t = {q: float(not has_ans[q]) if probs[q] > thresh else s for q, s in exact.items()}
    f1_t = {q: float(not has_ans[q]) if probs[q] > thresh else s for q, s in f1.items()}
    out = {}

    def block(prefix, ids):
        out[prefix + "exact"] = 100.0 * sum(ex_t[k] for k in ids) / len(ids)
        out[prefix + "f1"] = 100.0 * sum(f1_t[k] for k in ids) / len(ids)
        out[prefix + "total"] = len(ids)

    block("", list(ex_t))
    for prefix, flag in (("HasAns_", True), ("NoAns_", False)):
        ids = [q for q in has_ans if has_ans[q] == flag]
        if ids:
            block(prefix, ids)
    if na_probs is not None or best_always:
        out["best_exact"], out["best_exact_thresh"] = ref_best(preds, exact, probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = ref_best(preds, f1, probs, has_ans)
    n_pos = sum(has_ans.values())
    if na_probs is not None and pr and n_pos:
        probs_scored = {k: v for k, v in probs.items() if k in exact}
        out["pr_exact_ap"] = ref_ap(exact, probs_scored, n_pos, has_ans)
        out["pr_f1_ap"] = ref_ap(f1, probs_scored, n_pos, has_ans)
        out["pr_oracle_ap"] = ref_ap({k: float(v) for k, v in has_ans.items()}, probs_scored, n_pos, has_ans)
    return out


def ref_v1_f1(gold, pred):
    p, g = ref_normalize(pred).split(), ref_normalize(gold).split()
    same = sum((collections.Counter(p) & collections.Counter(g)).values())
    if same == 0:
        return 0
    precision, recall = 1.0 * same / len(p), 1.0 * same / len(g)
    return (2 * precision * recall) / (precision + recall)


def ref_evaluate_v1(squad_json, preds):
    em = f1 = total = 0
    for qa in ref_questions(squad_json):
        total += 1
        if qa["id"] not in preds:
            continue
        truths = [a["text"] for a in qa["answers"]]
        em += max(ref_normalize(preds[qa["id"]]) == ref_normalize(t) for t in truths)
        f1 += max(ref_v1_f1(t, preds[qa["id"]]) for t in truths)
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}


# ---------------------------------------------------------------------------------------------
# normalization and per-question scores
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The Cat!", "cat"),
        ("  an   apple,  a pear ", "apple pear"),
        ("another theatre", "another theatre"),  # articles only as whole words
        ("t.he end", "end"),  # punctuation goes first, then "the" is an article
        ("A.n", ""),
        ("(a) b-c's", "bcs"),
        ("Cobham–Edmonds thesis", "cobham–edmonds thesis"),  # en dash is not ASCII punctuation
        ("“Hello,” she said", "“hello” she said"),  # curly quotes survive, the comma goes
        ("Robert of JUMIÈGES", "robert of jumièges"),
        ("P ⊆ NP", "p ⊆ np"),
        ("", ""),
        ("!?.", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected
    assert ref_normalize(raw) == expected


def test_unicode_punctuation_is_a_token():
    assert compute_exact("Hello world", "“Hello” – world") == 0
    # tokens: gold {hello, world}; pred {“hello”, –, world}: one shared token, p = 1/3, r = 1/2
    assert compute_f1("Hello world", "“Hello” – world") == pytest.approx(0.4)
    assert compute_f1("Hello world", '"Hello" - world') == 1.0  # ASCII quotes and hyphen vanish


def test_empty_answers():
    assert compute_exact("", "") == 1
    assert compute_f1("", "") == 1
    assert compute_f1("", "x") == 0
    assert compute_f1("x", "") == 0
    assert compute_f1("the", "a") == 1  # both normalize to no tokens
    assert compute_f1("the", "cat") == 0


def test_multiset_counting():
    # {cat: 2, dog: 1} & {cat: 1, dog: 2} = 2 shared of 3 on each side
    assert compute_f1("cat cat dog", "cat dog dog") == pytest.approx(2 / 3)
    # a repeated prediction token counts once against a single gold one: p = 1/2, r = 1
    assert compute_f1("cat", "cat cat") == pytest.approx(2 / 3)
    assert compute_f1("cat dog", "dog cat") == 1.0
    assert compute_exact("cat dog", "dog cat") == 0


def test_punctuation_only_gold_is_dropped():
    gold = {"q": ["...", "!"]}
    exact, f1 = get_raw_scores(gold, {"q": ""}, report_missing=None)
    assert exact == {"q": 1} and f1 == {"q": 1}  # gold became [''], only '' is right
    exact, f1 = get_raw_scores(gold, {"q": "dots"}, report_missing=None)
    assert exact == {"q": 0} and f1 == {"q": 0}
    # ... but answerability is decided on the raw list: it counts as HasAns
    out = evaluate(gold, {"q": ""}, report_missing=None)
    assert out["HasAns_total"] == 1 and "NoAns_total" not in out
    assert out["exact"] == 100.0


def test_dropping_keeps_the_other_golds():
    exact, f1 = get_raw_scores({"q": ["?", "Paris"]}, {"q": "paris"}, report_missing=None)
    assert exact == {"q": 1} and f1 == {"q": 1}
    exact, _ = get_raw_scores({"q": ["?", "Paris"]}, {"q": ""}, report_missing=None)
    assert exact == {"q": 0}


_ALPHABET = ["the", "a", "An", "cat", "Cat", "dog", "dogs", "!", ".", ",", "–", "“", "x", " ", "  ", "é"]
_text = st.lists(st.sampled_from(_ALPHABET), max_size=6).map(lambda parts: " ".join(parts))


@settings(max_examples=300, deadline=None)
@given(golds=st.lists(_text, max_size=3), pred=_text)
def test_em_le_f1_property(golds, pred):
    exact, f1 = get_raw_scores({"q": golds}, {"q": pred}, report_missing=None)
    e, f = exact["q"], f1["q"]
    assert 0 <= e <= f <= 1
    if e == 1:
        assert f == 1
    out = evaluate({"q": golds}, {"q": pred}, report_missing=None)
    assert 0.0 <= out["exact"] <= out["f1"] <= 100.0
    # and the same values as the naive reference
    ref_golds = [g for g in golds if ref_normalize(g)] or [""]
    assert e == max(ref_exact(g, pred) for g in ref_golds)
    assert f == max(ref_f1(g, pred) for g in ref_golds)


# ---------------------------------------------------------------------------------------------
# threshold walk and PR curves: hand-worked and randomized against the loops
# ---------------------------------------------------------------------------------------------


def test_best_always_model_card_case():
    # no na-probs: all 0.0, walked in prediction order; the walk peaks after q1, before q2's -1
    gold = {"q1": ["x"], "q2": []}
    preds = {"q1": "x", "q2": "y"}
    out = evaluate(gold, preds, report_missing=None)
    assert out["exact"] == 50.0 and "best_exact" not in out
    out = evaluate(gold, preds, best_always=True, report_missing=None)
    assert out["best_exact"] == 100.0 and out["best_exact_thresh"] == 0.0
    assert out["best_f1"] == 100.0 and out["best_f1_thresh"] == 0.0
    assert list(out)[-4:] == ["best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh"]


def test_threshold_applies_strictly_above():
    gold = {"a": ["x"], "b": []}
    preds = {"a": "x", "b": "y"}
    out = evaluate(gold, preds, {"a": 0.5, "b": 0.5}, na_prob_thresh=0.5, report_missing=None)
    assert out["exact"] == 50.0  # 0.5 is not above 0.5: nothing abstains
    out = evaluate(gold, preds, {"a": 0.5, "b": 0.6}, na_prob_thresh=0.5, report_missing=None)
    assert out["exact"] == 100.0 and out["NoAns_exact"] == 100.0
    # best walk: start 1 (abstain everywhere), a +1 -> 2 at 0.5, b -1 -> 1
    assert out["best_exact"] == 100.0 and out["best_exact_thresh"] == 0.5


def test_best_thresh_keeps_the_file_value_type():
    gold = {"a": ["x"], "b": []}
    out = evaluate(gold, {"a": "x", "b": ""}, {"b": 0, "a": 1}, report_missing=None)
    assert out["best_exact_thresh"] == 1 and type(out["best_exact_thresh"]) is int


def test_pr_hand_worked(tmp_path):
    has = {"a": True, "b": True, "c": False}
    scores = {"a": 1, "b": 0, "c": 1}
    # a: p=1, r=.5 -> .5 ; b: p=.5, r=.5 -> +0 ; c: p=1/3, r=.5 -> +0
    assert precision_recall_eval(scores, {"a": 0.1, "b": 0.2, "c": 0.9}, 2, has) == {"ap": 50.0}
    # a and b tie: no threshold between them, the first point is b's (p=.5, r=.5)
    assert precision_recall_eval(scores, {"a": 0.5, "b": 0.5, "c": 0.9}, 2, has) == {"ap": 25.0}
    oracle = {"a": 1.0, "b": 1.0, "c": 0.0}
    assert precision_recall_eval(oracle, {"a": 0.1, "b": 0.2, "c": 0.9}, 2, has) == {"ap": 100.0}


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.booleans(), st.sampled_from([0, 1, 0.5, 0.25, 2 / 3, 0.1]), st.booleans(),
                  st.sampled_from([0.0, 0.1, 0.1, 0.5, 0.9, 1.0, 1])),
        min_size=1, max_size=40,
    ),
    seed=st.integers(0, 1000),
)
def test_walk_and_pr_match_the_loops(rows, seed):
    """numpy cumsum + stable argsort == the official += loops, ties in mapping order, bit for bit."""
    has = {f"q{i}": r[0] for i, r in enumerate(rows)}
    scores = {f"q{i}": (r[1] if r[0] else int(not r[2])) for i, r in enumerate(rows)}
    preds = {f"q{i}": ("ans" if r[2] else "") for i, r in enumerate(rows)}
    keys = list(has)
    random.Random(seed).shuffle(keys)
    na = {k: rows[int(k[1:])][3] for k in keys}
    got = find_best_thresh(preds, scores, na, has)
    want = ref_best(preds, scores, na, has)
    assert got == want and type(got[1]) is type(want[1])
    n_pos = sum(has.values())
    if n_pos:
        assert precision_recall_eval(scores, na, n_pos, has)["ap"] == ref_ap(scores, na, n_pos, has)


# ---------------------------------------------------------------------------------------------
# golden tests on the real dev slice
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev(squad_dev_path):
    from squadkit.data import load_squad

    raw = json.loads(squad_dev_path.read_text(encoding="utf-8"))
    return raw, load_squad(squad_dev_path)


def _perfect(raw):
    return {qa["id"]: (qa["answers"][0]["text"] if qa["answers"] else "") for qa in ref_questions(raw)}


def _partly_wrong(raw, seed=1234):
    rng = random.Random(seed)
    qas = ref_questions(raw)
    all_texts = [a["text"] for qa in qas for a in qa["answers"] + qa.get("plausible_answers", [])]
    preds = {}
    for i, qa in enumerate(qas):
        answers = [a["text"] for a in qa["answers"]]
        kind = i % 6
        if kind == 0 and answers:
            preds[qa["id"]] = answers[-1]
        elif kind == 1 and answers:  # drop the last word, add a wrong one
            words = answers[0].split()
            preds[qa["id"]] = " ".join(words[:-1] + ["extra"])
        elif kind == 2:
            preds[qa["id"]] = rng.choice(all_texts)
        elif kind == 3:
            preds[qa["id"]] = ""
        elif kind == 4 and qa.get("plausible_answers"):
            preds[qa["id"]] = qa["plausible_answers"][0]["text"]
        elif answers:  # case, punctuation and an article: normalizes to the gold
            preds[qa["id"]] = "The " + answers[0].upper() + "!"
        else:
            preds[qa["id"]] = rng.choice(all_texts) + " " + rng.choice(all_texts)
    return preds


def _na_probs(raw, seed=7):
    """Rounded to 1 decimal, so ties are common; some ints; keys in an order other than the data's."""
    rng = random.Random(seed)
    ids = [qa["id"] for qa in ref_questions(raw)]
    rng.shuffle(ids)
    out = {}
    for i, qid in enumerate(ids):
        out[qid] = rng.choice([0, 1]) if i % 17 == 0 else round(rng.random(), 1)
    return out


def _assert_same(got, want):
    assert list(got) == list(want)
    for key in want:
        assert got[key] == want[key], key
        assert type(got[key]) is type(want[key]), key


def test_dev_slice_counts(dev):
    raw, ds = dev
    out = evaluate(ds, _perfect(raw), report_missing=None)
    assert (out["total"], out["HasAns_total"], out["NoAns_total"]) == (626, 293, 333)
    assert "v1.1" not in out


def test_dev_perfect_by_hand(dev):
    raw, ds = dev
    na = _na_probs(raw)
    out = evaluate(ds, _perfect(raw), na, report_missing=None)
    for key in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_exact", "best_f1"):
        assert out[key] == 100.0, key
    # the walk reaches 626 at the last answerable question in na-prob order
    answerable = [qa["id"] for qa in ref_questions(raw) if qa["answers"]]
    assert out["best_exact_thresh"] == max(na[q] for q in answerable)


def test_dev_all_empty_by_hand(dev):
    raw, ds = dev
    preds = {qa["id"]: "" for qa in ref_questions(raw)}
    out = evaluate(ds, preds, _na_probs(raw), report_missing=None)
    assert out["exact"] == out["f1"] == 100.0 * 333 / 626
    assert out["HasAns_exact"] == out["HasAns_f1"] == 0.0
    assert out["NoAns_exact"] == out["NoAns_f1"] == 100.0
    # nothing in the walk ever beats abstaining everywhere
    assert out["best_exact"] == out["best_f1"] == 100.0 * 333 / 626
    assert out["best_exact_thresh"] == out["best_f1_thresh"] == 0.0


@pytest.mark.parametrize("predictions", ["perfect", "empty", "partly_wrong"])
@pytest.mark.parametrize("thresh", [None, 0.0, 0.3, 0.5, 0.99, 1.0])
def test_dev_against_reference(dev, predictions, thresh):
    raw, ds = dev
    preds = {"perfect": _perfect, "partly_wrong": _partly_wrong}.get(
        predictions, lambda r: {qa["id"]: "" for qa in ref_questions(r)})(raw)
    if thresh is None:  # no na-prob file
        _assert_same(evaluate(ds, preds, report_missing=None), ref_evaluate(raw, preds))
        _assert_same(evaluate(ds, preds, best_always=True, report_missing=None),
                     ref_evaluate(raw, preds, best_always=True))
    else:
        na = _na_probs(raw)
        got = evaluate(ds, preds, na, na_prob_thresh=thresh, report_missing=None)
        _assert_same(got, ref_evaluate(raw, preds, na, thresh))


def test_dev_partly_wrong_is_not_trivial(dev):
    raw, ds = dev
    out = evaluate(ds, _partly_wrong(raw), _na_probs(raw), na_prob_thresh=0.5, report_missing=None)
    assert 10 < out["exact"] < out["f1"] < 90
    assert out["best_f1"] > out["f1"]


def test_dev_missing_predictions(dev):
    raw, ds = dev
    preds = _partly_wrong(raw)
    ids = [qa["id"] for qa in ref_questions(raw)]
    dropped = ids[::7]
    for qid in dropped:
        del preds[qid]
    preds["not-a-question-id"] = "ignored"
    lines = []
    na = _na_probs(raw)
    got = evaluate(ds, preds, na, na_prob_thresh=0.5, report_missing=lines.append, out_image_dir=None)
    assert lines == [f"Missing prediction for {q}" for q in dropped]
    assert got["total"] == 626 - len(dropped)
    assert got["HasAns_total"] + got["NoAns_total"] == got["total"]
    _assert_same(got, ref_evaluate(raw, preds, na, 0.5))
    # perfect predictions stay perfect on the predicted subset
    perfect = _perfect(raw)
    for qid in dropped:
        del perfect[qid]
    out = evaluate(ds, perfect, report_missing=None)
    assert out["exact"] == out["f1"] == 100.0 and out["total"] == 626 - len(dropped)


def test_dev_missing_prediction_prints_to_stdout_by_default(dev, capsys):
    raw, ds = dev
    preds = _perfect(raw)
    first = next(iter(preds))
    del preds[first]
    evaluate(ds, preds)
    assert capsys.readouterr().out == f"Missing prediction for {first}\n"


def test_dev_pr_curves(dev, tmp_path):
    pytest.importorskip("matplotlib", reason="the PR images need the plot extra")
    raw, ds = dev
    preds, na = _partly_wrong(raw), _na_probs(raw)
    got = evaluate(ds, preds, na, out_image_dir=tmp_path / "img", report_missing=None)
    _assert_same(got, ref_evaluate(raw, preds, na, 1.0, pr=True))
    assert sorted(p.name for p in (tmp_path / "img").iterdir()) == [
        "na_prob_hist_hasAns.png", "na_prob_hist_noAns.png", "pr_exact.png", "pr_f1.png", "pr_oracle.png"]
    assert 0 < got["pr_exact_ap"] <= got["pr_f1_ap"] and got["pr_oracle_ap"] <= 100.0


def test_pr_needs_na_probs_and_answerable_questions(tmp_path):
    pytest.importorskip("matplotlib", reason="the PR images need the plot extra")
    gold = {"a": [], "b": []}
    out = evaluate(gold, {"a": "", "b": "x"}, out_image_dir=tmp_path / "none", report_missing=None)
    assert not (tmp_path / "none").exists() and "pr_exact_ap" not in out
    # no answerable question: no curves, no pr keys, but the noAns histogram (official behaviour)
    out = evaluate(gold, {"a": "", "b": "x"}, {"a": 0.2, "b": 0.7}, out_image_dir=tmp_path / "img",
                   report_missing=None)
    assert "pr_exact_ap" not in out
    assert [p.name for p in (tmp_path / "img").iterdir()] == ["na_prob_hist_noAns.png"]


# ---------------------------------------------------------------------------------------------
# SQuAD v1.1
# ---------------------------------------------------------------------------------------------


def _as_v1(raw):
    """The answerable questions of the slice in v1.1 form (no is_impossible, no plausible_answers)."""
    data = []
    for article in raw["data"]:
        paras = []
        for para in article["paragraphs"]:
            qas = [{"id": qa["id"], "question": qa["question"], "answers": qa["answers"]}
                   for qa in para["qas"] if qa["answers"]]
            if qas:
                paras.append({"context": para["context"], "qas": qas})
        data.append({"title": article["title"], "paragraphs": paras})
    return {"version": "1.1", "data": data}


def test_v1_dataset_reports_v1_keys(dev, tmp_path):
    from squadkit.data import load_squad

    raw, _ = dev
    v1 = _as_v1(raw)
    path = tmp_path / "dev-v1.1.json"
    path.write_text(json.dumps(v1), encoding="utf-8")
    ds = load_squad(path)
    preds = _partly_wrong(raw)
    preds = {qa["id"]: preds[qa["id"]] for qa in ref_questions(v1)}
    del preds[next(iter(preds))]  # v1.1: a missing prediction scores 0 but stays in the total
    got = evaluate(ds, preds, report_missing=None)
    want_v2 = ref_evaluate(v1, preds)
    assert got["v1.1"] == ref_evaluate_v1(v1, preds)
    assert list(got) == list(want_v2) + ["v1.1"]
    assert got["total"] == 292 and got["HasAns_total"] == 292
    assert got["v1.1"]["exact_match"] == pytest.approx(got["exact"] * 292 / 293)


def test_v1_and_v2_differ_on_empty_normalized_answers():
    gold = {"q": [".", "x"]}  # v1.1 data: every list non-empty
    out = evaluate(gold, {"q": ""}, report_missing=None)
    assert out["exact"] == 0.0 and out["f1"] == 0.0  # v2 drops "." and keeps only "x"
    assert out["v1.1"] == {"exact_match": 100.0, "f1": 0.0}  # v1: "." == "" exactly; F1 0 shared tokens


def test_v2_data_has_no_v1_keys():
    assert "v1.1" not in evaluate({"a": ["x"], "b": []}, {"a": "x", "b": ""}, report_missing=None)


# ---------------------------------------------------------------------------------------------
# bad input and loading
# ---------------------------------------------------------------------------------------------


def test_no_predictions_at_all():
    with pytest.raises(SquadkitError, match="none of the 1 questions"):
        evaluate({"a": ["x"]}, {"b": "x"}, report_missing=None)


def test_na_probs_must_cover_predictions():
    with pytest.raises(SquadkitError, match="first: b"):
        evaluate({"a": ["x"], "b": []}, {"a": "x", "b": ""}, {"a": 0.1, "zz": 0.3}, report_missing=None)


def test_bad_gold():
    with pytest.raises(SquadkitError):
        evaluate({"a": "x"}, {"a": "x"}, report_missing=None)


@pytest.mark.parametrize(
    "text, fragment",
    [('{"a": 1}', "must be a string"), ('["x"]', "JSON object"), ('{"a": "x"', "malformed JSON"),
     ('{"a": null}', "must be a string")],
)
def test_load_predictions_errors(tmp_path, text, fragment):
    path = tmp_path / "preds.json"
    path.write_text(text)
    with pytest.raises(SquadkitError, match=fragment) as info:
        metrics.load_predictions(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "text, fragment",
    [('{"a": "0.5"}', "must be a number"), ('{"a": NaN}', "NaN"), ('{"a": true}', "must be a number"),
     ('[0.5]', "JSON object"), ('{"a": 0.', "malformed JSON")],
)
def test_load_na_probs_errors(tmp_path, text, fragment):
    path = tmp_path / "na.json"
    path.write_text(text)
    with pytest.raises(SquadkitError, match=fragment) as info:
        metrics.load_na_probs(path)
    assert str(path) in str(info.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(SquadkitError, match="not found"):
        metrics.load_predictions(tmp_path / "nope.json")


# ---------------------------------------------------------------------------------------------
# speed sanity (prints the time, asserts only the numbers)
# ---------------------------------------------------------------------------------------------


def test_full_dev_size_runs(capsys):
    rng = random.Random(0)
    words = ["the", "Normans", "France", "1066", "king", "river", "a", "an", "duke", "“Rollo”", "Seine,", "–"]
    squad = {"data": [{"title": "t", "paragraphs": [{"context": "", "qas": []}]}]}
    qas = squad["data"][0]["paragraphs"][0]["qas"]
    preds, na = {}, {}
    for i in range(11873):
        answerable = i % 2 == 0
        golds = [" ".join(rng.choices(words, k=rng.randint(1, 6))) for _ in range(rng.randint(1, 3))] if answerable else []
        qas.append({"id": f"q{i}", "answers": [{"text": g} for g in golds]})
        preds[f"q{i}"] = " ".join(rng.choices(words, k=rng.randint(0, 5)))
        na[f"q{i}"] = round(rng.random(), 3)
    gold = {qa["id"]: [a["text"] for a in qa["answers"]] for qa in qas}
    start = time.perf_counter()
    got = evaluate(gold, preds, na, na_prob_thresh=0.5, report_missing=None)
    elapsed = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n[metrics] 11,873 questions evaluated in {elapsed * 1000:.0f} ms")
    _assert_same(got, ref_evaluate(squad, preds, na, 0.5))


def test_api_validates_values():
    with pytest.raises(SquadkitError, match="must be a string"):
        evaluate({"a": ["x"]}, {"a": None}, report_missing=None)
    with pytest.raises(SquadkitError, match="NaN"):
        evaluate({"a": ["x"]}, {"a": "x"}, {"a": float("nan")}, report_missing=None)
    with pytest.raises(SquadkitError, match="must be a number"):
        evaluate({"a": ["x"]}, {"a": "x"}, {"a": "0.5"}, report_missing=None)


# ---------------------------------------------------------------------------------------------
# paired bootstrap: is a gap between two systems on the same questions more than noise?
# ---------------------------------------------------------------------------------------------

GOLD4 = {"q1": ["cat"], "q2": ["dog"], "q3": [""], "q4": ["red fox"]}


def test_paired_bootstrap_identical_systems_differ_by_nothing():
    preds = {"q1": "cat", "q2": "a bird", "q3": "", "q4": "fox"}
    out = metrics.paired_bootstrap(GOLD4, preds, dict(preds))
    assert (out["difference"], out["low"], out["high"]) == (0.0, 0.0, 0.0)
    assert out["questions"] == 4 and out["resamples"] == 2000


def test_paired_bootstrap_one_system_right_everywhere():
    right = {"q1": "cat", "q2": "dog", "q3": "", "q4": "red fox"}
    wrong = {"q1": "dog", "q2": "cat", "q3": "cat", "q4": "wolf"}
    out = metrics.paired_bootstrap(GOLD4, right, wrong)
    assert (out["difference"], out["low"], out["high"]) == (100.0, 100.0, 100.0)
    flipped = metrics.paired_bootstrap(GOLD4, wrong, right)
    assert (flipped["difference"], flipped["low"], flipped["high"]) == (-100.0, -100.0, -100.0)


def test_paired_bootstrap_interval_by_hand():
    # a differs from b on q1 only (right vs wrong): each resample's gap is 25 x (times q1 is drawn).
    # P(q1 never drawn) = (3/4)^4 = 0.32 > 2.5 %, so the low end is 0; P(drawn 3+ times) = 13/256 = 5.1 %
    # but P(4 times) = 0.4 %, so the 97.5th percentile is the 3-times gap, 75.
    a = {"q1": "cat", "q2": "dog", "q3": "", "q4": "fox"}
    b = {**a, "q1": "mouse"}
    out = metrics.paired_bootstrap(GOLD4, a, b)
    assert out["difference"] == 25.0
    assert (out["low"], out["high"]) == (0.0, 75.0)
    assert metrics.paired_bootstrap(GOLD4, a, b) == out  # seeded: the same numbers every run
    wide = metrics.paired_bootstrap(GOLD4, a, b, confidence=0.999)
    assert wide["high"] == 100.0


def test_paired_bootstrap_exact_or_f1():
    a = {"q1": "cat", "q2": "dog", "q3": "", "q4": "fox"}  # q4: F1 2/3, exact 0
    b = {**a, "q4": "red fox"}
    assert metrics.paired_bootstrap(GOLD4, b, a)["difference"] == pytest.approx(100 * (1 - 2 / 3) / 4)
    assert metrics.paired_bootstrap(GOLD4, b, a, metric="exact")["difference"] == 25.0


@pytest.mark.parametrize("kwargs, fragment", [
    ({"metric": "em"}, "metric must be 'f1' or 'exact', not 'em'"),
    ({"resamples": 0}, "resamples must be >= 1"),
    ({"confidence": 1.0}, "confidence in \\(0, 1\\)"),
])
def test_paired_bootstrap_refuses_bad_settings(kwargs, fragment):
    preds = {"q1": "cat", "q2": "dog", "q3": "", "q4": "fox"}
    with pytest.raises(SquadkitError, match=fragment):
        metrics.paired_bootstrap(GOLD4, preds, preds, **kwargs)


def test_paired_bootstrap_needs_every_question_predicted():
    preds = {"q1": "cat", "q2": "dog", "q3": ""}
    with pytest.raises(SquadkitError, match="preds_b has no prediction for question 'q4'"):
        metrics.paired_bootstrap(GOLD4, {**preds, "q4": "x"}, preds)


# ---------------------------------------------------------------------------------------------
# the no-answer score's AUC: does it tell answerable from unanswerable, whatever the threshold?
# ---------------------------------------------------------------------------------------------


def test_roc_auc_by_hand():
    # positives 2, 0 against negatives -1, 0: three pairs ordered right, one tie (half) -> 3.5 / 4
    assert metrics.roc_auc([2.0, 0.0], [-1.0, 0.0]) == 0.875
    assert metrics.roc_auc([1, 2, 3], [4, 5]) == 0.0 and metrics.roc_auc([4, 5], [1, 2, 3]) == 1.0
    assert metrics.roc_auc([7, 7], [7, 7, 7]) == 0.5
    assert math.isnan(metrics.roc_auc([], [1.0]))


@given(st.lists(st.integers(-3, 3), min_size=1, max_size=12), st.lists(st.integers(-3, 3), min_size=1, max_size=12))
@settings(max_examples=200, deadline=None)
def test_roc_auc_is_the_pairwise_count(pos, neg):
    pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    assert metrics.roc_auc(pos, neg) == pytest.approx(pairs / (len(pos) * len(neg)))


def test_no_answer_auc_ranks_answerable_below_unanswerable():
    gold = {"a1": ["x"], "a2": ["y"], "u1": [], "u2": []}
    assert metrics.no_answer_auc(gold, {"a1": -3.0, "a2": -1.0, "u1": 2.0, "u2": 0.5}) == 1.0  # null odds: separable
    assert metrics.no_answer_auc(gold, {"a1": 2.0, "a2": 0.5, "u1": -3.0, "u2": -1.0}) == 0.0
    assert metrics.no_answer_auc(gold, {"a1": -2.0, "a2": 0.0, "u1": 1.0, "u2": 0.0}) == 0.875
    assert math.isnan(metrics.no_answer_auc({"a1": ["x"]}, {"a1": 0.0}))  # one class: undefined
    with pytest.raises(SquadkitError, match="na_probs has no value for question 'u2'"):
        metrics.no_answer_auc(gold, {"a1": 0.0, "a2": 0.0, "u1": 0.0})
