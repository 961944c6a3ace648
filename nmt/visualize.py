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
  python -m nmt.visualize --checkpoint A --checkpoint B --tokens Hund Katze Straße
"""
from __future__ import annotations

import argparse
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
from nmt.model import PAD
from nmt.files import write_json_atomic
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
    return {"radius": radius, "centre_distances": dist, "radius_over_distance": {t: r / mean_d for t, r in radius.items()},
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
    if args.checkpoint:
        return list(args.checkpoint)
    if not args.study:
        raise UsageError("expected --checkpoint (repeat) or --study FILE")
    from nmt.runs import plan
    from nmt.studyfile import load_study
    study = load_study(args.study)
    planned = plan(study, args.runs or study.runs)
    first = {m.name: min(m.seeds) for m in study.models}
    chosen = [r for r in planned if r.seed == first[r.model]]
    missing = [r for r in chosen if r.status != "done"]
    if missing:
        raise DataError(f"{missing[0].dir}: not trained (run the study first: python -m nmt.study run {args.study})")
    return [r.dir for r in chosen]


def draw(panels, tokens_text, path):
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
            ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.5, color=f"C{k}", label=tokens_text[tok])
        g = p["geometry"]
        ax.set_title(f"{p['model']} ({p['split']})\nradius/distance {g['mean_radius_over_distance']:.3f}, "
                     f"distance CV {g['distance_cv']:.3f}", fontsize=9)
        ax.set_aspect("equal", adjustable="box")
        ax.legend(fontsize=8, markerscale=3)
    fig.suptitle("Penultimate layer projected on the plane of three output templates", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m nmt.visualize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", help="checkpoint or run directory (repeat); default: --runs")
    p.add_argument("--study", help="a study file: the first seed of each of its models")
    p.add_argument("--runs", help="with --study: where its runs are (default: the study's `runs`)")
    p.add_argument("--tokens", nargs=3, help="three target words/pieces (default: chosen with the first model)")
    p.add_argument("--train-sentences", type=int, default=4000, help="training pairs to collect from")
    p.add_argument("--max-per-token", type=int, default=400)
    p.add_argument("--mi-positions", type=int, default=300, help="N: reference positions for the MI estimate")
    p.add_argument("--mi-passes", type=int, default=20, help="L: stochastic (dropout) passes per position")
    p.add_argument("--results", default="results/representations")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=1)
    return cli.run(lambda: run(p.parse_args(argv)))


def run(args) -> int:
    setup_cpu()
    device = pick_device(args.device)
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    paths = models_of(args)
    tokens = None
    panels, report = [], {"models": []}
    for path in paths:
        model, ckpt, sp = ckpt_io.load_model(path, device)
        tcfg = train_config_from(ckpt["train_config"])
        label = describe(ckpt["train_config"])[1]
        val_src, val_ref = read_text_pairs(tcfg, "val")
        tr_src, tr_ref = read_text_pairs(tcfg, "train")
        data = {"train": (tr_src[:args.train_sentences], tr_ref[:args.train_sentences]), "val": (val_src, val_ref)}
        batches = {k: list(eval_batches(sp, s, r, model.cfg.max_positions, device)) for k, (s, r) in data.items()}
        if tokens is None:
            tokens = token_ids(sp, args.tokens) if args.tokens else choose_tokens(model, sp, batches["val"])
            tokens_text = {t: sp.id_to_piece(t).lstrip("▁") for t in tokens}
            log.info("tokens: %s", ", ".join(tokens_text[t] for t in tokens))
        W = model.embed.weight.detach()
        basis, origin = plane_basis(W[tokens])
        entry = {"model": label, "checkpoint": ckpt["path"], "alpha": tcfg.alpha, "geometry": {}}
        for split, bs in batches.items():
            vecs = penultimate_by_token(model, bs, tokens, args.max_per_token)
            pts = {t: ((v - origin) @ basis).cpu() for t, v in vecs.items()}  # (n, D) -> (n, 2)
            if any(len(v) < 2 for v in pts.values()):
                raise DataError(f"{split}: fewer than 2 positions for a chosen token; pick others with --tokens")
            g = geometry(pts)
            entry["geometry"][split] = {**g, "radius": {tokens_text[t]: r for t, r in g["radius"].items()},
                                        "radius_over_distance": {tokens_text[t]: r for t, r in
                                                                 g["radius_over_distance"].items()},
                                        "counts": {tokens_text[t]: n for t, n in g["counts"].items()}}
            panels.append({"model": label, "split": split, "points": pts, "geometry": g})
        # Mutual information of the two confusable tokens' logit difference, for this and its kept epochs.
        a, b = tokens[0], tokens[1]
        entry["mutual_information"] = []
        run_dir = Path(ckpt["path"]).parent
        for cpath in [Path(ckpt["path"])] + sorted(run_dir.glob("checkpoint_epoch*.pt"),
                                                    key=lambda q: int(q.stem.replace("checkpoint_epoch", ""))):
            m = model if cpath == Path(ckpt["path"]) else ckpt_io.load_model(cpath, device)[0]
            y = logit_differences(m, batches["train"], a, b, args.mi_positions, args.mi_passes, args.seed)
            mi = gaussian_mutual_information(y)
            entry["mutual_information"].append({"checkpoint": cpath.name, "mi": mi, "n": y.size(0), "passes": y.size(1),
                                                "log_n": math.log(y.size(0))})
            log.info("%s %s: I(X; z_%s - z_%s) = %.3f nats (log N = %.3f)", label, cpath.name, tokens_text[a],
                     tokens_text[b], mi, math.log(y.size(0)))
        report["models"].append(entry)
    report["tokens"] = [tokens_text[t] for t in tokens]
    draw(panels, tokens_text, out / "penultimate.png")
    write_json_atomic(report, out / "representations.json")
    print(f"tokens: {', '.join(report['tokens'])}  (MI over z_{report['tokens'][0]} - z_{report['tokens'][1]})")
    print(f"{'model':28s} {'split':6s} {'radius/dist':>11s} {'dist CV':>8s} {'min/max':>8s}")
    for e in report["models"]:
        for split, g in e["geometry"].items():
            print(f"{e['model']:28s} {split:6s} {g['mean_radius_over_distance']:11.3f} {g['distance_cv']:8.3f} "
                  f"{g['distance_min_over_max']:8.3f}")
    for e in report["models"]:
        mis = ", ".join(f"{m['checkpoint']}: {m['mi']:.3f}" for m in e["mutual_information"])
        print(f"{e['model']:28s} I(X;Y) nats (log N = {e['mutual_information'][0]['log_n']:.3f}): {mis}")
    print(f"figure: {out / 'penultimate.png'}  numbers: {out / 'representations.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
