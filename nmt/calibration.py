"""Calibration: expected / maximum calibration error, reliability bins, teacher-forced and inference
token-level evaluation, and temperature scaling.

- ECE (Guo et al. 2017, "On Calibration of Modern Neural Networks", Eq. 3; Naeini et al. 2015):
  M equal-width bins I_m = ((m-1)/M, m/M] over the top-1 confidence;
  ECE = sum_m (|B_m| / N) * |acc(B_m) - conf(B_m)|,  MCE = max_m |acc(B_m) - conf(B_m)| (non-empty bins).
- Teacher-forced ECE (Mueller et al. 2019, Sec. 3, Table 3): at every non-padding reference position,
  the top-1 probability of the next token given the reference prefix, correct when that token is the
  reference token. End-of-sentence positions are also reported on their own (Kumar & Sarawagi 2019).
- Inference ECE (Wang et al. 2020, "On the Inference Calibration of NMT"): the probability of each
  token the search emitted, correct when an alignment of the hypothesis to the reference matches it to an
  identical reference token: TER's alignment after block shifts (their released code uses tercom; here
  sacrebleu's TER), or a minimum-edit-distance alignment with ties broken towards matches. The unit is the
  SentencePiece piece; EOS positions can be excluded, as their scripts do.
- Intervals: 95% bootstrap intervals over sentences (whole sentences resampled, fixed seed), from
  per-sentence statistics (bins x 3 numbers a sentence, never N x V).
- Temperature scaling (Guo et al. 2017, Sec. 4.2): one T > 0 per model, fitted on validation
  references by minimising the teacher-forced NLL of softmax(z / T).

All statistics stream batch by batch: memory holds M bins, never N x V.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from nmt.loss import label_smoothed_nll_loss
from nmt.tokenizer import EOS, PAD


def bin_index(confidences: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin m (0-based) holds confidences in (m/M, (m+1)/M]; a confidence of exactly 0 goes to bin 0."""
    inner_edges = torch.arange(1, n_bins, dtype=torch.float64) / n_bins  # 1/M .. (M-1)/M
    return torch.bucketize(confidences, inner_edges, right=False)


class CalibrationStats:
    """Streaming reliability statistics: per bin, the count, the sum of confidences, the sum of correct."""

    def __init__(self, n_bins: int = 15):
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = n_bins
        self.count = torch.zeros(n_bins, dtype=torch.float64)
        self.conf_sum = torch.zeros(n_bins, dtype=torch.float64)
        self.correct_sum = torch.zeros(n_bins, dtype=torch.float64)

    def update(self, confidences, correct) -> "CalibrationStats":
        conf = torch.as_tensor(confidences, dtype=torch.float64, device="cpu").detach().flatten()
        corr = torch.as_tensor(correct, dtype=torch.float64, device="cpu").detach().flatten()
        if conf.shape != corr.shape:
            raise ValueError(f"{conf.numel()} confidences but {corr.numel()} correctness values")
        if conf.numel() and (conf.min() < 0 or conf.max() > 1 or torch.isnan(conf).any()):
            raise ValueError("confidences must lie in [0, 1]")
        if corr.numel() and not ((corr == 0) | (corr == 1)).all():
            raise ValueError("correct must be boolean or 0/1")
        idx = bin_index(conf, self.n_bins)
        self.count.index_add_(0, idx, torch.ones_like(conf))
        self.conf_sum.index_add_(0, idx, conf)
        self.correct_sum.index_add_(0, idx, corr)
        return self

    def merge(self, other: "CalibrationStats") -> "CalibrationStats":
        for name in ("count", "conf_sum", "correct_sum"):
            getattr(self, name).add_(getattr(other, name))
        return self

    def result(self) -> dict:
        n = self.count.sum().item()
        nonempty = self.count > 0
        acc = torch.where(nonempty, self.correct_sum / self.count.clamp(min=1), torch.zeros(()))
        conf = torch.where(nonempty, self.conf_sum / self.count.clamp(min=1), torch.zeros(()))
        gap = (acc - conf).abs()
        return {
            "n": int(n),
            "ece": (self.count * gap).sum().item() / n if n else float("nan"),
            "mce": gap[nonempty].max().item() if n else float("nan"),
            "accuracy": self.correct_sum.sum().item() / n if n else float("nan"),
            "confidence": self.conf_sum.sum().item() / n if n else float("nan"),
            "bins": [{"lo": m / self.n_bins, "hi": (m + 1) / self.n_bins, "count": int(self.count[m]),
                      "accuracy": acc[m].item(), "confidence": conf[m].item()} for m in range(self.n_bins)],
        }


