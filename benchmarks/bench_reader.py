"""Readers for collections, measured (issue 19): the gold paragraph against ``ask`` at several k.

    OMP_NUM_THREADS=1 python benchmarks/bench_reader.py \\
        --models plain=/work/runs/plain,both=/work/runs/both [--ks 1,3,5,10] [--threads 1] [--json out.json]

For each trained model folder, on the 626 questions of the shared dev slice:

* **gold paragraph**: ``predict_squad`` on each question's own paragraph, with the folder's
  single-passage threshold (EM, F1, HasAns F1, NoAns accuracy);
* **ask**: bm25 over one index of every dev AND train paragraph (passages of at most 300 of the
  reader's tokens, as in bench_retrieval.py), reading k = 1, 3, 5, 10 passages, by the folder's
  rule (its ``ask_scoring``, ``ask_threshold`` and ``ask_retrieval_weight`` when it has them, else
  the first rule: raw logits, min null, the single-passage threshold, weight 0). The passages are read once, at the
  largest k; each k ranks the first k of them (bm25 re-ranks its best 30, so its top k is a
  prefix of its top 10);
* the same reader under the other rule (raw or normalised) with a threshold fitted here at k=5
  (as ``train`` fits one), to tell the rule from the training;
* "never abstaining" rows: the best span whatever the no-answer score (gold paragraph and each k):
  HasAns F1 there is the span choice alone, across passages; at the folder's ``retrieval_weight``
  and, to tell what the retriever's view adds, at the other end (0 for a folder that learned a
  weight; for one without, the weight ``train`` would learn, fitted here at k=5, with F1 rows at
  the folder's threshold too);
* the all-abstain line (every answer "");
* "answerable AUC": how well the no-answer score (null minus best span) ranks the answerable
  questions above the unanswerable ones, whatever the threshold (0.5 = chance); "answered %": the
  share of questions given a span (a tuned reader near all-abstain answers few);
* **off-topic passages**: each answerable question asked over its retrieved passages less every
  passage that could answer it (inside its own paragraph, or holding a gold answer's text), k = 1,
  3, 5: how often the folder's rule abstains (right here), and "off-topic AUC", how well the
  no-answer score tells these readings from the same questions' own top k. This is what passage
  negatives train for, and what the dev set cannot show: its unanswerable questions were written
  against their own paragraph;
* **paired differences** (``metrics.paired_bootstrap``, 2,000 resamples, 95 % interval) for the
  issue's targets: each model's ask at k=5 against its own gold paragraph, and each model's gold
  paragraph and ask at k=5 against the first model's (list today's reader first), also with the
  first model given the retrieval weight fitted here.

Needs the real data in ../shared/data (SQUADKIT_SHARED_DATA to move it). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SQUADKIT_SHARED_DATA", REPO.parent / "shared" / "data")) / "squad_v2"
DEV = SHARED / "dev-v2.0.first2articles.json"
TRAIN = SHARED / "train-v2.0.first10articles.json"
COLUMNS = ["model", "reader input", "EM", "F1", "HasAns F1", "NoAns acc", "answered %", "answerable AUC", "ms/question"]


def scores(dataset, preds: dict) -> dict:
    from squadkit.metrics import evaluate

    ev = evaluate(dataset, preds, report_missing=None)
    return {"EM": ev["exact"], "F1": ev["f1"], "HasAns F1": ev.get("HasAns_f1", 0.0),
            "NoAns acc": ev.get("NoAns_exact", 0.0),
            "answered %": 100.0 * sum(bool(preds[e.id]) for e in dataset.examples) / len(dataset.examples)}


def without_answer_passages(example, read):
    """``read`` less every passage that could answer ``example``: one inside its own paragraph, or one
    holding a gold answer's text (case-insensitive; the rule train/negatives.py draws negatives by)."""
    from squadkit.retrieval.ask import Reading
    from squadkit.train.negatives import answer_texts

    answers = answer_texts(example)
    keep = [i for i, hit in enumerate(read.hits)
            if hit.text not in example.context and not any(a in hit.text.lower() for a in answers)]
    return Reading([read.hits[i] for i in keep], [read.nbests[i] for i in keep], [read.windows[i] for i in keep],
                   read.features)


