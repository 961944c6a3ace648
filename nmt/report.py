"""Tables and figures of the study: Markdown + JSON comparison tables (mean +- std over seeds), the
temperature sweep (Mueller et al. 2019, Fig. 4) and reliability diagrams (their Fig. 3; drawn in the
style of github.com/hollance/reliability-diagrams: accuracy per bin against the diagonal, the gap
shaded, the confidence histogram beneath).
"""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

# (key in a row, column title, format)
COLUMNS = [("alpha", "alpha", "{:g}"), ("temperature", "T", "{:.3f}"), ("val_nll", "val NLL", "{:.3f}"),
           ("test_nll", "test NLL", "{:.3f}"), ("test_ppl", "test ppl", "{:.2f}"),
           ("accuracy", "token acc", "{:.4f}"), ("ece_forced", "ECE (forced)", "{:.4f}"),
           ("ece_inference", "ECE (inference)", "{:.4f}"), ("bleu_beam", "BLEU beam", "{:.2f}"),
           ("bleu_greedy", "BLEU greedy", "{:.2f}"), ("chrf", "chrF", "{:.2f}")]


def aggregate(rows: list) -> list:
    """Group rows by (model, temperature kind), in order of first appearance, and reduce every numeric
    column to mean, std (over seeds; None for one) and n."""
    groups = {}
    for r in rows:
        groups.setdefault((r["group"], r["t_kind"]), []).append(r)
    out = []
    for (group, kind), rs in sorted(groups.items(), key=lambda kv: list(groups).index((kv[0][0], "1")) * 2
                                    + (kv[0][1] != "1")):
        agg = {"alpha": rs[0]["alpha"], "t_kind": kind, "n": len(rs), "label": rs[0]["label"],
               "seeds": [r["seed"] for r in rs]}
        for key, _, _ in COLUMNS[1:]:
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                agg[key] = statistics.fmean(vals)
                agg[key + "_std"] = statistics.stdev(vals) if len(vals) > 1 else None
        out.append(agg)
    return out


def _cell(row, key, fmt):
    if row.get(key) is None:
        return "-"
    text = fmt.format(row[key])
    std = row.get(key + "_std")
    return text + (" ± " + fmt.format(std) if std is not None else "")


def markdown_table(agg: list) -> str:
    seeds = any(r["n"] > 1 for r in agg)
    head = ["model"] + [title for _, title, _ in COLUMNS] + (["n"] if seeds else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in agg:
        cells = [r["label"]] + [_cell(r, k, f) for k, _, f in COLUMNS] + ([str(r["n"])] if seeds else [])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def text_table(agg: list) -> str:
    """The same table for a terminal: aligned columns."""
    seeds = any(r["n"] > 1 for r in agg)
    head = ["model"] + [title for _, title, _ in COLUMNS] + (["n"] if seeds else [])
    body = [[r["label"]] + [_cell(r, k, f) for k, _, f in COLUMNS] + ([str(r["n"])] if seeds else []) for r in agg]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def write_comparison(rows: list, signatures: dict, out_dir, meta: dict) -> dict:
    """results/comparison.md and .json; returns the aggregated rows."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    agg = aggregate(rows)
    sig = "\n".join(f"- {name}: `{s}`" for name, s in signatures.items())
    md = (f"# Label smoothing vs temperature scaling\n\n{meta.get('description', '')}\n\n{markdown_table(agg)}\n\n"
          f"Signatures:\n{sig}\n")
    (out_dir / "comparison.md").write_text(md)
    (out_dir / "comparison.json").write_text(json.dumps({"meta": meta, "signatures": signatures, "rows": rows,
                                                         "aggregate": agg}, indent=2) + "\n")
    return agg


def write_sweep(points: list, fitted: dict, out_dir) -> tuple:
    """points: dicts with label, alpha, seed, temperature, bleu, ece, nll. A CSV and a 3-panel PNG."""
    out_dir = Path(out_dir)
    path_csv, path_png = out_dir / "temperature_sweep.csv", out_dir / "temperature_sweep.png"
    keys = ["label", "alpha", "seed", "temperature", "bleu", "ece", "nll"]
    with open(path_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(points)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    labels = sorted({p["label"] for p in points}, key=lambda s: [p["alpha"] for p in points if p["label"] == s][0])
    for i, label in enumerate(labels):
        ps = sorted((p for p in points if p["label"] == label), key=lambda p: p["temperature"])
        color = f"C{i}"
        for ax, key, title in zip(axes, ("bleu", "ece", "nll"), ("BLEU (beam 4)", "ECE (teacher-forced)", "NLL")):
            ax.plot([p["temperature"] for p in ps], [p[key] for p in ps], "o-", color=color, label=label, ms=3)
            if label in fitted:
                ax.axvline(fitted[label], color=color, ls="--", lw=1)
            ax.set_title(title)
            ax.set_xlabel("temperature T")
    axes[0].legend(fontsize=8)
    fig.suptitle("Temperature sweep on test (dashed: T fitted on validation)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path_png, dpi=120)
    plt.close(fig)
    return path_csv, path_png


def reliability_panel(ax_top, ax_bottom, cal: dict, title: str):
    bins = cal["bins"]
    width = bins[0]["hi"] - bins[0]["lo"]
    centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
    acc = [b["accuracy"] if b["count"] else 0.0 for b in bins]
    conf = [b["confidence"] if b["count"] else c for b, c in zip(bins, centers)]
    ax_top.bar(centers, acc, width=width, edgecolor="black", color="#3b5b92", label="accuracy")
    gaps = [(c - a) if b["count"] else 0.0 for a, c, b in zip(acc, conf, bins)]
    ax_top.bar(centers, gaps, bottom=acc, width=width, edgecolor="#b22222", color="#f08080", alpha=0.6,
               hatch="//", label="gap")
    ax_top.plot([0, 1], [0, 1], "--", color="gray", lw=1)
    ax_top.set_xlim(0, 1)
    ax_top.set_ylim(0, 1)
    ax_top.set_ylabel("accuracy")
    ax_top.set_title(f"{title}\nECE = {cal['ece']:.4f}", fontsize=9)
    ax_top.legend(loc="upper left", fontsize=7)
    ax_bottom.bar(centers, [b["count"] / max(cal["n"], 1) for b in bins], width=width, edgecolor="black",
                  color="#777777")
    ax_bottom.axvline(cal["accuracy"], color="black", ls="-", lw=1.2, label="accuracy")
    ax_bottom.axvline(cal["confidence"], color="black", ls=":", lw=1.2, label="avg. confidence")
    ax_bottom.set_xlim(0, 1)
    ax_bottom.set_xlabel("confidence")
    ax_bottom.set_ylabel("fraction")
    ax_bottom.legend(fontsize=7)


def write_reliability(panels: list, path) -> Path:
    """panels: (title, calibration result) pairs, drawn side by side."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(panels)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 5.2), gridspec_kw={"height_ratios": [3, 1]}, squeeze=False)
    for i, (title, cal) in enumerate(panels):
        reliability_panel(axes[0][i], axes[1][i], cal, title)
    fig.suptitle("Reliability on test (teacher-forced tokens)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)

