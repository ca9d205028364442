#!/usr/bin/env python
"""Answering speed on a GPU: batch widths exact (the default) or rounded to a multiple of 64 (as training does there).

``predict_squad`` (what ``squadkit predict`` runs) over the shared train slice's 4,719 questions,
384-token windows, stride 128, batch 64, for roberta-base (random weights with the real tokenizer:
the card's model size; speed does not depend on the weights) and any fine-tuned QA model folder
(``--models roberta-base,FOLDER``, e.g. all-MiniLM-L6-v2 after ``squadkit train``), in fp32 and bf16. Each configuration runs
``--repeats`` times, interleaved (a GPU's clock drifts too); the figure is the best run's
questions/s, after one untimed warm-up pass per configuration. The table also says whether the
rounded run predicted exactly what the exact-width run did (padding is masked out; in bf16 a
different kernel may round a logit differently, so a few answers may differ there).

    python benchmarks/bench_gpu_predict.py                  # on a machine with a CUDA GPU
    python benchmarks/bench_gpu_predict.py --models roberta-base,runs/minilm --dtypes fp32

Needs the real data in ../shared/data (SQUADKIT_SHARED_DATA to move it). Prints a table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu_train import TRAIN, roberta_base_random  # noqa: E402

MULTIPLES = (64, 1)


def timed_predict(model, examples, settings, batch_size: int):
    """Seconds and predictions of one ``predict_squad`` pass (the GPU's queue drained at both ends)."""
    from squadkit.predict import predict_squad

    def drain() -> None:
        if str(model.device).startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    drain()
    start = time.perf_counter()
    preds = predict_squad(model, examples, settings, batch_size=batch_size)
    drain()
    return time.perf_counter() - start, preds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="roberta-base", help="roberta-base and/or QA model folders, comma-separated")
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--questions", type=int, default=0, help="the first N questions (0: all 4,719)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None, help="default: cuda when there is one")
    ap.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "squadkit-bench-gpu"))
    args = ap.parse_args()
    if not TRAIN.is_file():
        sys.exit(f"missing real data: {TRAIN}")
    import torch

    from squadkit.model import load as load_model
    from squadkit.data import load_squad
    from squadkit.settings import AnswerSettings

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name(0) if device.startswith("cuda") else "CPU (no CUDA GPU: numbers mean little)"
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    examples = load_squad(TRAIN).examples
    examples = examples[: args.questions] if args.questions else examples
    settings = AnswerSettings(max_seq_length=384, doc_stride=128)
    models = []
    for name in args.models.split(","):
        if name == "roberta-base":
            models.append(("roberta-base (random weights)", str(roberta_base_random(work))))
        else:
            models.append((Path(name).name, name))
    rows = []
    for label, path in models:
        for dtype in args.dtypes.split(","):
            model = load_model(path, device=device, dtype=dtype, backend="torch")
            best: dict[int, float] = {}
            answers = {}
            for multiple in MULTIPLES:  # warm-up: the first pass allocates and picks kernels
                model.pad_multiple = multiple
                timed_predict(model, examples[: 4 * args.batch_size], settings, args.batch_size)
            for _ in range(args.repeats):
                for multiple in MULTIPLES:
                    model.pad_multiple = multiple
                    seconds, preds = timed_predict(model, examples, settings, args.batch_size)
                    best[multiple] = max(best.get(multiple, 0.0), len(examples) / seconds)
                    answers[multiple] = preds.predictions
            same = sum(answers[64][q] == answers[1][q] for q in answers[1])
            rows.append([label, dtype, f"{best[64]:,.0f}", f"{best[1]:,.0f}", f"{best[64] / best[1]:.2f}x",
                         f"{same}/{len(answers[1])}"])
            print("  " + " | ".join(rows[-1]), flush=True)
            del model
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"predict_squad, {len(examples):,} questions of the shared train slice, 384/128 windows, "
                        f"batch {args.batch_size}, best of {args.repeats}, questions/s; {where}; torch {torch.__version__}",
                  title_justify="left")
    for i, column in enumerate(["model", "dtype", "widths rounded to 64", "exact widths", "speed-up",
                                "same predictions"]):
        table.add_column(column, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