def off_topic_rows(name: str, dqa, readings, dataset, ks: list[int], odds_at) -> list[dict]:
    """Answerable questions, each asked over its retrieved passages less those that could answer it
    (``without_answer_passages``): the right output is to abstain. What passage negatives train for,
    and what the dev set's unanswerable questions (written against their own paragraph) cannot show.
    ``odds_at(k)``: every question's no-answer odds over its own top k, as the ask rows ranked them."""
    from squadkit.metrics import roc_auc
    from squadkit.train.ask_eval import NO_SPAN_ODDS

    pairs = [(e, without_answer_passages(e, r)) for e, r in zip(dataset.examples, readings) if e.answers]
    rows = []
    for k in ks:
        results = [dqa.rank(e.question, r, k=k) for e, r in pairs]
        off_topic = [-(r.null_margin if r.null_margin is not None else NO_SPAN_ODDS) for r in results]
        own = odds_at(k)
        rows.append({"model": name, "k": k, "questions": len(pairs),
                     "abstained %": 100.0 * sum(r.no_answer for r in results) / len(pairs),
                     "off-topic AUC": roc_auc([-own[e.id] for e, _ in pairs], off_topic),
                     "passages read (mean)": sum(min(k, len(r.hits)) for _, r in pairs) / len(pairs)})
    return rows


def paired_differences(rows: list[dict], dataset, target_k: int) -> list[dict]:
    """The issue's targets as paired differences with 95 % bootstrap intervals (metrics.paired_bootstrap):
    each model's ask at ``target_k`` against its own gold paragraph, and each model's gold paragraph
    and ask at ``target_k`` against the first model's (today's reader, by convention first in --models),
    and against the first model given a fitted retrieval weight at ask time (when it has no weight)."""
    from squadkit.metrics import paired_bootstrap

    by = {(r["model"], r["_key"]): r["_preds"] for r in rows if r.get("_key")}
    models = list(dict.fromkeys(r["model"] for r in rows if r.get("_key")))
    first, out = models[0], []
    for model in models:
        pairs = [(f"ask k={target_k} - own gold paragraph", (model, ("ask", target_k)), (model, ("gold",)))]
        if model != first:
            pairs += [(f"gold paragraph - {first}'s", (model, ("gold",)), (first, ("gold",))),
                      (f"ask k={target_k} - {first}'s", (model, ("ask", target_k)), (first, ("ask", target_k))),
                      (f"ask k={target_k} - {first}'s with a fitted retrieval weight", (model, ("ask", target_k)),
                       (first, ("ask, fitted weight", target_k)))]
        for label, a, b in pairs:
            if a in by and b in by:
                d = paired_bootstrap(dataset, by[a], by[b])
                out.append({"model": model, "F1 difference": label, **d})
                print(f"| {model} | {label} | {d['difference']:+.2f} | [{d['low']:+.2f}, {d['high']:+.2f}] |", flush=True)
    return out


def bench_model(name: str, folder: str, dataset, ks: list[int], workdir: Path, rows: list[dict],
                off_topic: list[dict]) -> None:
    from squadkit.pipeline import QuestionAnswerer
    from squadkit.predict import decode_settings_for, predict_squad
    from squadkit.retrieval import DocumentQA, Index
    from squadkit.metrics import evaluate, no_answer_auc
    from squadkit.train.ask_eval import abstaining, ask_predictions, build_ask_index, fit_retrieval_weight

    qa = QuestionAnswerer(folder, backend="torch", device="cpu")
    questions = [e.question for e in dataset.examples]

    def add(label: str, preds: dict, seconds: float | None, odds: dict | None = None, key: tuple = ()) -> None:
        row = {"model": name, "reader input": label, **scores(dataset, preds),
               "answerable AUC": None if odds is None else no_answer_auc(dataset, odds),
               "ms/question": None if seconds is None else 1000 * seconds / len(questions),
               "_key": key, "_preds": preds}  # for the paired differences (not printed, not saved)
        rows.append(row)
        print(_line(row), flush=True)

    decode, _ = decode_settings_for(qa.model)
    t0 = time.perf_counter()
    gold = predict_squad(qa.model, dataset.examples, decode, batch_size=8)
    add(f"gold paragraph (threshold {decode.null_score_diff_threshold:.2f})", gold.predictions,
        time.perf_counter() - t0, gold.null_odds, key=("gold",))
    add("gold paragraph, never abstaining (span quality)", gold.top_spans(), None)
    index_path = workdir / f"ask-{name}.sqlite"
    if not index_path.is_file():
        build_ask_index(index_path, [DEV, TRAIN], folder)
    with Index(index_path) as index:
        dqa = DocumentQA(index, qa=qa, k=max(ks))
        t0 = time.perf_counter()
        readings = dqa.read(questions, max(ks))
        seconds = time.perf_counter() - t0
        weight = dqa.settings.retrieval_weight
        base = f"{dqa.settings.scoring} rule, {'ask_threshold' if (dqa.settings.sources['null_score_diff_threshold'].endswith('ask_threshold)')) else 'threshold'} {dqa.settings.null_score_diff_threshold:.2f}"
        fit_k = 5 if 5 in ks else ks[-1]

        ranked: dict[tuple[int, float], tuple[dict, dict]] = {}  # (k, weight) -> best spans and their odds

        def predicted(k: int, retrieval_weight: float) -> tuple[dict, dict]:
            if (k, retrieval_weight) not in ranked:
                ranked[k, retrieval_weight] = ask_predictions(dqa, readings, dataset, k, retrieval_weight)[:2]
            return ranked[k, retrieval_weight]

        def ask_rows(label: str, retrieval_weight: float, timed: bool) -> None:
            for k in ks:
                preds, odds = predicted(k, retrieval_weight)
                add(f"ask, bm25, k={k} ({label})", abstaining(preds, odds, dqa.settings.null_score_diff_threshold),
                    seconds * k / max(ks) if timed else None, odds, key=("ask" if timed else "ask, fitted weight", k))

        def span_rows(retrieval_weight: float) -> None:  # the spans alone: does reading more pick worse ones?
            for k in ks:
                preds, _ = predicted(k, retrieval_weight)
                add(f"ask, bm25, k={k}, never abstaining, retrieval weight {retrieval_weight:g} (span quality)",
                    preds, None)

        ask_rows(f"{base}, retrieval weight {weight:g}", weight, True)
        span_rows(weight)
        if weight:
            span_rows(0.0)
        else:
            fitted, _ = fit_retrieval_weight(dqa, readings, dataset, fit_k)
            ask_rows(f"{base}, retrieval weight {fitted:g} fitted here at k={fit_k}", fitted, False)
            span_rows(fitted)
        off_topic.extend(off_topic_rows(name, dqa, readings, dataset, [k for k in ks if k < max(ks)],
                                        lambda k: predicted(k, weight)[1]))
        # the same reader under the other rule, its threshold fitted here at k=5 (as train fits one)
        other = "normalized" if dqa.settings.scoring == "raw" else "raw"
        other_dqa = DocumentQA(index, qa=qa, k=max(ks), scoring=other)
        preds, odds, _ = ask_predictions(other_dqa, readings, dataset, fit_k)
        threshold = float(evaluate(dataset, preds, na_probs=odds, report_missing=None)["best_f1_thresh"])
        for k in ks:
            preds, odds, _ = ask_predictions(other_dqa, readings, dataset, k)
            add(f"ask, bm25, k={k} ({other} rule, threshold {threshold:.2f} fitted here at k={fit_k})",
                abstaining(preds, odds, threshold), None, odds)


