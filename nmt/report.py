"""Tables and figures of a study, from its typed rows, aggregates and claims only: comparison.md / .json, the
README's headline, the temperature sweep (Mueller et al. 2019, Fig. 4) with bands over seeds, the beam-size
sweep, and reliability diagrams (their Fig. 3; drawn in the style of github.com/hollance/reliability-diagrams:
accuracy per bin against the diagonal, the gap shaded, the confidence histogram beneath).

comparison.md is always made from comparison.json as read back (`markdown_of_file`), so the Markdown a study
writes and the one `python -m nmt.study --from-results` prints are the same text.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import statistics
from pathlib import Path

from nmt.files import save_figure, write_text_atomic
from nmt.metrics import REGISTRY, claim_format
from nmt.names import under
from nmt.results import Aggregate, Comparison
from nmt.stats import Claim

# (metric, column title, format) of comparison.md's tables and of the README's headline (nmt.metrics)
COLUMNS = [(m.name, m.title, m.fmt) for m in REGISTRY if m.column]
INTERVALS = {m.name: m.interval for m in REGISTRY if m.interval}
HEADLINE = [(m.name, m.title, m.fmt) for m in REGISTRY if m.headline]


def jsonable(obj):
    """Plain JSON data of typed results: a dataclass by its `to_json` where it has one, else all its fields."""
    if hasattr(obj, "to_json") and not isinstance(obj, type):
        return jsonable(obj.to_json())
    if dataclasses.is_dataclass(obj):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def signatures_of(rows: list) -> dict:
    sigs = {}
    for r in rows:
        sigs.update(r.signatures)
    return sigs


# -- tables -------------------------------------------------------------------------------------------

def _cell(agg: Aggregate, rows: list, key: str, fmt: str) -> str:
    """mean ± std (several seeds), or the one seed's value with its interval; p-values one per seed."""
    per = agg.per_seed.get(key)
    if not per:
        return "-"
    if key.endswith("_p"):
        return "/".join(fmt.format(p) for p in per)
    text = fmt.format(agg.mean[key])
    if agg.n > 1:
        return text + " ± " + fmt.format(agg.std[key])
    ci = getattr(rows[0], INTERVALS[key]) if key in INTERVALS and rows else None
    if ci is None:
        return text
    if isinstance(ci, list):
        return f"{text} [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"
    return f"{text} ± {fmt.format(ci)}"


def present(data: Comparison, columns: list) -> list:
    """The columns some aggregate of the study has a value for (results made before a metric existed lack it)."""
    return [c for c in columns if any(c[0] in a.per_seed for a in data.aggregates)]


def table_cells(data: Comparison, test_set: str, columns=COLUMNS):
    columns = present(data, columns)
    aggs = data.aggregates_on(test_set)
    seeds = any(a.n > 1 for a in aggs)
    head = ["model"] + [t for _, t, _ in columns] + (["n"] if seeds else [])
    body = []
    for a in aggs:
        rows = [r for r in data.rows if (r.test_set, r.model, r.t_kind) == (test_set, a.model, a.t_kind)]
        body.append([a.label] + [_cell(a, rows, k, f) for k, _, f in columns] + ([str(a.n)] if seeds else []))
    return head, body


def markdown_table(head, body) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(b) + " |"
                                                                                 for b in body])


def text_table(head, body) -> str:
    """The same table for a terminal: aligned columns."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def _num(x, fmt="{:+.4f}") -> str:
    return "-" if x is None else fmt.format(x)


def mean_std(agg: Aggregate, key: str, fmt: str) -> str:
    """An aggregate's mean ± std over its seeds ("-" where the metric is absent, no "±" where std is)."""
    m, s = agg.mean.get(key), agg.std.get(key)
    return "-" if m is None else fmt.format(m) + ("" if s is None else " ± " + fmt.format(s))


def _power(c: Claim, f: str) -> str:
    """An ordering's minimal detectable effects (80% power), unadjusted and at its family's Holm level."""
    if c.mde is None:
        return ""
    holm = "" if c.mde_holm is None else f" (±{f.format(c.mde_holm)[1:]} at the family's Holm level)"
    return f"; detectable with 80% power: ±{f.format(c.mde)[1:]}{holm}"


