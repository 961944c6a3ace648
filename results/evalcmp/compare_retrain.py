# python results/evalcmp/compare_retrain.py OLD_RESULTS_MAIN results/main (OLD: results/main of commit 13fb8a9)
"""Compare the regenerated results/main with the committed one of 13fb8a9: every number of the old rows and
sweep, and every hypothesis file, mapped from the old labels to the new model names."""
import json, sys
from pathlib import Path
old = json.load(open(sys.argv[1] + "/comparison.json"))
new = json.load(open(sys.argv[2] + "/comparison.json"))
name = {"hard targets": ("hard", "1"), "hard targets + T": ("hard", "fitted"),
        "label smoothing α=0.1": ("ls", "1"), "label smoothing α=0.1 + T": ("ls", "fitted")}
keys = ["temperature", "val_nll", "test_nll", "test_nll_ci", "test_ppl", "accuracy", "ece_forced", "ece_forced_ci",
        "ece_forced_eos", "mce_forced", "ece_inference", "ece_inference_ci", "inference_accuracy", "bleu_beam",
        "bleu_greedy", "chrf", "length_ratio", "bleu_ci", "bleu_p", "chrf_ci", "chrf_p"]
same = diff = 0
diffs = []
for r in old["rows"]:
    m, k = name[r["label"]]
    n = next(x for x in new["rows"] if (x["model"], x["t_kind"], x["seed"]) == (m, k, r["seed"]))
    for key in keys:
        if r[key] == n[key]:
            same += 1
        else:
            diff += 1
            diffs.append((r["label"], r["seed"], key, r[key], n[key]))
sw_same = sum(1 for p in old["sweep"] for q in new["sweep"] if q["seed"] == p["seed"] and
              q["model"] == name[p["label"]][0] and q["temperature"] == p["temperature"] and
              (q["bleu"], q["ece"], q["nll"]) == (p["bleu"], p["ece"], p["nll"]))
hyp_same = hyp_total = 0
for f in Path(sys.argv[1], "hyps").iterdir():
    label, seed, t, beam, _ = f.name.rsplit(".", 4)[0], None, None, None, None
    stem = f.name[:-len(".txt")]
    lab, rest = stem.split(".seed")
    seed = int(rest.split(".")[0])
    lab = {"hard_targets": "hard targets", "hard_targets_t": "hard targets + T", "label_smoothing_0.1": "label smoothing α=0.1",
           "label_smoothing_0.1_t": "label smoothing α=0.1 + T"}[lab]
    m, k = name[lab]
    t = next(x["temperature"] for x in new["rows"] if (x["model"], x["t_kind"], x["seed"]) == (m, k, seed))
    g = Path(sys.argv[2], "hyps", f"{m}.seed{seed}.test_2016_flickr.T{round(t, 4)}.beam4.txt")
    hyp_total += 1
    hyp_same += g.read_bytes() == f.read_bytes()
out = {"row_values_equal": same, "row_values_different": diff, "differences": diffs,
       "sweep_points_equal": sw_same, "sweep_points_old": len(old["sweep"]),
       "hypothesis_files_identical": hyp_same, "hypothesis_files": hyp_total}
print(json.dumps(out, indent=1))