def expected_calibration_error(confidences, correct, n_bins: int = 15) -> float:
    """ECE = sum_m (n_m / N) |acc(m) - conf(m)| over equal-width bins of [0, 1] (Guo et al. 2017, Eq. 3)."""
    return CalibrationStats(n_bins).update(confidences, correct).result()["ece"]


@dataclass(frozen=True)
class ECESignature:
    """How an ECE was computed, in the style of sacrebleu's Signature:
    ECE|bins:15|binning:uniform|level:token|forced|T:1.0|version:nmt-0.2.0. `str()` gives it with the
    temperature; `without_temperature()` with a placeholder, for a table whose rows have their own T."""
    n_bins: int
    mode: str  # "forced" or "inference"
    temperature: float
    subset: str = ""  # e.g. "eos": only end-of-sentence positions
    labeller: str = ""  # inference: "ter", "ter-wang" or "edit"
    unit: str = ""  # inference: "piece"
    eos: str = ""  # inference: "include" or "exclude"
    # "" the plug-in estimate; e.g. "debiased:kumar2019-normal", "floor:calibrated-poisson-binomial"
    estimator: str = ""
    search: str = ""  # inference: "" (float32) or "bf16", the search's precision

    def fields(self, temperature: str) -> list:
        from nmt import __version__
        extra = [f"labeller:{self.labeller}", f"unit:{self.unit}", f"eos:{self.eos}"] if self.mode == "inference" \
            else []
        extra += [f"search:{self.search}"] if self.search else []
        return (["ECE", f"bins:{self.n_bins}", "binning:uniform", "level:token", self.mode] + extra
                + [f"T:{temperature}"] + ([f"tokens:{self.subset}"] if self.subset else [])
                + ([f"estimator:{self.estimator}"] if self.estimator else []) + [f"version:nmt-{__version__}"])

    def __str__(self) -> str:
        return "|".join(self.fields(str(round(self.temperature, 4))))

    def without_temperature(self) -> str:
        return "|".join(self.fields("<row's T>"))


# -- teacher-forced evaluation ---------------------------------------------------------------------

@torch.no_grad()
def teacher_forced(model, batches, temperature: float = 1.0, alpha: float = 0.0, n_bins: int = 15,
                   per_sentence: bool = False) -> ForcedMetrics:
    """Teacher-forced metrics over `batches` of (src, tgt_in, tgt_out) at temperature T (`teacher_forced_at`
    with one temperature)."""
    return teacher_forced_at(model, batches, [temperature], alpha, n_bins, per_sentence)[temperature]


