"""python -m nmt.visualize: what label smoothing does to the representations (the analysis is
`nmt.representations`; this command chooses the checkpoints, draws the figures and prints the tables).

  python -m nmt.visualize --study studies/main.toml        # the first seed of each model of the study
  python -m nmt.visualize --study studies/main.toml --all-seeds   # every seed: tables over seeds, verdicts
  python -m nmt.visualize --checkpoint A --checkpoint B --tokens Hund Katze Straße
  python -m nmt.visualize --from-results results/representations --figures /tmp/fig   # figures again, from
                                                                    # penultimate_points.json alone
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from nmt import cli
from nmt.errors import DataError, UsageError
from nmt.files import read_json, save_figure, write_json_atomic, write_text_atomic
from nmt.representations import PANEL_GEOMETRY, QUANTITIES, Settings, analyse, summarise
from nmt.runtime import pick_device, setup_cpu
from nmt.stats import Claim

log = logging.getLogger("nmt.visualize")


# -- the command -------------------------------------------------------------------------------

def models_of(args) -> list:
    """[(path, study model name or None, seed or None)]: the --checkpoint paths, or the study's runs (the first
    seed of each model; with --all-seeds, every seed)."""
    if args.checkpoint:
        return [(p, None, None) for p in args.checkpoint]
    if not args.study:
        raise UsageError("expected --checkpoint (repeat) or --study FILE")
    from nmt.runs import plan
    from nmt.studyfile import load_study
    study = load_study(args.study)
    planned = plan(study, args.runs or study.runs)
    first = {m.name: min(m.seeds) for m in study.models}
    chosen = [r for r in planned if args.all_seeds or r.seed == first[r.model]]
    missing = [r for r in chosen if r.status != "done"]
    if missing:
        raise DataError(f"{missing[0].dir}: not trained (run the study first: python -m nmt.study run {args.study})")
    return [(r.dir, r.model, r.seed) for r in chosen]


def draw(panels, path, caption: str = ""):
    """One figure of panels as penultimate_points.json holds them: {model, split, points: {token text: [[x, y],
    ...]}, geometry: {mean_radius_over_distance, distance_cv}}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    # One row per split, one column per model; a row shares its axis limits, so cluster sizes compare.
    rows = sorted({p["split"] for p in panels}, key=[p["split"] for p in panels].index)
    cols = sorted({p["model"] for p in panels}, key=[p["model"] for p in panels].index)
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(4.2 * len(cols), 4 * len(rows)), squeeze=False,
                             sharex="row", sharey="row")
    for p in panels:
        ax = axes[rows.index(p["split"])][cols.index(p["model"])]
        for k, (tok, pts) in enumerate(p["points"].items()):
            ax.scatter([q[0] for q in pts], [q[1] for q in pts], s=4, alpha=0.5, color=f"C{k}", label=tok)
        g = p["geometry"]
        ax.set_title(f"{p['model']} ({p['split']})\nradius/distance {g['mean_radius_over_distance']:.3f}, "
                     f"distance CV {g['distance_cv']:.3f}", fontsize=9)
        ax.set_aspect("equal", adjustable="box")
        ax.legend(fontsize=8, markerscale=3)
    fig.suptitle("Penultimate layer projected on the plane of three output templates" + (f"\n{caption}" if caption
                                                                                          else ""), fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m nmt.visualize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", help="checkpoint or run directory (repeat); default: --runs")
    p.add_argument("--study", help="a study file: the first seed of each of its models (--all-seeds: every seed)")
    p.add_argument("--all-seeds", action="store_true", help="with --study: every seed; tables over seeds, verdicts")
    p.add_argument("--runs", help="with --study: where its runs are (default: the study's `runs`)")
    p.add_argument("--tokens", nargs=3, help="three target words/pieces (default: chosen with the first model)")
    p.add_argument("--train-sentences", type=int, default=4000, help="training pairs to collect from")
    p.add_argument("--max-per-token", type=int, default=400)
    p.add_argument("--mi-positions", type=int, default=300, help="N: reference positions for the MI estimate")
    p.add_argument("--mi-passes", type=int, default=20, help="L: stochastic (dropout) passes per position")
    p.add_argument("--mi-repeats", type=int, default=5, help="MI estimates with other dropout seeds: its standard "
                                                             "error over the dropout noise (default: %(default)s)")
    p.add_argument("--results", default="results/representations")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--from-results", metavar="DIR", help=f"with --figures: redraw DIR's figures from DIR/{POINTS_FILE}")
    p.add_argument("--figures", metavar="OUT", help="with --from-results: where the redrawn figures go")
    p.add_argument("--judge", action="store_true", help="with --from-results: judge DIR's claims again from its "
                                                         "per-seed entries; rewrites representations.json / .md")
    args = p.parse_args(argv)
    return cli.run(lambda: redraw(args) if args.from_results or args.figures or args.judge else run(args))


# -- the figures from their file -----------------------------------------------------------------

POINTS_FILE = "penultimate_points.json"
POINTS_FORMAT = 1


def draw_figures(figures: list, out: Path) -> list:
    for f in figures:
        draw(f["panels"], out / f["file"], f["caption"])
    return [out / f["file"] for f in figures]


def load_points(results_dir) -> list:
    """The figures of DIR/penultimate_points.json, every field checked; a DataError naming the file and the
    entry for anything malformed (nothing in it is run or trusted)."""
    path = Path(results_dir) / POINTS_FILE
    try:
        data = read_json(path, f"{POINTS_FILE} of nmt.visualize")
    except UsageError as e:
        raise DataError(str(e)) from None
    if data.get("format") != POINTS_FORMAT or not isinstance(data.get("figures"), list) or not data["figures"]:
        raise DataError(f"{path}: expected format {POINTS_FORMAT} with a list of figures")
    for i, f in enumerate(data["figures"]):
        where = f"{path}: figures[{i}]"
        if not (isinstance(f, dict) and isinstance(f.get("file"), str) and isinstance(f.get("caption"), str)
                and Path(f["file"]).name == f["file"] and f["file"].endswith(".png")
                and isinstance(f.get("panels"), list) and f["panels"]):
            raise DataError(f"{where}: expected file (a .png name, no folder), caption and a list of panels")
        for j, p in enumerate(f["panels"]):
            check_panel(p, f"{where}.panels[{j}]")
    return data["figures"]


def check_panel(p, where: str) -> None:
    number = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool)  # noqa: E731
    if not (isinstance(p, dict) and isinstance(p.get("model"), str) and isinstance(p.get("split"), str)
            and isinstance(p.get("geometry"), dict) and all(number(p["geometry"].get(k)) for k in PANEL_GEOMETRY)
            and isinstance(p.get("points"), dict) and p["points"]):
        raise DataError(f"{where}: expected model, split, geometry ({', '.join(PANEL_GEOMETRY)}) and points")
    for tok, pts in p["points"].items():
        if not (isinstance(pts, list) and all(isinstance(q, list) and len(q) == 2 and all(map(number, q))
                                              for q in pts)):
            raise DataError(f"{where}.points[{tok!r}]: expected a list of [x, y] pairs of numbers")