def _two_level(c: Claim, f: str) -> str:
    """The hierarchical bootstrap's interval (seeds, then sentences), where the study computed one."""
    ci = c.ci_two_level
    return "" if not ci else f"; with test-set noise (seeds, then sentences): [{f.format(ci[0])}, {f.format(ci[1])}]"


def _heterogeneity(c: Claim) -> str:
    """A pooled claim's heterogeneity test, and what follows where the blocks differ."""
    h = c.heterogeneity
    if not h:
        return ""
    if h.f is None:
        return "; no spread within blocks: heterogeneity not tested"
    text = f"; heterogeneity F({h.df[0]}, {h.df[1]}) = {h.f:.3g}, p = {h.p:.3g}"
    return text + (": **the effect differs by block**; the per-block claims are the verdicts that stand"
                   if h.differs else "")


def claim_line(c: Claim) -> str:
    """One claim: its sentence, verdict, estimate, interval, test, p and Holm's p, power and (pooled) the
    blocks' heterogeneity."""
    f = claim_format(c.metric)
    if c.ci is None:
        detail = f"n = {c.n}" + ("" if c.estimate is None else f", difference {f.format(c.estimate)}")
    else:
        level = "90%" if "TOST" in c.test else "95%"
        margin = f", margin ±{c.margin:g}" if c.margin else ""
        df = f", df = {c.df}" if c.df is not None and c.df != c.n - 1 else ""
        what = "mean slope per unit alpha" if c.x is not None else "mean difference"
        detail = (f"{what} {f.format(c.estimate)}, {level} interval [{f.format(c.ci[0])}, "
                  f"{f.format(c.ci[1])}]{margin}; {c.test}, n = {c.n}{df}, p = {c.p:.3g}, "
                  f"Holm p = {c.p_holm:.3g}{_power(c, f)}{_two_level(c, f)}{_heterogeneity(c)}")
    holm = "" if c.verdict_holm == c.verdict else f" ({c.verdict_holm} after Holm)"
    if c.x is not None:
        detail += "; alphas " + ", ".join(f"{v:g}" for v in c.x)
    where = f" [{c.test_set}]" if c.test_set else (f" [{', '.join(c.test_sets)}]" if c.test_sets else "")
    return f"- {c.claim}{where}: **{c.verdict}**{holm}: {detail}"


FAMILY_TITLES = {"primary": "Primary claims (the paper's, written before the runs)",
                 "secondary": "Secondary claims (every other metric)"}


def claims_markdown(claims: list) -> str:
    """The claims, family by family (Holm adjusts within each)."""
    if not claims:
        return "(this study states no claims)\n"
    parts = []
    for family, title in FAMILY_TITLES.items():
        members = [c for c in claims if c.family == family]
        if members:
            tested = sum(1 for c in members if c.p is not None)
            parts.append(f"### {title}; Holm over {tested}\n\n" + "\n".join(claim_line(c) for c in members) + "\n")
    return "\n".join(parts)


def provenance_line(prov: dict) -> str:
    dirty = prov.get("git_dirty")
    state = " — **WARNING: made from a tree with uncommitted changes; not reproducible from the commit**" if dirty \
        else (" (clean tree)" if dirty is False else "")
    return (f"Made by `{prov['command']}` at nmt {prov['nmt']}, commit {(prov.get('git_commit') or 'unknown')[:10]}"
            f"{state}; torch {prov['torch']}, sacrebleu {prov['sacrebleu']}, scipy {prov.get('scipy', '-')}, "
            f"sentencepiece {prov['sentencepiece']}; {prov['machine']['device']}, "
            f"{prov['machine']['threads']} threads; "
            f"runs in {', '.join(sorted(set(prov.get('precision', {}).values()))) or 'fp32'}; "
            f"{prov['wall_seconds']:.0f} s{resumed_note(prov)}.{judged_note(prov)}")


def judged_note(prov: dict) -> str:
    """The call that judged the claims again on these rows (`python -m nmt.study judge`), if one did."""
    j = prov.get("judged")
    if not isinstance(j, dict):
        return ""
    state = " (clean tree)" if j.get("git_dirty") is False else " (**uncommitted changes**)"
    return (f" Claims judged again on these rows by `{j.get('command')}` at nmt {j.get('nmt')}, commit "
            f"{str(j.get('git_commit'))[:10]}{state}.")


