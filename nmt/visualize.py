"""python -m nmt.visualize: what label smoothing does to the representations.

1. Penultimate-layer geometry (Mueller et al. 2019, Sec. 2, Fig. 1; Appendix B does it for a Transformer):
   pick three target tokens (two the model confuses, one far from both, or --tokens), collect the
   decoder's penultimate vectors x (teacher-forced) at positions whose reference is one of them, and
   project them onto an orthonormal basis of the plane through the three tokens' output templates
   w_k (rows of the output projection; this model has no output bias). Label smoothing should draw
   each token's vectors into a tight cluster, the three equally far apart. Numbers: per cluster, its RMS
   radius against the mean distance between cluster centres, and the spread of those three distances.
2. Mutual information between the input and a logit difference (their Sec. 4): for tokens a, b and N
   reference positions x, y = z_a - z_b under L stochastic forward passes (dropout on: the noise, where
   the paper used data augmentation). With p(y | x) = Normal(mu_x, sigma^2), mu_x the mean over the L
   passes and sigma^2 pooled over all N L values,
       I(X; Y) ~= 1/(N L) sum_{x, l} [ log p(y_xl | x) - log( 1/N sum_x' p(y_xl | x') ) ],
   which lies in [0, log N] (the paper prints the sum without the 1/N and the average). Label smoothing
   should leave less information about the input in the logits, the reason it distils worse.

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
import math
import sys
from collections import Counter
from pathlib import Path

import torch

from nmt import checkpoint as ckpt_io
from nmt import cli
from nmt.adhoc import describe
from nmt.config import UsageError, train_config_from
from nmt.data import DataError, read_text_pairs
from nmt.evaluate import eval_batches
from nmt.files import read_json, save_figure, write_json_atomic, write_text_atomic
from nmt.model import PAD
from nmt.runtime import pick_device, seed_everything, setup_cpu

log = logging.getLogger("nmt.visualize")


# -- choosing tokens ---------------------------------------------------------------------------

def word_like(sp, i: int) -> bool:
    piece = sp.id_to_piece(i)
    return piece.startswith("▁") and len(piece) > 2 and piece[1:].isalpha()


@torch.no_grad()
def choose_tokens(model, sp, batches, min_count: int = 30, top: int = 300) -> list:
    """Two frequent word tokens the model confuses most with each other (teacher-forced top-1 errors,
    as a symmetric rate), and a third frequent word never confused with either whose output template is
    farthest from both."""
    counts, confusion = Counter(), Counter()
    for src, tgt_in, tgt_out in batches:
        keep = tgt_out != PAD
        y, pred = tgt_out[keep], model(src, tgt_in, keep=keep).argmax(-1)
        counts.update(y.tolist())
        confusion.update(zip(y.tolist(), pred.tolist()))
    frequent = [t for t, n in counts.most_common(top) if n >= min_count and word_like(sp, t)]
    if len(frequent) < 3:
        raise DataError("too few frequent word tokens to choose from: pass --tokens")
    rate = lambda a, b: confusion[a, b] / counts[a] + confusion[b, a] / counts[b]  # noqa: E731
    a, b = max(((a, b) for i, a in enumerate(frequent) for b in frequent[i + 1:]), key=lambda p: rate(*p))
    W = model.embed.weight
    others = [c for c in frequent if c not in (a, b) and rate(a, c) == 0 and rate(b, c) == 0] or \
        [c for c in frequent if c not in (a, b)]
    c = max(others, key=lambda c: min((W[c] - W[a]).norm().item(), (W[c] - W[b]).norm().item()))
    return [a, b, c]


def token_ids(sp, words) -> list:
    ids = []
    for w in words:
        for piece in (w, "▁" + w):
            i = sp.piece_to_id(piece)
            if i not in (sp.unk_id(), PAD) and sp.id_to_piece(i) == piece:
                ids.append(i)
                break
        else:
            raise DataError(f"--tokens: {w!r} is not a single piece of this model's vocabulary")
    return ids


# -- geometry ----------------------------------------------------------------------------------

@torch.no_grad()
def penultimate_by_token(model, batches, tokens, max_per_token: int) -> dict:
    """{token: (n, D) decoder outputs before the output projection, at positions whose reference is token}."""
    model.eval()
    out = {t: [] for t in tokens}
    for src, tgt_in, tgt_out in batches:
        hidden = model.decode(tgt_in, *model.encode(src))  # (B, T, D)
        for t in tokens:
            if sum(len(x) for x in out[t]) < max_per_token:
                out[t].append(hidden[tgt_out == t])  # (n, D)
    return {t: torch.cat(v)[:max_per_token] if v else torch.zeros(0, model.cfg.d_model) for t, v in out.items()}


def plane_basis(templates: torch.Tensor):
    """Orthonormal basis (D, 2) of the plane through the three templates (3, D), and its origin (their mean)."""
    q, _ = torch.linalg.qr(torch.stack([templates[1] - templates[0], templates[2] - templates[0]], dim=1))
    return q, templates.mean(0)


def geometry(points: dict) -> dict:
    """Per cluster (2-D points): centre and RMS radius; the three centre distances; radius / mean distance;
    and how unequal the distances are (coefficient of variation, min / max)."""
    toks = list(points)
    centres = {t: p.mean(0) for t, p in points.items()}
    radius = {t: ((p - centres[t]) ** 2).sum(1).mean().sqrt().item() for t, p in points.items()}
    dist = [(centres[toks[i]] - centres[toks[j]]).norm().item() for i, j in ((0, 1), (0, 2), (1, 2))]
    mean_d = sum(dist) / 3
    std_d = math.sqrt(sum((d - mean_d) ** 2 for d in dist) / 3)
    return {"radius": radius, "centre_distances": dist,
            "radius_over_distance": {t: r / mean_d for t, r in radius.items()},
            "mean_radius_over_distance": sum(radius.values()) / 3 / mean_d, "distance_cv": std_d / mean_d,
            "distance_min_over_max": min(dist) / max(dist), "counts": {t: len(p) for t, p in points.items()}}


# -- mutual information ------------------------------------------------------------------------

def gaussian_mutual_information(y: torch.Tensor) -> float:
    """y (N, L): L noisy values of the logit difference at each of N inputs -> the estimate of I(X; Y) in
    nats (module docstring, part 2), between 0 and log N."""
    N, _ = y.shape
    y = y.double()
    mu = y.mean(1)  # (N,)
    var = ((y - mu[:, None]) ** 2).mean().clamp(min=1e-12)  # pooled sigma^2
    logp = -(y[:, :, None] - mu[None, None, :]) ** 2 / (2 * var)  # (N, L, N'): log p(y_xl | x') + const
    own = logp.diagonal(dim1=0, dim2=2).T  # (N, L): x' = x
    return (own - torch.logsumexp(logp, dim=2) + math.log(N)).mean().item()


@torch.no_grad()
def logit_differences(model, batches, a: int, b: int, n_positions: int, passes: int, seed: int = 1):
    """(N, L) values of z_a - z_b at the first N positions whose reference is a or b, dropout on."""
    chosen = []
    for src, tgt_in, tgt_out in batches:
        sel = (tgt_out == a) | (tgt_out == b)
        if sel.any():
            chosen.append((src, tgt_in, sel))
        if sum(int(s.sum()) for *_, s in chosen) >= n_positions:
            break
    seed_everything(seed)
    model.train()  # dropout as the noise
    samples = []
    for _ in range(passes):
        vals = torch.cat([model(src, tgt_in, keep=sel)[:, [a, b]] for src, tgt_in, sel in chosen])  # (N, 2)
        samples.append((vals[:, 0] - vals[:, 1])[:n_positions])
    model.eval()
    return torch.stack(samples, dim=1)  # (N, L)


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
PANEL_GEOMETRY = ("mean_radius_over_distance", "distance_cv")


def rounded(points: torch.Tensor) -> list:
    """(n, 2) points as [[x, y], ...] to 5 significant digits (the figure's resolution is far coarser)."""
    return [[float(f"{v:.5g}") for v in q] for q in points.tolist()]


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


def mutual_information(model, batches, a: int, b: int, args) -> dict:
    """MI of z_a - z_b repeated with --mi-repeats dropout seeds: mean, standard error over the repeats, values."""
    values, n = [], 0
    for r in range(max(1, args.mi_repeats)):
        y = logit_differences(model, batches, a, b, args.mi_positions, args.mi_passes, args.seed + 1000 * r)
        values.append(gaussian_mutual_information(y))
        n = y.size(0)
    k = len(values)
    mean = sum(values) / k
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1) / k) if k > 1 else None
    return {"mi": mean, "se": se, "values": values, "n": n, "passes": args.mi_passes, "log_n": math.log(max(n, 1))}


