#!/usr/bin/env python
"""CPU answers per second: transformers' pipeline against squadkit on torch and ONNX Runtime.

A model of roberta-base's size (12 layers, hidden 768, intermediate 3072, 12 heads; random
weights: the time does not depend on them) with the real roberta-base tokenizer answers real
SQuAD v2 questions about real contexts. Every configuration runs in its own subprocess (so
peak memory is its own), configurations are interleaved over ``--repeats`` rounds (the
machine's speed drifts), and the best round of each is reported.

    python benchmarks/bench_cpu.py                      # 200 pairs, every configuration
    python benchmarks/bench_cpu.py --n 20 --configs hf-b1,sk-onnx-int8 --repeats 1
    python benchmarks/bench_cpu.py --profile sk-onnx-int8 --n 50    # where the time goes

Columns: questions/s, the ratio to the pipeline's best batch size, peak RSS of the process,
windows and padded tokens run, GFLOP/s achieved (model FLOPs counted from the padded batch
shapes) and the share of the machine's own large-matmul GFLOP/s in that precision (measured
in the same run: torch fp32 and bf16 matmuls, ONNX Runtime's u8 x s8 MatMulInteger).
The int8 agreement line: how often the top answer of a configuration equals ONNX fp32's.

``optimum-int8`` / ``optimum-int8-b8``: the path a user picks for fast CPU QA with Optimum
(ORTModelForQuestionAnswering export, ORTOptimizer level 2, dynamic int8 with the
AutoQuantizationConfig for this CPU, answered by transformers' pipeline), built once into the work
dir; where quantizing the level-2 graph fails (onnxruntime 1.32: "Unable to find data type for
weight_name ...") the unoptimized export is quantized and the table's header says so. Without
Optimum installed these configurations are skipped with a one-line hint; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SQUADKIT_SHARED_DATA", REPO.parent / "shared" / "data"))
LAYERS, HIDDEN, INTERMEDIATE, HEADS = 12, 768, 3072, 12

# name -> (kind, batch size, option)
CONFIGS = {
    "hf-b1": ("hf", 1, None),
    "hf-b8": ("hf", 8, None),
    "hf-b32": ("hf", 32, None),
    "sk-torch": ("torch", 32, "fp32"),
    "sk-torch-bf16": ("torch", 32, "bf16"),
    "sk-torch-int8": ("torch", 32, "int8"),  # torch dynamic int8 (torch.ao quantize_dynamic), for comparison
    "sk-onnx-fp32": ("onnx", 32, "fp32"),
    "sk-onnx-int8": ("onnx", 32, "int8"),
    "sk-onnx-int8-b1": ("onnx", 1, "int8"),
    # smaller length-sorted batches: on a CPU without AVX-512 they keep more of the work in cache
    "sk-torch-b1": ("torch", 1, "fp32"),
    "sk-torch-b8": ("torch", 8, "fp32"),
    "sk-onnx-fp32-b1": ("onnx", 1, "fp32"),
    "sk-onnx-fp32-b8": ("onnx", 8, "fp32"),
    "sk-onnx-int8-b8": ("onnx", 8, "int8"),
    # what a user picks for fast CPU QA with Optimum: ORTModelForQuestionAnswering export, ORTOptimizer level 2,
    # dynamic int8 (AutoQuantizationConfig for this CPU), answered by transformers' pipeline (batch 1 is its default)
    "optimum-int8": ("optimum", 1, "int8"),
    "optimum-int8-b8": ("optimum", 8, "int8"),
}
OPTIMUM_HINT = "pip install --no-deps 'optimum==2.1.0' 'optimum-onnx==0.1.0' (optimum-onnx 0.1 needs transformers<4.58)"
# bf16 is left out by default: where the CPU lacks AVX-512 BF16 (this VM exposes AVX2 only) it is emulated, 4x slower than fp32
DEFAULT_CONFIGS = "hf-b1,hf-b8,hf-b32,sk-torch,sk-onnx-fp32,sk-onnx-int8,sk-onnx-int8-b1,optimum-int8"
PRECISION = {"hf": "fp32", "fp32": "fp32", "bf16": "bf16", "int8": "int8"}


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


# ----------------------------------------------------------------------------------------------
# setup (parent): model, exports, data
# ----------------------------------------------------------------------------------------------


def build_model(work: Path, tokenizer_dir: Path) -> Path:
    """roberta-base-sized QA model, random weights (seed 0), saved with the real tokenizer."""
    folder = work / "roberta-base-random"
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import AutoTokenizer, RobertaConfig, RobertaForQuestionAnswering

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = RobertaConfig(vocab_size=50265, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                           intermediate_size=INTERMEDIATE, max_position_embeddings=514, type_vocab_size=1,
                           pad_token_id=1, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    model = RobertaForQuestionAnswering(config).eval()
    with torch.no_grad():  # spread the logits so that answers are decisive, not near-ties of a flat softmax
        model.qa_outputs.weight.normal_(0.0, 1.0)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, folder)
    return folder


def build_export(work: Path, model_dir: Path) -> Path:
    folder = work / "roberta-base-random-onnx"
    if (folder / "model.int8.onnx").is_file():
        return folder
    sys.path.insert(0, str(REPO / "src"))
    from squadkit.export import export_model

    t = time.perf_counter()
    export_model(model_dir, folder, quantize="int8", overwrite=True)
    print(f"exported fp32 + int8 in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return folder


def build_optimum(work: Path, model_dir: Path) -> tuple[Path, dict]:
    """Optimum's path: export with ORTModelForQuestionAnswering, ORTOptimizer at level 2, then dynamic
    int8 with the AutoQuantizationConfig for this CPU (AVX-512 VNNI, AVX-512, else AVX2; per tensor).
    On onnxruntime 1.32 quantizing the level-2 graph can fail with "Unable to find data type for
    weight_name ..."; the plain export is then quantized instead and the fallback is recorded."""
    folder = work / "roberta-base-random-optimum-int8"
    record_file = folder / "optimum-build.json"
    if record_file.is_file():
        return folder, json.loads(record_file.read_text())
    try:
        from optimum.onnxruntime import ORTModelForQuestionAnswering, ORTOptimizer, ORTQuantizer
        from optimum.onnxruntime.configuration import AutoQuantizationConfig, OptimizationConfig
    except ImportError as exc:
        raise RuntimeError(f"needs Optimum's ONNX Runtime support ({exc}): {OPTIMUM_HINT}") from None
    import importlib.metadata as md
    import shutil

    from transformers import AutoTokenizer

    t = time.perf_counter()
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = ORTModelForQuestionAnswering.from_pretrained(str(model_dir), export=True)
    model.save_pretrained(tmp / "export")
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(tmp / "export")
    flags = cpu_flags()
    if "avx512_vnni" in flags:
        qname, qconfig = "avx512_vnni", AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    elif "avx512f" in flags:
        qname, qconfig = "avx512", AutoQuantizationConfig.avx512(is_static=False, per_channel=False)
    else:
        qname, qconfig = "avx2", AutoQuantizationConfig.avx2(is_static=False, per_channel=False)
    record = {"optimum": md.version("optimum"), "optimum_onnx": _version_or_none("optimum-onnx"),
              "quantization": qname, "optimization_level": 2, "fallback": None}
    try:
        ORTOptimizer.from_pretrained(model).optimize(OptimizationConfig(optimization_level=2), save_dir=tmp / "optimized")
        quantize_from, file_name = tmp / "optimized", "model_optimized.onnx"
        ORTQuantizer.from_pretrained(str(quantize_from), file_name=file_name).quantize(qconfig, save_dir=tmp / "quantized")
    except Exception as exc:  # noqa: BLE001 - any failure of level 2 + quantize is recorded, then the fallback
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "Unable to find data type for weight_name" not in msg:
            raise
        record["optimization_level"] = 0
        record["fallback"] = f"level 2 + quantize failed ({type(exc).__name__}: {msg[:200]}); quantized the unoptimized export"
        print(f"optimum: {record['fallback']}", file=sys.stderr)
        shutil.rmtree(tmp / "quantized", ignore_errors=True)
        ORTQuantizer.from_pretrained(str(tmp / "export"), file_name="model.onnx").quantize(qconfig, save_dir=tmp / "quantized")
    quantized = tmp / "quantized"
    for f in (tmp / "export").iterdir():  # config and tokenizer files beside the quantized model
        if not f.name.endswith(".onnx") and not (quantized / f.name).exists():
            shutil.copy2(f, quantized / f.name)
    record["build_s"] = round(time.perf_counter() - t, 1)
    (quantized / "optimum-build.json").write_text(json.dumps(record, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(quantized, folder)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"optimum: built in {record['build_s']:.0f} s: {record}", file=sys.stderr)
    return folder, record


def _version_or_none(name: str):
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def load_pairs(n: int) -> list[tuple[str, str]]:
    """The first n (question, context) pairs of the dev slice, then the train slice."""
    pairs = []
    for name in ("dev-v2.0.first2articles.json", "train-v2.0.first10articles.json"):
        data = json.loads((SHARED / "squad_v2" / name).read_text(encoding="utf-8"))
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    pairs.append((qa["question"], paragraph["context"]))
    return pairs[:n]


# ----------------------------------------------------------------------------------------------
# one configuration (worker subprocess)
# ----------------------------------------------------------------------------------------------


def window_flops(batch: int, width: int) -> float:
    """Multiply-add FLOPs (2 per MAC) of one encoder pass over a (batch, width) padded input."""
    proj = 4 * 2 * width * HIDDEN * HIDDEN  # q, k, v, output projections
    ffn = 2 * 2 * width * HIDDEN * INTERMEDIATE
    attn = 2 * 2 * width * width * HIDDEN  # scores and weighted sum
    return float(batch * (LAYERS * (proj + ffn + attn) + 2 * 2 * width * HIDDEN))


def _transformers_pipeline_runner(hf_pipeline, model, tokenizer, batch: int, shapes: list):
    """transformers' QA pipeline over ``model`` (torch or Optimum's ORT model), recording batch shapes."""
    pipe = hf_pipeline("question-answering", model=model, tokenizer=tokenizer, device=-1)
    forward = model.forward

    def recording_forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        shapes.append(tuple(ids.shape))
        return forward(*args, **kwargs)

    model.forward = recording_forward

    def run(pairs):
        out = pipe([{"question": q, "context": c} for q, c in pairs], batch_size=batch)
        out = out if isinstance(out, list) else [out]
        return [(o["answer"], o["start"], o["end"]) for o in out]

    return run


def make_runner(kind: str, batch: int, option, model_dir: Path, onnx_dir: Path, threads: int, shapes: list):
    """A function answering a list of pairs (list of (answer, start, end)); records each batch's shape."""
    if kind == "hf":
        import torch
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer
        from transformers import pipeline as hf_pipeline

        torch.set_num_threads(threads)
        model = AutoModelForQuestionAnswering.from_pretrained(str(model_dir)).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        return _transformers_pipeline_runner(hf_pipeline, model, tokenizer, batch, shapes)

    if kind == "optimum":
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForQuestionAnswering
        from transformers import AutoTokenizer
        from transformers import pipeline as hf_pipeline

        folder = onnx_dir.parent / "roberta-base-random-optimum-int8"
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        model = ORTModelForQuestionAnswering.from_pretrained(str(folder), file_name="model_quantized.onnx",
                                                             session_options=options)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        return _transformers_pipeline_runner(hf_pipeline, model, tokenizer, batch, shapes)

    from squadkit.model import load as load_model
    from squadkit.pipeline import QuestionAnswerer

    if kind == "torch":
        import torch

        torch.set_num_threads(threads)
        if option == "int8":
            from torch.ao.quantization import quantize_dynamic
            from transformers import AutoModelForQuestionAnswering, AutoTokenizer

            model = AutoModelForQuestionAnswering.from_pretrained(str(model_dir)).eval()
            model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            qa_model = load_model(model, AutoTokenizer.from_pretrained(str(model_dir)))
        else:
            qa_model = load_model(str(model_dir), backend="torch", device="cpu", dtype=option)
    else:
        qa_model = load_model(str(onnx_dir), backend="onnx", precision=option, threads=threads)
    qa = QuestionAnswerer(qa_model, batch_size=batch)
    runner = qa_model.runner  # the model is a frozen record; its runner's logits are wrapped to count shapes
    logits = runner.logits

    def recording_logits(b):
        shapes.append(tuple(b.input_ids.shape))
        return logits(b)

    runner.logits = recording_logits

    def run(pairs):
        return [(o["answer"], o["start"], o["end"]) for o in qa(question=[q for q, _ in pairs], context=[c for _, c in pairs])]

    return run


def worker(args) -> None:
    kind, batch, option = CONFIGS[args.worker]
    pairs = load_pairs(args.n)
    shapes: list = []
    t0 = time.perf_counter()
    run = make_runner(kind, batch, option, Path(args.model_dir), Path(args.onnx_dir), args.threads, shapes)
    load_s = time.perf_counter() - t0
    run(pairs[: min(4, len(pairs))])  # warm-up: first-call allocations, ORT's first run
    shapes.clear()
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        answers = run(pairs)
        prof.disable()
        wall = time.perf_counter() - t
        stats = pstats.Stats(prof)
        parts = {}
        wanted = {"build_windows": "tokenize (build_windows)", "iter_batches": "batching (pad)",
                  "recording_logits": "model (logits)", "recording_forward": "model (forward)",
                  "allowed_tokens": "decode: mask", "pipeline_window_spans": "decode: spans",
                  "pipeline_answers": "decode: merge", "preprocess": "hf preprocess", "postprocess": "hf postprocess"}
        for (file, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
            if func in wanted and ("squadkit" in file or "benchmarks" in file or "question_answering" in file):
                parts[wanted[func]] = parts.get(wanted[func], 0.0) + ct
        print(json.dumps({"config": args.worker, "profile": parts, "wall": wall, "n": len(pairs)}))
        return
    t = time.perf_counter()
    answers = run(pairs)
    wall = time.perf_counter() - t
    rss_mb = peak_rss_mb()
    flops = sum(window_flops(b, w) for b, w in shapes)
    tokens = sum(b * w for b, w in shapes)
    windows = sum(b for b, _ in shapes)
    print(json.dumps({"config": args.worker, "qps": len(pairs) / wall, "wall": wall, "load_s": load_s, "rss_mb": rss_mb,
                      "gflops": flops / wall / 1e9, "windows": windows, "tokens": tokens, "answers": answers}))


def peak_rss_mb() -> float:
    """This process's RSS high-water mark. VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss
    over exec, so a worker would report its parent's peak when that was higher."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gemm_peak(threads: int, size: int = 2048, reps: int = 5) -> dict:
    """The machine's own large-matmul GFLOP/s: fp32 (the better of torch's linear and ONNX Runtime's
    MatMul), bf16 (torch's linear, the kernel a bf16 model runs), int8 (ORT's u8 x s8 MatMulInteger)."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(size, size, dtype=dtype)
        b = torch.randn(size, size, dtype=dtype)
        F.linear(a, b)
        best = min(_timed(lambda: F.linear(a, b)) for _ in range(reps))
        out[name] = 2 * size**3 / best / 1e9
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"a": np.random.randint(0, 255, (size, size), dtype=np.uint8),
            "b": np.random.randint(-127, 127, (size, size), dtype=np.int8)}
    session.run(None, feed)
    best = min(_timed(lambda: session.run(None, feed)) for _ in range(reps))
    out["int8"] = 2 * size**3 / best / 1e9
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"a": np.random.randn(size, size).astype(np.float32), "b": np.random.randn(size, size).astype(np.float32)}
    session.run(None, feed)
    best = min(_timed(lambda: session.run(None, feed)) for _ in range(reps))
    out["fp32"] = max(out["fp32"], 2 * size**3 / best / 1e9)
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ----------------------------------------------------------------------------------------------
# parent: run every configuration in its own process, interleaved, and print the table
# ----------------------------------------------------------------------------------------------