def resumed_note(prov: dict) -> str:
    n = len(prov.get("evaluations_resumed") or [])
    notes = [f"{n} runs were evaluated by an earlier, interrupted call: nmt.evalcache"] if n else []
    reused = prov.get("evaluations_reused") or {}
    commits = sorted({str(o.get("git_commit"))[:7] for o in reused.values() if isinstance(o, dict)})
    if reused:
        notes.append(f"{len(reused)} runs' evaluations were reused from committed results (--reuse; evaluated at "
                     f"commit {', '.join(commits)})")
    return f" (this call; {'; '.join(notes)})" if notes else ""


CLAIMS_RULES = ("Paired over seeds: a 95% t-interval for an ordering, TOST with the study's margin (90% interval) for "
                "an equivalence; a claim pooled over blocks (pairs, test sets) takes each block as a fixed effect "
                "(blocked t) and tests whether the blocks differ (one-way ANOVA); holds / contradicted / "
                "inconclusive as the interval says; p-values raw and Holm-adjusted within the claim's family. "
                "An ordering's detectable effect is the difference its test would find with 80% power.")


def baseline_names(baseline) -> str:
    """The paired bootstrap's baseline: one model, or one per pair ({pair: model})."""
    if isinstance(baseline, dict):
        if len(baseline) == 1:
            return f"`{next(iter(baseline.values()))}`"
        return ", ".join(f"`{m}` ({p})" for p, m in baseline.items())
    return f"`{baseline or '?'}`"


def comparison_markdown(data: Comparison) -> str:
    """comparison.md, from comparison.json as read back (`results.load_comparison`)."""
    meta = data.meta
    boot = meta.get("paired_bootstrap", {})
    parts = [f"# Study `{meta['study']}`\n", meta.get("description", "").strip() + "\n" if meta.get("description")
             else "", f"Beam {meta['beam']}; T fitted on validation. Cells: mean ± std over the n seeds (one seed: "
             f"the value and its 95% bootstrap interval over test sentences). floor: the ECE a perfectly "
             f"calibrated model with the same confidences would show; debiased: Kumar et al. 2019's estimate. "
             f"p: {boot.get('test', 'paired bootstrap')} against {baseline_names(boot.get('baseline'))} "
             f"of the same seed "
             f"({boot.get('resamples', 1000)} resamples, seed {boot.get('seed', 12345)}): test-set noise, one value "
             f"per seed, not a test over seeds.\n"]
    missing = meta.get("missing_runs") or []
    if missing:
        parts.append(f"**Partial results** (`--partial`): {len(missing)} runs of the study were not trained yet and "
                     f"are left out: {', '.join(f'`{m}`' for m in missing)}. Claims use the seeds there are.\n")
    for name in data.test_sets:
        head, body = table_cells(data, name)
        parts.append(f"## {name}\n\n{markdown_table(head, body)}\n")
    parts.append("## Claims\n\n" + CLAIMS_RULES + "\n\n" + claims_markdown(data.claims))
    if data.beam_sweep:
        parts.append(beam_sweep_markdown(data.beam_sweep))
    sig = "\n".join(f"- {name}: `{s}`" for name, s in data.signatures.items())
    parts.append(f"Signatures:\n{sig}\n\n{provenance_line(meta['provenance'])}\n")
    return "\n".join(p for p in parts if p)


def beam_sweep_markdown(points: list) -> str:
    """comparison.md's beam-size section: per test set, BLEU, the length ratio and the empty / truncated shares
    against the beam, one line per model and T, mean ± std over seeds (beam_sweep.csv has every seed)."""
    beams = sorted({p["beam"] for p in points})
    parts = [f"## Beam sizes\n\nEach model and seed searched again at beams {', '.join(map(str, beams))}, at T = 1 "
             f"and at its fitted T; mean ± std over seeds; {sweep_minutes(points):.1f} minutes of search in all.\n"]
    for name in dict.fromkeys(p["test_set"] for p in points):
        lines = list(dict.fromkeys((p["model"], p["t_kind"]) for p in points if p["test_set"] == name))
        for key, title, fmt in (("bleu", "BLEU", "{:.2f}"), ("length_ratio", "length ratio", "{:.3f}"),
                                ("empty_share", "share of empty hypotheses", "{:.3f}"),
                                ("truncated_share", "share cut at the length limit", "{:.3f}")):
            body = []
            for model, kind in lines:
                ps = [p for p in points if (p["test_set"], p["model"], p["t_kind"]) == (name, model, kind)]
                b = _bands(ps, "beam", key)
                n = len({p["seed"] for p in ps})
                body.append([ps[0]["label"] + (" + T" if kind == "fitted" else ""), "1" if kind == "1" else "fitted"]
                            + [(fmt.format(b[k][0]) + (" ± " + fmt.format(b[k][1]) if n > 1 else "")) if k in b else "-"
                               for k in beams] + [str(n)])
            parts.append(f"### {name}: {title}\n\n"
                         + markdown_table(["model", "T"] + [f"beam {k}" for k in beams] + ["n"], body) + "\n")
    return "\n".join(parts)


