"""Learn ``ask``'s abstain threshold for a trained model: dev questions asked of a collection.

Why it is built this way: docs/design.md (squadkit/train/ask_eval.py).
"""

from __future__ import annotations

import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ASK_PASSAGE_TOKENS = 300  # passages of at most this many of the reader's tokens (the README's ask benchmark)
ASK_OVERLAP = 32
RETRIEVAL_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # the grid ask_retrieval_weight is chosen from
NO_SPAN_ODDS = 1e9  # the no-answer odds of a question with no span (or no null score): abstain at any threshold
ASK_CHECK_KS = (1, 3, 5, 10)  # the rule must hold reading these many passages too (those below ask_k)
ASK_MIN_AUC = 0.6  # below this answerable-vs-unanswerable AUC the fit is refused (as train's note on the dev AUC)


@dataclass
class AskFit:
    """What was learned, and the dev scores at the learned threshold."""

    threshold: float
    k: int
    source: str
    results: dict = field(default_factory=dict)
    calibration: dict | None = None
    scoring: str = "normalized"
    retrieval_weight: float = 0.0
    refused: str | None = None  # why the fit is not saved (the folder keeps the single-passage rule)


@dataclass
class _RuleFit:
    """One no-answer rule fitted on the dev readings: its best-F1 threshold at ``ask_k``, and the F1
    that threshold gives reading each checked number of passages."""

    best_f1: float
    threshold: float
    f1_by_k: dict[int, float]
    preds: dict
    odds: dict
    results: list

    @property
    def mean_f1(self) -> float:
        return sum(self.f1_by_k.values()) / len(self.f1_by_k)


def build_ask_index(path: Path, files: list[Path], tokenizer: str) -> None:
    """Every paragraph of ``files`` in one index at ``path`` (squadkit.retrieval)."""
    from ..retrieval import IndexSettings, build_index

    build_index(files, path, IndexSettings(tokenizer=tokenizer, max_tokens=ASK_PASSAGE_TOKENS, overlap=ASK_OVERLAP),
                rebuild=True)


def ask_predictions(dqa, readings, dataset, k: int, retrieval_weight: float | None = None) -> tuple[dict, dict, list]:
    """Best span and null-minus-span score of every question from its first ``k`` passages (no abstaining);
    ``retrieval_weight`` replaces the reader's."""
    preds, odds, results = {}, {}, []
    for ex, read in zip(dataset.examples, readings):
        r = dqa.rank(ex.question, read, k=k, threshold=math.inf, retrieval_weight=retrieval_weight)
        preds[ex.id] = r.answers[0].answer if r.answers else ""
        odds[ex.id] = r.null_margin if r.null_margin is not None else NO_SPAN_ODDS
        results.append(r)
    return preds, odds, results


def fit_retrieval_weight(dqa, readings, dataset, k: int,
                         weights: tuple[float, ...] = RETRIEVAL_WEIGHTS) -> tuple[float, dict[float, float]]:
    """The weight of ``weights`` whose best spans from the first ``k`` passages score the best F1 on the
    answerable questions, never abstaining (ties: the smaller); and that F1 for each weight."""
    from ..metrics import evaluate

    span_f1 = {}
    for weight in weights:
        preds, _, _ = ask_predictions(dqa, readings, dataset, k, retrieval_weight=weight)
        span_f1[weight] = float(evaluate(dataset, preds, report_missing=None).get("HasAns_f1", 0.0))
    best = max(sorted(weights), key=lambda w: span_f1[w])  # max keeps the first (smallest) of equals
    return best, span_f1


def abstaining(preds: dict, odds: dict, threshold: float) -> dict:
    """The predictions with "" wherever ``odds > threshold`` (the official metric's rule)."""
    return {q: ("" if odds[q] > threshold else p) for q, p in preds.items()}


def score_at(dataset, preds: dict, odds: dict, threshold: float) -> dict:
    """The official metric of ``abstaining(preds, odds, threshold)``."""
    from ..metrics import evaluate

    return dict(evaluate(dataset, abstaining(preds, odds, threshold), report_missing=None))


def refuse_at_chance(dataset, odds: dict, threshold: float, rule: str) -> tuple[float, str | None]:
    """The answerable-vs-unanswerable AUC of ``odds`` (ask's no-answer margins) and, below ASK_MIN_AUC,
    one line saying the fit is refused: its best-F1 threshold would abstain on nearly everything held out."""
    from ..metrics import no_answer_auc

    auc = float(no_answer_auc(dataset, odds))
    if not auc < ASK_MIN_AUC:  # also NaN: one kind of question only, nothing to refuse on
        return auc, None
    answered = 100.0 * sum(odds[e.id] <= threshold for e in dataset.examples) / max(len(dataset.examples), 1)
    return auc, (f"ask's no-answer score ({rule} rule) tells answerable from unanswerable dev questions no better "
                 f"than chance (AUC {auc:.2f} < {ASK_MIN_AUC}; its threshold {threshold:.2f} answers {answered:.1f}%): "
                 f"no ask threshold saved, ask keeps the single-passage rule (raw scores, null_score_diff_threshold)")


