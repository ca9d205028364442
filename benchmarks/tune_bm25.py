"""Choose the BM25 re-ranking weights on half of the shared train slice's questions, check them on
the other half (never on dev). Halves: the train questions at even / odd positions, so both cover
every article. The index is bench_retrieval.py's (every dev and train paragraph, distractors too):

    OMP_NUM_THREADS=1 python benchmarks/bench_retrieval.py --parts retrieval --model TOKENIZER --workdir W
    OMP_NUM_THREADS=1 python benchmarks/tune_bm25.py W/squad.sqlite

Prints recall@1 for each weight triple on the tuning half (best first), then the best and the
current triples on the checking half.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_retrieval import TRAIN, gold_of  # noqa: E402


def recall_at_1(retriever, examples) -> float:
    hits = 0
    for ex in examples:
        found = retriever.search(ex.question, 1)
        hits += bool(found) and gold_of(found[0]) == (ex.title, ex.paragraph_index)
    return hits / len(examples)


def main() -> None:
    from squadkit.data import load_squad
    from squadkit.retrieval import BM25Retriever, Index
    s = sys.modules["squadkit.retrieval.search"]  # the module (the package exports a function of that name)

    examples = load_squad(TRAIN).examples
    tune, check = examples[0::2], examples[1::2]
    current = (s.PROXIMITY_WEIGHT, s.SENTENCE_WEIGHT, s.EXACT_WEIGHT)
    grid = list(itertools.product((0.2, 0.4, 0.6), (0.4, 0.6, 0.8), (0.3, 0.5, 0.7)))
    results = []
    with Index(sys.argv[1]) as index:
        retriever = BM25Retriever(index)
        print(f"plain BM25: tune {recall_at_1(BM25Retriever(index, proximity=False), tune):.3f}, "
              f"check {recall_at_1(BM25Retriever(index, proximity=False), check):.3f}", flush=True)
        for weights in grid:
            s.PROXIMITY_WEIGHT, s.SENTENCE_WEIGHT, s.EXACT_WEIGHT = weights
            results.append((recall_at_1(retriever, tune), weights))
            print(f"  {weights}: tune recall@1 {results[-1][0]:.3f}", flush=True)
        results.sort(key=lambda r: (-r[0], r[1] != current))  # ties: the current weights
        for label, weights in (("best", results[0][1]), ("current", current)):
            s.PROXIMITY_WEIGHT, s.SENTENCE_WEIGHT, s.EXACT_WEIGHT = weights
            print(f"{label} {weights}: tune {dict((w, r) for r, w in results).get(weights, float('nan')):.3f}, "
                  f"check {recall_at_1(retriever, check):.3f} ({len(tune)} / {len(check)} questions)", flush=True)


if __name__ == "__main__":
    main()
