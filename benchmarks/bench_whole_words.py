"""Dev-slice EM/F1 of one model with whole-word answers off (run_squad's texts) and on.

python benchmarks/bench_whole_words.py MODEL_FOLDER [DEV_FILE]
"""
import dataclasses
import json
import sys

from squadkit.model import load as load_model
from squadkit.data import load_squad
from squadkit.metrics import evaluate
from squadkit.predict import decode_settings_for, predict_squad

model = load_model(sys.argv[1], device="cpu")
data = load_squad(sys.argv[2] if len(sys.argv) > 2 else "../shared/data/squad_v2/dev-v2.0.first2articles.json")
settings, _ = decode_settings_for(model, data)
out = {}
for whole in (False, True):
    p = predict_squad(model, data.examples, dataclasses.replace(settings, whole_words=whole, null_score_diff_threshold=1e9), batch_size=32)
    out[whole] = p
    for t in (0.0, -2.0, 1e9):
        preds = {q: ("" if p.null_odds[q] > t else a) for q, a in p.predictions.items()}
        r = evaluate(data, preds, na_probs=p.null_odds, report_missing=None)
        print(f"whole_words={whole} threshold={t:g}: " + ", ".join(f"{k} {r[k]:.2f}" for k in ("exact", "f1", "HasAns_exact", "HasAns_f1", "best_f1")),
              f"non-empty {sum(bool(v) for v in preds.values())}", flush=True)
a, b = out[False].predictions, out[True].predictions
changed = [(q, a[q], b[q]) for q in a if a[q] != b[q]]
print(f"answers changed (always answering): {len(changed)} of {sum(bool(v) for v in a.values())}; null odds equal: {out[False].null_odds == out[True].null_odds}")
for c in changed[:15]:
    print("  ", json.dumps(c))