def analyse(path, tokens, args, device) -> tuple:
    """(entry of representations.json, figure panels, tokens) for one checkpoint; `tokens` None: chosen here."""
    model, ckpt, sp = ckpt_io.load_model(path, device)
    tcfg = train_config_from(ckpt["train_config"])
    label = describe(ckpt["train_config"])[1]
    val_src, val_ref = read_text_pairs(tcfg, "val")
    tr_src, tr_ref = read_text_pairs(tcfg, "train")
    data = {"train": (tr_src[:args.train_sentences], tr_ref[:args.train_sentences]), "val": (val_src, val_ref)}
    batches = {k: list(eval_batches(sp, s, r, model.cfg.max_positions, device)) for k, (s, r) in data.items()}
    if tokens is None:
        tokens = token_ids(sp, args.tokens) if args.tokens else choose_tokens(model, sp, batches["val"])
    text = {t: sp.id_to_piece(t).lstrip("▁") for t in tokens}
    W = model.embed.weight.detach()
    basis, origin = plane_basis(W[tokens])
    entry = {"model": label, "checkpoint": ckpt["path"], "alpha": tcfg.alpha, "seed": tcfg.seed, "geometry": {}}
    panels = []
    for split, bs in batches.items():
        vecs = penultimate_by_token(model, bs, tokens, args.max_per_token)
        pts = {t: ((v - origin) @ basis).cpu() for t, v in vecs.items()}  # (n, D) -> (n, 2)
        if any(len(v) < 2 for v in pts.values()):
            raise DataError(f"{split}: fewer than 2 positions for a chosen token; pick others with --tokens")
        g = geometry(pts)
        entry["geometry"][split] = {**g, "radius": {text[t]: r for t, r in g["radius"].items()},
                                    "radius_over_distance": {text[t]: r for t, r in g["radius_over_distance"].items()},
                                    "counts": {text[t]: n for t, n in g["counts"].items()}}
        panels.append({"model": label, "split": split, "points": {text[t]: rounded(p) for t, p in pts.items()},
                       "geometry": {k: g[k] for k in PANEL_GEOMETRY}})
    # Mutual information of the two confusable tokens' logit difference: the final model (with its standard
    # error over dropout seeds), and one estimate for each kept epoch.
    a, b = tokens[0], tokens[1]
    entry["mutual_information"] = [{"checkpoint": Path(ckpt["path"]).name,
                                    **mutual_information(model, batches["train"], a, b, args)}]
    epochs = sorted(Path(ckpt["path"]).parent.glob("checkpoint_epoch*.pt"),
                    key=lambda q: int(q.stem.replace("checkpoint_epoch", "")))
    for cpath in epochs:
        y = logit_differences(ckpt_io.load_model(cpath, device)[0], batches["train"], a, b, args.mi_positions,
                              args.mi_passes, args.seed)
        entry["mutual_information"].append({"checkpoint": cpath.name, "mi": gaussian_mutual_information(y),
                                            "n": y.size(0), "passes": y.size(1), "log_n": math.log(y.size(0))})
    log.info("%s seed %s: I(X; z_%s - z_%s) = %.3f nats", label, tcfg.seed, text[a], text[b],
             entry["mutual_information"][0]["mi"])
    return entry, panels, tokens, text


