"""Choose a setting on validation, among finished runs that differ in it: a table and the choice, as JSON.

    python scripts/choose_on_val.py --by nll RUN_DIR... [--names A B ...] [--json OUT]
    python scripts/choose_on_val.py --by bleu RUN_DIR... [--beam 4] [--work DIR] [--json OUT]

For each run: its minutes (log.jsonl's "done"), its final model's validation NLL at T = 1 and at the
temperature fitted on validation (temperature.json), and with --by bleu its validation BLEU (beam 4, T = 1,
`python -m nmt.decode --split val`, hypotheses under --work, never in the run). The choice:
  --by nll   the lowest validation NLL at the fitted temperature (comparable across smoothing: NLL at T = 1
             penalises a smoothed model for its flatter distribution);
  --by bleu  the highest validation BLEU among the runs whose fitted-T NLL is within --nll-margin of the best.
Test splits are never read. Used for the student preset, the confidence penalty's beta and the temperature
of the beta = 1 students (docs/results.md says which choice each made).

    python scripts/choose_on_val.py --by bleu NEW_RUN... --with-rows EARLIER.json [--json OUT]

--with-rows adds the rows of an earlier choice (its --json file) as they were measured, for values whose
checkpoints are not on this machine; each kept row says so ("from": the file). The file is validated as it is
read (its size, every field's type and range, names unique across old and new rows).
"""
import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path


def read_json(path: Path, line_no: int = 0, text: str = None):
    """One JSON value (a file, or line `line_no` of it); a ValueError naming the file (and line) when malformed."""
    try:
        return json.loads(path.read_text() if text is None else text)
    except json.JSONDecodeError as e:
        where = f"{path}:{line_no}" if line_no else str(path)
        raise ValueError(f"{where}: not valid JSON ({e.msg})") from None


def run_summary(run: Path) -> dict:
    """Minutes and validation NLLs of a finished run; a ValueError naming the file when it is not finished."""
    log = run / "log.jsonl"
    lines = log.read_text().splitlines() if log.is_file() else []
    done = [read_json(log, i, x) for i, x in enumerate(lines, 1) if '"event": "done"' in x]
    if not done:
        raise ValueError(f"{log}: no \"done\" event (the run has not finished)")
    temps = read_json(run / "temperature.json")
    try:
        final = temps[done[-1]["final"]]
        return {"run": str(run), "minutes": float(done[-1]["minutes"]), "val_nll_t1": float(final["nll_t1"]),
                "val_nll_fitted": float(final["nll"]), "temperature": float(final["temperature"])}
    except (KeyError, TypeError) as e:
        raise ValueError(f"{run}: log.jsonl's \"done\" event or temperature.json lacks {e} "
                         f"(expected done.final, done.minutes, and nll, nll_t1, temperature for the final "
                         f"model)") from None


def val_bleu(run: Path, beam: int, work: Path) -> float:
    out = work / f"{run.name}.val.beam{beam}.txt"
    cmd = [sys.executable, "-m", "nmt.decode", "--checkpoint", str(run), "--split", "val", "--beam", str(beam),
           "--output", str(out), "--metrics", str(out) + ".json"]
    if subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode != 0:
        raise ValueError(f"{run}: `{' '.join(cmd[1:])}` failed (its error is above)")
    return float(read_json(Path(str(out) + ".json"))["bleu"])


ROW_FLOATS = ("minutes", "val_nll_t1", "val_nll_fitted", "temperature")
MAX_ROWS_BYTES = 1 << 20


def earlier_rows(path: Path, by: str) -> list:
    """The rows of an earlier choice file, each checked (a ValueError naming the file, the row and the field)."""
    if path.stat().st_size > MAX_ROWS_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes; expected a choice file of at most {MAX_ROWS_BYTES}")
    data = read_json(path)
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected an object with a non-empty list \"rows\" (a --json file of this script)")
    fields = ROW_FLOATS + (("val_bleu",) if by == "bleu" else ())
    out = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not row["name"]:
            raise ValueError(f"{path}: row {i}: expected an object with a non-empty string \"name\"")
        kept = {"name": row["name"], "run": str(row.get("run", "")), "from": str(path)}
        for f in fields:
            v = row.get(f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (
                    f == "val_bleu" and v > 100):
                raise ValueError(f"{path}: row {i} ({row['name']}): {f} = {v!r}; expected a finite number >= 0"
                                 + (" and <= 100" if f == "val_bleu" else ""))
            kept[f] = float(v)
        out.append(kept)
    return out


def choose(rows: list, by: str, nll_margin: float) -> int:
    """The index of the chosen row (see the module's docstring)."""
    best_nll = min(r["val_nll_fitted"] for r in rows)
    if by == "nll":
        return min(range(len(rows)), key=lambda i: rows[i]["val_nll_fitted"])
    near = [i for i, r in enumerate(rows) if r["val_nll_fitted"] <= best_nll + nll_margin]
    return max(near, key=lambda i: rows[i]["val_bleu"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--by", choices=("nll", "bleu"), required=True)
    p.add_argument("--names", nargs="+", help="what each run stands for (default: its directory name)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--nll-margin", type=float, default=0.02)
    p.add_argument("--work", type=Path, help="--by bleu: where validation hypotheses go (default: a temporary one)")
    p.add_argument("--json", type=Path)
    p.add_argument("--with-rows", type=Path, help="an earlier choice's --json file: its rows join the table as "
                   "measured then")
    args = p.parse_args(argv)
    names = args.names or [r.name for r in args.runs]
    if len(names) != len(args.runs):
        p.error(f"--names: {len(names)} names for {len(args.runs)} runs")
    try:  # everything checked before the first decoding
        earlier = earlier_rows(args.with_rows, args.by) if args.with_rows else []
        seen = names + [r["name"] for r in earlier]
        if len(set(seen)) != len(seen):
            raise ValueError(f"names {seen}: expected each once (--names and the rows of --with-rows)")
        rows = [{"name": n, **run_summary(r)} for n, r in zip(names, args.runs)]
        if args.by == "bleu":
            with tempfile.TemporaryDirectory(dir=args.work) as tmp:
                for row, run in zip(rows, args.runs):
                    row["val_bleu"] = val_bleu(run, args.beam, Path(tmp))
        rows += earlier
    except (ValueError, OSError) as e:
        print(f"choose_on_val: {e}", file=sys.stderr)
        return 2
    pick = choose(rows, args.by, args.nll_margin)
    cols = ["name", "minutes", "val_nll_t1", "val_nll_fitted", "temperature"]
    cols += ["val_bleu"] if args.by == "bleu" else []
    print(" | ".join(cols))
    for i, r in enumerate(rows):
        cells = " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) else str(r[c]) for c in cols)
        print(cells + (" <- chosen" if i == pick else "") + (f"  (from {r['from']})" if "from" in r else ""))
    if args.json:
        rule = ("lowest validation NLL at the fitted temperature" if args.by == "nll" else
                f"highest validation BLEU (beam {args.beam}) among NLL at fitted T within {args.nll_margin} "
                f"of the best")
        command = "python scripts/choose_on_val.py " + " ".join(argv or sys.argv[1:])
        args.json.write_text(json.dumps({"rule": rule, "chosen": rows[pick]["name"], "rows": rows,
                                         "command": command}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
