# python results/alpha/lowest_ece.py results/alpha --json results/alpha/lowest_ece.json
"""Which α gives the lowest forced ECE: a finding read off the study's rows, not a choice (nothing is chosen
on test). For each temperature kind (T = 1, fitted T) and each model of the α-curve's trend claim, the mean
forced ECE over seeds with its 95% t-interval; the model with the lowest mean; and its paired difference
(same seed) from every other α with a 95% t-interval. These intervals are after the fact and not
Holm-adjusted: the study's written claims are in comparison.md."""
import argparse
import json
import statistics
import sys

from nmt import cli
from nmt.errors import DataError
from nmt.files import write_text_atomic
from nmt.results import load_comparison
from nmt.stats import TREND_TEST, paired_t

METRIC = "ece_forced"


def interval(values: list) -> dict:
    """Mean and 95% t-interval over seeds of `values` (nmt.stats.paired_t; no interval for one value)."""
    if len(values) < 2:
        return {"mean": values[0], "ci": None, "n": 1}
    m, ci, _ = paired_t(values)
    return {"mean": m, "ci": ci, "n": len(values)}


def curve_models(data, where: str) -> tuple:
    """(models, alphas) of the study's trend claim on forced ECE."""
    trend = [c for c in data.claims if c.test == TREND_TEST and c.metric == METRIC]
    if not trend:
        raise DataError(f"{where}: no trend claim on {METRIC} (a claim with `trend = [...]`)")
    return [ref["model"] for ref in trend[0].a], list(trend[0].x)


def lowest(data, t_kind: str, where: str) -> dict:
    models, alphas = curve_models(data, where)
    per_seed = {m: {r.seed: getattr(r, METRIC) for r in data.rows
                    if r.model == m and r.t_kind == t_kind and getattr(r, METRIC) is not None} for m in models}
    empty = [m for m in models if not per_seed[m]]
    if empty:
        raise DataError(f"{where}: no {METRIC} row at T = {t_kind} for {', '.join(empty)} (a partial evaluation?)")
    best = min(models, key=lambda m: statistics.fmean(per_seed[m].values()))
    out = {"t_kind": t_kind, "by_alpha": [], "lowest": {"model": best, "alpha": alphas[models.index(best)]}}
    for m, a in zip(models, alphas):
        seeds = sorted(set(per_seed[m]) & set(per_seed[best]))
        diff = interval([per_seed[best][s] - per_seed[m][s] for s in seeds]) if m != best else None
        out["by_alpha"].append({"model": m, "alpha": a, **interval(list(per_seed[m].values())),
                                "lowest_minus_this": diff})
    return out


def line(e: dict) -> str:
    ci = "" if e["ci"] is None else f" [{e['ci'][0]:.4f}, {e['ci'][1]:.4f}]"
    return f"{e['mean']:.4f}{ci} (n = {e['n']})"


def report(args) -> int:
    data = load_comparison(args.results)
    found = [lowest(data, kind, f"{args.results}/comparison.json") for kind in ("1", "fitted")]
    for f in found:
        print(f"T = {f['t_kind']}: lowest {METRIC} at α = {f['lowest']['alpha']:g}")
        for e in f["by_alpha"]:
            d = e["lowest_minus_this"]
            print(f"  α = {e['alpha']:<5g} {line(e)}" + ("" if d is None else f"; lowest − this {line(d)}"))
    if args.json:
        write_text_atomic(args.json, json.dumps({"metric": METRIC, "results": args.results, "by_t": found},
                                                indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a study's results directory (its comparison.json)")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args(argv)
    return cli.run(lambda: report(args))


if __name__ == "__main__":
    sys.exit(main())
