"""Verdicts from per-seed differences: paired t over seeds, TOST with a margin, Holm's adjustment.

A claim compares two models of one study, a and b, on one metric. Models of the same seed share their seed
(initialisation, dropout, batch order), so the test is paired: d_s = metric(a, seed s) - metric(b, seed s)
for each seed s both have, n of them, mean d, standard deviation s_d, standard error se = s_d / sqrt(n).

- direction "less" (a < b) or "greater" (a > b): the 95% paired t-interval d +- t(0.975, n - 1) se, and the
  two-sided p of the paired t statistic d / se (what `scipy.stats.ttest_rel` gives).
    holds:         the interval excludes 0 on the claimed side;
    contradicted:  it excludes 0 on the other side;
    inconclusive:  it contains 0.
- direction "equivalent" (|a - b| < margin), the margin written in the study before it runs: TOST (two one-
  sided tests, Schuirmann 1987) at 5% each, i.e. the 90% interval d +- t(0.95, n - 1) se, and
  p = max(p_lower, p_upper) with p_lower = P(t > (d + margin) / se), p_upper = P(t < (d - margin) / se).
    holds:         the interval lies inside (-margin, +margin);
    contradicted:  it lies wholly outside it;
    inconclusive:  it straddles a bound.
- One seed: no interval; every claim is "inconclusive (one seed)".
- Holm (1979): the claims of one study are one family; p_holm of the i-th smallest of m p-values is
  max over j <= i of min(1, (m - j + 1) p_(j)). `verdict_holm` applies the same rules at the adjusted level:
  holds / contradicted need p_holm < 0.05 as well as the interval's side.

Distributions come from scipy.stats (t.ppf, t.sf).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Optional

DIRECTIONS = ("less", "greater", "equivalent")
LEVEL = 0.05  # 95% intervals for orderings; TOST at 5% on each side (a 90% interval)


@dataclass
class Claim:
    """One claim of a study and its verdict, as comparison.json stores it (`recompute` checks it)."""
    claim: str  # its sentence, e.g. "ECE(LS) < ECE(hard)"
    metric: str  # a Metrics field, e.g. "ece_forced"
    a: "dict | list"  # the model on the left: {"model": study name, "temperature": "1" or "fitted"}; pooled: a list
    b: "dict | list"
    direction: str  # what the claim says of a - b: less, greater, equivalent
    differences: list  # per-seed a - b, in seed order
    seeds: list  # the seeds paired; a pooled claim's units "MODEL:seed" (MODEL: the a-side model)
    test: str  # "paired t" or "TOST"
    estimate: Optional[float]  # mean difference
    ci: Optional[list]  # [low, high]: 95% (orderings) or 90% (TOST); None with one seed
    p: Optional[float]
    n: int
    margin: Optional[float] = None
    verdict: str = "inconclusive"
    p_holm: Optional[float] = None
    verdict_holm: str = "inconclusive"
    source: str = "paper"  # where the claim comes from: the paper, or the study's own question
    test_set: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def t_quantile(q: float, df: int) -> float:
    from scipy import stats
    return float(stats.t.ppf(q, df))


def _t_sf(x: float, df: int) -> float:
    from scipy import stats
    return float(stats.t.sf(x, df))


def mean_se(d: list) -> tuple:
    """(mean, standard error of the mean) of the differences (se None for one value)."""
    m = statistics.fmean(d)
    return m, (statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else None)


def paired_t(d: list) -> tuple:
    """(estimate, 95% interval, two-sided p) of the mean of `d` (n >= 2). A zero spread gives the point as
    its interval and p = 0 (or 1 when the mean is 0 too)."""
    m, se = mean_se(d)
    n = len(d)
    if se == 0:
        return m, [m, m], (1.0 if m == 0 else 0.0)
    half = t_quantile(1 - LEVEL / 2, n - 1) * se
    return m, [m - half, m + half], min(1.0, 2 * _t_sf(abs(m) / se, n - 1))


def tost(d: list, margin: float) -> tuple:
    """(estimate, 90% interval, p) of two one-sided tests against +-margin (n >= 2)."""
    m, se = mean_se(d)
    n = len(d)
    if se == 0:
        return m, [m, m], (0.0 if abs(m) < margin else 1.0)
    half = t_quantile(1 - LEVEL, n - 1) * se
    p_lower = _t_sf((m + margin) / se, n - 1)  # H0: mean <= -margin
    p_upper = _t_sf((margin - m) / se, n - 1)  # H0: mean >= +margin
    return m, [m - half, m + half], max(p_lower, p_upper)


def verdict_of(direction: str, ci, margin=None, p=None, alpha=None) -> str:
    """The three-way verdict of an interval (see the module docstring); with `alpha`, p must be below it too."""
    if ci is None:
        return "inconclusive (one seed)"
    lo, hi = ci
    significant = alpha is None or (p is not None and p < alpha)
    if direction == "equivalent":
        if -margin < lo and hi < margin and significant:
            return "holds"
        if lo >= margin or hi <= -margin:  # evidence against equivalence: the TOST p does not speak to it
            return "contradicted"
        return "inconclusive"
    claimed_side = (hi < 0) if direction == "less" else (lo > 0)
    other_side = (lo > 0) if direction == "less" else (hi < 0)
    if claimed_side and significant:
        return "holds"
    if other_side and significant:
        return "contradicted"
    return "inconclusive"


def holm(pvalues: list) -> list:
    """Holm's step-down adjustment; None entries (no test) stay None and are not in the family."""
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(idx)
    out = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def judge(claim: str, metric: str, a: dict, b: dict, direction: str, per_seed_a: dict, per_seed_b: dict,
          margin: float = None, source: str = "paper", test_set: str = "") -> Claim:
    """A Claim from each model's per-seed values ({seed: value}); only seeds both have are paired."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}: expected one of {', '.join(DIRECTIONS)}")
    if direction == "equivalent" and not (margin and margin > 0):
        raise ValueError("an equivalence claim needs a positive margin")
    seeds = sorted(set(per_seed_a) & set(per_seed_b))
    d = [per_seed_a[s] - per_seed_b[s] for s in seeds]
    test = "TOST" if direction == "equivalent" else "paired t"
    c = Claim(claim, metric, a, b, direction, d, seeds, test, None, None, None, len(d), margin)
    if len(d) >= 2:
        c.estimate, c.ci, c.p = (tost(d, margin) if direction == "equivalent" else paired_t(d))
    elif d:
        c.estimate = d[0]
    c.verdict = verdict_of(direction, c.ci, margin) if d else "not measured (no runs)"
    c.source, c.test_set = source, test_set
    return c


def adjust(claims: list) -> list:
    """Holm-adjust the p-values of one study's claims (in place) and give each its verdict at that level."""
    for c, ph in zip(claims, holm([c.p for c in claims])):
        c.p_holm = ph
        c.verdict_holm = verdict_of(c.direction, c.ci, c.margin, ph, LEVEL) if c.ci is not None else c.verdict
    return claims


def recompute(d: dict) -> Claim:
    """A stored claim (comparison.json) recomputed from its `differences` alone: the check that every interval,
    p-value and verdict follows from the per-seed values."""
    per_a = {s: x for s, x in zip(d["seeds"], d["differences"])}
    return judge(d["claim"], d["metric"], d["a"], d["b"], d["direction"], per_a, {s: 0.0 for s in d["seeds"]},
                 d.get("margin"), d.get("source", "paper"), d.get("test_set", ""))