@torch.no_grad()
def teacher_forced_at(model, batches, temperatures, alpha: float = 0.0, n_bins: int = 15,
                      per_sentence: bool = False) -> dict:
    """{T: ForcedMetrics} for every temperature, from one forward pass per batch (the logits do not depend on T;
    each T takes log_softmax(z / T) of them). `per_sentence`: True, or the temperatures whose per-sentence
    statistics and per-token arrays are kept (`ForcedMetrics`)."""
    per_sentence = set(temperatures) if per_sentence is True else set(per_sentence or ())
    was_training = model.training
    model.eval()
    acc = {t: {"every": CalibrationStats(n_bins), "eos": CalibrationStats(n_bins), "noeos": CalibrationStats(n_bins),
               "loss": 0.0, "nll": 0.0, "correct": 0, "rows": [], "conf": [], "hit": [], "at_eos": [], "entropy": 0.0}
           for t in temperatures}
    n_tok = 0
    for src, tgt_in, tgt_out in batches:
        keep = tgt_out != PAD  # (B, T)
        y = tgt_out[keep]  # (N,)
        at_eos = y == EOS
        logits = model(src, tgt_in, keep=keep).float()  # (N, V)
        n_tok += y.numel()
        for t, a in acc.items():
            lprobs = F.log_softmax(logits / t, dim=-1)  # (N, V)
            loss, nll = label_smoothed_nll_loss(lprobs, y, alpha, PAD)
            top_lp, pred = lprobs.max(dim=-1)
            conf, correct = top_lp.exp(), pred == y
            a["every"].update(conf, correct)
            a["eos"].update(conf[at_eos], correct[at_eos])
            a["noeos"].update(conf[~at_eos], correct[~at_eos])
            a["loss"], a["nll"], a["correct"] = a["loss"] + loss.item(), a["nll"] + nll.item(), a["correct"] + int(
                correct.sum())
            if t in per_sentence:
                sent = keep.nonzero()[:, 0]  # (N,): the batch row of each kept position
                token_nll = -lprobs.gather(1, y[:, None]).squeeze(1)
                a["rows"].append(sentence_rows(sent, keep.size(0), token_nll, conf, correct, n_bins))
                a["conf"].append(conf.cpu())
                a["hit"].append(correct.cpu())
                a["at_eos"].append(at_eos.cpu())
                a["entropy"] += -(lprobs.exp() * lprobs).nan_to_num(0.0).sum().item()  # sum_i H(p_i); 0 log 0 = 0
    model.train(was_training)
    return {t: forced_result(t, a, n_tok, n_bins, t in per_sentence) for t, a in acc.items()}


@dataclass
class ForcedMetrics:
    """Teacher-forced metrics of one model at one temperature T (`teacher_forced_at`), per target token: the
    smoothed loss (the training objective at its alpha), NLL, top-1 accuracy, and the calibration of the top-1
    confidence, of every token and of the EOS positions alone ("ece_noeos" leaves them out, where smoothing is
    calibrated least). `calibration` / `calibration_eos` are the reliability tables ({"ece", "mce", "accuracy",
    "confidence", "n", "bins": [...]}) the diagrams are drawn from.

    With per-sentence statistics asked for: `per_sentence` ({"nll": (n,), "tokens": (n,), "bins": (n, M, 3)}
    numpy arrays, one row per sentence in batch order) for `bootstrap_interval`, `confidences` (N,) float32 (for
    `ece_floor`), `correct` and `eos` (N,) bools (the per-token evidence, in batch order), `smooth_ece` and
    `entropy`, the mean entropy of the predictions in nats. `nmt.evaluate` adds `intervals` (95% bootstrap
    intervals of "nll" and "ece" over sentences) and `evidence` (corpus order), and drops the arrays it used."""
    temperature: float
    tokens: int
    loss: float
    nll: float
    ppl: float
    accuracy: float
    ece: float
    mce: float
    confidence: float
    ece_eos: float
    ece_noeos: float
    calibration: dict
    calibration_eos: dict
    signature: str
    signature_template: str
    signature_eos: str
    smooth_ece: Optional[float] = None
    entropy: Optional[float] = None
    intervals: Optional[dict] = None
    per_sentence: Optional[dict] = None
    confidences: Optional[np.ndarray] = None
    correct: Optional[np.ndarray] = None
    eos: Optional[np.ndarray] = None
    evidence: Optional[tuple] = None

    def to_json(self) -> dict:
        """The numbers and tables a metrics file holds (no per-token arrays; absent values left out)."""
        return _json_fields(self, skip=("per_sentence", "confidences", "correct", "eos", "evidence"))


@dataclass
class InferenceMetrics:
    """Inference calibration of emitted tokens against their correctness labels (`inference_calibration`);
    `ece_interval` a 95% bootstrap interval over sentences; `nmt.experiment` adds the debiased estimate, the
    calibrated floor and the labels it used."""
    ece: float
    mce: float
    accuracy: float
    confidence: float
    tokens: int
    calibration: dict
    signature: str
    signature_template: str
    ece_interval: Optional[list] = None
    debiased: Optional[float] = None
    floor: Optional[float] = None
    labels: Optional[list] = None

    def to_json(self) -> dict:
        """The numbers and tables a metrics file holds (not the labels; absent values left out)."""
        return _json_fields(self, skip=("labels",))


