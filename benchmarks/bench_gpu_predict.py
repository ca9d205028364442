#!/usr/bin/env python
"""Answering speed on a GPU: ``predict_squad`` against a plain transformers inference loop.

``predict_squad`` (what ``squadkit predict`` runs) over the shared train slice's 4,719 questions,
384-token windows, stride 128, batch 64, for roberta-base (random weights with the real tokenizer:
the card's model size; speed does not depend on the weights), in bf16 (``--dtypes`` for more):

* as it runs by default on a GPU: the next chunk tokenized in a thread, span scoring on the device
  (``nbest.squad_batch_nbest`` on the logits where the model left them, only the n-best copied back);
* the same with the logits copied to the host and scored there (numpy), as before; the table says
  whether the two predicted exactly the same (predictions, n-best lists, null odds);
* a plain transformers loop: the tokenizer's own overflowing windows (padded per batch), the model in
  bf16, the logits copied to the host; no span decoding at all (a floor for what answering costs).

Each configuration runs ``--repeats`` times, interleaved; the figure is the best run's questions/s,
after one untimed warm-up pass.

    python benchmarks/bench_gpu_predict.py                  # on a machine with a CUDA GPU
    python benchmarks/bench_gpu_predict.py --questions 64 --repeats 1 --tiny   # end to end on a CPU

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


def plain_loop(model, examples, batch_size: int) -> float:
    """Seconds of a plain transformers loop: overflowing windows, forward, logits to the host."""
    import torch

    tok, net, dev = model.tokenizer, model.runner.model, model.device  # the torch runner holds the network
    if str(dev).startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for lo in range(0, len(examples), 256):
        chunk = examples[lo : lo + 256]
        enc = tok([e.question for e in chunk], [e.context for e in chunk], truncation="only_second", max_length=384,
                  stride=128, return_overflowing_tokens=True, padding=False)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        for b in range(0, len(ids), batch_size):
            batch = tok.pad({"input_ids": ids[b : b + batch_size], "attention_mask": mask[b : b + batch_size]},
                            return_tensors="pt")
            with torch.inference_mode():
                out = net(**{k: v.to(dev) for k, v in batch.items()})
                out.start_logits.float().cpu(), out.end_logits.float().cpu()
    if str(dev).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def host_decoding(model):
    """The model with span scoring on the host (its logits copied back), as before issue 26."""
    import copy
    import dataclasses

    runner = copy.copy(model.runner)
    runner.device_logits = lambda batch: None
    return dataclasses.replace(model, runner=runner)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dtypes", default="bf16")
    ap.add_argument("--questions", type=int, default=0, help="the first N questions (0: all 4,719)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model: checks the script end to end on a CPU")
    ap.add_argument("--device", default=None, help="default: cuda when there is one")
    ap.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "squadkit-bench-gpu"))
    args = ap.parse_args()
    if not TRAIN.is_file():
        sys.exit(f"missing real data: {TRAIN}")
    import torch
    import transformers

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
    path = str(roberta_base_random(work, tiny=args.tiny))
    rows = []
    for dtype in args.dtypes.split(","):
        model = load_model(path, device=device, dtype=dtype, backend="torch")
        runs = {"predict_squad (spans scored on the device)": lambda: timed_predict(model, examples, settings, args.batch_size),
                "predict_squad (spans scored on the host)": lambda: timed_predict(host_decoding(model), examples, settings,
                                                                                 args.batch_size),
                "plain transformers loop (no decoding)": lambda: (plain_loop(model, examples, args.batch_size), None)}
        timed_predict(model, examples[: 4 * args.batch_size], settings, args.batch_size)  # warm-up
        plain_loop(model, examples[: 4 * args.batch_size], args.batch_size)
        best, preds = {}, {}
        for _ in range(args.repeats):
            for name, run in runs.items():
                seconds, out = run()
                best[name] = max(best.get(name, 0.0), len(examples) / seconds)
                preds[name] = out
        a, b = (preds[k] for k in list(runs)[:2])
        same = (a.predictions == b.predictions and a.null_odds == b.null_odds and a.nbest_json() == b.nbest_json())
        plain = best[list(runs)[2]]
        for name in runs:
            rows.append([dtype, name, f"{best[name]:,.0f}", f"{best[name] / plain:.2f}x",
                         ("yes" if same else "NO") if name != list(runs)[2] else "-"])
            print("  " + " | ".join(rows[-1]), flush=True)
        model = None  # noqa: F841 (frees the GPU memory before the next dtype)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    print(f"\npredict_squad, {len(examples):,} questions of the shared train slice, 384/128 windows, batch "
          f"{args.batch_size}, best of {args.repeats}; {'roberta (2 layers of 64)' if args.tiny else 'roberta-base'} "
          f"random weights; {where}; torch {torch.__version__}, transformers {transformers.__version__}")
    print("| dtype | run | questions/s | vs plain loop | same predictions, n-best, null odds (device vs host) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
