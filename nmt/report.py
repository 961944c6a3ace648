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

from nmt.checkpoint import write_text_atomic

# (key in a row, column title, format, interval kind): "ci" a [lo, hi] list, "pm" a 95% half-width
COLUMNS = [("alpha", "alpha", "{:g}", None), ("temperature", "T", "{:.3f}", None),
           ("val_nll", "val NLL", "{:.3f}", None), ("test_nll", "test NLL", "{:.3f}", "ci"),
           ("test_ppl", "test ppl", "{:.2f}", None), ("accuracy", "token acc", "{:.4f}", None),
           ("ece_forced", "ECE (forced)", "{:.4f}", "ci"), ("ece_inference", "ECE (inference)", "{:.4f}", "ci"),
           ("bleu_beam", "BLEU beam", "{:.2f}", None), ("bleu_p", "p (BLEU)", "{:.3f}", None),
           ("bleu_greedy", "BLEU greedy", "{:.2f}", None), ("chrf", "chrF", "{:.2f}", None),
           ("chrf_p", "p (chrF)", "{:.3f}", None)]
INTERVALS = {"test_nll": "test_nll_ci", "ece_forced": "ece_forced_ci", "ece_inference": "ece_inference_ci",
             "bleu_beam": "bleu_ci", "chrf": "chrf_ci"}


def aggregate(rows: list) -> list:
    """Group rows by (model, temperature kind), in order of first appearance, and reduce every numeric
    column to mean, std (over seeds; None for one) and n; intervals and p-values are kept per seed."""
    groups = {}
    for r in rows:
        groups.setdefault((r["group"], r["t_kind"]), []).append(r)
    firsts = [key for key in groups if key[1] == "1"]
    out = []
    for (group, kind), rs in sorted(groups.items(), key=lambda kv: firsts.index((kv[0][0], "1")) * 2
                                    + (kv[0][1] != "1")):
        agg = {"alpha": rs[0]["alpha"], "t_kind": kind, "n": len(rs), "label": rs[0]["label"],
               "seeds": [r["seed"] for r in rs]}
        for key, _, _, _ in COLUMNS[1:]:
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                agg[key] = statistics.fmean(vals)
                agg[key + "_std"] = statistics.stdev(vals) if len(vals) > 1 else None
                agg[key + "_per_seed"] = vals
        for key, ci in INTERVALS.items():
            agg[ci + "_per_seed"] = [r.get(ci) for r in rs]
        out.append(agg)
    return out


def _cell(row, key, fmt):
    if row.get(key) is None:
        return "-"
    if key.endswith("_p"):  # p-values: one per seed
        return "/".join(fmt.format(p) for p in row[key + "_per_seed"])
    text = fmt.format(row[key])
    if row["n"] > 1:
        std = row.get(key + "_std")
        return text if std is None else text + " ± " + fmt.format(std)
    ci = (row.get(INTERVALS.get(key, "") + "_per_seed") or [None])[0]
    if ci is None:
        return text
    if isinstance(ci, list):
        return f"{text} [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"
    return f"{text} ± {fmt.format(ci)}"


def table_cells(agg: list):
    seeds = any(r["n"] > 1 for r in agg)
    head = ["model"] + [title for _, title, _, _ in COLUMNS] + (["n"] if seeds else [])
    body = [[r["label"]] + [_cell(r, k, f) for k, _, f, _ in COLUMNS] + ([str(r["n"])] if seeds else []) for r in agg]
    return head, body


def markdown_table(agg: list) -> str:
    head, body = table_cells(agg)
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                     + ["| " + " | ".join(b) + " |" for b in body])


def text_table(agg: list) -> str:
    """The same table for a terminal: aligned columns."""
    head, body = table_cells(agg)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def signatures_of(rows: list) -> dict:
    sigs = {}
    for r in rows:
        sigs.update(r["signatures"])
    return sigs