def headline(data: Comparison) -> str:
    """The README's table (first test set; mean ± std over seeds, n) and the study's claims."""
    name = data.test_sets[0]
    shown = present(data, HEADLINE)
    cols = [("t_kind", "T", "")] + shown
    head = ["model"] + [t for _, t, _ in cols] + ["n"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in data.aggregates_on(name):
        cells = [a.label, "fitted" if a.t_kind == "fitted" else "1"]
        cells += [mean_std(a, k, f) for k, _, f in shown]
        lines.append("| " + " | ".join(cells + [str(a.n)]) + " |")
    return "\n".join(lines) + "\n\n" + claims_markdown(data.claims)


def write_comparison(data: Comparison, out_dir) -> None:
    """comparison.json (every number and how it was made), then comparison.md from the JSON as read back."""
    from nmt.results import load_comparison
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "comparison.json", json.dumps(data.to_json(), indent=2) + "\n")
    write_text_atomic(out_dir / "comparison.md", comparison_markdown(load_comparison(out_dir)))


def study_summary(data: Comparison, out_dir) -> str:
    """What the study prints: each test set's table, the claims, where the files went."""
    parts = []
    for name in data.test_sets:
        head, body = table_cells(data, name, [c for c in COLUMNS if c[0] in
                                              ("temperature", "test_nll", "ece_forced", "ece_inference", "bleu_beam",
                                               "chrf")])
        parts.append(f"{name}\n{text_table(head, body)}")
    return ("\n\n".join(parts) + "\n\n" + claims_markdown(data.claims)
            + f"\nresults in {out_dir}/: comparison.md comparison.json reliability.json reliability*.png hyps/ runs/"
            + (" temperature_sweep.csv temperature_sweep.png" if data.sweep else "")
            + (" beam_sweep.csv beam_sweep.png" if data.beam_sweep else "")
            + (f"\nbeam sweep: {sweep_minutes(data.beam_sweep):.1f} minutes of search in all" if data.beam_sweep
               else ""))


def sweep_minutes(points: list) -> float:
    """The beam sweep's total time: each (model, seed, test set) sweep once (its points share its seconds)."""
    once = {(p["model"], p["seed"], p["test_set"]): p.get("sweep_seconds", 0.0) for p in points}
    return sum(once.values()) / 60


# -- figures ------------------------------------------------------------------------------------------

def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _csv(rows: list, keys: list) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _bands(points, x_key, y_key):
    """{x: (mean, std or 0)} over the seeds of `points`."""
    by = {}
    for p in points:
        by.setdefault(p[x_key], []).append(p[y_key])
    return {x: (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0) for x, v in sorted(by.items())}