def run(args) -> int:
    setup_cpu()
    device = pick_device(args.device)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    tokens, text, report, panels = None, None, {"models": []}, {}
    for path, name, seed in models_of(args):
        entry, ps, tokens, text = analyse(path, tokens, args, device)
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

# (key, what, its value in an entry); the paper predicts each lower with label smoothing.
QUANTITIES = [("radius_val", "cluster radius / centre distance (val)",
               lambda e: e["geometry"]["val"]["mean_radius_over_distance"]),
              ("cv_val", "CV of the centre distances (val)", lambda e: e["geometry"]["val"]["distance_cv"]),
              ("radius_train", "cluster radius / centre distance (train)",
               lambda e: e["geometry"]["train"]["mean_radius_over_distance"]),
              ("cv_train", "CV of the centre distances (train)", lambda e: e["geometry"]["train"]["distance_cv"]),
              ("mi", "I(X; z_a - z_b), nats", lambda e: e["mutual_information"][0]["mi"])]
CLAIMED = ("radius_val", "cv_val", "mi")  # the claims judged (Holm over them); the train split is reported


def summarise(entries: list, base: str) -> dict:
    """{"summary": per study model and quantity mean, std, n over seeds; "claims": each quantity of each model
    lower than the baseline model `base`'s (the paper's predictions), paired over seeds, Holm-adjusted (nmt.stats)}."""
    from nmt.stats import adjust, judge
    per = {}
    for e in entries:
        for key, _, get in QUANTITIES:
            per.setdefault(e["study_model"], {}).setdefault(key, {})[e["seed"]] = get(e)
    summary = []
    for model, qs in per.items():
        for key, what, _ in QUANTITIES:
            v = list(qs[key].values())
            m = sum(v) / len(v)
            sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
            summary.append({"model": model, "quantity": key, "what": what, "mean": m, "std": sd, "n": len(v)})
    claims = [judge(f"{what}: {m} < {base}", key, {"model": m}, {"model": base}, "less", per[m][key], per[base][key],
                    source="paper", test_set="train" if key == "mi" else "val")
              for m in per if m != base for key, what, _ in QUANTITIES if key in CLAIMED]
    return {"summary": summary, "claims": [c.to_dict() for c in adjust(claims)], "baseline": base}


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
    claims = "\n".join(claim_line(c) for c in report["claims"])
    return (f"# Representations over seeds\n\nTokens {', '.join(report['tokens'])}, chosen once (the rule of "
            f"`nmt.visualize.choose_tokens`) on `{report['tokens_chosen_on']}` and used for every model; MI over "
            f"z_{report['tokens'][0]} − z_{report['tokens'][1]}, its noise from dropout (not the paper's input "
            f"augmentation). Cells: mean ± std over seeds.\n\n{head}" + "\n".join(rows)
            + f"\n\n## Claims (paired over seeds against `{report['baseline']}`, Holm over these; primary family)"
              f"\n\n{claims}\n")


if __name__ == "__main__":
    sys.exit(main())