def _line(row: dict) -> str:
    cells = []
    for c in COLUMNS:
        v = row[c]
        cells.append("" if v is None else f"{v:.2f}" if isinstance(v, float) and c != "ms/question" else
                     f"{v:.0f}" if isinstance(v, float) else str(v))
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="NAME=FOLDER,NAME=FOLDER,...")
    ap.add_argument("--ks", default="1,3,5,10")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="Where the indexes go (kept; reused when present).")
    ap.add_argument("--json", default=None, help="Also write the rows here.")
    ap.add_argument("--limit", type=int, default=None, help="Only the first N dev questions (a smoke run).")
    args = ap.parse_args()
    if not DEV.is_file():
        sys.exit(f"missing real data: {DEV}")
    import torch

    from squadkit.data import load_squad

    torch.set_num_threads(args.threads)
    dataset = load_squad(DEV)
    if args.limit:
        dataset.examples = dataset.examples[: args.limit]
    ks = sorted(int(k) for k in args.ks.split(","))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-reader-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS), flush=True)
    off_topic: list[dict] = []
    for item in args.models.split(","):
        name, folder = item.split("=", 1)
        bench_model(name, folder, dataset, ks, workdir, rows, off_topic)
    abstain = scores(dataset, {e.id: "" for e in dataset.examples})
    rows.append({"model": "-", "reader input": "all-abstain (every answer \"\")", **abstain, "answerable AUC": None,
                 "ms/question": None})
    print(_line(rows[-1]), flush=True)
    print("\nAnswerable questions over their passages less those that could answer them (abstaining is right):\n\n"
          "| model | k | questions | abstained % | off-topic AUC | passages read (mean) |\n"
          "|---|---|---|---|---|---|")
    for r in off_topic:
        print(f"| {r['model']} | {r['k']} | {r['questions']} | {r['abstained %']:.1f} | "
              f"{r['off-topic AUC']:.3f} | {r['passages read (mean)']:.2f} |")
    target_k = 5 if 5 in ks else ks[-1]
    print(f"\nF1 differences, paired bootstrap over the {len(dataset.examples)} questions (2,000 resamples, seed 0; "
          f"95 % interval):\n\n| model | difference | F1 | 95 % interval |\n|---|---|---|---|", flush=True)
    differences = paired_differences(rows, dataset, target_k)
    if args.json:
        table = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        Path(args.json).write_text(json.dumps({"rows": table, "off_topic": off_topic, "differences": differences},
                                              indent=2))


if __name__ == "__main__":
    main()