def write_sweep(points: list, rows: list, out_dir, beam: int = 4) -> None:
    """temperature_sweep.csv (one line per model, seed, test set and T) and temperature_sweep.png: BLEU, ECE and
    NLL against T, mean ± std over seeds as bands, the mean fitted T dashed (first test set)."""
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "temperature_sweep.csv", _csv(points, ["model", "label", "seed", "test_set",
                                                                       "temperature", "bleu", "ece", "nll"]))
    plt = _plt()
    name = points[0]["test_set"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    models = list(dict.fromkeys(p["model"] for p in points))
    for i, model in enumerate(models):
        ps = [p for p in points if p["model"] == model and p["test_set"] == name]
        seeds = sorted({p["seed"] for p in ps})
        fitted = [r.temperature for r in rows if r.model == model and r.t_kind == "fitted" and r.test_set == name]
        for ax, key, title in zip(axes, ("bleu", "ece", "nll"), (f"BLEU (beam {beam})", "ECE (teacher-forced)", "NLL")):
            b = _bands(ps, "temperature", key)
            xs = list(b)
            m = [b[x][0] for x in xs]
            s = [b[x][1] for x in xs]
            ax.plot(xs, m, "o-", color=f"C{i}", ms=3, label=f"{ps[0]['label']} (n = {len(seeds)})")
            ax.fill_between(xs, [a - d for a, d in zip(m, s)], [a + d for a, d in zip(m, s)], color=f"C{i}", alpha=0.2)
            if fitted:
                ax.axvline(statistics.fmean(fitted), color=f"C{i}", ls="--", lw=1)
            ax.set_title(title)
            ax.set_xlabel("temperature T")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Temperature sweep on {name}: mean ± std over seeds (dashed: mean T fitted on validation)",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_dir / "temperature_sweep.png")
    plt.close(fig)


def write_beam_sweep(points: list, out_dir) -> None:
    """beam_sweep.csv and beam_sweep.png: BLEU and the length ratio against the beam size, one line per model
    (solid T = 1, dashed fitted T), mean ± std over seeds (first test set)."""
    out_dir = Path(out_dir)
    write_text_atomic(out_dir / "beam_sweep.csv", _csv(points, ["model", "label", "seed", "test_set", "t_kind",
                                                                "temperature", "beam", "bleu", "length_ratio",
                                                                "empty_share", "truncated_share", "sweep_seconds"]))
    plt = _plt()
    name = points[0]["test_set"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    models = list(dict.fromkeys(p["model"] for p in points))
    for i, model in enumerate(models):
        for kind, ls in (("1", "-"), ("fitted", "--")):
            ps = [p for p in points if p["model"] == model and p["t_kind"] == kind and p["test_set"] == name]
            if not ps:
                continue
            for ax, key in zip(axes, ("bleu", "length_ratio")):
                b = _bands(ps, "beam", key)
                xs = list(b)
                m, s = [b[x][0] for x in xs], [b[x][1] for x in xs]
                ax.plot(xs, m, ls, marker="o", ms=3, color=f"C{i}",
                        label=f"{ps[0]['label']}" + (" + T" if kind == "fitted" else ""))
                ax.fill_between(xs, [a - d for a, d in zip(m, s)], [a + d for a, d in zip(m, s)], color=f"C{i}",
                                alpha=0.15)
                ax.set_xscale("log", base=2)
                ax.set_xlabel("beam size")
    axes[0].set_title("BLEU")
    axes[1].set_title("length ratio (hypothesis / reference)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Beam size on {name}: mean ± std over seeds", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_dir / "beam_sweep.png")
    plt.close(fig)


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
    plt = _plt()
    n = len(panels)
    cols, nrows = min(n, ncols), math.ceil(n / ncols)
    fig = plt.figure(figsize=(3.6 * cols, 5.2 * nrows))
    grid = fig.add_gridspec(2 * nrows, cols, height_ratios=[3, 1] * nrows)
    for i, (title, cal) in enumerate(panels):
        r, c = divmod(i, cols)
        reliability_panel(fig.add_subplot(grid[2 * r, c]), fig.add_subplot(grid[2 * r + 1, c]), cal, title)
    fig.suptitle(f"Reliability on {split} (teacher-forced tokens)", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return Path(path)


def write_figures(panels: dict, data: Comparison, out_dir) -> list:
    """Every figure of a study into `out_dir`: the reliability diagrams (from `panels`), the temperature sweep
    and the beam sweep (CSV and PNG, where the study has them). Returns the paths written."""
    out_dir = Path(out_dir)
    written = []
    if panels:
        write_reliability_figures(panels, data, out_dir)
        written += sorted(out_dir.glob("reliability*.png"))
    if data.sweep:
        write_sweep(data.sweep, data.rows, out_dir, beam=data.meta["beam"])
        written += [out_dir / "temperature_sweep.csv", out_dir / "temperature_sweep.png"]
    if data.beam_sweep:
        write_beam_sweep(data.beam_sweep, out_dir)
        written += [out_dir / "beam_sweep.csv", out_dir / "beam_sweep.png"]
    if any(len(sets) > 1 for sets in shift_order(data.rows).values()):
        write_shift(data.rows, out_dir)
        written += [out_dir / "shift.csv", out_dir / "shift.png"]
    if len({p["alpha"] for p in alpha_points(data.rows)}) >= 3:
        write_alpha_curve(data.rows, out_dir)
        written += [out_dir / "alpha_curve.csv", out_dir / "alpha_curve.png"]
    return written


ALPHA_PANELS = (("bleu_beam", "BLEU (beam)"), ("bleu_greedy", "BLEU (greedy)"), ("chrf", "chrF"), ("test_nll", "NLL"),
                ("entropy", "entropy"), ("ece_forced", "ECE (forced)"), ("ece_forced_noeos", "ECE (forced, no EOS)"),
                ("smece_forced", "smooth ECE"), ("ece_inference", "ECE (inference)"), ("temperature", "fitted T"))


def alpha_points(rows: list) -> list:
    """The rows of the α curve: hard targets and uniform smoothing (variant "hard" or "uniform") of the first pair,
    on its first test set, one point each (alpha, temperature kind, seed and ALPHA_PANELS' metrics)."""
    if not rows:
        return []
    pair, test_set = rows[0].pair, rows[0].test_set
    return [{"model": r.model, "alpha": r.alpha, "t_kind": r.t_kind, "seed": r.seed, "test_set": r.test_set,
             **{key: getattr(r, key) for key, _ in ALPHA_PANELS}}
            for r in rows if r.pair == pair and r.test_set == test_set and r.variant in ("hard", "uniform")]


def write_alpha_curve(rows: list, out_dir) -> None:
    """alpha_curve.csv (one line per row of `alpha_points`) and alpha_curve.png: each metric of ALPHA_PANELS
    against α, T = 1 solid and fitted T dashed (the fitted T itself: its own panel), mean ± std over seeds."""
    points = alpha_points(rows)
    write_text_atomic(Path(out_dir) / "alpha_curve.csv", _csv(points, list(points[0])))
    plt = _plt()
    fig, axes = plt.subplots(2, 5, figsize=(17, 6.4))
    for ax, (key, title) in zip(axes.flat, ALPHA_PANELS):
        for kind, ls, label in (("1", "-", "T = 1"), ("fitted", "--", "fitted T")):
            ps = [p for p in points if p["t_kind"] == kind and p[key] is not None]
            if not ps or (key == "temperature" and kind == "1"):
                continue
            b = _bands(ps, "alpha", key)
            xs, m, sd = list(b), [b[x][0] for x in b], [b[x][1] for x in b]
            ax.plot(xs, m, ls, marker="o", ms=3, color="C0" if kind == "1" else "C1", label=label)
            ax.fill_between(xs, [a - d for a, d in zip(m, sd)], [a + d for a, d in zip(m, sd)],
                            color="C0" if kind == "1" else "C1", alpha=0.15)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("α (uniform label smoothing)", fontsize=8)
    next((ax for ax in axes.flat if ax.get_lines()), axes.flat[0]).legend(fontsize=8)
    fig.suptitle(f"How much smoothing, on {points[0]['test_set']}: mean ± std over seeds", fontsize=10)
    fig.tight_layout()
    save_figure(fig, Path(out_dir) / "alpha_curve.png")
    plt.close(fig)


SHIFT_PANELS = (("ece_forced", "ECE (teacher-forced)"), ("ece_inference", "ECE (inference)"),
                ("drift", "oracle T / validation T"))


def shift_order(rows: list) -> dict:
    """{pair: its test sets, most in-domain first}: ordered by the hard-target model's mean BLEU at T = 1 (the
    pair's first model with alpha 0, else its first model), highest first."""
    order = {}
    for pair in dict.fromkeys(r.pair for r in rows):
        ones = [r for r in rows if r.pair == pair and r.t_kind == "1"]
        ref = next((r.model for r in ones if r.alpha == 0), ones[0].model)
        bleu = {r.test_set: [] for r in ones}  # every test set, in the rows' order (a set with no BLEU: last)
        for r in ones:
            if r.model == ref and r.bleu_beam is not None:
                bleu[r.test_set].append(r.bleu_beam)
        order[pair] = sorted(bleu, key=lambda name: -statistics.fmean(bleu[name]) if bleu[name] else math.inf)
    return order


def shift_points(rows: list) -> list:
    """One point per row: its pair, test set, rank in `shift_order`, model and temperature kind, seed, BLEU, the two
    ECEs and the drift (the oracle T fitted on the test set over the T fitted on validation; None without an
    oracle T)."""
    order = shift_order(rows)
    val_t = {(r.model, r.seed, r.test_set): r.temperature for r in rows if r.t_kind == "fitted"}
    return [{"pair": r.pair, "test_set": r.test_set, "rank": order[r.pair].index(r.test_set) + 1, "model": r.model,
             "label": r.label, "t_kind": r.t_kind, "seed": r.seed,  # a fitted row's label ends in " + T"
             "temperature": r.temperature, "bleu_beam": r.bleu_beam, "ece_forced": r.ece_forced,
             "ece_inference": r.ece_inference, "oracle_temperature": r.oracle_temperature,
             "drift": (r.oracle_temperature / val_t[r.model, r.seed, r.test_set]
                       if r.oracle_temperature is not None and (r.model, r.seed, r.test_set) in val_t else None)}
            for r in rows if r.test_set in order[r.pair]]


def write_shift(rows: list, out_dir) -> None:
    """shift.csv (one line per row) and shift.png: per pair (a row of panels), forced ECE, inference ECE and the
    oracle-T drift against the test sets ordered by the hard-target model's BLEU (`shift_order`), one line per
    model and temperature (the drift: per model, at T = 1), mean ± std over seeds as bands."""
    points = shift_points(rows)
    write_text_atomic(Path(out_dir) / "shift.csv", _csv(points, list(points[0])))
    order = shift_order(rows)
    plt = _plt()
    fig, axes = plt.subplots(len(order), 3, figsize=(14, 3.6 * len(order)), squeeze=False)
    for ax_row, (pair, sets) in zip(axes, order.items()):
        lines = list(dict.fromkeys((p["model"], p["t_kind"], p["label"]) for p in points if p["pair"] == pair))
        for ax, (key, title) in zip(ax_row, SHIFT_PANELS):
            models = list(dict.fromkeys(m for m, _, _ in lines))
            for model, kind, label in lines:
                ps = [p for p in points if p["pair"] == pair and p["model"] == model and p["t_kind"] == kind
                      and p[key] is not None]
                if not ps or (key == "drift" and kind != "1"):
                    continue
                b = _bands(ps, "rank", key)
                xs, m, sd = list(b), [b[x][0] for x in b], [b[x][1] for x in b]
                color = f"C{models.index(model)}"
                ax.plot(xs, m, "--" if kind == "fitted" else "-", marker="o", ms=3, color=color,
                        label=label if key != "drift" else label.removesuffix(" + T"))
                ax.fill_between(xs, [a - d for a, d in zip(m, sd)], [a + d for a, d in zip(m, sd)], color=color,
                                alpha=0.15)
            if key == "drift":
                ax.axhline(1.0, color="grey", lw=0.8)
            ax.set_xticks(range(1, len(sets) + 1), [name.removeprefix("test_") for name in sets], rotation=20,
                          fontsize=7)
            ax.set_title(f"{pair}: {title}", fontsize=9)
        ax_row[0].legend(fontsize=7)
    fig.suptitle("Under shift: test sets ordered by the hard-target model's BLEU (most in-domain first); "
                 "mean ± std over seeds", fontsize=10)
    fig.tight_layout()
    save_figure(fig, Path(out_dir) / "shift.png")
    plt.close(fig)


def write_reliability_figures(panels: dict, data: Comparison, out_dir) -> None:
    """reliability_MODEL[_t].png for the first seed of each model, and reliability.png with all of them (first
    test set). `panels`: {(model, test set, t_kind): (T, calibration)}."""
    out_dir = Path(out_dir)
    name = data.test_sets[0]
    labels = {(r.model, r.t_kind): r.label for r in data.rows}
    chosen = [(k, v) for k, v in panels.items() if k[1] == name]
    for (model, _, kind), (t, cal) in chosen:
        write_reliability([(f"{labels[model, kind]}, T = {t:.3f}", cal)],
                          under(out_dir, f"reliability_{model}{'_t' if kind == 'fitted' else ''}.png"), split=name)
    if chosen:
        write_reliability([(labels[m, k], cal) for (m, _, k), (_, cal) in chosen], out_dir / "reliability.png",
                          split=name)
