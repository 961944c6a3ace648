# python results/bench/compare_prepack.py results/main AFTER [--json results/bench/prepack_study.json]
"""The main study's evaluation before prepacked search (results/main, commit cf3ae9e) against the same runs
evaluated with it (AFTER): every field of every row, every sweep point, every hypothesis file, and the wall
time of each evaluation (provenance)."""
import json
import sys
from pathlib import Path

before, after = Path(sys.argv[1]), Path(sys.argv[2])
old, new = (json.loads((d / "comparison.json").read_text()) for d in (before, after))
key = lambda r: (r["model"], r["seed"], r["t_kind"], r["test_set"])  # noqa: E731
new_rows = {key(r): r for r in new["rows"]}
fields = same = 0
differ = []
for r in old["rows"]:
    n = new_rows[key(r)]
    for k, v in r.items():
        if k in ("checkpoint",):
            continue
        fields += 1
        if v == n.get(k):
            same += 1
        else:
            differ.append({"row": list(key(r)), "field": k, "before": v, "after": n.get(k)})
skey = lambda p: (p["model"], p["seed"], p["temperature"])  # noqa: E731
new_sweep = {skey(p): p for p in new["sweep"]}
sweep_same = sum(1 for p in old["sweep"] if {k: v for k, v in p.items()} == new_sweep.get(skey(p)))
hyps = sorted(p.name for p in (before / "hyps").iterdir())
hyp_same = sum((before / "hyps" / h).read_bytes() == (after / "hyps" / h).read_bytes() for h in hyps)
lines = sum(len((before / "hyps" / h).read_text().splitlines()) for h in hyps)
lines_same = sum(a == b for h in hyps for a, b in zip((before / "hyps" / h).read_text().splitlines(),
                                                       (after / "hyps" / h).read_text().splitlines()))
out = {"row_fields": fields, "row_fields_identical": same, "differences": differ[:50],
       "sweep_points": len(old["sweep"]), "sweep_points_identical": sweep_same,
       "hypothesis_files": len(hyps), "hypothesis_files_identical": hyp_same,
       "hypothesis_lines": lines, "hypothesis_lines_identical": lines_same,
       "wall_seconds_before": old["meta"]["provenance"]["wall_seconds"],
       "wall_seconds_after": new["meta"]["provenance"]["wall_seconds"],
       "commit_before": old["meta"]["provenance"]["git_commit"], "commit_after": new["meta"]["provenance"]["git_commit"],
       "dirty_after": new["meta"]["provenance"]["git_dirty"]}
print(json.dumps({k: v for k, v in out.items() if k != "differences"}, indent=1))
for d in differ[:10]:
    print(d)
if "--json" in sys.argv:
    Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps(out, indent=1) + "\n")
