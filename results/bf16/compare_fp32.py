# python results/bf16/compare_fp32.py   (from the project root)
"""bf16 seed 1 (results/bf16) against the main study's float32 seeds 1-3 (results/main): per model at T = 1,
the bf16 value, the float32 seeds' range and mean, and whether bf16 lies within that range; minutes of each run."""
import json
from pathlib import Path

bf, fp = (json.loads(Path(f"results/{d}/comparison.json").read_text()) for d in ("bf16", "main"))
keys = ["val_nll", "test_nll", "bleu_beam", "chrf", "ece_forced", "ece_inference", "accuracy"]
out = {}
for model in ("hard", "ls"):
    b = next(r for r in bf["rows"] if (r["model"], r["t_kind"]) == (model, "1"))
    seeds = [r for r in fp["rows"] if (r["model"], r["t_kind"]) == (model, "1")]
    out[model] = {}
    for k in keys:
        vals = [r[k] for r in seeds]
        out[model][k] = {"bf16": b[k], "fp32_seeds": vals, "fp32_seed1": next(r[k] for r in seeds if r["seed"] == 1),
                         "within_fp32_range": min(vals) <= b[k] <= max(vals)}
    for tag, res in (("bf16", "bf16"), ("fp32", "main")):
        name = "hard" if model == "hard" else "uniform0.1"
        runs = Path(f"results/{res}/runs/en-de/cpu")
        d = next(runs.glob(f"{name}{'+ampbf16' if tag == 'bf16' else ''}_seed1"))
        done = [json.loads(x) for x in (d / "log.jsonl").read_text().splitlines() if '"done"' in x][-1]
        rates = sorted(e["tok_s"] for e in map(json.loads, (d / "log.jsonl").read_text().splitlines()) if e.get("event") == "train")
        out[model][f"minutes_{tag}_seed1"] = done["minutes"]
        out[model][f"median_train_tok_s_{tag}_seed1"] = rates[len(rates) // 2]
print(json.dumps(out, indent=1))
Path("results/bf16/compare_fp32.json").write_text(json.dumps(out, indent=1) + "\n")
