"""Old (47dad66) against new evaluation of the same checkpoints: every number of comparison.json and the sweep,
compared exactly; inference ECE is reported apart (its labels changed on purpose)."""
import csv, json, sys
from pathlib import Path
old, new = (json.loads(Path(p, "comparison.json").read_text()) for p in sys.argv[1:3])
keys = ["temperature", "val_nll", "test_nll", "test_ppl", "accuracy", "ece_forced", "ece_forced_eos", "mce_forced",
        "bleu_beam", "bleu_greedy", "chrf", "length_ratio"]
rows_old = {r["label"]: r for r in old["rows"]}
report = {"rows": len(new["rows"]), "compared": [], "differ": [], "inference_ece": {}}
for r in new["rows"]:
    o = rows_old[r["label"]]
    for k in keys:
        report["compared"].append(k)
        if o[k] != r[k]:
            report["differ"].append({"row": r["label"], "key": k, "old": o[k], "new": r[k]})
    report["inference_ece"][r["label"]] = {"old (edit labels, diagonal ties)": o["ece_inference"], "new (TER labels)": r["ece_inference"]}
def sweep(p):
    with open(Path(p, "temperature_sweep.csv")) as f:
        return {(r["label"], r["temperature"]): (r["bleu"], r["ece"], r["nll"]) for r in csv.DictReader(f)}
so, sn = sweep(sys.argv[1]), sweep(sys.argv[2])
report["sweep_points"] = len(sn)
report["sweep_differ"] = [k for k in sn if sn[k] != so.get(k)]
# the same hypotheses, file by file (names: label slug, seed, T, beam)
ho = {p.name: p.read_text() for p in Path(sys.argv[1], "hyps").iterdir()}
hn = {p.name: p.read_text() for p in Path(sys.argv[2], "hyps").iterdir()}
report["hypothesis_files"] = len(hn)
report["hypothesis_files_differ"] = [n for n in hn if ho.get(n) != hn[n]]
report["compared"] = sorted(set(report["compared"]))
print(json.dumps(report, indent=2))
