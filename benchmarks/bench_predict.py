"""Questions per second of `squadkit predict` (squad mode) beside transformers' QA pipeline.

Same model, same questions, same machine, configurations interleaved (the machine's speed
drifts). The model has roberta-base's shape (12 layers, hidden 768) with random weights: the
time does not depend on the weights. Real SQuAD v2 dev questions and the real roberta-base
tokenizer come from ../shared/data (or $SQUADKIT_SHARED_DATA).

    python benchmarks/bench_predict.py --n 100 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared() -> Path:
    return Path(os.environ.get("SQUADKIT_SHARED_DATA", REPO.parent / "shared" / "data"))


def build_model(out: Path, layers: int, hidden: int) -> Path:
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaForQuestionAnswering

    tokenizer = AutoTokenizer.from_pretrained(str(shared() / "roberta-base-tokenizer"), model_max_length=512)
    config = RobertaConfig(vocab_size=50265, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                           intermediate_size=hidden * 4, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1)
    torch.manual_seed(0)
    RobertaForQuestionAnswering(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100, help="questions from the dev slice")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    data_file = shared() / "squad_v2" / "dev-v2.0.first2articles.json"
    if not data_file.exists():
        sys.exit(f"needs the real data at {data_file}")

    from squadkit.data import load_squad
    from squadkit.model import load as load_model
    from squadkit.predict import predict_squad
    from squadkit.settings import AnswerSettings

    examples = load_squad(data_file).examples[: args.n]
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp) / "model", args.layers, args.hidden)
        model = load_model(str(model_dir), device="cpu")

        from transformers import pipeline as hf_pipeline

        reference = hf_pipeline("question-answering", model=str(model_dir), tokenizer=str(model_dir), device=-1)
        inputs = [{"question": e.question, "context": e.context} for e in examples]

        def run_predict() -> None:
            predict_squad(model, examples, AnswerSettings(), batch_size=args.batch_size)

        def run_predict_legacy() -> None:
            predict_squad(model, examples, AnswerSettings(legacy=True), batch_size=args.batch_size)

        def run_pipeline(batch: int):
            return lambda: reference(inputs, batch_size=batch)

        configs = {
            "transformers pipeline, batch 1": run_pipeline(1),
            "transformers pipeline, batch 8": run_pipeline(8),
            f"squadkit predict, batch {args.batch_size}": run_predict,
            f"squadkit predict --legacy, batch {args.batch_size}": run_predict_legacy,
        }
        times: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.repeats):
            for name, fn in configs.items():  # interleaved
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)

    base = len(examples) / min(times["transformers pipeline, batch 8"])
    print(f"\n{len(examples)} dev questions, model {args.layers} layers x {args.hidden}, best of {args.repeats}, "
          f"{os.cpu_count()} CPUs\n")
    print(f"{'configuration':44s} {'questions/s':>12s} {'vs pipeline b8':>15s}")
    for name, runs in times.items():
        qps = len(examples) / min(runs)
        print(f"{name:44s} {qps:12.2f} {qps / base:14.2f}x")


if __name__ == "__main__":
    main()
