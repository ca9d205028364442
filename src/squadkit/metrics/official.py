"""The official SQuAD v2.0 evaluation (``evaluate-v2.0.py``), number for number, as small functions.

Why it is built this way: docs/design.md (squadkit/metrics/official.py).
"""

from __future__ import annotations

import math
import os
import re
import string
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from ..errors import SquadkitError
from .plots import make_image_dir, new_figure, plot_pr_curve, require_matplotlib, save_figure

Score = Union[int, float]
GoldInput = Union[Mapping[str, Sequence[str]], Any]  # a mapping qid -> raw answer texts, or a SquadDataset

# ---------------------------------------------------------------------------------------------
# normalization and per-question scores
# ---------------------------------------------------------------------------------------------

# Only ASCII punctuation is removed, as in the official script: '–', '“', '’' etc. survive.
_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s: str) -> str:
    """Lowercase, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace.

    The official order matters ("t.he" becomes the article "the" once the dot is gone), so this is
    ``white_space_fix(remove_articles(remove_punc(lower(s))))``. The punctuation step deletes
    exactly the characters of ``string.punctuation``, like the official character filter; a
    regex character class does it several times faster than filtering character by character.
    """
    text = _PUNCT.sub("", s.lower())
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def get_tokens(s: str) -> list[str]:
    """The F1 tokens of an answer: whitespace tokens of its normalized form."""
    if not s:
        return []
    return normalize_answer(s).split()


def compute_exact(a_gold: str, a_pred: str) -> int:
    """Exact match (0 or 1) of the normalized strings."""
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def exact_match(gold_answers: Sequence[str], prediction: str) -> int:
    """The official exact match of one prediction: gold answers that normalize to "" are dropped, a
    question left with none has the single gold "" (``evaluate-v2.0.py``'s rule, as ``get_raw_scores``)."""
    golds = [a for a in gold_answers if normalize_answer(a)] or [""]
    return max(compute_exact(a, prediction) for a in golds)


def _num_common(a: Sequence[str], b: Sequence[str]) -> int:
    """Size of the multiset intersection, ``sum((Counter(a) & Counter(b)).values())`` without the Counters."""
    counts: dict[str, int] = {}
    for tok in a:
        counts[tok] = counts.get(tok, 0) + 1
    same = 0
    for tok in b:
        left = counts.get(tok, 0)
        if left:
            counts[tok] = left - 1
            same += 1
    return same


def _f1_from_tokens(gold_toks: Sequence[str], pred_toks: Sequence[str]) -> Score:
    """Token-multiset F1; an empty side scores 1 only against another empty side (the no-answer rule)."""
    if not gold_toks or not pred_toks:
        return int(list(gold_toks) == list(pred_toks))
    return _f1_from_counts(_num_common(gold_toks, pred_toks), len(pred_toks), len(gold_toks))


def _f1_from_counts(num_same: int, num_pred: int, num_gold: int) -> Score:
    """Harmonic mean of precision and recall, computed in the official order of operations."""
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / num_pred
    recall = 1.0 * num_same / num_gold
    return (2 * precision * recall) / (precision + recall)


def compute_f1(a_gold: str, a_pred: str) -> Score:
    """Official v2.0 F1 of one gold answer and one prediction (``int`` 0/1 in the edge cases, else ``float``)."""
    return _f1_from_tokens(get_tokens(a_gold), get_tokens(a_pred))


# ---------------------------------------------------------------------------------------------
# gold answers
# ---------------------------------------------------------------------------------------------