def _json_fields(obj, skip) -> dict:
    """A metrics dataclass's fields but `skip`, those that are not None."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
            if f.name not in skip and getattr(obj, f.name) is not None}


def forced_result(t: float, a: dict, n_tok: int, n_bins: int, per_sentence: bool) -> ForcedMetrics:
    """One temperature's metrics from `teacher_forced_at`'s accumulators."""
    cal, cal_eos, cal_noeos = a["every"].result(), a["eos"].result(), a["noeos"].result()
    sig = ECESignature(n_bins, "forced", t)
    out = ForcedMetrics(temperature=t, tokens=n_tok, loss=a["loss"] / n_tok, nll=a["nll"] / n_tok,
                        ppl=math.exp(a["nll"] / n_tok), accuracy=a["correct"] / n_tok, ece=cal["ece"], mce=cal["mce"],
                        confidence=cal["confidence"], ece_eos=cal_eos["ece"], ece_noeos=cal_noeos["ece"],
                        calibration=cal, calibration_eos=cal_eos, signature=str(sig),
                        signature_template=sig.without_temperature(),
                        signature_eos=str(ECESignature(n_bins, "forced", t, subset="eos")))
    if per_sentence:
        out.per_sentence = {k: np.concatenate([r[k] for r in a["rows"]]) for k in ("nll", "tokens", "bins")}
        cat = (lambda xs, dtype: torch.cat(xs).numpy() if xs else np.zeros(0, dtype))  # noqa: E731
        out.confidences = cat(a["conf"], np.float32)  # (N,) float32, as the model gave them
        out.correct, out.eos = cat(a["hit"], bool), cat(a["at_eos"], bool)
        out.smooth_ece = smooth_ece(out.confidences, out.correct)
        out.entropy = a["entropy"] / n_tok
    return out


def smooth_ece(confidences, correct) -> float:
    """Smooth ECE (Blasiok & Nakkiran 2023): the calibration error after kernel smoothing, its bandwidth chosen
    by the data, so that no binning choice moves it; computed by their library, relplot (`relplot.smECE`).
    NaN for no tokens."""
    import relplot
    conf = np.asarray(confidences, dtype=np.float64)
    if conf.size == 0:
        return float("nan")
    return float(relplot.smECE(conf, np.asarray(correct, dtype=np.float64)))


def relplot_version() -> str:
    from importlib.metadata import version
    return version("relplot")


def sentence_rows(sent, n_sent: int, token_nll, conf, correct, n_bins: int) -> dict:
    """Per-sentence sums of a batch: sent (N,) the sentence of each token -> {"nll": (n,), "tokens": (n,),
    "bins": (n, M, 3) count / confidence sum / correct sum per bin}."""
    idx = sent * n_bins + bin_index(conf.double().cpu(), n_bins).to(sent.device)  # (N,): sentence-major bin
    bins = torch.zeros(n_sent * n_bins, 3, dtype=torch.float64)
    vals = torch.stack([torch.ones_like(conf, dtype=torch.float64), conf.double(), correct.double()], 1).cpu()
    bins.index_add_(0, idx.cpu(), vals)
    nll = torch.zeros(n_sent, dtype=torch.float64).index_add_(0, sent.cpu(), token_nll.double().cpu())
    tokens = torch.bincount(sent.cpu(), minlength=n_sent)
    return {"nll": nll.numpy(), "tokens": tokens.numpy(), "bins": bins.view(n_sent, n_bins, 3).numpy()}


def ece_of_bins(bins: np.ndarray) -> np.ndarray:
    """bins (..., M, 3) summed count / confidence / correct -> ECE (...): sum_m |correct_m - conf_m| / N."""
    return np.abs(bins[..., 2] - bins[..., 1]).sum(-1) / np.maximum(bins[..., 0].sum(-1), 1)


def debiased_ece(count, conf_sum, correct_sum) -> float:
    """Kumar, Liang & Ma 2019 ("Verified Uncertainty Calibration", Sec. 5)'s debiased estimate of the
    binned ECE, with their normal approximation and the expectation in closed form instead of resampled:

        ECE_db = 2 ECE - sum_m (n_m / N) E|Z_m|,   Z_m ~ Normal(acc_m - conf_m, acc_m (1 - acc_m) / n_m),
        E|Z| = sigma sqrt(2 / pi) exp(-mu^2 / (2 sigma^2)) + mu (1 - 2 Phi(-mu / sigma))   (|mu| when sigma = 0).

    The plug-in ECE overstates the calibration error by about the sampling noise of each bin's accuracy;
    this subtracts that noise's expected contribution (it can go below 0 for a well-calibrated model)."""
    from scipy.stats import norm
    n_m = np.asarray(count, dtype=np.float64)
    keep = n_m > 0
    n_m = n_m[keep]
    acc = np.asarray(correct_sum, dtype=np.float64)[keep] / n_m
    mu = acc - np.asarray(conf_sum, dtype=np.float64)[keep] / n_m
    sigma = np.sqrt(acc * (1 - acc) / n_m)
    with np.errstate(divide="ignore", invalid="ignore"):
        folded = np.where(sigma > 0, sigma * math.sqrt(2 / math.pi) * np.exp(-mu ** 2 / (2 * sigma ** 2))
                          + mu * (1 - 2 * norm.cdf(-mu / sigma)), np.abs(mu))
    N = n_m.sum()
    if N == 0:
        return float("nan")
    return float(2 * (n_m * np.abs(mu)).sum() / N - (n_m * folded).sum() / N)