def fit_ask(model_dir: Path, dev_path: Path, train_path: Path | None, k: int, batch_size: int | None = None,
            device: str | None = None, index_path: Path | None = None) -> AskFit:
    """Ask every dev question of ``dev_path`` over its + ``train_path``'s paragraphs; the best-F1 threshold."""
    from ..data import load_squad
    from ..metrics import evaluate
    from ..pipeline import QuestionAnswerer
    from ..retrieval import DocumentQA, Index

    dataset = load_squad(dev_path)
    files = [Path(dev_path)] + ([Path(train_path)] if train_path is not None else [])
    qa = QuestionAnswerer(str(model_dir), backend="torch", device=device)
    with tempfile.TemporaryDirectory(prefix="squadkit-ask-") as tmp:
        path = Path(index_path) if index_path is not None else Path(tmp) / "ask.sqlite"
        if not path.is_file():
            build_ask_index(path, files, str(model_dir))
        with Index(path) as index:
            rules = {rule: DocumentQA(index, qa=qa, k=k, scoring=rule, batch_size=batch_size)
                     for rule in ("normalized", "raw")}  # normalised first: it wins a tie
            readings = rules["normalized"].read([e.question for e in dataset.examples], k)
    weight, span_f1 = fit_retrieval_weight(rules["raw"], readings, dataset, k)  # the same spans under both rules
    check_ks = sorted({j for j in ASK_CHECK_KS if j < k} | {k})
    fits: dict[str, _RuleFit] = {}
    for rule, dqa in rules.items():
        preds, odds, results = ask_predictions(dqa, readings, dataset, k, retrieval_weight=weight)
        best = evaluate(dataset, preds, na_probs=odds, report_missing=None)
        threshold = float(best["best_f1_thresh"])
        f1_by_k = {j: float(best["best_f1"]) if j == k else
                   float(score_at(dataset, *ask_predictions(dqa, readings, dataset, j, weight)[:2], threshold)["f1"])
                   for j in check_ks}
        fits[rule] = _RuleFit(float(best["best_f1"]), threshold, f1_by_k, preds, odds, results)
    # the better mean F1 over the k checked, then the better F1 at k; max keeps the first (normalised) of equals
    scoring = max(fits, key=lambda rule: (fits[rule].mean_f1, fits[rule].best_f1))
    chosen = fits[scoring]
    threshold, preds, odds, results = chosen.threshold, chosen.preds, chosen.odds, chosen.results
    results_at = score_at(dataset, preds, odds, threshold)
    names = " + ".join(f.name for f in files)
    dev_name = dataset.path.name if dataset.path else "dev"
    rule_name = "passage-normalised" if scoring == "normalized" else "raw"
    source = (f"best_f1_thresh of ask (bm25, k={k}, {rule_name} scores, retrieval weight {weight:g}) on {dev_name} "
              f"over the paragraphs of {names}")
    fit = AskFit(threshold, k, source, {"k": k, "scoring": scoring, "threshold": threshold,
                                        "retrieval_weight": weight, **results_at,
                                        "best_f1_by_scoring": {rule: f.best_f1 for rule, f in fits.items()},
                                        "threshold_by_scoring": {rule: f.threshold for rule, f in fits.items()},
                                        "f1_by_k_by_scoring": {rule: {str(j): v for j, v in f.f1_by_k.items()}
                                                               for rule, f in fits.items()},
                                        "mean_f1_by_scoring": {rule: f.mean_f1 for rule, f in fits.items()},
                                        "span_f1_by_retrieval_weight": {str(w): f for w, f in span_f1.items()}},
                 scoring=scoring, retrieval_weight=weight)
    fit.results["answerable_auc"], fit.refused = refuse_at_chance(dataset, odds, threshold, rule_name)
    if fit.refused is None:
        fit.calibration = _fit_ask_calibrator(qa, dataset, preds, odds, results, threshold, dev_path)
    else:
        fit.results["refused"] = fit.refused
    return fit


def _fit_ask_calibrator(qa, dataset, preds, odds, results, threshold: float, dev_path: Path) -> dict | None:
    """A calibrator on ask's answers (calibration.py's features under the chosen rule); None, with a
    warning, where the dev data cannot fit one."""
    from ..calibration import NO_SPAN
    from ..decode import NBestEntry
    from ..errors import SquadkitError
    from ..calibrate import fit_calibration
    from ..prediction_files import SquadPredictions

    sp = SquadPredictions(predictions=abstaining(preds, odds, threshold))
    for ex, r in zip(dataset.examples, results):
        sp.nbest[ex.id] = [NBestEntry(preds[ex.id], 0.0, 0.0, window=0)] if preds[ex.id] else []
        sp.features[ex.id] = list(r.features) if r.features is not None else list(NO_SPAN)
    try:
        calibration, _ = fit_calibration(dataset, sp, qa.model.head_sha256,
                                         f"ask on {Path(dev_path).name}")
    except SquadkitError as exc:
        warnings.warn(f"no ask calibrator saved: {exc}", stacklevel=2)
        return None
    return calibration