def rejudge(results_dir) -> str:
    """The claims of DIR/representations.json judged again from its per-model, per-seed entries under the
    current rules (nmt.stats), written back with representations.md; returns the Markdown."""
    path = Path(results_dir) / "representations.json"
    report = read_json(path, "representations.json")
    if not isinstance(report.get("models"), list) or not isinstance(report.get("baseline"), str):
        raise DataError(f"{path}: expected models (a list) and baseline (a model's name)")
    try:
        report.update(summarise(report["models"], report["baseline"]))
    except (KeyError, TypeError, IndexError, ZeroDivisionError) as e:
        raise DataError(f"{path}: models: not the entries nmt.visualize writes ({type(e).__name__}: {e})") from None
    write_json_atomic(report, path)
    text = markdown(report)
    write_text_atomic(Path(results_dir) / "representations.md", text)
    return text


def redraw(args) -> int:
    if args.from_results and args.judge:
        sys.stdout.write(rejudge(args.from_results))
        return 0
    if not (args.from_results and args.figures):
        raise UsageError("--from-results DIR and --figures OUT go together (the figures are redrawn from "
                         f"DIR/{POINTS_FILE} into OUT)")
    figures = load_points(args.from_results)
    out = Path(args.figures)
    out.mkdir(parents=True, exist_ok=True)
    for path in draw_figures(figures, out):
        print(path)
    return 0