EXACT_FLOOR_TOKENS = 20_000  # bins with more tokens use the normal approximation of the count's spread


def ece_floor(confidences, n_bins: int = 15) -> float:
    """The expected ECE of a perfectly calibrated model with these confidences: each token correct with
    probability equal to its confidence, independently. Per bin m, the number correct K_m is Poisson-
    binomial; the bin's mean confidence is fixed, so

        E[ECE] = sum_m E|K_m - sum_{i in m} c_i| / N,

    computed exactly from K_m's distribution (a dynamic programme over the bin's tokens), or, in a bin of
    more than EXACT_FLOOR_TOKENS tokens, as sigma sqrt(2 / pi) with sigma^2 = sum c_i (1 - c_i). The floor a
    measured ECE should be compared against: an ECE near it is no evidence of miscalibration."""
    conf = torch.as_tensor(confidences, dtype=torch.float64).flatten()
    N = conf.numel()
    if N == 0:
        return float("nan")
    idx = bin_index(conf, n_bins)
    total = 0.0
    for m in range(n_bins):
        c = conf[idx == m].numpy()
        if c.size == 0:
            continue
        if c.size > EXACT_FLOOR_TOKENS:
            total += math.sqrt((c * (1 - c)).sum() * 2 / math.pi)
            continue
        dist = np.zeros(c.size + 1)
        dist[0] = 1.0
        for k, ck in enumerate(c, start=1):  # P(K = j) after k tokens
            dist[1:k + 1] = dist[1:k + 1] * (1 - ck) + dist[:k] * ck
            dist[0] *= 1 - ck
        total += float((dist * np.abs(np.arange(c.size + 1) - c.sum())).sum())
    return total / N


def bootstrap_interval(per: dict, key: str, n_bins: int = 15, n_samples: int = 1000, seed: int = 12345,
                       level: float = 0.95) -> list:
    """The `level` percentile interval of "ece" or "nll" over `n_samples` resamples of whole sentences
    (with replacement, numpy seed `seed`), from the per-sentence sums of `teacher_forced(per_sentence=True)`
    or `inference_calibration`. Each resample is a weight vector w (counts of each sentence), so a
    statistic is w @ sums, never a copy of the data."""
    n = len(per["tokens"])
    if n == 0:
        return [float("nan"), float("nan")]
    w = np.random.RandomState(seed).multinomial(n, np.full(n, 1.0 / n), size=n_samples).astype(np.float64)  # (R, n)
    if key == "nll":
        values = (w @ per["nll"]) / np.maximum(w @ per["tokens"], 1)
    elif key == "ece":
        values = ece_of_bins((w @ per["bins"].reshape(n, -1)).reshape(n_samples, -1, 3))  # (R, n) x (n, M*3)
    else:
        raise ValueError(f"no bootstrap for {key!r} (expected nll or ece)")
    tail = (1 - level) / 2 * 100
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