def comparison_markdown(data: dict) -> str:
    """comparison.md, from comparison.json's dict alone (`python -m nmt.study --from-results` rebuilds it)."""
    meta, agg = data["meta"], data["aggregate"]
    several = any(r["n"] > 1 for r in agg)
    prov = meta["provenance"]
    note = ("Cells are mean ± std over the n seeds; each seed's 95% intervals are in comparison.json."
            if several else
            "NLL and ECE: 95% bootstrap intervals over test sentences (1,000 resamples, seed 12345). BLEU and "
            "chrF: ± the 95% interval of sacrebleu's paired bootstrap (1,000 resamples).")
    sig = "\n".join(f"- {name}: `{s}`" for name, s in data["signatures"].items())
    return (f"# Label smoothing vs temperature scaling\n\n"
            f"Split {meta['split']}; beam {meta['beam']}; T fitted on validation. p: paired bootstrap against the "
            f"hard-target row of the same seed (one value per seed).\n\n{markdown_table(agg)}\n\n{note}\n\n"
            f"Signatures:\n{sig}\n\nMade by `{prov['command']}` at nmt {prov['nmt']} (commit "
            f"{(prov['git_commit'] or 'unknown')[:10]}{' + local changes' if prov.get('git_dirty') else ''}), torch "
            f"{prov['torch']}, sacrebleu {prov['sacrebleu']}, sentencepiece {prov['sentencepiece']}, on "
            f"{prov['machine']['device']} with {prov['machine']['threads']} threads; {prov['wall_seconds']:.0f} s.\n")


HEADLINE = [("val_nll", "val NLL", "{:.3f}"), ("test_nll", "test NLL", "{:.3f}"), ("ece_forced", "ECE (forced)", "{:.4f}"),
            ("ece_inference", "ECE (inference)", "{:.4f}"), ("bleu_beam", "BLEU beam", "{:.2f}"),
            ("bleu_greedy", "BLEU greedy", "{:.2f}"), ("chrf", "chrF", "{:.2f}")]


