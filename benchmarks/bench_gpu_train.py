#!/usr/bin/env python
"""Training speed on a GPU: squadkit train against transformers' Trainer fed as run_qa.py feeds it.

One prepared command, every run its own process, the same data and the same number of optimizer
steps: roberta-base's size (random weights, config from the shared roberta-base tokenizer folder's
config.json), the shared train slice, 384-token windows, stride 128, bf16, at batch 16 and 64:

* ``squadkit train`` (length-grouped batches rounded to 64; bf16 autocast, fused AdamW, pinned
  non-blocking copies), eager and with ``--compile``;
* transformers' ``Trainer`` with run_qa.py's ``prepare_train_features`` (every window padded to 384)
  and its defaults (``TrainingArguments(bf16=True)``, AdamW, linear schedule).

Figures: the median samples/s of the logging windows after the first two (warm-up and compiling
excluded); the ratio squadkit/Trainer; and the share of the chip's dense bf16 peak the run's *real*
(unpadded) tokens represent:

    FLOP/s = samples/s * (6 * P * T + 12 * layers * hidden * T2)

with P the parameters outside the embeddings, T the mean real tokens per window and T2 the mean of
the squared real lengths (attention scores and their product with V, forward and backward), against
``--peak-tflops`` (989 for an H200 / H100 SXM, dense bf16).

    python benchmarks/bench_gpu_train.py --steps 150          # on a machine with a CUDA GPU
    python benchmarks/bench_gpu_train.py --steps 4 --tiny     # an end-to-end check on a CPU

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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SQUADKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
TRAIN = SHARED / "squad_v2" / "train-v2.0.first10articles.json"
TOKENIZER = SHARED / "roberta-base-tokenizer"


def roberta_base_random(work: Path, tiny: bool = False) -> Path:
    """roberta-base's architecture with random weights and the real tokenizer, saved like a checkpoint
    (``tiny``: 2 layers of 64, for a quick run on a CPU)."""
    import shutil

    import torch
    from transformers import RobertaConfig, RobertaForQuestionAnswering

    out = work / ("roberta-tiny-random" if tiny else "roberta-base-random")
    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        config = RobertaConfig.from_pretrained(str(TOKENIZER))
        if tiny:
            config.update({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128})
        RobertaForQuestionAnswering(config).save_pretrained(out)
        for name in ("merges.txt", "vocab.json", "tokenizer.json", "config.json"):
            if name != "config.json":
                shutil.copy(TOKENIZER / name, out / name)
    return out


def run_qa_features(tokenizer, path: Path, max_len: int = 384, stride: int = 128) -> dict:
    """run_qa.py's ``prepare_train_features`` over a SQuAD v2 file: windows padded to ``max_len``,
    start/end labels (CLS for no answer), as its Trainer sees them."""
    data = json.loads(path.read_text(encoding="utf-8"))
    questions, contexts, answers = [], [], []
    for article in data["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                questions.append(qa["question"].lstrip())
                contexts.append(para["context"])
                answers.append(qa["answers"][0] if qa["answers"] else None)
    enc = tokenizer(questions, contexts, truncation="only_second", max_length=max_len, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length")
    starts, ends = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        ids, seq = enc["input_ids"][i], enc.sequence_ids(i)
        cls = ids.index(tokenizer.cls_token_id)
        ans = answers[enc["overflow_to_sample_mapping"][i]]
        if ans is None:
            starts.append(cls), ends.append(cls)
            continue
        a0, a1 = ans["answer_start"], ans["answer_start"] + len(ans["text"])
        lo = seq.index(1)
        hi = len(seq) - 1 - seq[::-1].index(1)
        if not (offsets[lo][0] <= a0 and offsets[hi][1] >= a1):
            starts.append(cls), ends.append(cls)
            continue
        while lo < len(offsets) and offsets[lo][0] <= a0:
            lo += 1
        while offsets[hi][1] >= a1:
            hi -= 1
        starts.append(lo - 1), ends.append(hi + 1)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "start_positions": starts,
            "end_positions": ends}


def trainer_child(args) -> None:
    """One Trainer run (in its own process); prints its logging windows' samples/s as JSON."""
    import torch
    from transformers import (AutoModelForQuestionAnswering, AutoTokenizer, Trainer, TrainerCallback,
                              TrainingArguments)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    feats = run_qa_features(tokenizer, TRAIN)
    rows = [{k: feats[k][i] for k in feats} for i in range(len(feats["input_ids"]))]
    model = AutoModelForQuestionAnswering.from_pretrained(args.model)
    cuda = torch.cuda.is_available()
    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, targs, state, control, **kw):
            if state.global_step % args.logging_steps == 0:
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter())

    targs = TrainingArguments(output_dir=args.out, per_device_train_batch_size=args.batch, learning_rate=3e-5,
                              max_steps=args.steps, bf16=cuda and not args.fp32, logging_steps=args.logging_steps,
                              save_strategy="no", report_to=[], seed=42, use_cpu=not cuda)
    Trainer(model=model, args=targs, train_dataset=rows, callbacks=[Clock()]).train()
    rates = [args.batch * args.logging_steps / (b - a) for a, b in zip(times, times[1:])]
    print("RATES " + json.dumps(rates))


