"""Load-test ``squadkit serve``: throughput and latency with micro-batching on and off.

    python benchmarks/bench_serve.py                        # tiny random model, 32 clients x 20 requests
    python benchmarks/bench_serve.py --size base --clients 16 --requests 4
    python benchmarks/bench_serve.py --model path/to/checkpoint

Each configuration starts its own server in a subprocess (``squadkit serve --port 0``), so the
load generator here does not share a GIL with the server, waits for /readyz, warms up, runs a
bounded closed-loop load (every client sends its next request when the previous one is
answered), stops the server with SIGTERM and prints one table row. ``run_load`` is reused by
tests/test_serve.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import httpx

REPO = Path(__file__).resolve().parents[1]


@dataclass
class LoadResult:
    """What a load run measured; latencies in seconds."""

    requests: int
    errors: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile, q in [0, 100]."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
        return ordered[rank - 1]

    def summary(self) -> str:
        return (f"{self.requests} requests, {self.errors} errors in {self.seconds:.2f} s: "
                f"{self.throughput:.1f} req/s, p50 {1000 * self.percentile(50):.1f} ms, "
                f"p99 {1000 * self.percentile(99):.1f} ms")


def run_load(url: str, payloads: Sequence[dict], clients: int = 32, requests_per_client: int = 20,
             timeout_s: float = 60.0) -> LoadResult:
    """``clients`` concurrent clients each POST ``requests_per_client`` payloads to ``url`` + /v1/answer.

    Bounded by construction (clients x requests, each with a timeout), so it always stops.
    """
    return asyncio.run(_load(url, list(payloads), clients, requests_per_client, timeout_s))


async def _load(url: str, payloads: list[dict], clients: int, per_client: int, timeout_s: float) -> LoadResult:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        for n in range(per_client):
            payload = payloads[(index * per_client + n) % len(payloads)]
            t0 = time.perf_counter()
            try:
                response = await http.post("/v1/answer", json=payload)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                if response.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
                statuses[0] = statuses.get(0, 0) + 1
            latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        seconds = time.perf_counter() - start
    return LoadResult(clients * per_client, errors, seconds, latencies, statuses)


def make_payloads(n: int = 64, seed: int = 0, context_words: int = 120) -> list[dict]:
    """SQuAD-like questions about passages of ``context_words`` words, from a small fixed vocabulary."""
    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import WORDS

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(context_words // 2, context_words))]
        context = " ".join(words).capitalize() + "."
        question = " ".join(["what"] + rng.sample(WORDS, 5)) + "?"
        out.append({"question": question, "context": context})
    return out


def make_model(size: str, out_dir: Path) -> Path:
    """A random-weight BERT QA checkpoint: 'tiny' (2x32), 'small' (4x256) or 'base' (12x768, roberta-base-sized)."""
    sys.path.insert(0, str(REPO / "tests"))
    import torch
    from transformers import BertConfig, BertForQuestionAnswering, BertTokenizerFast
    from tiny_models import make_bert_vocab

    layers, hidden, heads = {"tiny": (2, 32, 2), "small": (4, 256, 4), "base": (12, 768, 12)}[size]
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab_file=str(make_bert_vocab(out_dir / "vocab.txt")), do_lower_case=True,
                                  model_max_length=512)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=4 * hidden, max_position_embeddings=512)
    torch.manual_seed(0)
    model = BertForQuestionAnswering(config).eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


class ServerProcess:
    """``squadkit serve`` in a subprocess on a free port; stopped with SIGTERM on exit."""

    def __init__(self, model: Path | str, *flags: str, startup_timeout_s: float = 120.0) -> None:
        self.args = [sys.executable, "-m", "squadkit", "serve", "--model", str(model), "--port", "0",
                     "--no-access-log", "--log-level", "warning", *flags]
        self.startup_timeout_s = startup_timeout_s
        self.url = ""

    def __enter__(self) -> "ServerProcess":
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self.log, text=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            self.log.seek(0)
            match = re.search(r"at (http://\S+) ", self.log.read())
            if match:
                self.url = match.group(1)
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        if not self.url:
            self.stop()
            raise RuntimeError(f"server did not start:\n{self.stderr()}")
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready:\n{self.stderr()}")

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __exit__(self, *exc) -> None:
        self.stop()
        self.log.close()


def bench(model: Path | str, label: str, flags: Sequence[str], payloads: list[dict], clients: int,
          requests: int) -> LoadResult:
    with ServerProcess(model, *flags) as server:
        run_load(server.url, payloads[:8], clients=min(clients, 8), requests_per_client=2)  # warm-up
        return run_load(server.url, payloads, clients=clients, requests_per_client=requests)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="checkpoint folder (default: a random model of --size)")
    parser.add_argument("--size", choices=("tiny", "small", "base"), default="tiny")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=20, help="requests per client")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--context-words", type=int, default=120)
    parser.add_argument("--threads", type=int, help="torch threads in the server (default: torch's)")
    args = parser.parse_args(argv)

    payloads = make_payloads(64, context_words=args.context_words)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or make_model(args.size, Path(tmp) / args.size)
        name = args.model or f"random BERT '{args.size}'"
        configs = [
            (f"batched (max batch {args.max_batch_size}, wait {args.max_wait_ms:g} ms)",
             ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]),
            ("unbatched (max batch 1)", ["--max-batch-size", "1", "--max-wait-ms", "0"]),
        ]
        if args.threads:
            configs = [(label, flags + ["--threads", str(args.threads)]) for label, flags in configs]
        print(f"model: {name}; {args.clients} clients x {args.requests} requests; "
              f"contexts of {args.context_words // 2}-{args.context_words} words; {os.cpu_count()} CPUs; "
              f"server torch threads: {args.threads or 'default'}", flush=True)
        rows = []
        for label, flags in configs:
            result = bench(model, label, flags, payloads, args.clients, args.requests)
            rows.append((label, result))
            print(f"  {label}: {result.summary()}", flush=True)
    print()
    print(f"| {'server':<40} | {'req/s':>7} | {'p50 ms':>8} | {'p99 ms':>8} | {'errors':>6} |")
    print(f"|{'-' * 42}|{'-' * 9}|{'-' * 10}|{'-' * 10}|{'-' * 8}|")
    for label, r in rows:
        print(f"| {label:<40} | {r.throughput:>7.1f} | {1000 * r.percentile(50):>8.1f} | "
              f"{1000 * r.percentile(99):>8.1f} | {r.errors:>6} |")
    return 1 if any(r.errors for _, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