# -- temperature scaling ---------------------------------------------------------------------------

@torch.no_grad()
def penultimate_features(model, batches):
    """Decoder outputs before the output projection at every non-padding reference position:
    (N, D) features and (N,) targets. N x D, not N x V: logits are recomputed from these in chunks."""
    was_training = model.training
    model.eval()
    feats, targets = [], []
    for src, tgt_in, tgt_out in batches:
        keep = tgt_out != PAD
        feats.append(model.decode(tgt_in, *model.encode(src))[keep].float())  # (B, T, D) -> (N, D)
        targets.append(tgt_out[keep])
    model.train(was_training)
    return torch.cat(feats), torch.cat(targets)


@torch.no_grad()
def _nll_derivatives(logits_fn, feats, targets, inv_t: float, chunk: int = 1024):
    """f(inv_t) = sum_i logsumexp(inv_t z_i) - inv_t z_iy (the NLL at T = 1/inv_t), f'(inv_t), f''(inv_t).

    f is convex in inv_t: f' = sum_i E_p[z] - z_y, f'' = sum_i Var_p[z] >= 0, p = softmax(inv_t z)."""
    f = d1 = d2 = 0.0
    for start in range(0, feats.size(0), chunk):
        z = logits_fn(feats[start:start + chunk]).double()  # (n, V)
        zy = z.gather(1, targets[start:start + chunk, None]).squeeze(1)
        s = inv_t * z
        lse = torch.logsumexp(s, dim=1)
        p = torch.exp(s - lse[:, None])
        ez = (p * z).sum(1)
        f += (lse - inv_t * zy).sum().item()
        d1 += (ez - zy).sum().item()
        d2 += ((p * z * z).sum(1) - ez * ez).sum().item()
    return f, d1, d2


T_RANGE = (0.05, 20.0)  # the temperatures a fit searches (and a stored fit may hold)


def fit_temperature(model, batches, t_min: float = T_RANGE[0], t_max: float = T_RANGE[1], tol: float = 1e-7) -> dict:
    """Temperature scaling: T* = argmin_T NLL(softmax(z / T)) on the references of `batches`.

    Exact 1-D search. The NLL is convex in inv_t = 1/T (`_nll_derivatives`), so its derivative is
    increasing and has one root in a bracket [1/t_max, 1/t_min]; Newton steps on inv_t, replaced by
    bisection whenever they leave the bracket, find it. T = 1/inv_t is positive by construction (the
    search is equivalent to one over log T). Holds N x D features, never N x V logits."""
    feats, targets = penultimate_features(model, batches)
    logits_fn = model.logits
    n = targets.numel()
    lo, hi = 1.0 / t_max, 1.0 / t_min
    f_lo, g_lo, _ = _nll_derivatives(logits_fn, feats, targets, lo)
    f_hi, g_hi, _ = _nll_derivatives(logits_fn, feats, targets, hi)
    f1, _, _ = _nll_derivatives(logits_fn, feats, targets, 1.0)
    if g_lo >= 0:  # NLL still falling at T = t_max: the bound is the answer
        return {"temperature": t_max, "nll": f_lo / n, "nll_t1": f1 / n, "tokens": n, "iterations": 0, "at_bound": True}
    if g_hi <= 0:
        return {"temperature": t_min, "nll": f_hi / n, "nll_t1": f1 / n, "tokens": n, "iterations": 0, "at_bound": True}
    inv_t, it = 1.0, 0
    for it in range(1, 100):
        f, g, h = _nll_derivatives(logits_fn, feats, targets, inv_t)
        if g > 0:
            hi = inv_t
        else:
            lo = inv_t
        if abs(g) / n < tol or hi - lo < 1e-12:
            break
        step = inv_t - g / h if h > 0 else None
        inv_t = step if step is not None and lo < step < hi else 0.5 * (lo + hi)
    f, _, _ = _nll_derivatives(logits_fn, feats, targets, inv_t)
    return {"temperature": 1.0 / inv_t, "nll": f / n, "nll_t1": f1 / n, "tokens": n, "iterations": it,
            "at_bound": False}


