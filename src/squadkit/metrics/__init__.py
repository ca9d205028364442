"""The official SQuAD v2.0 evaluation, number for number (``official``), its files (``files``), and what
squadkit reports beyond it (``reports``: the no-answer AUC, paired bootstrap, calibration and confidence).

    >>> from squadkit.metrics import evaluate
    >>> evaluate(dataset_or_gold, predictions, na_probs=None)
"""

from __future__ import annotations

from .files import evaluate_files, load_na_probs, load_predictions, null_probabilities
from .official import (
    GoldInput,
    Score,
    apply_no_ans_threshold,
    compute_exact,
    compute_f1,
    evaluate,
    evaluate_v1,
    exact_match,
    find_all_best_thresh,
    find_best_thresh,
    get_raw_scores,
    get_tokens,
    gold_answers_from,
    histogram_na_prob,
    is_squad_v1,
    make_eval_dict,
    make_qid_to_has_ans,
    merge_eval,
    na_prob_scale_note,
    normalize_answer,
    precision_recall_eval,
    run_precision_recall_analysis,
)
from .reports import (
    RELIABILITY_IMAGE,
    RISK_COVERAGE_IMAGE,
    calibration_report,
    confidence_report,
    correctness_of_final,
    no_answer_auc,
    paired_bootstrap,
    roc_auc,
)

__all__ = [
    "normalize_answer", "get_tokens", "compute_exact", "compute_f1", "gold_answers_from", "make_qid_to_has_ans",
    "is_squad_v1", "get_raw_scores", "apply_no_ans_threshold", "make_eval_dict", "merge_eval", "find_best_thresh",
    "find_all_best_thresh", "precision_recall_eval", "run_precision_recall_analysis", "histogram_na_prob",
    "evaluate_v1", "evaluate", "load_predictions", "load_na_probs", "null_probabilities", "na_prob_scale_note",
    "evaluate_files", "paired_bootstrap", "roc_auc", "no_answer_auc", "calibration_report", "confidence_report",
    "correctness_of_final", "exact_match", "RELIABILITY_IMAGE", "RISK_COVERAGE_IMAGE", "GoldInput", "Score",
]
