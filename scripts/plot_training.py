"""Validation NLL against wall-clock minutes, from runs' log.jsonl files.

    python scripts/plot_training.py --out docs/training_curves.png \
        "A: lr 2e-3, inverse sqrt, 4 epochs=results/recipe/A/log.jsonl" \
        "C: lr 2e-3, linear decay, 6 epochs=results/recipe/C/log.jsonl" \
        --point "8 epochs, inverse sqrt (earlier recipe, its final model)=28.5:1.798"

Each RUN is LABEL=PATH to a log.jsonl: its per-epoch "valid" events (elapsed_s, nll) make a line, and its
"average" event, when there is one, a marker at the run's last validation time. --point LABEL=MINUTES:NLL
adds a single measured point (for a run whose log is not at hand).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def curve(path: Path):
    """([minutes], [validation NLL]) of the epochs, and the averaged model's NLL (or None)."""
    if not path.is_file():
        raise SystemExit(f"error: {path}: not found (expected a run's log.jsonl)")
    minutes, nll, avg = [], [], None
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            e = json.loads(line)
        except ValueError:
            raise SystemExit(f"error: {path}:{i}: not a JSON line") from None
        if e.get("event") == "valid":
            minutes.append(e["elapsed_s"] / 60)
            nll.append(e["nll"])
        elif e.get("event") == "average":
            avg = e["nll"]
    return minutes, nll, avg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="LABEL=LOG", help="a run's label and its log.jsonl")
    p.add_argument("--point", action="append", default=[], metavar="LABEL=MINUTES:NLL")
    p.add_argument("--out", required=True, help="the PNG to write")
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, spec in enumerate(args.runs):
        label, _, path = spec.rpartition("=")
        if not label:
            print(f"error: {spec!r}: expected LABEL=PATH", file=sys.stderr)
            return 2
        minutes, nll, avg = curve(Path(path))
        ax.plot(minutes, nll, "o-", ms=3, color=f"C{i}", label=label)
        if avg is not None and minutes:
            ax.plot([minutes[-1]], [avg], "*", ms=10, color=f"C{i}")
    for spec in args.point:
        label, _, value = spec.rpartition("=")
        try:
            m, v = (float(x) for x in value.split(":"))
        except ValueError:
            print(f"error: --point {spec!r}: expected LABEL=MINUTES:NLL", file=sys.stderr)
            return 2
        ax.plot([m], [v], "kX", ms=9, label=label)
    ax.set_xlabel("wall-clock minutes (2 CPU cores)")
    ax.set_ylabel("validation NLL (nats / token)")
    ax.set_ylim(top=min(ax.get_ylim()[1], 3.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Validation NLL by epoch (stars: the averaged final model)", fontsize=9)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
