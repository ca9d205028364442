"""Squad-mode span decoding, before and after it went batch-wide (issue 26), on this CPU.

Rows: (1) span decoding per window: the batch reducer (n-best starts and ends, the valid (start, end)
pairs scored and ordered) plus the per-question merge, with a constant text_of_span so that text
recovery is not counted; (2) text recovery per n-best entry; (3) ``predict_squad`` end to end with a
tiny random RoBERTa over the dev slice repeated to ~12k questions. "old" is the per-window decoder kept
in tests/reference_decode.py (with the former text recovery and no tokenizing ahead), swapped in.
Every figure is printed with this CPU's vector flags. Predictions of old and new are checked equal.

    PYTHONPATH=src:tests SQUADKIT_SHARED_DATA=../shared/data OMP_NUM_THREADS=1 \\
        python benchmarks/bench_decode.py --repeat 20
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import numpy as np  # noqa: E402


def cpu_flags() -> str:
    try:
        flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration):
        return "flags unknown"
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]
    return " ".join(f for f in wanted if f in flags) or "no avx2"


@contextmanager
def old_decoder():
    """The per-window decoder, the former token masks, text recovery and sequential tokenizing, swapped in."""
    import reference_decode as ref

    import squadkit.window_scoring as engine
    import squadkit.nbest as nbest
    import squadkit.predict as predict

    def per_window(start, end, rows, widths, n_best_size, max_answer_length, attention_mask=None):
        from squadkit.calibration import log_normalizers

        allowed = ref.reference_allowed_tokens(rows, start.shape[1]) & attention_mask.astype(bool)
        return ref.reference_window_nbest(start, end, widths, n_best_size, log_normalizers(start, end, allowed))

    def sequential(tokenizer, questions, contexts, settings, chunk_size):
        for lo in range(0, len(questions), chunk_size):
            hi = min(lo + chunk_size, len(questions))
            yield lo, hi, engine.build_windows(tokenizer, questions[lo:hi], contexts[lo:hi], settings,
                                               first_example_index=lo)

    saved = (nbest.squad_batch_nbest, predict.squad_prediction, predict.squad_text_recoverer, engine._windows_ahead)
    nbest.squad_batch_nbest, predict.squad_prediction = per_window, ref.reference_squad_prediction
    predict.squad_text_recoverer = lambda tokenizer, context, lower, whole_words=False: ref.reference_text_recoverer(
        tokenizer, context, lower)  # the former recovery had no whole-word widening
    engine._windows_ahead = sequential
    try:
        yield
    finally:
        nbest.squad_batch_nbest, predict.squad_prediction, predict.squad_text_recoverer, engine._windows_ahead = saved


def best_of(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def captured_batches(model, examples, settings, batch_size):
    """Every batch's logits and windows from one pass of the model (so decoding is timed alone)."""
    from squadkit.window_scoring import pad_id_of
    from squadkit.features import build_windows, iter_batches

    windows = build_windows(model.tokenizer, [e.question for e in examples], [e.context for e in examples],
                            settings.window_settings())
    out = []
    for batch in iter_batches(windows, batch_size, pad_id_of(model.tokenizer)):
        start, end = model.logits(batch)
        out.append((start, end, batch, [windows[i] for i in batch.window_indices]))
    return windows, out


