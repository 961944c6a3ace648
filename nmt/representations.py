"""The representation analysis (`python -m nmt.visualize` runs it): what label smoothing does to the penultimate
layer and to the logits.

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
"""
from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from nmt import checkpoint as ckpt_io
from nmt.adhoc import describe
from nmt.config import train_config_from
from nmt.data import read_text_pairs
from nmt.errors import DataError
from nmt.evaluate import eval_batches
from nmt.runtime import seed_everything
from nmt.tokenizer import PAD

log = logging.getLogger("nmt.representations")

PANEL_GEOMETRY = ("mean_radius_over_distance", "distance_cv")  # the geometry a figure's panel carries


@dataclass(frozen=True)
class Settings:
    """How much data the analysis reads and how the mutual information is estimated (the command's flags)."""
    train_sentences: int = 4000  # training sentences read (the MI is estimated on them)
    tokens: Optional[list] = None  # the three token texts, or None: chosen on the first model
    max_per_token: int = 400  # penultimate vectors kept per token and split
    mi_positions: int = 300  # N reference positions
    mi_passes: int = 20  # L stochastic forward passes
    mi_repeats: int = 5  # dropout seeds the final model's MI is repeated with (its standard error)
    seed: int = 1


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


def rounded(points: torch.Tensor) -> list:
    """(n, 2) points as [[x, y], ...] to 5 significant digits (the figure's resolution is far coarser)."""
    return [[float(f"{v:.5g}") for v in q] for q in points.tolist()]


def mutual_information(model, batches, a: int, b: int, args: Settings) -> dict:
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


def analyse(path, tokens, args: Settings, device) -> tuple:
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
