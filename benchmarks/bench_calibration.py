"""Calibrated confidence of a real SQuAD v2 model, measured where it was not fitted.

The model: all-MiniLM-L6-v2 fine-tuned by `squadkit train` on the shared train slice (10
articles). The data: the shared SQuAD v2 dev slice (2 articles, 626 questions). The calibrator is
cross-fitted: fitted on one article's questions, applied to the other's, and the reverse, so every
confidence reported is out of sample. The model folder is only read (nothing is saved into it).

Reported for the final predictions (squad mode with the folder's saved threshold; "" counts as
right on an unanswerable question), before (the raw `score`: the window softmax probability of the
span, p_null for "") and after, for four calibrators:

* platt-margin: logistic regression on the span's logit margin over the null alone;
* isotonic-margin: isotonic regression (pool-adjacent-violators, numpy) on the same margin;
* logistic-3 (squadkit's): logistic regression on margin, window log-probability and log length.

    OMP_NUM_THREADS=1 python benchmarks/bench_calibration.py --model /work/runs/minilm-squad
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def shared() -> Path:
    return Path(os.environ.get("SQUADKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def pav(x: np.ndarray, y: np.ndarray):
    """Isotonic (non-decreasing) regression of y on x; returns a predict function (step, clipped)."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order].astype(float)
    vals, weights, lefts = [], [], []
    for xi, yi in zip(xs, ys):
        vals.append(yi)
        weights.append(1.0)
        lefts.append(xi)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            w = weights[-2] + weights[-1]
            v = (vals[-2] * weights[-2] + vals[-1] * weights[-1]) / w
            vals[-2:], weights[-2:], lefts[-2:] = [v], [w], [lefts[-2]]
    lefts_a, vals_a = np.asarray(lefts), np.asarray(vals)
    return lambda q: vals_a[np.clip(np.searchsorted(lefts_a, q, side="right") - 1, 0, len(vals_a) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/work/runs/minilm-squad")
    parser.add_argument("--data", default=str(shared() / "squad_v2" / "dev-v2.0.first2articles.json"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    import torch

    from squadkit.model import load as load_model
    from squadkit.calibration import _fit_logistic, _sigmoid, fit_calibrator
    from squadkit.metrics import calibration_report
    from squadkit.data import load_squad
    from squadkit.calibrate import calibration_data, confidence_of_final, raw_confidence
    from squadkit.predict import decode_settings_for, predict_squad

    dataset = load_squad(args.data)
    model = load_model(args.model, backend="torch", device="cpu")
    settings, _ = decode_settings_for(model, dataset)
    start = time.perf_counter()
    preds = predict_squad(model, dataset.examples, settings, batch_size=args.batch_size, calibrate=False)
    predict_s = time.perf_counter() - start
    x, right, unanswerable, qids, groups = calibration_data(dataset, preds)
    groups = np.asarray(groups)
    abstains = np.array([preds.predictions[q] == "" for q in qids])
    gold = {e.id: [a.text for a in e.answers] for e in dataset.examples}
    from squadkit.metrics import correctness_of_final

    cmap = correctness_of_final({q: preds.predictions[q] for q in qids}, gold)
    correct = np.array([cmap[q] for q in qids], float)

    methods = {"raw score": raw_confidence(x, abstains)}
    names = ("platt-margin", "isotonic-margin", "logistic-3 (squadkit)")
    conf = {name: np.zeros(len(qids)) for name in names}
    span_conf = {"raw score": np.exp(x[:, 1]), **{name: np.zeros(len(qids)) for name in names}}
    for article in dict.fromkeys(groups.tolist()):
        test, fit = groups == article, groups != article
        cal = fit_calibrator(x[fit], right[fit], unanswerable[fit])
        conf["logistic-3 (squadkit)"][test] = confidence_of_final(cal, x[test], abstains[test])
        span_conf["logistic-3 (squadkit)"][test] = cal.answer_confidence(x[test])
        # margin-only Platt and isotonic: one curve for spans (target: right), one for "" (target: unanswerable)
        m, mt = x[fit, :1], x[test, :1]
        w_ans, w_abs = _fit_logistic(m, right[fit]), _fit_logistic(m, unanswerable[fit])
        conf["platt-margin"][test] = np.where(abstains[test], _sigmoid(w_abs[0] + mt @ w_abs[1:]),
                                              _sigmoid(w_ans[0] + mt @ w_ans[1:]))
        iso_ans = pav(x[fit, 0], right[fit])
        iso_abs = pav(-x[fit, 0], unanswerable[fit])
        conf["isotonic-margin"][test] = np.where(abstains[test], iso_abs(-x[test, 0]), iso_ans(x[test, 0]))
        span_conf["platt-margin"][test] = _sigmoid(w_ans[0] + mt @ w_ans[1:])
        span_conf["isotonic-margin"][test] = iso_ans(x[test, 0])
    methods.update(conf)

    # The service's policy: answer the top span when its confidence is at least P, else "" (the null
    # threshold left out: the confidence alone decides). ECE here is that of the span confidence
    # against "the top span is an exact match", on all questions.
    unans = unanswerable.astype(bool)
    selective = {}
    for name, c in span_conf.items():
        r = calibration_report(c, right)
        row = {"ece_span": r["ece"]}
        for cut in (0.5, 0.7, 0.9):
            answered = c >= cut
            em = np.where(answered, right, unans).mean()
            row[f"{cut:g}"] = {"coverage": float(answered.mean()), "answered": int(answered.sum()),
                               "precision": float(right[answered].mean()) if answered.any() else None,
                               "exact_match": float(em)}
        selective[name] = row

    rows = {}
    for name, c in methods.items():
        r = calibration_report(c, correct)
        spans = ~abstains
        span_at = {}
        for cut in (0.5, 0.7, 0.9):
            m = spans & (c >= cut)
            span_at[f"{cut:g}"] = {"answered": int(m.sum()), "precision": float(correct[m].mean()) if m.any() else None}
        rows[name] = {"ece": r["ece"], "aurc": r["aurc"], "at_confidence": r["at_confidence"], "spans_at": span_at}

    result = {
        "model": args.model, "data": args.data, "questions": len(qids),
        "answerable": int((~unanswerable.astype(bool)).sum()), "articles": list(dict.fromkeys(groups.tolist())),
        "decode": {k: settings[k] for k in ("max_seq_length", "doc_stride", "null_score_diff_threshold")},
        "exact_match_final": float(correct.mean()), "top_span_right": int(right.sum()),
        "abstentions": int(abstains.sum()), "predict_seconds": round(predict_s, 1),
        "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cpu": platform.processor() or platform.machine(), "methods": rows, "selective": selective,
    }
    print(json.dumps(result, indent=2))
    print()
    print(f"{len(qids)} questions, EM of the final predictions {correct.mean() * 100:.1f}% "
          f"({int(abstains.sum())} abstentions); cross-fitted by article")
    print("| method | ECE | AURC | >=0.5: answered / precision | >=0.7 | >=0.9 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        cells = []
        for cut in ("0.5", "0.7", "0.9"):
            a = r["at_confidence"][cut]
            p = f"{a['precision'] * 100:.1f}%" if a["precision"] is not None else "-"
            cells.append(f"{a['coverage'] * 100:.1f}% / {p}")
        print(f"| {name} | {r['ece']:.3f} | {r['aurc']:.3f} | " + " | ".join(cells) + " |")
    print()
    print("Selective answering: the top span if its confidence >= P, else \"\" (EM counts \"\" right when unanswerable)")
    print("| method | span ECE | P=0.5: answered / precision / EM | P=0.7 | P=0.9 |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in selective.items():
        cells = []
        for cut in ("0.5", "0.7", "0.9"):
            a = r[cut]
            p = f"{a['precision'] * 100:.1f}%" if a["precision"] is not None else "-"
            cells.append(f"{a['coverage'] * 100:.1f}% / {p} / {a['exact_match'] * 100:.1f}%")
        print(f"| {name} | {r['ece_span']:.3f} | " + " | ".join(cells) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