def headline(data: dict) -> str:
    """The README's table (mean ± std over seeds, n) and the paper's four claims, from comparison.json alone."""
    agg = data["aggregate"]
    head = ["model", "T"] + [t for _, t, _ in HEADLINE] + ["n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in agg:
        t = "fitted" if r["t_kind"] == "fit" else "1"
        cells = [r["label"], t] + [_mean_std(r, k, f) for k, _, f in HEADLINE] + [str(r["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + claims(data)


def _mean_std(row, key, fmt):
    std = row.get(key + "_std")
    return fmt.format(row[key]) + ("" if std is None else " ± " + fmt.format(std))


def _per_seed(rows, label, key) -> dict:
    return {r["seed"]: r[key] for r in rows if r["label"] == label}


def claims(data: dict, ls_label: str = "label smoothing α=0.1") -> str:
    """Mueller et al.'s claims for translation, each said to hold or not with the numbers behind it. Seeds are
    paired (same seed, same data order). An ordering holds when every seed shows it and the mean paired
    difference is more than two standard errors from 0; 'about equal' holds when it is within two standard
    errors (with one seed: when the 95% bootstrap intervals overlap)."""
    import math
    rows = data["rows"]
    hard, hard_t, ls = "hard targets", "hard targets + T", ls_label
    if not {hard, hard_t, ls} <= {r["label"] for r in rows}:
        return "(the claims need the hard-target and the label-smoothed model)"

    def diffs(a, b, key):
        x, y = _per_seed(rows, a, key), _per_seed(rows, b, key)
        return [x[s] - y[s] for s in sorted(set(x) & set(y))]

    def stat(label, key, fmt):
        v = list(_per_seed(rows, label, key).values())
        m = statistics.fmean(v)
        return fmt.format(m) + (" ± " + fmt.format(statistics.stdev(v)) if len(v) > 1 else "")

    def ordered(a, b, key, fmt, name, lower: bool):
        """Claim: a's `key` is lower (or higher) than b's: in every seed, and (with several seeds) by more than
        two standard errors of the mean paired difference."""
        d = [x if lower else -x for x in diffs(a, b, key)]
        wins, m = sum(x < 0 for x in d), statistics.fmean(d)
        se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else 0.0
        ok = wins == len(d) and -m > 2 * se
        sign = 1 if lower else -1
        return (f"- {name}: **{'holds' if ok else 'does not hold'}**: {stat(a, key, fmt)} against {stat(b, key, fmt)}"
                f" ({wins} of {len(d)} seeds; mean difference {fmt.replace('{:', '{:+').format(sign * m)}"
                + (f", two standard errors {fmt.format(2 * se)})" if len(d) > 1 else ")"))

    def about_equal(a, b, key, fmt, name):
        d = diffs(a, b, key)
        m = statistics.fmean(d)
        if len(d) > 1:
            se = statistics.stdev(d) / math.sqrt(len(d))
            ok = abs(m) <= 2 * se
            why = f"mean difference {m:+.4f}, two standard errors {2 * se:.4f}"
        else:
            ia, ib = (next(r[key + "_ci"] for r in rows if r["label"] == x) for x in (a, b))
            ok = ia[0] <= ib[1] and ib[0] <= ia[1]
            why = f"difference {m:+.4f}; 95% intervals {'overlap' if ok else 'do not overlap'}"
        return (f"- {name}: **{'holds' if ok else 'does not hold'}**: {stat(a, key, fmt)} against "
                f"{stat(b, key, fmt)} ({why})")

    return "\n".join([
        ordered(ls, hard, "ece_forced", "{:.4f}", "ECE(LS) < ECE(hard)", lower=True),
        about_equal(hard_t, ls, "ece_forced", "{:.4f}", "ECE(hard + T) ≈ ECE(LS)"),
        ordered(ls, hard, "bleu_beam", "{:.2f}", "BLEU beam (LS) > BLEU beam (hard)", lower=False),
        ordered(ls, hard_t, "bleu_beam", "{:.2f}", "BLEU beam (LS) > BLEU beam (hard + T)", lower=False),
        ordered(hard, ls, "test_nll", "{:.3f}", "NLL(hard) < NLL(LS)", lower=True),
    ]) + "\n"


def write_comparison(rows: list, sweep: list, meta: dict, out_dir) -> dict:
    """results/comparison.json (every number and how it was made) and comparison.md (from the JSON alone)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "signatures": signatures_of(rows), "rows": rows, "aggregate": aggregate(rows),
            "sweep": sweep}
    write_text_atomic(out_dir / "comparison.json", json.dumps(data, indent=2) + "\n")
    write_text_atomic(out_dir / "comparison.md", comparison_markdown(data))
    return data


def study_summary(data: dict, out_dir) -> str:
    """What the study prints: the table, the signatures, where the files went."""
    return (text_table(data["aggregate"]) + "\n" + "\n".join(f"{k}: {v}" for k, v in data["signatures"].items())
            + f"\n\nresults in {out_dir}/: comparison.md comparison.json reliability*.png hyps/ runs/"
            + (" temperature_sweep.csv temperature_sweep.png" if data["sweep"] else ""))


def write_sweep(points: list, fitted: dict, out_dir, beam: int = 4, split: str = "test") -> tuple:
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
        for ax, key, title in zip(axes, ("bleu", "ece", "nll"), (f"BLEU (beam {beam})", "ECE (teacher-forced)", "NLL")):
            ax.plot([p["temperature"] for p in ps], [p[key] for p in ps], "o-", color=color, label=label, ms=3)
            if label in fitted:
                ax.axvline(fitted[label], color=color, ls="--", lw=1)
            ax.set_title(title)
            ax.set_xlabel("temperature T")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Temperature sweep on {split} (dashed: T fitted on validation)", fontsize=10)
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


def write_reliability(panels: list, path, split: str = "test", ncols: int = 4) -> Path:
    """panels: (title, calibration result) pairs, in a grid of at most `ncols` columns."""
    import math

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(panels)
    cols, rows = min(n, ncols), math.ceil(n / ncols)
    fig = plt.figure(figsize=(3.6 * cols, 5.2 * rows))
    grid = fig.add_gridspec(2 * rows, cols, height_ratios=[3, 1] * rows)
    for i, (title, cal) in enumerate(panels):
        r, c = divmod(i, cols)
        reliability_panel(fig.add_subplot(grid[2 * r, c]), fig.add_subplot(grid[2 * r + 1, c]), cal, title)
    fig.suptitle(f"Reliability on {split} (teacher-forced tokens)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