# -- sentence level --------------------------------------------------------------------------------

def sentence_confidence(hyp) -> float:
    """A search hypothesis' confidence in [0, 1]: its geometric-mean token probability exp(logprob / |y|), |y|
    counting EOS (0 for an empty hypothesis). MBR's is the pick's expected utility / 100 (`nmt.mbr`)."""
    return math.exp(hyp.logprob / len(hyp.tokens)) if hyp.tokens else 0.0


def sentence_quality(texts, ref_lines) -> list:
    """Each hypothesis' sentence chrF against its reference, / 100 (sacrebleu's CHRF): the quality a sentence
    confidence is held to."""
    import sacrebleu
    chrf = sacrebleu.metrics.CHRF()
    return [chrf.sentence_score(h, [r]).score / 100 for h, r in zip(texts, ref_lines)]


def sentence_calibration(confidence, quality, n_bins: int = 10) -> dict:
    """How well sentence confidences c_i predict qualities q_i (both in [0, 1]): Spearman's rank correlation
    (scipy), and a sentence-level ECE over M equal-width confidence bins B_m,

        sECE = sum_m |B_m| / N * | mean_{i in B_m} c_i - mean_{i in B_m} q_i |,

    the confidence read as the predicted chrF / 100 (a perfectly calibrated decoder's sentences of confidence c
    average chrF 100 c). NaN for fewer than two sentences or constant inputs."""
    from scipy.stats import spearmanr
    c, q = np.asarray(confidence, dtype=np.float64), np.asarray(quality, dtype=np.float64)
    if c.size < 2 or np.ptp(c) == 0 or np.ptp(q) == 0:
        return {"spearman": float("nan"), "ece": float("nan"), "n": int(c.size)}
    b = np.minimum((c * n_bins).astype(np.int64), n_bins - 1)  # (N,): the bin of each sentence
    gap = sum(abs(c[b == m].sum() - q[b == m].sum()) for m in range(n_bins)) / c.size
    return {"spearman": float(spearmanr(c, q).statistic), "ece": float(gap), "n": int(c.size)}


# -- inference calibration -------------------------------------------------------------------------