def gold_answers_from(gold: GoldInput) -> "OrderedDict[str, list[str]]":
    """``{qid: raw answer texts}`` in data order, from a SquadDataset or such a mapping.

    The raw list is kept (answers that normalize to nothing included): has-answer is decided on
    it, as the official ``make_qid_to_has_ans`` decides on ``bool(qa['answers'])``.
    """
    examples = getattr(gold, "examples", None)
    if examples is not None:
        out: OrderedDict[str, list[str]] = OrderedDict()
        for ex in examples:
            out[ex.id] = [a.text for a in ex.answers]
        return out
    if not isinstance(gold, Mapping):
        raise SquadkitError(f"gold answers must be a SquadDataset or a mapping of id to answer texts, "
                            f"got {type(gold).__name__}")
    for qid, answers in gold.items():
        if not isinstance(qid, str) or not isinstance(answers, (list, tuple)) \
                or not all(isinstance(a, str) for a in answers):
            raise SquadkitError(f"gold answers for {qid!r} must be a list of strings")
    return OrderedDict((qid, list(answers)) for qid, answers in gold.items())


def make_qid_to_has_ans(gold_answers: Mapping[str, Sequence[str]]) -> dict[str, bool]:
    """Whether each question is answerable, from its RAW answer list (as the official script)."""
    return {qid: bool(answers) for qid, answers in gold_answers.items()}


def is_squad_v1(gold: GoldInput) -> bool:
    """True for SQuAD v1.1 data: every question has an answer and no ``is_impossible`` is present.

    For a SquadDataset the file format tells whether ``is_impossible`` appeared (``squad-v2.0``);
    a plain mapping is v1.1 when no answer list is empty.
    """
    examples = getattr(gold, "examples", None)
    if examples is not None:
        return getattr(gold, "format", None) != "squad-v2.0" and all(ex.answers for ex in examples)
    return all(bool(v) for v in gold.values())


# ---------------------------------------------------------------------------------------------
# the official v2.0 steps
# ---------------------------------------------------------------------------------------------


def get_raw_scores(
    gold_answers: Mapping[str, Sequence[str]],
    preds: Mapping[str, str],
    report_missing: Optional[Callable[[str], None]] = print,
) -> tuple[dict[str, int], dict[str, Score]]:
    """Per-question exact and F1, max over the gold answers, in data order.

    Gold answers that normalize to the empty string are dropped; a question left with none has
    the single gold ``''`` (only the empty prediction is right). A question without a prediction
    is reported as ``Missing prediction for ID`` through ``report_missing`` (the official script
    prints it to stdout; the CLI sends it to stderr) and left out of both dicts. Each string is
    normalized once, instead of up to three times as in the official script: same values.
    """
    exact_scores: dict[str, int] = {}
    f1_scores: dict[str, Score] = {}
    for qid, answers in gold_answers.items():
        if qid not in preds:
            if report_missing is not None:
                report_missing(f"Missing prediction for {qid}")
            continue
        # duplicates (common: several annotators, one span) cannot change the max, value or type
        golds = [n for n in dict.fromkeys(normalize_answer(a) for a in answers) if n] or [""]
        pred = preds[qid]
        pred_norm = normalize_answer(pred)
        pred_toks = pred_norm.split() if pred else []
        exact_scores[qid] = max(int(g == pred_norm) for g in golds)
        f1_scores[qid] = max(_f1_from_tokens(g.split(), pred_toks) for g in golds)
    return exact_scores, f1_scores


def apply_no_ans_threshold(
    scores: Mapping[str, Score],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
    na_prob_thresh: float,
) -> dict[str, Score]:
    """Scores after abstaining where the no-answer probability is strictly above the threshold.

    An abstention scores ``float(not has_ans)``: right for an unanswerable question, wrong otherwise.
    """
    return {
        qid: float(not qid_to_has_ans[qid]) if na_probs[qid] > na_prob_thresh else s
        for qid, s in scores.items()
    }