def decode_rows(model, examples, settings, batch_size, rounds):
    import reference_decode as ref

    from squadkit.decode import ranked_candidates, squad_prediction
    from squadkit.text_recovery import squad_text_recoverer
    from squadkit.nbest import squad_batch_nbest

    windows, batches = captured_batches(model, examples, settings, batch_size)
    constant = lambda w, s, e: ("x%d-%d" % (s, e), 0, 0)  # noqa: E731
    by_q: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_q.setdefault(w.example_index, []).append(i)
    n, max_len = settings.n_best_size, settings.max_answer_length

    def reduce(new: bool):
        reduced = [None] * len(windows)
        for start, end, batch, rows in batches:
            widths = [w.length for w in rows]
            got = (squad_batch_nbest(start, end, rows, widths, n, max_len) if new
                   else ref.reference_window_nbest(start, end, widths, n))
            for i, r in zip(batch.window_indices, got):
                reduced[i] = r
        return reduced

    def spans(new: bool):
        """n-best starts and ends, valid pairs scored, each question's best n_best + 1 candidates in order
        (what its n-best list reads when no two texts collide; no texts here)."""
        reduced = reduce(new)
        for idx in by_q.values():
            if new:
                ranked = ranked_candidates([reduced[i] for i in idx], True)[0]
                list(itertools.islice(ranked, n + 1))
            else:
                win, st, en, sl, el, *_ = ref.reference_candidates([windows[i] for i in idx], [reduced[i] for i in idx],
                                                                   max_len, True)
                top = np.argsort(-(sl + el), kind="stable")[: n + 1]
                list(zip(*(c[top].tolist() for c in (win, st, en, sl, el))))
        return reduced

    def nbest_lists(new: bool, reduced):
        decode = squad_prediction if new else ref.reference_squad_prediction
        return [decode([windows[i] for i in idx], [reduced[i] for i in idx], constant).nbest for idx in by_q.values()]

    def texts(new: bool):
        make = squad_text_recoverer if new else ref.reference_text_recoverer
        for q, idx in by_q.items():
            text_of_span = make(model.tokenizer, examples[q].context, settings.do_lower_case)
            for i in idx:
                w = windows[i]
                ctx = np.flatnonzero(w.context_mask)
                for s in ctx[:: max(1, len(ctx) // 5)]:
                    text_of_span(w, int(s), int(min(s + 3, ctx[-1])))

    red_new, red_old = reduce(True), reduce(False)
    assert [[e.text for e in x] for x in nbest_lists(True, red_new)] == [[e.text for e in x] for x in nbest_lists(False, red_old)]
    n_spans = sum(len(np.flatnonzero(windows[i].context_mask)[:: max(1, int(windows[i].context_mask.sum()) // 5)])
                  for i in range(len(windows)))
    rows = []
    for name, fn, unit in (("span decoding (n-best starts/ends, valid pairs scored and ranked), per window (us)", spans, len(windows)),
                           ("question n-best list from those (texts constant), per question (us)",
                            lambda new: nbest_lists(new, red_new if new else red_old), len(by_q)),
                           ("text recovery, per span (us)", texts, n_spans)):
        old, new = [], []
        for _ in range(rounds):  # interleaved, best of each: this machine is shared
            old.append(best_of(lambda: fn(False), 1))
            new.append(best_of(lambda: fn(True), 1))
        rows.append((name, min(old) / unit * 1e6, min(new) / unit * 1e6))
    return rows, len(windows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="dev slice copies for the end-to-end row (20: 12,520 questions)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="best of this many timings per decoding figure")
    parser.add_argument("--e2e-rounds", type=int, default=2, help="best of this many end-to-end timings")
    args = parser.parse_args()
    shared = Path(os.environ.get("SQUADKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
    from tiny_models import make_tiny_roberta

    from squadkit.model import load as load_model
    from squadkit.data import load_squad
    from squadkit.predict import predict_squad
    from squadkit.settings import AnswerSettings

    tmp = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    model = load_model(str(make_tiny_roberta(tmp / "tiny", shared / "roberta-base-tokenizer")), device="cpu")
    examples = load_squad(shared / "squad_v2" / "dev-v2.0.first2articles.json").examples
    settings = AnswerSettings(whole_words=False)  # like for like: the former decoder did not widen to words
    rows, n_windows = decode_rows(model, examples, settings, args.batch_size, args.rounds)

    many = examples * args.repeat
    new_preds = predict_squad(model, many[:600], settings, batch_size=args.batch_size)
    with old_decoder():
        old_preds = predict_squad(model, many[:600], settings, batch_size=args.batch_size)
    assert new_preds.predictions == old_preds.predictions and new_preds.null_odds == old_preds.null_odds
    assert new_preds.nbest_json() == old_preds.nbest_json()
    t_new, t_old = [], []
    for _ in range(args.e2e_rounds):  # interleaved: this machine may be shared
        t_new.append(best_of(lambda: predict_squad(model, many, settings, batch_size=args.batch_size), 1))
        with old_decoder():
            t_old.append(best_of(lambda: predict_squad(model, many, settings, batch_size=args.batch_size), 1))
    t_new, t_old = min(t_new), min(t_old)
    rows.append((f"predict, tiny model, {len(many):,} questions (questions/s)", len(many) / t_old, len(many) / t_new))

    flags = cpu_flags()
    print(f"\nCPU: {os.cpu_count()} cores, flags: {flags}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"{n_windows} dev windows (384/128), n_best 20, best of {args.rounds}")
    print("| measure | old | new | speed-up | CPU flags |\n|---|---|---|---|---|")
    for name, old, new in rows:
        gain = new / old if "questions/s" in name else old / new
        print(f"| {name} | {old:,.1f} | {new:,.1f} | {gain:.2f}x | {flags} |")


if __name__ == "__main__":
    main()