def run(args) -> int:
    setup_cpu()
    device = pick_device(args.device)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings(args.train_sentences, args.tokens, args.max_per_token, args.mi_positions, args.mi_passes,
                        args.mi_repeats, args.seed)
    tokens, text, report, panels = None, None, {"models": []}, {}
    for path, name, seed in models_of(args):
        entry, ps, tokens, text = analyse(path, tokens, settings, device)
        entry["study_model"] = name
        report["models"].append(entry)
        panels.setdefault(seed, []).extend(ps)
    report["tokens"] = [text[t] for t in tokens]
    report["tokens_chosen_on"] = report["models"][0]["checkpoint"]
    caption = (f"tokens {', '.join(report['tokens'])}, chosen once on {report['models'][0]['model']} "
               f"seed {report['models'][0]['seed']} and used for every model")
    figures = [{"file": "penultimate.png" if seed in (None, min(panels)) else f"penultimate_seed{seed}.png",
                "caption": caption + ("" if seed is None else f"; seed {seed}"), "panels": ps}
               for seed, ps in panels.items()]
    points = {"format": POINTS_FORMAT, "figures": figures}  # about 10k points: compact JSON
    write_text_atomic(out / POINTS_FILE, json.dumps(points, ensure_ascii=False, separators=(",", ":")) + "\n")
    draw_figures(figures, out)
    if args.all_seeds:
        from nmt.studyfile import load_study
        study = load_study(args.study)
        report.update(summarise(report["models"], study.evaluate.baseline or study.models[0].name))
        write_text_atomic(out / "representations.md", markdown(report))
    write_json_atomic(report, out / "representations.json")
    print_report(report, out)
    return 0


def print_report(report: dict, out: Path) -> None:
    print(f"tokens: {', '.join(report['tokens'])}  (MI over z_{report['tokens'][0]} - z_{report['tokens'][1]})")
    print(f"{'model':28s} {'seed':>4s} {'split':6s} {'radius/dist':>11s} {'dist CV':>8s} {'min/max':>8s}")
    for e in report["models"]:
        for split, g in e["geometry"].items():
            print(f"{e['model']:28s} {str(e['seed']):>4s} {split:6s} {g['mean_radius_over_distance']:11.3f} "
                  f"{g['distance_cv']:8.3f} {g['distance_min_over_max']:8.3f}")
    for e in report["models"]:
        final = e["mutual_information"][0]
        se = f" ± {final['se']:.3f} (dropout)" if final.get("se") is not None else ""
        rest = ", ".join(f"{m['checkpoint']}: {m['mi']:.3f}" for m in e["mutual_information"][1:])
        print(f"{e['model']:28s} seed {e['seed']}: I(X;Y) = {final['mi']:.3f}{se} nats (log N = {final['log_n']:.3f})"
              + (f"; {rest}" if rest else ""))
    for c in report.get("claims", []):
        print(f"{c['claim']}: {c['verdict']} (Holm: {c['verdict_holm']})")
    print(f"figure: {out / 'penultimate.png'}  numbers: {out / 'representations.json'}")


# -- over seeds: tables and verdicts -----------------------------------------------------------

def markdown(report: dict) -> str:
    models = list(dict.fromkeys(s["model"] for s in report["summary"]))
    head = "| quantity | " + " | ".join(models) + " |\n|---|" + "---|" * len(models) + "\n"
    rows = []
    for key, what, _ in QUANTITIES:
        cells = []
        for m in models:
            s = next(x for x in report["summary"] if (x["model"], x["quantity"]) == (m, key))
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f} (n = {s['n']})" if s["std"] is not None
                         else f"{s['mean']:.3f} (n = 1)")
        rows.append(f"| {what} | " + " | ".join(cells) + " |")
    from nmt.report import claim_line
    claims = "\n".join(claim_line(Claim.from_dict(c)) for c in report["claims"])
    return (f"# Representations over seeds\n\nTokens {', '.join(report['tokens'])}, chosen once (the rule of "
            f"`nmt.visualize.choose_tokens`) on `{report['tokens_chosen_on']}` and used for every model; MI over "
            f"z_{report['tokens'][0]} − z_{report['tokens'][1]}, its noise from dropout (not the paper's input "
            f"augmentation). Cells: mean ± std over seeds.\n\n{head}" + "\n".join(rows)
            + f"\n\n## Claims (paired over seeds against `{report['baseline']}`, Holm over these; primary family)"
              f"\n\n{claims}\n")


if __name__ == "__main__":
    sys.exit(main())