def make_eval_dict(
    exact_scores: Mapping[str, Score],
    f1_scores: Mapping[str, Score],
    qid_list: Optional[Sequence[str]] = None,
) -> "OrderedDict[str, Any]":
    """``exact``, ``f1`` (percentages) and ``total`` over all scored questions or over ``qid_list``.

    Computed as ``100.0 * sum(...) / total`` with the builtin ``sum`` in data order, exactly the
    official expression, so the floats agree to the last bit (numpy's pairwise sum would not).
    """
    if not qid_list:
        total = len(exact_scores)
        exact_sum = sum(exact_scores.values())
        f1_sum = sum(f1_scores.values())
    else:
        total = len(qid_list)
        exact_sum = sum(exact_scores[k] for k in qid_list)
        f1_sum = sum(f1_scores[k] for k in qid_list)
    return OrderedDict([("exact", 100.0 * exact_sum / total), ("f1", 100.0 * f1_sum / total), ("total", total)])


def merge_eval(main_eval: dict, new_eval: Mapping[str, Any], prefix: str) -> None:
    """Copy ``new_eval`` into ``main_eval`` under ``PREFIX_key`` names (HasAns_exact, pr_f1_ap, ...)."""
    for k, v in new_eval.items():
        main_eval[f"{prefix}_{k}"] = v