def real_token_stats(model_dir: Path) -> tuple[float, float, int, int, int]:
    """Mean real tokens per window, mean squared real length, non-embedding parameters, layers, hidden."""
    import numpy as np
    from transformers import AutoConfig, AutoTokenizer, RobertaForQuestionAnswering

    feats = run_qa_features(AutoTokenizer.from_pretrained(str(model_dir)), TRAIN)
    lengths = np.array([sum(m) for m in feats["attention_mask"]], dtype=np.float64)
    config = AutoConfig.from_pretrained(str(model_dir))
    import torch

    with torch.device("meta"):
        model = RobertaForQuestionAnswering(config)
    params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    return float(lengths.mean()), float((lengths ** 2).mean()), params, config.num_hidden_layers, config.hidden_size


def median_after_warmup(rates: list[float]) -> float | None:
    rates = rates[2:] or rates
    if not rates:
        print("no logging window ended: give --steps at least twice --logging-steps", file=sys.stderr)
    return statistics.median(rates) if rates else None


def squadkit_rate(model: str, batch: int, flags: list[str], args, out: Path) -> float | None:
    cmd = [sys.executable, "-m", "squadkit", "train", "-m", model, "--do-train", "--version-2-with-negative",
           "--train-file", str(TRAIN), "--max-seq-length", "384", "--doc-stride", "128", "--save-steps", "0",
           "--logging-steps", str(args.logging_steps), "--features-cache-dir", str(out.parent / "cache"),
           "--quiet", "--overwrite-output-dir", "--seed", "42", "--per-gpu-train-batch-size", str(batch),
           "--learning-rate", "3e-5", "--max-steps", str(args.steps), "-o", str(out), *flags]
    if args.fp32:
        cmd.append("--fp32")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    if proc.returncode != 0:
        print(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    return median_after_warmup([r["samples_per_second"] for r in log if r.get("samples_per_second")])


def trainer_rate(model: str, batch: int, args, out: Path) -> float | None:
    cmd = [sys.executable, __file__, "--trainer-child", "--model", model, "--batch", str(batch), "--steps",
           str(args.steps), "--logging-steps", str(args.logging_steps), "--out", str(out)] + (["--fp32"] if args.fp32 else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RATES ")), None)
    if proc.returncode != 0 or line is None:
        print(f"failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    return median_after_warmup(json.loads(line[6:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150, help="optimizer steps per run (every run the same)")
    ap.add_argument("--logging-steps", type=int, default=10)
    ap.add_argument("--batches", default="16,64")
    ap.add_argument("--no-compile", action="store_true", help="skip the --compile runs")
    ap.add_argument("--fp32", action="store_true", help="float32 everywhere (no bf16)")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model: checks the script end to end on a CPU")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the chip's dense bf16 peak (H200/H100 SXM: 989)")
    ap.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "squadkit-bench-gpu"))
    ap.add_argument("--trainer-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.trainer_child:
        return trainer_child(args)
    if not TRAIN.is_file():
        sys.exit(f"missing real data: {TRAIN}")
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if cuda else "no CUDA GPU (CPU: numbers mean little)"
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model = roberta_base_random(work, tiny=args.tiny)
    mean_t, mean_t2, params, layers, hidden = real_token_stats(model)
    flop_per_sample = 6 * params * mean_t + 12 * layers * hidden * mean_t2
    print(f"real tokens per window: mean {mean_t:.1f} (of 384); non-embedding parameters {params / 1e6:.1f}M; "
          f"{flop_per_sample / 1e9:.1f} GFLOP per sample", flush=True)
    runs = [("squadkit", []), ("squadkit --compile", ["--compile"])] if cuda and not args.no_compile else [("squadkit", [])]
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        t0 = time.perf_counter()
        trainer = trainer_rate(str(model), batch, args, work / f"trainer-{batch}")
        print(f"  Trainer, batch {batch}: {trainer} samples/s ({time.perf_counter() - t0:.0f} s)", flush=True)
        for label, flags in runs:
            t0 = time.perf_counter()
            rate = squadkit_rate(str(model), batch, flags, args, work / f"squadkit-{batch}-{len(flags)}")
            print(f"  {label}, batch {batch}: {rate} samples/s ({time.perf_counter() - t0:.0f} s)", flush=True)
            share = f"{rate * flop_per_sample / (args.peak_tflops * 1e12):.1%}" if rate else "-"
            ratio = f"{rate / trainer:.2f}x" if rate and trainer else "-"
            rows.append([str(batch), label, f"{rate:,.0f}" if rate else "no figure", f"{trainer:,.0f}" if trainer else "no figure",
                         ratio, share])
        rows.append([str(batch), "Trainer (run_qa.py, padded to 384)", "", f"{trainer:,.0f}" if trainer else "no figure", "",
                     f"{trainer * flop_per_sample / (args.peak_tflops * 1e12):.1%}" if trainer else "-"])
    precision = "fp32" if args.fp32 else "bf16"
    print(f"\n{device}; torch {torch.__version__}, transformers {transformers.__version__}; {precision}; "
          f"{'roberta (2 layers of 64)' if args.tiny else 'roberta-base'} random weights, shared train slice, "
          f"384/128 windows, {args.steps} optimizer steps per run, median samples/s of {args.logging_steps}-step "
          f"windows after the first two; peak share = samples/s x (6 x {params / 1e6:.1f}M x {mean_t:.1f} real tokens "
          f"+ 12 x {layers} x {hidden} x {mean_t2:,.0f}) / {args.peak_tflops:g} TFLOP/s")
    print("| batch | run | samples/s | Trainer samples/s | squadkit / Trainer | share of bf16 peak (real tokens) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