def run_worker(name: str, args, model_dir: Path, onnx_dir: Path, profile: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--n", str(args.n), "--threads", str(args.threads),
           "--model-dir", str(model_dir), "--onnx-dir", str(onnx_dir)] + (["--profile", name] if profile else [])
    env = dict(os.environ, PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="question/context pairs (default 200)")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma-separated, from: {', '.join(CONFIGS)}")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "squadkit-bench"),
                        help="where the model and its exports are kept (about 1.2 GB)")
    parser.add_argument("--profile", default=None, help="cProfile these configs (comma-separated) instead of timing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--onnx-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.profile = args.profile is not None
        return worker(args)

    names = [c.strip() for c in (args.profile or args.configs).split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {', '.join(CONFIGS)}")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = build_model(work, SHARED / "roberta-base-tokenizer")
    onnx_dir = build_export(work, model_dir)
    optimum_record = None
    if any(CONFIGS[n][0] == "optimum" for n in names):
        try:
            _, optimum_record = build_optimum(work, model_dir)
        except RuntimeError as exc:  # Optimum not installed: the other configurations still run
            print(f"optimum configurations skipped: {exc}", file=sys.stderr)
            names = [n for n in names if CONFIGS[n][0] != "optimum"]

    if args.profile:
        for name in names:
            r = run_worker(name, args, model_dir, onnx_dir, profile=True)
            total = r["wall"]
            print(f"\n{name}: {r['n']} pairs in {total:.2f} s (cProfile on; cumulative times, nested parts overlap)")
            for part, seconds in sorted(r["profile"].items(), key=lambda kv: -kv[1]):
                print(f"  {part:28s} {seconds:8.3f} s  {100 * seconds / total:5.1f} %")
        return

    results: dict[str, dict] = {}
    peak = None
    for rnd in range(args.repeats):
        for name in names:
            r = run_worker(name, args, model_dir, onnx_dir)
            print(f"round {rnd + 1} {name:16s} {r['qps']:6.2f} q/s", file=sys.stderr, flush=True)
            if name not in results or r["qps"] > results[name]["qps"]:
                results[name] = r
        p = gemm_peak(args.threads)
        peak = p if peak is None else {k: max(v, peak[k]) for k, v in p.items()}

    hf = [results[n]["qps"] for n in results if n.startswith("hf-")]
    base = max(hf) if hf else None
    base_name = max((n for n in results if n.startswith("hf-")), key=lambda n: results[n]["qps"]) if hf else None
    print(f"\n{args.n} SQuAD v2 pairs, roberta-base-sized model (random weights), {args.threads} threads, "
          f"best of {args.repeats} interleaved round(s)")
    flags = cpu_flags()
    print("CPU: " + (" ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags) or "no AVX2"))
    if optimum_record:
        print(f"optimum: {optimum_record}")
    print(f"large-matmul peak: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f}, int8 (ORT u8s8) {peak['int8']:.0f} GOP/s")
    opt = max((results[n]["qps"] for n in results if n.startswith("optimum")), default=None)
    opt_name = max((n for n in results if n.startswith("optimum")), key=lambda n: results[n]["qps"], default=None)
    head = f"{'config':16s} {'batch':>5s} {'q/s':>7s} {'vs ' + (base_name or 'hf'):>10s} " \
           f"{'vs ' + (opt_name or 'optimum'):>19s} {'peak RSS':>9s} " \
           f"{'windows':>7s} {'tokens':>7s} {'GFLOP/s':>8s} {'of peak':>8s}"
    print(head)
    print("-" * len(head))
    for name in names:
        r = results[name]
        kind, batch, option = CONFIGS[name]
        precision = PRECISION[option or "hf"]
        ratio = f"{r['qps'] / base:.2f}x" if base else "-"
        ratio_opt = f"{r['qps'] / opt:.2f}x" if opt else "-"
        print(f"{name:16s} {batch:5d} {r['qps']:7.2f} {ratio:>10s} {ratio_opt:>19s} {r['rss_mb']:7.0f}MB {r['windows']:7d} {r['tokens']:7d} "
              f"{r['gflops']:8.1f} {100 * r['gflops'] / peak[precision]:6.1f} % ({precision})")
    ref = results.get("sk-onnx-fp32")
    if ref:
        print("\ntop answer identical to sk-onnx-fp32's:")
        for name in names:
            if name != "sk-onnx-fp32":
                same = sum(a == b for a, b in zip(results[name]["answers"], ref["answers"]))
                print(f"  {name:16s} {same}/{len(ref['answers'])} ({100 * same / len(ref['answers']):.1f} %)")


if __name__ == "__main__":
    main()