def _sorted_by_na_prob(qids: Sequence[str], na_probs: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    """``qids`` in ascending na-prob order with ties in their given order (Python ``sorted``'s stability)."""
    values = np.fromiter((na_probs[q] for q in qids), dtype=np.float64, count=len(qids))
    order = np.argsort(values, kind="stable")
    return [qids[i] for i in order], values[order]


def _na_prob_order(scores: Mapping[str, Score], na_probs: Mapping[str, float]) -> list[str]:
    """The scored qids in na-prob mapping order: the order the official ``sorted(na_probs)`` starts from.

    Keys of ``na_probs`` without a score are dropped: the official walk skips them, and they would
    crash its precision-recall loop.
    """
    return [q for q in na_probs if q in scores]


def find_best_thresh(
    preds: Mapping[str, str],
    scores: Mapping[str, Score],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
) -> tuple[float, Any]:
    """Best score (percent) over all no-answer thresholds, and the threshold that reaches it.

    The official walk: start from the score of abstaining everywhere (the number of unanswerable
    questions), then un-abstain question by question in ascending na-prob order; an answerable
    question adds its score, an unanswerable one loses 1 if the prediction is non-empty. The first
    strict maximum wins and its na-prob (the mapping's own value, int or float) is the threshold.
    Here the running score is a cumsum, bit-identical to the official ``+=`` loop.
    """
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    qids, values = _sorted_by_na_prob(_na_prob_order(scores, na_probs), na_probs)
    best_score: Score = num_no_ans
    best_thresh: Any = 0.0
    if qids:
        diffs = np.fromiter(
            (scores[q] if qid_to_has_ans[q] else (-1 if preds[q] else 0) for q in qids),
            dtype=np.float64,
            count=len(qids),
        )
        running = np.cumsum(np.concatenate(([float(num_no_ans)], diffs)))[1:]
        i = int(np.argmax(running))  # first occurrence of the maximum
        if running[i] > best_score:
            best_score = float(running[i])
            best_thresh = na_probs[qids[i]]
    return 100.0 * best_score / len(scores), best_thresh


def find_all_best_thresh(
    main_eval: dict,
    preds: Mapping[str, str],
    exact_raw: Mapping[str, Score],
    f1_raw: Mapping[str, Score],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
) -> None:
    """Add ``best_exact, best_exact_thresh, best_f1, best_f1_thresh`` (from the RAW scores)."""
    best_exact, exact_thresh = find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
    best_f1, f1_thresh = find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
    main_eval["best_exact"] = best_exact
    main_eval["best_exact_thresh"] = exact_thresh
    main_eval["best_f1"] = best_f1
    main_eval["best_f1_thresh"] = f1_thresh


def precision_recall_eval(
    scores: Mapping[str, Score],
    na_probs: Mapping[str, float],
    num_true_pos: int,
    qid_to_has_ans: Mapping[str, bool],
    out_image: Optional[Union[str, os.PathLike]] = None,
    title: Optional[str] = None,
) -> dict[str, float]:
    """Average precision (percent) of answering by ascending na-prob, as ``make_precision_recall_eval``.

    Walking the questions in ascending na-prob order, ``true_pos`` accumulates the scores of the
    answerable ones; precision is ``true_pos / (i + 1)``, recall ``true_pos / num_true_pos``. A
    point is taken only where a threshold can fall (the last question, or where the next na-prob
    differs), and AP is the sum of precision times recall gained, accumulated in that order.
    Writes the step curve to ``out_image`` when given.
    """
    qids, values = _sorted_by_na_prob(_na_prob_order(scores, na_probs), na_probs)
    n = len(qids)
    gains = np.fromiter((scores[q] if qid_to_has_ans[q] else 0.0 for q in qids), dtype=np.float64, count=n)
    true_pos = np.cumsum(gains)
    cur_p = true_pos / np.arange(1, n + 1, dtype=np.float64)
    cur_r = true_pos / float(num_true_pos)
    at_threshold = np.ones(n, dtype=bool)
    at_threshold[:-1] = values[:-1] != values[1:]
    precisions = np.concatenate(([1.0], cur_p[at_threshold]))
    recalls = np.concatenate(([0.0], cur_r[at_threshold]))
    terms = precisions[1:] * (recalls[1:] - recalls[:-1])
    avg_prec = float(np.cumsum(terms)[-1]) if terms.size else 0.0
    if out_image:
        plot_pr_curve(precisions, recalls, out_image, title or "")
    return {"ap": 100.0 * avg_prec}


def run_precision_recall_analysis(
    main_eval: dict,
    exact_raw: Mapping[str, Score],
    f1_raw: Mapping[str, Score],
    na_probs: Mapping[str, float],
    qid_to_has_ans: Mapping[str, bool],
    out_image_dir: Union[str, os.PathLike],
) -> None:
    """Add ``pr_exact_ap, pr_f1_ap, pr_oracle_ap`` and draw their curves (none without answerable questions).

    The oracle curve scores every answerable question 1: the best a na-prob ranking could do.
    """
    make_image_dir(out_image_dir)
    num_true_pos = sum(1 for v in qid_to_has_ans.values() if v)
    if num_true_pos == 0:
        return
    out = Path(out_image_dir)
    pr_exact = precision_recall_eval(exact_raw, na_probs, num_true_pos, qid_to_has_ans,
                                     out_image=out / "pr_exact.png",
                                     title="Precision-Recall curve for Exact Match score")
    pr_f1 = precision_recall_eval(f1_raw, na_probs, num_true_pos, qid_to_has_ans,
                                  out_image=out / "pr_f1.png", title="Precision-Recall curve for F1 score")
    oracle_scores = {k: float(v) for k, v in qid_to_has_ans.items()}
    pr_oracle = precision_recall_eval(oracle_scores, na_probs, num_true_pos, qid_to_has_ans,
                                      out_image=out / "pr_oracle.png",
                                      title="Oracle Precision-Recall curve (binary task of HasAns vs. NoAns)")
    merge_eval(main_eval, pr_exact, "pr_exact")
    merge_eval(main_eval, pr_f1, "pr_f1")
    merge_eval(main_eval, pr_oracle, "pr_oracle")


def histogram_na_prob(
    na_probs: Mapping[str, float], qid_list: Sequence[str], image_dir: Union[str, os.PathLike], name: str
) -> None:
    """Write ``na_prob_hist_{name}.png``: the share of ``qid_list`` per na-prob bin (20 bins on [0, 1]).

    Values outside [0, 1] (run_squad's null odds are logit differences) would leave the official
    [0, 1] histogram empty; then the bins span the values' own range, the axis says so, and the
    returned note says it once. Returns None when the official range was used.
    """
    if not qid_list:
        return None
    x = np.array([na_probs[k] for k in qid_list], dtype=np.float64)
    weights = np.ones_like(x) / float(len(x))
    in_unit = bool(np.all((x >= 0.0) & (x <= 1.0)))
    lo, hi = (0.0, 1.0) if in_unit else (float(x.min()), float(x.max()) if x.max() > x.min() else float(x.min()) + 1.0)
    fig = new_figure()
    ax = fig.add_subplot()
    ax.hist(x, weights=weights, bins=20, range=(lo, hi))
    ax.set_xlabel("Model probability of no-answer" if in_unit else "No-answer score (values outside 0..1: own range)")
    ax.set_ylabel("Proportion of dataset")
    ax.set_title(f"Histogram of no-answer probability: {name}")
    save_figure(fig, Path(image_dir) / f"na_prob_hist_{name}.png")
    if in_unit:
        return None
    return (f"na-prob values are outside 0..1 (e.g. null odds); the {name} histogram spans their own range "
            f"[{lo:g}, {hi:g}]")


# ---------------------------------------------------------------------------------------------
# SQuAD v1.1 (evaluate-v1.1.py)
# ---------------------------------------------------------------------------------------------


def _f1_v1(gold: str, pred: str) -> Score:
    """v1.1 F1: no empty-side rule, 0 whenever no token is shared (so two empty answers score 0)."""
    pred_toks = normalize_answer(pred).split()
    gold_toks = normalize_answer(gold).split()
    return _f1_from_counts(_num_common(pred_toks, gold_toks), len(pred_toks), len(gold_toks))


def evaluate_v1(gold_answers: Mapping[str, Sequence[str]], preds: Mapping[str, str]) -> dict[str, float]:
    """``{'exact_match', 'f1'}`` as ``evaluate-v1.1.py`` computes them.

    Differences from v2.0, kept on purpose: the max runs over ALL ground truths (none dropped),
    F1 has no empty-answer rule, and a question without a prediction scores 0 but stays in the
    total (v1.1 prints "Unanswered question ... will receive score 0." instead of skipping it).
    The sums are running ``+=`` totals in data order, as in the v1.1 script.
    """
    exact_match: Score = 0
    f1: Score = 0
    total = 0
    for qid, truths in gold_answers.items():
        total += 1
        if qid not in preds or not truths:
            continue
        pred = preds[qid]
        pred_norm = normalize_answer(pred)
        exact_match += max(pred_norm == normalize_answer(t) for t in truths)
        f1 += max(_f1_v1(t, pred) for t in truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


# ---------------------------------------------------------------------------------------------
# the whole evaluation
# ---------------------------------------------------------------------------------------------


def check_na_prob_value(qid: str, value: Any, name: str) -> None:
    """A number that can be ordered: bools and strings are refused, and so is NaN (it breaks the sort)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SquadkitError(f"{name}: no-answer probability for {qid!r} must be a number, got {json_type(value)}")
    if isinstance(value, float) and math.isnan(value):
        raise SquadkitError(f"{name}: no-answer probability for {qid!r} is NaN")


def _check_na_probs(na_probs: Mapping[str, float], qids: Iterable[str], name: str) -> None:
    """Every predicted question needs a usable na-prob (the official script raises KeyError)."""
    missing = [q for q in qids if q not in na_probs]
    if missing:
        raise SquadkitError(f"{name}: no no-answer probability for {len(missing)} question(s) that have a "
                            f"prediction (first: {missing[0]})")
    for qid in qids:
        check_na_prob_value(qid, na_probs[qid], name)


def _check_predictions(gold_answers: Mapping[str, Sequence[str]], predictions: Any, pred_name: str) -> None:
    """Refuse data without questions, predictions that are not texts, and predictions for no question."""
    if not gold_answers:
        raise SquadkitError("the data has no questions")
    if not isinstance(predictions, Mapping):
        raise SquadkitError(f"{pred_name}: expected a mapping of question id to answer text")
    bad = next((q for q in gold_answers if q in predictions and not isinstance(predictions[q], str)), None)
    if bad is not None:
        raise SquadkitError(f"{pred_name}: prediction for {bad!r} must be a string, "
                            f"got {json_type(predictions[bad])}")
    if not any(qid in predictions for qid in gold_answers):  # checked first: no flood of "Missing" lines
        raise SquadkitError(f"{pred_name}: none of the {len(gold_answers)} questions in the data has a prediction")


def evaluate(
    gold: GoldInput,
    predictions: Mapping[str, str],
    na_probs: Optional[Mapping[str, float]] = None,
    na_prob_thresh: float = 1.0,
    best_always: bool = False,
    out_image_dir: Optional[Union[str, os.PathLike]] = None,
    *,
    report_missing: Optional[Callable[[str], None]] = print,
    report_note: Optional[Callable[[str], None]] = None,
    pred_name: str = "predictions",
    na_prob_name: str = "na_probs",
) -> "OrderedDict[str, Any]":
    """The official ``evaluate-v2.0.py`` result for ``predictions`` on ``gold``, as an ordered dict, in the
    official key order (``best_*`` with ``na_probs`` or ``best_always``; ``pr_*`` with images; ``"v1.1"`` for
    SQuAD v1.1 data). Questions without a prediction go to ``report_missing`` and out of every total, where
    the official script would crash; images need matplotlib. The keys and every deviation: docs/metrics.md.
    """
    gold_answers = gold_answers_from(gold)
    _check_predictions(gold_answers, predictions, pred_name)
    if na_probs is not None and out_image_dir is not None:
        require_matplotlib()
    exact_raw, f1_raw = get_raw_scores(gold_answers, predictions, report_missing)

    # Everything below runs on the data restricted to the predicted questions (data order kept).
    qid_to_has_ans = {q: bool(gold_answers[q]) for q in exact_raw}
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    have_na_probs = na_probs is not None
    if na_probs is None:
        na_probs = {k: 0.0 for k in predictions}
    else:
        _check_na_probs(na_probs, exact_raw, na_prob_name)
        scale_note = na_prob_scale_note({q: na_probs[q] for q in exact_raw}, na_prob_thresh, na_prob_name)
        if scale_note and report_note is not None:
            report_note(scale_note)

    exact_thresh = apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    f1_thresh = apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    out_eval = make_eval_dict(exact_thresh, f1_thresh)
    if has_ans_qids:
        merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids), "HasAns")
    if no_ans_qids:
        merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids), "NoAns")
    if have_na_probs or best_always:
        find_all_best_thresh(out_eval, predictions, exact_raw, f1_raw, na_probs, qid_to_has_ans)
    if have_na_probs and out_image_dir is not None:
        run_precision_recall_analysis(out_eval, exact_raw, f1_raw, na_probs, qid_to_has_ans, out_image_dir)
        for qids, name in ((has_ans_qids, "hasAns"), (no_ans_qids, "noAns")):
            note = histogram_na_prob(na_probs, qids, out_image_dir, name)
            if note and report_note is not None:
                report_note(note)
    if is_squad_v1(gold):
        out_eval["v1.1"] = evaluate_v1(gold_answers, predictions)
    return out_eval


def na_prob_scale_note(na_probs: Mapping[str, float], na_prob_thresh: float, name: str) -> Optional[str]:
    """One line when ``na_probs`` are not probabilities (a value outside 0..1, e.g. null odds): the
    official script thresholds them at ``-t`` as given, which changes exact/f1; None otherwise."""
    values = [float(v) for v in na_probs.values()]
    if not values or all(0.0 <= v <= 1.0 for v in values):
        return None
    above = sum(v > na_prob_thresh for v in values)
    return (f"{name}: values are outside 0..1 ({min(values):g} to {max(values):g}: null odds are logit differences, "
            f"not probabilities); the official script thresholds them at -t {na_prob_thresh:g} as given, so exact/f1 "
            f"count {above} of {len(values)} questions as abstaining; for probabilities use predict's null_probs.json "
            f"or --na-prob-logits (a sigmoid; the same best_* scores)")


def json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