def edit_alignment_matches(hyp, ref) -> list:
    """For each hypothesis token, whether a minimum-edit-distance (Levenshtein) alignment of `hyp` to `ref`
    matches it to an identical reference token. Among the alignments of minimum distance, one with the most
    matches is taken: [7, 8] against [8, 9] is delete 7, match 8, insert 9 (distance 2, one match), not two
    substitutions (distance 2, no match)."""
    n, m = len(hyp), len(ref)
    # d[i][j] = (edit distance, -matches) of hyp[:i] and ref[:j], compared as tuples
    d = [[(i + j, 0) if i == 0 or j == 0 else None for j in range(m + 1)] for i in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            same = hyp[i - 1] == ref[j - 1]
            diag = d[i - 1][j - 1]
            d[i][j] = min((diag[0] + (not same), diag[1] - same), (d[i - 1][j][0] + 1, d[i - 1][j][1]),
                          (d[i][j - 1][0] + 1, d[i][j - 1][1]))
    matched = [False] * n
    i, j = n, m
    while i > 0 and j > 0:
        same = hyp[i - 1] == ref[j - 1]
        diag = d[i - 1][j - 1]
        if d[i][j] == (diag[0] + (not same), diag[1] - same):
            matched[i - 1] = same
            i, j = i - 1, j - 1
        elif d[i][j] == (d[i - 1][j][0] + 1, d[i - 1][j][1]):
            i -= 1
        else:
            j -= 1
    return matched


class _Token(str):
    """A token that compares as its text and remembers its position in the hypothesis through TER's shifts."""

    def __new__(cls, text, position):
        obj = super().__new__(cls, text)
        obj.position = position
        return obj


def ter_alignment_matches(hyp, ref, deletion_rule: bool = False) -> list:
    """For each hypothesis token, whether TER's alignment (Snover et al. 2006: greedy block shifts, then
    edit distance; sacrebleu's implementation of tercom) matches it to an identical reference token.

    sacrebleu's `_shift` moves blocks of the hypothesis while that lowers the edit distance, as
    `translation_edit_rate` does; the tokens carry their original positions through the shifts, and the
    final edit trace says which shifted positions are matches.

    `deletion_rule`: Wang et al. 2020's released scripts (InfECE, parse_xml.py) also mark as wrong the
    hypothesis token that follows a deletion (a reference word the hypothesis lacks) in the alignment, in the
    shifted order: a stricter labelling than TER's matches alone."""
    from sacrebleu.metrics import lib_ter

    if not hyp:
        return []
    if not ref:
        return [False] * len(hyp)
    words_h = [_Token(str(t), i) for i, t in enumerate(hyp)]
    words_r = [str(t) for t in ref]
    cached_ed = lib_ter.BeamEditDistance(words_r)
    checked = 0
    while True:
        delta, shifted, checked = lib_ter._shift(words_h, words_r, cached_ed, checked)
        if checked >= lib_ter._MAX_SHIFT_CANDIDATES or delta <= 0:
            break
        words_h = shifted
    _, trace = cached_ed(words_h)
    matched = [False] * len(hyp)
    pos, after_deletion = 0, False
    for op in lib_ter._flip_trace(trace):  # ' ' match, 's' substitution, 'i' hypothesis only, 'd' reference only
        if op == "d":
            after_deletion = True
            continue
        matched[words_h[pos].position] = op == " " and not (deletion_rule and after_deletion)
        pos, after_deletion = pos + 1, False
    return matched


def wang_alignment_matches(hyp, ref) -> list:
    """TER matches with Wang et al. 2020's deletion rule (`ter_alignment_matches(deletion_rule=True)`)."""
    return ter_alignment_matches(hyp, ref, deletion_rule=True)


LABELLERS = {"ter": ter_alignment_matches, "ter-wang": wang_alignment_matches, "edit": edit_alignment_matches}


def inference_labels(hyp, ref, labeller: str = "ter") -> list:
    """Whether each emitted token of `hyp` is correct against `ref`, by `labeller`: "ter" (TER alignment), "ter-wang"
    (TER with Wang et al.'s deletion rule) or "edit" (Levenshtein alignment); see `LABELLERS`."""
    return LABELLERS[labeller](hyp, ref)


def inference_calibration(hyp_ids, hyp_confidences, labels, n_bins: int = 15, temperature: float = 1.0,
                          labeller: str = "ter", eos: str = "include", intervals: bool = True,
                          search: str = "") -> InferenceMetrics:
    """Inference ECE (Wang et al. 2020) over emitted tokens and their probabilities under the tempered model,
    with `labels` (one list of booleans per hypothesis, from `inference_labels`). eos="exclude" leaves out
    EOS positions. With `intervals`, a 95% bootstrap interval over sentences. `search`: "bf16" for hypotheses
    searched in bfloat16 (their signature says so)."""
    stats = CalibrationStats(n_bins)
    per = {"nll": [], "tokens": [], "bins": []}
    for hyp, conf, lab in zip(hyp_ids, hyp_confidences, labels):
        keep = [k for k, t in enumerate(hyp) if eos == "include" or t != EOS]
        c = torch.tensor([conf[k] for k in keep], dtype=torch.float64)
        ok = torch.tensor([bool(lab[k]) for k in keep], dtype=torch.bool)
        stats.update(c, ok)
        row = sentence_rows(torch.zeros(len(keep), dtype=torch.long), 1, torch.zeros(len(keep)), c, ok, n_bins)
        for k in per:
            per[k].append(row[k])
    res = stats.result()
    sig = ECESignature(n_bins, "inference", temperature, labeller=labeller, unit="piece", eos=eos, search=search)
    out = InferenceMetrics(ece=res["ece"], mce=res["mce"], accuracy=res["accuracy"], confidence=res["confidence"],
                           tokens=res["n"], calibration=res, signature=str(sig),
                           signature_template=sig.without_temperature())
    if intervals and per["tokens"]:
        out.ece_interval = bootstrap_interval({k: np.concatenate(v) for k, v in per.items()}, "ece", n_bins)
    return out
