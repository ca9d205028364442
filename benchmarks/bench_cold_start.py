"""Cold start: how long a fresh ``squadkit`` process takes for one small job, as a user runs it.

Each command runs in a new process (imports, model loading and the work: what a user waits for),
``--repeat`` times; the table gives the best and the median wall time.

    python benchmarks/bench_cold_start.py --model MODEL_FOLDER [--onnx EXPORT_FOLDER] [--index INDEX]

Without ``--onnx`` the model is exported (int8) to a temporary folder first; without ``--index``
a small index of the shared SQuAD dev slice is built.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEV = REPO.parent / "shared" / "data" / "squad_v2" / "dev-v2.0.first2articles.json"
QUESTION, CONTEXT = "In what country is Normandy located?", "The Normans gave their name to Normandy, a region in France."


def squadkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "squadkit.cli", *args]


def timed(cmd: list[str], repeat: int, expect_code: int = 0) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        code = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        if code != expect_code:
            raise SystemExit(f"{' '.join(cmd)} exited with {code}, expected {expect_code}")
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    name = re.search(r"model name\s*:\s*(.*)", text)
    flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split())
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile") if f in flags]
    return f"{name.group(1) if name else 'CPU'}; flags: {', '.join(wanted) or 'no AVX2'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a torch model folder (a squadkit train output)")
    ap.add_argument("--onnx", help="its int8 export (default: exported here)")
    ap.add_argument("--index", help="an index for search (default: the dev slice, indexed here)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    onnx = args.onnx or str(work / "onnx")
    if not args.onnx:
        subprocess.run(squadkit("export", "-m", args.model, "-o", onnx, "--quantize", "int8"), check=True,
                       stdout=subprocess.DEVNULL)
    index = args.index or str(work / "dev.sqlite")
    if not args.index:
        subprocess.run(squadkit("index", str(DEV), "-o", index), check=True, stdout=subprocess.DEVNULL)
    rows = [
        ("squadkit --help", squadkit("--help")),
        ("answer, torch fp32", squadkit("answer", "-m", args.model, "-q", QUESTION, "-c", CONTEXT)),
        ("answer, ONNX int8", squadkit("answer", "-m", onnx, "-q", QUESTION, "-c", CONTEXT)),
        ("search (bm25, k=5)", squadkit("search", index, QUESTION, "-k", "5")),
        ("refused input (empty question)", squadkit("answer", "-m", args.model, "-q", " ", "-c", CONTEXT)),
    ]
    print(f"# cold start, {args.repeat} runs each, one new process per run; {cpu_flags()}")
    print("| command | best s | median s |")
    print("|---|---|---|")
    for name, cmd in rows:
        best, median = timed(cmd, args.repeat, expect_code=2 if name.startswith("refused") else 0)
        print(f"| `{name}` | {best:.2f} | {median:.2f} |")


if __name__ == "__main__":
    main()
